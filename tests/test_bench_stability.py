"""benchmarks/bench_stability.py (issue 33) at toy size: the real `dvc repro` rerun under the
perturbations it simulates, its report and its checks. (A file of its own, so that pytest-xdist's
--dist loadfile can run it beside the other benchmark tests.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

#: the tiny pipeline of tests/test_pipeline_e2e.py, as bench_stability overrides
TINY_PIPELINE = [
    *("-S", "demo.image_size=48", "-S", "demo.n_benign=24", "-S", "demo.n_malignant=12"),
    *("-S", "demo.syn_good=4", "-S", "demo.syn_degraded=2", "-S", "demo.syn_hallucinated=2"),
    *("-S", "demo.split={train: 0.375, val: 0.125, test: 0.5}", "-S", "ingest.image_size=32"),
    *("-S", "ingest.workers=1", "-S", "score.image_size=32", "-S", "score.epochs=1", "-S", "score.folds=2"),
    *("-S", "score.batch_size=8", "-S", "curriculum.warmup_epochs=1", "-S", "train.image_size=32"),
    *("-S", "train.epochs=3", "-S", "train.batch_size=8", "-S", "evaluate.bootstrap_resamples=20"),
    *("-S", "evaluate.gradcam_errors=0", "-S", "evaluate.gradcam_correct=0", "-S", "train.ensemble=1"),
]


def run_bench_stability(tmp_path: Path, out: Path, *args: str) -> dict:
    """benchmarks/bench_stability.py on the tiny pipeline at seed 0 (scratch copies under tmp_path/work);
    its JSON report."""
    import json
    import os

    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_stability.py"), *args, "--seeds", "0"]
        + ["--out", str(out), "--keep", str(tmp_path / "work"), *TINY_PIPELINE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return json.loads(out.read_text())


def test_bench_stability_reruns_the_pipeline_under_each_perturbation(tmp_path):
    """Two runs of the real `dvc repro` in a scratch copy (the second forced from the score stage
    under another oneDNN ISA): one row each, the spread, the JSD drift and the target checks."""
    out = tmp_path / "stability.json"
    report = run_bench_stability(tmp_path, out, "--isa", "AVX2,DEFAULT", "--threads", "1")
    assert [r["name"] for r in report["runs"]] == ["isa-avx2-t1-s0", "isa-default-t1-s0"]
    assert report["runs"][0]["jsd_drift_max"] == 0.0  # the reference run of its seed
    assert set(report["spread"]) >= {"roc_auc", "threshold", "brier", "epoch", "jsd_drift_max"}
    assert len(report["checks"]) == 4 and out.with_suffix(".md").read_text().startswith("| run |")
    first = (tmp_path / "work" / "runs" / "isa-avx2-t1-s0" / "repro.log").read_text()
    second = (tmp_path / "work" / "runs" / "isa-default-t1-s0" / "repro.log").read_text()
    assert "Running stage 'ingest'" in first and "Running stage 'ingest'" not in second
    assert "Running stage 'score'" in second and "Running stage 'evaluate'" in second


def test_bench_stability_scorer_only_reruns_the_score_stage_alone(tmp_path):
    out = tmp_path / "scorer.json"
    report = run_bench_stability(tmp_path, out, "--scorer-only", "--isa", "DEFAULT", "--threads", "1,2")
    assert [r["name"] for r in report["runs"]] == ["isa-default-t1-s0", "isa-default-t2-s0"]
    assert report["checks"] == [] and "oof_auc" in report["runs"][1] and "roc_auc" not in report["runs"][1]
    assert report["runs"][1]["jsd_drift_max"] >= 0.0 and "jsd_drift_max" in report["spread"]
    second = (tmp_path / "work" / "runs" / "isa-default-t2-s0" / "repro.log").read_text()
    assert "Running stage 'score'" in second and "Running stage 'train'" not in second
