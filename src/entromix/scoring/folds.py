"""The scorer's models: the ``folds`` fold models (and the area-under-the-margin model), trained,
or loaded from the models an earlier run finished, and what each of them predicts.

* :func:`make_folds` assigns every real training image to a fold (stratified by label, patient
  groups kept whole); fold model ``k`` trains on the other folds (:func:`_fit_fold_model`, from its
  own seed ``seed * 1000 + k``, so a fold's model does not depend on the folds before it);
* each fold model then predicts three parts (:data:`FOLD_PARTS`): its held-out real images (their
  out-of-fold logits), the synthetic pool, and the real images it trained on (the reference the
  synthetic images' feature scores are measured against, ``entromix.scoring.feature_space``);
  :data:`FoldPredict` is how it predicts them, logits and penultimate features from the same
  forward passes, and a caller may pass its own to see those features (``score_training_images``'s
  ``predict``; scripts/feature_score_variants.py);
* :func:`aum_model_probs` trains (or loads) the one extra model of ``synthetic_score: aum``
  (``entromix.scoring.aum``).

``entromix.scoring.out_of_fold`` puts the folds' outputs together into the stage's scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from entromix.common.device import seed_everything
from entromix.common.distributed import World
from entromix.common.errors import DataError
from entromix.modeling.fit import EpochStats, fit_classifier, predict_logits_and_features, uses_channels_last
from entromix.modeling.models import build_model
from entromix.scoring.aum import area_under_margin, aum_p_true
from entromix.scoring.config import ScoreConfig
from entromix.scoring.feature_space import FEATURE_SCORES, feature_scores
from entromix.scoring.fold_resume import FoldStore, epochs_array, epochs_from_array, resume_line

#: what a fold model predicts, in this order: its held-out real images, the synthetic pool, and the
#: real images it trained on (only with synthetic images: the feature scores' reference)
FoldPart = Literal["held_out", "synthetic", "reference"]
FOLD_PARTS: tuple[FoldPart, ...] = ("held_out", "synthetic", "reference")

#: how fold model ``k`` predicts one part: (k, part, model, uint8 images (n, H, W, 3)) -> (logits
#: (n, C), penultimate features (n, D)); :func:`fold_predictor` is the stage's own
FoldPredict = Callable[[int, FoldPart, torch.nn.Module, torch.Tensor | np.ndarray], tuple[np.ndarray, np.ndarray]]


def fold_predictor(config: ScoreConfig, device: torch.device) -> FoldPredict:
    """The stage's :data:`FoldPredict`: ``predict_logits_and_features`` at the scorer's image size,
    memory format and ``tta``, whatever the fold and part. A measurement wraps it to record the
    penultimate features (or hook the model) of exactly the forward passes the stage scores with."""
    predict = partial(
        predict_logits_and_features,
        device=device,
        image_size=config.image_size,
        channels_last=uses_channels_last(config.model, device),
        tta=config.tta,
    )

    def fold_predict(
        k: int, part: FoldPart, model: torch.nn.Module, images: torch.Tensor | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        return predict(model, images)

    return fold_predict


@dataclass
class FoldOutput:
    """What one fold model gives: its held-out logits, the synthetic logits, the feature scores of
    the synthetic images against its own training images, and the seconds it took."""

    held_logits: np.ndarray  # (n_held, C)
    syn_logits: np.ndarray  # (n_syn, C)
    syn_feature_scores: dict[str, np.ndarray]  # FEATURE_SCORES name -> (n_syn,)
    seconds: float
    epochs: list[EpochStats] = field(default_factory=list)  # its training epochs (replayed into a resumed run's log)

    def arrays(self) -> dict[str, np.ndarray]:
        """What :class:`~entromix.scoring.fold_resume.FoldStore` keeps of a finished fold."""
        return {
            "held_logits": self.held_logits,
            "syn_logits": self.syn_logits,
            **{f"feature_{name}": v for name, v in self.syn_feature_scores.items()},
            "seconds": np.array(self.seconds),
            "epochs": epochs_array(self.epochs),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FoldOutput:
        features = {name: arrays[f"feature_{name}"] for name in FEATURE_SCORES}
        epochs = epochs_from_array(arrays["epochs"])
        return cls(arrays["held_logits"], arrays["syn_logits"], features, float(arrays["seconds"]), epochs)


def make_folds(manifest_rows: pd.DataFrame, folds: int, seed: int) -> np.ndarray:
    """Fold index (0..K-1) per real training image: stratified by label, patients kept whole."""
    labels = manifest_rows["label"].to_numpy()
    counts = np.bincount(labels)
    if counts[counts > 0].min() < folds:
        raise DataError(
            f"score.folds is {folds} but the smallest class has only {counts[counts > 0].min()} real "
            f"training images; every fold needs one of each class. Lower score.folds."
        )
    groups = manifest_rows["group"].fillna("").astype(str).to_numpy()
    has_groups = (groups != "").all()
    splitter = (StratifiedGroupKFold if has_groups else StratifiedKFold)(
        n_splits=folds, shuffle=True, random_state=seed
    )
    fold = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups if has_groups else None)):
        fold[held_out] = k
    return fold


@dataclass(frozen=True)
class FoldData:
    """The real training images with their folds, and the synthetic pool, as the fold models see them."""

    real: pd.DataFrame  # manifest rows of the real training images
    fold: np.ndarray  # (n_real,) fold of each
    images: torch.Tensor  # (n_real, H, W, 3) uint8 on the device
    labels: torch.Tensor  # (n_real,) int64 on the device
    syn_images: np.ndarray  # (n_syn, H, W, 3) uint8
    syn_labels: np.ndarray  # (n_syn,) int64
    num_classes: int
    channels_last: bool
    positive: tuple[int, ...] = (1,)  # the positive (malignant) labels, for the training recall in the logs


def train_folds(
    config: ScoreConfig,
    data: FoldData,
    device: torch.device,
    world: World,
    log: Callable[[str], None],
    epoch_done: Callable[..., None],
    store: FoldStore,
    predict: FoldPredict,
) -> dict[int, FoldOutput]:
    """This rank's fold models (fold k on rank k mod world size; every fold with one process): each
    one ``store`` holds from an earlier run (its epochs replayed into ``epoch_done``), the rest
    trained, predicting with ``predict``, and saved to ``store`` as they finish."""
    results = {}
    labels = data.real["label"].to_numpy()
    for k in range(world.rank, config.folds, world.size):
        if k in store.finished:
            results[k] = FoldOutput.from_arrays(store.finished[k])
            for epoch, stats in enumerate(results[k].epochs):
                epoch_done(k, epoch, stats, replayed=True)
            continue
        results[k] = _train_fold(config, data, k, device, partial(epoch_done, k), predict)
        store.save(k, results[k].arrays())
        held = data.fold == k
        acc = (results[k].held_logits.argmax(1) == labels[held]).mean()
        log(
            f"entromix score: fold {k + 1}/{config.folds}: trained on {int((~held).sum())}, scored "
            f"{int(held.sum())} held-out (accuracy {acc:.3f}) + {len(data.syn_images)} synthetic in "
            f"{results[k].seconds:.1f} s" + (f" (rank {world.rank})" if world.distributed else "")
        )
    return results


def _train_fold(
    config: ScoreConfig,
    data: FoldData,
    k: int,
    device: torch.device,
    epoch_done: Callable[..., None],
    predict: FoldPredict,
) -> FoldOutput:
    """Fold ``k``'s model trained, then its predictions of the three :data:`FOLD_PARTS` and the
    feature scores of the synthetic images; the model is dropped when this returns."""
    start = time.perf_counter()
    held = data.fold == k
    epochs: list[EpochStats] = []
    model = _fit_fold_model(config, k, data, device, partial(_record_epoch, epochs, epoch_done))
    held_logits, _ = predict(k, "held_out", model, data.images[torch.from_numpy(np.flatnonzero(held)).to(device)])
    syn_logits, syn_features = predict(k, "synthetic", model, data.syn_images)
    feature_scores_k = {name: np.zeros(0) for name in FEATURE_SCORES}
    if len(data.syn_images):
        # the reference: this model's features of the real images it trained on (forward passes only)
        own_images = data.images[torch.from_numpy(np.flatnonzero(~held)).to(device)]
        _, own = predict(k, "reference", model, own_images)
        labels = data.real["label"].to_numpy()
        feature_scores_k = fold_feature_scores(own, labels[~held], syn_features, data.syn_labels, config.knn_k)
    return FoldOutput(held_logits, syn_logits, feature_scores_k, time.perf_counter() - start, epochs)


def _fit_fold_model(
    config: ScoreConfig,
    k: int,
    data: FoldData,
    device: torch.device,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> torch.nn.Module:
    """The scorer of fold ``k``: trained from its own seed on the real training images of the other folds."""
    seed_everything(config.seed * 1000 + k)
    model = build_model(config.model, data.num_classes, config.image_size, config.pretrained_weights, "score")
    model = model.to(device)
    train_idx = torch.from_numpy(np.flatnonzero(data.fold != k)).to(device)
    settings = config.fit_settings()
    return fit_classifier(
        model,
        data.images[train_idx],
        data.labels[train_idx],
        settings,
        device,
        seed=config.seed * 1000 + k,
        channels_last=data.channels_last,
        on_epoch=on_epoch,
        positive=data.positive,
    )


def fold_feature_scores(
    reference: np.ndarray, reference_labels: np.ndarray, syn: np.ndarray, syn_labels: np.ndarray, knn_k: int
) -> dict[str, np.ndarray]:
    """Every feature score (``FEATURE_SCORES``) of one fold model's synthetic features against the
    features of the real images it trained on."""
    return {name: feature_scores(name, reference, reference_labels, syn, syn_labels, knn_k) for name in FEATURE_SCORES}


def aum_model_probs(
    config: ScoreConfig,
    data: FoldData,
    device: torch.device,
    log: Callable[[str], None],
    epoch_done: Callable[..., None],
    store: FoldStore,
) -> np.ndarray:
    """(n_syn, C) rows with ``p_true = sigmoid(AUM)`` at each synthetic image's label and the rest
    spread evenly over the other classes (``entromix.scoring.aum``). The model is index ``folds``
    in ``store``: one an earlier run finished is not trained again."""
    k, n_real = config.folds, len(data.labels)
    if k in store.finished:
        aum, seconds = store.finished[k]["aum"], float(store.finished[k]["seconds"])
        for epoch, stats in enumerate(epochs_from_array(store.finished[k]["epochs"])):
            epoch_done(epoch, stats, replayed=True)
        how = f"the model an earlier run trained ({seconds:.1f} s)"
    else:
        start = time.perf_counter()
        seed = config.seed * 1000 + k
        seed_everything(seed)
        images = torch.cat([data.images, torch.from_numpy(data.syn_images).to(data.images.device)])
        labels = torch.cat([data.labels, torch.from_numpy(data.syn_labels).to(data.labels.device)])
        model = build_model(config.model, data.num_classes, config.image_size, config.pretrained_weights, "score")
        epochs: list[EpochStats] = []
        on_epoch = partial(_record_epoch, epochs, epoch_done)
        settings = config.fit_settings()
        aum = area_under_margin(model.to(device), images, labels, settings, device, seed, data.channels_last, on_epoch)
        aum, seconds = aum[n_real:], time.perf_counter() - start  # (n_syn,): the real images keep their OOF scores
        store.save(k, {"aum": aum, "seconds": np.array(seconds), "epochs": epochs_array(epochs)})
        how = f"one model in {seconds:.1f} s"
    p_true = aum_p_true(aum)
    probs = np.repeat(((1.0 - p_true) / max(1, data.num_classes - 1))[:, None], data.num_classes, axis=1)
    probs[np.arange(len(p_true)), data.syn_labels] = p_true
    log(
        f"entromix score: area under the margin on {n_real} real + {len(data.syn_labels)} synthetic images: "
        f"{how}; synthetic AUM median {np.median(aum):.2f}"
    )
    return probs


def _record_epoch(
    epochs: list[EpochStats], epoch_done: Callable[[int, EpochStats], None], epoch: int, stats: EpochStats
) -> None:
    """``fit_classifier``'s ``on_epoch``: keep the stats (saved with the model) and pass them on."""
    epochs.append(stats)
    epoch_done(epoch, stats)


