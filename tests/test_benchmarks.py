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
