"""The evaluate stage: what a reviewer reads about the trained classifier, on real images only.

1. Predict the real validation and test images with the chosen checkpoint (``best`` by default).
2. Tune the decision threshold on validation to reach ``target_sensitivity``
   (``entromix.evaluation.threshold``); apply it unchanged to test.
3. On test, at 0.5 and at the tuned threshold: accuracy, sensitivity, specificity, precision,
   NPV, F1, balanced accuracy, predicted positive rate and the confusion counts; threshold-free:
   ROC-AUC, PR-AUC, Brier (``entromix.modeling.metrics``). Percentile-bootstrap 95% intervals
   for sensitivity and specificity at the tuned threshold and for ROC-AUC (``entromix.evaluation.bootstrap``).
4. When the real class folders are finer than the labels (Benign vs Early / Pre / Pro), the
   sensitivity of each malignant folder (and the specificity of each benign one) too.

With more than two labels all of this is the binary view (``ingest.positive_labels``: the label
``y`` is 1 for a positive label, the probability the summed softmax of the positive labels), and
``test.multiclass`` adds the K-class model's own metrics (``entromix.modeling.metrics.multiclass_metrics``).

Synthetic images never enter evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve, roc_curve

from entromix.common.device import DeviceName
from entromix.common.errors import ParamsError
from entromix.common.labels import LabelSpace
from entromix.common.rounding import round_floats
from entromix.evaluation.bootstrap import bootstrap_intervals
from entromix.evaluation.threshold import ThresholdMethod, TunedThreshold, tune_threshold, tune_threshold_quantile
from entromix.modeling.metrics import threshold_free_metrics, threshold_metrics


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml."""

    checkpoint: Literal["best", "last"]  # best: train.select_metric on val | last: the final epoch
    target_sensitivity: float  # the tuned threshold reaches this sensitivity on val
    threshold_method: ThresholdMethod  # single: next to one val image | quantile: of the malignant val probabilities
    bootstrap_resamples: int  # for the 95% intervals; 0 = none
    calibration_bins: int  # equal-width probability bins of the calibration curve
    seed: int  # bootstrap resampling and the figures' random samples
    device: DeviceName
    gallery_per_side: int  # synthetic gallery: images nearest tau on each side (admitted, kept out)
    gallery_sample: int  # synthetic gallery: a seeded random sample of the rest of each side
    gradcam_errors: int  # Grad-CAM: test errors shown, false negatives first; 0 = none
    gradcam_correct: int  # Grad-CAM: correctly called test images shown beside them
    # the out-of-distribution flag (entromix.evaluation.ood): its distance, the features it measures
    ood_score: Literal["mahalanobis", "knn"] = "mahalanobis"
    ood_features: Literal["stages", "penultimate"] = "stages"
    ood_quantile: float = 0.975  # the OOD threshold: this quantile of the val images' distances

    def __post_init__(self) -> None:
        if not 0.0 < self.target_sensitivity < 1.0:
            raise ParamsError(f"evaluate.target_sensitivity must be in (0, 1), got {self.target_sensitivity}.")
        if self.threshold_method not in ("single", "quantile"):
            raise ParamsError(f"evaluate.threshold_method is {self.threshold_method!r}; choose quantile or single.")
        if self.bootstrap_resamples < 0:
            raise ParamsError(f"evaluate.bootstrap_resamples must be >= 0, got {self.bootstrap_resamples}.")
        if self.calibration_bins < 2:
            raise ParamsError(f"evaluate.calibration_bins must be >= 2, got {self.calibration_bins}.")
        if self.ood_score not in ("mahalanobis", "knn"):
            raise ParamsError(f"evaluate.ood_score is {self.ood_score!r}; choose mahalanobis or knn.")
        if self.ood_features not in ("stages", "penultimate"):
            raise ParamsError(f"evaluate.ood_features is {self.ood_features!r}; choose stages or penultimate.")
        if not 0.5 <= self.ood_quantile < 1.0:
            raise ParamsError(
                f"evaluate.ood_quantile must be in [0.5, 1) (0.975 flags ~2.5% of val), got {self.ood_quantile}."
            )
        for key in ("gallery_per_side", "gallery_sample", "gradcam_errors", "gradcam_correct"):
            if not 0 <= getattr(self, key) <= 64:
                raise ParamsError(f"evaluate.{key} must be in 0..64 (images in a figure), got {getattr(self, key)}.")


