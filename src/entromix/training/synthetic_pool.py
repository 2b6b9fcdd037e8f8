"""The pool of gated synthetic images: the scores the gate reads, and what each epoch admitted.

The gate reads one score per synthetic image: the score stage's JSD, except

* ``curriculum.strategy: random``: the same scores shuffled among the synthetic images with
  ``default_rng([seed, RANDOM_GATE_STREAM])``, so each epoch admits as many images as the
  curriculum would, but chosen without regard to quality;
* ``curriculum.strategy: oracle_gate`` (a diagnostic): 0 for the synthetic images of the known
  ``good`` tier and :data:`ORACLE_SHUT` for every other, so after warmup the gate admits exactly
  the good tier, whatever ``tau``;
* ``curriculum.rescore_every = k``: before epochs ``W, W + k, W + 2k, ...`` the current model
  scores the synthetic pool (eval mode, no augmentation, softmax at the temperature fitted on
  that epoch's validation logits, so ``tau`` keeps its meaning as a ``p_true`` threshold) and
  its JSD replaces the scores. The model has then seen the images it admitted, so this can
  confirm its own mistakes; ``RESULTS.md`` measures whether it helps.

Unlabelled real images (self-training, ``curriculum.pseudo_labels``) are gated rows too, after
the synthetic ones: their score is the JSD against the pseudo-label the current model gave them
(``entromix.training.pseudo_labels``), and above any ``tau`` until they have one. With
``strategy: real_only`` the synthetic rows are shut and only these are gated.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from entromix.modeling.fit import predict_logits, weights_from_counts
from entromix.scoring.calibration import calibrated_probs, fit_temperature
from entromix.scoring.jsd import jsd_to_onehot
from entromix.training.curriculum import CurriculumConfig
from entromix.training.gate import gate_margin, gate_weights
from entromix.training.pseudo_labels import NOT_ACCEPTED, PseudoLabels, pseudo_label
from entromix.training.sampler import CurriculumBatchSampler, EpochBatches
from entromix.training.table import TrainingTable

# second seed word of the generator that shuffles the scores for curriculum.strategy: random
RANDOM_GATE_STREAM = 7919

# oracle_gate's score for a synthetic image outside the good tier: above any tau (at most 1 bit)
ORACLE_SHUT = 2.0


class SyntheticPool:
    """The gate's score of every training row (0 for real rows), the sampler that turns them into
    batches, and which gated images (synthetic, then unlabelled) were ever placed in a batch.

    Args:
        table: the training rows; curriculum: the gate's settings.
        seed: ``train.seed`` (the sampler's and the random strategy's draws).
        batch_size, min_batches: the sampler's batch size and batches per epoch at least.
        device: where the loss reads the scores.
    """

    def __init__(
        self,
        table: TrainingTable,
        curriculum: CurriculumConfig,
        seed: int,
        batch_size: int,
        min_batches: int,
        device: torch.device,
    ) -> None:
        self.table, self.curriculum, self.device = table, curriculum, device
        self.n_real, self.n_syn = table.n_real, table.n_synthetic
        self.scores = initial_gate_scores(table, curriculum, seed)  # (N,)
        self.used = np.zeros(len(self.scores) - self.n_real, dtype=bool)  # (n_syn,)
        self.margin = gate_margin(curriculum.loss_gate, curriculum.gate_temperature)
        self.sampler = CurriculumBatchSampler(
            table.labels[: self.n_real],
            self.scores[self.n_real :],
            batch_size,
            curriculum.max_synthetic_fraction,
            seed,
            min_batches=min_batches,
            synthetic_slots=curriculum.synthetic_slots,
        )
        self.device_scores = torch.from_numpy(self.scores).to(device)

    @property
    def synthetic(self) -> slice:
        """The synthetic rows of the table."""
        return slice(self.n_real, self.n_real + self.n_syn)

    @property
    def unlabelled(self) -> slice:
        """The unlabelled rows of the table (empty without self-training data)."""
        return slice(self.n_real + self.n_syn, len(self.scores))

    @property
    def synthetic_scores(self) -> np.ndarray:
        return self.scores[self.synthetic]

    def set_scores(self, scores: np.ndarray, rows: slice | None = None) -> None:
        """New scores for ``rows`` (default: every row; re-scoring, pseudo-labelling, a resumed run)."""
        self.scores[rows if rows is not None else slice(None)] = scores
        self.sampler.set_scores(self.scores[self.n_real :])
        self.device_scores = torch.from_numpy(self.scores).to(self.device)

    def epoch(self, epoch: int, tau: float | None) -> EpochBatches:
        """The epoch's batches; the synthetic images placed in them are marked used."""
        plan = self.sampler.epoch(epoch, tau, self.margin)
        placed = np.concatenate(plan.batches)
        self.used[placed[placed >= self.n_real] - self.n_real] = True
        return plan

    def weights(self, rows: np.ndarray, tau: float | None) -> torch.Tensor:
        """The gate weight of each row (1 for real rows): what EntroMixLoss counts it as."""
        return gate_weights(
            torch.from_numpy(self.table.is_syn[rows]),
            torch.from_numpy(self.scores[rows]),
            tau,
            self.curriculum.loss_gate,
            self.curriculum.gate_temperature,
        )

    def admitted(self, plan: EpochBatches, tau: float | None, part: str = "synthetic") -> float:
        """Synthetic (``part``: or ``unlabelled``) images admitted this epoch, each counted by its gate weight."""
        span = self.synthetic if part == "synthetic" else self.unlabelled
        rows = np.concatenate(plan.batches)
        rows = rows[(rows >= span.start) & (rows < span.stop)]
        return float(self.weights(rows, tau).sum())

    def eligible_counts(self, tau: float | None) -> tuple[int, int]:
        """(synthetic, unlabelled) images the gate lets into batches at ``tau``."""
        rows = self.sampler.eligible(tau, self.margin)
        unlabelled = int((rows >= self.unlabelled.start).sum())
        return len(rows) - unlabelled, unlabelled

    def mix_class_weights(self, plan: EpochBatches, tau: float | None, num_classes: int) -> torch.Tensor:
        """``train.class_weights: mix``: ``w_c = n / (C n_c)`` over the images of this epoch's batches,
        each counted by its gate weight (1 for real images, 0..1 for synthetic ones), so a
        malignant-only synthetic pool lowers the malignant weight instead of multiplying it."""
        rows = np.concatenate(plan.batches)
        counts = np.bincount(self.table.labels[rows], weights=self.weights(rows, tau).numpy(), minlength=num_classes)
        return weights_from_counts(np.maximum(counts, 1e-6))

    def eligible_mask(self, tau: float | None) -> np.ndarray:
        """(n_gated,) bool: the gated images (synthetic, then unlabelled) the gate lets into batches at ``tau``."""
        mask = np.zeros(len(self.used), dtype=bool)
        mask[self.sampler.eligible(tau, self.margin) - self.n_real] = True
        return mask

    def rescore(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        image_size: int,
        channels_last: bool,
    ) -> None:
        """Score the synthetic rows of ``images`` (the training table on the device) with ``model``."""
        self.set_scores(
            rescore_synthetic(
                model,
                images[self.synthetic],
                self.table.labels[self.synthetic],
                val_x,
                val_y,
                self.device,
                image_size,
                channels_last,
            ),
            self.synthetic,
        )

    def label_unlabelled(
        self,
        model: torch.nn.Module,
        images: torch.Tensor,
        val_x: torch.Tensor,
        val_y: torch.Tensor,
        image_size: int,
        channels_last: bool,
    ) -> PseudoLabels:
        """Label the unlabelled rows of ``images`` (the training table on the device) with ``model``
        (``entromix.training.pseudo_labels``); :meth:`apply_pseudo_labels` puts the labels to use."""
        unlabelled = images[self.unlabelled]
        probs = calibrated_model_probs(model, unlabelled, val_x, val_y, self.device, image_size, channels_last)
        return pseudo_label(probs, self.curriculum.pseudo_threshold)

    def apply_pseudo_labels(self, labelled: PseudoLabels) -> None:
        """The unlabelled rows' labels become the pseudo-labels and their scores the JSD against
        them (above any tau where the confidence misses its class's threshold)."""
        self.table.labels[self.unlabelled] = labelled.labels
        self.set_scores(labelled.scores, self.unlabelled)


