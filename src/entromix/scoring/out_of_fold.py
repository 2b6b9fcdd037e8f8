"""The score stage: how much the scorer, trained on real images only, agrees with each
training image's label.

For every training image ``jsd_score = JSD(softmax || onehot(label))`` in bits (``entromix.scoring.jsd``).
The classifier must never score an image it was trained on: a network that memorised its
training set gives those images a JSD near 0, whatever their quality. So

* the real training images are split into ``folds`` folds (stratified by label; patient groups
  kept whole when the manifest has them) and each fold is scored by a model trained on the other
  folds (out-of-fold predictions);
* synthetic images, which no fold model trains on, get the mean softmax of the ``folds`` models
  (``synthetic_score: ensemble``), or, with ``synthetic_score: aum``, the area under the margin of
  one more model trained on the real and synthetic images together (``entromix.scoring.aum``): a
  training-dynamics score for wrong labels;
* from the same forward passes, each fold model's penultimate features place every synthetic image
  relative to the real images that model trained on (``entromix.scoring.feature_space``): the
  class-balanced deep kNN score (``knn``), the Mahalanobis distance to its label's class
  (``mahalanobis``), and ``rank_mean``, the mean rank of several scores. Every one of them is
  computed (and, with known tiers, measured in ``metrics/score.json``); ``synthetic_score`` picks
  the one the gate uses, put on the JSD's scale label by label (``match_quantiles``), so ``tau``
  admits as many images as the reference JSD would, in that score's order;
* validation and test images are never used.

Optionally one temperature (``entromix.scoring.calibration``) is fitted on the out-of-fold logits and
applied to every prediction before the JSD is computed: the score is only as good as the
calibration.
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
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from entromix.common.device import DeviceName, seed_everything
from entromix.common.distributed import SINGLE, World, gather_to_main
from entromix.common.errors import DataError, ParamsError
from entromix.common.labels import LabelSpace
from entromix.common.progress import Eta
from entromix.modeling.fit import (
    EpochStats,
    FitSettings,
    Optimizer,
    fit_classifier,
    predict_logits_and_features,
    uses_channels_last,
)
from entromix.modeling.models import MODEL_NAMES, build_model, is_model_name
from entromix.scoring.aum import area_under_margin, aum_p_true
from entromix.scoring.calibration import TEMPERATURE_BOUNDS, calibrated_probs, fit_temperature
from entromix.scoring.feature_space import FEATURE_SCORES, feature_scores, match_quantiles, rank_mean
from entromix.scoring.fold_resume import FoldStore, epochs_array, epochs_from_array, resume_line
from entromix.scoring.jsd import TAU_AT_P_HALF, jsd_to_onehot

DATASET_COLUMNS = ["filename", "is_syn", "jsd_score", "label", "split", "p_true", "predicted", "fold", "id"]

#: ``score.synthetic_score``: the score the gate sorts synthetic images by. ``ensemble`` is the
#: reference JSD of the fold models' mean softmax; ``aum`` needs one more model; the rest come
#: from the fold models' features (``entromix.scoring.feature_space``).
SYNTHETIC_SCORES = ("ensemble", "aum", *FEATURE_SCORES, "rank_mean")
#: what ``score.rank_mean_of`` may list (``aum`` is not computed unless it is the gate's score)
RANKABLE_SCORES = ("ensemble", *FEATURE_SCORES)

#: called after every epoch of every scorer model with (model: fold 0..K-1, or K for the area-under-
#: the-margin model; epoch from 0; its stats): the score stage's live log
FoldEpochObserver = Callable[[int, int, EpochStats], None]


@dataclass(frozen=True)
class ScoreConfig:
    """The ``score`` section of params.yaml: the scorer and its folds."""

    model: str  # resnet18 | resnet50 | vit_b_16 | swin_t
    pretrained_weights: str | None  # local state_dict file; None = from scratch (never downloads)
    image_size: int  # px the scorer sees (the prepared array is resized on the fly)
    epochs: int
    min_steps: int  # optimiser steps per fold model at least: small folds get longer epochs
    batch_size: int
    optimizer: Optimizer  # adamw | sgd (momentum 0.9)
    lr: float
    lr_warmup_epochs: float  # linear LR warmup, then cosine to 0 (per step)
    weight_decay: float
    label_smoothing: float  # cross-entropy label smoothing in [0, 1)
    augment: bool  # flips, rotation, affine, colour jitter while training the scorer
    rotate90: bool  # augment also with random quarter turns
    color_jitter: float  # strength j of brightness/contrast/saturation (1 +- j) and hue (+- j/4 turn)
    ema_half_life: float  # epochs: each fold model is its weights' moving average (0 = the last step's weights)
    folds: int  # K: out-of-fold scoring of real images, K-model ensemble for synthetic ones
    synthetic_score: Literal["ensemble", "aum", "knn", "mahalanobis", "rank_mean"]  # the gate's score:
    # ensemble: JSD of the K fold models' mean softmax | aum: area under the margin of one extra model
    # trained on real + synthetic (entromix.scoring.aum) | knn, mahalanobis, rank_mean: from the fold
    # models' penultimate features (entromix.scoring.feature_space)
    knn_k: int  # neighbours per class for the knn score
    rank_mean_of: list[str]  # the scores whose mean rank is rank_mean (of RANKABLE_SCORES)
    tta: bool  # predict as the mean logits over the eight orientations of each image
    temperature_scaling: bool  # fit T on the out-of-fold logits and apply it before the JSD
    seed: int
    device: DeviceName
    nproc_per_node: int  # fold models trained at once, one process each (torchrun); 1 = in turn

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1:
            raise ParamsError(f"score.nproc_per_node must be >= 1 (1: the folds in turn), got {self.nproc_per_node}.")
        if not is_model_name(self.model):
            raise ParamsError(
                f"score.model is {self.model!r}; choose one of {', '.join(MODEL_NAMES)}, or timm:<architecture>."
            )
        if not 16 <= self.image_size <= 1024:
            raise ParamsError(f"score.image_size must be between 16 and 1024 px, got {self.image_size}.")
        if self.folds < 2:
            raise ParamsError(f"score.folds must be >= 2 (out-of-fold scoring needs held-out folds), got {self.folds}.")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ParamsError(f"score.{key} must be >= 1, got {getattr(self, key)}.")
        if self.batch_size < 2:
            raise ParamsError("score.batch_size must be >= 2 (BatchNorm needs two images per batch).")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.color_jitter < 1:
            raise ParamsError("score.lr must be > 0, score.weight_decay >= 0 and score.color_jitter in [0, 1).")
        if self.synthetic_score not in SYNTHETIC_SCORES:
            raise ParamsError(
                f"score.synthetic_score is {self.synthetic_score!r}; choose one of {', '.join(SYNTHETIC_SCORES)}."
            )
        if self.knn_k < 1:
            raise ParamsError(f"score.knn_k must be >= 1 (neighbours per class), got {self.knn_k}.")
        bad = [name for name in self.rank_mean_of if name not in RANKABLE_SCORES]
        if bad or not self.rank_mean_of or len(set(self.rank_mean_of)) != len(self.rank_mean_of):
            raise ParamsError(
                f"score.rank_mean_of is {list(self.rank_mean_of)}; list one or more different scores of "
                f"{', '.join(RANKABLE_SCORES)} (for example [ensemble, mahalanobis])."
            )
        if self.min_steps < 0 or self.lr_warmup_epochs < 0 or not 0 <= self.label_smoothing < 1:
            raise ParamsError(
                "score.min_steps and score.lr_warmup_epochs must be >= 0 and score.label_smoothing in [0, 1)."
            )
        if self.ema_half_life < 0:
            raise ParamsError(f"score.ema_half_life must be >= 0 epochs (0 = off), got {self.ema_half_life}.")

    def fit_settings(self) -> FitSettings:
        return FitSettings(
            self.epochs,
            self.batch_size,
            self.optimizer,
            self.lr,
            self.weight_decay,
            self.augment,
            self.color_jitter,
            self.image_size,
            min_steps=self.min_steps,
            lr_warmup_epochs=self.lr_warmup_epochs,
            label_smoothing=self.label_smoothing,
            rotate90=self.rotate90,
            ema_half_life=self.ema_half_life,
        )


@dataclass
class ScoreResult:
    dataset: pd.DataFrame  # DATASET_COLUMNS, one row per training image (real and synthetic)
    temperature: float
    oof_logits: np.ndarray  # (N_real_train, C), before temperature scaling
    fold_seconds: list[float]
    # one row per synthetic image: id, filename, label and every score computed (ensemble = the
    # reference JSD in bits, knn, mahalanobis, rank_mean, aum when it is the gate's), larger = worse
    synthetic_scores: pd.DataFrame | None = None
    gate_score: str = "ensemble"  # score.synthetic_score: the one behind the synthetic rows' jsd_score


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


def score_training_images(
    config: ScoreConfig,
    images: np.ndarray,
    manifest: pd.DataFrame,
    device: torch.device,
    log: Callable[[str], None] = print,
    on_epoch: FoldEpochObserver | None = None,
    world: World = SINGLE,
    label_space: LabelSpace | None = None,
    resume: FoldStore | None = None,
) -> ScoreResult | None:
    """Out-of-fold JSD for real training images and fold-ensemble JSD for synthetic images.

    Args:
        images: the prepared array (N, H, W, 3) uint8 (a memory map is fine).
        manifest: ingest's manifest (id, label, split, is_syn, group, ...).
        on_epoch: called after every epoch of every model (:data:`FoldEpochObserver`); each
            epoch also logs one progress line (:func:`fold_epoch_line`).
        world: the processes sharing the folds (``score.nproc_per_node``): each trains every
            world-size-th fold, rank 0 collects them and returns the result; the others return None.
        label_space: the K labels and the positive ones (``Prepared.label_space``); None: the
            manifest's labels 0..max with label 1 positive.
        resume: where finished models are kept (``entromix.scoring.fold_resume``): those an earlier
            run of the same settings and data finished are loaded instead of trained, and every
            model trained here is saved there as it finishes; None keeps nothing.
    """
    real = manifest[(manifest["is_syn"] == 0) & (manifest["split"] == "train")].reset_index(drop=True)
    syn = manifest[manifest["is_syn"] == 1].reset_index(drop=True)
    num_classes = label_space.num_classes if label_space is not None else int(real["label"].max()) + 1
    positive = label_space.positive if label_space is not None else (1,)
    fold = make_folds(real, config.folds, config.seed)
    # uint8 images on the training device once: (N, H, W, 3), a few MB at 64 px
    real_images = torch.from_numpy(np.asarray(images[real["id"].to_numpy()])).to(device)
    real_labels = torch.from_numpy(real["label"].to_numpy().astype(np.int64)).to(device)
    syn_images = np.asarray(images[syn["id"].to_numpy()]) if len(syn) else np.zeros((0,) + images.shape[1:], np.uint8)
    channels_last = uses_channels_last(config.model, device)

    aum_model = config.synthetic_score == "aum" and len(syn) > 0 and world.is_main
    models = len(range(world.rank, config.folds, world.size)) + aum_model
    eta = Eta(models * config.epochs)  # this process's epochs (process 0 also trains the aum model)

    def epoch_done(k: int, epoch: int, stats: EpochStats, replayed: bool = False) -> None:
        if replayed:  # a model of an earlier run: its epochs go to the live log only, done but not timed
            eta.skip(1)
        else:
            log(f"{fold_epoch_line(k, config.folds, epoch, config.epochs, stats)} | {eta.step(count=False)}")
        if on_epoch is not None:
            on_epoch(k, epoch, stats)

    syn_labels = syn["label"].to_numpy().astype(np.int64)
    trained = FoldData(
        real, fold, real_images, real_labels, syn_images, syn_labels, num_classes, channels_last, positive
    )
    store = _finished_models(config, resume, fold, len(syn), log)
    per_rank = gather_to_main(_train_folds(config, trained, device, world, log, epoch_done, store), world)
    if per_rank is None:  # ranks other than 0: their folds are with rank 0 now
        return None
    oof_logits, syn_logits, syn_features, fold_seconds = _collect_folds(per_rank, fold, len(syn), num_classes)

    temperature = _fit_temperature(config, oof_logits, real["label"].to_numpy(), log)
    real_probs = calibrated_probs(oof_logits, temperature)
    syn_probs = calibrated_probs(syn_logits, temperature).mean(axis=0)  # mean softmax of the K fold models
    scores = synthetic_score_table(syn, syn_probs, {name: v.mean(axis=0) for name, v in syn_features.items()}, config)
    if config.synthetic_score == "aum" and len(syn):
        syn_probs = _aum_probs(config, trained, device, log, partial(epoch_done, config.folds), store)
    syn_rows = _gate_rows(config.synthetic_score, _dataset_rows(syn, syn_probs, np.full(len(syn), -1)), scores)
    dataset = pd.concat([_dataset_rows(real, real_probs, fold), syn_rows], ignore_index=True)
    return ScoreResult(
        dataset=dataset[DATASET_COLUMNS],
        temperature=temperature,
        oof_logits=oof_logits,
        fold_seconds=fold_seconds,
        synthetic_scores=scores,
        gate_score=config.synthetic_score,
    )


def _collect_folds(
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


def _gate_rows(gate_score: str, syn_rows: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The synthetic rows of dataset.csv with the gate's score in ``jsd_score``: the reference JSD
    (``ensemble``), AUM's JSD (also recorded in ``scores``), or a feature score put on the JSD's
    scale (same values per label, this score's order; :func:`match_quantiles`)."""
    if gate_score == "aum":
        scores["aum"] = syn_rows["jsd_score"].to_numpy()
    elif gate_score != "ensemble" and len(syn_rows):
        syn_rows["jsd_score"] = match_quantiles(
            scores[gate_score].to_numpy(), scores["ensemble"].to_numpy(), syn_rows["label"].to_numpy()
        )
    return syn_rows


