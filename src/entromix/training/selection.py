"""Which epoch becomes ``best.pt`` and when a run stops early: the checkpoint selection rules."""

from __future__ import annotations

import math

from entromix.training.config import SelectMetric
from entromix.training.curriculum import CurriculumConfig, threshold


def is_better(metric: SelectMetric, row: dict, best: dict | None) -> bool:
    """Higher is better (val_loss: lower); ties go to the lower validation loss, then the earlier epoch."""
    if best is None:
        return True
    sign = -1.0 if metric == "val_loss" else 1.0
    value, best_value = row[metric], best[metric]
    value = -math.inf if value is None else sign * value
    best_value = -math.inf if best_value is None else sign * best_value
    if value != best_value:
        return value > best_value
    return row["val_loss"] < best["val_loss"]


def selectable(epoch: int, epochs: int, curriculum: CurriculumConfig) -> bool:
    """Whether ``epoch`` may become ``best.pt``: every epoch of a run that never admits a gated
    image (``real_only``), else only the epochs the gate is open (a curriculum's warmup epochs
    train on real images alone: a model from them is a ``real_only`` model under the curriculum's name)."""
    return threshold(epoch, epochs, curriculum) is not None or threshold(epochs - 1, epochs, curriculum) is None


def stops_early(history: list[dict], best_row: dict | None, patience: int | None) -> bool:
    """``train.early_stopping_patience`` epochs have passed since the best epoch. tau and the LR
    schedule keep referring to the planned ``train.epochs``: stopping early only cuts the run."""
    return patience is not None and best_row is not None and history[-1]["epoch"] - best_row["epoch"] >= patience
