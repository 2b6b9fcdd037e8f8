"""Every stage on deliberately broken input: one clear message, exit code 2, nothing changed.

A tiny project (random images, one-epoch models) is run through ingest, score, train and
evaluate once; each case then copies it, breaks one thing (the data, a prepared file, a hand
edit of dataset.csv, a weights file, a stage run out of order), runs one stage as DVC would
(``python pipeline/<stage>.py`` in the project folder) and checks the rule the README states:

* exit code 2, no traceback, a message that names the file or the key;
* no input file and no earlier output changed (every file's bytes compared before and after).

Names with spaces and Unicode characters go through the whole pipeline; names that are not
UTF-8 are refused up front.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import make_folder, write_image

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

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


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """A tiny project after a successful run of every stage."""
    project = tmp_path_factory.mktemp("bad_input") / "project"
    project.mkdir()
    make_data(project / "data")
    write_params(project)
    for stage in ("ingest", "score", "train", "evaluate"):
        proc = run_stage(project, stage)
        assert proc.returncode == 0, f"{stage} failed on good input:\n{proc.stdout}\n{proc.stderr}"
    return project


def clone(done: Path, tmp_path: Path) -> Path:
    """A copy of the finished project. The training resume state (about 180 MB with AdamW) is
    left out: these tests run with ``resume: false``, and dozens of copies filled CI's disk."""
    project = tmp_path / "project"
    shutil.copytree(done, project, symlinks=True, ignore=shutil.ignore_patterns("resume.pt"))
    return project


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def fails_cleanly(project: Path, stage: str, *names: str) -> str:
    """Run ``stage``; assert exit 2, no traceback, every name in the message, nothing changed."""
    before = snapshot(project)
    proc = run_stage(project, stage)
    message = proc.stderr
    assert proc.returncode == 2, f"{stage}: exit {proc.returncode}, expected 2\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in message, message
    for name in names:
        assert name in message, f"{name!r} not in the message:\n{message}"
    assert snapshot(project) == before, f"{stage} changed files although it failed"
    return message


# ---------------------------------------------------------------------------------------- ingest


def test_symlink_loop_in_an_image_folder(done, tmp_path):
    project = clone(done, tmp_path)
    folder = project / "data" / "real" / "train" / "Benign"
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    fails_cleanly(project, "ingest", "loop_a.png", "loop")


def test_folder_link_loop(done, tmp_path):
    project = clone(done, tmp_path)
    os.symlink("..", project / "data" / "real" / "train" / "Benign" / "again")
    fails_cleanly(project, "ingest", "again", "loop")


def test_dangling_symlink(done, tmp_path):
    project = clone(done, tmp_path)
    os.symlink("missing.png", project / "data" / "real" / "train" / "Benign" / "gone.png")
    fails_cleanly(project, "ingest", "gone.png", "dangling")


def test_file_name_that_is_not_utf8_is_refused_up_front(done, tmp_path):
    project = clone(done, tmp_path)
    folder = os.fsencode(project / "data" / "real" / "train" / "Benign")
    src = next((project / "data" / "real" / "train" / "Benign").glob("*.png"))
    shutil.copy(src, os.path.join(folder, b"bad\xff name.png"))
    message = fails_cleanly(project, "ingest", "not valid UTF-8", "bad\\xff name.png")
    assert "Rename" in message


def test_only_one_class_in_the_real_images(done, tmp_path):
    project = clone(done, tmp_path)
    write_params(project, {"ingest": {"class_map": {"Benign": "benign", "Early": "benign"}}})
    fails_cleanly(project, "ingest", "'malignant'", "train", "val", "test")


def test_a_label_only_in_the_synthetic_pool(done, tmp_path):
    project = clone(done, tmp_path)
    for split in ("train", "val", "test"):
        shutil.rmtree(project / "data" / "real" / split / "Early")
    fails_cleanly(project, "ingest", "no real 'malignant' image", "Early")


def test_symlink_to_another_folder_inside_the_data_root_is_followed(done, tmp_path):
    project = clone(done, tmp_path)
    extra = project / "data" / "more_benign"
    make_folder(extra, {"x": 2}, seed=77)
    os.symlink(extra / "x", project / "data" / "real" / "train" / "Benign" / "linked")
    proc = run_stage(project, "ingest")
    assert proc.returncode == 0, proc.stderr
    manifest = pd.read_csv(project / "data" / "prepared" / "manifest.csv")
    assert manifest["path"].str.contains("train/Benign/linked/").sum() == 2


def test_symlink_leaving_the_data_root_names_the_root(done, tmp_path):
    project = clone(done, tmp_path)
    outside = write_image(tmp_path / "outside.png", 5, size=(24, 24))
    os.symlink(outside, project / "data" / "real" / "train" / "Benign" / "out.png")
    fails_cleanly(project, "ingest", "out.png", "outside the data root")


# ------------------------------------------------------------------------------ stages out of order


def test_score_before_ingest(done, tmp_path):
    project = clone(done, tmp_path)
    shutil.rmtree(project / "data" / "prepared")
    fails_cleanly(project, "score", "data/prepared", "dvc repro ingest")


def test_train_before_score(done, tmp_path):
    project = clone(done, tmp_path)
    (project / "data" / "dataset.csv").unlink()
    fails_cleanly(project, "train", "data/dataset.csv", "dvc repro score")


def test_evaluate_before_train(done, tmp_path):
    project = clone(done, tmp_path)
    shutil.rmtree(project / "models")
    fails_cleanly(project, "evaluate", "models/train/best.pt", "dvc repro train")


@pytest.mark.parametrize("stage", ["score", "train", "evaluate"])
def test_truncated_image_array(done, tmp_path, stage):
    project = clone(done, tmp_path)
    path = project / "data" / "prepared" / "images.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    fails_cleanly(project, stage, "data/prepared/images.npy", "ingest")


