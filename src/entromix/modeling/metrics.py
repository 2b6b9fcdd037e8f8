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

With more than two labels (``ingest.labels``), :func:`multiclass_metrics` reports the K-class
model beside this binary view: per-class recall, precision, F1 and one-vs-rest ROC-AUC, macro-F1,
the mean one-vs-rest ROC-AUC and the K x K confusion matrix of the argmax predictions.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score


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


def multiclass_metrics(y_true: np.ndarray, probs: np.ndarray, names: list[str]) -> dict:
    """K-class metrics of (N, K) probabilities against labels 0..K-1, predictions by argmax.

    ``per_class``: per label, its ``n`` images, ``recall``, ``precision``, ``f1`` and ``roc_auc``
    (one-vs-rest); ``macro_f1`` and ``macro_recall`` (balanced accuracy) average the classes with
    images (a class without test images has recall and AUC None and is left out of the means);
    ``roc_auc_ovr_macro`` the mean of the defined one-vs-rest AUCs; ``confusion``: K rows
    (actual) of K counts (predicted), in label order.
    """
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(names)
    pred = probs.argmax(1)
    counts = confusion_matrix(y, pred, labels=list(range(k)))
    per_class: dict[str, dict] = {}
    for c, name in enumerate(names):
        tp, actual, called = int(counts[c, c]), int(counts[c].sum()), int(counts[:, c].sum())
        recall, precision = _ratio(tp, actual), _ratio(tp, called)
        f1 = 2 * precision * recall / (precision + recall) if recall and precision else (0.0 if actual else None)
        per_class[name] = {
            "n": actual,
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "roc_auc": roc_auc(y == c, probs[:, c]),
        }
    present = [v for v in per_class.values() if v["n"]]
    aucs = [v["roc_auc"] for v in present if v["roc_auc"] is not None]
    return {
        "labels": list(names),
        "accuracy": _ratio(int(np.trace(counts)), int(counts.sum())),
        "macro_recall": float(np.mean([v["recall"] for v in present])) if present else None,
        "macro_f1": float(np.mean([v["f1"] for v in present])) if present else None,
        "roc_auc_ovr_macro": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion": counts.astype(int).tolist(),
    }
