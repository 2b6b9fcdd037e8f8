"""Self-training: unlabelled images in ingest, the adaptive per-class thresholds, the gate and the loop."""

import numpy as np
import pytest
import torch
from conftest import ingest_config, write_image
from test_train import CPU, blobs, make_config, make_curriculum

from entromix.common.errors import DataError, ParamsError
from entromix.data.prepare import plan_ingest
from entromix.scoring.jsd import jsd_from_p_true
from entromix.training.loop import train_curriculum
from entromix.training.pseudo_labels import NOT_ACCEPTED, class_thresholds, pseudo_label
from entromix.training.report import history_frame, train_metrics
from entromix.training.synthetic_pool import SyntheticPool
from entromix.training.table import TrainingTable


def test_class_thresholds_scale_with_each_class_mean_confidence():
    labels = np.array([0, 0, 1, 1, 1])
    confidence = np.array([0.9, 0.7, 0.6, 0.6, 0.9])  # mean 0.8 for class 0, 0.7 for class 1
    got = class_thresholds(labels, confidence, 3, 0.95)
    assert got == pytest.approx([0.95, 0.95 * 0.7 / 0.8, 0.95])  # class 2: nothing labelled, the full threshold


def test_pseudo_labels_accept_by_class_threshold_and_score_by_jsd():
    probs = np.array([[0.98, 0.02], [0.90, 0.10], [0.30, 0.70], [0.20, 0.80], [0.45, 0.55]])
    labelled = pseudo_label(probs, 0.95)
    assert labelled.labels.tolist() == [0, 0, 1, 1, 1]
    # class 0: mean 0.94 (the surest) keeps 0.95; class 1: mean 0.683 -> 0.95 * 0.683 / 0.94 = 0.690
    assert labelled.thresholds == pytest.approx([0.95, 0.95 * (0.7 + 0.8 + 0.55) / 3 / 0.94])
    assert labelled.accepted.tolist() == [True, False, True, True, False]
    expected = jsd_from_p_true(labelled.confidence)
    assert labelled.scores[labelled.accepted] == pytest.approx(expected[labelled.accepted], abs=1e-6)
    assert (labelled.scores[~labelled.accepted] == NOT_ACCEPTED).all()


def test_ingest_reads_an_unlabelled_folder_as_label_minus_one(flat_data):
    for i in range(3):
        write_image(flat_data / "unlabelled" / "batch1" / f"u{i}.png", 900 + i)
    manifest = plan_ingest(ingest_config(flat_data, unlabelled_dir="unlabelled")).manifest
    rows = manifest[manifest["split"] == "unlabelled"]
    assert len(rows) == 3 and (rows["label"] == -1).all() and (rows["class"] == "").all()
    assert rows["path"].str.startswith("batch1/").all()
    assert set(manifest.loc[manifest["split"] != "unlabelled", "label"]) == {0, 1}


def test_scarce_unlabelled_hides_the_left_out_images_instead_of_dropping_them(flat_data):
    everything = plan_ingest(ingest_config(flat_data)).manifest
    n_malignant = int(
        ((everything["split"] == "train") & (everything["label"] == 1) & (everything["is_syn"] == 0)).sum()
    )
    dropped = plan_ingest(ingest_config(flat_data, scarce_train_images=4)).manifest
    hidden = plan_ingest(ingest_config(flat_data, scarce_train_images=4, scarce_unlabelled=True)).manifest
    assert len(hidden) == len(everything) and len(dropped) == len(everything) - (n_malignant - 4)
    rows = hidden[hidden["split"] == "unlabelled"]
    assert len(rows) == n_malignant - 4 and (rows["label"] == -1).all() and set(rows["class"]) <= {"Early", "Pre"}
    labelled = hidden[hidden["split"] != "unlabelled"].drop(columns="id").reset_index(drop=True)
    assert labelled.equals(dropped.drop(columns="id").reset_index(drop=True))


def test_an_unlabelled_copy_of_a_labelled_image_is_a_leak(flat_data):
    copy = flat_data / "unlabelled" / "copy.png"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((flat_data / "real" / "Benign" / "img_000.png").read_bytes())
    with pytest.raises(DataError, match="identical image"):
        plan_ingest(ingest_config(flat_data, unlabelled_dir="unlabelled"))
    kept = plan_ingest(ingest_config(flat_data, unlabelled_dir="unlabelled", duplicates_across="drop")).manifest
    assert (kept["split"] == "unlabelled").sum() == 0  # the labelled copy is the one kept