def min_batches(min_steps: int, epochs: int) -> int:
    """Batches per epoch that ``train.min_steps`` optimiser steps over ``epochs`` epochs need."""
    return math.ceil(min_steps / epochs)


def initial_gate_scores(table: TrainingTable, curriculum: CurriculumConfig, seed: int) -> np.ndarray:
    """The per-row scores the gate starts from: the score stage's JSD, shuffled among the synthetic
    rows for ``strategy: random`` (same counts per epoch as the curriculum, chosen blindly)."""
    scores = np.array(table.jsd, dtype=np.float32)
    scores[~table.is_syn] = 0.0
    synthetic = table.is_syn if table.unlabelled is None else table.is_syn & ~table.unlabelled
    if curriculum.strategy == "oracle_gate":
        good = synthetic & (table.tiers == "good")
        scores[synthetic] = ORACLE_SHUT
        scores[good] = 0.0
    if curriculum.strategy == "real_only":  # gated rows are then only the pseudo-labelled ones
        scores[synthetic] = ORACLE_SHUT
    if curriculum.strategy == "random":
        syn = np.flatnonzero(synthetic)
        scores[syn] = np.random.default_rng([seed, RANDOM_GATE_STREAM]).permutation(scores[syn])
    if table.unlabelled is not None:
        scores[table.unlabelled] = NOT_ACCEPTED  # until the first pseudo-labelling
    return scores


