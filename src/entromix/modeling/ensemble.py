"""Several classifiers trained side by side from different initialisations, used as one.

``train.ensemble: K`` trains ``K`` members of the same architecture in one run: every step they
see the same batch (each with its own augmentation draw) and each is trained on its own loss;
nothing couples them but the batches. As one module:

* in training mode ``forward`` returns every member's logits, ``(K, B, C)``, so that each member's
  loss trains that member (a loss on the averaged output would make them co-adapt);
* in eval mode it returns ``log(mean_k softmax(logits_k))``, ``(B, C)``: logits whose softmax is
  the members' mean probability, so every caller (validation, evaluate, predict, export, Grad-CAM)
  treats the ensemble as one classifier.

Why: on a few hundred images a from-scratch network's test ROC-AUC depends on its seed by more
than most effects worth measuring (sd 0.02 at leukemia_dev's 10 malignant images); the members'
errors are close to independent there, so the mean of ``K`` members moves by about ``1/sqrt(K)``
of that and ranks better on average (RESULTS.md section 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


class Ensemble(nn.Module):
    """``K`` members used as one classifier (see module doc); ``members[k]`` is a plain network."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError("an Ensemble needs two or more members")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``x``: (B, 3, S, S) for every member, or a list of K such batches, one per member
        (training, each with its own augmentation). Training: (K, B, C) logits; eval: (B, C)."""
        inputs = x if isinstance(x, (list, tuple)) else [x] * len(self.members)
        if len(inputs) != len(self.members):
            raise ValueError(f"{len(inputs)} batches for an ensemble of {len(self.members)} members")
        logits = torch.stack([member(batch) for member, batch in zip(self.members, inputs)])
        if self.training:
            return logits
        return mean_probability_logits(logits, len(self.members))


def mean_probability_logits(logits: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """(K, B, C) member logits -> (B, C) ``log(mean_k softmax)``: softmax of the result is the mean
    probability. ``k``: K as a Python int (a constant when the module is traced for export)."""
    k = int(logits.shape[0]) if k is None else k
    return torch.logsumexp(torch.log_softmax(logits.float(), dim=-1), dim=0) - math.log(k)


def build_ensemble(build: Callable[[], nn.Module], size: int) -> nn.Module:
    """``size`` networks from ``build()`` (called in turn, so each draws its own initial weights from
    torch's generator); one network itself when ``size`` is 1."""
    if size < 1:
        raise ValueError(f"an ensemble has at least one member, got {size}")
    return build() if size == 1 else Ensemble([build() for _ in range(size)])


def members(model: nn.Module) -> list[nn.Module]:
    """The networks inside ``model``: an ensemble's members, or ``[model]``."""
    return list(model.members) if isinstance(model, Ensemble) else [model]
