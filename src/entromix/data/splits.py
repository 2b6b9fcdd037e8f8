"""Train/val/test splits that keep every class's share, optionally keeping patients together.

* ``largest_remainder`` (``entromix.common.rounding``) turns fractions into integer counts that add up exactly
  (Hamilton's method: floor every share, then give the leftover units to the largest remainders).
* :func:`stratified_split`: per stratum (the class folder, so subtypes such as Early/Pre/Pro keep
  their shares too), shuffle with the seed and cut by the largest-remainder counts.
* :func:`grouped_split`: whole groups (patients) go to one split. Groups are placed largest first
  (ties in seeded random order), each into the split where it most reduces the squared relative
  gap between the split's per-stratum counts and its targets ``fraction * stratum size``. Exact
  shares are impossible with whole groups; the result is close when groups are small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from entromix.common.errors import DataError
from entromix.common.rounding import largest_remainder


def stratified_split(strata: Sequence[str], fractions: Mapping[str, float], seed: int) -> np.ndarray:
    """Assign each item to a split, keeping each stratum's share in every split.

    Args:
        strata: one stratum label per item (the class folder name).
        fractions: split name -> fraction (sums to 1).
        seed: the shuffle seed; same inputs and seed give the same split.

    Returns:
        (N,) array of split names. Every split with a positive fraction gets at least one item of
        a stratum whenever the stratum has at least as many items as there are such splits.
    """
    names = list(fractions)
    fracs = [fractions[n] for n in names]
    strata = np.asarray(strata, dtype=object)
    out = np.empty(len(strata), dtype=object)
    rng = np.random.default_rng(seed)
    for stratum in sorted(set(strata.tolist())):
        idx = np.flatnonzero(strata == stratum)
        idx = idx[rng.permutation(len(idx))]
        counts = _at_least_one(largest_remainder(len(idx), fracs), fracs)
        start = 0
        for name, count in zip(names, counts):
            out[idx[start : start + count]] = name
            start += count
    return out


def _at_least_one(counts: np.ndarray, fracs: Sequence[float]) -> np.ndarray:
    """Move single items from the largest split into empty positive-fraction splits."""
    counts = counts.copy()
    wanted = [i for i, f in enumerate(fracs) if f > 0]
    if counts.sum() < len(wanted):
        return counts
    for i in wanted:
        if counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] = 1
    return counts


def grouped_split(
    strata: Sequence[str], groups: Sequence[str], fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Assign whole groups to splits while keeping each stratum's share close to its target.

    Returns (N,) split names; all items of one group get the same split.
    """
    names = [n for n in fractions if fractions[n] > 0]
    fracs = np.array([fractions[n] for n in names], dtype=np.float64)
    strata = np.asarray(strata, dtype=object)
    groups = np.asarray(groups, dtype=object)
    stratum_ids = {s: i for i, s in enumerate(sorted(set(strata.tolist())))}
    group_names = sorted(set(groups.tolist()))
    if len(group_names) < len(names):
        raise DataError(
            f"only {len(group_names)} patient group(s) for {len(names)} splits: every split needs at "
            "least one group. Add groups, or set ingest.groups_csv: null to split by image."
        )
    group_ids = {g: i for i, g in enumerate(group_names)}
    # (G, S) items of each stratum in each group
    composition = np.zeros((len(group_names), len(stratum_ids)), dtype=np.int64)
    np.add.at(composition, ([group_ids[g] for g in groups], [stratum_ids[s] for s in strata]), 1)
    target = fracs[:, None] * composition.sum(axis=0)[None, :]  # (splits, S)
    scale = np.maximum(target, 1.0)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(group_names))
    order = order[np.argsort(-composition[order].sum(axis=1), kind="stable")]  # largest first
    current = np.zeros_like(target)
    assigned = np.empty(len(group_names), dtype=np.int64)
    for placed, g in enumerate(order):
        before = (((current - target) / scale) ** 2).sum(axis=1)
        after = (((current + composition[g] - target) / scale) ** 2).sum(axis=1)
        cost = after - before
        empty = current.sum(axis=1) == 0
        # when only as many groups remain as splits are empty, each must go to an empty split
        if empty.any() and len(order) - placed <= empty.sum():
            cost = np.where(empty, cost, np.inf)
        best = int(np.argmin(cost))
        assigned[g] = best
        current[best] += composition[g]
    split_of_group = np.array(names, dtype=object)[assigned]
    return split_of_group[[group_ids[g] for g in groups]]
