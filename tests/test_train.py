"""The training loop on tiny generated data: it learns, it is deterministic, it logs the curriculum."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from entromix.common.errors import DataError, ParamsError
from entromix.training.config import TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loop import train_curriculum
from entromix.training.report import HISTORY_COLUMNS, history_frame, train_metrics
from entromix.training.selection import selectable
from entromix.training.table import TrainingTable, training_table

CPU = torch.device("cpu")


def make_config(**overrides) -> TrainConfig:
    values = dict(
        model="resnet18",
        pretrained_weights=None,
        image_size=32,
        ensemble=1,
        epochs=6,
        min_steps=0,
        batch_size=8,
        optimizer="adamw",
        lr=0.002,
        lr_warmup_epochs=0,
        weight_decay=0.0,
        label_smoothing=0.0,
        class_weights="real",
        loss="ce",
        focal_gamma=2.0,
        augment=True,
        rotate90=False,
        color_jitter=0.1,
        ema_half_life=0.0,
        select_metric="val_auc",
        seed=0,
        device="cpu",
        resume=True,
        early_stopping_patience=None,
        nproc_per_node=1,
        nnodes=1,
        rdzv_endpoint="",
    )
    values.update(overrides)
    return TrainConfig(**values)


def make_curriculum(**overrides) -> CurriculumConfig:
    values = dict(
        warmup_epochs=2,
        jsd_start=0.05,
        jsd_end=1.0,
        pacing="linear",
        gate="hard",
        gate_temperature=0.02,
        max_synthetic_fraction=0.5,
        synthetic_slots="replace",
        strategy="curriculum",
        rescore_every=0,
        pseudo_labels=False,
        pseudo_threshold=0.95,
        pseudo_every=1,
    )
    values.update(overrides)
    return CurriculumConfig(**values)


def blobs(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Class 0: a small dark disc; class 1: a large one; noisy background. (N, size, size, 3) uint8."""
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((len(labels), size, size, 3), dtype=np.uint8)
    for i, y in enumerate(labels):
        r = (5 if y == 0 else 11) + rng.integers(-1, 2)
        cy, cx = size / 2 + rng.integers(-3, 4, size=2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        img = rng.integers(190, 235, size=(size, size, 3))
        img[disc] = rng.integers(60, 110, size=3)
        out[i] = img
    return out


def make_data():
    rng = np.random.default_rng(0)
    real_labels = np.array([0] * 36 + [1] * 12)
    syn_labels = np.ones(16, dtype=np.int64)
    syn_jsd = np.linspace(0.0, 0.9, 16).astype(np.float32)
    table = TrainingTable(
        images=np.concatenate([blobs(real_labels, rng), blobs(syn_labels, rng)]),
        labels=np.concatenate([real_labels, syn_labels]),
        is_syn=np.array([False] * 48 + [True] * 16),
        jsd=np.concatenate([np.zeros(48, np.float32), syn_jsd]),
        ids=np.arange(64),
    )
    val_labels = np.array([0] * 10 + [1] * 6)
    return table, blobs(val_labels, rng), val_labels


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def baseline(data):
    """One uninterrupted run with the default test settings, shared by the tests that compare to it."""
    return run(data)


def run(data, config=None, curriculum=None):
    table, val_x, val_y = data
    return train_curriculum(
        config or make_config(), curriculum or make_curriculum(), table, val_x, val_y, CPU, log=lambda s: None
    )


@pytest.mark.slow  # trains a network for more than one epoch
def test_learns_a_tiny_problem_and_logs_the_curriculum(baseline):
    result = baseline
    h = result.history
    assert len(h) == 6 and [r["epoch"] for r in h] == list(range(6))
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert result.best_val["val_auc"] >= 0.9
    assert [r["phase"] for r in h] == ["warmup"] * 2 + ["ramp"] * 4
    assert h[0]["tau"] is None and h[0]["admitted_synthetic"] == 0 and h[0]["eligible_synthetic"] == 0
    assert h[2]["tau"] == pytest.approx(0.05) and h[-1]["tau"] == pytest.approx(1.0)
    eligible = [r["eligible_synthetic"] for r in h]
    assert eligible == sorted(eligible) and eligible[-1] == 16
    assert all(r["admitted_synthetic"] <= r["eligible_synthetic"] for r in h)
    assert all(r["train_images"] == 48 for r in h)  # 6 batches of 8 every epoch
    assert h[0]["lr"] == pytest.approx(0.002) and h[-1]["lr"] < h[0]["lr"]  # cosine annealing


@pytest.mark.slow  # trains a network for more than one epoch
def test_same_seed_gives_identical_results_on_cpu(data, baseline):
    a, b = baseline, run(data)
    cfg = make_config()
    assert train_metrics(a, cfg) == train_metrics(b, cfg)
    for key in a.last_state:
        assert torch.equal(a.last_state[key], b.last_state[key]), key


@pytest.mark.slow  # trains a network for more than one epoch
def test_best_checkpoint_is_the_best_epoch(data):
    result = run(data, make_config(select_metric="val_loss"))
    losses = [r["val_loss"] for r in result.history]
    assert result.best_epoch == int(np.argmin(losses))


@pytest.mark.slow  # trains a network for more than one epoch
def test_history_frame_and_metrics(data):
    result = run(data, make_config(epochs=3), make_curriculum(warmup_epochs=1))
    frame = history_frame(result.history)
    assert list(frame.columns) == HISTORY_COLUMNS
    assert frame.loc[0, "tau"] == 0.0 and frame.loc[0, "p_true_at_tau"] == 1.0  # warmup: gate closed
    metrics = train_metrics(result, make_config(epochs=3))["train"]
    assert metrics["epochs"] == 3 and metrics["final_tau"] == 1.0
    assert set(metrics["best"]) == {
        "val_loss",
        "val_accuracy",
        "val_sensitivity",
        "val_specificity",
        "val_balanced_accuracy",
        "val_auc",
    }


@pytest.mark.slow  # trains a network for more than one epoch
def test_soft_gate_weights_count_fractionally(data):
    result = run(data, make_config(epochs=3), make_curriculum(warmup_epochs=1, gate="soft", jsd_end=0.3))
    ramp = result.history[1]
    assert 0 < ramp["admitted_synthetic"] < ramp["eligible_synthetic"]
    assert ramp["admitted_synthetic"] != int(ramp["admitted_synthetic"])


def test_only_epochs_with_the_gate_open_may_be_selected():
    """A curriculum's warmup model is a real_only model: it never becomes best.pt. Runs that
    never gate (real_only) or gate from the start (naive) may select any epoch."""
    curriculum = make_curriculum(warmup_epochs=2)
    assert [selectable(t, 6, curriculum) for t in range(6)] == [False, False, True, True, True, True]
    for strategy in ("real_only", "naive"):
        assert all(selectable(t, 6, make_curriculum(warmup_epochs=2, strategy=strategy)) for t in range(6))


@pytest.mark.slow  # trains a network for more than one epoch
def test_a_curriculum_run_is_never_evaluated_on_a_warmup_epoch(data):
    """No warmup epoch is ever marked best (so none becomes best.pt), whatever its val loss."""
    table, val_x, val_y = data
    flags = []
    result = train_curriculum(
        make_config(epochs=4, select_metric="val_loss"),
        make_curriculum(warmup_epochs=3),
        table,
        val_x,
        val_y,
        CPU,
        log=lambda s: None,
        on_epoch=lambda history, model, is_best: flags.append(is_best),
    )
    assert flags == [False, False, False, True]
    assert result.best_epoch == 3 and result.best_val["phase"] == "ramp"


def test_warmup_must_be_shorter_than_training(data):
    with pytest.raises(ParamsError, match="warmup_epochs"):
        run(data, make_config(epochs=2), make_curriculum(warmup_epochs=2))


def test_training_table_joins_and_validates():
    images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
    manifest = pd.DataFrame({"id": [0, 1, 2, 3, 4], "label": [0, 1, 1, 0, 1]})
    dataset = pd.DataFrame(
        {
            "filename": list("abcd"),
            "is_syn": [1, 0, 0, 1],
            "jsd_score": [0.2, 0.1, 0.0, 0.5],
            "label": [1, 1, 0, 1],
            "id": [4, 2, 3, 1],
        }
    )
    table = training_table(images, manifest, dataset)
    assert table.ids.tolist() == [2, 3, 1, 4]  # real first, then synthetic, each by id
    assert table.is_syn.tolist() == [False, False, True, True]
    assert np.array_equal(table.images[0], images[2])
    assert table.jsd.tolist() == pytest.approx([0.1, 0.0, 0.5, 0.2])
    with pytest.raises(DataError, match="dataset.csv: jsd_score .*first: a"):
        training_table(images, manifest, dataset.assign(jsd_score=[1.5, 0.1, 0.0, 0.5]))
    with pytest.raises(DataError, match="not in data/prepared/manifest.csv"):
        training_table(images, manifest, dataset.assign(id=[9, 2, 3, 1]))
    # with the manifest's source/path columns, each row must name the manifest's file for its id
    full = manifest.assign(
        source=["/data/root", "../shared/leuk", "r", "r", "r"], path=["x.png", "a/y.png", "z.png", "b.png", "s.png"]
    )
    ok = dataset.assign(filename=["r/s.png", "r/z.png", "r/b.png", "../shared/leuk/a/y.png"])
    assert training_table(images, full, ok).ids.tolist() == [2, 3, 1, 4]  # roots outside the project are fine
    for bad in ("r/../../etc/passwd", "/etc/passwd", "r/z.png"):
        with pytest.raises(DataError, match="name a different file than data/prepared/manifest.csv"):
            training_table(images, full, ok.assign(filename=[bad, "r/z.png", "r/b.png", "../shared/leuk/a/y.png"]))
    with pytest.raises(DataError, match="labels disagree"):
        training_table(images, manifest, dataset.assign(label=[0, 1, 0, 1]))


KILL_AFTER_EPOCH = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
import test_train as t
from entromix.common.live import LiveLog
from entromix.training.loop import train_curriculum
from entromix.training.report import live_values
table, val_x, val_y = t.make_data()
live = []

def die(history, model, is_best):
    if history[-1]["epoch"] == {kill_epoch} and {kill_before_log}:  # the state is saved, the log is one step behind
        os.kill(os.getpid(), signal.SIGKILL)
    live[0].log(history[-1]["epoch"], live_values(history[-1]))  # as pipeline/train.py does
    if history[-1]["epoch"] == {kill_epoch}:
        os.kill(os.getpid(), signal.SIGKILL)

train_curriculum(t.make_config(), t.make_curriculum(), table, val_x, val_y, t.CPU, log=lambda s: None,
                 on_epoch=die, resume_path={path!r}, fingerprint="run-a",
                 on_start=lambda history: live.append(LiveLog({live_dir!r}, [live_values(r) for r in history])))
"""


@pytest.mark.slow  # trains a network for more than one epoch
@pytest.mark.parametrize("kill_epoch", [1, 3])
def test_sigkilled_training_resumes_to_the_same_result(data, baseline, tmp_path, kill_epoch):
    import subprocess
    import sys
    from pathlib import Path

    from entromix.common.live import SERIES_ONLY, LiveLog
    from entromix.training.report import LIVE_KEYS, live_values

    path = tmp_path / "checkpoints" / "resume.pt"
    live_dir = tmp_path / "dvclive" / "train"
    script = KILL_AFTER_EPOCH.format(
        tests=str(Path(__file__).parent),
        kill_epoch=kill_epoch,
        kill_before_log=kill_epoch == 3,
        path=str(path),
        live_dir=str(live_dir),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # killed by SIGKILL, not finished
    assert path.is_file() and not list(path.parent.glob(".*.tmp"))  # atomic: no half-written state left
    logged = pd.read_csv(live_dir / "plots" / "metrics" / "train_loss.tsv", sep="\t")["step"].tolist()
    assert logged == list(range(kill_epoch + (kill_epoch != 3)))  # the log of the killed run
    lines, live = [], []
    table, val_x, val_y = data
    resumed = train_curriculum(
        make_config(),
        make_curriculum(),
        table,
        val_x,
        val_y,
        CPU,
        log=lines.append,
        on_epoch=lambda history, model, is_best: live[0].log(history[-1]["epoch"], live_values(history[-1])),
        resume_path=path,
        fingerprint="run-a",
        on_start=lambda history: live.append(LiveLog(live_dir, [live_values(r) for r in history])),
    )
    live[0].close()
    assert any(f"resuming from {path} after epoch {kill_epoch + 1}/6" in line for line in lines)
    uninterrupted = baseline
    cfg = make_config()
    assert train_metrics(resumed, cfg) == train_metrics(uninterrupted, cfg)
    for key in uninterrupted.last_state:
        assert torch.equal(resumed.last_state[key], uninterrupted.last_state[key]), key
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in uninterrupted.history]
    # the live log continues its step numbering: every epoch once, the values of an uninterrupted run
    for key in ("train_loss", "val_auc", "lr", "train_recall_malignant"):
        series = pd.read_csv(live_dir / "plots" / "metrics" / f"{key}.tsv", sep="\t")
        assert series["step"].tolist() == list(range(6)), key
        expected = [live_values(r)[key] for r in uninterrupted.history]
        assert series[key].tolist() == pytest.approx(expected, rel=1e-5), key
    summary = json.loads((live_dir / "metrics.json").read_text())
    assert summary["step"] == 5 and set(LIVE_KEYS) - SERIES_ONLY <= set(summary)
    assert "images_per_s" not in summary  # a timing: a series, never a committed metric


@pytest.mark.slow  # trains a network for more than one epoch
def test_resume_state_of_other_settings_is_ignored(data, tmp_path):
    path = tmp_path / "resume.pt"
    table, val_x, val_y = data
    train_curriculum(
        make_config(epochs=2),
        make_curriculum(warmup_epochs=1),
        table,
        val_x,
        val_y,
        CPU,
        log=lambda s: None,
        resume_path=path,
        fingerprint="run-a",
    )
    lines = []
    result = train_curriculum(
        make_config(epochs=2),
        make_curriculum(warmup_epochs=1),
        table,
        val_x,
        val_y,
        CPU,
        log=lines.append,
        resume_path=path,
        fingerprint="run-b",
    )
    assert len(result.history) == 2 and not any("resuming" in line for line in lines)


def test_fingerprint_changes_with_settings_data_and_code(tmp_path, monkeypatch):
    from entromix.training import resume as resume_module
    from entromix.training.resume import run_fingerprint

    data_file = tmp_path / "dataset.csv"
    data_file.write_text("a,b\n1,2\n")
    base = run_fingerprint(make_curriculum(), make_config(), [data_file], (4, 8, 8, 3))
    assert base == run_fingerprint(
        make_curriculum(), make_config(resume=False, device="auto"), [data_file], (4, 8, 8, 3)
    )
    assert base != run_fingerprint(make_curriculum(jsd_start=0.1), make_config(), [data_file], (4, 8, 8, 3))
    assert base != run_fingerprint(make_curriculum(), make_config(seed=3), [data_file], (4, 8, 8, 3))
    data_file.write_text("a,b\n1,3\n")
    assert base != run_fingerprint(make_curriculum(), make_config(), [data_file], (4, 8, 8, 3))
    data_file.write_text("a,b\n1,2\n")
    fake_src = tmp_path / "pkg"
    fake_src.mkdir()
    (fake_src / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr(resume_module, "PACKAGE_ROOT", fake_src)
    one = run_fingerprint(make_curriculum(), make_config(), [data_file], (4, 8, 8, 3))
    (fake_src / "mod.py").write_text("x = 2\n")
    assert one != run_fingerprint(make_curriculum(), make_config(), [data_file], (4, 8, 8, 3))


@pytest.mark.slow  # trains a network for more than one epoch
def test_a_finished_resume_state_trains_afresh(data, tmp_path):
    path = tmp_path / "resume.pt"
    table, val_x, val_y = data
    config, curriculum = make_config(epochs=2), make_curriculum(warmup_epochs=1)
    first = train_curriculum(
        config, curriculum, table, val_x, val_y, CPU, log=lambda s: None, resume_path=path, fingerprint="a"
    )
    lines = []
    again = train_curriculum(
        config, curriculum, table, val_x, val_y, CPU, log=lines.append, resume_path=path, fingerprint="a"
    )
    assert any("holds a finished run; training afresh" in line for line in lines)
    assert sum(line.startswith("epoch ") for line in lines) == 2  # both epochs trained again
    assert train_metrics(again, config) == train_metrics(first, config)


SIGNAL_DURING_TRAINING = """
import signal, sys
# as in a terminal: a shell starts background jobs (and so some CI runners) with SIGINT ignored,
# and Python then never turns Ctrl-C into KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
import test_train as t
from entromix.common.stage import run_stage
from entromix.training.loop import train_curriculum
table, val_x, val_y = t.make_data()

def main():
    train_curriculum(t.make_config(), t.make_curriculum(), table, val_x, val_y, t.CPU,
                     log=lambda line: print(line, flush=True), resume_path={path!r}, fingerprint="run-a")

run_stage("train", main)
"""


@pytest.mark.slow  # trains a network for more than one epoch
@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_training_stopped_by_a_signal_mid_run_resumes_to_the_same_result(data, baseline, tmp_path, signum):
    """The signal arrives while epoch 4 runs or its state is being written, not at a chosen point."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "checkpoints" / "resume.pt"
    script = SIGNAL_DURING_TRAINING.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch   3/6"):
            proc.send_signal(getattr(signal, signum))
            break
    _, err = proc.communicate(timeout=120)
    expected = {"SIGINT": 130, "SIGTERM": 143, "SIGKILL": -signal.SIGKILL}[signum]
    assert proc.returncode == expected, err  # SIGINT / SIGTERM: run_stage reports it and exits 130 / 143
    if signum != "SIGKILL":
        assert {"SIGINT": "interrupted;", "SIGTERM": "terminated (SIGTERM);"}[signum] in err
        assert not list(path.parent.glob(".*.tmp"))  # caught: the temporary file of a write is removed
    assert path.is_file()  # a complete state: writes are atomic
    lines = []
    table, val_x, val_y = data
    resumed = train_curriculum(
        make_config(),
        make_curriculum(),
        table,
        val_x,
        val_y,
        CPU,
        log=lines.append,
        resume_path=path,
        fingerprint="run-a",
    )
    assert not list(path.parent.glob(".*.tmp"))  # one left by SIGKILL mid-write is removed by the next write
    resumed_after = [line for line in lines if "resuming from" in line]
    assert resumed_after and ("after epoch 2/6" in resumed_after[0] or "after epoch 3/6" in resumed_after[0])
    cfg = make_config()
    assert train_metrics(resumed, cfg) == train_metrics(baseline, cfg)
    for key in baseline.last_state:
        assert torch.equal(resumed.last_state[key], baseline.last_state[key]), key


# train.early_stopping_patience


def test_stops_early_counts_epochs_since_the_best():
    from entromix.training.selection import stops_early

    history = [{"epoch": e} for e in range(5)]
    assert not stops_early(history, {"epoch": 2}, None)  # off
    assert stops_early(history, {"epoch": 2}, 2) and not stops_early(history, {"epoch": 2}, 3)
    assert not stops_early(history, {"epoch": 4}, 1)


@pytest.mark.slow  # trains a network for more than one epoch
def test_early_stopping_cuts_the_planned_run_and_resumes_as_finished(data, tmp_path):
    table, val_x, val_y = data
    curriculum = make_curriculum()
    planned = make_config(epochs=10, select_metric="val_loss")
    full = train_curriculum(planned, curriculum, table, val_x, val_y, CPU, log=lambda s: None)
    lines = []
    config = make_config(epochs=10, select_metric="val_loss", early_stopping_patience=1)
    path = tmp_path / "resume.pt"
    early = train_curriculum(config, curriculum, table, val_x, val_y, CPU, log=lines.append, resume_path=path)
    n = len(early.history)
    assert n < 10, "this data stops early with patience 1 on val_loss"
    assert early.history[-1]["epoch"] - early.best_epoch == 1
    assert any(line.startswith(f"entromix train: early stopping after epoch {n}/10") for line in lines)
    # stopping only cuts: tau, the LR and every value of the trained epochs are the full run's
    for column in ("tau", "lr", "train_loss", "val_loss", "admitted_synthetic"):
        assert [r[column] for r in early.history] == [r[column] for r in full.history[:n]], column
    assert train_metrics(early, config)["train"]["epochs"] == n
    # a resume state that already stopped early is a finished run: trained afresh, to the same stop
    lines.clear()
    again = train_curriculum(config, curriculum, table, val_x, val_y, CPU, log=lines.append, resume_path=path)
    assert any("holds a finished run; training afresh" in line for line in lines)
    assert train_metrics(again, config) == train_metrics(early, config)


@pytest.mark.slow  # trains a network for more than one epoch
def test_an_ensemble_with_averaged_weights_resumes_exactly(data, tmp_path):
    """train.ensemble and train.ema_half_life: the kept weights are the members' moving average,
    and a run stopped after epoch 2 continues from its resume state to the uninterrupted result."""

    class Stop(Exception):
        pass

    def stop_after_second(history, model, is_best):
        if len(history) == 2:
            raise Stop

    config = make_config(epochs=4, ensemble=2, ema_half_life=1.0)
    table, val_x, val_y = data
    args = (config, make_curriculum(), table, val_x, val_y, CPU)
    whole = train_curriculum(*args, log=lambda s: None)
    path = tmp_path / "resume.pt"
    with pytest.raises(Stop):
        train_curriculum(*args, log=lambda s: None, resume_path=path, fingerprint="f", on_epoch=stop_after_second)
    lines = []
    resumed = train_curriculum(*args, log=lines.append, resume_path=path, fingerprint="f")
    assert any("after epoch 2/4" in line for line in lines)
    assert set(whole.last_state) == set(resumed.last_state) and any(
        k.startswith("members.1.") for k in whole.last_state
    )
    for key in whole.last_state:
        assert torch.equal(whole.last_state[key], resumed.last_state[key]), key
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in whole.history]
