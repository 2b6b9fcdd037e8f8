"""Paired tests for two classifiers scored on the same test images.

Every function takes the binary targets ``y`` (1 = malignant, the binary view) and the two
revisions' outputs for the *same images in the same order*; the differences are always
``b - a``. Higher is better for every metric here, so a positive difference means B is better.

* :func:`delong_test`: DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or
  more correlated receiver operating characteristic curves: a nonparametric approach"; computed
  with the midrank algorithm of Sun & Xu (2014). With ``m`` malignant scores ``X`` and ``n``
  benign scores ``Y`` and ``psi(x, y) = 1 if x > y, 1/2 if x = y, 0 otherwise``, each classifier
  ``r`` has the structural components

      V10_r[i] = (1/n) sum_j psi(X_ri, Y_rj)      (one per malignant image)
      V01_r[j] = (1/m) sum_i psi(X_ri, Y_rj)      (one per benign image)

  ``AUC_r = mean(V10_r) = mean(V01_r)``; with ``S10``, ``S01`` the 2 x 2 sample covariances of the
  components across the two classifiers, ``Var(AUC_b - AUC_a) = (S10_aa + S10_bb - 2 S10_ab) / m +
  (S01_aa + S01_bb - 2 S01_ab) / n``, ``z = diff / sqrt(Var)`` (normal), CI ``diff +- z_q sqrt(Var)``.
  It is the same test as R's ``pROC::roc.test(method = "delong", paired = TRUE)``.
* :func:`paired_bootstrap`: sensitivity, specificity and balanced accuracy of two sets of 0/1
  decisions; the test images are resampled with replacement *within each class* (the class
  counts stay those of the test set, as sensitivity and specificity are conditional on the
  class), the same resample for A and B, and the percentile interval of ``b - a`` is reported. The
  two-sided p-value is ``min(1, 2 min(P*(d <= 0), P*(d >= 0)))`` over the resamples.
* :func:`mcnemar_exact`: McNemar's exact (binomial) test on the images exactly one of the two
  calls wrong: with ``b01`` = A right and B wrong, ``b10`` = A wrong and B right, ``p = min(1,
  2 P(Binomial(b01 + b10, 1/2) <= min(b01, b10)))``.
* :func:`t_interval`: the mean of per-seed paired differences with Student's t interval
  (``mean +- t_{k-1, q} sd / sqrt(k)``) and the one-sample t-test's p-value: the training noise
  that one test set's interval cannot see.

A difference "within noise" is one whose interval contains 0 (:func:`verdict`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _check_pair(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (y.shape == a.shape == b.shape) or y.ndim != 1:
        raise ValueError(f"y, a and b must be 1-d and of one length, got {y.shape}, {a.shape}, {b.shape}")
    return y, a, b


def _components(x: np.ndarray, yneg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components from midranks (Sun & Xu 2014): (V10 (m,), V01 (n,))."""
    m, n = len(x), len(yneg)
    rank_all = stats.rankdata(np.concatenate([x, yneg]))  # (m + n,), ties get their midrank
    rank_x, rank_y = stats.rankdata(x), stats.rankdata(yneg)
    v10 = (rank_all[:m] - rank_x) / n  # malignant image i: fraction of benign images below it
    v01 = 1.0 - (rank_all[m:] - rank_y) / m  # benign image j: fraction of malignant images above it
    return v10, v01


def delong_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, level: float = 0.95) -> dict:
    """ROC-AUC of A and B on the same images and DeLong's test of ``AUC_b - AUC_a``.

    Returns ``auc_a, auc_b, difference, se, ci (lo, hi), z, p_value``. Two identical score vectors
    give ``se = 0``: difference 0, interval (0, 0), p = 1 (a difference with ``se = 0``, possible only
    with one image of a class, gives ``z`` None and p = 0). Needs both classes in ``y``."""
    y, a, b = _check_pair(y, p_a, p_b)
    m, n = int(y.sum()), int((~y).sum())
    if m == 0 or n == 0:
        raise ValueError("DeLong's test needs malignant and benign test images")
    va10, va01 = _components(a[y], a[~y])
    vb10, vb01 = _components(b[y], b[~y])
    auc_a, auc_b = float(va10.mean()), float(vb10.mean())
    diff = auc_b - auc_a

    def var_of_difference(ca: np.ndarray, cb: np.ndarray) -> float:
        if len(ca) < 2:
            return 0.0
        s = np.cov(np.stack([ca, cb]))  # (2, 2), ddof 1 as DeLong
        return float(s[0, 0] + s[1, 1] - 2 * s[0, 1])

    var = max(var_of_difference(va10, vb10) / m + var_of_difference(va01, vb01) / n, 0.0)
    se = math.sqrt(var)
    zq = stats.norm.ppf((1 + level) / 2)
    z: float | None
    if se == 0.0:
        z, p = 0.0, 1.0
        if diff != 0.0:  # no variance but a difference (one image per class): no z, and no test to speak of
            z, p = None, 0.0
    else:
        z = diff / se
        p = float(2 * stats.norm.sf(abs(z)))
    return {
        "auc_a": auc_a,
        "auc_b": auc_b,
        "difference": diff,
        "se": se,
        "ci": (diff - zq * se, diff + zq * se),
        "z": z,
        "p_value": p,
    }


