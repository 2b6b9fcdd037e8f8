"""Known answers and calibration for the paired tests of ``entromix compare``.

DeLong's test is checked against an independent implementation written here from the 1988
paper's definitions (the full psi matrix, not the midrank shortcut the library uses), against
scikit-learn's AUC, against Hanley & McNeil's (1982) published CT-rating example (AUC 0.893), and
for its calibration under the null. The paired bootstrap is checked for its coverage on simulated
classifiers with a known difference; McNemar's and the t-interval against hand-worked answers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from entromix.comparison.stats import delong_test, mcnemar_exact, paired_bootstrap, t_interval, verdict


def delong_by_definition(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988), section 2, written out: (AUCs (k,), covariance matrix (k, k))."""
    y = y.astype(bool)
    m, n = y.sum(), (~y).sum()
    v10, v01 = [], []
    for s in scores:
        x, yy = s[y][:, None], s[~y][None, :]
        psi = (x > yy) + 0.5 * (x == yy)  # (m, n)
        v10.append(psi.mean(1))
        v01.append(psi.mean(0))
    v10, v01 = np.array(v10), np.array(v01)  # (k, m), (k, n)
    auc = v10.mean(1)
    s10 = (v10 - auc[:, None]) @ (v10 - auc[:, None]).T / (m - 1)
    s01 = (v01 - auc[:, None]) @ (v01 - auc[:, None]).T / (n - 1)
    return auc, s10 / m + s01 / n


def correlated_scores(rng, m: int, n: int, shift_a: float, shift_b: float, rho: float = 0.6, rounding=None):
    """Binormal scores of two classifiers sharing a latent per image (correlation ``rho``)."""
    y = np.r_[np.ones(m, int), np.zeros(n, int)]
    shared = rng.normal(size=m + n)
    a = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.normal(size=m + n) + shift_a * y
    b = math.sqrt(rho) * shared + math.sqrt(1 - rho) * rng.normal(size=m + n) + shift_b * y
    if rounding is not None:  # coarse scores: many ties
        a, b = np.round(a, rounding), np.round(b, rounding)
    return y, a, b


@pytest.mark.parametrize("rounding", [None, 0])
def test_delong_matches_the_definition_and_sklearn(rounding):
    rng = np.random.default_rng(3)
    y, a, b = correlated_scores(rng, 37, 81, 1.0, 1.4, rounding=rounding)
    result = delong_test(y, a, b)
    auc, cov = delong_by_definition(y, [a, b])
    assert result["auc_a"] == pytest.approx(auc[0], abs=1e-12)
    assert result["auc_b"] == pytest.approx(auc[1], abs=1e-12)
    assert result["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert result["se"] == pytest.approx(math.sqrt(var), rel=1e-10)
    z = (auc[1] - auc[0]) / math.sqrt(var)
    assert result["z"] == pytest.approx(z, rel=1e-10)
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    lo, hi = result["ci"]
    assert (lo + hi) / 2 == pytest.approx(result["difference"]) and hi - lo == pytest.approx(
        2 * 1.959964 * result["se"]
    )


def test_delong_auc_on_hanley_mcneil_ct_ratings():
    """Hanley & McNeil (1982), Radiology 143:29-36, table 1: 58 normal and 51 abnormal CT images
    rated 1-5; the published area is 0.893. Compared with itself the difference is 0, p = 1."""
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)].astype(float)
    y = np.r_[np.zeros(58, int), np.ones(51, int)]
    result = delong_test(y, ratings, ratings)
    assert round(result["auc_a"], 3) == 0.893
    assert result["difference"] == 0.0 and result["se"] == 0.0 and result["p_value"] == 1.0
    assert result["ci"] == (0.0, 0.0) and verdict(result["ci"]) == "within noise"


def test_delong_is_calibrated_under_the_null():
    """Two classifiers of equal accuracy: about 5% of test sets reject at 0.05, and the 95%
    interval holds the difference of the population AUCs (0) about 95% of the time."""
    rng = np.random.default_rng(0)
    p = np.array([delong_test(*correlated_scores(rng, 40, 120, 1.2, 1.2))["p_value"] for _ in range(400)])
    assert 0.02 <= (p < 0.05).mean() <= 0.085
    # and it has power against a real difference
    p_alt = np.array([delong_test(*correlated_scores(rng, 40, 120, 0.8, 1.8))["p_value"] for _ in range(100)])
    assert (p_alt < 0.05).mean() > 0.8