def finished_models(
    config: ScoreConfig, resume: FoldStore | None, fold: np.ndarray, n_syn: int, log: Callable[[str], None]
) -> FoldStore:
    """This run's store (``resume`` with the fold assignment in its fingerprint) with the models an
    earlier run finished loaded; one line says so when there are any."""
    store = (resume or FoldStore(None)).for_folds(fold)
    models = config.folds + int(config.synthetic_score == "aum" and n_syn > 0)
    if store.scan(models, log):
        log(resume_line(store.finished, config.folds, models, store.directory))
    return store


def collect_folds(
    per_rank: list[dict[int, FoldOutput]], fold: np.ndarray, n_syn: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], list[float]]:
    """Every rank's fold outputs in one place: the out-of-fold logits (n_real, C), the synthetic
    logits (K, n_syn, C), each feature score (K, n_syn) and the seconds per fold."""
    folds = int(fold.max()) + 1
    oof_logits = np.zeros((len(fold), num_classes), dtype=np.float32)
    syn_logits = np.zeros((folds, n_syn, num_classes), dtype=np.float32)
    syn_features = {name: np.zeros((folds, n_syn)) for name in FEATURE_SCORES}
    seconds = {}
    for results in per_rank:
        for k, output in results.items():
            oof_logits[fold == k] = output.held_logits
            syn_logits[k] = output.syn_logits
            for name in FEATURE_SCORES:
                syn_features[name][k] = output.syn_feature_scores[name]
            seconds[k] = output.seconds
    return oof_logits, syn_logits, syn_features, [seconds[k] for k in range(folds)]
