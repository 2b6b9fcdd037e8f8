"""Scarce-data experiments: keep only ``N`` real training images of one label (or of several, in total).

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

#: the split of real images without a label (ingest.unlabelled_dir, or hidden by scarce_unlabelled)
UNLABELLED = "unlabelled"


def limit_real_training(
    files: pd.DataFrame, labels: list[int], keep: int | None, seed: int, label_name: str, hide: bool = False
) -> tuple[pd.DataFrame, int]:
    """Keep ``keep`` real training rows whose label is one of ``labels`` (a seeded draw), all other
    rows unchanged. The same files are drawn whether their malignant subtypes are one label or
    several (``[malignant]`` or ``[early, pre, pro]``): the draw only sees paths.

    Args:
        files: one row per image with columns ``is_syn``, ``split``, ``label`` and ``path``.
        keep: how many to keep; ``None`` keeps every one.
        seed: which ones: the draw is ``default_rng([seed])`` over the candidates sorted by path,
            so it does not depend on file listing order.

        hide: keep the other candidates as unlabelled images (split ``unlabelled``, label -1; the
            class folder stays, so self-training can be measured against the hidden labels)
            instead of dropping them.

    Returns:
        The rows (original order) and the number dropped (or hidden).
    """
    if keep is None:
        return files, 0
    candidates = files.index[
        (~files["is_syn"].astype(bool)) & (files["split"] == "train") & files["label"].isin(labels)
    ]
    if len(candidates) < keep:
        raise DataError(
            f"ingest.scarce_train_images is {keep} but there are only {len(candidates)} real training images "
            f"labelled {label_name!r}. Lower it, or set it to null to keep them all."
        )
    ordered = files.loc[candidates].sort_values("path", kind="stable").index.to_numpy()
    kept = set(np.random.default_rng([seed]).choice(ordered, size=keep, replace=False).tolist())
    dropped = [i for i in ordered if i not in kept]
    if hide:
        files = files.copy()
        files.loc[dropped, "split"] = UNLABELLED
        files.loc[dropped, "label"] = -1
        return files, len(dropped)
    return files.drop(index=dropped), len(dropped)
