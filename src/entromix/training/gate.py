"""The curriculum's gate, written once: which synthetic images a threshold ``tau`` admits, and with what weight.

The sampler (which images may enter a batch) and EntroMixLoss (how much each counts) both ask
here, so they cannot disagree on an image whose score lies exactly at ``tau``. Scores are
compared in float32, the precision the training table holds them in: ``jsd <= float32(tau)``.

* hard gate (the reference): weight 1 when ``jsd <= tau``, else 0;
* soft gate: weight ``sigmoid((tau - jsd) / T)``; the sampler lets in images up to
  :data:`SOFT_GATE_MARGIN_TEMPERATURES` temperatures above ``tau`` (weight >= sigmoid(-4) = 0.018);
* ``tau`` None (warmup): no synthetic image. Real images always weigh 1.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Gate = Literal["hard", "soft"]

# soft gate: synthetic images within this many temperatures above tau still enter batches
SOFT_GATE_MARGIN_TEMPERATURES = 4.0


def gate_margin(gate: Gate, temperature: float) -> float:
    """Bits above ``tau`` within which a synthetic image may still enter a batch (0 for the hard gate)."""
    return SOFT_GATE_MARGIN_TEMPERATURES * temperature if gate == "soft" else 0.0


def within(jsd: torch.Tensor | np.ndarray, limit: float) -> torch.Tensor:
    """``jsd <= limit`` per image, compared in float32: the one place the gate's test is written."""
    scores = torch.as_tensor(jsd).float()
    return scores <= torch.tensor(limit, dtype=torch.float32, device=scores.device)


def gate_weights(
    is_syn: torch.Tensor, jsd: torch.Tensor, tau: float | None, gate: Gate = "hard", temperature: float = 0.02
) -> torch.Tensor:
    """``g_i`` in [0, 1] per image (B,): 1 for real images, the gate's weight for synthetic ones."""
    real = ~is_syn.bool()
    if tau is None:
        syn_weight = torch.zeros_like(jsd, dtype=torch.float32)
    elif gate == "hard":
        syn_weight = within(jsd, tau).float()
    else:
        syn_weight = torch.sigmoid((tau - jsd.float()) / temperature)
    return torch.where(real, torch.ones_like(syn_weight), syn_weight)
