"""Every stage on deliberately broken input: one clear message, exit code 2, nothing changed.

A tiny project (random images, one-epoch models; tests/tiny_project.py) is run through ingest,
score, train and evaluate once per session; each case then copies it, breaks one thing (the data,
a prepared file, a hand edit of dataset.csv, a weights file, a stage run out of order), runs one
stage as DVC would (``pipeline/<stage>.py`` in the project folder, as ``__main__``, here in the
test's process) and checks the rule the README states:

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
from conftest import make_folder, write_image
from in_process import stage_in_process
from tiny_project import UNUSUAL, copy_finished, run_stage, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def done(finished_project) -> Path:
    """The tiny project after a successful run of every stage (built once per session; read only)."""
    return finished_project


def clone(done: Path, tmp_path: Path) -> Path:
    """A copy of the finished project to break."""
    return copy_finished(done, tmp_path / "project")


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def fails_cleanly(project: Path, stage: str, *names: str) -> str:
    """Run ``stage``; assert exit 2, no traceback, every name in the message, nothing changed.

    The stage script runs in this process (in_process.stage_in_process: no torch import per
    case); test_exit_codes_bug_is_1_with_a_traceback_user_error_is_2 checks a real process's exit
    codes and output."""
    before = snapshot(project)
    proc = stage_in_process(project, stage)
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
