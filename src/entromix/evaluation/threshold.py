"""The decision threshold a clinician would set: reach a target sensitivity on the validation set.

``tune_threshold`` returns a threshold ``t`` whose validation sensitivity is at least ``target``
with the highest validation specificity: with ``n`` malignant validation images sorted by
probability, ``p_k`` is the ``k``-th largest of them, ``k = ceil(target * n)``, and ``t`` lies halfway
between ``p_k`` and the next lower validation probability of any image (every ``t`` in that gap
gives the same validation confusion matrix; the midpoint leaves a margin on both sides instead
of sitting on the last malignant image it needs).
The threshold is then applied unchanged to the test set, whose sensitivity may land on either
side of the target (the bootstrap intervals say by how much it can move).

When the validation set has no malignant image the target cannot be reached: the threshold
falls back to 0.5 and the result says so (``reached = False`` and a note).

That rule rests on one image: with ``n`` malignant validation images and target 0.9, ``t`` sits
next to the ``ceil(0.9 n)``-th highest of them, which for ``n < 10`` is the lowest one. A model
that calls one malignant val image with ``p = 0.0001`` then gets a threshold of 0.0000.
``bootstrap_median`` (:func:`tune_threshold_bootstrap`, the default) tunes the same rule on
:data:`THRESHOLD_RESAMPLES` stratified bootstrap resamples of the validation set (malignant and
benign images resampled separately, so every resample keeps ``n``) and takes the median: a
threshold that no single image decides. Two checks are reported with either method:

* **reliable**: at least two malignant val images are expected below a threshold at the target,
  ``n * (1 - target) >= 2`` (``n >= 20`` at 0.9). Below that the threshold estimates the tail of
  the malignant scores from one image or none, and the stage says so.
* **degenerate**: ``t <= 0.01`` or ``t >= 0.99``: the model's val probabilities of the malignant
  images overlap the benign ones only at the extremes; the test operating point then hangs on a
  rounding error. The stage says what to check (the checkpoint, the training curves).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

ThresholdMethod = Literal["single", "bootstrap_median"]
#: resamples of the validation set behind a bootstrap_median threshold
THRESHOLD_RESAMPLES = 1000
#: a tuned threshold at or beyond these is flagged degenerate
DEGENERATE_BELOW, DEGENERATE_ABOVE = 0.01, 0.99


@dataclass(frozen=True)
class TunedThreshold:
    threshold: float
    target_sensitivity: float
    reached: bool
    note: str
    method: ThresholdMethod = "single"
    single_image: float | None = None  # the single-image rule's threshold (bootstrap_median reports it beside)
    n_malignant_val: int = 0
    spread: tuple[float, float] | None = None  # bootstrap_median: the 25th and 75th percentile of the resamples'

    @property
    def reliable(self) -> bool:
        """At least two malignant val images expected below a threshold at the target (see module doc)."""
        return self.n_malignant_val * (1.0 - self.target_sensitivity) >= 2.0 - 1e-9

    @property
    def degenerate(self) -> bool:
        return self.threshold <= DEGENERATE_BELOW or self.threshold >= DEGENERATE_ABOVE

    def warnings(self) -> list[str]:
        """What a reader of the stage's output must know about this threshold, each with what to do."""
        out = []
        if self.reached and not self.reliable:
            need = math.ceil(2.0 / (1.0 - self.target_sensitivity) - 1e-9)
            out.append(
                f"the threshold is unreliable: {self.n_malignant_val} malignant val images put "
                f"{self.n_malignant_val * (1 - self.target_sensitivity):.1f} of them below a sensitivity-"
                f"{self.target_sensitivity} threshold (2 or more needed, so {need} malignant val images): it rests "
                "on the lowest-scoring one or two. Read the threshold-free ROC-AUC and the 0.5 column, or give val "
                "more malignant images (ingest.split, or a larger real/val folder)."
            )
        if self.reached and self.degenerate:
            out.append(
                f"the tuned threshold {self.threshold:.4f} is degenerate (<= {DEGENERATE_BELOW} or >= "
                f"{DEGENERATE_ABOVE}): the model's malignant val probabilities reach into the extremes, so the test "
                "operating point hangs on rounding. Check the training curves (plots/train/history.csv) and the "
                "evaluated checkpoint (evaluate.checkpoint, train.select_metric, train.ema_half_life)."
            )
        return out


def tune_threshold(y_val: np.ndarray, p_val: np.ndarray, target: float, fallback: float = 0.5) -> TunedThreshold:
    y = np.asarray(y_val).astype(bool)
    positives = np.sort(np.asarray(p_val, dtype=np.float64)[y])[::-1]  # malignant probabilities, high first
    if len(positives) == 0:
        return TunedThreshold(
            fallback,
            target,
            False,
            f"the validation set has no malignant image, so sensitivity {target} cannot be tuned; using {fallback}",
        )
    k = max(1, math.ceil(target * len(positives) - 1e-9))
    p_k = float(positives[k - 1])
    every = np.asarray(p_val, dtype=np.float64)
    lower = every[every < p_k]
    t = (p_k + float(lower.max())) / 2 if len(lower) else p_k
    reached_sens = float((positives >= t).mean())
    benign = every[~y]
    spec = float((benign < t).mean()) if len(benign) else float("nan")
    note = (
        f"threshold {t:.4f} reaches val sensitivity {reached_sens:.3f} (target {target}) at val specificity {spec:.3f}"
    )
    if len(benign) and spec == 0.0:
        note += "; every benign val image is called malignant at this threshold: the target is too high for this model"
    return TunedThreshold(t, target, True, note, "single", t, len(positives))


def tune_threshold_bootstrap(
    y_val: np.ndarray,
    p_val: np.ndarray,
    target: float,
    resamples: int = THRESHOLD_RESAMPLES,
    seed: int = 0,
    fallback: float = 0.5,
) -> TunedThreshold:
    """The median of :func:`tune_threshold` over stratified bootstrap resamples of the validation
    set (malignant and benign images each resampled to their own count); the single-image
    threshold and the resamples' interquartile range are kept beside it."""
    single = tune_threshold(y_val, p_val, target, fallback)
    if not single.reached:
        return replace(single, method="bootstrap_median")
    y = np.asarray(y_val).astype(bool)
    p = np.asarray(p_val, dtype=np.float64)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for b in range(resamples):
        rows = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg)) if len(neg) else neg])
        values[b] = tune_threshold(y[rows], p[rows], target, fallback).threshold
    t = float(np.median(values))
    reached_sens = float((p[y] >= t).mean())
    spec = float((p[~y] < t).mean()) if len(neg) else float("nan")
    q25, q75 = (float(v) for v in np.percentile(values, [25, 75]))
    note = (
        f"threshold {t:.4f} (median over {resamples} val resamples, interquartile {q25:.4f}-{q75:.4f}; the single-"
        f"image rule gives {single.threshold:.4f}) reaches val sensitivity {reached_sens:.3f} (target {target}) at "
        f"val specificity {spec:.3f}"
    )
    return TunedThreshold(t, target, True, note, "bootstrap_median", single.threshold, len(pos), (q25, q75))
