"""The score stage: out-of-fold guarantee, dataset.csv layout, determinism, calibration, folds."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from entromix.common.device import seed_everything
from entromix.common.errors import DataError, ParamsError
from entromix.modeling.fit import fit_classifier, predict_logits
from entromix.modeling.models import build_model
from entromix.scoring.calibration import fit_temperature, nll
from entromix.scoring.config import ScoreConfig
from entromix.scoring.folds import make_folds
from entromix.scoring.jsd import jsd_to_onehot
from entromix.scoring.metrics import score_metrics, tier_auroc
from entromix.scoring.out_of_fold import DATASET_COLUMNS, score_training_images

CPU = torch.device("cpu")


def config(**changes) -> ScoreConfig:
    base = ScoreConfig(
        model="resnet18",
        pretrained_weights=None,
        image_size=32,
        epochs=1,
        min_steps=0,
        batch_size=8,
        optimizer="adamw",
        lr=1e-3,
        lr_warmup_epochs=0,
        weight_decay=0.0,
        label_smoothing=0.0,
        augment=True,
        rotate90=False,
        color_jitter=0.2,
        ema_half_life=0.0,
        folds=2,
        synthetic_score="ensemble",
        knn_k=10,
        rank_mean_of=["ensemble", "mahalanobis"],
        tta=False,
        temperature_scaling=True,
        seed=0,
        device="cpu",
        nproc_per_node=1,
    )
    return replace(base, **changes)


def toy_data(n_real=24, n_syn=6, seed=0, size=32):
    """Learnable toy images: malignant images are brighter; every third real image is malignant."""
    rng = np.random.default_rng(seed)
    n = n_real + n_syn + 6  # + a few val images that must never be used
    labels = np.array([1 if i % 3 == 0 else 0 for i in range(n_real)] + [1] * n_syn + [0, 1] * 3)
    images = rng.integers(0, 120, size=(n, size, size, 3)).astype(np.uint8)
    images[labels == 1] += 100
    manifest = pd.DataFrame(
        {
            "id": np.arange(n),
            "path": [f"c/{i}.png" for i in range(n)],
            "label": labels,
            "split": ["train"] * (n_real + n_syn) + ["val"] * 6,
            "is_syn": [0] * n_real + [1] * n_syn + [0] * 6,
            "source": ["data/real"] * n_real + ["data/syn"] * n_syn + ["data/real"] * 6,
            "group": "",
        }
    )
    return images, manifest


@pytest.mark.slow  # trains a network for more than one epoch
def test_dataset_columns_ranges_and_rows():
    images, manifest = toy_data()
    lines, epochs = [], []
    result = score_training_images(
        config(epochs=2),
        images,
        manifest,
        CPU,
        log=lines.append,
        on_epoch=lambda k, e, stats: epochs.append((k, e, stats)),
    )
    # progress per fold and epoch: one observer call and one line each
    assert [(k, e) for k, e, _ in epochs] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(stats.images == 12 and stats.positives == 4 and stats.lr > 0 for _, _, stats in epochs)
    progress = [line for line in lines if " epoch " in line]
    assert progress[0].startswith("entromix score: fold 1/2 epoch   1/2 | lr ") and "train recall" in progress[0]
    assert progress[-1].startswith("entromix score: fold 2/2 epoch   2/2 | lr ") and len(progress) == 4
    data = result.dataset
    assert list(data.columns[:4]) == ["filename", "is_syn", "jsd_score", "label"]
    assert list(data.columns) == DATASET_COLUMNS
    assert len(data) == 30 and set(data["split"]) == {"train"}  # val images never scored
    assert data["jsd_score"].between(0, 1).all() and data["p_true"].between(0, 1).all()
    assert set(data.loc[data["is_syn"] == 0, "fold"]) == {0, 1} and (data.loc[data["is_syn"] == 1, "fold"] == -1).all()
    assert data["filename"].iloc[0] == "data/real/c/0.png"
    np.testing.assert_allclose(
        data["jsd_score"],
        jsd_to_onehot(np.stack([1 - data["p_true"], data["p_true"]], 1), np.ones(len(data), int))[0],
        atol=1e-9,
    )


@pytest.mark.slow  # trains a network for more than one epoch
def test_same_seed_same_scores_other_seed_other_scores():
    images, manifest = toy_data()
    a = score_training_images(config(seed=3), images, manifest, CPU, log=lambda s: None).dataset
    b = score_training_images(config(seed=3), images, manifest, CPU, log=lambda s: None).dataset
    c = score_training_images(config(seed=4), images, manifest, CPU, log=lambda s: None).dataset
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["jsd_score"], c["jsd_score"])


@pytest.mark.slow  # trains a network for more than one epoch
def test_out_of_fold_scores_do_not_come_from_a_memorising_model():
    """Random labels: a model scoring its own training images would be ~certain (JSD ~ 0).

    The same training, scored in-sample, memorises the noise (shown first, so this test would
    fail if the stage scored the images its models trained on); out of fold it cannot do better
    than chance.
    """
    rng = np.random.default_rng(0)
    n = 32
    images = rng.integers(0, 256, size=(n, 16, 16, 3)).astype(np.uint8)
    labels = rng.permutation(np.array([0, 1] * (n // 2)))
    cfg = config(image_size=16, epochs=15, augment=False, temperature_scaling=False, folds=4, lr=3e-3, batch_size=16)

    seed_everything(0)
    model = build_model("resnet18", 2, 16)
    fit_classifier(model, torch.from_numpy(images), torch.from_numpy(labels), cfg.fit_settings(), CPU, seed=0)
    in_sample, _ = jsd_to_onehot(
        torch.softmax(torch.from_numpy(predict_logits(model, images, CPU, 16)), 1).numpy(), labels
    )
    assert in_sample.mean() < 0.05  # memorised

    manifest = pd.DataFrame(
        {
            "id": np.arange(n),
            "path": [f"{i}.png" for i in range(n)],
            "label": labels,
            "split": "train",
            "is_syn": 0,
            "source": "r",
            "group": "",
        }
    )
    oof = score_training_images(cfg, images, manifest, CPU, log=lambda s: None).dataset
    assert oof["jsd_score"].mean() > 0.25  # chance level, far from the memorised ~0
    assert 0.2 < (oof["predicted"] == oof["label"]).mean() < 0.8


def test_folds_are_stratified_keep_groups_and_need_enough_images():
    frame = pd.DataFrame({"label": [0] * 12 + [1] * 6, "group": [f"g{i // 2}" for i in range(18)]})
    fold = make_folds(frame, 3, seed=0)
    assert set(fold) == {0, 1, 2}
    assert (frame.assign(fold=fold).groupby("group")["fold"].nunique() == 1).all()
    assert all((frame["label"][fold == k] == 1).any() for k in range(3))
    with pytest.raises(DataError, match="Lower score.folds"):
        make_folds(frame.iloc[:14], 5, seed=0)


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 2))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = (rng.random(4000) < probs[:, 1]).astype(int)
    overconfident = true_logits * 3.0  # a model 3x too sure of itself
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, labels, t) < nll(overconfident, labels, 1.0)


@pytest.mark.slow  # trains a network for more than one epoch
def test_tier_auroc_and_metrics():
    assert (
        tier_auroc(
            np.array([0.1, 0.2, 0.9, 0.8]), np.array(["good", "good", "hallucinated", "hallucinated"]), "hallucinated"
        )
        == 1.0
    )
    assert tier_auroc(np.array([0.1]), np.array(["good"]), "degraded") is None
    images, manifest = toy_data()
    result = score_training_images(config(), images, manifest, CPU, log=lambda s: None)
    syn_ids = manifest.loc[manifest["is_syn"] == 1, "id"].to_numpy()
    tiers = pd.DataFrame({"id": syn_ids, "tier": ["good", "good", "good", "hallucinated", "hallucinated", "degraded"]})
    m = score_metrics(result, tiers)["score"]
    assert {
        "oof_accuracy",
        "oof_auc",
        "real_jsd_mean",
        "synthetic_jsd_mean",
        "synthetic_p_true_below_half",
        "tier_auroc_hallucinated_vs_good",
        "tier_auroc_degraded_vs_good",
    } <= set(m)
    assert 0 <= m["tier_auroc_hallucinated_vs_good"] <= 1 and m["tier_hallucinated_n"] == 2


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model": "resnet19"}, "score.model"),
        ({"folds": 1}, "score.folds"),
        ({"batch_size": 1}, "score.batch_size"),
        ({"synthetic_score": "kmeans"}, "score.synthetic_score is 'kmeans'; choose one of ensemble, aum, knn"),
        ({"knn_k": 0}, "score.knn_k"),
        ({"rank_mean_of": ["ensemble", "aum"]}, r"score.rank_mean_of is \['ensemble', 'aum'\]"),
        ({"rank_mean_of": []}, "score.rank_mean_of"),
        ({"rank_mean_of": ["knn", "knn"]}, "score.rank_mean_of"),
    ],
)
def test_bad_score_params(changes, message):
    with pytest.raises(ParamsError, match=message):
        config(**changes)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_temperature_moves_jsd_values_but_never_the_tier_ranking(temperature):
    """Why the scorer ablation has no temperature arm: T changes which images pass a fixed tau,
    but not the order of the scores, so the tier AUROCs are identical with and without it."""
    from entromix.scoring.calibration import calibrated_probs
    from entromix.scoring.jsd import jsd_to_onehot

    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(200, 2))
    labels = np.ones(200, dtype=int)  # the synthetic pool: every image labelled malignant
    tiers = np.where(rng.random(200) < 0.5, "good", "hallucinated")
    plain, _ = jsd_to_onehot(calibrated_probs(logits, 1.0), labels)
    scaled, _ = jsd_to_onehot(calibrated_probs(logits, temperature), labels)
    assert tier_auroc(scaled, tiers, "hallucinated") == tier_auroc(plain, tiers, "hallucinated")
    if temperature != 1.0:
        assert not np.allclose(scaled, plain)


@pytest.mark.slow  # trains a network for more than one epoch
def test_a_scorer_that_learned_nothing_is_a_loud_warning():
    """Identical images with balanced labels: nothing to learn, so within a fold every logit is the
    same and half the labels disagree with it; the fitted temperature runs to its bound (every
    p_true near 0.5), which the stage must say, not hide."""
    images, manifest = toy_data()
    manifest["label"] = np.where(manifest["is_syn"] == 1, 1, np.arange(len(manifest)) % 2)
    images = np.full_like(images, 128)
    lines: list[str] = []
    result = score_training_images(config(augment=False), images, manifest, CPU, log=lines.append)
    assert result.temperature >= 19.8
    warning = [line for line in lines if "WARNING" in line]
    assert len(warning) == 1 and "upper bound" in warning[0] and "score.min_steps" in warning[0]
    lines.clear()
    # the same stage on learnable images (brightness tells the classes apart) learns, and says nothing
    learned = score_training_images(config(epochs=4, min_steps=60, augment=False), *toy_data(), CPU, log=lines.append)
    assert learned.temperature < 10 and not [line for line in lines if "WARNING" in line]


def record_the_score_stage(monkeypatch) -> dict[str, list]:
    """Spies on what the score stage does: the fold models it builds, the ``rotate90`` it passes to
    the augmentation, and every (logits, targets, class weights, value) of its cross-entropy."""
    import entromix.modeling.fit as fit_module
    import entromix.scoring.folds as folds_module

    seen: dict[str, list] = {"models": [], "rotate90": [], "losses": []}
    build, augment = folds_module.build_model, fit_module.augment

    def build_model_spy(*args, **kwargs):
        seen["models"].append(build(*args, **kwargs))
        return seen["models"][-1]

    def augment_spy(*args, **kwargs):
        seen["rotate90"].append(kwargs.get("rotate90"))
        return augment(*args, **kwargs)

    class RecordedCrossEntropy(torch.nn.CrossEntropyLoss):
        def forward(self, logits, target):
            value = super().forward(logits, target)
            seen["losses"].append((logits.detach(), target, self.weight, value.detach()))
            return value

    monkeypatch.setattr(folds_module, "build_model", build_model_spy)
    monkeypatch.setattr(fit_module, "augment", augment_spy)
    monkeypatch.setattr(fit_module.nn, "CrossEntropyLoss", RecordedCrossEntropy)
    return seen


def eight_orientation_logits(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the mean logits over the 8 orientations, the logits of the image as it is), computed here."""
    from entromix.modeling.augment import normalize, to_float

    x = normalize(to_float(torch.from_numpy(images), 32))
    turns = [torch.rot90(x, q, dims=(2, 3)) for q in range(4)]
    model.eval()
    with torch.no_grad():
        views = torch.stack([model(v) for v in turns + [torch.flip(t, dims=(3,)) for t in turns]])
        return views.mean(0).numpy(), model(x).numpy()