@pytest.mark.parametrize("stage", ["score", "train"])
def test_manifest_listing_more_images_than_the_array(done, tmp_path, stage):
    project = clone(done, tmp_path)
    path = project / "data" / "prepared" / "manifest.csv"
    manifest = pd.read_csv(path, keep_default_na=False)
    extra = manifest.iloc[[0]].assign(id=len(manifest))
    pd.concat([manifest, extra]).to_csv(path, index=False)
    fails_cleanly(project, stage, "data/prepared/manifest.csv", "images.npy")


def test_manifest_from_another_run_is_caught_by_its_checksum(done, tmp_path):
    project = clone(done, tmp_path)
    path = project / "data" / "prepared" / "manifest.csv"
    manifest = pd.read_csv(path, keep_default_na=False)
    manifest.loc[0, "group"] = "edited"
    manifest.to_csv(path, index=False)
    fails_cleanly(project, "train", "data/prepared/manifest.csv", "checksums.json")


# --------------------------------------------------------------------------- hand-edited dataset.csv


def edit_dataset(project: Path, edit) -> None:
    path = project / "data" / "dataset.csv"
    edit(pd.read_csv(path, keep_default_na=False)).to_csv(path, index=False)


def test_dataset_without_the_jsd_column(done, tmp_path):
    project = clone(done, tmp_path)
    edit_dataset(project, lambda d: d.drop(columns="jsd_score"))
    fails_cleanly(project, "train", "data/dataset.csv", "jsd_score")


def test_dataset_with_duplicated_rows(done, tmp_path):
    project = clone(done, tmp_path)
    edit_dataset(project, lambda d: pd.concat([d, d.iloc[[3]]]))
    fails_cleanly(project, "train", "data/dataset.csv", "appears more than once", "line")


def test_dataset_with_a_label_outside_the_classes(done, tmp_path):
    project = clone(done, tmp_path)

    def bad_label(d: pd.DataFrame) -> pd.DataFrame:
        d.loc[5, "label"] = 7
        return d

    edit_dataset(project, bad_label)
    filename = pd.read_csv(project / "data" / "dataset.csv", keep_default_na=False).loc[5, "filename"]
    fails_cleanly(project, "train", "data/dataset.csv", "line 7", filename, "label 7")


# ------------------------------------------------------------------------------------ weights files


@pytest.mark.parametrize("stage", ["score", "train"])
def test_missing_weights_name_the_weights_key(done, tmp_path, stage):
    project = clone(done, tmp_path)
    write_params(project, {stage: {"pretrained_weights": "nope.pth"}})
    fails_cleanly(project, stage, f"{stage}.pretrained_weights", "nope.pth")


def test_text_file_given_as_weights(done, tmp_path):
    project = clone(done, tmp_path)
    (project / "notes.pth").write_text("these are not weights\n")
    write_params(project, {"score": {"pretrained_weights": "notes.pth"}})
    fails_cleanly(project, "score", "notes.pth", "not a PyTorch checkpoint", "score.pretrained_weights")


def test_git_lfs_pointer_given_as_weights(done, tmp_path):
    project = clone(done, tmp_path)
    (project / "resnet18.pth").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 46830571\n"
    )
    write_params(project, {"train": {"pretrained_weights": "resnet18.pth"}})
    message = fails_cleanly(project, "train", "resnet18.pth", "Git LFS pointer", "git lfs pull")
    assert "weights_only=False" not in message and "issue" not in message.lower()


def test_corrupt_checkpoint(done, tmp_path):
    project = clone(done, tmp_path)
    best = project / "models" / "train" / "best.pt"
    best.write_bytes(np.random.default_rng(0).bytes(best.stat().st_size))
    message = fails_cleanly(project, "evaluate", "models/train/best.pt", "dvc repro -f train")
    assert "Errno" not in message


# ------------------------------------------------------------------------------ names that work


def test_spaces_and_unicode_in_file_names_go_end_to_end(done):
    manifest = pd.read_csv(done / "data" / "prepared" / "manifest.csv", keep_default_na=False)
    dataset = pd.read_csv(done / "data" / "dataset.csv", keep_default_na=False)
    for name in UNUSUAL:
        assert (manifest["path"] == f"train/Early/{name}").sum() == 1
        assert dataset["filename"].str.endswith(f"train/Early/{name}").sum() == 1
    metrics = json.loads((done / "metrics" / "evaluate.json").read_text())
    assert metrics["evaluate"]["test"]["n"] == 7


# ----------------------------------------------------------------------------------- exit codes


def test_exit_codes_bug_is_1_with_a_traceback_user_error_is_2():
    code = (
        "import sys; from entromix.common.stage import run_stage; from entromix.common.errors import DataError\n"
        "def bug(): raise ZeroDivisionError('a real bug')\n"
        "def user(): raise DataError('x.csv: fix it')\n"
        "run_stage('demo', bug if sys.argv[1] == 'bug' else user)\n"
    )
    bug = subprocess.run([sys.executable, "-c", code, "bug"], capture_output=True, text=True)
    assert bug.returncode == 1 and "Traceback" in bug.stderr and "ZeroDivisionError" in bug.stderr
    user = subprocess.run([sys.executable, "-c", code, "user"], capture_output=True, text=True)
    assert user.returncode == 2 and "Traceback" not in user.stderr
    assert user.stderr.strip() == "entromix demo: error: x.csv: fix it"


def test_metrics_json_never_holds_nan():
    from entromix.common.atomic import json_text

    with pytest.raises(ValueError, match="JSON compliant"):
        json_text({"auc": float("nan")})