def test_ingest_names_a_missing_unlabelled_folder(flat_data):
    with pytest.raises(DataError, match=r"ingest.unlabelled_dir"):
        plan_ingest(ingest_config(flat_data, unlabelled_dir="nowhere"))


def with_unlabelled_rows(n_unlabelled: int = 12):
    """Real 36 + 12, synthetic 8, then unlabelled blobs (half of each class) with hidden labels."""
    rng = np.random.default_rng(0)
    real = np.array([0] * 36 + [1] * 12)
    syn = np.ones(8, dtype=np.int64)
    hidden = np.array([0, 1] * (n_unlabelled // 2))
    n = len(real) + len(syn) + n_unlabelled
    table = TrainingTable(
        images=np.concatenate([blobs(real, rng), blobs(syn, rng), blobs(hidden, rng)]),
        labels=np.concatenate([real, syn, np.zeros(n_unlabelled, dtype=np.int64)]),
        is_syn=np.array([False] * len(real) + [True] * (len(syn) + n_unlabelled)),
        jsd=np.concatenate(
            [np.zeros(len(real), np.float32), np.full(len(syn), 0.01, np.float32), np.zeros(n_unlabelled, np.float32)]
        ),
        ids=np.arange(n),
        unlabelled=np.array([False] * (len(real) + len(syn)) + [True] * n_unlabelled),
        hidden=np.concatenate([np.full(len(real) + len(syn), -1), hidden]),
    )
    val = np.array([0] * 10 + [1] * 6)
    return table, blobs(val, rng), val


def test_unlabelled_rows_stay_shut_until_labelled_and_real_only_shuts_the_synthetic_ones():
    table, _, _ = with_unlabelled_rows()
    pool = SyntheticPool(table, make_curriculum(pseudo_labels=True), 0, 8, 0, CPU)
    assert pool.eligible_counts(1.0) == (8, 0)
    only = SyntheticPool(table, make_curriculum(strategy="real_only", pseudo_labels=True), 0, 8, 0, CPU)
    assert only.eligible_counts(1.0) == (0, 0)
    probs = np.tile([[0.02, 0.98]], (12, 1))
    only.apply_pseudo_labels(pseudo_label(probs, 0.95))
    assert only.eligible_counts(0.05) == (0, 12)
    assert (table.labels[only.unlabelled] == 1).all()


def record_self_training(monkeypatch) -> list[dict]:
    """Per training epoch: the pseudo-labelling applied before it (None before the first) and the
    (rows, targets) of each of its loss calls, recorded from the loop's own calls."""
    import entromix.training.epoch as epoch_module
    from entromix.training.loss import EntroMixLoss

    epochs: list[dict] = []
    last: list = [None]
    train_epoch, forward, apply = epoch_module.train_epoch, EntroMixLoss.forward, SyntheticPool.apply_pseudo_labels

    def apply_spy(self, labelled):
        last[0] = labelled
        return apply(self, labelled)

    def train_epoch_spy(model, batches, images, loss_fn, *args, **kwargs):
        epochs.append({"labelled": last[0], "rows": [], "targets": []})

        def recording(logits, idx):
            epochs[-1]["rows"].append(idx.cpu())
            return loss_fn(logits, idx)

        return train_epoch(model, batches, images, recording, *args, **kwargs)

    def forward_spy(self, logits, targets, *args, **kwargs):
        epochs[-1]["targets"].append(targets.cpu())
        return forward(self, logits, targets, *args, **kwargs)

    monkeypatch.setattr(SyntheticPool, "apply_pseudo_labels", apply_spy)
    monkeypatch.setattr(epoch_module, "train_epoch", train_epoch_spy)
    monkeypatch.setattr(EntroMixLoss, "forward", forward_spy)
    return epochs


@pytest.mark.slow  # trains a network for more than one epoch
def test_self_training_labels_the_pool_after_warmup_and_reports_it(monkeypatch):
    """After warmup the model labels the pool; the accepted images enter the batches and the loss
    trains them on their pseudo-labels (not the table's placeholder 0), most of which are right."""
    table, val_x, val_y = with_unlabelled_rows()
    first_unlabelled = int(np.flatnonzero(table.unlabelled)[0])
    epochs = record_self_training(monkeypatch)
    curriculum = make_curriculum(strategy="real_only", pseudo_labels=True, pseudo_threshold=0.6, jsd_end=0.311)
    result = train_curriculum(make_config(epochs=4), curriculum, table, val_x, val_y, CPU, log=lambda s: None)
    h = result.history
    assert [r["pseudo_accepted"] for r in h[:2]] == [0, 0]  # warmup: nothing labelled yet
    assert h[-1]["pseudo_accepted"] > 0 and h[-1]["admitted_pseudo"] > 0
    assert all(r["eligible_synthetic"] == 0 for r in h)  # real_only: the synthetic pool stays out
    assert len(epochs) == 4 and [e["labelled"] is None for e in epochs] == [True, True, False, False]
    for epoch, seen in enumerate(epochs):
        rows, targets = torch.cat(seen["rows"]).numpy(), torch.cat(seen["targets"]).numpy()
        pseudo = rows >= first_unlabelled
        assert pseudo.any() == (epoch >= 2), f"epoch {epoch + 1}: pseudo-labelled rows in the batches {rows[pseudo]}"
        if seen["labelled"] is not None:  # each one trained on its pseudo-label, and only if accepted
            at = rows[pseudo] - first_unlabelled
            assert seen["labelled"].accepted[at].all(), f"epoch {epoch + 1}: an image not accepted was trained on"
            assert (targets[pseudo] == seen["labelled"].labels[at]).all(), (
                f"epoch {epoch + 1}: targets {targets[pseudo]}, pseudo-labels {seen['labelled'].labels[at]}"
            )
    summary = train_metrics(result, make_config(epochs=4), curriculum)["train"]["pseudo_labels"]
    assert summary["pool"] == 12 and summary["accepted_final_with_known_label"] == summary["accepted_final"]
    placed = np.unique(np.concatenate([torch.cat(e["rows"]).numpy() for e in epochs]))
    assert summary["used"] == (placed >= first_unlabelled).sum()
    assert summary["used_correct"] > summary["used"] / 2, summary  # the blobs are learnable: most labels right
    assert {"pseudo_accepted", "eligible_pseudo", "admitted_pseudo"} <= set(history_frame(h).columns)


def test_self_training_needs_unlabelled_images_and_a_curriculum_strategy():
    table, val_x, val_y = with_unlabelled_rows()
    plain = TrainingTable(table.images[:56], table.labels[:56], table.is_syn[:56], table.jsd[:56], table.ids[:56])
    with pytest.raises(ParamsError, match="no unlabelled images"):
        train_curriculum(make_config(epochs=3), make_curriculum(pseudo_labels=True), plain, val_x, val_y, CPU)
    with pytest.raises(ParamsError, match="pseudo_labels is true but curriculum.strategy is 'naive'"):
        make_curriculum(strategy="naive", pseudo_labels=True)


@pytest.mark.slow  # trains a network for more than one epoch
def test_a_resumed_self_training_run_ends_as_an_uninterrupted_one(tmp_path):
    curriculum = make_curriculum(pseudo_labels=True, pseudo_threshold=0.6, jsd_end=0.311)
    table, val_x, val_y = with_unlabelled_rows()
    full = train_curriculum(make_config(epochs=4), curriculum, table, val_x, val_y, CPU, log=lambda s: None)
    path = tmp_path / "resume.pt"

    class Stop(Exception):
        pass

    def stop_after_third(history, model, is_best):
        if len(history) == 3:
            raise Stop

    table, val_x, val_y = with_unlabelled_rows()
    with pytest.raises(Stop):
        train_curriculum(
            make_config(epochs=4),
            curriculum,
            table,
            val_x,
            val_y,
            CPU,
            log=lambda s: None,
            on_epoch=stop_after_third,
            resume_path=path,
            fingerprint="x",
        )
    table, val_x, val_y = with_unlabelled_rows()
    resumed = train_curriculum(
        make_config(epochs=4),
        curriculum,
        table,
        val_x,
        val_y,
        CPU,
        log=lambda s: None,
        resume_path=path,
        fingerprint="x",
    )
    assert [r["train_loss"] for r in resumed.history] == pytest.approx([r["train_loss"] for r in full.history])
    assert resumed.pseudo == full.pseudo
    for key, value in full.last_state.items():
        assert torch.equal(value, resumed.last_state[key]), key