def _rates(decisions: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return decisions[idx].mean(axis=-1)


def paired_bootstrap(
    y: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict]:
    """Sensitivity, specificity and balanced accuracy of 0/1 decisions ``pred_a``, ``pred_b``:
    ``{metric: {"a", "b", "difference", "ci": (lo, hi), "p_value"}}``, stratified percentile
    bootstrap of ``b - a`` (module docstring). Same ``seed``, same intervals."""
    y, a, b = _check_pair(y, pred_a, pred_b)
    a, b = a >= 0.5, b >= 0.5
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("the paired bootstrap needs malignant and benign test images")
    rng = np.random.default_rng(seed)
    ipos = pos[rng.integers(0, len(pos), size=(n_resamples, len(pos)))]  # (R, m)
    ineg = neg[rng.integers(0, len(neg), size=(n_resamples, len(neg)))]  # (R, n)
    sens = {"a": _rates(a, ipos), "b": _rates(b, ipos)}  # (R,) each
    spec = {"a": _rates(~a, ineg), "b": _rates(~b, ineg)}
    point = {
        "sensitivity": (a[pos].mean(), b[pos].mean()),
        "specificity": ((~a[neg]).mean(), (~b[neg]).mean()),
    }
    point["balanced_accuracy"] = tuple((point["sensitivity"][k] + point["specificity"][k]) / 2 for k in (0, 1))
    boot = {
        "sensitivity": sens["b"] - sens["a"],
        "specificity": spec["b"] - spec["a"],
        "balanced_accuracy": ((sens["b"] + spec["b"]) - (sens["a"] + spec["a"])) / 2,
    }
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    out = {}
    for name, d in boot.items():
        pa, pb = (float(v) for v in point[name])
        p = min(1.0, 2 * min(float((d <= 0).mean()), float((d >= 0).mean())))
        out[name] = {
            "a": pa,
            "b": pb,
            "difference": pb - pa,
            "ci": (float(np.quantile(d, lo_q)), float(np.quantile(d, hi_q))),
            "p_value": p,
        }
    return out


def mcnemar_exact(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """McNemar's exact test on the 0/1 decisions: ``errors_a, errors_b, only_a_wrong, only_b_wrong,
    p_value`` (module docstring). No discordant image: p = 1."""
    y, a, b = _check_pair(y, pred_a, pred_b)
    right_a, right_b = (a >= 0.5) == y, (b >= 0.5) == y
    only_a_wrong = int((~right_a & right_b).sum())
    only_b_wrong = int((right_a & ~right_b).sum())
    discordant = only_a_wrong + only_b_wrong
    p = 1.0 if discordant == 0 else float(stats.binomtest(only_b_wrong, discordant, 0.5).pvalue)
    return {
        "errors_a": int((~right_a).sum()),
        "errors_b": int((~right_b).sum()),
        "only_a_wrong": only_a_wrong,
        "only_b_wrong": only_b_wrong,
        "p_value": min(1.0, p),
    }


def t_interval(differences: np.ndarray, level: float = 0.95) -> dict:
    """Mean of per-seed paired differences with Student's t interval and the one-sample t-test:
    ``n, mean, sd, ci (lo, hi), p_value``. With one seed there is no interval (``ci`` None)."""
    d = np.asarray(differences, dtype=np.float64)
    k = len(d)
    mean = float(d.mean()) if k else math.nan
    if k < 2:
        return {"n": k, "mean": mean, "sd": None, "ci": None, "p_value": None}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, k - 1)) * sd / math.sqrt(k)
    if sd == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(k)), k - 1))
    return {"n": k, "mean": mean, "sd": sd, "ci": (mean - half, mean + half), "p_value": p}


def verdict(ci: tuple[float, float] | None, higher_is_better: bool = True) -> str:
    """ "within noise" when the interval contains 0, else "B better" / "B worse"."""
    if ci is None:
        return "no interval"
    lo, hi = ci
    if lo <= 0.0 <= hi:
        return "within noise"
    return "B better" if (lo > 0) == higher_is_better else "B worse"
