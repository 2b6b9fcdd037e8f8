"""An exponential moving average of a model's weights: the model the stages evaluate and keep.

After every optimiser step ``s`` the averaged copy moves towards the trained weights::

    w_ema(0) = w(0)
    w_ema(s) = d * w_ema(s - 1) + (1 - d) * w(s),   d = 0.5 ** (1 / h)

with ``h`` the half-life in optimiser steps (``ema_half_life`` epochs times the steps per epoch):
a step's weights count half as much ``h`` steps later. BatchNorm's running statistics are averaged
the same way (``use_buffers``, as timm's ModelEmaV3), so the averaged model needs no pass over the
data to be used. This is ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``.

Why: on a few hundred images a from-scratch network's last weights are one draw from the noise of
its last steps; which draw depends on the seed, the thread count and the CPU's rounding, and it
moves the test ROC-AUC and, more, the calibrated probabilities a tuned threshold reads. The
average over the last few epochs is a property of the run rather than of its last step (RESULTS.md
section 8 measures it on leukemia_dev).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(half_life_steps: float) -> float:
    """The per-step decay ``d`` whose weights halve every ``half_life_steps`` steps (> 0)."""
    if half_life_steps <= 0:
        raise ValueError(f"the half-life must be > 0 steps, got {half_life_steps}")
    return 0.5 ** (1.0 / half_life_steps)


class WeightAverage:
    """The exponential moving average of ``model``'s parameters and buffers (see module doc).

    ``update()`` after every optimiser step reads ``model``'s current weights (pass the network
    itself, not a DistributedDataParallel wrapper); ``module`` is the averaged network (a copy of
    ``model``'s architecture on its device). With ``half_life_steps`` None it averages nothing:
    ``module`` is ``model`` itself, so callers need no second code path.
    """

    def __init__(self, model: nn.Module, half_life_steps: float | None) -> None:
        self._model = model
        self._averaged: AveragedModel | None = None
        if half_life_steps is not None:
            self._averaged = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay(half_life_steps)), use_buffers=True
            )
            self._averaged.update_parameters(model)  # w_ema(0) = w(0)

    @property
    def enabled(self) -> bool:
        return self._averaged is not None

    @property
    def module(self) -> nn.Module:
        """The network to evaluate: the averaged copy, or the trained model when averaging is off."""
        return self._model if self._averaged is None else self._averaged.module

    def update(self) -> None:
        if self._averaged is not None:
            self._averaged.update_parameters(self._model)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged copy's state (its weights and the count of updates; live tensors, copy them
        before training on) for a resume state; empty when off."""
        return {} if self._averaged is None else self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self._averaged is not None and state:
            self._averaged.load_state_dict(state)


def half_life_steps(half_life_epochs: float, steps_per_epoch: int) -> float | None:
    """``ema_half_life`` (epochs; 0 = off) in optimiser steps, or None when averaging is off."""
    return None if half_life_epochs <= 0 else half_life_epochs * max(1, steps_per_epoch)
