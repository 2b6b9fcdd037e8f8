"""What the stages hand each other, checked before any heavy work.

Each stage writes the files that belong together as one set (``entromix.common.atomic.atomic_paths``):
ingest's array, manifest, side tables, settings and ``checksums.json``; score's ``dataset.csv``,
metrics and plots; train's checkpoints, history and metrics; evaluate's predictions, plots and
metrics. A later stage opens its inputs through this module, which checks before anything is
trained that

* every input exists, and otherwise says which stage to run (``dvc repro`` runs them in order);
* ingest's set is whole and consistent: ``images.npy`` opens as a (N, H, W, 3) uint8 array and is
  not truncated, the manifest has N rows with ids 0..N-1, and both files have the sha256 that
  ingest recorded in ``checksums.json`` (so an array from one run and a manifest from another, or
  a file damaged after the fact, is caught and named);
* ``dataset.csv`` has the columns, ids, labels and rows the score stage wrote for this manifest
  (a hand-edited file with a missing column, a repeated row or an unknown label is refused with
  the row named).

Every problem is a :class:`~entromix.common.errors.DataError`: one paragraph naming the file, exit code 2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from entromix.common.errors import DataError, ParamsError, listing
from entromix.common.labels import LabelSpace

PREPARED = Path("data/prepared")
DATASET = Path("data/dataset.csv")
SYNTHETIC_SCORES_CSV = Path("data/synthetic_scores.csv")  # score stage: every score of each synthetic image
CHECKSUMS_NAME = "checksums.json"
RERUN_INGEST = "Rerun the ingest stage (dvc repro -f ingest) to write the prepared set again."
RERUN_SCORE = "Rerun the score stage (dvc repro -f score) instead of editing the file by hand."
MANIFEST_REQUIRED = ["id", "path", "class", "label", "split", "is_syn", "source", "group"]
DATASET_REQUIRED = ["filename", "is_syn", "jsd_score", "label", "id"]


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def prepared_checksums(images_path: Path, manifest_path: Path, shape: tuple[int, ...], rows: int) -> dict:
    """What ``checksums.json`` records about the array and the manifest written beside it."""
    return {
        "images.npy": {"shape": list(shape), "bytes": images_path.stat().st_size, "sha256": file_sha256(images_path)},
        "manifest.csv": {"rows": rows, "sha256": file_sha256(manifest_path)},
    }


def missing_input(path: Path, stage: str) -> DataError:
    return DataError(
        f"{path} does not exist: run the {stage} stage first (dvc repro {stage}; `dvc repro` runs every "
        "stage in order)."
    )


@dataclass
class Prepared:
    """Ingest's set: the image array (memory-mapped), its manifest, the labels and the tier table."""

    images: np.ndarray  # (N, H, W, 3) uint8, row i = manifest id i
    manifest: pd.DataFrame
    labels: list[str]
    tiers: pd.DataFrame  # id, filename, tier, detail (empty without a tiers file)
    config: dict = field(default_factory=dict)  # ingest_config.json: image_size, resize_mode, labels, ...
    manifest_sha256: str = ""  # checksums.json's: the manifest lists every image's sha256 and split

    def identity(self) -> dict[str, str]:
        """Which data this is, for the model card: the data root and the manifest's sha256 (the same
        value means the same image files in the same splits)."""
        return {"data_root": str(self.config.get("data_root", "?")), "manifest_sha256": self.manifest_sha256}

    @property
    def label_space(self) -> LabelSpace:
        """The labels and the binary view (``ingest.positive_labels``; labels[1:] when not recorded)."""
        try:
            return LabelSpace.from_names(self.labels, self.config.get("positive_labels"))
        except ParamsError as exc:
            raise DataError(f"{PREPARED / 'ingest_config.json'}: {exc} {RERUN_INGEST}") from None