@pytest.mark.slow  # trains a network for more than one epoch
def test_tta_min_steps_rotate90_label_smoothing_and_warmup_each_act_in_the_score_stage(monkeypatch):
    """Each setting shows in what the stage did, so switching any one off fails here: TTA in the
    held-out logits, min_steps in the images per epoch, warmup in the first step's LR, rotate90 in
    the augmentation call and label smoothing in the loss value."""
    images, manifest = toy_data()
    seen = record_the_score_stage(monkeypatch)
    epochs = []
    cfg = config(tta=True, min_steps=8, rotate90=True, label_smoothing=0.1, lr_warmup_epochs=1)
    result = score_training_images(
        cfg, images, manifest, CPU, log=lambda s: None, on_epoch=lambda k, e, stats: epochs.append(stats)
    )
    assert result.dataset["jsd_score"].between(0, 1).all() and len(result.dataset) == 30
    # min_steps: 8 full batches of 8 in the one epoch of each fold (about 12 images, 2 batches, without it)
    assert [s.images for s in epochs] == [8 * cfg.batch_size] * cfg.folds
    # warmup over the 8 steps (7: one is left for the decay): the first step runs at lr / 7, not lr
    assert [s.lr for s in epochs] == pytest.approx([cfg.lr / 7] * cfg.folds)
    assert seen["rotate90"] and all(r is True for r in seen["rotate90"])
    logits, target, weight, value = seen["losses"][0]
    smoothed = torch.nn.functional.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
    plain = torch.nn.functional.cross_entropy(logits, target, weight=weight)
    assert float(value) == pytest.approx(float(smoothed), abs=1e-6) and abs(float(smoothed - plain)) > 1e-3
    # TTA: the held-out logits are each fold model's mean over the eight orientations
    fold = result.dataset["fold"].to_numpy()[: len(result.oof_logits)]
    real_ids = result.dataset["id"].to_numpy()[: len(result.oof_logits)]
    assert len(seen["models"]) == cfg.folds
    for k, model in enumerate(seen["models"]):
        tta, as_is = eight_orientation_logits(model, images[real_ids[fold == k]])
        assert np.allclose(result.oof_logits[fold == k], tta, atol=1e-4), f"fold {k}: not the TTA logits"
        assert not np.allclose(tta, as_is, atol=1e-3)


