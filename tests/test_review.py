"""`entromix review`: a change and its baseline at N seeds through DVC's queue, compared seed by seed.

The project is test_compare_cli's: one fast stage that writes the evaluate stage's files from
params.yaml (prediction quality set by ``curriculum.strategy``, noise by ``train.seed``). Every run
here is a real ``dvc exp run --queue`` / ``dvc queue start``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from in_process import cli_in_process
from test_compare_cli import DVC_YAML, GIT, PARAMS, STAGE_SCRIPT, run

from entromix.comparison.review import parse_overrides, plan_review, progress_line

pytestmark = pytest.mark.slow


def make_project(root: Path, params: dict = PARAMS) -> Path:
    root.mkdir(parents=True)
    (root / "make_predictions.py").write_text(STAGE_SCRIPT)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro", "-q"], root)
    run(GIT + ["add", "-A"], root)
    run(GIT + ["commit", "-qm", "baseline"], root)
    return root


def review(repo: Path, *args: str):
    return cli_in_process(repo, "review", "--poll", "1", *args)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """A project reviewed once: -S curriculum.strategy=strong at 3 seeds, 2 workers."""
    repo = make_project(tmp_path_factory.mktemp("review") / "project")
    params_before = (repo / "params.yaml").read_bytes()
    proc = review(repo, "-S", "curriculum.strategy=strong", "--seeds", "3", "--jobs", "2", "--out", "review.md")
    return repo, proc, params_before


def test_review_runs_baseline_and_change_at_each_seed_as_dvc_experiments(reviewed):
    repo, proc, params_before = reviewed
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("## entromix review: -S curriculum.strategy=strong, 3 seed(s)")
    # the seed-level answer leads: the change (strong predictions) is better at every seed
    assert out.index("3 seed-paired runs per side") < out.index("Per seed, B - A")
    auc_row = next(line for line in out.splitlines() if line.startswith("| ROC-AUC (DeLong) |"))
    assert "**B better**" in auc_row and "3 of 3" in auc_row
    assert (repo / "review.md").read_text() == out
    # progress with an ETA, on stderr
    assert "review: 6 experiments (3 seeds x baseline and change); 0 already run, 6 queued" in proc.stderr
    assert "review: 6/6 done" in proc.stderr and "ETA" in proc.stderr
    # the experiments are DVC's, visible in dvc exp show; the workspace's params untouched
    names = set(run(["dvc", "exp", "list", "--name-only"], repo).stdout.split())
    assert sum(n.startswith("review-") and "-base-s" in n for n in names) == 3
    assert sum(n.startswith("review-") and "-strategy-strong-" in n for n in names) == 3
    assert (repo / "params.yaml").read_bytes() == params_before
    # each experiment carries its seed and the change
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    experiments = {
        e["name"]: e["data"]["params"]["params.yaml"]["data"]
        for row in shown
        for e in (row.get("experiments") or [])
        for e in (e.get("revs") or [])
        if e.get("name", "").startswith("review-")
    }
    for name, params in experiments.items():
        seed = int(name.rsplit("-s", 1)[1])
        assert params["train"]["seed"] == seed and params["score"]["seed"] == seed
        assert params["curriculum"]["strategy"] == ("weak" if "-base-" in name else "strong")


def test_a_second_review_reuses_what_ran(reviewed):
    repo, first, _ = reviewed
    proc = review(repo, "-S", "curriculum.strategy=strong", "--seeds", "3")
    assert proc.returncode == 0, proc.stderr
    assert "6 already run, 0 queued" in proc.stderr
    # the same experiments, so the same table (but the wall time)
    assert proc.stdout.split("_Baseline")[0] == first.stdout.split("_Baseline")[0]


def test_the_review_records_the_baseline_seed_spread_and_compare_sets_one_pair_against_it(reviewed):
    repo, _, _ = reviewed
    spread = json.loads((repo / "results/seed_spread.json").read_text())
    auc = spread["metrics"]["roc_auc"]
    assert spread["n"] == 3 and len(auc["values"]) == 3 and auc["sd"] > 0
    assert spread["experiments"][0].endswith("-base-s0") and spread["seed_keys"] == ["train.seed", "score.seed"]
    names = sorted(run(["dvc", "exp", "list", "--name-only"], repo).stdout.split())
    base = [n for n in names if "-base-" in n]
    # two seeds of the baseline: the per-image tests may call them different; the spread does not
    proc = cli_in_process(repo, "compare", base[0], base[1], "--json")
    report = json.loads(proc.stdout)
    row = report["pairs"][0]["metrics"]["roc_auc"]
    assert row["seed_sd"] == pytest.approx(auc["sd"]) and row["within_seed_spread"]
    assert row["verdict"] == "within seed spread" or row["verdict"] == "within noise"
    markdown = cli_in_process(repo, "compare", base[0], base[1]).stdout
    assert "**One draw per side**" in markdown and "Seed-to-seed spread of the same config on this data" in markdown
    assert "seed sd of one config" in markdown and "3 seeds, recorded" in markdown


@pytest.mark.parametrize(
    "args, message",
    [
        (["-S", "curriculum.strategi=strong"], "params.yaml has no key curriculum.strategi. Did you mean"),
        (["-S", "curiculum.strategy=strong"], "curiculum is not a section of params.yaml"),
        (["-S", "curriculum.strategy=strong", "--seeds", "0"], "--seeds 0: review at least 1 seed"),
        (["-S", "curriculum.strategy=weak"], "already has that value"),
        (["-S", "train.seed=4"], "which the review varies itself"),
        ([], "give the change to review with -S"),
        (["-S", "strategy"], "is not key=value"),
    ],
)
def test_bad_review_input_is_refused_before_anything_runs(tmp_path, args, message):
    repo = make_project(tmp_path / "project")
    params_before = (repo / "params.yaml").read_bytes()
    proc = review(repo, *args)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert (repo / "params.yaml").read_bytes() == params_before
    assert run(["dvc", "queue", "status"], repo).stdout.count("Queued") == 0
    assert run(["git", "status", "--porcelain"], repo).stdout == ""


def test_a_baseline_that_cannot_be_built_is_one_message(tmp_path):
    """The workspace's params make the stage fail (an unknown strategy): the baseline experiments
    fail in DVC's queue; the review stops with exit 2, names them and the command for their log."""
    repo = make_project(tmp_path / "project")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["curriculum"]["strategy"] = "medium"  # the stage script knows weak and strong only
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    params_before = (repo / "params.yaml").read_bytes()
    proc = review(repo, "-S", "curriculum.strategy=strong", "--seeds", "1")
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "failed, so the review has no result for them" in last and "dvc queue logs review-" in last
    assert "-base-s0" in last and "Traceback" not in proc.stderr
    assert (repo / "params.yaml").read_bytes() == params_before