def synthetic_score_table(
    syn: pd.DataFrame, syn_probs: np.ndarray, features: dict[str, np.ndarray], config: ScoreConfig
) -> pd.DataFrame:
    """One row per synthetic image: id, filename, label, the reference JSD (``ensemble``), each
    feature score (mean over the fold models) and ``rank_mean`` of ``config.rank_mean_of``."""
    jsd, _ = jsd_to_onehot(syn_probs, syn["label"].to_numpy())
    table = pd.DataFrame(
        {
            "id": syn["id"].astype(int).to_numpy(),
            "filename": (syn["source"].astype(str) + "/" + syn["path"].astype(str)).to_numpy(),
            "label": syn["label"].astype(int).to_numpy(),
            "ensemble": jsd,
            **features,
        }
    )
    table["rank_mean"] = rank_mean([table[name].to_numpy() for name in config.rank_mean_of]) if len(table) else []
    return table


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


def _train_folds(
    config: ScoreConfig,
    data: FoldData,
    device: torch.device,
    world: World,
    log: Callable[[str], None],
    epoch_done: Callable[..., None],
    store: FoldStore,
) -> dict[int, FoldOutput]:
    """This rank's fold models (fold k on rank k mod world size; every fold with one process): each
    one ``store`` holds from an earlier run (its epochs replayed into ``epoch_done``), the rest
    trained and saved to ``store`` as they finish."""
    results = {}
    predict = partial(
        predict_logits_and_features,
        device=device,
        image_size=config.image_size,
        channels_last=data.channels_last,
        tta=config.tta,
    )
    labels = data.real["label"].to_numpy()
    for k in range(world.rank, config.folds, world.size):
        if k in store.finished:
            results[k] = FoldOutput.from_arrays(store.finished[k])
            for epoch, stats in enumerate(results[k].epochs):
                epoch_done(k, epoch, stats, replayed=True)
            continue
        start = time.perf_counter()
        held = data.fold == k
        epochs: list[EpochStats] = []
        on_epoch = partial(_record_epoch, epochs, partial(epoch_done, k))
        model = _fit_fold_model(
            config,
            k,
            data.images,
            data.labels,
            data.fold,
            data.num_classes,
            device,
            data.channels_last,
            on_epoch,
            data.positive,
        )
        held_logits, _ = predict(model, data.images[torch.from_numpy(np.flatnonzero(held)).to(device)])
        syn_logits, syn_features = predict(model, data.syn_images)
        feature_scores_k = {name: np.zeros(0) for name in FEATURE_SCORES}
        if len(data.syn_images):
            # the reference: this model's features of the real images it trained on (forward passes only)
            _, own = predict(model, data.images[torch.from_numpy(np.flatnonzero(~held)).to(device)])
            feature_scores_k = fold_feature_scores(own, labels[~held], syn_features, data.syn_labels, config.knn_k)
        results[k] = FoldOutput(held_logits, syn_logits, feature_scores_k, time.perf_counter() - start, epochs)
        store.save(k, results[k].arrays())
        acc = (held_logits.argmax(1) == labels[held]).mean()
        log(
            f"entromix score: fold {k + 1}/{config.folds}: trained on {int((~held).sum())}, scored "
            f"{int(held.sum())} held-out (accuracy {acc:.3f}) + {len(data.syn_images)} synthetic in "
            f"{results[k].seconds:.1f} s" + (f" (rank {world.rank})" if world.distributed else "")
        )
        del model
    return results