def rescore_synthetic(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    device: torch.device,
    image_size: int,
    channels_last: bool,
) -> np.ndarray:
    """JSD in bits of the current model's calibrated softmax against each synthetic image's label.

    The temperature is fitted on the model's validation logits, as the score stage fits it on its
    out-of-fold logits, so the same ``tau`` means the same ``p_true`` before and after re-scoring.
    """
    probs = calibrated_model_probs(model, images, val_x, val_y, device, image_size, channels_last)
    scores, _ = jsd_to_onehot(probs, labels)
    return scores.astype(np.float32)


def calibrated_model_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    device: torch.device,
    image_size: int,
    channels_last: bool,
) -> np.ndarray:
    """(N, K) softmax of ``model`` on ``images`` at the temperature fitted on its validation logits."""
    val_logits = predict_logits(model, val_x, device, image_size, channels_last=channels_last)
    temperature = fit_temperature(val_logits, val_y.numpy())
    logits = predict_logits(model, images, device, image_size, channels_last=channels_last)
    return calibrated_probs(logits, temperature)


def synthetic_by_tier(used: np.ndarray, final_eligible: np.ndarray, tiers: pd.Series) -> dict[str, dict[str, int]]:
    """Per known quality tier (and ``all``): the pool, the images eligible at the last epoch and
    the images placed in any batch. ``tiers``: the tier of each synthetic row, "" when unknown."""
    tiers = tiers.fillna("").astype(str).to_numpy()
    out: dict[str, dict[str, int]] = {}
    for name in ["all", *sorted(t for t in set(tiers) if t)]:
        rows = np.ones(len(tiers), dtype=bool) if name == "all" else tiers == name
        out[name] = {
            "pool": int(rows.sum()),
            "eligible_final": int((final_eligible & rows).sum()),
            "used": int((used & rows).sum()),
        }
    return out
