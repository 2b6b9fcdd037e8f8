"""The ``score`` section of params.yaml (:class:`ScoreConfig`), checked as it is read, and the
names of the scores the gate can sort synthetic images by.

Kept apart from the stage (``entromix.scoring.out_of_fold``) so that what a valid ``score``
section is can be read, and a configuration built, without the scorer's machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from entromix.common.device import DeviceName
from entromix.common.errors import ParamsError
from entromix.modeling.fit import FitSettings, Optimizer
from entromix.modeling.models import check_model_and_size
from entromix.scoring.feature_space import FEATURE_SCORES

#: ``score.synthetic_score``: the score the gate sorts synthetic images by. ``ensemble`` is the
#: reference JSD of the fold models' mean softmax; ``aum`` needs one more model; the rest come
#: from the fold models' features (``entromix.scoring.feature_space``).
SYNTHETIC_SCORES = ("ensemble", "aum", *FEATURE_SCORES, "rank_mean")
#: what ``score.rank_mean_of`` may list (``aum`` is not computed unless it is the gate's score)
RANKABLE_SCORES = ("ensemble", *FEATURE_SCORES)


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
        check_model_and_size("score", self.model, self.image_size)
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
