"""`entromix compare` on a real DVC project: committed revisions, experiments, seed pairs, bad input.

The project is tiny and trains nothing: its one stage writes the evaluate stage's files
(data/predictions/test.csv, DVC-cached, and metrics/evaluate.json) from params.yaml, with
predictions whose quality is set by ``curriculum.strategy`` and a seed. So the test exercises the
real path: names resolved by git and DVC, predictions read from the DVC cache at each revision and
experiment. The real pipeline's output is compared in tests/test_pipeline_e2e.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from in_process import cli_in_process

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

STAGE_SCRIPT = """
import json, os
import numpy as np, yaml
p = yaml.safe_load(open("params.yaml"))
seed, strength = p["train"]["seed"], {"weak": 0.8, "strong": 2.5}[p["curriculum"]["strategy"]]
n_test = p["evaluate"]["n_test"]
rng = np.random.default_rng(1000 + seed)
y = np.r_[np.ones(n_test // 2, int), np.zeros(n_test - n_test // 2, int)]
logit = strength * (2 * y - 1) + rng.normal(size=len(y))
prob = 1 / (1 + np.exp(-logit))
os.makedirs("data/predictions", exist_ok=True); os.makedirs("metrics", exist_ok=True)
with open("data/predictions/test.csv", "w") as f:
    f.write("filename,class,label,probability,prediction\\n")
    for i in range(len(y)):
        name = "malignant" if y[i] else "benign"
        f.write(f"real/test/img_{i:03d}.png,{name},{y[i]},{prob[i]:.6f},{int(prob[i] >= 0.4)}\\n")
json.dump({"evaluate": {"threshold": {"tuned": 0.4}, "test": {"roc_auc": 0.0}}}, open("metrics/evaluate.json", "w"))
"""

DVC_YAML = {
    "stages": {
        "evaluate": {
            "cmd": "python make_predictions.py",
            "deps": ["make_predictions.py"],
            "params": ["train", "score", "ingest", "curriculum", "evaluate"],
            "outs": ["data/predictions/test.csv"],
            "metrics": [{"metrics/evaluate.json": {"cache": False}}],
        }
    }
}
PARAMS = {
    "ingest": {"scarce_seed": 0},
    "score": {"seed": 0},
    "curriculum": {"strategy": "weak"},
    "train": {"seed": 0},
    "evaluate": {"n_test": 120},
}


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def compare(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """``entromix compare ARGS`` in ``repo``, run in this process (tests/in_process.py); the first
    test runs it as a real process."""
    return cli_in_process(repo, "compare", *args)


def compare_process(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "entromix.cli", "compare", *args], repo, check=False)


def seeds(k: int) -> list[str]:
    return [a for key in ("train.seed", "score.seed", "ingest.scarce_seed") for a in ("-S", f"{key}={k}")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """Commits: 'no-predictions' (pipeline defined, never run), 'weak' (run), 'strong' (run);
    experiments weak-s0..2 and strong-s0..2 from 'strong', and 'fewer-images' with another test set."""
    repo = tmp_path_factory.mktemp("compare") / "project"
    repo.mkdir()
    (repo / "make_predictions.py").write_text(STAGE_SCRIPT)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    run(GIT + ["add", "-A"], repo)
    run(GIT + ["commit", "-qm", "pipeline, not run"], repo)
    run(GIT + ["tag", "no-predictions"], repo)
    run(["dvc", "repro", "-q"], repo)
    run(GIT + ["add", "-A"], repo)
    run(GIT + ["commit", "-qm", "weak"], repo)
    run(GIT + ["tag", "weak"], repo)
    params = dict(PARAMS, curriculum={"strategy": "strong"})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro", "-q"], repo)
    run(GIT + ["add", "-A"], repo)
    run(GIT + ["commit", "-qm", "strong"], repo)
    run(GIT + ["tag", "strong"], repo)
    for k in range(3):
        for strategy in ("weak", "strong"):
            run(
                [
                    "dvc",
                    "exp",
                    "run",
                    "-q",
                    "-n",
                    f"{strategy}-s{k}",
                    "-S",
                    f"curriculum.strategy={strategy}",
                    *seeds(k),
                ],
                repo,
            )
    run(["dvc", "exp", "run", "-q", "-n", "fewer-images", "-S", "evaluate.n_test=100"], repo)
    run(GIT + ["reset", "-q", "--hard"], repo)  # the workspace back at HEAD ('strong')
    run(["dvc", "checkout", "-q"], repo)
    return repo


def test_two_committed_revisions_markdown(repo):
    proc = compare_process(repo, "weak", "strong")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "A = `weak`" in out and "B = `strong`" in out and "120 test images (60 malignant, 60 benign)" in out
    assert "| ROC-AUC (DeLong) |" in out and "McNemar" in out
    assert "**B better**" in out.splitlines()[out.splitlines().index("|---|---|---|---|---|---|---|") + 1]
    assert "`curriculum.strategy`: 'weak' -> 'strong'" in out
    assert "Thresholds (tuned on val): A 0.4000, B 0.4000" in out


def test_json_and_out_file(repo, tmp_path):
    out_file = tmp_path / "review.json"
    proc = compare(repo, "weak", "strong", "--json", "--out", str(out_file))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert json.loads(out_file.read_text()) == report
    (pair,) = report["pairs"]
    auc = pair["metrics"]["roc_auc"]
    assert auc["test"] == "DeLong" and auc["b"] > auc["a"] and auc["ci"][0] > 0 and auc["verdict"] == "B better"
    assert pair["a"]["sha"] != pair["b"]["sha"] and pair["test_set"] == {"images": 120, "malignant": 60, "benign": 60}
    assert set(pair["metrics"]) == {"roc_auc", "sensitivity", "specificity", "balanced_accuracy"}
    assert pair["at_050"]["test"] == "McNemar exact"


def test_same_revision_is_within_noise(repo):
    report = json.loads(compare(repo, "HEAD", "workspace", "--json").stdout)
    for row in report["pairs"][0]["metrics"].values():
        assert row["difference"] == 0 and row["verdict"] == "within noise"
    assert report["pairs"][0]["at_050"]["p_value"] == 1.0


def test_two_experiments(repo):
    proc = compare(repo, "weak-s0", "strong-s0")
    assert proc.returncode == 0, proc.stderr
    assert "A = `weak-s0` (" in proc.stdout and "B = `strong-s0` (" in proc.stdout


def test_an_experiment_made_a_branch(repo):
    """The README's review of a pull request: an experiment turned into a branch, against main's commit."""
    run(["dvc", "exp", "branch", "weak-s0", "review-weak"], repo)
    proc = compare(repo, "review-weak", "strong", "--json")
    assert proc.returncode == 0, proc.stderr
    (pair,) = json.loads(proc.stdout)["pairs"]
    direct = json.loads(compare(repo, "weak-s0", "strong", "--json").stdout)["pairs"][0]
    assert pair["metrics"] == direct["metrics"] and pair["a"]["name"] == "review-weak"


def test_seed_pairs_report_the_t_interval(repo):
    proc = compare(repo, "weak-s{seed}", "strong-s{seed}", "--seeds", "0-2", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [p["a"]["seeds"]["train.seed"] for p in report["pairs"]] == [0, 1, 2]
    auc = report["seeds"]["roc_auc"]
    diffs = [p["metrics"]["roc_auc"]["difference"] for p in report["pairs"]]
    assert auc["differences"] == pytest.approx(diffs) and auc["n"] == 3
    assert auc["mean"] == pytest.approx(sum(diffs) / 3) and auc["ci"][0] < auc["mean"] < auc["ci"][1]
    markdown = compare(repo, "weak-s0,weak-s1,weak-s2", "strong-s0,strong-s1,strong-s2").stdout
    assert (
        "3 seed-paired runs" in markdown
        and "t-interval (seeds)" in markdown
        and "| train 0, score 0, ingest 0 |" in markdown
    )


def bad(repo: Path, tmp_path: Path, *args: str) -> str:
    out_file = tmp_path / "review.md"
    proc = compare(repo, *args, "--out", str(out_file))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out_file.exists()  # nothing written
    return proc.stderr


def test_unknown_revision_or_experiment(repo, tmp_path):
    err = bad(repo, tmp_path, "weak", "no-such-experiment")
    assert "'no-such-experiment' is neither a git revision nor an experiment" in err and "dvc exp list" in err


def test_revision_without_predictions(repo, tmp_path):
    err = bad(repo, tmp_path, "no-predictions", "strong")
    assert "'no-predictions' (" in err and "has no data/predictions/test.csv" in err and "never ran there" in err


def test_test_sets_that_differ(repo, tmp_path):
    err = bad(repo, tmp_path, "strong", "fewer-images")
    assert (
        "the test sets differ" in err
        and "strong" in err
        and "fewer-images" in err
        and "only in strong (" in err
        and "img_100.png" in err
    )


def test_pairs_that_do_not_share_seeds(repo, tmp_path):
    err = bad(repo, tmp_path, "weak-s0,weak-s1", "strong-s1,strong-s0")
    assert "pair 1 is not paired" in err
    err = bad(repo, tmp_path, "weak-s0", "weak-s0,weak-s1")
    assert "A names 1 revision(s) and B 2" in err
    err = bad(repo, tmp_path, "weak-s{seed}", "strong-s{seed}")
    assert "--seeds" in err


def test_damaged_predictions_in_the_workspace(repo, tmp_path):
    predictions = repo / "data/predictions/test.csv"
    original = predictions.read_text()
    try:
        predictions.chmod(0o644)
        predictions.write_text("filename,probability\nx.png,0.3\n")
        err = bad(repo, tmp_path, "HEAD", "workspace")
        assert "data/predictions/test.csv at 'workspace'" in err and "missing column(s) label, prediction" in err
    finally:
        predictions.write_text(original)


def test_outside_a_dvc_project(tmp_path):
    proc = compare(tmp_path, "HEAD", "workspace")
    assert proc.returncode == 2 and "is not a DVC project" in proc.stderr


def test_compare_does_not_import_torch():
    """The command starts without the model's stack; its device choices are the pipeline's."""
    code = (
        "import sys; from entromix.cli.main import DEVICE_CHOICES, parser; parser(); "
        "print('torch' in sys.modules, DEVICE_CHOICES)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    from entromix.common.device import DEVICE_NAMES

    assert out[0] == "False" and out[1].strip() == str(DEVICE_NAMES)


def test_a_revision_whose_predictions_are_not_in_this_clones_dvc_cache(repo, tmp_path):
    """A fresh clone of a project whose revisions kept test.csv in DVC's cache: the evaluate stage
    ran there, but its output is not here. The message says so and what to run, not that the
    stage never ran."""
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    err = bad(clone, tmp_path, "weak", "strong")
    assert "'weak' (" in err and "ran the evaluate stage" in err and "dvc pull" in err
    err = bad(clone, tmp_path, "no-predictions", "strong")
    assert "the evaluate stage never ran there" in err


def test_one_pair_says_it_is_one_draw_per_side(repo):
    out = compare(repo, "weak", "strong").stdout
    assert "**One draw per side**" in out and "entromix review -S key=value --seeds 5" in out
    assert "Seed-to-seed spread" not in out  # none recorded in this project
    several = compare(repo, "weak-s0,weak-s1", "strong-s0,strong-s1").stdout
    assert "One draw per side" not in several
