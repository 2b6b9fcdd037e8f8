"""Binary classification metrics as a clinician reads them; label 1 (malignant) is the positive class.

At a decision threshold ``t`` (predict malignant when ``p_malignant >= t``):

* sensitivity = TP / (TP + FN): the share of malignant images called malignant (recall);
* specificity = TN / (TN + FP): the share of benign images called benign;
* precision (PPV) = TP / (TP + FP); NPV = TN / (TN + FN);
* F1 = 2 PPV sensitivity / (PPV + sensitivity); balanced accuracy = (sensitivity + specificity) / 2;
* predicted positive rate = (TP + FP) / N.

Threshold-free: ROC-AUC, PR-AUC (average precision, the step-wise area that scikit-learn's
``average_precision_score`` computes) and the Brier score ``mean((p - y)^2)``.

A metric whose denominator is empty (no malignant images, say) is ``None``, never a silent 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def confusion(y_true: np.ndarray, p_positive: np.ndarray, threshold: float = 0.5) -> dict[str, int]:
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(p_positive, dtype=np.float64) >= threshold
    return {
        "tp": int((pred & y).sum()),
        "fn": int((~pred & y).sum()),
        "tn": int((~pred & ~y).sum()),
        "fp": int((pred & ~y).sum()),
    }


def binary_metrics(y_true: np.ndarray, p_positive: np.ndarray, threshold: float = 0.5) -> dict[str, float | None]:
    """accuracy, sensitivity, specificity, balanced_accuracy and auc (the per-epoch validation set)."""
    m = threshold_metrics(y_true, p_positive, threshold)
    return {k: m[k] for k in ("accuracy", "sensitivity", "specificity", "balanced_accuracy")} | {
        "auc": roc_auc(y_true, p_positive)
    }


def threshold_metrics(y_true: np.ndarray, p_positive: np.ndarray, threshold: float) -> dict[str, float | int | None]:
    """Every metric that depends on the decision threshold, plus the confusion counts."""
    c = confusion(y_true, p_positive, threshold)
    tp, fn, tn, fp = c["tp"], c["fn"], c["tn"], c["fp"]
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    ppv, npv = _ratio(tp, tp + fp), _ratio(tn, tn + fn)
    f1 = 2 * ppv * sens / (ppv + sens) if ppv is not None and sens is not None and ppv + sens > 0 else None
    return {
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
        "sensitivity": sens,
        "specificity": spec,
        "precision": ppv,
        "npv": npv,
        "f1": f1,
        "balanced_accuracy": (sens + spec) / 2 if sens is not None and spec is not None else None,
        "predicted_positive_rate": _ratio(tp + fp, tp + tn + fp + fn),
        **c,
    }


def roc_auc(y_true: np.ndarray, p_positive: np.ndarray) -> float | None:
    y = np.asarray(y_true).astype(bool)
    return float(roc_auc_score(y, p_positive)) if y.any() and not y.all() else None


def threshold_free_metrics(y_true: np.ndarray, p_positive: np.ndarray) -> dict[str, float | None]:
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(p_positive, dtype=np.float64)
    return {
        "roc_auc": roc_auc(y, p),
        "pr_auc": float(average_precision_score(y, p)) if y.any() else None,
        "brier": float(np.mean((p - y) ** 2)) if len(y) else None,
    }
