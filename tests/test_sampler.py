"""Invariants of the class-balanced curriculum batch sampler."""

import numpy as np
import pytest

from entromix.common.errors import DataError
from entromix.training.sampler import CurriculumBatchSampler

# the reference's scenario: 120 benign + 40 malignant real, 40 synthetic, batches of 16
REAL = np.array([0] * 120 + [1] * 40)
SYN_JSD = np.linspace(0.0, 1.0, 40)


def sampler(real=REAL, jsd=SYN_JSD, batch_size=16, cap=0.5, seed=0) -> CurriculumBatchSampler:
    return CurriculumBatchSampler(real, jsd, batch_size, cap, seed)


@pytest.mark.parametrize("tau", [None, 0.0, 0.05, 0.3, 1.0])
def test_batch_count_size_and_no_repeats(tau):
    s = sampler()
    plan = s.epoch(3, tau)
    assert len(plan.batches) == 160 // 16 == s.num_batches
    assert all(len(b) == 16 for b in plan.batches)
    rows = np.concatenate(plan.batches)
    assert len(np.unique(rows)) == len(rows)  # no image, real or synthetic, twice in an epoch
    assert rows.min() >= 0 and rows.max() < 200


def test_warmup_has_no_synthetic():
    plan = sampler().epoch(0, None)
    assert plan.eligible == plan.placed == 0
    assert all((b < 160).all() for b in plan.batches)
    assert sorted(np.concatenate(plan.batches)) == list(range(160))  # every real image exactly once


@pytest.mark.parametrize("tau", [0.05, 0.2, 0.31, 0.6])
def test_only_eligible_synthetic_and_spread_evenly(tau):
    plan = sampler().epoch(5, tau)
    eligible = set(160 + np.flatnonzero(SYN_JSD <= tau))
    syn = [b[b >= 160] for b in plan.batches]
    assert set(np.concatenate(syn)) == eligible  # all eligible placed (under the cap), nothing else
    assert plan.eligible == plan.placed == len(eligible)
    counts = [len(x) for x in syn]
    assert max(counts) - min(counts) <= 1


def test_real_part_keeps_the_class_ratio_in_every_batch():
    for tau in (None, 0.1, 0.5, 1.0):
        for batch in sampler().epoch(7, tau).batches:
            real = REAL[batch[batch < 160]]
            n = len(real)
            assert abs((real == 1).sum() - n * 40 / 160) < 1 + 1e-9
            assert abs((real == 0).sum() - n * 120 / 160) < 1 + 1e-9


def test_three_classes_and_uneven_counts():
    real = np.array([0] * 53 + [1] * 29 + [2] * 11)  # 93 real, fractions not multiples of the batch
    s = CurriculumBatchSampler(real, np.full(25, 0.01), 10, 0.3, seed=4)
    plan = s.epoch(0, 0.05)
    assert len(plan.batches) == 9 and plan.placed == 25
    rows = np.concatenate(plan.batches)
    assert len(np.unique(rows)) == len(rows)
    for batch in plan.batches:
        part = real[batch[batch < 93]]
        for c, n_c in ((0, 53), (1, 29), (2, 11)):
            assert abs((part == c).sum() - len(part) * n_c / 93) < 1 + 1e-9


def test_cap_limits_synthetic_per_batch():
    s = sampler(jsd=np.zeros(200), cap=0.25)  # 200 eligible, room for 4 per batch
    plan = s.epoch(0, 0.5)
    assert plan.eligible == 200 and plan.placed == 40
    assert all((b >= 160).sum() == 4 for b in plan.batches)


def test_seeded_and_different_per_epoch():
    a, b = sampler(seed=1).epoch(2, 0.4), sampler(seed=1).epoch(2, 0.4)
    assert all(np.array_equal(x, y) for x, y in zip(a.batches, b.batches))
    c = sampler(seed=1).epoch(3, 0.4)
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches, c.batches))
    d = sampler(seed=2).epoch(2, 0.4)
    assert not all(np.array_equal(x, y) for x, y in zip(a.batches, d.batches))


