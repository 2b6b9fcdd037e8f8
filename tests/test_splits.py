"""Splits: exact stratified counts, whole patient groups, determinism."""

from collections import Counter

import numpy as np
import pytest

from entromix.common.errors import DataError
from entromix.data.splits import grouped_split, largest_remainder, stratified_split

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.mark.parametrize(
    "total, fractions, expected",
    [
        (10, (0.6, 0.2, 0.2), [6, 2, 2]),
        (7, (0.6, 0.2, 0.2), [4, 2, 1]),
        (3, (1, 1, 1), [1, 1, 1]),
        (0, (0.5, 0.5), [0, 0]),
    ],
)
def test_largest_remainder_known_answers(total, fractions, expected):
    assert largest_remainder(total, fractions).tolist() == expected


def test_largest_remainder_always_sums_to_total():
    rng = np.random.default_rng(0)
    for _ in range(200):
        fr = rng.dirichlet(np.ones(rng.integers(2, 6)))
        n = int(rng.integers(0, 500))
        counts = largest_remainder(n, fr)
        assert counts.sum() == n and (counts >= 0).all()
        assert np.all(np.abs(counts - n * fr) < 1)  # within one of the exact share


def test_stratified_split_keeps_each_class_share():
    strata = ["Benign"] * 100 + ["Early"] * 20 + ["Pre"] * 7
    splits = stratified_split(strata, FRACTIONS, seed=0)
    counts = Counter(zip(strata, splits))
    for cls, n in Counter(strata).items():
        expected = largest_remainder(n, list(FRACTIONS.values()))
        assert [counts[(cls, s)] for s in FRACTIONS] == expected.tolist()


def test_stratified_split_is_seeded():
    strata = ["a"] * 30 + ["b"] * 10
    same = stratified_split(strata, FRACTIONS, seed=1)
    assert (same == stratified_split(strata, FRACTIONS, seed=1)).all()
    assert not (same == stratified_split(strata, FRACTIONS, seed=2)).all()


def test_small_class_still_reaches_every_split():
    splits = stratified_split(["a"] * 40 + ["b"] * 3, FRACTIONS, seed=0)
    assert sorted(splits[40:]) == ["test", "train", "val"]


def test_grouped_split_keeps_groups_whole_and_close_to_targets():
    rng = np.random.default_rng(0)
    strata, groups = [], []
    for g in range(60):
        cls = "Benign" if g < 45 else "Early"
        n = int(rng.integers(2, 7))
        strata += [cls] * n
        groups += [f"P{g}"] * n
    splits = grouped_split(strata, groups, FRACTIONS, seed=0)
    by_group = {}
    for g, s in zip(groups, splits):
        assert by_group.setdefault(g, s) == s  # a patient never spans two splits
    for cls in ("Benign", "Early"):
        n = strata.count(cls)
        for name, frac in FRACTIONS.items():
            got = sum(1 for c, s in zip(strata, splits) if c == cls and s == name)
            assert abs(got - frac * n) <= 6, (cls, name, got, frac * n)  # at most one group off


def test_grouped_split_fills_every_split_and_is_seeded():
    strata = ["a"] * 8 + ["b"] * 4
    groups = ["g1", "g1", "g2", "g2", "g3", "g3", "g4", "g4", "g5", "g5", "g6", "g6"]
    first = grouped_split(strata, groups, FRACTIONS, seed=3)
    assert set(first) == {"train", "val", "test"}
    assert (first == grouped_split(strata, groups, FRACTIONS, seed=3)).all()


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(DataError, match="patient group"):
        grouped_split(["a"] * 4, ["g1", "g1", "g2", "g2"], FRACTIONS, seed=0)
