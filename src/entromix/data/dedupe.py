"""Exact-duplicate handling (same sha256 of the file bytes).

Files are visited in a fixed order: real before synthetic, then split (train, val, test), then
path. The first copy of each hash is kept. A later copy is:

* collapsed (dropped, counted, listed in ``duplicates.csv``) when it sits in the same split and
  the same pool (real or synthetic) as the kept copy: it adds nothing but weight;
* an error when it has a different label: one image cannot be both benign and malignant (an
  unlabelled image, label -1, has none: its labelled copy is kept and it is a leak, below);
* leakage when it sits in another split, or in the other pool (a "synthetic" image that is a real
  one): an error, unless ``duplicates_across: drop``, which drops the later copy.

In the flat layout the real images are deduplicated before the split is made, so real copies
can never end up on both sides of it.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from entromix.common.errors import DataError, listing

AcrossPolicy = Literal["error", "drop"]

_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2, "unlabelled": 3}  # a labelled copy is the one kept


def visit_order(files: pd.DataFrame) -> pd.DataFrame:
    """Sort files into the canonical order: real first, then split, then source path."""
    key = pd.DataFrame(
        {
            "syn": files["is_syn"].astype(int),
            "split": files["split"].map(_SPLIT_ORDER).fillna(-1),
            "path": files["path"],
        },
        index=files.index,
    )
    return files.loc[key.sort_values(["syn", "split", "path"], kind="stable").index]


def find_duplicates(files: pd.DataFrame, across: AcrossPolicy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``files`` into the kept rows and a report of dropped copies.

    Args:
        files: one row per file with columns path, source, sha256, class, label, split
            (None before a split is made), is_syn.
        across: what to do with copies in another split or pool: ``error`` or ``drop``.

    Returns:
        (kept, dropped): ``kept`` in canonical order; ``dropped`` with columns path, source,
        kept_path, kept_source, reason (``within_split`` or ``across_splits``).
    """
    ordered = visit_order(files)
    first: dict[str, pd.Series] = {}
    drop_rows, conflicts, leaks = [], [], []
    copies = ordered[ordered["sha256"].duplicated(keep=False)]  # only hashes seen twice or more
    for idx, row in copies.iterrows():
        kept = first.get(row["sha256"])
        if kept is None:
            first[row["sha256"]] = row
            continue
        where = f"{row['source']}/{row['path']}"
        kept_where = f"{kept['source']}/{kept['path']}"
        if row["label"] != kept["label"] and min(row["label"], kept["label"]) >= 0:  # -1: unlabelled
            conflicts.append(f"{where} ({row['class']}) = {kept_where} ({kept['class']})")
            continue
        same_bucket = row["is_syn"] == kept["is_syn"] and row["split"] == kept["split"]
        if not same_bucket:
            leaks.append(f"{where} [{row['split']}] = {kept_where} [{kept['split']}]")
            if across == "error":
                continue
        drop_rows.append(
            {
                "index": idx,
                "path": row["path"],
                "source": row["source"],
                "kept_path": kept["path"],
                "kept_source": kept["source"],
                "reason": "within_split" if same_bucket else "across_splits",
            }
        )
    if conflicts:
        raise DataError(
            f"{len(conflicts)} image(s) appear under two labels (identical files, different class "
            f"folders): {listing(conflicts)}. Keep each image under one class folder and re-run."
        )
    if leaks and across == "error":
        raise DataError(
            f"{len(leaks)} identical image(s) appear in two splits or in both the real and the "
            f"synthetic folders (leakage: the model would be tested on what it trained on): "
            f"{listing(leaks)}. Remove the copies, or set ingest.duplicates_across: drop to keep "
            "the first copy (real before synthetic, train before val before test) and drop the rest."
        )
    dropped = pd.DataFrame(drop_rows, columns=["index", "path", "source", "kept_path", "kept_source", "reason"])
    kept = ordered.drop(index=dropped["index"].tolist())
    return kept, dropped.drop(columns="index")
