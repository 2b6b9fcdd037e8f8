"""entromix.common.stage.run_stage: user errors, Ctrl-C and SIGTERM, and worker pools under it."""

import subprocess
import sys

POOL_STAGE = """
from entromix.data.parallel import ordered_map
from entromix.common.stage import run_stage

def square(x):
    return x * x

def main():
    print("sum", sum(ordered_map(square, list(range(400)), 2, "squares", chunksize=4)))

run_stage("t", main)
"""


def test_a_worker_pool_inside_a_stage_ends_cleanly():
    """Pool.terminate() sends SIGTERM to its forked workers; they must die quietly, not raise the
    stage's own SIGTERM exception (which printed tracebacks and once hung an ingest)."""
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-c", POOL_STAGE], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "sum 21253400" in proc.stdout
        assert "Terminated" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_user_error_is_one_line_and_exit_2():
    script = (
        "from entromix.common.errors import DataError\nfrom entromix.common.stage import run_stage\n"
        "def main():\n    raise DataError('data/x.csv: broken. Fix it.')\nrun_stage('t', main)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "entromix t: error: data/x.csv: broken. Fix it."
