"""Scarce-data experiments: keep only ``N`` real training images of one label.

Synthetic images exist for the case where real images of a class are scarce, so the question
"does the curriculum help?" has to be asked at several real training sizes. ``ingest`` applies
this after the split: validation and test sets are untouched (every setting is measured on the
same images), the dropped training images are not decoded, and the score stage's reference
classifier only sees the kept ones (it must not know more than the user would have).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from entromix.common.errors import DataError


def limit_real_training(files: pd.DataFrame, label: int, keep: int | None, seed: int, label_name: str) -> tuple[pd.DataFrame, int]:
    """Keep ``keep`` real training rows of ``label`` (a seeded draw), all other rows unchanged.

    Args:
        files: one row per image with columns ``is_syn``, ``split``, ``label`` and ``path``.
        keep: how many to keep; ``None`` keeps every one.
        seed: which ones: the draw is ``default_rng([seed])`` over the candidates sorted by path,
            so it does not depend on file listing order.

    Returns:
        The kept rows (original order) and the number dropped.
    """
    if keep is None:
        return files, 0
    candidates = files.index[(~files["is_syn"].astype(bool)) & (files["split"] == "train") & (files["label"] == label)]
    if len(candidates) < keep:
        raise DataError(
            f"ingest.scarce_train_images is {keep} but there are only {len(candidates)} real training images "
            f"labelled {label_name!r}. Lower it, or set it to null to keep them all."
        )
    ordered = files.loc[candidates].sort_values("path", kind="stable").index.to_numpy()
    kept = set(np.random.default_rng([seed]).choice(ordered, size=keep, replace=False).tolist())
    dropped = [i for i in ordered if i not in kept]
    return files.drop(index=dropped), len(dropped)
