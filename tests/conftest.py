"""Shared helpers: tiny image folders generated on the fly (no test reads real data)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

# make test runs the suite on pytest-xdist workers (one per core). Each worker, and every stage
# process it starts, gets an equal share of the cores: PyTorch's default of one thread per core in
# every process would run 2 x 2 threads on 2 cores, and a training step then waits for a thread
# that has no core (several times slower than one thread each).
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    _workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // _workers))

import numpy as np
import pytest
from PIL import Image

from entromix.data.ingest_config import IngestConfig, SplitFractions


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 40), fmt: str | None = None) -> Path:
    """Write a small random RGB image; distinct seeds give distinct files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path


def make_folder(root: Path, counts: dict[str, int], seed: int = 0, ext: str = ".png") -> list[Path]:
    """``counts`` maps "class" or "split/class" to a number of images; returns the paths."""
    paths = []
    for offset, (folder, n) in enumerate(sorted(counts.items())):
        for i in range(n):
            paths.append(write_image(root / folder / f"img_{i:03d}{ext}", seed * 100_000 + offset * 1000 + i))
    return paths


def ingest_config(data_root: Path, **overrides) -> IngestConfig:
    values = dict(
        data_root=str(data_root),
        real_dir="real",
        synthetic_dir="synthetic",
        groups_csv=None,
        tiers_csv=None,
        layout="auto",
        labels=["benign", "malignant"],
        positive_labels=["malignant"],
        unlabelled_dir=None,
        class_map={"Benign": "benign", "Early": "malignant", "Pre": "malignant"},
        image_size=16,
        resize_mode="stretch",
        intensity="fixed16",
        split=SplitFractions(0.6, 0.2, 0.2),
        seed=0,
        duplicates_across="error",
        workers=1,
        bad_images="error",
        max_pixels=100_000_000,
        min_image_size=16,
        scarce_label="malignant",
        scarce_train_images=None,
        scarce_seed=0,
        scarce_unlabelled=False,
    )
    values.update(overrides)
    return IngestConfig(**values)


@pytest.fixture
def flat_data(tmp_path: Path) -> Path:
    """data/real/<class>/ (30 Benign, 6 Early, 4 Pre) and data/synthetic/Pre/ (5)."""
    root = tmp_path / "data"
    make_folder(root / "real", {"Benign": 30, "Early": 6, "Pre": 4}, seed=1)
    make_folder(root / "synthetic", {"Pre": 5}, seed=2)
    return root


@pytest.fixture
def split_data(tmp_path: Path) -> Path:
    """data/real/<split>/<class>/ and data/synthetic/<class>/."""
    root = tmp_path / "data"
    make_folder(
        root / "real",
        {"train/Benign": 9, "train/Early": 3, "val/Benign": 3, "val/Early": 2, "test/Benign": 3, "test/Early": 2},
        seed=3,
    )
    make_folder(root / "synthetic", {"Early": 4}, seed=4)
    return root


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


def all_files(root: Path) -> Iterable[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def finished_project(tmp_path_factory) -> Path:
    """The tiny project of tests/tiny_project.py after ingest, score, train and evaluate, built once
    per test run. Read only: a test that changes files copies it with ``tiny_project.copy_finished``.

    Under pytest-xdist the workers share one build: the first to ask builds it in the run's common
    temporary folder while holding a file lock, and the others wait for it and reuse it."""
    from filelock import FileLock
    from tiny_project import build_finished_project

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_finished_project(tmp_path_factory.mktemp("finished") / "project")
    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, above every worker's own
    project, built = shared / "finished" / "project", shared / "finished" / "built"
    with FileLock(str(shared / "finished.lock")):
        if not built.exists():
            shutil.rmtree(project, ignore_errors=True)  # what a failed build of another worker left
            build_finished_project(project)
            built.touch()
    return project


# The files that take longest (pytest --durations=15 in CI's log), in that order, run first: under
# pytest-xdist (make test, --dist loadfile: one file on one worker) each then starts at once on a
# worker, and the many short files fill the gaps, instead of a long file starting last and the run
# waiting for it. The order within a file is kept (the end-to-end tests build on each other).
LONGEST_FIRST = (
    "test_kill_anywhere.py",
    "test_pipeline_e2e.py",
    "test_parallel_experiments.py",
    "test_bench_stability.py",
    "test_gpu_check.py",
    "test_distributed.py",
    "test_train.py",
    "test_benchmarks.py",
    "test_multiclass_e2e.py",
    "test_score.py",
    "test_score_resume.py",
    "test_bad_input.py",
    "test_strategies.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
