"""Binary classification metrics as a clinician reads them; label 1 (malignant) is the positive class.

* sensitivity = TP / (TP + FN): the share of malignant images called malignant (recall);
* specificity = TN / (TN + FP): the share of benign images called benign;
* balanced accuracy = (sensitivity + specificity) / 2;
* AUC: ROC-AUC of the malignant probability (threshold-free); ``None`` when only one class is present.

A metric whose denominator is empty (no malignant images, say) is ``None``, never a silent 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def binary_metrics(y_true: np.ndarray, p_positive: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """accuracy, sensitivity, specificity, balanced_accuracy and auc for ``p_positive >= threshold``."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(p_positive, dtype=np.float64)
    pred = p >= threshold
    tp, fn = int((pred & y).sum()), int((~pred & y).sum())
    tn, fp = int((~pred & ~y).sum()), int((pred & ~y).sum())
    sens = tp / (tp + fn) if tp + fn else None
    spec = tn / (tn + fp) if tn + fp else None
    return {
        "accuracy": (tp + tn) / len(y) if len(y) else None,
        "sensitivity": sens,
        "specificity": spec,
        "balanced_accuracy": (sens + spec) / 2 if sens is not None and spec is not None else None,
        "auc": float(roc_auc_score(y, p)) if y.any() and not y.all() else None,
    }
