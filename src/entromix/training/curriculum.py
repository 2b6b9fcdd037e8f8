"""The curriculum: when synthetic images may enter training, as a JSD threshold per epoch.

``tau(t)`` for epoch ``t`` (counted from 0) of ``E`` epochs with ``W`` warmup epochs:

* ``t < W``: ``None``, real images only (warmup);
* ``t >= W``: ``tau = jsd_start + pace(progress) * (jsd_end - jsd_start)`` with
  ``progress = clamp((t - W) / (E - 1 - W), 0, 1)`` and ``pace(p) = p`` (``linear``, the reference
  design) or ``sqrt(p)`` (``sqrt``, the competence-based curriculum of Platanios et al. 2019: the
  gate opens fast at first, then slowly).

The last epoch (``t = E - 1``) trains at ``jsd_end``. The reference divides by ``E - W`` and so
never quite reaches ``jsd_end`` (0.986 instead of 1.0 at its last epoch, 90 epochs, warmup 20);
both agree at the start (``tau(20) = 0.03``).

``curriculum.strategy`` chooses what the gate does (the comparison of issue 7, ``RESULTS.md``):

* ``curriculum`` (default, the reference design): the schedule above.
* ``real_only``: no synthetic image ever (``tau`` is ``None`` every epoch).
* ``naive``: every synthetic image from epoch 0, no warmup and no gate (``tau`` is 1 bit, the
  largest JSD there is, and the gate is hard).
* ``random``: the control that separates ordering from training-set size. The schedule is the
  curriculum's, but the gate sees the synthetic JSD scores shuffled among the synthetic images
  (seeded), so every epoch admits exactly as many images as ``curriculum`` would, chosen without
  regard to their score (``entromix.training.loop``).
* ``oracle_gate``: a DIAGNOSTIC, never a default: after warmup the gate admits exactly the
  synthetic images whose known tier (``ingest.tiers_csv``) is ``good``, and no other. It needs
  the tiers file, which real projects do not have; it measures the ceiling a perfect scorer would
  reach, against which the real gate is judged (``RESULTS.md``).

``pseudo_labels: true`` (strategies ``curriculum`` and ``real_only``) is self-training: unlabelled
real images get the current model's labels from the end of warmup and enter through the same
gate (``entromix.training.pseudo_labels``). They follow the curriculum's schedule above in both
strategies; with ``real_only`` they are the only gated images (no synthetic image enters).

``rescore_every = k > 0`` (``curriculum`` only) replaces the synthetic scores with the current
model's every ``k`` epochs from the end of warmup (``entromix.training.epoch``).

The JSD is in bits and, with a one-hot target, a monotone function of the scorer's
probability for the labelled class (``entromix.scoring.jsd``): ``tau`` admits exactly the synthetic
images with ``p_true >= p_true_at_jsd(tau)``. ``tau = 0.311`` bits is ``p_true = 0.5``; a ramp
beyond it admits images the scorer assigns to another class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from entromix.common.errors import ParamsError
from entromix.scoring.jsd import p_true_at_jsd
from entromix.training.gate import Gate

Pacing = Literal["linear", "sqrt"]
Strategy = Literal["curriculum", "real_only", "naive", "random", "oracle_gate"]
STRATEGIES = ("curriculum", "real_only", "naive", "random", "oracle_gate")
SyntheticSlots = Literal["replace", "add"]


@dataclass(frozen=True)
class CurriculumConfig:
    """The ``curriculum`` section of params.yaml."""

    warmup_epochs: int  # W: real images only for epochs 0..W-1
    jsd_start: float  # bits: tau at the first epoch after warmup (0.03 = only near-certain synthetic)
    jsd_end: float  # bits: tau at the last epoch (1.0 = every synthetic image, as the reference)
    pacing: Pacing  # linear (reference) | sqrt (opens faster early)
    gate: Gate  # hard: weight 1 if jsd <= tau else 0 | soft: sigmoid((tau - jsd) / gate_temperature)
    gate_temperature: float  # bits; soft gate only: width of the sigmoid around tau
    max_synthetic_fraction: float  # at most this share of a batch is synthetic (the rest stays real)
    synthetic_slots: SyntheticSlots  # replace: synthetic images take real slots | add: on top of B real
    strategy: Strategy  # curriculum | real_only | naive | random | oracle_gate (diagnostic; see module doc)
    rescore_every: int  # k > 0: re-score the synthetic pool with the current model every k epochs
    pseudo_labels: bool  # self-training: unlabelled real images labelled by the model, through the gate
    pseudo_threshold: float  # confidence the surest class needs; the others' thresholds scale with their mean
    pseudo_every: int  # relabel the unlabelled images every k epochs from the end of warmup

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ParamsError(f"curriculum.strategy is {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        if self.synthetic_slots not in ("replace", "add"):
            raise ParamsError(f"curriculum.synthetic_slots is {self.synthetic_slots!r}; choose replace or add.")
        if self.rescore_every < 0:
            raise ParamsError(f"curriculum.rescore_every must be >= 0 (0 = never), got {self.rescore_every}.")
        if self.rescore_every > 0 and self.strategy != "curriculum":
            raise ParamsError(
                f"curriculum.rescore_every is {self.rescore_every} but curriculum.strategy is {self.strategy!r}; "
                "re-scoring only applies to the curriculum strategy. Set rescore_every: 0 or strategy: curriculum."
            )
        if self.pseudo_labels and self.strategy not in ("curriculum", "real_only"):
            raise ParamsError(
                f"curriculum.pseudo_labels is true but curriculum.strategy is {self.strategy!r}; self-training "
                "follows the curriculum's schedule, with strategy curriculum (beside the synthetic images) or "
                "real_only (instead of them). Set one of those, or pseudo_labels: false."
            )
        if not 0.0 < self.pseudo_threshold <= 1.0 or self.pseudo_every < 1:
            raise ParamsError(
                f"curriculum.pseudo_threshold must be in (0, 1] and curriculum.pseudo_every >= 1 epochs, got "
                f"{self.pseudo_threshold} and {self.pseudo_every}."
            )
        if self.warmup_epochs < 0:
            raise ParamsError(f"curriculum.warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        for key in ("jsd_start", "jsd_end"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ParamsError(f"curriculum.{key} must be in [0, 1] bits, got {getattr(self, key)}.")
        if self.jsd_start > self.jsd_end:
            raise ParamsError(
                f"curriculum.jsd_start ({self.jsd_start}) is above curriculum.jsd_end ({self.jsd_end}); "
                "the gate only opens over time. Swap them or lower jsd_start."
            )
        if self.gate_temperature <= 0:
            raise ParamsError(f"curriculum.gate_temperature must be > 0 bits, got {self.gate_temperature}.")
        if not 0.0 <= self.max_synthetic_fraction < 1.0:
            raise ParamsError(
                f"curriculum.max_synthetic_fraction must be in [0, 1) (every batch keeps some real images), "
                f"got {self.max_synthetic_fraction}."
            )

    @property
    def loss_gate(self) -> Gate:
        """The gate EntroMixLoss applies: ``naive`` has none (hard at 1 bit admits every image), and
        ``oracle_gate`` admits by tier, all or nothing (hard)."""
        return "hard" if self.strategy in ("naive", "oracle_gate") else self.gate

    def rescores_at(self, epoch: int) -> bool:
        """Whether the synthetic pool is re-scored with the current model before ``epoch``."""
        k = self.rescore_every
        return k > 0 and epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % k == 0

    def pseudo_labels_at(self, epoch: int) -> bool:
        """Whether the unlabelled images are (re)labelled with the current model before ``epoch``."""
        k = self.pseudo_every
        return self.pseudo_labels and epoch >= self.warmup_epochs and (epoch - self.warmup_epochs) % k == 0

    def check_epochs(self, epochs: int) -> None:
        """The schedule needs at least one epoch after warmup to admit anything."""
        gated = self.strategy in ("curriculum", "random", "oracle_gate") or self.pseudo_labels
        if gated and self.warmup_epochs >= epochs:
            raise ParamsError(
                f"curriculum.warmup_epochs ({self.warmup_epochs}) must be below train.epochs ({epochs}), "
                "or no synthetic image is ever admitted. Lower warmup_epochs or raise train.epochs."
            )


def threshold(epoch: int, epochs: int, config: CurriculumConfig) -> float | None:
    """``tau(epoch)`` in bits, or ``None`` during warmup (no synthetic images at all)."""
    if config.strategy == "real_only" and not config.pseudo_labels:
        return None
    if config.strategy == "naive":
        return 1.0
    if epoch < config.warmup_epochs:
        return None
    span = epochs - 1 - config.warmup_epochs
    progress = 1.0 if span <= 0 else min(1.0, max(0.0, (epoch - config.warmup_epochs) / span))
    if config.pacing == "sqrt":
        progress = math.sqrt(progress)
    return config.jsd_start + progress * (config.jsd_end - config.jsd_start)


def schedule(epochs: int, config: CurriculumConfig) -> list[float | None]:
    return [threshold(t, epochs, config) for t in range(epochs)]


def p_true_equivalent(tau: float | None) -> float | None:
    """The reference-classifier probability of the labelled class that the hard gate requires."""
    return None if tau is None else p_true_at_jsd(tau)
