"""Plain supervised training and batched inference on images held as one uint8 tensor.

The scorer (score stage) trains with :func:`fit_classifier`, the curriculum (train stage) with its
own batches and loss; both run :func:`train_epoch`. Every stage predicts with :func:`predict_logits`.
Images stay uint8 (N, H, W, 3) on the device (when they fit) and are turned into normalised float
batches per step (``entromix.modeling.augment``).

The amount of training is ``epochs`` passes, each at least ``ceil(min_steps / epochs)`` optimiser
steps (:func:`batches_per_epoch`): with 107 images and batch 32 a pass is 4 steps, so 30 epochs
would be 120 steps, too few for a network trained from scratch; ``min_steps`` lengthens each
epoch (the images are drawn again in a fresh order) without changing what an epoch means for
the schedules. The learning rate warms up linearly and then follows a cosine, per step
(``entromix.modeling.lr_schedule``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from entromix.common.device import autocast, generator
from entromix.common.distributed import unwrap
from entromix.modeling.augment import augment, normalize, to_float
from entromix.modeling.ensemble import members
from entromix.modeling.lr_schedule import warmup_cosine
from entromix.modeling.models import CNN_MODELS
from entromix.modeling.train_step import LossFn, forward_loss, optimiser_step, positive_counts
from entromix.modeling.weight_average import WeightAverage, half_life_steps

Optimizer = Literal["adamw", "sgd"]


@dataclass(frozen=True)
class FitSettings:
    epochs: int
    batch_size: int
    optimizer: Optimizer
    lr: float
    weight_decay: float
    augment: bool
    color_jitter: float
    image_size: int
    min_steps: int = 0  # optimiser steps at least, over all epochs (epochs are lengthened)
    lr_warmup_epochs: float = 0.0  # linear LR warmup, in epochs, then cosine to 0 (per step)
    label_smoothing: float = 0.0
    rotate90: bool = False  # random quarter turns on top of the flips (augment only)
    ema_half_life: float = 0.0  # epochs: the returned model is the weights' moving average (0 = the last weights)


def batches_per_epoch(natural: int, epochs: int, min_steps: int) -> int:
    """``max(natural, ceil(min_steps / epochs))``: one pass over the data, or longer when a small
    data set would otherwise get fewer than ``min_steps`` optimiser steps in ``epochs`` epochs."""
    return max(natural, math.ceil(min_steps / max(1, epochs)))


def epoch_order(n: int, num_rows: int, gen: torch.Generator) -> torch.Tensor:
    """``num_rows`` indices into ``range(n)``: consecutive seeded permutations, so every index
    appears ``floor`` or ``ceil`` of ``num_rows / n`` times."""
    passes = max(1, math.ceil(num_rows / n))
    return torch.cat([torch.randperm(n, generator=gen) for _ in range(passes)])[:num_rows]


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """``w_c = n_total / (n_classes * n_c)``: each class contributes equally to a weighted loss.

    The reference design's constants (803/1569) do not follow from its counts (120 benign, 40
    malignant, which give 0.667 and 2.0); these are computed from the actual training labels.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = [c for c in range(num_classes) if counts[c] == 0]
        raise ValueError(f"no training images of class(es) {missing}")
    return weights_from_counts(counts)