@pytest.mark.slow  # trains a network for more than one epoch
def test_aum_scores_wrong_labels_lower():
    """A synthetic pool labelled malignant in which a third are benign-looking (wrong label):
    area under the margin ranks those below the right ones."""
    from entromix.scoring.aum import MarginRecorder, aum_p_true

    images, manifest = toy_data(n_real=36, n_syn=18)
    syn = np.flatnonzero(manifest["is_syn"] == 1)
    wrong = syn[::3]
    images[wrong] = np.random.default_rng(5).integers(0, 120, size=images[wrong].shape).astype(np.uint8)  # look benign
    result = score_training_images(
        config(synthetic_score="aum", epochs=8, lr=3e-3), images, manifest, CPU, log=lambda s: None
    )
    data = result.dataset.set_index("id")
    assert data.loc[wrong, "p_true"].max() < data.loc[np.setdiff1d(syn, wrong), "p_true"].min()
    assert data["jsd_score"].between(0, 1).all()
    recorder = MarginRecorder(torch.tensor([0, 1]))
    recorder(torch.tensor([0, 1, 0]), torch.tensor([[2.0, 0.0], [1.0, 0.5], [0.0, 1.0]]))
    assert recorder.aum().tolist() == pytest.approx([(2.0 - 1.0) / 2, -0.5])
    assert aum_p_true(np.array([0.0]))[0] == pytest.approx(0.5)