def test_plan_names_and_commands():
    text = yaml.safe_dump(PARAMS, sort_keys=False)
    plan = plan_review(text, ["curriculum.strategy=strong"], [0, 4])
    assert plan.base[1].endswith("-base-s4") and plan.change[0].startswith(f"review-{plan.params_hash}-strategy-")
    assert plan.commands()[1] == [
        "exp",
        "run",
        "--queue",
        "-n",
        plan.change[0],
        "-S",
        "curriculum.strategy=strong",
        "-S",
        "train.seed=0",
        "-S",
        "score.seed=0",
    ]
    # another params.yaml: other names, so nothing of the earlier baseline is reused for it
    other = plan_review(text.replace("n_test: 120", "n_test: 100"), ["curriculum.strategy=strong"], [0])
    assert other.base[0] != plan.base[0]
    assert parse_overrides(["evaluate.n_test=50"], PARAMS)[0].value == "50"


def test_progress_line_eta():
    assert progress_line(0, 2, 6, 30, 6).endswith("ETA after the first run ends")
    assert progress_line(2, 2, 6, 120, 6) == "review: 2/6 done, 2 running; 2 min 00 s elapsed, ETA 4 min 00 s"
    # runs reused from before do not count in the ETA
    assert progress_line(3, 1, 6, 60, 4) == "review: 3/6 done, 1 running; 1 min 00 s elapsed, ETA 3 min 00 s"


def test_exp_show_lists_the_review_with_its_changed_params_and_the_review_metrics(reviewed):
    repo, _, _ = reviewed
    proc = cli_in_process(repo, "exp-show", "--filter", "review-")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    # the params that differ between the experiments, then the metrics a reviewer reads; nothing else
    assert head == [
        "experiment",
        "rev",
        "state",
        "curriculum.strategy",
        "score.seed",
        "train.seed",
        "test ROC-AUC",
        "sens (tuned)",
        "spec (tuned)",
        "threshold",
        "Brier",
        "synthetic admitted",
    ]
    rows = [line for line in lines[2:] if line.startswith("| review-")]
    assert len(rows) == 6 and all("| done |" in row for row in rows)
    assert all("| 0.4000 |" in row for row in rows)  # the stage's tuned threshold, read from evaluate.json
    assert "6 row(s); params shown: those that differ between them (3)" in proc.stdout


def test_queue_workers_share_the_cores_between_the_jobs():
    from entromix.comparison.review import worker_env

    assert worker_env(2, {}, cores=2)["OMP_NUM_THREADS"] == "1"
    assert worker_env(2, {}, cores=16)["OMP_NUM_THREADS"] == "8"
    assert worker_env(4, {}, cores=2)["OMP_NUM_THREADS"] == "1"
    assert worker_env(2, {"OMP_NUM_THREADS": "3"}, cores=2)["OMP_NUM_THREADS"] == "3"  # the user's choice stays