def weights_from_counts(counts: np.ndarray) -> torch.Tensor:
    """``w_c = n_total / (n_classes * n_c)`` for (possibly fractional) counts ``n_c > 0`` (C,)."""
    counts = np.asarray(counts, dtype=np.float64)
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def make_optimizer(model: nn.Module, name: Optimizer, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def prepare_batch(
    batch_u8: torch.Tensor,
    size: int,
    gen: torch.Generator | None,
    color_jitter: float,
    channels_last: bool,
    rotate90: bool = False,
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, size, size), augmented when ``gen`` is given."""
    x = to_float(batch_u8, size)
    if gen is not None:
        x = augment(x, gen, color_jitter=color_jitter, rotate90=rotate90)
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight orientations of a square (B, C, H, W) batch: four quarter turns, each also mirrored."""
    turns = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return turns + [torch.flip(t, dims=(3,)) for t in turns]


def uses_channels_last(model_name: str, device: torch.device) -> bool:
    """channels_last for CNNs on every device: tensor cores on CUDA, and on CPU oneDNN's
    convolutions run resnet18 at 64 px about 25% faster in inference and 9% in training
    (measured on the 2-core development machine; see BENCHMARKS.md)."""
    return model_name in CNN_MODELS


@dataclass(frozen=True)
class BatchPrep:
    """How rows of the uint8 image array become a model's input batch (:func:`prepare_batch`)."""

    image_size: int
    color_jitter: float = 0.0
    rotate90: bool = False
    channels_last: bool = False
    augment_gen: torch.Generator | None = None  # None: no augmentation

    def __call__(self, batch_u8: torch.Tensor) -> torch.Tensor:
        return prepare_batch(
            batch_u8, self.image_size, self.augment_gen, self.color_jitter, self.channels_last, self.rotate90
        )


@dataclass(frozen=True)
class EpochStats:
    loss: float  # mean over the epoch's batches of the batch loss
    images: int  # images in the epoch's batches
    seconds: float  # wall time of the pass (the device synchronised at the end)
    lr: float = 0.0  # learning rate of the epoch's first step
    positives: int = 0  # images of a positive (malignant) class in the batches (with ``targets``)
    true_positives: int = 0  # of those, predicted (argmax) as a positive class in the training forward pass

    @property
    def recall_positive(self) -> float | None:
        """Training recall of the positive (malignant) classes over the epoch's (augmented,
        training-mode) forward passes; None without positive images (or without ``targets``)."""
        return self.true_positives / self.positives if self.positives else None

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_epoch(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    images: torch.Tensor,
    loss_fn: LossFn,
    optim: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    prep: BatchPrep,
    device: torch.device,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    targets: torch.Tensor | None = None,
    positive: Sequence[int] = (1,),
    average: WeightAverage | None = None,
) -> EpochStats:
    """One pass of optimiser steps, one per batch: the loop the scorer's folds and the curriculum share.

    Args:
        batches: CPU int64 row indices into ``images``, one tensor per batch, in order.
        images: uint8 (N, H, W, 3) on ``device`` or in (pinned) host memory.
        loss_fn: the batch loss from the logits and the batch's rows (moved to ``device``).
        on_batch: called with (CPU row indices (B,), detached logits (B, C)) after each forward
            pass: the training dynamics of each image (``entromix.scoring.aum``).
        targets: (N,) int64 labels of ``images`` on ``device``: with them the stats count the
            images of the ``positive`` classes and how many of them the forward pass predicted as
            one of those (the training recall of the malignant side, from the logits the step
            computes anyway). ``positive``: the positive (malignant) label indices.
        average: the moving average of the weights, updated after every optimiser step
            (``entromix.modeling.weight_average``).

    An ensemble (``entromix.modeling.ensemble``) gets one augmentation draw of the batch per member
    and is trained on the mean of its members' losses (``loss_fn`` sees the K member logits as K
    batches of the same rows); the stats read the members' mean probability.
    """
    model.train()
    start = time.perf_counter()
    lr = float(optim.param_groups[0]["lr"])
    loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
    counts = torch.zeros(2, dtype=torch.int64, device=device)  # positive images, of them predicted positive
    is_positive: torch.Tensor | None = None  # bool (K,) at the positive labels, once the logits give K
    n_batches = n_images = 0
    n_members = len(members(unwrap(model)))
    for idx in batches:
        idx_dev = idx.to(device)
        batch = images[idx.to(images.device)].to(device, non_blocking=True)  # (B, H, W, 3) uint8
        x = prep(batch) if n_members == 1 else [prep(batch) for _ in range(n_members)]  # (B, 3, S, S) each
        loss, logits = forward_loss(model, x, idx_dev, loss_fn, n_members, device)
        if targets is not None:
            batch_counts, is_positive = positive_counts(logits.detach(), targets[idx_dev], positive, is_positive)
            counts += batch_counts
        if on_batch is not None:
            on_batch(idx, logits.detach())
        optimiser_step(loss, optim, sched, average)
        loss_sum += loss.detach()
        n_batches += 1
        n_images += len(idx)
    mean = float(loss_sum) / max(1, n_batches)  # float() synchronises the device
    positives, true_positives = (int(c) for c in counts.cpu())
    return EpochStats(mean, n_images, time.perf_counter() - start, lr, positives, true_positives)


def fit_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: FitSettings,
    device: torch.device,
    seed: int,
    channels_last: bool = False,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
    positive: Sequence[int] = (1,),
) -> nn.Module:
    """Train ``model`` with class-weighted cross-entropy, warmup + cosine LR, seeded batches and augmentation.

    Returns the trained network: with ``settings.ema_half_life`` > 0 the moving average of its
    weights (``entromix.modeling.weight_average``), else ``model`` itself.

    Args:
        images: uint8 (N, H, W, 3) on ``device`` (or on CPU; batches are moved per step).
        labels: int64 (N,) on the same device as ``images``.
        on_batch: see :func:`train_epoch` (``entromix.scoring.aum`` records margins with it).
        on_epoch: called after each epoch with (epoch from 0, its :class:`EpochStats`): the score
            stage's progress lines and live log.
        positive: the positive (malignant) label indices, for the training recall in the stats.
    """
    num_classes = model_num_classes(model)
    criterion = nn.CrossEntropyLoss(
        weight=class_weights(labels.cpu().numpy(), num_classes).to(device), label_smoothing=settings.label_smoothing
    )
    optim = make_optimizer(model, settings.optimizer, settings.lr, settings.weight_decay)
    n = len(labels)
    natural = math.ceil(n / settings.batch_size)  # the last batch may be short
    num_batches = batches_per_epoch(natural, settings.epochs, settings.min_steps)
    sched = warmup_cosine(optim, settings.epochs * num_batches, round(settings.lr_warmup_epochs * num_batches))
    order_gen = torch.Generator().manual_seed(seed)  # batch order: CPU, identical on every device
    prep = BatchPrep(
        settings.image_size,
        settings.color_jitter,
        settings.rotate90,
        channels_last,
        generator(device, seed + 1) if settings.augment else None,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    average = WeightAverage(model, half_life_steps(settings.ema_half_life, num_batches))
    targets = labels.to(device)

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return criterion(logits, targets[idx])

    for epoch in range(settings.epochs):
        batches = _epoch_batches(n, natural, num_batches, settings.batch_size, order_gen)
        stats = train_epoch(
            model, batches, images, loss_fn, optim, sched, prep, device, on_batch, targets, positive, average
        )
        if on_epoch is not None:
            on_epoch(epoch, stats)
    return average.module


def _epoch_batches(
    n: int, natural: int, num_batches: int, batch_size: int, order_gen: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's batches of row indices into ``range(n)``, in order: a fresh permutation, or
    for a lengthened epoch (``num_batches`` > ``natural``) that many full batches, the images drawn
    again in fresh orders (:func:`epoch_order`). A last batch of one image is dropped: BatchNorm
    needs two."""
    if num_batches == natural:
        order = torch.randperm(n, generator=order_gen)
    else:
        order = epoch_order(n, num_batches * batch_size, order_gen)
    return [b for b in order.split(batch_size) if len(b) >= 2]


def predict_logits(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    device: torch.device,
    image_size: int,
    batch_size: int = 256,
    channels_last: bool = False,
    tta: bool = False,
) -> np.ndarray:
    """float32 logits (N, C) for uint8 images (N, H, W, 3), in batches, eval mode.

    ``tta``: the mean logits over the eight orientations of each image (:func:`dihedral_views`),
    8x the compute; a smear's class does not depend on its orientation, so this averages out
    the part of a prediction that does.
    """
    return _predict(model, images, device, image_size, batch_size, channels_last, tta, features=False)[0]


def predict_logits_and_features(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    device: torch.device,
    image_size: int,
    batch_size: int = 256,
    channels_last: bool = False,
    tta: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_logits` and, from the same forward passes, the penultimate features (N, D):
    the input of the classifier's final linear layer (ResNet: the pooled 512 / 2048 values; with
    ``tta`` the mean over the eight orientations)."""
    return _predict(model, images, device, image_size, batch_size, channels_last, tta, features=True)


@torch.no_grad()
def _predict(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    device: torch.device,
    image_size: int,
    batch_size: int,
    channels_last: bool,
    tta: bool,
    features: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    model.eval()
    head = _final_linear(model)
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach())) if features else None
    out, feats = [], []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            if isinstance(chunk, np.ndarray):
                chunk = torch.from_numpy(np.ascontiguousarray(chunk))
            x = prepare_batch(chunk.to(device, non_blocking=True), image_size, None, 0.0, channels_last)
            views = dihedral_views(x) if tta else [x]
            with autocast(device):
                inputs = [v.contiguous(memory_format=torch.channels_last) if channels_last else v for v in views]
                logits = torch.stack([model(v).float() for v in inputs]).mean(0)  # (B, C)
                out.append(logits.cpu())
            if features:
                feats.append(torch.stack([f.float().flatten(1) for f in captured]).mean(0).cpu())  # (B, D)
                captured.clear()
    finally:
        if hook is not None:
            hook.remove()
    if not out:
        empty = np.zeros((0, model_num_classes(model)), dtype=np.float32)
        return empty, (np.zeros((0, head.in_features), dtype=np.float32) if features else None)
    return torch.cat(out).numpy(), (torch.cat(feats).numpy() if features else None)


def _final_linear(model: nn.Module) -> nn.Linear:
    """The classifier's head: the last ``nn.Linear`` of a torchvision or timm classifier."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def model_num_classes(model: nn.Module) -> int:
    """The output size of a torchvision classifier's final linear layer."""
    return _final_linear(model).out_features
