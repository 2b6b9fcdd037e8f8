"""The ingest stage: validate, deduplicate, split, and decode every image once.

``plan_ingest(config)`` does everything cheap first (list folders, check the class map, check
every file's header, hash the files, find duplicates and leakage, make the split) and fails
before any image is decoded.
``decode_images(plan, path)`` then decodes each kept file once, in worker processes, and streams
the pixels into one (N, H, W, 3) uint8 ``.npy`` file, in manifest order (row ``i`` is the image
with ``id == i``). ``ingest_metrics(plan)`` summarises the counts for ``metrics/ingest.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
import pandas as pd

from entromix.data.dedupe import AcrossPolicy, find_duplicates
from entromix.data.discover import SPLITS, Discovery, Layout, discover_images, discover_unlabelled
from entromix.common.errors import DataError, ParamsError, listing
from entromix.common.labels import LabelSpace
from entromix.data.groups import read_groups
from entromix.common.image_store import ImageArrayWriter
from entromix.data.images import (
    INTENSITY_FULL_SCALE,
    Intensity,
    ResizeMode,
    check_image_file,
    decode_image,
    sha256_file,
)
from entromix.data.parallel import ordered_map, resolve_workers
from entromix.data.scarce import UNLABELLED, limit_real_training
from entromix.data.splits import grouped_split, stratified_split
from entromix.data.tiers import TIER_COLUMNS, read_tiers

MANIFEST_COLUMNS = [
    "id", "path", "sha256", "class", "label", "split", "is_syn", "source",
    "group", "orig_width", "orig_height", "orig_mode",
]


@dataclass(frozen=True)
class SplitFractions:
    train: float = 0.6
    val: float = 0.2
    test: float = 0.2

    def __post_init__(self) -> None:
        values = {"train": self.train, "val": self.val, "test": self.test}
        bad = [k for k, v in values.items() if not 0.0 <= v <= 1.0]
        if bad:
            raise ParamsError(f"ingest.split.{bad[0]} must be in [0, 1], got {values[bad[0]]}.")
        if abs(sum(values.values()) - 1.0) > 1e-6:
            raise ParamsError(
                f"ingest.split fractions sum to {sum(values.values()):.4f}; they must sum to 1 "
                "(for example train 0.6, val 0.2, test 0.2)."
            )
        if self.train <= 0 or self.val <= 0:
            raise ParamsError("ingest.split.train and ingest.split.val must be > 0: training and model selection need both.")

    def as_dict(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class IngestConfig:
    """The ``ingest`` section of params.yaml."""

    data_root: str  # one folder holding the sub-folders below; the stage's DVC dependency
    real_dir: str  # relative to data_root
    synthetic_dir: str | None  # relative to data_root; None: no synthetic pool
    unlabelled_dir: str | None  # relative to data_root: real images without a label (self-training); None: none
    groups_csv: str | None  # relative to data_root; columns path,group; None: split by image
    tiers_csv: str | None  # relative to data_root; filename,tier of synthetic images; measurement only
    layout: Layout  # auto | split | flat (see entromix.data.discover)
    labels: list[str]  # label names by index (two or more)
    positive_labels: list[str] | None  # the labels that count as malignant in the binary view; None = labels[1:]
    class_map: dict[str, str | None]  # class folder name -> label name; None (YAML null): leave the folder out
    image_size: int  # px; every image is stored as image_size x image_size x 3
    resize_mode: ResizeMode  # stretch | center_crop | pad (see entromix.data.images)
    intensity: Intensity  # 16-bit grayscale to 8 bits: fixed16 | fixed12 | per_image_minmax
    split: SplitFractions  # used by the flat layout only
    seed: int
    duplicates_across: AcrossPolicy  # error | drop (see entromix.data.dedupe)
    workers: int  # decode processes; 0 = one per CPU core
    bad_images: Literal["error", "skip"]  # unreadable / empty / too large / too small files: stop, or skip and report
    max_pixels: int  # width x height above this is refused before decoding (decompression bombs)
    min_image_size: int  # px; an image whose shorter side is below this is refused
    scarce_label: str | list[str]  # the label(s) whose real training images scarce_train_images limits (in total)
    scarce_train_images: int | None  # None = all; N = keep only N real training images of scarce_label
    scarce_seed: int  # which N (entromix.data.scarce)
    scarce_unlabelled: bool  # the real training images scarce_train_images leaves out become unlabelled images

    def __post_init__(self) -> None:
        LabelSpace.from_names(self.labels, self.positive_labels)  # two or more distinct labels, a valid binary view
        bad = sorted({v for v in self.class_map.values() if v is not None and v not in self.labels})
        if bad:
            raise ParamsError(
                f"ingest.class_map maps to {', '.join(map(repr, bad))}, which is not in ingest.labels "
                f"({', '.join(self.labels)}). Use one of those label names."
            )
        if not any(v is not None for v in self.class_map.values()):
            raise ParamsError("ingest.class_map maps no folder to a label: map each class folder name to a label "
                              "(null leaves a folder out).")
        if not 16 <= self.image_size <= 1024:
            raise ParamsError(f"ingest.image_size must be between 16 and 1024 px, got {self.image_size}.")
        if self.workers < 0:
            raise ParamsError(f"ingest.workers must be >= 0 (0 = all cores), got {self.workers}.")
        unknown = [name for name in self.scarce_labels if name not in self.labels]
        if unknown or not self.scarce_labels:
            raise ParamsError(
                f"ingest.scarce_label is {self.scarce_label!r}; use one of ingest.labels ({', '.join(self.labels)}), "
                "or a list of them (the limit is then their total, for example [early, pre, pro])."
            )
        if self.scarce_train_images is not None and self.scarce_train_images < 1:
            raise ParamsError(f"ingest.scarce_train_images must be null (keep all) or >= 1, got {self.scarce_train_images}.")
        if self.max_pixels < 1 or self.min_image_size < 1:
            raise ParamsError("ingest.max_pixels and ingest.min_image_size must be >= 1.")
        for key in ("real_dir", "synthetic_dir", "unlabelled_dir", "groups_csv", "tiers_csv"):
            value = getattr(self, key)
            if value is not None and (PurePosixPath(value).is_absolute() or ".." in PurePosixPath(value).parts):
                raise ParamsError(
                    f"ingest.{key} is {value!r}; it must be a path inside ingest.data_root, with no "
                    "'..' and not absolute. Point ingest.data_root at the folder that holds it."
                )

    @property
    def label_space(self) -> LabelSpace:
        return LabelSpace.from_names(self.labels, self.positive_labels)

    @property
    def scarce_labels(self) -> list[str]:
        return [self.scarce_label] if isinstance(self.scarce_label, str) else list(self.scarce_label)

    def path(self, key: str) -> Path | None:
        value = getattr(self, key)
        return None if value is None else Path(self.data_root) / value

    def label_index(self, class_name: str) -> int:
        return self.labels.index(self.class_map[class_name])


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


def _refuse_bad_images(files: pd.DataFrame, roots: dict[str, str], config: IngestConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file's header before any heavy work; stop with a list, or drop and report them."""
    paths = [str(Path(roots[s]) / p) for s, p in zip(files["source"], files["path"])]
    items = [(p, config.max_pixels, config.min_image_size) for p in paths]
    reasons = list(ordered_map(_check_one, items, resolve_workers(config.workers), "checking", chunksize=64))
    bad = np.array([r is not None for r in reasons], dtype=bool)
    skipped = files.loc[bad, ["path", "source", "class"]].assign(reason=[r for r in reasons if r is not None])
    skipped["source"] = skipped["source"].map(roots)
    if bad.any() and config.bad_images == "error":
        lines = [f"  {Path(src) / p}: {why}" for src, p, why in zip(skipped["source"], skipped["path"], skipped["reason"])]
        shown = "\n".join(lines[:20]) + (f"\n  ... and {len(lines) - 20} more" if len(lines) > 20 else "")
        raise DataError(f"{len(lines)} file(s) cannot be ingested:\n{shown}\nReplace or remove them, or set "
                        "ingest.bad_images: skip to leave them out (listed in data/prepared/skipped.csv).")
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
    real = discover_images(real_root, config.class_map, config.layout, "the real-images folder (ingest.real_dir)",
                           boundary=config.data_root)
    tables = [_file_table(real, "real", config, is_syn=False)]
    discoveries = {"real": real}
    if config.synthetic_dir is not None:
        syn = discover_images(config.path("synthetic_dir"), config.class_map, config.layout,
                              "the synthetic-images folder (ingest.synthetic_dir)", boundary=config.data_root)
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
    roots = {"real": str(real_root), "synthetic": str(config.path("synthetic_dir")),
             "unlabelled": str(config.path("unlabelled_dir"))}
    files, skipped = _refuse_bad_images(files, roots, config)

    files["group"] = ""
    if config.groups_csv is not None:
        is_real = ~files["is_syn"].astype(bool) & (files["source"] != "unlabelled")
        files.loc[is_real, "group"] = read_groups(config.path("groups_csv"), files.loc[is_real, "path"].tolist())

    paths = [str(Path(roots[s]) / p) for s, p in zip(files["source"], files["path"])]
    files["sha256"] = list(ordered_map(sha256_file, paths, resolve_workers(config.workers), "hashing", chunksize=64))

    kept, duplicates = find_duplicates(files, config.duplicates_across)
    kept = kept.copy()
    real_mask = ~kept["is_syn"].astype(bool) & (kept["source"] != "unlabelled")
    if real.layout == "flat":
        fractions = config.split.as_dict()
        strata = kept.loc[real_mask, "class"].tolist()
        if config.groups_csv is not None:
            splits = grouped_split(strata, kept.loc[real_mask, "group"].tolist(), fractions, config.seed)
        else:
            splits = stratified_split(strata, fractions, config.seed)
        kept.loc[real_mask, "split"] = splits
    elif config.groups_csv is not None:
        _check_groups_within_splits(kept.loc[real_mask], config)

    kept, scarce_dropped = limit_real_training(kept, [config.labels.index(n) for n in config.scarce_labels],
                                               config.scarce_train_images, config.scarce_seed,
                                               "+".join(config.scarce_labels), hide=config.scarce_unlabelled)
    _check_every_label_in_every_split(kept[~kept["is_syn"].astype(bool)], config, real_root)
    order = {name: i for i, name in enumerate((*SPLITS, UNLABELLED))}
    kept["_split_order"] = kept["split"].map(order)
    kept = kept.sort_values(["is_syn", "_split_order", "class", "path"], kind="stable").drop(columns="_split_order")
    kept.insert(0, "id", np.arange(len(kept)))
    kept["is_syn"] = kept["is_syn"].astype(int)  # 0/1, as in data/dataset.csv
    kept["source"] = kept["source"].map(roots)
    manifest = kept[[c for c in MANIFEST_COLUMNS if not c.startswith("orig_")]].reset_index(drop=True)
    duplicates["source"] = duplicates["source"].map(roots)
    duplicates["kept_source"] = duplicates["kept_source"].map(roots)
    tiers = pd.DataFrame(columns=TIER_COLUMNS)
    if config.tiers_csv is not None and config.synthetic_dir is not None:
        tiers = read_tiers(config.path("tiers_csv"), manifest[manifest["is_syn"] == 1])
    return IngestPlan(config=config, manifest=manifest, duplicates=duplicates, skipped=skipped, tiers=tiers,
                      scarce_dropped=scarce_dropped, discoveries=discoveries)


