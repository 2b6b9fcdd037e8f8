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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TunedThreshold:
    threshold: float
    target_sensitivity: float
    reached: bool
    note: str


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
    return TunedThreshold(t, target, True, note)