def fold_feature_scores(
    reference: np.ndarray, reference_labels: np.ndarray, syn: np.ndarray, syn_labels: np.ndarray, knn_k: int
) -> dict[str, np.ndarray]:
    """Every feature score (``FEATURE_SCORES``) of one fold model's synthetic features against the
    features of the real images it trained on."""
    return {name: feature_scores(name, reference, reference_labels, syn, syn_labels, knn_k) for name in FEATURE_SCORES}


def _fit_fold_model(
    config: ScoreConfig,
    k: int,
    real_images: torch.Tensor,
    real_labels: torch.Tensor,
    fold: np.ndarray,
    num_classes: int,
    device: torch.device,
    channels_last: bool,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    positive: tuple[int, ...] = (1,),
) -> torch.nn.Module:
    """The scorer of fold ``k``: trained from its own seed on the real training images of the other folds."""
    seed_everything(config.seed * 1000 + k)
    model = build_model(config.model, num_classes, config.image_size, config.pretrained_weights, "score").to(device)
    train_idx = torch.from_numpy(np.flatnonzero(fold != k)).to(device)
    settings = config.fit_settings()
    return fit_classifier(
        model,
        real_images[train_idx],
        real_labels[train_idx],
        settings,
        device,
        seed=config.seed * 1000 + k,
        channels_last=channels_last,
        on_epoch=on_epoch,
        positive=positive,
    )


