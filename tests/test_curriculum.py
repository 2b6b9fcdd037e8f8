"""The threshold schedule tau(t): the reference's values, warmup, pacing, validation."""

import pytest

from entromix.common.errors import ParamsError
from entromix.scoring.jsd import TAU_AT_P_HALF
from entromix.training.curriculum import CurriculumConfig, p_true_equivalent, schedule, threshold


def config(**overrides) -> CurriculumConfig:
    values = dict(
        warmup_epochs=20,
        jsd_start=0.03,
        jsd_end=1.0,
        pacing="linear",
        gate="hard",
        gate_temperature=0.02,
        max_synthetic_fraction=0.5,
        synthetic_slots="replace",
        strategy="curriculum",
        rescore_every=0,
        pseudo_labels=False,
        pseudo_threshold=0.95,
        pseudo_every=1,
    )
    values.update(overrides)
    return CurriculumConfig(**values)


def test_reference_schedule_values():
    ref = config()
    assert all(threshold(t, 90, ref) is None for t in range(20))  # warmup: real only
    assert threshold(20, 90, ref) == pytest.approx(0.03)
    assert threshold(89, 90, ref) == pytest.approx(1.0)  # the 90th (last) epoch trains at jsd_end
    assert threshold(90, 90, ref) == pytest.approx(1.0)  # clamped beyond the end
    assert threshold(1000, 90, ref) == pytest.approx(1.0)


def test_linear_ramp_is_monotone_and_evenly_spaced():
    taus = schedule(90, config())[20:]
    steps = [b - a for a, b in zip(taus, taus[1:])]
    assert all(s == pytest.approx(0.97 / 69) for s in steps)


def test_sqrt_pacing_opens_faster_and_ends_at_jsd_end():
    lin, sq = config(), config(pacing="sqrt")
    assert threshold(20, 90, sq) == pytest.approx(0.03)
    assert threshold(89, 90, sq) == pytest.approx(1.0)
    assert all(threshold(t, 90, sq) >= threshold(t, 90, lin) for t in range(20, 90))
    assert threshold(37, 90, sq) == pytest.approx(0.03 + 0.97 * (17 / 69) ** 0.5)


def test_no_warmup_and_single_ramp_epoch():
    assert threshold(0, 10, config(warmup_epochs=0)) == pytest.approx(0.03)
    assert threshold(9, 10, config(warmup_epochs=9)) == pytest.approx(1.0)  # one ramp epoch: jsd_end


def test_p_true_equivalent():
    assert p_true_equivalent(None) is None
    assert p_true_equivalent(TAU_AT_P_HALF) == pytest.approx(0.5, abs=1e-9)
    assert p_true_equivalent(1.0) == 0.0
    assert 0.9 < p_true_equivalent(0.03) < 0.95


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"jsd_start": 0.5, "jsd_end": 0.2}, "jsd_start"),
        ({"jsd_end": 1.5}, "jsd_end"),
        ({"warmup_epochs": -1}, "warmup_epochs"),
        ({"gate_temperature": 0.0}, "gate_temperature"),
        ({"max_synthetic_fraction": 1.0}, "max_synthetic_fraction"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ParamsError, match=f"curriculum.{key}"):
        config(**overrides)


def test_warmup_must_leave_ramp_epochs():
    with pytest.raises(ParamsError, match="warmup_epochs .* train.epochs"):
        config(warmup_epochs=30).check_epochs(30)
    config(warmup_epochs=29).check_epochs(30)
