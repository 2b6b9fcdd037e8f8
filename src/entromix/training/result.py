"""What a training run returns: :class:`TrainResult` (the history, the best and last weights, the pool's end state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainResult:
    """What :func:`~entromix.training.loop.train_curriculum` returns."""

    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]  # CPU state_dict of the best epoch
    last_state: dict[str, torch.Tensor]
    best_val: dict[str, Any] = field(default_factory=dict)
    gate_jsd: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n_syn,) scores the gate saw last
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n_syn,) placed in a batch in any epoch
    final_eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n_syn,) eligible at the last epoch
    pseudo: dict | None = None  # self-training: the unlabelled pool at the end (pseudo_labels.pseudo_label_summary)