def side_classes(space: LabelSpace, probs: np.ndarray) -> np.ndarray:
    """(N, 2) int: per image, its most probable benign-side label and its most probable
    positive label (what Grad-CAM explains when the image is called benign or malignant)."""
    negative, positive = np.array(space.negative), np.array(space.positive)
    return np.stack([negative[probs[:, negative].argmax(1)], positive[probs[:, positive].argmax(1)]], 1)


def per_class_rates(test: pd.DataFrame, threshold: float) -> dict[str, float]:
    """Recall of each class folder at ``threshold``: sensitivity for malignant folders, specificity for benign."""
    out = {}
    for name, rows in test.groupby("class", sort=True):
        called = rows["probability"].to_numpy() >= threshold
        malignant = bool(rows["label"].iloc[0] == 1)
        out[str(name)] = float(called.mean() if malignant else (~called).mean())
    return out


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int) -> pd.DataFrame:
    """Per equal-width probability bin: mean predicted probability, observed malignant fraction, count."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = which == b
        if sel.any():
            rows.append(
                {
                    "bin_centre": (edges[b] + edges[b + 1]) / 2,
                    "mean_predicted": float(p[sel].mean()),
                    "observed_fraction": float(y[sel].mean()),
                    "count": int(sel.sum()),
                }
            )
    return pd.DataFrame(rows, columns=["bin_centre", "mean_predicted", "observed_fraction", "count"])


def curves(y: np.ndarray, p: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC (fpr, tpr, threshold) and precision-recall (recall, precision) points of the test set."""
    fpr, tpr, thr = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thr, 1.0)})
    pr = pd.DataFrame({"recall": recall, "precision": precision}).iloc[::-1].reset_index(drop=True)
    return roc, pr


def evaluation_report(
    y_val: np.ndarray, p_val: np.ndarray, test: pd.DataFrame, config: EvaluateConfig, digits: int = 4
) -> tuple[dict, TunedThreshold]:
    """``metrics/evaluate.json`` content and the tuned threshold.

    Args:
        y_val, p_val: validation labels and malignant probabilities.
        test: one row per test image with columns ``class``, ``label``, ``probability``.
    """
    if config.threshold_method == "quantile":
        tuned = tune_threshold_quantile(y_val, p_val, config.target_sensitivity)
    else:
        tuned = tune_threshold(y_val, p_val, config.target_sensitivity)
    y, p = test["label"].to_numpy(), test["probability"].to_numpy(dtype=np.float64)
    val_at_tuned = threshold_metrics(y_val, p_val, tuned.threshold)
    ci = bootstrap_intervals(y, p, tuned.threshold, config.bootstrap_resamples, config.seed)
    report = {
        "threshold": {
            "tuned": tuned.threshold,
            "target_sensitivity": config.target_sensitivity,
            "reached_on_val": tuned.reached,
            "val_sensitivity": val_at_tuned["sensitivity"],
            "val_specificity": val_at_tuned["specificity"],
            "method": tuned.method,
            "single_image": tuned.single_image,
            "n_malignant_val": tuned.n_malignant_val,
            "reliable": tuned.reliable,
            "degenerate": tuned.degenerate,
        },
        "test": {
            **threshold_free_metrics(y, p),
            "n": len(y),
            "n_malignant": int(y.sum()),
            "at_050": threshold_metrics(y, p, 0.5),
            "at_tuned": threshold_metrics(y, p, tuned.threshold),
            "ci95": {
                f"{name}_{end}": (None if ci[name] is None else ci[name][i])
                for name in ("sensitivity", "specificity", "roc_auc")
                for i, end in enumerate(("low", "high"))
            },
        },
        "checkpoint": config.checkpoint,
    }
    if test["class"].nunique() > test["label"].nunique():
        report["test"]["per_class_at_050"] = per_class_rates(test, 0.5)
        report["test"]["per_class_at_tuned"] = per_class_rates(test, tuned.threshold)
    return {"evaluate": round_floats(report, digits)}, tuned
