"""One optimiser step of :func:`entromix.modeling.fit.train_epoch`, in parts: the forward pass and
its loss, the training recall's counts, and the step itself. Apart from ``fit`` only to keep that
module short; ``train_epoch`` is the one caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from entromix.common.device import autocast
from entromix.modeling.ensemble import mean_probability_logits
from entromix.modeling.weight_average import WeightAverage

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B, C), row indices (B,) on the device) -> loss


def forward_loss(
    model: nn.Module,
    x: torch.Tensor | list[torch.Tensor],
    idx: torch.Tensor,
    loss_fn: LossFn,
    n_members: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch loss, the logits (B, C)) of one forward pass under autocast: an ensemble's
    members each get their own loss (K batches of the same rows) and the logits are their mean
    probability's."""
    with autocast(device):
        logits = model(x).float()
        if logits.dim() == 3:  # (K, B, C): an ensemble's members, each trained on its own loss
            loss = loss_fn(logits.flatten(0, 1), idx.repeat(n_members))
            logits = mean_probability_logits(logits)
        else:
            loss = loss_fn(logits, idx)
    return loss, logits


def positive_counts(
    logits: torch.Tensor, labels: torch.Tensor, positive: Sequence[int], is_positive: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the batch's images of a positive label, of them predicted (argmax) as a positive label) as
    one int64 (2,) tensor on the device, so that the epoch adds them up without a sync per step;
    and the bool (K,) mask of the positive labels (made from the logits' width on the first call)."""
    if is_positive is None:
        is_positive = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        is_positive[list(positive)] = True
    actual = is_positive[labels]
    return torch.stack([actual.sum(), (actual & is_positive[logits.argmax(1)]).sum()]), is_positive


def optimiser_step(
    loss: torch.Tensor,
    optim: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    average: WeightAverage | None,
) -> None:
    """One optimiser step on ``loss``, the per-step LR schedule (warmup, then cosine) and the
    weights' moving average."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    sched.step()
    if average is not None:
        average.update()
