"""The learning-rate schedule shared by the score stage's fold models and the train stage.

Per optimiser step ``s`` of ``S`` (counted from 0), with ``W`` warmup steps and base rate ``lr``::

    lr(s) = lr * (s + 1) / W                                  s < W   (linear warmup)
    lr(s) = lr * 0.5 * (1 + cos(pi * (s - W) / (S - W)))       s >= W  (cosine to 0)

A short warmup keeps AdamW's first steps (whose second-moment estimates are still noisy) and a
freshly initialised BatchNorm from throwing a from-scratch network off; the cosine tail is what
the reference design used, now per step rather than per epoch, so that small data sets with few
steps per epoch still get a smooth decay. ``W = 0`` is plain cosine annealing.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The multiplier of the base learning rate at optimiser step ``step`` (see module doc)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per optimiser step; its state_dict resumes exactly."""
    if warmup_steps >= total_steps:
        warmup_steps = max(0, total_steps - 1)  # always leave one step of decay
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, total_steps, warmup_steps)
    )