def test_soft_gate_margin_widens_eligibility():
    s = sampler()
    assert s.epoch(0, 0.1, margin=0.08).eligible == (SYN_JSD <= 0.18).sum()


def test_batch_larger_than_real_set_is_a_clear_error():
    with pytest.raises(DataError, match="train.batch_size is 200"):
        sampler(batch_size=200)


def test_batch_must_hold_each_class():
    with pytest.raises(DataError, match="one\\s+real image of each"):
        CurriculumBatchSampler(np.array([0, 1, 2] * 10), np.zeros(3), 4, 0.5, 0)


def test_min_batches_lengthen_the_epoch_keeping_the_ratio_and_even_repeats():
    s = CurriculumBatchSampler(REAL, SYN_JSD, 16, 0.5, seed=0, min_batches=25)
    assert s.num_batches == 25
    plan = s.epoch(2, None)
    assert len(plan.batches) == 25 and all(len(b) == 16 for b in plan.batches)
    rows = np.concatenate(plan.batches)
    counts = np.bincount(rows, minlength=160)
    benign, malignant = counts[:120], counts[120:]
    assert (rows < 160).all()
    assert benign.max() - benign.min() <= 1 and malignant.max() - malignant.min() <= 1  # floor or ceil each
    assert benign.sum() == 300 and malignant.sum() == 100  # 400 slots at 3:1
    assert all(np.sum(b >= 120) in (4,) for b in plan.batches)  # every batch keeps 12 + 4


def test_min_batches_below_one_pass_change_nothing():
    a, b = sampler(), CurriculumBatchSampler(REAL, SYN_JSD, 16, 0.5, seed=0, min_batches=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.epoch(4, 0.3).batches, b.epoch(4, 0.3).batches))


@pytest.mark.parametrize("tau", [None, 0.3, 1.0])
def test_add_slots_keep_every_real_image_and_put_synthetic_on_top(tau):
    s = CurriculumBatchSampler(REAL, SYN_JSD, 16, 0.5, seed=0, synthetic_slots="add")
    assert s.synthetic_per_batch_cap == 16  # fraction 0.5 of the batch: as many synthetic as real
    plan = s.epoch(3, tau)
    real = [b[b < 160] for b in plan.batches]
    assert all(len(r) == 16 for r in real)  # synthetic images never take a real slot
    assert sorted(np.concatenate(real)) == list(range(160))
    assert plan.placed == (0 if tau is None else int((SYN_JSD <= tau).sum()))
    quarter = CurriculumBatchSampler(REAL, SYN_JSD, 16, 0.2, seed=0, synthetic_slots="add")
    assert quarter.synthetic_per_batch_cap == 4  # 4 / (16 + 4) = 0.2


def test_sampler_and_loss_agree_on_an_image_exactly_at_tau():
    """One gate test (``entromix.training.gate.within``, float32) for both: an image whose float32
    score equals float32(tau) is eligible for the sampler and weighs 1 in the loss."""
    import torch

    from entromix.training.gate import gate_weights

    tau = 0.3  # float32(0.3) = 0.30000001 > 0.3: a float64 comparison in one of them would split them
    at = np.float32(tau)
    jsd = np.array([np.nextafter(at, np.float32(0)), at, np.nextafter(at, np.float32(1))], dtype=np.float32)
    sampler = CurriculumBatchSampler(np.array([0, 1] * 4), jsd, batch_size=4, max_synthetic_fraction=0.5, seed=0)
    eligible = (sampler.eligible(tau) - sampler.n_real).tolist()
    weights = gate_weights(torch.ones(3, dtype=torch.bool), torch.from_numpy(jsd), tau).tolist()
    assert eligible == [0, 1] and weights == [1.0, 1.0, 0.0]
