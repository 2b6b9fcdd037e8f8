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
import torch
import yaml

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Every value a test below relies on is pinned here, so neither the user's working params.yaml
# (a README command such as `dvc exp run -S curriculum.jsd_start=0.05` changes it) nor a committed
# change (their own data root) can change what the tests check.
TINY = {
    "demo": {
        "seed": 0,
        "image_size": 48,
        "n_benign": 24,
        "n_malignant": 12,
        "images_per_patient": 2,
        "syn_good": 4,
        "syn_degraded": 2,
        "syn_hallucinated": 2,
        "split": {"train": 0.375, "val": 0.125, "test": 0.5},
    },
    "ingest": {
        "data_root": "data/demo",
        "real_dir": "real",
        "synthetic_dir": "synthetic",
        "groups_csv": "groups.csv",
        "tiers_csv": "synthetic_quality.csv",
        "layout": "auto",
        "labels": ["benign", "malignant"],
        "class_map": {"lymphocyte": "benign", "lymphoblast": "malignant"},
        "image_size": 32,
        "split": {"train": 0.375, "val": 0.125, "test": 0.5},
        "workers": 1,
        "scarce_train_images": None,
        "bad_images": "error",
    },
    "score": {
        "model": "resnet18",
        "pretrained_weights": None,
        "image_size": 32,
        "epochs": 1,
        "min_steps": 0,
        "folds": 2,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
    },
    "curriculum": {
        "warmup_epochs": 1,
        "jsd_start": 0.03,
        "jsd_end": 0.311,
        "strategy": "curriculum",
        "pacing": "linear",
        "gate": "hard",
        "rescore_every": 0,
    },
    "train": {
        "model": "resnet18",
        "pretrained_weights": None,
        "image_size": 32,
        "ensemble": 2,  # the default's code path (several members), at half its cost
        "epochs": 3,
        "min_steps": 0,
        "batch_size": 8,
        "seed": 0,
        "device": "cpu",
        "resume": True,
    },
    "evaluate": {"bootstrap_resamples": 50, "device": "cpu", "checkpoint": "best"},
}


def committed_params() -> str:
    """params.yaml as committed (HEAD), not the working copy; the working copy outside a git checkout."""
    proc = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=PROJECT, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else (PROJECT / "params.yaml").read_text()


GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


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


def copy_project(repo: Path) -> None:
    """The project's pipeline files, committed params.yaml, code, inbox and DVC config into ``repo`` (a new folder)."""
    repo.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        if (PROJECT / name).exists():
            shutil.copy(PROJECT / name, repo / name)
    (repo / "params.yaml").write_text(committed_params())
    for name in ("pipeline", "src", "inbox"):
        shutil.copytree(PROJECT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (repo / ".dvc").mkdir()
    shutil.copy(PROJECT / ".dvc" / "config", repo / ".dvc" / "config")
    (repo / ".gitignore").write_text((PROJECT / ".gitignore").read_text())
    # the project keeps the training checkpoints (resume state: about 170 MB here) out of git
    (repo / "models").mkdir()
    shutil.copy(PROJECT / "models" / ".gitignore", repo / "models" / ".gitignore")


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("e2e") / "project"
    copy_project(repo)
    set_params(repo, TINY)
    sh(["git", "init", "-q"], repo)
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "init"], repo)
    return repo


def test_repro_runs_every_stage_and_writes_outputs(repo):
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == {"demo", "ingest", "score", "train", "evaluate", "predict"}
    images = np.load(repo / "data/prepared/images.npy", mmap_mode="r")
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    assert images.shape == (44, 32, 32, 3) and len(manifest) == 44
    assert manifest.loc[manifest["is_syn"] == 1, "split"].eq("train").all()
    metrics = json.loads((repo / "metrics/ingest.json").read_text())["ingest"]
    assert metrics["synthetic"]["total"] == 8
    assert sum(metrics["real"][s]["total"] for s in ("train", "val", "test")) == 36
    assert (manifest[manifest["is_syn"] == 0].groupby("group")["split"].nunique() == 1).all()


