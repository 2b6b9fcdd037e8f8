"""Area under the margin (Pleiss et al., 2020): a training-dynamics score for wrong labels.

Train one network on the real training images *and* the synthetic pool, with their labels, and
record for every image at every step it is seen (augmented, in training mode) its margin

    margin = z_y - max_{j != y} z_j          (the logit of its label minus the largest other)

``AUM`` is the mean margin over training. An image whose label agrees with the rest of the data
is learned early and keeps a large margin; an image with a wrong label (a benign cell called
malignant) fights the images that look like it and keeps a small or negative margin until the
network memorises it, late. The score stage turns it into a probability-like value for the gate,
``p_true = sigmoid(AUM)`` (for two classes exactly the softmax probability of the label at the
mean margin), and from it the JSD in bits, so ``tau`` keeps its meaning as a ``p_true`` threshold.

Unlike the out-of-fold softmax, AUM deliberately scores images the network trains on: that is
how it works, and why it sees the pool as a whole (a hallucinated image is judged against the
real and synthetic images that look like it). Real images keep their out-of-fold scores.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from entromix.modeling.fit import EpochStats, FitSettings, fit_classifier


class MarginRecorder:
    """Accumulates each image's margin over the batches it appears in (``fit_classifier``'s ``on_batch``)."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels.cpu()
        self.total = torch.zeros(len(labels), dtype=torch.float64)
        self.count = torch.zeros(len(labels), dtype=torch.float64)

    def __call__(self, idx: torch.Tensor, logits: torch.Tensor) -> None:
        idx = idx.cpu()
        logits = logits.float().cpu()
        y = self.labels[idx]
        own = logits.gather(1, y.view(-1, 1)).squeeze(1)
        others = logits.clone()
        others.scatter_(1, y.view(-1, 1), float("-inf"))
        margin = own - others.max(dim=1).values  # (B,)
        self.total.index_add_(0, idx, margin.double())
        self.count.index_add_(0, idx, torch.ones_like(margin, dtype=torch.float64))

    def aum(self) -> np.ndarray:
        """Mean margin per image (N,); NaN for an image never seen (cannot happen with full epochs)."""
        return (self.total / self.count.clamp_min(1)).numpy()


def area_under_margin(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: FitSettings,
    device: torch.device,
    seed: int,
    channels_last: bool,
    on_epoch: Callable[[int, EpochStats], None] | None = None,
) -> np.ndarray:
    """Train ``model`` on every image and return each image's AUM (N,), in logits."""
    recorder = MarginRecorder(labels)
    fit_classifier(
        model,
        images,
        labels,
        settings,
        device,
        seed=seed,
        channels_last=channels_last,
        on_batch=recorder,
        on_epoch=on_epoch,
    )
    return recorder.aum()


def aum_p_true(aum: np.ndarray) -> np.ndarray:
    """``sigmoid(AUM)``: the gate's ``p_true`` for an AUM (monotone; 0.5 at a zero margin)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(aum, dtype=np.float64)))
