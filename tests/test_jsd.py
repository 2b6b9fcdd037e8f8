"""JSD in bits: against scipy, against the closed form in p_true, and its inverse."""

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from entromix.scoring.jsd import TAU_AT_P_HALF, jsd, jsd_from_p_true, jsd_to_onehot, p_true_at_jsd


def test_general_jsd_matches_scipy_squared():
    rng = np.random.default_rng(0)
    for c in (2, 3, 5):
        p = rng.dirichlet(np.ones(c), size=50)
        q = rng.dirichlet(np.ones(c), size=50)
        expected = np.array([jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q)])
        np.testing.assert_allclose(jsd(p, q), expected, atol=1e-12)


def test_onehot_jsd_matches_scipy_and_closed_form():
    rng = np.random.default_rng(1)
    for c in (2, 4):
        probs = rng.dirichlet(np.ones(c) * 0.5, size=200)
        labels = rng.integers(0, c, size=200)
        onehot = np.eye(c)[labels]
        scipy_values = np.array([jensenshannon(p, q, base=2) ** 2 for p, q in zip(probs, onehot)])
        values, p_true = jsd_to_onehot(probs, labels)
        np.testing.assert_allclose(values, scipy_values, atol=1e-12)
        np.testing.assert_allclose(values, jsd(probs, onehot), atol=1e-12)
        np.testing.assert_allclose(p_true, probs[np.arange(200), labels])


@pytest.mark.parametrize("p, expected", [(1.0, 0.0), (0.0, 1.0), (0.5, 0.3112781244591328)])
def test_closed_form_known_values(p, expected):
    assert jsd_from_p_true(p) == pytest.approx(expected, abs=1e-12)


def test_tau_0311_is_p_true_one_half():
    assert TAU_AT_P_HALF == pytest.approx(0.311, abs=5e-4)
    assert p_true_at_jsd(TAU_AT_P_HALF) == pytest.approx(0.5, abs=1e-9)


def test_monotone_decreasing_in_p_true_and_bounded():
    p = np.linspace(0, 1, 1001)
    values = jsd_from_p_true(p)
    assert np.all(np.diff(values) < 0) and values.min() >= 0 and values.max() <= 1


@pytest.mark.parametrize("tau", [0.001, 0.03, 0.2, 0.5, 0.9, 0.999])
def test_inverse_round_trip(tau):
    assert jsd_from_p_true(p_true_at_jsd(tau)) == pytest.approx(tau, abs=1e-9)


def test_inverse_edges():
    assert p_true_at_jsd(1.0) == 0.0 and p_true_at_jsd(0.0) == 1.0


def test_jsd_figure_marks_share_a_line_when_their_tau_is_the_same():
    """jsd_end 0.311 bits is p_true = 0.5: one line with both names, not two labels over each other."""
    from entromix.scoring.jsd_plots import threshold_marks

    marks = threshold_marks({"jsd_start": 0.03, "jsd_end": 0.311})
    assert marks == [(["jsd_start"], 0.03), (["jsd_end", "p_true = 0.5"], 0.311)]
    assert [names for names, _ in threshold_marks({"jsd_end": 1.0})] == [["p_true = 0.5"], ["jsd_end"]]
