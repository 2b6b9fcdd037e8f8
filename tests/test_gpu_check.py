"""benchmarks/gpu_check.py --dry-run (issue 38) on the CPU. (A file of its own, so that
pytest-xdist's --dist loadfile can run it beside the other benchmark tests.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


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
