"""The tiny project that the bad-input, predict and export tests share: random images in a
pre-split layout, one-epoch scorer folds and a two-epoch classifier at 16 px.

``finished_project`` (tests/conftest.py) runs ingest, score, train and evaluate on it once per
test session; tests copy it (:func:`copy_finished`) instead of running the stages again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import make_folder, write_image
from in_process import stage_in_process

PROJECT = Path(__file__).resolve().parents[1]

# Only keys every params.yaml version has, so this file also runs against older code.
OVERRIDES = {
    "ingest": {
        "data_root": "data",
        "real_dir": "real",
        "synthetic_dir": "synthetic",
        "groups_csv": None,
        "tiers_csv": None,
        "layout": "auto",
        "labels": ["benign", "malignant"],
        "class_map": {"Benign": "benign", "Early": "malignant"},
        "image_size": 16,
        "workers": 1,
        "bad_images": "error",
        "scarce_train_images": None,
    },
    "score": {
        "model": "resnet18",
        "pretrained_weights": None,
        "image_size": 16,
        "epochs": 1,
        "folds": 2,
        "batch_size": 8,
        "device": "cpu",
    },
    "curriculum": {"warmup_epochs": 1, "strategy": "curriculum"},
    "train": {
        "model": "resnet18",
        "pretrained_weights": None,
        "image_size": 16,
        "epochs": 2,
        "batch_size": 8,
        "device": "cpu",
        "resume": False,
    },
    "evaluate": {"bootstrap_resamples": 20, "device": "cpu", "checkpoint": "best"},
}
UNUSUAL = ["with space.png", "unicodé ñame.png"]  # real training images with these names


def committed_params() -> dict:
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=PROJECT, capture_output=True, text=True)
    return yaml.safe_load(proc.stdout if proc.returncode == 0 else (PROJECT / "params.yaml").read_text())


def write_params(project: Path, changes: dict | None = None) -> None:
    params = committed_params()
    for section, values in OVERRIDES.items():
        params[section].update(values)
    if "ensemble" in params["train"]:  # where the code has it: predict, export and Grad-CAM of an ensemble
        params["train"]["ensemble"] = 2
    for section, values in (changes or {}).items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def run_stage(project: Path, stage: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(PROJECT / "pipeline" / f"{stage}.py")],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
    )


def make_data(root: Path) -> None:
    make_folder(
        root / "real",
        {"train/Benign": 12, "train/Early": 6, "val/Benign": 4, "val/Early": 3, "test/Benign": 4, "test/Early": 3},
        seed=11,
        ext=".png",
    )
    make_folder(root / "synthetic", {"Early": 4}, seed=12)
    for i, name in enumerate(UNUSUAL):
        write_image(root / "real" / "train" / "Early" / name, 9000 + i, size=(24, 24))


def build_finished_project(project: Path) -> Path:
    """ingest, score, train and evaluate on the tiny data in ``project`` (a new folder), each stage
    script run in this process (tests/in_process.py: no torch import per stage)."""
    project.mkdir(parents=True)
    make_data(project / "data")
    write_params(project)
    for stage in ("ingest", "score", "train", "evaluate"):
        proc = stage_in_process(project, stage)
        assert proc.returncode == 0, f"{stage} failed on good input:\n{proc.stdout}\n{proc.stderr}"
    return project


def copy_finished(finished: Path, dest: Path) -> Path:
    """A copy of the finished project. The training resume state (about 180 MB with AdamW) is
    left out: these tests run with ``resume: false``, and dozens of copies filled CI's disk."""
    shutil.copytree(finished, dest, symlinks=True, ignore=shutil.ignore_patterns("resume.pt"))
    return dest
