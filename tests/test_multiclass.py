"""More than two labels: the label space and its binary view, K-class metrics, JSD over K classes,
the scarce draw over several labels, the sampler's class ratio and the train loop with a K-class head."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ingest_config, make_folder
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score
from test_train import CPU, make_config, make_curriculum

from entromix.common.errors import DataError, ParamsError
from entromix.common.labels import LabelSpace, label_space_of_checkpoint
from entromix.data.prepare import plan_ingest
from entromix.evaluation.outputs import prediction_table as predictions_table
from entromix.evaluation.report import side_classes
from entromix.modeling.fit import predict_logits
from entromix.modeling.metrics import multiclass_metrics
from entromix.modeling.models import build_model
from entromix.scoring.jsd import jsd_to_onehot
from entromix.training.checkpoints import TrainedModel
from entromix.training.loop import train_curriculum
from entromix.training.report import checkpoint_payload
from entromix.training.sampler import CurriculumBatchSampler
from entromix.training.table import TrainingTable

FOUR = LabelSpace.from_names(["benign", "early", "pre", "pro"], ["early", "pre", "pro"])


def test_label_space_binary_view_sums_the_positive_labels():
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])
    assert FOUR.positive == (1, 2, 3) and FOUR.negative == (0,)
    assert FOUR.positive_probability(probs) == pytest.approx([0.3, 0.9])
    assert FOUR.binary_targets(np.array([0, 1, 2, 3])).tolist() == [0, 1, 1, 1]
    assert FOUR.binary_names == ["benign", "early+pre+pro"]
    binary = LabelSpace.from_names(["benign", "malignant"], ["malignant"])
    assert binary.is_plain_binary and binary.binary_names == ["benign", "malignant"]
    assert LabelSpace.from_names(["a", "b", "c"], None).positive == (1, 2)  # null: every label but the first
    two = np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert np.array_equal(binary.positive_probability(two), two[:, 1])  # the old binary value, to the bit


def test_label_space_refuses_a_bad_binary_view_naming_the_key():
    with pytest.raises(ParamsError, match=r"ingest.positive_labels names 'malignant'"):
        LabelSpace.from_names(["benign", "early"], ["malignant"])
    with pytest.raises(ParamsError, match="leave at least one out"):
        LabelSpace.from_names(["benign", "early"], ["benign", "early"])
    with pytest.raises(ParamsError, match="at least two distinct"):
        LabelSpace.from_names(["benign", "benign"], None)


def test_old_checkpoints_without_positive_labels_read_as_label_one():
    assert label_space_of_checkpoint({"labels": ["benign", "malignant"]}).positive == (1,)
    assert label_space_of_checkpoint({"labels": ["b", "e", "p"], "positive_labels": ["p"]}).positive == (2,)


def test_jsd_over_four_classes_is_scipys_base_2_divergence_and_stays_in_0_1():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=50)
    labels = rng.integers(0, 4, size=50)
    jsd, p_true = jsd_to_onehot(probs, labels)
    expected = [jensenshannon(p, np.eye(4)[y], base=2) ** 2 for p, y in zip(probs, labels)]
    assert jsd == pytest.approx(expected, abs=1e-9)
    assert p_true == pytest.approx(probs[np.arange(50), labels])
    worst, _ = jsd_to_onehot(np.array([[0.0, 1.0, 0.0, 0.0]]), np.array([0]))
    assert worst == pytest.approx([1.0]) and (jsd >= 0).all() and (jsd <= 1).all()


def test_multiclass_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2, 3], [8, 5, 6, 4])
    probs = rng.dirichlet(np.ones(4), size=len(y))
    probs[np.arange(len(y)), y] += rng.uniform(0, 1, len(y))  # better than chance
    probs /= probs.sum(1, keepdims=True)
    m = multiclass_metrics(y, probs, ["benign", "early", "pre", "pro"])
    pred = probs.argmax(1)
    assert [v["recall"] for v in m["per_class"].values()] == pytest.approx(recall_score(y, pred, average=None))
    assert [v["precision"] for v in m["per_class"].values()] == pytest.approx(precision_score(y, pred, average=None))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["roc_auc_ovr_macro"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))
    assert np.array(m["confusion"]).sum(1).tolist() == [8, 5, 6, 4]
    assert m["accuracy"] == pytest.approx((pred == y).mean())


def test_multiclass_metrics_worked_example():
    # 3 labels, 4 images: true 0,1,2,2; predicted 0,2,2,1
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.2, 0.7], [0.1, 0.6, 0.3]])
    m = multiclass_metrics(np.array([0, 1, 2, 2]), probs, ["a", "b", "c"])
    assert m["confusion"] == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]
    assert m["per_class"]["a"]["recall"] == 1.0 and m["per_class"]["b"]["recall"] == 0.0
    assert m["per_class"]["c"]["recall"] == 0.5 and m["per_class"]["c"]["precision"] == 0.5
    assert m["per_class"]["b"]["f1"] == 0.0 and m["macro_f1"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert m["macro_recall"] == pytest.approx(0.5)


def test_scarce_draw_over_subtypes_keeps_the_same_files_as_the_merged_label(flat_data):
    binary = plan_ingest(ingest_config(flat_data, scarce_train_images=3, scarce_seed=5)).manifest
    three = ingest_config(
        flat_data,
        labels=["benign", "early", "pre"],
        positive_labels=["early", "pre"],
        class_map={"Benign": "benign", "Early": "early", "Pre": "pre"},
        scarce_label=["early", "pre"],
        scarce_train_images=3,
        scarce_seed=5,
    )
    subtypes = plan_ingest(three).manifest
    assert subtypes["label"].max() == 2
    kept = lambda m: sorted(m.loc[(m["split"] == "train") & (m["label"] > 0) & (m["is_syn"] == 0), "path"])  # noqa: E731
    assert kept(binary) == kept(subtypes) and len(kept(binary)) == 3


def test_ingest_refuses_a_subtype_missing_from_a_split(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "real", {"train/Benign": 4, "train/Early": 3, "val/Benign": 2, "val/Early": 2}, seed=3)
    make_folder(root / "real", {"test/Benign": 2, "test/Early": 2, "train/Pre": 2, "val/Pre": 1}, seed=4)
    config = ingest_config(
        root,
        synthetic_dir=None,
        labels=["benign", "early", "pre"],
        positive_labels=["early", "pre"],
        class_map={"Benign": "benign", "Early": "early", "Pre": "pre"},
        scarce_label="pre",
    )
    with pytest.raises(DataError, match="test: no real 'pre' image"):
        plan_ingest(config)


def test_sampler_keeps_the_ratio_of_four_classes_in_every_epoch():
    labels = np.repeat([0, 1, 2, 3], [40, 10, 8, 6])
    sampler = CurriculumBatchSampler(labels, np.zeros(0, np.float32), 16, 0.5, seed=0)
    for epoch in range(3):
        plan = sampler.epoch(epoch, None)
        rows = np.concatenate(plan.batches)
        assert len(set(rows.tolist())) == len(rows) == 64  # one pass, no image twice
        for batch in plan.batches:
            counts = np.bincount(labels[batch], minlength=4)
            expected = 16 * np.array([40, 10, 8, 6]) / 64
            assert (np.abs(counts - expected) < 1 + 1e-9).all()


def discs(labels: np.ndarray, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A dark disc whose radius says the label (4, 7, 10 or 13 px) on a noisy background."""
    yy, xx = np.mgrid[:size, :size]
    out = rng.integers(190, 235, size=(len(labels), size, size, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        r = 4 + 3 * int(y)
        cy, cx = size / 2 + rng.integers(-2, 3, size=2)
        out[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(60, 110, size=3)
    return out


def four_class_data():
    rng = np.random.default_rng(0)
    real = np.repeat([0, 1, 2, 3], [24, 8, 8, 8])
    syn = np.repeat([1, 2, 3], 4)
    table = TrainingTable(
        images=np.concatenate([discs(real, rng), discs(syn, rng)]),
        labels=np.concatenate([real, syn]),
        is_syn=np.array([False] * len(real) + [True] * len(syn)),
        jsd=np.concatenate([np.zeros(len(real), np.float32), np.linspace(0, 0.5, len(syn)).astype(np.float32)]),
        ids=np.arange(len(real) + len(syn)),
    )
    val = np.repeat([0, 1, 2, 3], [8, 4, 4, 4])
    return table, discs(val, rng), val


@pytest.mark.slow  # trains a network for more than one epoch
def test_train_loop_trains_a_four_class_head_and_reports_the_binary_view():
    table, val_x, val_y = four_class_data()
    config = make_config(epochs=2)
    result = train_curriculum(
        config, make_curriculum(warmup_epochs=1), table, val_x, val_y, CPU, log=lambda s: None, label_space=FOUR
    )
    assert result.best_state["fc.weight"].shape[0] == 4
    row = result.history[-1]
    assert row["train_recall_malignant"] is not None
    # the last epoch's validation, recomputed here from its weights: the loss over the 4 labels and
    # the binary view (malignant = early + pre + pro, p = their summed softmax)
    model = build_model("resnet18", 4, 32, None, "train")
    model.load_state_dict(result.last_state)
    logits = torch.from_numpy(predict_logits(model.eval(), val_x, CPU, 32))
    p_malignant = torch.softmax(logits, 1)[:, 1:].sum(1).numpy()
    assert row["val_loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(val_y))))
    assert row["val_auc"] == pytest.approx(roc_auc_score(val_y > 0, p_malignant))
    assert row["val_sensitivity"] == pytest.approx(recall_score(val_y > 0, p_malignant >= 0.5))
    assert row["val_auc"] > 0.75  # the discs are learnable in 2 epochs
    ingest = {"image_size": 32, "positive_labels": ["early", "pre", "pro"]}
    payload = checkpoint_payload(result.best_state, result.best_val, config, list(FOUR.names), ingest, {})
    assert payload["num_classes"] == 4 and payload["positive_labels"] == ["early", "pre", "pro"]


def test_train_loop_refuses_a_label_without_real_training_images():
    table, val_x, val_y = four_class_data()
    labels = table.labels.copy()
    labels[(labels == 3) & ~table.is_syn] = 2  # no real 'pro' image left
    table = TrainingTable(table.images, labels, table.is_syn, table.jsd, table.ids)
    with pytest.raises(DataError, match="none of pro"):
        train_curriculum(make_config(epochs=3), make_curriculum(), table, val_x, val_y, CPU, label_space=FOUR)


def test_evaluate_tables_carry_the_binary_view_and_every_label():
    test = pd.DataFrame(
        {"source": "real", "path": ["a.png", "b.png", "c.png"], "class": ["Benign", "Pre", "Pro"], "label": [0, 2, 3]}
    )
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.2], [0.4, 0.1, 0.1, 0.4]])
    frame = predictions_table(test, FOUR.positive_probability(probs), FOUR, probs)
    assert frame["label"].tolist() == [0, 1, 1]  # the binary view's target
    assert frame["probability"].tolist() == pytest.approx([0.3, 0.9, 0.6])
    assert frame["true_label"].tolist() == ["benign", "pre", "pro"]
    assert frame["predicted_label"].tolist() == ["benign", "pre", "benign"]  # argmax, ties to the first
    assert {"p_benign", "p_early", "p_pre", "p_pro"} <= set(frame.columns)
    # Grad-CAM explains the most probable label of the side the image is called
    assert side_classes(FOUR, probs).tolist() == [[0, 1], [0, 2], [0, 3]]


def test_trained_model_p_malignant_is_the_summed_positive_softmax():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    ckpt = {"labels": list(FOUR.names), "positive_labels": ["early", "pre", "pro"], "image_size": 8}
    trained = TrainedModel(model=model.eval(), checkpoint=ckpt, device=CPU, channels_last=False)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 8, 8, 3), dtype=np.uint8)
    probs = trained.probabilities(images)
    assert probs.shape == (5, 4)
    assert trained.malignant_probability(images) == pytest.approx(1.0 - probs[:, 0], abs=1e-6)


@pytest.mark.slow  # trains a network for more than one epoch
def test_class_weights_may_be_given_per_label_and_must_match_the_labels():
    table, val_x, val_y = four_class_data()
    with pytest.raises(ParamsError, match=r"lists 2 weights but there are 4 labels \(benign, early, pre, pro\)"):
        train_curriculum(
            make_config(epochs=2, class_weights=[1.0, 2.0]),
            make_curriculum(warmup_epochs=1),
            table,
            val_x,
            val_y,
            CPU,
            label_space=FOUR,
        )
    lines = []
    config = make_config(epochs=2, class_weights=[1.0, 2.0, 3.0, 4.0])
    train_curriculum(config, make_curriculum(warmup_epochs=1), table, val_x, val_y, CPU, lines.append, label_space=FOUR)
    assert any(
        "class weights [1.0, 2.0, 3.0, 4.0] (" in line and "given in train.class_weights" in line for line in lines
    )
    with pytest.raises(ParamsError, match="one weight > 0 per label"):
        make_config(class_weights=[1.0, 0.0])
