"""The training table: real training rows first, then the synthetic pool, then any unlabelled real
images (self-training), joined from the score stage's ``dataset.csv`` and ingest's array, manifest
and tier table."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from entromix.common.errors import DataError


@dataclass
class TrainingTable:
    """Rows of the training set: real training images first, then the synthetic pool, then the
    unlabelled real images (none unless ``ingest.unlabelled_dir`` or ``scarce_unlabelled``).

    images: uint8 (N, H, W, 3); labels int64 (N,) (0 for unlabelled rows until pseudo-labelled);
    is_syn bool (N,): the rows the gate decides on, synthetic and unlabelled ones; jsd float32
    (N,) bits (0 for real and unlabelled rows, never read); ids: row of each image in the prepared
    array (N,); tiers: the known quality tier of each row ("" for real rows and unknown ones),
    read only by the oracle_gate diagnostic, or None when no tiers file exists; unlabelled: bool
    (N,) the unlabelled rows, or None when there are none; hidden: (N,) the true label of an
    unlabelled row where ingest.scarce_unlabelled hid it (-1 elsewhere), measurement only.
    """

    images: np.ndarray
    labels: np.ndarray
    is_syn: np.ndarray
    jsd: np.ndarray
    ids: np.ndarray
    tiers: np.ndarray | None = None
    unlabelled: np.ndarray | None = None
    hidden: np.ndarray | None = None

    @property
    def n_real(self) -> int:
        return int((~self.is_syn).sum())

    @property
    def n_unlabelled(self) -> int:
        return 0 if self.unlabelled is None else int(self.unlabelled.sum())

    @property
    def n_synthetic(self) -> int:
        return int(self.is_syn.sum()) - self.n_unlabelled


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


def with_unlabelled(
    table: TrainingTable, images: np.ndarray, manifest: pd.DataFrame, class_map: dict, labels: list[str]
) -> TrainingTable:
    """``table`` with the manifest's unlabelled real images (split ``unlabelled``) appended. Their
    class folder, where ``ingest.scarce_unlabelled`` hid a label, gives ``hidden`` (measurement
    only: how many pseudo-labels were right); folders of ``ingest.unlabelled_dir`` mean nothing."""
    rows = manifest[manifest["split"] == "unlabelled"]
    if rows.empty:
        return table
    ids = rows["id"].to_numpy(dtype=np.int64)
    n = len(ids)
    folder_label = {name: labels.index(label) for name, label in class_map.items() if label in labels}
    hidden_of = [folder_label.get(str(c), -1) for c in rows["class"]]  # class "": an unlabelled_dir image
    n_before = len(table.labels)
    return TrainingTable(
        images=np.concatenate([table.images, np.asarray(images[ids])]),
        labels=np.concatenate([table.labels, np.zeros(n, dtype=np.int64)]),
        is_syn=np.concatenate([table.is_syn, np.ones(n, dtype=bool)]),
        jsd=np.concatenate([table.jsd, np.zeros(n, dtype=np.float32)]),
        ids=np.concatenate([table.ids, ids]),
        tiers=None if table.tiers is None else np.concatenate([table.tiers, np.full(n, "", dtype=object)]),
        unlabelled=np.concatenate([np.zeros(n_before, dtype=bool), np.ones(n, dtype=bool)]),
        hidden=np.concatenate([np.full(n_before, -1, dtype=np.int64), np.array(hidden_of, dtype=np.int64)]),
    )


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
