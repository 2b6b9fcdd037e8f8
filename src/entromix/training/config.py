"""The ``train`` section of params.yaml: :class:`TrainConfig`, its checks, and the names of its choices."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from entromix.common.device import DeviceName
from entromix.common.errors import ParamsError
from entromix.common.labels import LabelSpace
from entromix.modeling.fit import Optimizer
from entromix.modeling.models import check_model_and_size

SelectMetric = Literal["val_auc", "val_balanced_accuracy", "val_sensitivity", "val_accuracy", "val_loss"]

ClassWeights = Literal["real", "mix", "none"] | list[float]  # or one weight per label (the focal loss's alpha)

#: two labels, label 1 malignant: the default label space
BINARY = LabelSpace(("benign", "malignant"), (1,))


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of params.yaml."""

    model: str  # resnet18 | resnet50 | vit_b_16 | swin_t (torchvision, a K-class head)
    pretrained_weights: str | None  # local state_dict file; None = from scratch (never downloads)
    image_size: int  # px the model sees (the prepared array is resized on the fly when different)
    ensemble: int  # members trained side by side from their own initial weights, used as one (1 = one network)
    epochs: int
    min_steps: int  # optimiser steps at least over the run: small data sets get longer epochs
    batch_size: int
    optimizer: Optimizer  # sgd (reference: momentum 0.9) | adamw
    lr: float
    lr_warmup_epochs: float  # linear LR warmup, then cosine to 0 (per step)
    weight_decay: float
    label_smoothing: float  # cross-entropy label smoothing in [0, 1)
    class_weights: ClassWeights  # counts behind w_c: real training images | the epoch's mix | none | [w_0, ...]
    loss: Literal["ce", "focal"]  # per-image loss inside EntroMixLoss's gate: cross-entropy | focal
    focal_gamma: float  # focal loss: (1 - p_true)^gamma times the cross-entropy; 0 = cross-entropy
    augment: bool  # the reference's flips, rotation, affine and colour jitter, on the device
    rotate90: bool  # augment also with random quarter turns
    color_jitter: float  # strength j of brightness/contrast/saturation (1 +- j) and hue (+- j/4 turn)
    ema_half_life: float  # epochs: validate and keep the moving average of the weights (0 = the last step's weights)
    select_metric: SelectMetric  # best checkpoint by this validation metric (val_loss: lowest)
    seed: int
    device: DeviceName
    resume: bool  # continue an interrupted run from models/train/checkpoints/resume.pt (same settings and data)
    early_stopping_patience: int | None  # stop after this many epochs without a better select_metric; None = off
    nproc_per_node: int  # processes per node (torchrun + DistributedDataParallel when > 1)
    nnodes: int  # nodes; > 1 needs rdzv_endpoint reachable from every node
    rdzv_endpoint: str  # host:port of the c10d rendezvous for several nodes (unused on one node)

    def __post_init__(self) -> None:
        check_model_and_size("train", self.model, self.image_size)
        if self.epochs < 1:
            raise ParamsError(f"train.epochs must be >= 1, got {self.epochs}.")
        if not 1 <= self.ensemble <= 32:
            raise ParamsError(f"train.ensemble must be between 1 (one network) and 32 members, got {self.ensemble}.")
        if self.batch_size < 2:
            raise ParamsError(
                f"train.batch_size must be >= 2 (BatchNorm needs two images per batch), got {self.batch_size}."
            )
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.color_jitter < 1:
            raise ParamsError("train.lr must be > 0, train.weight_decay >= 0 and train.color_jitter in [0, 1).")
        if self.min_steps < 0 or self.lr_warmup_epochs < 0 or not 0 <= self.label_smoothing < 1:
            raise ParamsError(
                "train.min_steps and train.lr_warmup_epochs must be >= 0 and train.label_smoothing in [0, 1)."
            )
        if self.ema_half_life < 0:
            raise ParamsError(f"train.ema_half_life must be >= 0 epochs (0 = off), got {self.ema_half_life}.")
        if isinstance(self.class_weights, list):
            if not self.class_weights or min(self.class_weights) <= 0:
                raise ParamsError(
                    f"train.class_weights is {self.class_weights}; a list needs one weight > 0 per label."
                )
        elif self.class_weights not in ("real", "mix", "none"):
            raise ParamsError(
                f"train.class_weights is {self.class_weights!r}; choose real, mix, none or a list of one weight "
                "per label."
            )
        if self.focal_gamma < 0:
            raise ParamsError(f"train.focal_gamma must be >= 0 (0 = cross-entropy), got {self.focal_gamma}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ParamsError(
                f"train.early_stopping_patience must be null (off) or >= 1 epochs, got {self.early_stopping_patience}."
            )
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ParamsError("train.nproc_per_node and train.nnodes must be >= 1 (1 and 1: one process).")
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint):
            raise ParamsError(
                f"train.nnodes is {self.nnodes}, so train.rdzv_endpoint must be host:port of a node every node "
                f"can reach (for example node0.cluster:29400), got {self.rdzv_endpoint!r}."
            )
        processes = self.nproc_per_node * self.nnodes
        if self.batch_size < 2 * processes:
            raise ParamsError(
                f"train.batch_size {self.batch_size} is the global batch, shared by {processes} processes: each "
                "needs at least 2 images (BatchNorm). Raise train.batch_size or lower train.nproc_per_node."
            )
