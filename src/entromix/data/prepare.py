"""The ingest stage's plan: validate, deduplicate and split every image before any is decoded.

``plan_ingest(config)`` does everything cheap first (list folders, check the class map, check
every file's header, hash the files, find duplicates and leakage, make the split) and fails
before any image is decoded.
``decode_images(plan, path)`` (:mod:`entromix.data.decode`) then decodes each kept file once, in
worker processes, and streams the pixels into one (N, H, W, 3) uint8 ``.npy`` file, in manifest
order (row ``i`` is the image with ``id == i``). ``ingest_metrics(plan)``
(:mod:`entromix.data.ingest_metrics`) summarises the counts for ``metrics/ingest.json``. The
settings are :class:`entromix.data.ingest_config.IngestConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from entromix.common.errors import DataError, listing
from entromix.data.dedupe import find_duplicates
from entromix.data.discover import SPLITS, Discovery, discover_images, discover_unlabelled
from entromix.data.groups import read_groups
from entromix.data.images import check_image_file, sha256_file
from entromix.data.ingest_config import IngestConfig
from entromix.data.parallel import ordered_map, resolve_workers
from entromix.data.scarce import UNLABELLED, limit_real_training
from entromix.data.splits import grouped_split, stratified_split
from entromix.data.tiers import TIER_COLUMNS, read_tiers

MANIFEST_COLUMNS = [
    "id",
    "path",
    "sha256",
    "class",
    "label",
    "split",
    "is_syn",
    "source",
    "group",
    "orig_width",
    "orig_height",
    "orig_mode",
]


@dataclass
class IngestPlan:
    """Everything ingest decided before decoding: the kept files in manifest order, and why."""

    config: IngestConfig
    manifest: pd.DataFrame  # MANIFEST_COLUMNS except orig_*; row i is array row i
    duplicates: pd.DataFrame  # dropped copies (see entromix.data.dedupe.find_duplicates)
    skipped: pd.DataFrame  # SKIPPED_COLUMNS: files refused by check_image_file (bad_images: skip)
    tiers: pd.DataFrame  # entromix.data.tiers.TIER_COLUMNS; empty without a tier file
    scarce_dropped: int = 0  # real training images left out by ingest.scarce_train_images
    discoveries: dict[str, Discovery] = field(default_factory=dict)  # "real" / "synthetic"


SKIPPED_COLUMNS = ["path", "source", "class", "reason"]


def _check_one(item: tuple[str, int, int]) -> str | None:
    path, max_pixels, min_side = item
    return check_image_file(path, max_pixels, min_side)


def _refuse_bad_images(
    files: pd.DataFrame, roots: dict[str, str], config: IngestConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file's header before any heavy work; stop with a list, or drop and report them."""
    paths = [str(Path(roots[s]) / p) for s, p in zip(files["source"], files["path"])]
    items = [(p, config.max_pixels, config.min_image_size) for p in paths]
    reasons = list(ordered_map(_check_one, items, resolve_workers(config.workers), "checking", chunksize=64))
    bad = np.array([r is not None for r in reasons], dtype=bool)
    skipped = files.loc[bad, ["path", "source", "class"]].assign(reason=[r for r in reasons if r is not None])
    skipped["source"] = skipped["source"].map(roots)
    if bad.any() and config.bad_images == "error":
        lines = [
            f"  {Path(src) / p}: {why}" for src, p, why in zip(skipped["source"], skipped["path"], skipped["reason"])
        ]
        shown = "\n".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        raise DataError(
            f"{len(lines)} file(s) cannot be ingested:\n{shown}\nReplace or remove them, or set "
            "ingest.bad_images: skip to leave them out (listed in data/prepared/skipped.csv)."
        )
    return files.loc[~bad].reset_index(drop=True), skipped.reset_index(drop=True)[SKIPPED_COLUMNS]


def _file_table(found: Discovery, source: str, config: IngestConfig, is_syn: bool) -> pd.DataFrame:
    rows = [
        {
            "path": img.rel_path,
            "source": source,
            "class": img.class_name,
            "label": -1 if img.split == UNLABELLED else config.label_index(img.class_name),
            "split": img.split,
            "is_syn": is_syn,
        }
        for img in found.images
    ]
    return pd.DataFrame(rows, columns=["path", "source", "class", "label", "split", "is_syn"])


def plan_ingest(config: IngestConfig) -> IngestPlan:
    """List, hash, deduplicate and split; raise :class:`DataError` before any decoding."""
    real_root = config.path("real_dir")
    discoveries, files = _discover_files(config)
    roots = {
        "real": str(real_root),
        "synthetic": str(config.path("synthetic_dir")),
        "unlabelled": str(config.path("unlabelled_dir")),
    }
    files, skipped = _refuse_bad_images(files, roots, config)

    files["group"] = ""
    if config.groups_csv is not None:
        is_real = ~files["is_syn"].astype(bool) & (files["source"] != "unlabelled")
        files.loc[is_real, "group"] = read_groups(config.path("groups_csv"), files.loc[is_real, "path"].tolist())

    paths = [str(Path(roots[s]) / p) for s, p in zip(files["source"], files["path"])]
    files["sha256"] = list(ordered_map(sha256_file, paths, resolve_workers(config.workers), "hashing", chunksize=64))

    kept, duplicates = find_duplicates(files, config.duplicates_across)
    kept = kept.copy()
    _assign_real_splits(kept, discoveries["real"].layout, config)

    kept, scarce_dropped = limit_real_training(
        kept,
        [config.labels.index(n) for n in config.scarce_labels],
        config.scarce_train_images,
        config.scarce_seed,
        "+".join(config.scarce_labels),
        hide=config.scarce_unlabelled,
    )
    _check_every_label_in_every_split(kept[~kept["is_syn"].astype(bool)], config, real_root)
    manifest = _manifest_in_order(kept, roots)
    duplicates["source"] = duplicates["source"].map(roots)
    duplicates["kept_source"] = duplicates["kept_source"].map(roots)
    tiers = pd.DataFrame(columns=TIER_COLUMNS)
    if config.tiers_csv is not None and config.synthetic_dir is not None:
        tiers = read_tiers(config.path("tiers_csv"), manifest[manifest["is_syn"] == 1])
    return IngestPlan(
        config=config,
        manifest=manifest,
        duplicates=duplicates,
        skipped=skipped,
        tiers=tiers,
        scarce_dropped=scarce_dropped,
        discoveries=discoveries,
    )