def fold_epoch_line(k: int, folds: int, epoch: int, epochs: int, stats: EpochStats) -> str:
    """The progress line of one scorer epoch (``k == folds``: the area-under-the-margin model)."""
    model = f"fold {k + 1}/{folds}" if k < folds else "aum model"
    recall = "-" if stats.recall_positive is None else f"{stats.recall_positive:.3f}"
    return (
        f"entromix score: {model} epoch {epoch + 1:>3}/{epochs} | lr {stats.lr:.2e} | loss {stats.loss:.4f} | "
        f"train recall {recall} | {stats.seconds:.1f} s, {stats.images_per_s:.0f} img/s"
    )


def _fit_temperature(
    config: ScoreConfig, oof_logits: np.ndarray, labels: np.ndarray, log: Callable[[str], None]
) -> float:
    """The temperature fitted on the out-of-fold logits (1 without ``temperature_scaling``); a loud
    warning when it reaches its upper bound, which means the scorer learned nothing."""
    temperature = fit_temperature(oof_logits, labels) if config.temperature_scaling else 1.0
    if config.temperature_scaling and temperature >= 0.99 * TEMPERATURE_BOUNDS[1]:
        log(
            f"entromix score: WARNING: the fitted temperature {temperature:.1f} is at its upper bound "
            f"({TEMPERATURE_BOUNDS[1]:g}): the scorer's out-of-fold predictions carry almost no "
            "information, so every image gets p_true near 1/classes and the JSD cannot tell good synthetic "
            "images from bad ones. Train the scorer longer (score.min_steps, score.epochs) or check the data; "
            "see metrics/score.json (oof_auc)."
        )
    return temperature


