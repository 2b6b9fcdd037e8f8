"""The class-balanced batch sampler: which training images form each batch of an epoch.

The training set is one table of rows: real training images first (rows ``0..n_real-1``), then
the synthetic pool. The sampler returns row numbers, never images, so the gate changes which rows
a batch may hold and nothing is rebuilt or decoded per epoch.

For an epoch with threshold ``tau`` (``None`` = warmup) and batch size ``B``:

1. ``nb = max(floor(n_real / B), min_batches)`` batches: one pass over the real images, as the
   reference design, or more when ``train.min_steps`` asks for more optimiser steps than a small
   data set gives. The epoch length does not depend on how many synthetic images are admitted.
2. Eligible synthetic images: ``jsd <= tau + margin`` (``margin`` is 0 for the hard gate). At most
   ``cap`` go into one batch; when more are eligible, a seeded random subset fills that capacity
   (the rest wait for a later epoch). They are spread evenly: batch ``b`` holds
   ``floor((b+1) S / nb) - floor(b S / nb)`` of the ``S`` placed, so counts differ by at most one.
   How they fit into a batch is ``synthetic_slots``:

   * ``replace`` (the reference): a batch holds ``B`` images, synthetic ones take real slots;
     ``cap = floor(max_synthetic_fraction * B)``;
   * ``add``: a batch holds ``B`` real images plus its synthetic ones, so admitting synthetic
     images never takes a real image out of training;
     ``cap = floor(max_synthetic_fraction * B / (1 - max_synthetic_fraction))`` keeps the same
     bound on the synthetic share of a batch.
3. The real slots (``R = nb * B - S`` with ``replace``, ``nb * B`` with ``add``) are filled per
   class: each class gets an epoch total by largest remainder on the real training class counts
   (so the real part keeps the real class ratio, for any number of classes), and its images are
   laid out evenly over the ``R`` slots, so every batch holds ``floor`` or ``ceil`` of its share
   of each class. Real images are drawn in consecutive seeded permutations: when ``R <= n_real``
   none appears twice in an epoch, and in a lengthened epoch each appears ``floor`` or ``ceil`` of
   its class's total over its class count times.

Every epoch draws from ``numpy.random.default_rng([seed, epoch])``: the batches of an epoch depend
only on the seed, the epoch and ``tau``, so a resumed run sees the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entromix.common.errors import DataError
from entromix.common.rounding import largest_remainder
from entromix.training.gate import within


@dataclass(frozen=True)
class EpochBatches:
    batches: list[np.ndarray]  # row numbers into the training table, one int64 array per batch
    eligible: int  # synthetic images with jsd <= tau (+ margin) this epoch
    placed: int  # synthetic images placed into this epoch's batches (<= eligible: batch capacity)


class CurriculumBatchSampler:
    """Batches of real rows at the real class ratio plus the eligible synthetic rows, spread evenly.

    Args:
        real_labels: (n_real,) int class of each real training row (rows ``0..n_real-1``).
        synthetic_jsd: (n_syn,) JSD in bits of each synthetic row (rows ``n_real..``).
        batch_size: ``B``.
        max_synthetic_fraction: cap on the synthetic share of a batch, in [0, 1).
        seed: base seed; epoch ``e`` uses ``default_rng([seed, e])``.
        min_batches: batches per epoch at least (``train.min_steps`` spread over the epochs).
        synthetic_slots: ``replace`` (synthetic images take real slots) or ``add`` (on top of ``B`` real).
    """

    def __init__(
        self,
        real_labels: np.ndarray,
        synthetic_jsd: np.ndarray,
        batch_size: int,
        max_synthetic_fraction: float,
        seed: int,
        min_batches: int = 0,
        synthetic_slots: str = "replace",
    ) -> None:
        self.real_labels = np.asarray(real_labels, dtype=np.int64)
        self.synthetic_jsd = np.asarray(synthetic_jsd, dtype=np.float32)
        self.n_real = len(self.real_labels)
        self.batch_size = batch_size
        self.seed = seed
        if self.n_real // batch_size < 1:
            raise DataError(
                f"train.batch_size is {batch_size} but there are only {self.n_real} real training images; "
                "an epoch needs at least one full batch. Lower train.batch_size."
            )
        self.num_batches = max(self.n_real // batch_size, min_batches)
        self.classes = np.unique(self.real_labels)
        self.class_counts = np.array([(self.real_labels == c).sum() for c in self.classes])
        self.synthetic_slots = synthetic_slots
        if synthetic_slots == "add":
            share = max_synthetic_fraction / (1.0 - max_synthetic_fraction)
            self.synthetic_per_batch_cap = int(np.floor(share * batch_size + 1e-9))
        else:
            self.synthetic_per_batch_cap = int(np.floor(max_synthetic_fraction * batch_size + 1e-9))
        if synthetic_slots == "replace" and batch_size - self.synthetic_per_batch_cap < len(self.classes):
            raise DataError(
                f"a batch of {batch_size} with up to {self.synthetic_per_batch_cap} synthetic images cannot hold one "
                f"real image of each of the {len(self.classes)} classes. Raise train.batch_size or lower "
                "curriculum.max_synthetic_fraction."
            )

    def set_scores(self, synthetic_jsd: np.ndarray) -> None:
        """Replace the synthetic images' scores (re-scoring, or a resumed run's scores)."""
        self.synthetic_jsd = np.asarray(synthetic_jsd, dtype=np.float32)

    def eligible(self, tau: float | None, margin: float = 0.0) -> np.ndarray:
        """Rows of the synthetic images with ``jsd <= tau + margin`` (none during warmup): the
        gate's own test (``entromix.training.gate.within``), so the loss admits the same images."""
        if tau is None:
            return np.zeros(0, dtype=np.int64)
        return self.n_real + np.flatnonzero(within(self.synthetic_jsd, tau + margin).numpy())

    def epoch(self, epoch: int, tau: float | None, margin: float = 0.0) -> EpochBatches:
        rng = np.random.default_rng([self.seed, epoch])
        nb, size = self.num_batches, self.batch_size
        eligible = self.eligible(tau, margin)
        capacity = nb * self.synthetic_per_batch_cap
        if len(eligible) > capacity:
            synthetic = rng.choice(eligible, size=capacity, replace=False)
        else:
            synthetic = rng.permutation(eligible)
        n_syn = len(synthetic)
        syn_bounds = (np.arange(nb + 1) * n_syn) // nb  # batch b holds synthetic[bounds[b]:bounds[b+1]]
        real_slots = nb * size - (n_syn if self.synthetic_slots == "replace" else 0)

        # Real rows: per-class epoch totals, then a class sequence with each class evenly spaced.
        totals = largest_remainder(real_slots, self.class_counts)
        position = np.concatenate([(np.arange(t) + 0.5) / t for t in totals if t > 0])
        slot_class = np.concatenate([np.full(t, c) for c, t in zip(self.classes, totals) if t > 0])
        slot_class = slot_class[np.argsort(position, kind="stable")]
        slot_row = np.empty(real_slots, dtype=np.int64)
        for c, t in zip(self.classes, totals):
            members = np.flatnonzero(self.real_labels == c)
            passes = -(-t // len(members))  # ceil: a lengthened epoch draws the class again
            slot_row[slot_class == c] = np.concatenate([rng.permutation(members) for _ in range(passes)])[:t]

        batches, start = [], 0
        for b in range(nb):
            syn = synthetic[syn_bounds[b] : syn_bounds[b + 1]]
            n_real_here = size - len(syn) if self.synthetic_slots == "replace" else size
            batches.append(np.concatenate([slot_row[start : start + n_real_here], syn]).astype(np.int64))
            start += n_real_here
        return EpochBatches(batches=batches, eligible=len(eligible), placed=n_syn)