def _discover_files(config: IngestConfig) -> tuple[dict[str, Discovery], pd.DataFrame]:
    """List the real, synthetic and unlabelled folders: their discoveries and one table of every file.

    Synthetic images found under val/ or test/ are refused here, before any file is opened:
    they are for training only.
    """
    real = discover_images(
        config.path("real_dir"),
        config.class_map,
        config.layout,
        "the real-images folder (ingest.real_dir)",
        boundary=config.data_root,
    )
    tables = [_file_table(real, "real", config, is_syn=False)]
    discoveries = {"real": real}
    if config.synthetic_dir is not None:
        syn = discover_images(
            config.path("synthetic_dir"),
            config.class_map,
            config.layout,
            "the synthetic-images folder (ingest.synthetic_dir)",
            boundary=config.data_root,
        )
        held_out = sorted({img.split for img in syn.images} - {None, "train"})
        if held_out:
            raise DataError(
                f"{config.path('synthetic_dir')}: synthetic images under {'/'.join(held_out)}/. Synthetic "
                "images are for training only and never go to val or test: move them to train/ "
                "or use the flat layout <synthetic>/<class>/<image>."
            )
        discoveries["synthetic"] = syn
        syn_table = _file_table(syn, "synthetic", config, is_syn=True)
        syn_table["split"] = "train"
        tables.append(syn_table)
    if config.unlabelled_dir is not None:
        unlabelled = discover_unlabelled(config.path("unlabelled_dir"), boundary=config.data_root)
        discoveries["unlabelled"] = unlabelled
        tables.append(_file_table(unlabelled, "unlabelled", config, is_syn=False))
    files = pd.concat(tables, ignore_index=True)
    files["split"] = files["split"].astype(object).where(files["split"].notna(), None)
    return discoveries, files


def _assign_real_splits(kept: pd.DataFrame, real_layout: str, config: IngestConfig) -> None:
    """Split the kept real images of a flat layout (by patient group when there is a groups file),
    or check that a pre-split layout keeps each patient in one split; ``kept`` is changed in place."""
    real_mask = ~kept["is_syn"].astype(bool) & (kept["source"] != "unlabelled")
    if real_layout == "flat":
        fractions = config.split.as_dict()
        strata = kept.loc[real_mask, "class"].tolist()
        if config.groups_csv is not None:
            splits = grouped_split(strata, kept.loc[real_mask, "group"].tolist(), fractions, config.seed)
        else:
            splits = stratified_split(strata, fractions, config.seed)
        kept.loc[real_mask, "split"] = splits
    elif config.groups_csv is not None:
        _check_groups_within_splits(kept.loc[real_mask], config)


def _manifest_in_order(kept: pd.DataFrame, roots: dict[str, str]) -> pd.DataFrame:
    """The manifest (MANIFEST_COLUMNS except orig_*) sorted by is_syn, split, class and path, ids
    (= array rows) numbered in that order; ``source`` becomes the root folder's path."""
    order = {name: i for i, name in enumerate((*SPLITS, UNLABELLED))}
    kept["_split_order"] = kept["split"].map(order)
    kept = kept.sort_values(["is_syn", "_split_order", "class", "path"], kind="stable").drop(columns="_split_order")
    kept.insert(0, "id", np.arange(len(kept)))
    kept["is_syn"] = kept["is_syn"].astype(int)  # 0/1, as in data/dataset.csv
    kept["source"] = kept["source"].map(roots)
    return kept[[c for c in MANIFEST_COLUMNS if not c.startswith("orig_")]].reset_index(drop=True)


def _check_every_label_in_every_split(real: pd.DataFrame, config: IngestConfig, real_root: Path) -> None:
    """Refuse degenerate data before any work: training, model selection and evaluation each need
    real images of every label (a classifier of one class, or an AUC over one class, is undefined)."""
    missing = []
    for split in SPLITS:
        present = set(real.loc[real["split"] == split, "label"])
        for index, label in enumerate(config.labels):
            if index not in present:
                folders = sorted(c for c, name in config.class_map.items() if name == label)
                missing.append(
                    f"{split}: no real '{label}' image (class folders mapped to it: {', '.join(folders) or 'none'})"
                )
    if missing:
        raise DataError(
            f"{real_root}: the real images do not cover every label in every split:\n  "
            + "\n  ".join(missing)
            + "\nEvery label in ingest.labels needs real images in train, val and test (synthetic images do not "
            "count: they are never validated or tested on). Add real images of the missing label(s), check "
            "ingest.class_map, or, for the flat layout, raise the small split fractions in ingest.split."
        )


def _check_groups_within_splits(real: pd.DataFrame, config: IngestConfig) -> None:
    spread = real.groupby("group")["split"].nunique()
    leaking = spread[spread > 1].index.tolist()
    if leaking:
        raise DataError(
            f"{config.path('groups_csv')}: patient group(s) {listing(leaking)} have images in more "
            "than one of the pre-made splits (leakage between train and evaluation). Move each "
            "patient's images into one split, or set ingest.groups_csv: null to skip this check."
        )
