"""Rounding: metrics files' floats to a fixed number of digits, and fractions to integer counts
that add up exactly (used by the splits and by the batch sampler)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def round_floats(obj, digits: int):
    """Round every float in a nested dict (and list); ints, bools, strings and None are kept (``dvc metrics
    diff`` reads them)."""
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        return bool(obj) if isinstance(obj, np.bool_) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    return round(float(obj), digits)


def largest_remainder(total: int, fractions: Sequence[float]) -> np.ndarray:
    """Integer counts proportional to ``fractions`` that sum to ``total`` (ties: earlier first)."""
    fractions = np.asarray(fractions, dtype=np.float64)
    exact = total * fractions / fractions.sum()
    counts = np.floor(exact).astype(np.int64)
    leftover = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts
