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

This module puts the stage together (:func:`score_training_images`, dataset.csv's rows); its
settings are ``entromix.scoring.config``, the fold models and what they predict
``entromix.scoring.folds``, and ``metrics/score.json`` ``entromix.scoring.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch

from entromix.common.distributed import SINGLE, World, gather_to_main
from entromix.common.labels import LabelSpace
from entromix.common.progress import Eta
from entromix.modeling.fit import EpochStats, uses_channels_last
from entromix.scoring.calibration import TEMPERATURE_BOUNDS, calibrated_probs, fit_temperature
from entromix.scoring.config import ScoreConfig
from entromix.scoring.feature_space import match_quantiles, rank_mean
from entromix.scoring.fold_resume import FoldStore
from entromix.scoring.folds import (
    FoldData,
    FoldOutput,
    FoldPredict,
    aum_model_probs,
    collect_folds,
    finished_models,
    fold_predictor,
    make_folds,
    train_folds,
)
from entromix.scoring.jsd import jsd_to_onehot

DATASET_COLUMNS = ["filename", "is_syn", "jsd_score", "label", "split", "p_true", "predicted", "fold", "id"]

#: called after every epoch of every scorer model with (model: fold 0..K-1, or K for the area-under-
#: the-margin model; epoch from 0; its stats): the score stage's live log
FoldEpochObserver = Callable[[int, int, EpochStats], None]


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
    predict: FoldPredict | None = None,
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
        predict: how each fold model predicts its parts (``entromix.scoring.folds.FoldPredict``);
            None: the stage's own (:func:`~entromix.scoring.folds.fold_predictor`). A measurement
            passes a wrapper of that one to see the penultimate features of every fold model.
    """
    real, syn, data = _fold_data(config, images, manifest, device, label_space)
    aum_model = config.synthetic_score == "aum" and len(syn) > 0 and world.is_main
    models = len(range(world.rank, config.folds, world.size)) + aum_model
    eta = Eta(models * config.epochs)  # this process's epochs (process 0 also trains the aum model)
    epoch_done = partial(_epoch_done, config, eta, log, on_epoch)
    store = finished_models(config, resume, data.fold, len(syn), log)
    predict = predict or fold_predictor(config, device)
    per_rank = gather_to_main(train_folds(config, data, device, world, log, epoch_done, store, predict), world)
    if per_rank is None:  # ranks other than 0: their folds are with rank 0 now
        return None
    # the area-under-the-margin model, when it is the gate's score, is the last one: index ``folds``
    aum_probs = partial(aum_model_probs, config, data, device, log, partial(epoch_done, config.folds), store)
    return _scores(config, real, syn, data, per_rank, aum_probs, log)


def _fold_data(
    config: ScoreConfig,
    images: np.ndarray,
    manifest: pd.DataFrame,
    device: torch.device,
    label_space: LabelSpace | None,
) -> tuple[pd.DataFrame, pd.DataFrame, FoldData]:
    """The manifest rows of the real training images and of the synthetic ones, and both sets of
    images as the fold models see them (validation and test images are never used)."""
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
    syn_labels = syn["label"].to_numpy().astype(np.int64)
    data = FoldData(real, fold, real_images, real_labels, syn_images, syn_labels, num_classes, channels_last, positive)
    return real, syn, data


def _epoch_done(
    config: ScoreConfig,
    eta: Eta,
    log: Callable[[str], None],
    on_epoch: FoldEpochObserver | None,
    k: int,
    epoch: int,
    stats: EpochStats,
    replayed: bool = False,
) -> None:
    """After every epoch of model ``k``: its progress line and the caller's ``on_epoch``."""
    if replayed:  # a model of an earlier run: its epochs go to the live log only, done but not timed
        eta.skip(1)
    else:
        log(f"{fold_epoch_line(k, config.folds, epoch, config.epochs, stats)} | {eta.step(count=False)}")
    if on_epoch is not None:
        on_epoch(k, epoch, stats)


def _scores(
    config: ScoreConfig,
    real: pd.DataFrame,
    syn: pd.DataFrame,
    data: FoldData,
    per_rank: list[dict[int, FoldOutput]],
    aum_probs: Callable[[], np.ndarray],
    log: Callable[[str], None],
) -> ScoreResult:
    """Every fold's outputs put together: the calibrated out-of-fold scores of the real images, the
    synthetic images' scores and, in their dataset rows, the gate's (``aum_probs`` trains or loads
    the area-under-the-margin model only when that is the gate's score)."""
    oof_logits, syn_logits, syn_features, fold_seconds = collect_folds(per_rank, data.fold, len(syn), data.num_classes)
    temperature = _fit_temperature(config, oof_logits, real["label"].to_numpy(), log)
    real_probs = calibrated_probs(oof_logits, temperature)
    syn_probs = calibrated_probs(syn_logits, temperature).mean(axis=0)  # mean softmax of the K fold models
    scores = synthetic_score_table(syn, syn_probs, {name: v.mean(axis=0) for name, v in syn_features.items()}, config)
    if config.synthetic_score == "aum" and len(syn):
        syn_probs = aum_probs()
    syn_rows = _gate_rows(config.synthetic_score, _dataset_rows(syn, syn_probs, np.full(len(syn), -1)), scores)
    dataset = pd.concat([_dataset_rows(real, real_probs, data.fold), syn_rows], ignore_index=True)
    return ScoreResult(
        dataset=dataset[DATASET_COLUMNS],
        temperature=temperature,
        oof_logits=oof_logits,
        fold_seconds=fold_seconds,
        synthetic_scores=scores,
        gate_score=config.synthetic_score,
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
