"""Evaluation maths: every metric against scikit-learn, the threshold tuner, the bootstrap."""

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from entromix.common.errors import ParamsError
from entromix.evaluation.bootstrap import bootstrap_intervals
from entromix.evaluation.report import EvaluateConfig, calibration_table, evaluation_report, per_class_rates
from entromix.evaluation.threshold import tune_threshold, tune_threshold_quantile
from entromix.modeling.metrics import binary_metrics, threshold_free_metrics, threshold_metrics

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 200)
P = np.clip(0.35 * Y + RNG.uniform(0, 0.65, 200), 0, 1)  # informative but overlapping


@pytest.mark.parametrize("t", [0.2, 0.5, 0.63, 0.9])
def test_threshold_metrics_match_sklearn(t):
    m = threshold_metrics(Y, P, t)
    pred = (P >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(Y, pred, labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred))
    assert m["sensitivity"] == pytest.approx(skm.recall_score(Y, pred))
    assert m["specificity"] == pytest.approx(skm.recall_score(Y, pred, pos_label=0))
    assert m["precision"] == pytest.approx(skm.precision_score(Y, pred))
    assert m["npv"] == pytest.approx(skm.precision_score(Y, pred, pos_label=0))
    assert m["f1"] == pytest.approx(skm.f1_score(Y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y, pred))
    assert m["predicted_positive_rate"] == pytest.approx(pred.mean())
    b = binary_metrics(Y, P, t)
    assert b["sensitivity"] == m["sensitivity"] and b["auc"] == pytest.approx(skm.roc_auc_score(Y, P))


def test_threshold_free_metrics_match_sklearn():
    m = threshold_free_metrics(Y, P)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(Y, P))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(Y, P))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(Y, P))


def test_empty_denominators_are_none_not_zero():
    m = threshold_metrics(np.zeros(5, int), np.linspace(0, 1, 5), 0.5)
    assert (
        m["sensitivity"] is None and m["f1"] is None and m["specificity"] == pytest.approx(2 / 5)
    )  # 0.5, 0.75, 1.0 called malignant
    assert threshold_free_metrics(np.zeros(5, int), np.linspace(0, 1, 5))["roc_auc"] is None


@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 0.99])
def test_tuner_reaches_the_target_with_the_best_specificity(target):
    tuned = tune_threshold(Y, P, target)
    assert tuned.reached
    sens = threshold_metrics(Y, P, tuned.threshold)["sensitivity"]
    spec = threshold_metrics(Y, P, tuned.threshold)["specificity"]
    assert sens >= target
    # no threshold with at least the target sensitivity has a better specificity
    for t in np.unique(P):
        m = threshold_metrics(Y, P, t)
        if m["sensitivity"] >= target:
            assert m["specificity"] <= spec + 1e-12


def test_tuner_sits_between_two_scores():
    y = np.array([0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.5, 0.4, 0.7, 0.8, 0.9])
    tuned = tune_threshold(y, p, 0.75)  # needs 3 of 4 malignant: p_k = 0.7, next lower score 0.5
    assert tuned.threshold == pytest.approx(0.6)
    assert "reaches val sensitivity 0.750" in tuned.note


def test_tuner_says_when_the_target_cannot_be_reached():
    tuned = tune_threshold(np.zeros(6, int), np.linspace(0, 1, 6), 0.9)
    assert not tuned.reached and tuned.threshold == 0.5
    assert "no malignant" in tuned.note


def test_tuner_warns_when_the_target_costs_all_specificity():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.8, 0.9, 0.1, 0.95])  # a malignant image below every benign one
    tuned = tune_threshold(y, p, 0.99)
    assert tuned.reached and "every benign val image is called malignant" in tuned.note


