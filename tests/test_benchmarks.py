"""The benchmark scripts behind `make bench` and BENCHMARKS.md run, here at toy sizes.

Speed is not asserted (a timed test only measures the machine); the figures in BENCHMARKS.md
come from the full-size runs. This keeps the scripts working as the code changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TOY = {
    "bench_ingest.py": ["--counts", "24", "--size", "48", "--image-size", "32", "--workers", "1"],
    "bench_score.py": [
        "--size",
        "32",
        "--n",
        "64",
        "--batch",
        "32",
        "--train-n",
        "32",
        "--repeats",
        "1",
        "--device",
        "cpu",
    ],
    "bench_train.py": ["--size", "32", "--n-real", "64", "--n-syn", "16", "--epochs", "2", "--device", "cpu"],
    "bench_predict.py": ["--n", "16", "--file-size", "64", "--size", "32"],
    "bench_compare.py": ["--sizes", "40", "--resamples", "100"],
    "bench_feature_scores.py": ["--n-real", "16", "--n-syn", "6", "--size", "32", "--epochs", "1", "--folds", "2"],
    # the two-process run through torchrun (the one-process run is the same worker without it)
    "bench_distributed.py": [
        "--nproc",
        "2",
        "--size",
        "32",
        "--batch",
        "8",
        "--n-real",
        "32",
        "--n-syn",
        "8",
        "--epochs",
        "2",
    ],
}


@pytest.mark.parametrize("script", sorted(TOY))
def test_benchmark_script_runs_at_toy_size(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *TOY[script]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{script}:\n{result.stdout}\n{result.stderr}"
    assert "/s" in result.stdout  # every script reports a throughput


def test_bench_memory_quick_runs_each_stage_process_and_reports_its_peak_memory(tmp_path):
    """benchmarks/bench_memory.py --quick (issue 36): the real stage scripts at toy sizes in a scratch
    project, one row per stage and N with the array's size, the peak RSS and the seconds."""
    import json

    out = tmp_path / "memory.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"), "--quick", "--out", str(out)]
        + ["--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    rows = json.loads(out.read_text())["rows"]
    assert [(r["stage"], r["n"]) for r in rows] == [
        ("ingest", 60),
        ("ingest", 120),
        ("score", 120),
        ("train", 120),
        ("predict", 120),
    ]
    assert all(r["peak_rss_mib"] > 20 and r["peak_anon_mib"] > 0 and r["seconds"] > 0 for r in rows)
    assert abs(rows[1]["array_mib"] - 120 * 64 * 64 * 3 / 2**20) < 0.01 and rows[-1]["array_mib"] == 0  # 64 px
    assert "| stage | N | array MiB | peak RSS MiB |" in result.stdout and "ingest: RSS - array" in result.stdout
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["deploy_model.pt", "pool"]  # projects removed


def test_make_bench_runs_the_scripts_tested_here():
    result = subprocess.run(["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    for script in ("bench_ingest.py", "bench_score.py", "bench_train.py", "bench_memory.py"):
        assert f"benchmarks/{script}" in result.stdout


#: the tiny pipeline of tests/test_pipeline_e2e.py, as bench_stability overrides
TINY_PIPELINE = [
    *("-S", "demo.image_size=48", "-S", "demo.n_benign=24", "-S", "demo.n_malignant=12"),
    *("-S", "demo.syn_good=4", "-S", "demo.syn_degraded=2", "-S", "demo.syn_hallucinated=2"),
    *("-S", "demo.split={train: 0.375, val: 0.125, test: 0.5}", "-S", "ingest.image_size=32"),
    *("-S", "ingest.workers=1", "-S", "score.image_size=32", "-S", "score.epochs=1", "-S", "score.folds=2"),
    *("-S", "score.batch_size=8", "-S", "curriculum.warmup_epochs=1", "-S", "train.image_size=32"),
    *("-S", "train.epochs=3", "-S", "train.batch_size=8", "-S", "evaluate.bootstrap_resamples=20"),
    *("-S", "evaluate.gradcam_errors=0", "-S", "evaluate.gradcam_correct=0"),
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


def test_gpu_check_dry_run_executes_every_step_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run: the device check's steps (environment, tests, the demo
    pipeline's stage scripts and exports, the train / score / 2-process benchmarks) on the CPU at toy
    sizes, so the script is known to work before a GPU machine is lent."""
    import json

    out = tmp_path / "gpu_check"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    stages = ["demo", "ingest", "score", "train", "evaluate", "predict", "export-onnx", "export-torchscript"]
    assert [f"pipeline:{s}" for s in stages] == [
        s for s in steps if s.startswith("pipeline:") and s != "pipeline:metrics"
    ]
    assert all(steps[name]["rc"] == 0 for name in steps) and summary["failed"] == []
    assert 0 <= steps["pipeline:metrics"]["figures"]["test_roc_auc"] <= 1
    assert (
        steps["bench_train"]["figures"]["efficiency"] > 0 and "training_efficiency" in steps["bench_score"]["figures"]
    )
    assert steps["distributed"]["figures"]["two_process_images_per_s"] > 0
    assert (out / "project" / "model.onnx").is_file() and (out / "summary.md").read_text().startswith("gpu_check (dry")