def test_delong_rejects_inputs_without_both_classes():
    with pytest.raises(ValueError, match="malignant and benign"):
        delong_test(np.ones(5), np.zeros(5), np.zeros(5))


def simulated_decisions(rng, m: int, n: int, sens: tuple[float, float], spec: tuple[float, float]):
    """0/1 decisions of two correlated classifiers with known population sensitivity/specificity:
    B's call copies A's with probability 0.5, else it is drawn afresh, so both keep their rates."""
    y = np.r_[np.ones(m, int), np.zeros(n, int)]

    def calls(rate_a, rate_b, k, positive):
        a = rng.random(k) < rate_a
        # P(B right) = 0.5 rate_a + 0.5 q = rate_b  ->  q = 2 rate_b - rate_a
        q = 2 * rate_b - rate_a
        fresh = rng.random(k) < q
        b = np.where(rng.random(k) < 0.5, a, fresh)
        return (a if positive else ~a), (b if positive else ~b)

    pa, pb = calls(sens[0], sens[1], m, True)
    na, nb = calls(spec[0], spec[1], n, False)
    return y, np.r_[pa, na].astype(int), np.r_[pb, nb].astype(int)


def test_paired_bootstrap_covers_the_true_difference():
    """Coverage of the 95% percentile interval over simulated test sets (sensitivity 0.80 -> 0.86,
    specificity 0.90 -> 0.86): near 95% for each metric, balanced accuracy included."""
    rng = np.random.default_rng(1)
    truth = {"sensitivity": 0.06, "specificity": -0.04, "balanced_accuracy": 0.01}
    hits = {k: 0 for k in truth}
    sims = 300
    for i in range(sims):
        y, a, b = simulated_decisions(rng, 80, 120, (0.80, 0.86), (0.90, 0.86))
        result = paired_bootstrap(y, a, b, n_resamples=1000, seed=i)
        for k, d in truth.items():
            lo, hi = result[k]["ci"]
            hits[k] += lo <= d <= hi
    for k in truth:
        assert 0.91 <= hits[k] / sims <= 0.985, (k, hits[k] / sims)


def test_paired_bootstrap_point_values_and_identical_decisions():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    a = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 1])  # sens 0.5, spec 4/6
    b = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 1])  # sens 0.75, spec 5/6
    r = paired_bootstrap(y, a, b, n_resamples=500, seed=0)
    assert r["sensitivity"]["a"] == 0.5 and r["sensitivity"]["b"] == 0.75
    assert r["specificity"]["difference"] == pytest.approx(1 / 6)
    assert r["balanced_accuracy"]["difference"] == pytest.approx((0.25 + 1 / 6) / 2)
    assert paired_bootstrap(y, a, b, n_resamples=500, seed=0) == r  # same seed, same intervals
    same = paired_bootstrap(y, a, a, n_resamples=500, seed=0)
    for k in same:
        assert same[k]["difference"] == 0 and same[k]["ci"] == (0.0, 0.0) and same[k]["p_value"] == 1.0


def test_mcnemar_exact_known_answers():
    y = np.ones(12, int)
    a = np.r_[np.ones(2), np.zeros(9), np.ones(1)].astype(int)  # wrong on 9
    b = np.r_[np.ones(2), np.ones(9), np.zeros(1)].astype(int)  # wrong on 1: 9 only-A-wrong, 1 only-B-wrong
    r = mcnemar_exact(y, a, b)
    assert (r["only_a_wrong"], r["only_b_wrong"], r["errors_a"], r["errors_b"]) == (9, 1, 9, 1)
    assert r["p_value"] == pytest.approx(2 * (1 + 10) / 1024)  # 2 P(Bin(10, 1/2) <= 1) = 0.021484375
    assert mcnemar_exact(y, a, a)["p_value"] == 1.0
    assert mcnemar_exact(y, b, a)["p_value"] == pytest.approx(r["p_value"])


def test_t_interval_known_answer():
    r = t_interval(np.array([1.0, 2.0, 3.0]))
    assert r["mean"] == 2.0 and r["sd"] == 1.0
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert r["ci"] == pytest.approx((2 - half, 2 + half))
    assert r["p_value"] == pytest.approx(2 * stats.t.sf(2 / (1 / math.sqrt(3)), 2))
    assert t_interval(np.array([0.5]))["ci"] is None


def test_verdict():
    assert verdict((-0.01, 0.02)) == "within noise"
    assert verdict((0.001, 0.02)) == "B better"
    assert verdict((-0.03, -0.001)) == "B worse"
    assert verdict(None) == "no interval"