@pytest.mark.slow  # trains a network for more than one epoch
@pytest.mark.parametrize("gate_score", ["knn", "mahalanobis", "rank_mean"])
def test_feature_scores_rank_off_class_images_worse_and_drive_the_gate_on_the_jsd_scale(gate_score):
    """A synthetic pool labelled malignant in which a third look benign (wrong label): every
    feature score ranks them worse, the table lists every score, and the gate's column holds the
    reference JSD values of the pool in the chosen score's order (quantile-matched)."""
    images, manifest = toy_data(n_real=36, n_syn=18)
    syn = np.flatnonzero(manifest["is_syn"] == 1)
    wrong = syn[::3]
    images[wrong] = np.random.default_rng(5).integers(0, 120, size=images[wrong].shape).astype(np.uint8)  # look benign
    cfg = config(synthetic_score=gate_score, epochs=6, lr=3e-3, knn_k=5, rank_mean_of=["ensemble", "knn"])
    result = score_training_images(cfg, images, manifest, CPU, log=lambda s: None)
    table = result.synthetic_scores.set_index("id")
    assert list(result.synthetic_scores.columns) == [
        "id",
        "filename",
        "label",
        "ensemble",
        "knn",
        "mahalanobis",
        "rank_mean",
    ]
    assert len(table) == len(syn) and (table["label"] == 1).all()
    right = np.setdiff1d(syn, wrong)
    for name in ("knn", "mahalanobis"):
        assert table.loc[wrong, name].min() > table.loc[right, name].median(), name
    assert table["knn"].between(0, 1).all() and (table["mahalanobis"] >= 0).all()
    np.testing.assert_allclose(
        table["rank_mean"], (table["ensemble"].rank() + table["knn"].rank()) / 2 / len(table), atol=1e-12
    )
    data = result.dataset.set_index("id")
    gate = data.loc[syn, "jsd_score"].to_numpy()
    np.testing.assert_allclose(np.sort(gate), np.sort(table.loc[syn, "ensemble"]), atol=1e-12)  # the JSD's values
    # ... in the chosen score's order (rank_mean ties often; among equal scores any order is right)
    order = np.lexsort((gate, np.round(table.loc[syn, gate_score].to_numpy(), 12)))
    assert (np.diff(gate[order]) >= -1e-12).all()
    real = data[data["is_syn"] == 0]
    np.testing.assert_allclose(
        real["jsd_score"],
        jsd_to_onehot(np.stack([1 - real["p_true"], real["p_true"]], 1), np.ones(len(real), int))[0],
        atol=1e-6,
    )
    syn_ids = manifest.loc[manifest["is_syn"] == 1, "id"].to_numpy()
    tiers = pd.DataFrame({"id": syn_ids, "tier": np.where(np.isin(syn_ids, wrong), "hallucinated", "good")})
    m = score_metrics(result, tiers)["score"]
    assert m["synthetic_score"] == gate_score
    assert set(m["tier_auroc_by_score"]) == {"ensemble", "knn", "mahalanobis", "rank_mean"}
    if gate_score != "rank_mean":  # (rank_mean can tie; the gate's column breaks ties by the JSD)
        assert m["tier_auroc_by_score"][gate_score]["hallucinated_vs_good"] == m["tier_auroc_hallucinated_vs_good"]
    assert m["tier_auroc_by_score"]["knn"]["hallucinated_vs_good"] > 0.9
    assert m["tier_auroc_by_score"]["knn"]["degraded_vs_good"] is None  # no degraded tier here
