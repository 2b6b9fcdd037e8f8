"""Plain supervised training and batched inference on images held as one uint8 tensor.

The reference classifier of the score stage trains with :func:`fit_classifier`; every stage
predicts with :func:`predict_logits`. Images stay uint8 (N, H, W, 3) on the device (when they
fit) and are turned into normalised float batches per step (``entromix.augment``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import torch
from torch import nn

from entromix.augment import augment, normalize, to_float
from entromix.device import autocast, generator
from entromix.models import CNN_MODELS

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


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """``w_c = n_total / (n_classes * n_c)``: each class contributes equally to a weighted loss.

    The reference design's constants (803/1569) do not follow from its counts (120 benign, 40
    malignant, which give 0.667 and 2.0); these are computed from the actual training labels.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        missing = [c for c in range(num_classes) if counts[c] == 0]
        raise ValueError(f"no training images of class(es) {missing}")
    return torch.tensor(counts.sum() / (num_classes * counts), dtype=torch.float32)


def make_optimizer(model: nn.Module, name: Optimizer, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)


def prepare_batch(
    batch_u8: torch.Tensor, size: int, gen: torch.Generator | None, color_jitter: float, channels_last: bool
) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float (B, 3, size, size), augmented when ``gen`` is given."""
    x = to_float(batch_u8, size)
    if gen is not None:
        x = augment(x, gen, color_jitter=color_jitter)
    x = normalize(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def uses_channels_last(model_name: str, device: torch.device) -> bool:
    """channels_last for CNNs on every device: tensor cores on CUDA, and on CPU oneDNN's
    convolutions run resnet18 at 64 px about 25% faster in inference and 9% in training
    (measured on the 2-core development machine; see BENCHMARKS.md)."""
    return model_name in CNN_MODELS


def fit_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: FitSettings,
    device: torch.device,
    seed: int,
    channels_last: bool = False,
    on_epoch: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` with class-weighted cross-entropy, cosine LR, seeded batches and augmentation.

    Args:
        images: uint8 (N, H, W, 3) on ``device`` (or on CPU; batches are moved per step).
        labels: int64 (N,) on the same device as ``images``.
        on_epoch: called with (epoch, mean training loss) after each epoch.
    """
    num_classes = model_num_classes(model)
    criterion = nn.CrossEntropyLoss(weight=class_weights(labels.cpu().numpy(), num_classes).to(device))
    optim = make_optimizer(model, settings.optimizer, settings.lr, settings.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, settings.epochs))
    order_gen = torch.Generator().manual_seed(seed)  # batch order: CPU, identical on every device
    aug_gen = generator(device, seed + 1) if settings.augment else None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = len(labels)
    for epoch in range(settings.epochs):
        model.train()
        order = torch.randperm(n, generator=order_gen)
        total, seen = 0.0, 0
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on a single image
                continue
            idx_dev = idx.to(images.device)
            x = prepare_batch(images[idx_dev].to(device, non_blocking=True), settings.image_size, aug_gen,
                              settings.color_jitter, channels_last)  # fmt: skip
            y = labels[idx_dev].to(device, non_blocking=True)
            with autocast(device):
                loss = criterion(model(x).float(), y)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        sched.step()
        if on_epoch is not None:
            on_epoch(epoch, total / max(1, seen))
    return model


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor | np.ndarray, device: torch.device, image_size: int,
    batch_size: int = 256, channels_last: bool = False,
) -> np.ndarray:
    """float32 logits (N, C) for uint8 images (N, H, W, 3), in batches, eval mode."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        if isinstance(chunk, np.ndarray):
            chunk = torch.from_numpy(np.ascontiguousarray(chunk))
        x = prepare_batch(chunk.to(device, non_blocking=True), image_size, None, 0.0, channels_last)
        with autocast(device):
            out.append(model(x).float().cpu())
    if not out:
        return np.zeros((0, model_num_classes(model)), dtype=np.float32)
    return torch.cat(out).numpy()


def model_num_classes(model: nn.Module) -> int:
    """The output size of a torchvision classifier's final linear layer."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features
