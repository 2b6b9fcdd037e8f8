"""Bootstrap confidence intervals for sensitivity, specificity and ROC-AUC on a test set.

Percentile bootstrap: ``n_resamples`` resamples of the test images with replacement, drawn from
``numpy.random.default_rng(seed)`` (the same seed gives the same intervals), the metric on each,
and the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles. A resample without a malignant (or
benign) image has no sensitivity (specificity, AUC) and is left out of that metric's quantiles.
With small test sets the intervals are wide; that is the point of reporting them.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def bootstrap_intervals(
    y_true: np.ndarray, p_positive: np.ndarray, threshold: float, n_resamples: int, seed: int, level: float = 0.95
) -> dict[str, tuple[float, float] | None]:
    """``{"sensitivity": (lo, hi), "specificity": (lo, hi), "roc_auc": (lo, hi)}``; None when undefined."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(p_positive, dtype=np.float64)
    n = len(y)
    if n == 0 or n_resamples == 0:
        return {"sensitivity": None, "specificity": None, "roc_auc": None}
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))  # (R, n)
    ys, ps = y[idx], p[idx]
    pred = ps >= threshold
    n_pos, n_neg = ys.sum(1), (~ys).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = (pred & ys).sum(1) / n_pos
        spec = (~pred & ~ys).sum(1) / n_neg
    both = (n_pos > 0) & (n_neg > 0)
    auc = np.array([roc_auc_score(ys[r], ps[r]) for r in np.flatnonzero(both)])
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2

    def interval(values: np.ndarray) -> tuple[float, float] | None:
        values = values[np.isfinite(values)]
        return (float(np.quantile(values, lo_q)), float(np.quantile(values, hi_q))) if len(values) else None

    return {"sensitivity": interval(sens), "specificity": interval(spec), "roc_auc": interval(auc)}