def test_second_repro_reruns_nothing(repo):
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == set(), out
    assert "Data and pipelines are up to date" in sh(["dvc", "status"], repo)


RESULT_FILES = [
    "metrics/ingest.json",
    "metrics/score.json",
    "metrics/train.json",
    "metrics/evaluate.json",
    "data/dataset.csv",
    "data/predictions/test.csv",
    "data/prepared/manifest.csv",
    "data/prepared/images.npy",
    # DVCLive's summaries (committed metrics, timings kept out) and series (no timings): a resumed
    # run continues them as if it had never stopped
    "dvclive/score/metrics.json",
    "dvclive/train/metrics.json",
    "dvclive/score/plots/metrics/scorer_loss.tsv",
    "dvclive/train/plots/metrics/train_loss.tsv",
    "dvclive/train/plots/metrics/val_auc.tsv",
    "dvclive/train/plots/metrics/tau.tsv",
]


def snapshot(repo: Path) -> dict[str, bytes]:
    return {name: (repo / name).read_bytes() for name in RESULT_FILES}


def test_fresh_clone_reproduces_the_committed_results(repo, tmp_path):
    """A fresh clone of the committed project on the same machine: `dvc repro` runs every stage
    again and gives byte-identical results (the metrics in git, and the DVC-tracked arrays,
    tables and live series against the first run's), and `dvc metrics diff` prints nothing and
    warns of nothing (every metrics file, DVCLive's summaries included, is in git at every
    revision). This is also the forced rerun of every stage: nothing of the first run is reused."""
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "pipeline outputs"], repo)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    out = sh(["dvc", "repro"], clone)
    assert ran(out) == {"demo", "ingest", "score", "train", "evaluate", "predict"}
    for name in [n for n in RESULT_FILES if n.endswith(".json")]:
        committed = sh(["git", "show", f"HEAD:{name}"], clone)
        assert (clone / name).read_text() == committed, name
    first = snapshot(repo)
    assert [name for name in RESULT_FILES if (clone / name).read_bytes() != first[name]] == []
    proc = subprocess.run(
        ["dvc", "metrics", "diff"],
        cwd=clone,
        capture_output=True,
        text=True,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"),
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", (proc.stdout, proc.stderr)
    # the README's review command works in the fresh clone: HEAD's predictions are in git
    compared = sh([sys.executable, "-m", "entromix.cli", "compare"], clone)
    assert "## entromix compare" in compared and "One draw per side" in compared


def test_a_fresh_clone_on_another_cpu_compares_its_run_with_the_committed_one(repo, tmp_path):
    """A clone whose run produces other bytes (oneDNN capped at AVX2, as on a CPU without AVX-512;
    no DVC cache of the committed run): `entromix compare` (HEAD against the workspace) still reads
    HEAD's test predictions, from git, and prints the table."""
    sh(GIT + ["add", "-A"], repo)
    subprocess.run(GIT + ["commit", "-qm", "pipeline outputs"], cwd=repo, capture_output=True)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / ".dvc/cache").exists()
    env = dict(
        os.environ,
        ONEDNN_MAX_CPU_ISA="AVX2",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    for command in (["dvc", "repro"], [sys.executable, "-m", "entromix.cli", "compare", "--out", "review.md"]):
        proc = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, (command, proc.stdout, proc.stderr)
    assert "## entromix compare" in proc.stdout and "| ROC-AUC (DeLong) |" in proc.stdout
    assert "A = `HEAD`" in proc.stdout and "B = `workspace`" in proc.stdout
    assert (clone / "review.md").read_text() == proc.stdout


def test_training_killed_under_dvc_resumes_on_the_next_repro(repo):
    """SIGKILL to `dvc repro` and its stage process (the whole process group) mid-training."""
    import signal
    import time

    before = snapshot(repo)
    resume = repo / "models/train/checkpoints/resume.pt"
    first_state = resume.stat().st_mtime_ns
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(
        ["dvc", "repro", "-f", "-s", "train"],
        cwd=repo,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while resume.stat().st_mtime_ns == first_state:  # the first epoch of the new run has been saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_output = proc.stdout.read()
    assert "holds a finished run; training afresh" in killed_output
    assert "Updating lock file" not in killed_output  # killed before the stage finished
    # the last good outputs persist (the live log, rewritten as a run trains, is the exception)
    assert (repo / "metrics/train.json").read_bytes() == before["metrics/train.json"]
    assert (repo / "models/train/best.pt").exists()
    out = sh(["dvc", "repro"], repo)
    assert "train" in ran(out) and "resuming from models/train/checkpoints/resume.pt after epoch" in out, out
    after = snapshot(repo)
    assert [name for name in RESULT_FILES if after[name] != before[name]] == []  # as if never interrupted


def test_train_writes_checkpoints_history_and_metrics(repo):
    history = pd.read_csv(repo / "plots/train/history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    curriculum = yaml.safe_load((repo / "params.yaml").read_text())["curriculum"]
    start, end = curriculum["jsd_start"], curriculum["jsd_end"]
    assert history["tau"].tolist() == pytest.approx([0.0, start, end])  # warmup 1, then the ramp
    data = pd.read_csv(repo / "data/dataset.csv")
    syn_jsd = data.loc[data["is_syn"] == 1, "jsd_score"]
    assert history.loc[2, "eligible_synthetic"] == int((syn_jsd <= end + 1e-6).sum())
    metrics = json.loads((repo / "metrics/train.json").read_text())["train"]
    assert metrics["epochs"] == 3 and 0 <= metrics["best_epoch"] < 3
    from entromix.common.live import SERIES_ONLY
    from entromix.training.report import LIVE_KEYS

    live = json.loads((repo / "dvclive/train/metrics.json").read_text())
    assert set(live) == (set(LIVE_KEYS) - SERIES_ONLY) | {"step"} and live["step"] == 2
    assert live["val_auc"] == pytest.approx(history.loc[2, "val_auc"], abs=1e-5)
    loss = pd.read_csv(repo / "dvclive/train/plots/metrics/train_loss.tsv", sep="\t")
    assert loss["step"].tolist() == [0, 1, 2]
    assert loss["train_loss"].tolist() == pytest.approx(history["train_loss"].tolist(), abs=1e-5)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(repo / "models/train" / name, weights_only=True)
        assert ckpt["model_name"] == "resnet18" and ckpt["image_size"] == 32


def test_evaluate_writes_metrics_predictions_and_plots(repo):
    metrics = json.loads((repo / "metrics/evaluate.json").read_text())["evaluate"]
    assert {"roc_auc", "pr_auc", "brier", "at_050", "at_tuned", "ci95"} <= set(metrics["test"])
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    predictions = pd.read_csv(repo / "data/predictions/test.csv")
    assert list(predictions.columns) == ["filename", "class", "label", "probability", "prediction"]
    assert len(predictions) == int(((manifest["split"] == "test") & (manifest["is_syn"] == 0)).sum())
    assert metrics["test"]["n"] == len(predictions)
    # the file holds the probabilities the metrics came from (entromix compare recomputes the AUC from it)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(predictions["label"], predictions["probability"]) == pytest.approx(
        metrics["test"]["roc_auc"], abs=1e-4
    )
    for name in ("roc", "pr", "confusion", "calibration"):
        assert len(pd.read_csv(repo / f"plots/evaluate/{name}.csv")) > 0
    figures = ("roc", "pr", "confusion", "calibration", "training_curves", "curriculum", "jsd_admission")
    figures += ("synthetic_gallery", "synthetic_tiers", "gradcam")
    for name in figures:
        assert (repo / f"plots/evaluate/figures/{name}.png").stat().st_size > 1000


def test_plots_show_renders_every_declared_plot(repo):
    out_dir = repo.parent / "dvc_plots"
    sh(["dvc", "plots", "show", "-o", str(out_dir)], repo)
    html = (out_dir / "index.html").read_text()
    declared = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    # a definition draws one plot; one naming a folder (DVCLive's series) one per file in it
    folders = [next(iter(p)) for p in declared if isinstance(p, dict) and (repo / next(iter(p))).is_dir()]
    drawn = sum(1 for p in declared if isinstance(p, dict)) - len(folders)
    drawn += sum(len(list((repo / folder).glob("*.tsv"))) for folder in folders)
    assert html.count("vegaEmbed(") == drawn and "train_recall_malignant" in html
    assert "jsd_admission.png" in html or "jsd_admission" in " ".join(p.name for p in out_dir.rglob("*"))


EVERY_OUTPUT_OF_TRAIN_AND_AFTER = [
    "models/train/best.pt",
    "models/train/last.pt",
    "models/train/run.json",
    "metrics/train.json",
    "plots/train/history.csv",
    "dvclive/train/metrics.json",
    "models/deploy/model.pt",
    "models/deploy/MODEL_CARD.md",
    "metrics/evaluate.json",
    "data/predictions/test.csv",
]


def test_a_failed_experiment_keeps_every_output_of_the_last_good_run(repo):
    """Issue 36's typo, as DVC's own message suggests adding a key: `dvc exp run -S
    +curriculum.jsd_strat=0.05` makes the train stage exit 2 on the unknown key. Every output persists
    (dvc.yaml), so the previous run's files are all there byte for byte, `dvc metrics diff` is empty,
    and `dvc status` names the changed params; `git checkout params.yaml` undoes the typo."""
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "outputs before the failed experiment", "--allow-empty"], repo)
    names = RESULT_FILES + EVERY_OUTPUT_OF_TRAIN_AND_AFTER
    before = {name: (repo / name).read_bytes() for name in names}
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    failed = subprocess.run(
        ["dvc", "exp", "run", "-S", "+curriculum.jsd_strat=0.05"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert failed.returncode != 0
    assert "unknown key(s) curriculum.jsd_strat" in failed.stdout + failed.stderr
    assert "Did you mean curriculum.jsd_strat -> curriculum.jsd_start" in failed.stdout + failed.stderr
    assert [name for name in names if (repo / name).read_bytes() != before[name]] == []
    assert sh(["dvc", "metrics", "diff"], repo).strip() == ""
    assert "train" in sh(["dvc", "status"], repo)
    sh(["git", "checkout", "params.yaml"], repo)
    assert "up to date" in sh(["dvc", "status"], repo)


def test_exp_run_with_a_curriculum_change_reruns_train_and_evaluate(repo):
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "pipeline outputs after the resumed run", "--allow-empty"], repo)
    out = sh(["dvc", "exp", "run", "-n", "e2e-start", "-S", "curriculum.jsd_start=0.05"], repo)
    assert ran(out) == {"train", "evaluate", "predict"}, out
    history = pd.read_csv(repo / "plots/train/history.csv")
    assert history.loc[1, "tau"] == pytest.approx(0.05)
    # entromix results reads this export (entromix sweep: dvc.api.exp_show): one finished experiment
    from entromix.comparison.exports import experiments_from_exp_show
    from entromix.comparison.sweep_run import export_rows

    exported = export_rows({"e2e-start"}, repo=str(repo))
    (experiment,) = experiments_from_exp_show(json.loads(json.dumps(exported)))
    assert experiment.metrics["tau"] == pytest.approx(history.loc[2, "tau"], abs=1e-5)  # the live log comes along
    assert (
        experiment.params["curriculum.jsd_start"] == 0.05 and experiment.params["curriculum.strategy"] == "curriculum"
    )
    assert 0 <= experiment.metrics["evaluate.test.roc_auc"] <= 1 and "train.synthetic.all.pool" in experiment.metrics
    diff = sh(["dvc", "metrics", "diff", "--all", "--json"], repo)
    changes = json.loads(diff)
    assert "metrics/evaluate.json" in changes and "metrics/train.json" in changes
    assert any(k.startswith("evaluate.test.") for k in changes["metrics/evaluate.json"])
    table = sh(["dvc", "metrics", "diff", "--all"], repo)
    assert "evaluate.test.roc_auc" in table and "evaluate.test.at_tuned.sensitivity" in table
    plots = repo.parent / "plots_diff"
    sh(["dvc", "plots", "diff", "-o", str(plots)], repo)  # HEAD against the experiment in the workspace
    assert "workspace" in (plots / "index.html").read_text()
    # the README's review commands: the experiment table, and one live series against the experiment
    assert "e2e-start" in sh(["dvc", "exp", "show", "--only-changed", "--no-pager"], repo)
    series = repo.parent / "plots_series"
    target = ["--targets", "dvclive/train/plots/metrics/val_auc.tsv"]
    sh(["dvc", "plots", "diff", "e2e-start", *target, "-o", str(series)], repo)
    assert "val_auc" in (series / "index.html").read_text()
    # the noise-aware review of the same change: the committed run against the experiment, read from the DVC cache
    review = sh([sys.executable, "-m", "entromix.cli", "compare", "HEAD", "e2e-start", "--json"], repo)
    (pair,) = json.loads(review[: review.rindex("}") + 1])["pairs"]
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())["evaluate"]
    assert pair["metrics"]["roc_auc"]["b"] == pytest.approx(evaluate["test"]["roc_auc"], abs=1e-4)
    assert pair["test_set"]["images"] == evaluate["test"]["n"]
    assert pair["params_differ"] == {"curriculum.jsd_start": [0.03, 0.05]}


