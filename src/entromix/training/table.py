"""The training table: real training rows first, then the synthetic pool, joined from the score
stage's ``dataset.csv`` and ingest's array, manifest and tier table."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from entromix.common.errors import DataError


@dataclass
class TrainingTable:
    """Rows of the training set: real training images first, then the synthetic pool.

    images: uint8 (N, H, W, 3); labels int64 (N,); is_syn bool (N,); jsd float32 (N,) bits (0 for
    real rows, never read); ids: row of each image in the prepared array (N,); tiers: the known
    quality tier of each row ("" for real rows and unknown ones), read only by the oracle_gate
    diagnostic, or None when no tiers file exists.
    """

    images: np.ndarray
    labels: np.ndarray
    is_syn: np.ndarray
    jsd: np.ndarray
    ids: np.ndarray
    tiers: np.ndarray | None = None

    @property
    def n_real(self) -> int:
        return int((~self.is_syn).sum())


def training_table(
    images: np.ndarray, manifest: pd.DataFrame, dataset: pd.DataFrame, source: str = "data/dataset.csv"
) -> TrainingTable:
    """Join the score stage's ``dataset.csv`` (jsd per training image) to ingest's array and manifest."""
    missing = ~dataset["id"].isin(manifest["id"])
    if missing.any():
        raise DataError(
            f"{source}: {int(missing.sum())} row(s) name an id not in data/prepared/manifest.csv "
            f"(first: {dataset.loc[missing, 'filename'].iloc[0]}). Rerun the score stage (dvc repro score)."
        )
    jsd = pd.to_numeric(dataset["jsd_score"], errors="coerce")
    bad = jsd.isna() | (jsd < 0) | (jsd > 1)
    if bad.any():
        row = dataset.loc[bad].iloc[0]
        raise DataError(
            f"{source}: jsd_score must be a number in [0, 1] bits; {int(bad.sum())} row(s) are not "
            f"(first: {row['filename']} = {str(row['jsd_score'])!r}). Rerun the score stage."
        )
    data = dataset.assign(jsd_score=jsd).sort_values(["is_syn", "id"], kind="stable").reset_index(drop=True)
    known = manifest.set_index("id").loc[data["id"]]
    if {"source", "path"} <= set(manifest.columns):
        # the file of each row must be the manifest's: a hand-edited path (../, absolute, another
        # image) is refused rather than trusted; data roots may legitimately lie outside the project
        expected = (known["source"].astype(str) + "/" + known["path"].astype(str)).to_numpy()
        moved = data["filename"].astype(str).to_numpy() != expected
        if moved.any():
            first = int(np.flatnonzero(moved)[0])
            raise DataError(
                f"{source}: {int(moved.sum())} row(s) name a different file than data/prepared/manifest.csv "
                f"for their id (first: id {int(data['id'].iloc[first])} is {data['filename'].iloc[first]!r}, "
                f"expected {expected[first]!r}). Rerun the score stage (dvc repro score) instead of "
                "editing the file by hand."
            )
    labels = known["label"].to_numpy()
    if (labels != data["label"].to_numpy()).any():
        raise DataError(f"{source}: labels disagree with data/prepared/manifest.csv. Rerun the score stage.")
    ids = data["id"].to_numpy(dtype=np.int64)
    return TrainingTable(
        images=np.asarray(images[ids]),
        labels=np.array(data["label"], dtype=np.int64),  # np.array: writable copies for torch.from_numpy
        is_syn=np.array(data["is_syn"], dtype=bool),
        jsd=np.array(data["jsd_score"], dtype=np.float32),
        ids=ids,
    )


def place_on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 array on ``device`` once when it fits in half the free memory, else in pinned host memory."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    free, _ = torch.cuda.mem_get_info(device)
    return tensor.to(device) if tensor.numel() < free // 2 else tensor.pin_memory()


def synthetic_tiers(table: TrainingTable, tiers: pd.DataFrame) -> pd.Series | None:
    """The known quality tier of each synthetic row of ``table`` from ingest's tier table
    (``synthetic_tiers.csv``; "" where unknown), or None when no tier is known."""
    if tiers is None or tiers.empty or not {"id", "tier"} <= set(tiers.columns):
        return None
    by_id = dict(zip(tiers["id"].astype(int), tiers["tier"].astype(str)))
    return pd.Series([by_id.get(int(i), "") for i in table.ids[table.is_syn]], dtype=object)


def with_tiers(table: TrainingTable, synthetic: pd.Series | None) -> TrainingTable:
    """``table`` with the known tier of each row (:func:`synthetic_tiers` gives the synthetic rows')."""
    if synthetic is None:
        return table
    tiers = np.full(len(table.labels), "", dtype=object)
    tiers[table.is_syn] = synthetic.to_numpy(dtype=object)
    return replace(table, tiers=tiers)
