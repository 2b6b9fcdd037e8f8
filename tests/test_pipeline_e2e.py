"""End to end: the real `dvc repro` on tiny demo data in a temporary git repo.

Copies the project's pipeline files into a fresh git repo, shrinks the demo, runs the whole DAG,
then checks that a second `dvc repro` reruns nothing and that a params change reruns only the
stages that read it.
"""

from __future__ import annotations

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

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {
    "demo": {"image_size": 48, "n_benign": 24, "n_malignant": 8, "images_per_patient": 4,
             "syn_good": 4, "syn_degraded": 2, "syn_hallucinated": 2},
    "ingest": {"image_size": 32, "workers": 1},
    "score": {"image_size": 32, "epochs": 1, "folds": 2, "batch_size": 8, "device": "cpu"},
}


def sh(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def ran(output: str) -> set[str]:
    """Names of the stages that `dvc repro` ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


def set_params(repo: Path, changes: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in changes.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("e2e") / "project"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        if (PROJECT / name).exists():
            shutil.copy(PROJECT / name, repo / name)
    for name in ("pipeline", "src"):
        shutil.copytree(PROJECT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / ".dvc").mkdir()
    shutil.copy(PROJECT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
    set_params(repo, TINY)
    sh(["git", "init", "-q"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], repo)
    return repo


def test_repro_runs_every_stage_and_writes_outputs(repo):
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == {"demo", "ingest", "score"}
    images = np.load(repo / "data/prepared/images.npy", mmap_mode="r")
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    assert images.shape == (40, 32, 32, 3) and len(manifest) == 40
    assert manifest.loc[manifest["is_syn"] == 1, "split"].eq("train").all()
    metrics = json.loads((repo / "metrics/ingest.json").read_text())["ingest"]
    assert metrics["synthetic"]["total"] == 8
    assert sum(metrics["real"][s]["total"] for s in ("train", "val", "test")) == 32
    assert (manifest[manifest["is_syn"] == 0].groupby("group")["split"].nunique() == 1).all()


def test_second_repro_reruns_nothing(repo):
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == set(), out
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], repo)


def test_dataset_csv_has_every_training_image(repo):
    data = pd.read_csv(repo / "data/dataset.csv")
    assert list(data.columns[:4]) == ["filename", "is_syn", "jsd_score", "label"]
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    assert len(data) == int((manifest["split"] == "train").sum())
    assert data["jsd_score"].between(0, 1).all()
    score = json.loads((repo / "metrics/score.json").read_text())["score"]
    assert "tier_auroc_hallucinated_vs_good" in score


def test_score_param_change_reruns_score_only(repo):
    set_params(repo, {"score": {"seed": 1}})
    assert ran(sh(["dvc", "repro"], repo)) == {"score"}


def test_ingest_param_change_reruns_ingest_and_downstream(repo):
    set_params(repo, {"ingest": {"image_size": 24}})
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == {"ingest", "score"}, out
    assert np.load(repo / "data/prepared/images.npy", mmap_mode="r").shape[1:] == (24, 24, 3)


def test_metrics_show_reads_the_ingest_metrics(repo):
    out = sh(["dvc", "metrics", "show", "--json"], repo)
    assert '"ingest"' in out and '"synthetic"' in out and '"oof_auc"' in out