def test_dataset_csv_has_every_training_image(repo):
    data = pd.read_csv(repo / "data/dataset.csv")
    assert list(data.columns[:4]) == ["filename", "is_syn", "jsd_score", "label"]
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv")
    assert len(data) == int((manifest["split"] == "train").sum())
    assert data["jsd_score"].between(0, 1).all()
    score = json.loads((repo / "metrics/score.json").read_text())["score"]
    assert "tier_auroc_hallucinated_vs_good" in score and score["synthetic_score"] == "ensemble"
    # the score stage's live log: a step per epoch of each fold model (2 folds x 1 epoch)
    fold = pd.read_csv(repo / "dvclive/score/plots/metrics/fold.tsv", sep="\t")
    assert fold.to_dict("list") == {"step": [0, 1], "fold": [1, 2]}
    live = json.loads((repo / "dvclive/score/metrics.json").read_text())
    assert live["fold"] == 2 and live["epoch"] == 1 and live["step"] == 1 and live["scorer_loss"] > 0


def test_a_score_param_change_is_a_change_of_the_score_stage_alone(repo):
    """`dvc status` after a score key changed: the score stage is the one whose params changed
    (train and the later stages rerun because its outputs change: the experiment below)."""
    params = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"score": {"seed": 1}})
        assert stages_with_changed_deps(repo) == {"score"}
    finally:
        (repo / "params.yaml").write_text(params)