def _dataset_rows(frame: pd.DataFrame, probs: np.ndarray, folds: np.ndarray) -> pd.DataFrame:
    """``dataset.csv`` rows (:data:`DATASET_COLUMNS`) of the manifest rows ``frame`` and their probabilities."""
    jsd, p_true = jsd_to_onehot(probs, frame["label"].to_numpy())
    return pd.DataFrame(
        {
            "filename": frame["source"].astype(str) + "/" + frame["path"].astype(str),
            "is_syn": frame["is_syn"].astype(int),
            "jsd_score": jsd,
            "label": frame["label"].astype(int),
            "split": "train",
            "p_true": p_true,
            "predicted": probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int),
            "fold": folds,
            "id": frame["id"].astype(int),
        }
    )


def _aum_probs(
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


def _finished_models(
    config: ScoreConfig, resume: FoldStore | None, fold: np.ndarray, n_syn: int, log: Callable[[str], None]
) -> FoldStore:
    """This run's store (``resume`` with the fold assignment in its fingerprint) with the models an
    earlier run finished loaded; one line says so when there are any."""
    store = (resume or FoldStore(None)).for_folds(fold)
    models = config.folds + int(config.synthetic_score == "aum" and n_syn > 0)
    if store.scan(models, log):
        log(resume_line(store.finished, config.folds, models, store.directory))
    return store


def tier_auroc(jsd: np.ndarray, tiers: np.ndarray, bad: str, good: str = "good") -> float | None:
    """AUROC of JSD for telling ``bad``-tier synthetic images from ``good`` ones (1 = perfect ranking)."""
    mask = (tiers == bad) | (tiers == good)
    y = tiers[mask] == bad
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, jsd[mask]))


