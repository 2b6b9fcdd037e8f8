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
``quantile`` (:func:`tune_threshold_quantile`, the default) estimates the cut from the malignant
val probabilities' distribution instead: their ``1 - target`` quantile, interpolated between the
two order statistics around it, lowered to the middle of the gap down to the next benign val
probability. Measured on leukemia_dev's val predictions (RESULTS.md section 8): with 8 malignant
val images the single-image rule gave a degenerate threshold in 82 of 200 cases and test
specificity 0.66, the quantile in 6 and 0.86, closer to the target sensitivity; with 20, and on
the demo's separable val, they agree within noise. (The median of the single-image rule over
bootstrap resamples of val, also tried, equalled the rule itself in every case: its resamples'
thresholds take the same few values.) Two checks are reported with either method:

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

ThresholdMethod = Literal["single", "quantile"]
#: a tuned threshold at or beyond these is flagged degenerate
DEGENERATE_BELOW, DEGENERATE_ABOVE = 0.01, 0.99


@dataclass(frozen=True)
class TunedThreshold:
    threshold: float
    target_sensitivity: float
    reached: bool
    note: str
    method: ThresholdMethod = "single"
    single_image: float | None = None  # the single-image rule's threshold (quantile reports it beside its own)
    n_malignant_val: int = 0

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


def tune_threshold_quantile(
    y_val: np.ndarray, p_val: np.ndarray, target: float, fallback: float = 0.5
) -> TunedThreshold:
    """A sensitivity-``target`` cut estimated from the malignant scores' distribution rather than
    set next to one image: ``q``, the ``1 - target`` quantile of the malignant val probabilities
    (interpolated linearly between the two order statistics around it, numpy's default), then
    lowered to the middle of the gap between ``q`` and the highest benign val probability below it
    (every val image keeps its side, as with the single-image rule's midpoint, and a malignant
    image inside the gap is caught). With few malignant images ``q`` sits between the lowest two
    instead of at the lowest, so one outlying malignant image does not drag the threshold down."""
    single = tune_threshold(y_val, p_val, target, fallback)
    if not single.reached:
        return replace(single, method="quantile")
    y = np.asarray(y_val).astype(bool)
    p = np.asarray(p_val, dtype=np.float64)
    q = float(np.quantile(p[y], 1.0 - target))
    benign_below = p[~y][p[~y] < q]
    t = (q + float(benign_below.max())) / 2 if len(benign_below) else q
    reached_sens = float((p[y] >= t).mean())
    spec = float((p[~y] < t).mean()) if (~y).any() else float("nan")
    note = (
        f"threshold {t:.4f} (the {1 - target:.2f} quantile of the malignant val probabilities, {q:.4f}, lowered to "
        f"the middle of the gap below it; the single-image rule gives {single.threshold:.4f}) reaches val "
        f"sensitivity {reached_sens:.3f} (target {target}) at val specificity {spec:.3f}"
    )
    return TunedThreshold(t, target, True, note, "quantile", single.threshold, int(y.sum()))