def test_an_ingest_and_score_change_rerun_the_stages_after_them_and_the_gate_can_sort_by_a_feature_score(repo):
    """One experiment changes an ingest key (the image size) and the gate's score: ingest and every
    stage after it rerun, the prepared images have the new size, every quality score is in
    data/synthetic_scores.csv, and with synthetic_score: mahalanobis (docs/scoring.md's
    `dvc exp run -S score.synthetic_score=mahalanobis`) the synthetic rows of dataset.csv hold the
    reference JSD's values in the Mahalanobis order, and metrics/score.json names the gate's score."""
    sh(["dvc", "repro"], repo)  # (nothing to do after the tests above; the whole pipeline when run alone)
    before = pd.read_csv(repo / "data/synthetic_scores.csv")
    assert list(before.columns) == ["id", "filename", "label", "ensemble", "knn", "mahalanobis", "rank_mean"]
    assert before["knn"].between(0, 1).all() and (before["mahalanobis"] >= 0).all()
    changes = ["-S", "score.synthetic_score=mahalanobis", "-S", "ingest.image_size=24"]
    out = sh(["dvc", "exp", "run", "-n", "e2e-mahalanobis", *changes], repo)
    assert ran(out) == {"ingest", "score", "train", "evaluate", "predict"}, out
    assert np.load(repo / "data/prepared/images.npy", mmap_mode="r").shape[1:] == (24, 24, 3)
    scores = pd.read_csv(repo / "data/synthetic_scores.csv").set_index("id")
    data = pd.read_csv(repo / "data/dataset.csv")
    syn = data[data["is_syn"] == 1].set_index("id").loc[scores.index]
    np.testing.assert_allclose(np.sort(syn["jsd_score"]), np.sort(scores["ensemble"]), atol=2e-6)
    order = np.argsort(scores["mahalanobis"].to_numpy(), kind="stable")
    assert (np.diff(syn["jsd_score"].to_numpy()[order]) >= -2e-6).all()
    score = json.loads((repo / "metrics/score.json").read_text())["score"]
    assert score["synthetic_score"] == "mahalanobis"
    assert set(score["tier_auroc_by_score"]) == {"ensemble", "knn", "mahalanobis", "rank_mean"}
    # the workspace keeps the experiment (params and outputs agree), which the tests below start from