def score_metrics(
    result: ScoreResult, tiers: pd.DataFrame | None = None, digits: int = 4, label_space: LabelSpace | None = None
) -> dict:
    """``metrics/score.json``: reference-classifier quality and the JSD of real and synthetic images.

    Args:
        tiers: optional columns id, tier (good | degraded | hallucinated) for synthetic images;
            measurement only, never used to score.
        label_space: the labels and the binary view: ``oof_auc`` is the ROC-AUC of the summed
            positive probability (malignant vs benign, for any K); with more than two labels
            ``oof_auc_ovr_macro`` adds the mean one-vs-rest ROC-AUC over the K classes.
    """
    data = result.dataset
    real, syn = data[data["is_syn"] == 0], data[data["is_syn"] == 1]
    y = real["label"].to_numpy()
    probs = calibrated_probs(result.oof_logits, result.temperature)
    space = label_space or LabelSpace.from_names([str(c) for c in range(probs.shape[1])], None)
    extra = {}
    if space.is_plain_binary:
        auc = roc_auc_score(y, probs[:, 1])
    else:
        auc = roc_auc_score(space.binary_targets(y), space.positive_probability(probs))
        if probs.shape[1] > 2:
            extra["oof_auc_ovr_macro"] = roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1])))
    out = {
        "oof_accuracy": accuracy_score(y, probs.argmax(1)),
        "oof_balanced_accuracy": balanced_accuracy_score(y, probs.argmax(1)),
        "oof_auc": auc,
        **extra,
        "temperature": result.temperature,
        "real_jsd_mean": real["jsd_score"].mean(),
        "synthetic_jsd_mean": syn["jsd_score"].mean() if len(syn) else None,
        "synthetic_p_true_below_half": (syn["p_true"] < 0.5).mean() if len(syn) else None,
        "synthetic_jsd_below_0311": (syn["jsd_score"] <= TAU_AT_P_HALF).mean() if len(syn) else None,
        "n_real": len(real),
        "n_synthetic": len(syn),
        "synthetic_score": result.gate_score,
    }
    if tiers is not None and len(tiers) and len(syn):
        merged = syn.merge(tiers[["id", "tier"]], on="id", how="left")
        t = merged["tier"].fillna("").to_numpy()
        j = merged["jsd_score"].to_numpy()
        out["tier_auroc_hallucinated_vs_good"] = tier_auroc(j, t, "hallucinated")
        out["tier_auroc_degraded_vs_good"] = tier_auroc(j, t, "degraded")
        for tier in ("good", "degraded", "hallucinated"):
            sel = t == tier
            out[f"tier_{tier}_jsd_mean"] = float(j[sel].mean()) if sel.any() else None
            out[f"tier_{tier}_n"] = int(sel.sum())
        if result.synthetic_scores is not None:
            out["tier_auroc_by_score"] = tier_aurocs_by_score(result.synthetic_scores, tiers)
    return {"score": {k: _round(v, digits) for k, v in out.items()}}


def tier_aurocs_by_score(scores: pd.DataFrame, tiers: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """For every score column of ``synthetic_scores`` (ensemble, knn, ...): the AUROC of telling the
    hallucinated and the degraded tier from the good one (1 = a perfect ranking, 0.5 = chance)."""
    merged = scores.merge(tiers[["id", "tier"]], on="id", how="left")
    t = merged["tier"].fillna("").to_numpy()
    names = [c for c in scores.columns if c not in ("id", "filename", "label")]
    return {
        name: {
            "hallucinated_vs_good": tier_auroc(merged[name].to_numpy(), t, "hallucinated"),
            "degraded_vs_good": tier_auroc(merged[name].to_numpy(), t, "degraded"),
        }
        for name in names
    }


def _round(value, digits: int):
    """Counts stay integers, None stays None (no tier of that kind), names stay strings, floats are
    rounded (in nested mappings too)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, (int, np.integer)):
        return int(value)
    return round(float(value), digits)
