"""The install's declared bounds match what requirements.lock actually installs."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def locked(lock: str = "requirements.lock") -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_requires_python_is_the_lowest_version_every_locked_package_supports():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    lowest = Version(re.search(r">=\s*([0-9.]+)", declared).group(1))
    assert Version(".".join(map(str, sys.version_info[:3]))) >= lowest
    pins, refused = locked(), []
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        needs = dist.metadata.get("Requires-Python")
        if name in pins and dist.version == pins[name] and needs:
            if not any(Version(f"{lowest.major}.{lowest.minor}.{micro}") in SpecifierSet(needs) for micro in (0, 99)):
                refused.append(f"{name}=={dist.version} needs Python {needs}")
    assert not refused, f"pyproject.toml declares requires-python {declared}, but the lock holds: {refused}"


# The CPU-only install (make run TORCH=cpu) and the make targets that need no activated environment


def make_dry_run(*args: str) -> subprocess.CompletedProcess:
    """``make -n``: the commands make would run, without running them."""
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def script_module(name: str):
    """A module of scripts/ (a program, not part of the package), imported from its file."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_lock_is_derived_from_the_main_lock():
    cpu_lock = script_module("cpu_lock")

    assert (ROOT / "requirements-cpu.lock").read_text() == cpu_lock.cpu_lock(
        (ROOT / "requirements.lock").read_text()
    ), "requirements-cpu.lock is out of date: run `python scripts/cpu_lock.py`"


def test_the_cpu_lock_pins_cpu_wheels_from_pytorchs_index_and_no_cuda_runtime():
    text = (ROOT / "requirements-cpu.lock").read_text()
    main, cpu = locked(), locked("requirements-cpu.lock")
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in text.splitlines()
    assert cpu["torch"] == main["torch"].split("+")[0] + "+cpu"
    assert cpu["torchvision"] == main["torchvision"].split("+")[0] + "+cpu"
    cuda = {n for n in main if re.match(r"^(nvidia-(?!ml-py)|cuda-|triton$)", n)}
    assert cuda and not cuda & set(cpu)  # the CUDA runtime is left out ...
    assert set(main) - cuda == set(cpu)  # ... and everything else is pinned the same
    assert all(cpu[n] == main[n] for n in cpu if n not in ("torch", "torchvision"))


def test_make_installs_the_lock_of_the_chosen_torch_build():
    assert "-r requirements.lock" in make_dry_run("install", "TORCH=default", "-B").stdout
    cpu = make_dry_run("install", "TORCH=cpu", "-B")
    assert "-r requirements-cpu.lock" in cpu.stdout and "scripts/torch_build.py" in cpu.stdout
    wrong = make_dry_run("install", "TORCH=gpu")
    assert wrong.returncode != 0 and "TORCH=gpu is not a build: use TORCH=cpu" in wrong.stderr


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (["repro"], ".venv/bin/dvc repro"),
        (["repro", "ARGS=train"], ".venv/bin/dvc repro train"),
        (
            ["exp", "ARGS=-S curriculum.jsd_start=0.05"],
            ".venv/bin/dvc exp run $profile_args -S curriculum.jsd_start=0.05",
        ),
        (["metrics-diff"], ".venv/bin/dvc metrics diff"),
        (["metrics-diff", "ARGS=main HEAD"], ".venv/bin/dvc metrics diff main HEAD"),
        (["plots"], ".venv/bin/dvc plots show"),
        (["plots", "ARGS=main"], ".venv/bin/dvc plots diff main"),
        (["compare"], ".venv/bin/entromix compare"),
        (["compare", "ARGS=main HEAD"], ".venv/bin/entromix compare main HEAD"),
        (
            ["review", "ARGS=-S curriculum.jsd_start=0.05", "SEEDS=3", "JOBS=2"],
            ".venv/bin/entromix review -S curriculum.jsd_start=0.05 --seeds 3 --jobs 2",
        ),
        (["exp-show"], ".venv/bin/entromix exp-show"),
    ],
)
def test_dvc_targets_call_the_environments_dvc(target, expected):
    result = make_dry_run(*target)
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout.replace("\\\n", "")


def test_torch_build_line_names_the_version_and_the_size():
    import torch

    torch_build = script_module("torch_build")

    line = torch_build.build_line()
    assert line.startswith(f"torch {torch.__version__} (")
    assert re.search(r"torch and torchvision \d+\.\d\d GB", line) and line.endswith("GB in all")


def test_make_compiles_the_installed_packages_bytecode_once():
    """With PYTHONDONTWRITEBYTECODE=1 (the CI machines) nothing writes __pycache__ on import, so
    `make install` compiles site-packages itself: torch's modules load from bytecode."""
    import torch

    assert "scripts/compile_bytecode.py" in make_dry_run("install", "-B").stdout
    cached = importlib.util.cache_from_source(torch.__file__)
    assert Path(cached).is_file(), f"{cached} missing: run `make clean-env && make install`"


def test_compile_bytecode_skips_a_file_this_python_cannot_compile(tmp_path):
    (tmp_path / "good.py").write_text("X = 1\n")
    (tmp_path / "newer.py").write_text("def f[T](a):\n    pass\n" if sys.version_info < (3, 12) else "def f(:\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/compile_bytecode.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert Path(importlib.util.cache_from_source(str(tmp_path / "good.py"))).is_file()
    assert not Path(importlib.util.cache_from_source(str(tmp_path / "newer.py"))).exists()
    assert result.stdout.startswith(f"bytecode: {tmp_path} compiled in ") and "skipped" in result.stdout