def test_metrics_show_reads_the_ingest_metrics(repo):
    out = sh(["dvc", "metrics", "show", "--json"], repo)
    assert (
        '"ingest"' in out
        and '"synthetic"' in out
        and '"oof_auc"' in out
        and '"best_epoch"' in out
        and '"at_tuned"' in out
    )


def stages_with_changed_deps(repo: Path) -> set[str]:
    """The stages `dvc status` reports with a changed dependency (code, data or params)."""
    status = json.loads(sh(["dvc", "status", "--json"], repo))
    return {
        name for name, changes in status.items() if any("changed deps" in c for c in changes if isinstance(c, dict))
    }


def test_a_code_change_reruns_exactly_the_stages_that_run_the_code(repo):
    # bytecode beside the sources, as Python writes it on a user's machine (here the stages import
    # entromix from the installed checkout, so nothing else writes it into this copy)
    sh([sys.executable, "-m", "compileall", "-q", "src"], repo)
    assert list((repo / "src/entromix/common").glob("__pycache__/*.pyc"))
    assert stages_with_changed_deps(repo) == set()
    edits = {
        "src/entromix/modeling/augment.py": {"score", "train", "evaluate", "predict"},
        "src/entromix/training/gate.py": {"train", "evaluate", "predict"},
        "src/entromix/common/rounding.py": {"demo", "ingest", "score", "train", "evaluate", "predict"},
        "src/entromix/evaluation/figures.py": {"evaluate", "predict"},  # predict runs evaluation.ood
    }
    for name, stages in edits.items():
        path = repo / name
        original = path.read_bytes()
        path.write_bytes(original + b"# an edit\n")
        try:
            assert stages_with_changed_deps(repo) == stages, name
        finally:
            path.write_bytes(original)
    assert stages_with_changed_deps(repo) == set()


def test_the_model_is_shared_through_a_remote_and_fetched_as_an_artifact(repo, tmp_path):
    """README "Sharing data and models": a DVC remote (a shared folder here), `dvc push`, a GTO
    version tag, and `dvc artifacts get` by name from a repository without the cache."""
    remote = repo.parent / "shared-remote"
    sh(["dvc", "remote", "add", "-d", "shared", str(remote)], repo)
    sh(["dvc", "push"], repo)
    assert any(remote.rglob("*")), "dvc push wrote nothing to the remote"
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "a trained model"], repo)
    sh(["git", "config", "user.name", "t"], repo)  # gto writes an annotated tag: it needs an identity
    sh(["git", "config", "user.email", "t@t"], repo)
    sh(["gto", "register", "blood-smear-classifier", "--version", "v0.1.0"], repo)
    assert "blood-smear-classifier" in sh(["gto", "show"], repo)
    out = tmp_path / "model.pt"
    sh(["dvc", "artifacts", "get", str(repo), "blood-smear-classifier", "--rev", "v0.1.0", "-o", str(out)], tmp_path)
    assert out.read_bytes() == (repo / "models/deploy/model.pt").read_bytes()
