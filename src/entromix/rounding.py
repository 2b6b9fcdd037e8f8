"""Rounding for metrics files: floats to a fixed number of digits, everything else as it is."""

from __future__ import annotations

import numpy as np


def round_floats(obj, digits: int):
    """Round every float in a nested dict; ints, bools, strings and None are kept (``dvc metrics diff`` reads them)."""
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, bool, np.bool_)):
        return bool(obj) if isinstance(obj, np.bool_) else obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    return round(float(obj), digits)
