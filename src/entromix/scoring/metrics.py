"""``metrics/score.json``: how good the scorer is (out-of-fold accuracy and AUC, the fitted
temperature), the JSD of the real and the synthetic images and, when the synthetic images' quality
tiers are known, how well each score tells the bad tiers from the good one.

Measurement only: the tiers never reach the scores (``entromix.scoring.out_of_fold``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from entromix.common.labels import LabelSpace
from entromix.common.rounding import round_floats
from entromix.scoring.calibration import calibrated_probs
from entromix.scoring.jsd import TAU_AT_P_HALF
from entromix.scoring.out_of_fold import ScoreResult


def tier_auroc(jsd: np.ndarray, tiers: np.ndarray, bad: str, good: str = "good") -> float | None:
    """AUROC of JSD for telling ``bad``-tier synthetic images from ``good`` ones (1 = perfect ranking)."""
    mask = (tiers == bad) | (tiers == good)
    y = tiers[mask] == bad
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, jsd[mask]))


def score_metrics(
    result: ScoreResult, tiers: pd.DataFrame | None = None, digits: int = 4, label_space: LabelSpace | None = None
) -> dict:
    """``metrics/score.json``: reference-classifier quality and the JSD of real and synthetic images.

    Args:
        tiers: optional columns id, tier (good | degraded | hallucinated) for synthetic images;
            measurement only, never used to score.
        label_space: the labels and the binary view: ``oof_auc`` is the ROC-AUC of the summed
            positive probability (malignant vs benign, for any K); with more than two labels
            ``oof_auc_ovr_macro`` adds the mean one-vs-rest ROC-AUC over the K classes.
    """
    data = result.dataset
    real, syn = data[data["is_syn"] == 0], data[data["is_syn"] == 1]
    y = real["label"].to_numpy()
    probs = calibrated_probs(result.oof_logits, result.temperature)
    space = label_space or LabelSpace.from_names([str(c) for c in range(probs.shape[1])], None)
    extra = {}
    if space.is_plain_binary:
        auc = roc_auc_score(y, probs[:, 1])
    else:
        auc = roc_auc_score(space.binary_targets(y), space.positive_probability(probs))
        if probs.shape[1] > 2:
            extra["oof_auc_ovr_macro"] = roc_auc_score(y, probs, multi_class="ovr", labels=list(range(probs.shape[1])))
    out = {
        "oof_accuracy": accuracy_score(y, probs.argmax(1)),
        "oof_balanced_accuracy": balanced_accuracy_score(y, probs.argmax(1)),
        "oof_auc": auc,
        **extra,
        "temperature": result.temperature,
        "real_jsd_mean": real["jsd_score"].mean(),
        "synthetic_jsd_mean": syn["jsd_score"].mean() if len(syn) else None,
        "synthetic_p_true_below_half": (syn["p_true"] < 0.5).mean() if len(syn) else None,
        "synthetic_jsd_below_0311": (syn["jsd_score"] <= TAU_AT_P_HALF).mean() if len(syn) else None,
        "n_real": len(real),
        "n_synthetic": len(syn),
        "synthetic_score": result.gate_score,
    }
    if tiers is not None and len(tiers) and len(syn):
        merged = syn.merge(tiers[["id", "tier"]], on="id", how="left")
        t = merged["tier"].fillna("").to_numpy()
        j = merged["jsd_score"].to_numpy()
        out["tier_auroc_hallucinated_vs_good"] = tier_auroc(j, t, "hallucinated")
        out["tier_auroc_degraded_vs_good"] = tier_auroc(j, t, "degraded")
        for tier in ("good", "degraded", "hallucinated"):
            sel = t == tier
            out[f"tier_{tier}_jsd_mean"] = float(j[sel].mean()) if sel.any() else None
            out[f"tier_{tier}_n"] = int(sel.sum())
        if result.synthetic_scores is not None:
            out["tier_auroc_by_score"] = tier_aurocs_by_score(result.synthetic_scores, tiers)
    # floats rounded (nested too); counts stay integers, None (no tier of that kind) and names as they are
    return {"score": round_floats(out, digits)}


def tier_aurocs_by_score(scores: pd.DataFrame, tiers: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """For every score column of ``synthetic_scores`` (ensemble, knn, ...): the AUROC of telling the
    hallucinated and the degraded tier from the good one (1 = a perfect ranking, 0.5 = chance)."""
    merged = scores.merge(tiers[["id", "tier"]], on="id", how="left")
    t = merged["tier"].fillna("").to_numpy()
    names = [c for c in scores.columns if c not in ("id", "filename", "label")]
    return {
        name: {
            "hallucinated_vs_good": tier_auroc(merged[name].to_numpy(), t, "hallucinated"),
            "degraded_vs_good": tier_auroc(merged[name].to_numpy(), t, "degraded"),
        }
        for name in names
    }
