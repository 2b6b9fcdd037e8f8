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


def test_an_inbox_of_strange_entries_gives_a_row_per_entry_with_the_reason(project, tmp_path):
    """A link out of the folder, a decompression bomb, a 0-byte file and a folder named x.png: each a
    row with its reason (the link's target is never read), the good image classified, exit 3."""
    import pandas as pd
    from PIL import Image

    inbox, outside = project / "strange", tmp_path / "outside"
    inbox.mkdir()
    outside.mkdir()
    good = sorted((project / "data/real").rglob("*.png"))[0]
    (inbox / "good.png").write_bytes(good.read_bytes())
    (outside / "secret.png").write_bytes(good.read_bytes())
    (inbox / "link.png").symlink_to(outside / "secret.png")
    Image.new("L", (20_000, 20_000)).save(inbox / "bomb.png")  # 400 Mpixel in about 400 KB
    (inbox / "empty.png").write_bytes(b"")
    (inbox / "x.png").mkdir()
    proc = cli_in_process(project, "predict", "strange", "--out", "strange.csv", "--quiet")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    rows = pd.read_csv(project / "strange.csv", keep_default_na=False).set_index("path")
    reasons = {Path(p).name: r for p, r in rows["error"].items()}
    assert reasons["good.png"] == "" and rows.loc["strange/good.png", "label"] in ("benign", "malignant")
    assert "symbolic link out of strange" in reasons["link.png"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "empty file (0 bytes)" in reasons["empty.png"]
    assert "a folder named like an image file" in reasons["x.png"]