def test_the_single_image_rule_on_one_outlying_malignant_image_is_flagged_and_the_quantile_is_not_dragged():
    """8 malignant val images at target 0.9: the single-image rule needs all 8, so one malignant
    image at 0.0001 drags it to 0.0000 (degenerate, and unreliable: said with what to do); the
    quantile sits between the lowest two. With 20 malignant val images the outlier decides nothing."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 24 + [1] * 8)
    p = np.concatenate([rng.uniform(0.0, 0.3, 24), [0.0001], rng.uniform(0.6, 0.99, 7)])
    single = tune_threshold(y, p, 0.9)
    assert single.threshold < 0.001 and single.degenerate and not single.reliable
    text = " ".join(single.warnings())
    assert "unreliable" in text and "20 malignant val images" in text and "degenerate" in text
    quantile = tune_threshold_quantile(y, p, 0.9)
    low, second = np.sort(p[y == 1])[:2]
    q = low + 0.7 * (second - low)  # the 0.1 quantile: (n - 1) * 0.1 = 0.7 of the way from the lowest to the next
    gap_floor = p[(y == 0) & (p < q)].max()  # the highest benign val probability below it
    assert quantile.threshold == pytest.approx((q + gap_floor) / 2)
    assert quantile.method == "quantile" and quantile.single_image == single.threshold
    assert not quantile.degenerate and not quantile.reliable
    assert [w for w in quantile.warnings() if "degenerate" in w] == [] and "unreliable" in quantile.warnings()[0]
    y = np.array([0] * 30 + [1] * 20)
    p = np.concatenate([rng.uniform(0.0, 0.3, 30), [0.0001], rng.uniform(0.6, 0.99, 19)])
    for tuned in (tune_threshold(y, p, 0.9), tune_threshold_quantile(y, p, 0.9)):
        assert 0.3 < tuned.threshold < 0.7 and tuned.reliable and tuned.warnings() == []


def test_the_quantile_moves_into_the_gap_below_it_and_keeps_every_val_image_on_its_side():
    """Separable val (the demo's case): the quantile lies inside the malignant cluster; lowered to the
    middle of the gap down to the highest benign image, it keeps val specificity 1 and calls every
    malignant val image, as the single-image rule's midpoint does."""
    y = np.array([0] * 30 + [1] * 20)
    p = np.concatenate([np.linspace(0.01, 0.2, 30), np.linspace(0.5, 0.99, 20)])
    tuned = tune_threshold_quantile(y, p, 0.9)
    q = np.quantile(p[y == 1], 0.1)
    assert tuned.threshold == pytest.approx((q + 0.2) / 2) and tuned.threshold < 0.5
    m = threshold_metrics(y, p, tuned.threshold)
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert "quantile of the malignant val probabilities" in tuned.note


def test_the_quantile_without_malignant_val_falls_back():
    tuned = tune_threshold_quantile(np.zeros(6, int), np.linspace(0, 1, 6), 0.9)
    assert not tuned.reached and tuned.threshold == 0.5 and tuned.warnings() == []


def test_bootstrap_is_deterministic_and_brackets_the_estimate():
    a = bootstrap_intervals(Y, P, 0.5, 300, seed=3)
    b = bootstrap_intervals(Y, P, 0.5, 300, seed=3)
    c = bootstrap_intervals(Y, P, 0.5, 300, seed=4)
    assert a == b and a != c
    m = threshold_metrics(Y, P, 0.5)
    assert a["sensitivity"][0] < m["sensitivity"] < a["sensitivity"][1]
    assert a["specificity"][0] < m["specificity"] < a["specificity"][1]
    assert a["roc_auc"][0] < skm.roc_auc_score(Y, P) < a["roc_auc"][1]


def test_bootstrap_without_resamples_or_a_class():
    assert bootstrap_intervals(Y, P, 0.5, 0, 0)["roc_auc"] is None
    only_benign = bootstrap_intervals(np.zeros(10, int), np.linspace(0, 1, 10), 0.5, 50, 0)
    assert only_benign["sensitivity"] is None and only_benign["roc_auc"] is None
    assert only_benign["specificity"] is not None


def test_per_class_rates_and_report():
    test = pd.DataFrame(
        {
            "class": ["Benign"] * 4 + ["Early"] * 2 + ["Pro"] * 2,
            "label": [0] * 4 + [1] * 4,
            "probability": [0.1, 0.2, 0.6, 0.3, 0.9, 0.4, 0.8, 0.7],
        }
    )
    rates = per_class_rates(test, 0.5)
    assert rates == {"Benign": 0.75, "Early": 0.5, "Pro": 1.0}
    config = EvaluateConfig("best", 0.9, "single", 100, 5, 0, "cpu", 8, 8, 8, 4)
    report, tuned = evaluation_report(np.array([0, 1, 1]), np.array([0.2, 0.6, 0.9]), test, config)
    r = report["evaluate"]
    assert r["threshold"]["reached_on_val"] is True and r["threshold"]["tuned"] == pytest.approx(0.4)
    assert set(r["test"]["per_class_at_tuned"]) == {"Benign", "Early", "Pro"}
    assert r["test"]["at_050"]["tp"] == 3 and r["test"]["n"] == 8
    assert r["threshold"]["method"] == "single" and r["threshold"]["n_malignant_val"] == 2
    assert r["threshold"]["reliable"] is False and r["threshold"]["degenerate"] is False
    assert set(r["test"]["ci95"]) == {
        "sensitivity_low",
        "sensitivity_high",
        "specificity_low",
        "specificity_high",
        "roc_auc_low",
        "roc_auc_high",
    }


def test_calibration_table_bins():
    table = calibration_table(np.array([0, 0, 1, 1]), np.array([0.05, 0.15, 0.85, 0.95]), 2)
    assert table["count"].tolist() == [2, 2]
    assert table["mean_predicted"].tolist() == pytest.approx([0.1, 0.9])
    assert table["observed_fraction"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize("value", [0.0, 1.0, 1.2])
def test_target_sensitivity_outside_open_interval_is_an_error(value):
    with pytest.raises(ParamsError, match="evaluate.target_sensitivity"):
        EvaluateConfig("best", value, "single", 100, 10, 0, "cpu", 8, 8, 8, 4)
