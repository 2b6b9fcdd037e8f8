"""The evaluate stage's picture figures: the synthetic pool gallery and Grad-CAM of test cases.

:func:`picture_figures` does the work (selection, Grad-CAM) and returns one ``draw(path)`` per
figure name, which ``entromix.evaluation.outputs.write_outputs`` calls inside its all-or-none write.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from entromix.common.stage_io import Prepared
from entromix.evaluation.figures import plot_confusion_matrix
from entromix.evaluation.gallery import gallery_figures
from entromix.evaluation.gradcam import gradcam_figure, select_cases
from entromix.evaluation.report import EvaluateConfig
from entromix.training.checkpoints import TrainedModel

Draw = Callable[[Path], None]


def picture_figures(
    config: EvaluateConfig,
    trained: TrainedModel,
    prepared: Prepared,
    dataset: pd.DataFrame,
    history: pd.DataFrame,
    run: dict[str, Any],
    test: pd.DataFrame,
    predictions: pd.DataFrame,
    threshold: float,
    side_classes: np.ndarray | None = None,
    multiclass: dict | None = None,
) -> dict[str, Draw]:
    """``synthetic_gallery``, ``synthetic_tiers`` and ``gradcam`` figures.

    ``test``: the real test rows of the manifest, in the order of ``predictions`` (label, probability).
    ``side_classes``: (N, 2) per test image, the label Grad-CAM explains when it is called benign
    and when malignant (the most probable label of that side; None: labels 0 and 1).
    ``multiclass``: evaluate.json's K-class metrics; with them a ``confusion_multiclass`` figure."""
    figures = gallery_figures(
        dataset,
        prepared.tiers,
        prepared.images,
        history,
        run,
        config.gallery_per_side,
        config.gallery_sample,
        config.seed,
    )
    y, p = predictions["label"].to_numpy(), predictions["probability"].to_numpy(dtype=np.float64)
    cases = select_cases(y, p, threshold, config.gradcam_errors, config.gradcam_correct, config.seed)
    figures["gradcam"] = gradcam_figure(
        trained,
        test["id"].to_numpy(),
        prepared.images,
        y,
        p,
        threshold,
        cases,
        trained.label_space.binary_names,
        side_classes,
    )
    if multiclass is not None:
        counts, names = multiclass["confusion"], multiclass["labels"]
        figures["confusion_multiclass"] = lambda path: plot_confusion_matrix(counts, names, path)
    return figures
