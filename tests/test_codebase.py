"""The codebase's own rules, checked: every stage's DVC deps cover the code it runs, stage
packages import one way, no module imports itself back through others, no module is over 400
lines and no function over 60, nothing outside tests/ imports tests/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "entromix"


def imported_modules(path: Path) -> set[str]:
    """Every ``entromix...`` module a file imports, at any depth (function-level imports too).

    ``from entromix.a import b`` names ``entromix.a`` and, when ``b`` is a submodule, ``entromix.a.b``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == PACKAGE:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def module_file(name: str) -> Path | None:
    """The source file of a first-party module, or None when ``name`` is not a module (a function)."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def import_closure(script: Path) -> set[Path]:
    """The script and every first-party source file it runs: imported modules, their packages'
    ``__init__.py`` files, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, a/b/c
                found = module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    return seen


def stage_scripts(cmd: str) -> list[Path]:
    """The Python files a stage's ``cmd`` runs (``python path.py`` and ``python -m module``)."""
    scripts = [ROOT / m for m in re.findall(r"python3?\s+(\S+\.py)", cmd)]
    scripts += [f for m in re.findall(r"python3?\s+-m\s+(\S+)", cmd) if (f := module_file(m)) is not None]
    return scripts


def uncovered(dvc_yaml: dict) -> dict[str, list[str]]:
    """Per stage, the first-party files its ``cmd`` runs that no declared dependency covers."""
    out = {}
    for name, stage in dvc_yaml["stages"].items():
        deps = [(ROOT / d).resolve() for d in stage.get("deps", [])]
        files = set()
        for script in stage_scripts(stage["cmd"]):
            files |= import_closure(script)
        missing = sorted(str(f.relative_to(ROOT)) for f in files if not any(f == d or d in f.parents for d in deps))
        if missing:
            out[name] = missing
    return out


def test_every_stage_depends_on_all_the_code_it_runs():
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert all(stage_scripts(s["cmd"]) for s in dvc_yaml["stages"].values()), "a stage runs no Python file we can see"
    missing = uncovered(dvc_yaml)
    assert not missing, (
        "dvc.yaml: these stages run code that none of their deps covers, so a change to it "
        f"would not rerun them: {missing}"
    )


def test_stages_depend_on_code_folders_not_file_lists():
    """A hand-kept list of modules is how imports went missing; only folders (and the package's
    own ``__init__.py``) may be declared under ``src/``."""
    dvc_yaml = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for name, stage in dvc_yaml["stages"].items():
        for dep in stage.get("deps", []):
            if dep.startswith("src/"):
                assert (ROOT / dep).is_dir() or dep == "src/entromix/__init__.py", f"stage {name}: {dep} is a file"


def test_the_closure_check_catches_a_missing_dependency():
    stages = {"train": {"cmd": "python pipeline/train.py", "deps": ["pipeline/train.py", "src/entromix/training"]}}
    missing = uncovered({"stages": stages})["train"]
    assert "src/entromix/common/params.py" in missing and "src/entromix/training/loop.py" not in missing
    assert "src/entromix/__init__.py" in missing and "src/entromix/modeling/fit.py" in missing


# Packages in the order data flows through them: each may import itself and the ones before it.
# ``demo`` stands aside: it writes a data folder that ingest then reads like any user's.
LAYERS = ("common", "data", "modeling", "scoring", "training", "evaluation", "comparison", "prediction", "cli")
ALLOWED = {pkg: set(LAYERS[: i + 1]) for i, pkg in enumerate(LAYERS)} | {"demo": {"common", "demo"}}


def test_packages_import_one_way():
    package_dir = SRC / PACKAGE
    subpackages = sorted(p.name for p in package_dir.iterdir() if (p / "__init__.py").is_file())
    assert set(subpackages) == set(ALLOWED), "a new subpackage needs a place in ALLOWED (and in the README's tree)"
    assert {p.name for p in package_dir.glob("*.py")} == {"__init__.py"}, "modules live in subpackages"
    wrong = []
    for pkg in subpackages:
        for path in sorted((package_dir / pkg).rglob("*.py")):
            for name in imported_modules(path):
                parts = name.split(".")
                if len(parts) > 1 and parts[1] in ALLOWED and parts[1] not in ALLOWED[pkg]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "a stage package imports a later stage's:\n" + "\n".join(wrong)


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in sorted((SRC / PACKAGE).glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc, f"{init.relative_to(ROOT)}: the docstring says what may be imported"


MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def code_files() -> list[Path]:
    return [path for folder in (SRC, ROOT / "pipeline") for path in sorted(folder.rglob("*.py"))]


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in code_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions:\n" + "\n".join(long)


def test_no_module_is_longer_than_400_lines():
    long = [f"{p.relative_to(ROOT)} ({n} lines)" for p in code_files() if (n := len(p.read_text().splitlines())) > 400]
    assert not long, "split these modules:\n" + "\n".join(long)


def runtime_imports(path: Path) -> set[Path]:
    """The first-party module files ``path`` imports when it is imported: its module-level imports,
    not those inside functions or under ``if TYPE_CHECKING:`` (neither runs at import time)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == PACKAGE and (file := module_file(name)) is not None and file != path:
                found.add(file)
    return found


def import_cycles() -> list[list[str]]:
    """Cycles in the module-level import graph of src/entromix (depth-first search)."""
    graph = {path: runtime_imports(path) for path in sorted((SRC / PACKAGE).rglob("*.py"))}
    cycles, state = [], {}

    def visit(node: Path, stack: list[Path]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, set())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt) :] + [nxt]
                cycles.append([str(p.relative_to(SRC)) for p in cycle])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_module_imports_itself_back_through_others():
    assert import_cycles() == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / PACKAGE
    (package / "a").mkdir(parents=True)
    files = {"__init__": "", "a/__init__": "", "a/x": "from entromix.a import y\n", "a/y": "import entromix.a.x\n"}
    for name, body in files.items():
        (package / f"{name}.py").write_text(body)
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    assert [sorted(c) for c in import_cycles()] == [sorted(["entromix/a/x.py", "entromix/a/y.py", "entromix/a/x.py"])]


def test_nothing_outside_tests_imports_from_tests():
    offenders = []
    for folder in ("src", "pipeline", "scripts", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                )
                if any(n == "tests" or n.startswith(("tests.", "conftest")) for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