def _check_every_label_in_every_split(real: pd.DataFrame, config: IngestConfig, real_root: Path) -> None:
    """Refuse degenerate data before any work: training, model selection and evaluation each need
    real images of every label (a classifier of one class, or an AUC over one class, is undefined)."""
    missing = []
    for split in SPLITS:
        present = set(real.loc[real["split"] == split, "label"])
        for index, label in enumerate(config.labels):
            if index not in present:
                folders = sorted(c for c, name in config.class_map.items() if name == label)
                missing.append(f"{split}: no real '{label}' image (class folders mapped to it: "
                               f"{', '.join(folders) or 'none'})")
    if missing:
        raise DataError(
            f"{real_root}: the real images do not cover every label in every split:\n  " + "\n  ".join(missing)
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


def _decode_one(item: tuple[str, int, str, str]) -> tuple[np.ndarray | None, int, int, str, int | None, str]:
    path, size, mode, intensity = item
    try:
        decoded = decode_image(path, size, mode, intensity)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - reported to the user with the file name below
        return None, 0, 0, "", None, f"{type(exc).__name__}: {exc}"
    return decoded.pixels, decoded.width, decoded.height, decoded.mode, decoded.peak, ""


def intensity_warning(intensity: str, peaks: list[int]) -> str | None:
    """A hint when the 16-bit images' values do not fit ``ingest.intensity`` (``peaks``: the
    largest raw value of each high-depth integer image), else None."""
    if not peaks:
        return None
    top = max(peaks)
    if intensity == "fixed16" and top <= INTENSITY_FULL_SCALE["fixed12"]:
        return (
            f"{len(peaks)} 16-bit image(s) never exceed {top} (of 65535): they look like 12-bit data, "
            f"which ingest.intensity fixed16 stores as 0..{(top * 255 + 32767) // 65535} of 255. "
            "Set ingest.intensity: fixed12 (or per_image_minmax)."
        )
    if intensity == "fixed12" and top > INTENSITY_FULL_SCALE["fixed12"]:
        over = sum(p > INTENSITY_FULL_SCALE["fixed12"] for p in peaks)
        return (
            f"{over} of {len(peaks)} 16-bit image(s) exceed 4095 (up to {top}), so ingest.intensity "
            "fixed12 clips them to white. Use fixed16 for 16-bit data."
        )
    return None


def decode_images(plan: IngestPlan, array_path: str | Path, atomic: bool = True) -> pd.DataFrame:
    """Decode every manifest image once into ``array_path``; return the manifest with orig_* filled.

    ``atomic=False``: ``array_path`` is already a temporary file of the caller's output set."""
    config = plan.config
    manifest = plan.manifest.copy()
    paths = [str(Path(src) / p) for src, p in zip(manifest["source"], manifest["path"])]
    items = [(p, config.image_size, config.resize_mode, config.intensity) for p in paths]
    widths, heights, modes, peaks = [], [], [], []
    with ImageArrayWriter(array_path, len(items), config.image_size, atomic=atomic) as writer:
        results = ordered_map(_decode_one, items, resolve_workers(config.workers), "decoding")
        for path, (pixels, width, height, mode, peak, error) in zip(paths, results):
            if pixels is None:
                raise DataError(
                    f"{path}: cannot decode this image ({error}). Replace or remove the file and re-run."
                )
            writer.append(pixels)
            widths.append(width)
            heights.append(height)
            modes.append(mode)
            if peak is not None:
                peaks.append(peak)
    warning = intensity_warning(config.intensity, peaks)
    if warning:
        print(f"entromix ingest: WARNING: {warning}", file=sys.stderr)
    manifest["orig_width"] = widths
    manifest["orig_height"] = heights
    manifest["orig_mode"] = modes
    return manifest[MANIFEST_COLUMNS]


def ingest_metrics(plan: IngestPlan) -> dict:
    """Counts for ``metrics/ingest.json`` (all keys under ``ingest`` so they stay unique)."""
    config = plan.config
    manifest = plan.manifest
    real = manifest[manifest["is_syn"] == 0]
    syn = manifest[manifest["is_syn"] == 1]
    label_names = dict(enumerate(config.labels))

    def by_label(frame: pd.DataFrame) -> dict[str, int]:
        counts = frame["label"].map(label_names).value_counts()
        return {name: int(counts.get(name, 0)) for name in config.labels} | {"total": int(len(frame))}

    dropped = plan.duplicates
    folders: dict[str, dict[str, int]] = {}
    for source, found in plan.discoveries.items():
        root = str(found.root)
        in_manifest = manifest[manifest["source"] == root]
        for report in found.folders:
            prefix = "" if report.folder == "." else report.folder + "/"  # "." : the unlabelled folder itself
            ingested = int(in_manifest["path"].str.startswith(prefix).sum())
            dup = int(((dropped["source"] == root) & dropped["path"].str.startswith(prefix)).sum())
            bad = int(((plan.skipped["source"] == root) & plan.skipped["path"].str.startswith(prefix)).sum())
            folders[f"{source}/{report.folder}"] = {
                "expected": report.expected,
                "found": ingested + dup + bad,
                "duplicates_dropped": dup,
                "bad_images_skipped": bad,
                "ingested": ingested,
                "ignored_files": report.ignored,
            } | ({"excluded": True} if report.excluded else {})
    return {
        "ingest": {
            "images": int(len(manifest)),
            "image_size": config.image_size,
            "real": {split: by_label(real[real["split"] == split]) for split in SPLITS},
            "real_by_class": {
                split: {c: int(n) for c, n in real[real["split"] == split]["class"].value_counts().sort_index().items()}
                for split in SPLITS
            },
            "synthetic": by_label(syn),
            "duplicates_dropped": {
                "within_split": int((dropped["reason"] == "within_split").sum()),
                "across_splits": int((dropped["reason"] == "across_splits").sum()),
            },
            "groups": int(real["group"].replace("", np.nan).nunique()),
            "scarce": {"label": config.scarce_label, "limit": config.scarce_train_images,
                       "dropped": int(plan.scarce_dropped)},
            "bad_images_skipped": int(len(plan.skipped)),  # which and why: data/prepared/skipped.csv
            "ignored_files": sum(f["ignored_files"] for f in folders.values())
            + sum(len(d.ignored_top_level) for d in plan.discoveries.values()),
            "excluded_by_class_map": {name: info["expected"] for name, info in folders.items() if info.get("excluded")},
            "folders": folders,
        }
        | ({"unlabelled": int((manifest["split"] == UNLABELLED).sum())} if _has_unlabelled(config) else {})
    }


def _has_unlabelled(config: IngestConfig) -> bool:
    return config.unlabelled_dir is not None or (config.scarce_unlabelled and config.scarce_train_images is not None)
