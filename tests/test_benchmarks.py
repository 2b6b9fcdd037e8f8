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


def test_make_bench_runs_the_scripts_tested_here():
    result = subprocess.run(["make", "-n", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    for script in ("bench_ingest.py", "bench_score.py", "bench_train.py"):
        assert f"benchmarks/{script}" in result.stdout