def load_prepared(root: str | Path = PREPARED, verify: bool = True) -> Prepared:
    """Open ingest's outputs and check that they are whole and belong together (see module doc)."""
    root = Path(root)
    names = ["images.npy", "manifest.csv", "ingest_config.json", "synthetic_tiers.csv", CHECKSUMS_NAME]
    for name in names:
        if not (root / name).is_file():
            raise missing_input(root / name, "ingest")
    images_path, manifest_path = root / "images.npy", root / "manifest.csv"
    try:
        checksums = json.loads((root / CHECKSUMS_NAME).read_text())
        recorded_images, recorded_manifest = checksums["images.npy"], checksums["manifest.csv"]
        config = json.loads((root / "ingest_config.json").read_text())
        labels = [str(x) for x in config["labels"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"{root}: checksums.json or ingest_config.json is damaged ({type(exc).__name__}: {exc}). {RERUN_INGEST}"
        ) from None
    images = _open_images(images_path)
    manifest = _read_csv(manifest_path, RERUN_INGEST)
    absent = [c for c in MANIFEST_REQUIRED if c not in manifest.columns]
    if absent:
        raise DataError(f"{manifest_path}: missing column(s) {', '.join(absent)}. {RERUN_INGEST}")
    if len(manifest) != images.shape[0]:
        raise DataError(
            f"{manifest_path} lists {len(manifest)} images but {images_path} holds {images.shape[0]}: the "
            f"two files do not belong together. {RERUN_INGEST}"
        )
    ids = pd.to_numeric(manifest["id"], errors="coerce")
    if not np.array_equal(ids.to_numpy(), np.arange(len(manifest))):
        raise DataError(
            f"{manifest_path}: the id column must be 0, 1, ..., {len(manifest) - 1} in order (row i is "
            f"array row i). {RERUN_INGEST}"
        )
    if verify:
        _verify_checksums(root, images, recorded_images, recorded_manifest)
    manifest["label"] = pd.to_numeric(manifest["label"], errors="coerce")
    manifest["is_syn"] = pd.to_numeric(manifest["is_syn"], errors="coerce")
    tiers = _read_csv(root / "synthetic_tiers.csv", RERUN_INGEST)
    return Prepared(
        images=images,
        manifest=manifest,
        labels=labels,
        tiers=tiers,
        config=config,
        manifest_sha256=str(recorded_manifest.get("sha256", "")),
    )


def _open_images(images_path: Path) -> np.ndarray:
    """Memory-map ingest's image array; a truncated file or one of another shape is a :class:`DataError`."""
    try:
        images = np.load(images_path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(
            f"{images_path}: not a complete .npy image array ({exc}); the file is truncated or damaged. {RERUN_INGEST}"
        ) from None
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected a (N, H, W, 3) uint8 array, found {images.shape} {images.dtype}. {RERUN_INGEST}"
        )
    return images


def _verify_checksums(root: Path, images: np.ndarray, recorded_images: dict, recorded_manifest: dict) -> None:
    """Compare images.npy and manifest.csv under ``root`` with what ingest recorded for them in
    checksums.json: a changed file, or one from another run, is a :class:`DataError`."""
    images_path, manifest_path = root / "images.npy", root / "manifest.csv"
    if list(images.shape) != list(recorded_images.get("shape", [])) or file_sha256(images_path) != recorded_images.get(
        "sha256"
    ):
        raise DataError(
            f"{images_path}: its contents differ from what ingest recorded in {root / CHECKSUMS_NAME} "
            f"(the file was changed or comes from another run). {RERUN_INGEST}"
        )
    if file_sha256(manifest_path) != recorded_manifest.get("sha256"):
        raise DataError(
            f"{manifest_path}: its contents differ from what ingest recorded in {root / CHECKSUMS_NAME} "
            f"(the file was edited or comes from another run). {RERUN_INGEST}"
        )


def _read_csv(path: Path, fix: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, keep_default_na=False, encoding="utf-8")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({type(exc).__name__}: {exc}). {fix}") from None


def _rows(index: pd.Index | np.ndarray) -> str:
    """CSV line numbers (the header is line 1) of data rows ``index``."""
    return listing([int(i) + 2 for i in index], limit=5)


def load_dataset(path: str | Path, prepared: Prepared) -> pd.DataFrame:
    """``dataset.csv``, checked to be the score stage's table for this manifest (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise missing_input(path, "score")
    data = _read_csv(path, RERUN_SCORE)
    absent = [c for c in DATASET_REQUIRED if c not in data.columns]
    if absent:
        raise DataError(
            f"{path}: missing column(s) {', '.join(absent)} (the score stage writes "
            f"{', '.join(DATASET_REQUIRED)} and more). {RERUN_SCORE}"
        )
    for column in ("id", "label", "is_syn"):
        values = pd.to_numeric(data[column], errors="coerce")
        bad = values.isna() | (values != values.round())
        if bad.any():
            raise DataError(
                f"{path}: column {column} must hold whole numbers; line(s) {_rows(data.index[bad])} do not "
                f"(first: {data.loc[bad, column].iloc[0]!r}). {RERUN_SCORE}"
            )
        data[column] = values.astype(np.int64)
    repeated = data["id"].duplicated(keep=False)
    if repeated.any():
        first = data.loc[repeated, "id"].iloc[0]
        raise DataError(
            f"{path}: image id {first} appears more than once (lines {_rows(data.index[data['id'] == first])}; "
            f"{int(data['id'].duplicated().sum())} repeated row(s) in all), so it would count twice in "
            f"training. {RERUN_SCORE}"
        )
    n_labels = len(prepared.labels)
    outside = ~data["label"].between(0, n_labels - 1)
    if outside.any():
        i = data.index[outside][0]
        raise DataError(
            f"{path}: line {i + 2} ({data.loc[i, 'filename']}) has label {data.loc[i, 'label']}, but the "
            f"labels are 0..{n_labels - 1} ({', '.join(prepared.labels)}); {int(outside.sum())} row(s) in "
            f"all. {RERUN_SCORE}"
        )
    if not data["is_syn"].isin([0, 1]).all():
        raise DataError(f"{path}: column is_syn must be 0 or 1. {RERUN_SCORE}")
    manifest = prepared.manifest
    expected = set(manifest.loc[(manifest["split"] == "train") | (manifest["is_syn"] == 1), "id"].astype(int))
    found = set(data["id"])
    if found != expected:
        extra, lost = sorted(found - expected), sorted(expected - found)
        raise DataError(
            f"{path} does not match data/prepared/manifest.csv: {len(lost)} training image(s) missing "
            f"(ids {listing(lost, 5) or '-'}) and {len(extra)} row(s) that are not training images of this "
            f"manifest (ids {listing(extra, 5) or '-'}). It comes from another ingest run or was edited. "
            f"{RERUN_SCORE}"
        )
    return data
