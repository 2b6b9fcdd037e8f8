"""Untrusted checkpoints (issue 36): a model file whose pickle carries code is refused by every
command that loads a model, with a message naming the file, and the code never runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from in_process import cli_in_process, stage_in_process
from tiny_project import copy_finished


class Payload:
    """Unpickling this runs ``os.system``: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "entromix-checkpoint", "model": Payload(marker)}, path)
    return path


def test_the_payload_really_runs_when_unpickled_without_weights_only(tmp_path):
    """The fixture is live: plain unpickling would run it (what the commands must never do)."""
    marker = tmp_path / "pwned"
    torch.load(evil_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.fixture
def project(finished_project, tmp_path) -> Path:
    return copy_finished(finished_project, tmp_path / "project")


@pytest.mark.parametrize(
    "command",
    [
        ("predict", "images", "--model", "evil.pt", "--out", "p.csv"),
        ("export", "--format", "onnx", "--model", "evil.pt", "--out", "m.onnx"),
        ("export", "--format", "torchscript", "--model", "evil.pt", "--out", "m.ts"),
    ],
    ids=["predict", "export-onnx", "export-torchscript"],
)
def test_predict_and_export_refuse_a_checkpoint_that_carries_code(project, tmp_path, command):
    marker = tmp_path / "pwned"
    evil_checkpoint(project / "evil.pt", marker)
    (project / "images").mkdir(exist_ok=True)
    proc = cli_in_process(project, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "evil.pt" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (project / "p.csv").exists() and not (project / "m.onnx").exists()


def test_evaluate_refuses_a_training_checkpoint_that_carries_code(project, tmp_path):
    marker = tmp_path / "pwned"
    before = (project / "metrics/evaluate.json").read_bytes()
    for name in ("best.pt", "last.pt"):
        evil_checkpoint(project / "models/train" / name, marker)
    proc = stage_in_process(project, "evaluate")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "models/train/" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    assert (project / "metrics/evaluate.json").read_bytes() == before  # the last good outputs stay
