"""Parallel experiments (issue 36): four experiments queued and run two at a time by DVC's own queue
(`dvc exp run --queue`, `dvc queue start -j 2`) all finish, and each one's results equal those of
the same experiment run alone, so nothing is shared between runs that happen at once: not the
training checkpoints and resume state, not temporary files, not the score stage's fold store.

Two of the four change the score stage with the same settings, so two score runs of one fingerprint
run side by side; the other two change only the training. Every run here has one thread
(``OMP_NUM_THREADS=1``): the thread count changes float rounding, and the test is about
interference, not rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_kill_anywhere import SMALL
from test_pipeline_e2e import GIT, copy_project, set_params, sh

pytestmark = pytest.mark.slow
EXPERIMENTS = {
    "par-train-seed-1": ["train.seed=1"],
    "par-train-seed-2": ["train.seed=2"],
    "par-score-seed-1": ["score.seed=1"],
    "par-score-seed-1-train-seed-1": ["score.seed=1", "train.seed=1"],
}
# what each experiment's results are compared on: the committed metrics and test predictions
RESULTS = ["metrics/score.json", "metrics/train.json", "metrics/evaluate.json", "data/predictions/test.csv"]


def dvc(repo: Path, *args: str) -> str:
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
    )
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def sets(overrides: list[str]) -> list[str]:
    return [arg for value in overrides for arg in ("-S", value)]


def experiment_revs(repo: Path) -> dict[str, str]:
    """{experiment name: its commit} from `dvc exp show --json`."""
    shown = json.loads(dvc(repo, "exp", "show", "--json", "--no-fetch"))
    return {
        e["name"]: e["rev"]
        for row in shown
        for group in row.get("experiments") or []
        for e in group.get("revs") or []
        if e.get("name")
    }


def results_at(repo: Path, rev: str) -> dict[str, str]:
    return {name: sh(["git", "show", f"{rev}:{name}"], repo) for name in RESULTS}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The tiny project run once (OMP_NUM_THREADS=1) and committed with its outputs: the baseline."""
    repo = tmp_path_factory.mktemp("parallel") / "project"
    copy_project(repo)
    set_params(repo, SMALL)
    sh(["git", "init", "-q"], repo)
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "the tiny project"], repo)
    dvc(repo, "repro")
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "baseline outputs"], repo)
    return repo


def test_four_experiments_two_at_a_time_equal_the_same_experiments_run_alone(repo):
    for name, overrides in EXPERIMENTS.items():
        dvc(repo, "exp", "run", "--queue", "-n", name, *sets(overrides))
    dvc(repo, "queue", "start", "-j", "2")
    deadline = time.monotonic() + 900
    while True:
        status = dvc(repo, "queue", "status")
        rows = [line.split() for line in status.splitlines() if line.split() and line.split()[0] != "Task"]
        states = {row[1]: row[-1] for row in rows if len(row) >= 3 and row[1] in EXPERIMENTS}
        if len(states) == len(EXPERIMENTS) and all(s in ("Success", "Failed") for s in states.values()):
            break
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert set(states.values()) == {"Success"}, status
    queued = experiment_revs(repo)
    together = {name: results_at(repo, queued[name]) for name in EXPERIMENTS}
    dvc(repo, "queue", "stop")

    # the same experiments, one after another in the workspace
    for name, overrides in EXPERIMENTS.items():
        sh(["git", "checkout", "params.yaml"], repo)
        dvc(repo, "exp", "run", "-n", f"alone-{name}", *sets(overrides))
    sh(["git", "checkout", "params.yaml"], repo)
    revs = experiment_revs(repo)
    alone = {name: results_at(repo, revs[f"alone-{name}"]) for name in EXPERIMENTS}

    for name in EXPERIMENTS:
        assert together[name] == alone[name], name
    # and the experiments differ from each other where their settings do (the comparison can fail)
    evaluate = {name: together[name]["metrics/evaluate.json"] for name in EXPERIMENTS}
    assert len(set(evaluate.values())) == len(EXPERIMENTS)
    scores = {name: together[name]["metrics/score.json"] for name in EXPERIMENTS}
    assert scores["par-score-seed-1"] == scores["par-score-seed-1-train-seed-1"] != scores["par-train-seed-1"]
