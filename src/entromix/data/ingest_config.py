"""The ``ingest`` section of params.yaml as a checked config: :class:`IngestConfig` and its
:class:`SplitFractions`.

Every setting is validated when the config is built, so a bad value stops the stage with one
message naming the key before any folder is listed (:func:`entromix.data.prepare.plan_ingest`
only ever sees a valid config).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from entromix.common.errors import ParamsError
from entromix.common.labels import LabelSpace
from entromix.data.dedupe import AcrossPolicy
from entromix.data.discover import Layout
from entromix.data.images import Intensity, ResizeMode


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
            raise ParamsError(
                "ingest.split.train and ingest.split.val must be > 0: training and model selection need both."
            )

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
            raise ParamsError(
                "ingest.class_map maps no folder to a label: map each class folder name to a label "
                "(null leaves a folder out)."
            )
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
            raise ParamsError(
                f"ingest.scarce_train_images must be null (keep all) or >= 1, got {self.scarce_train_images}."
            )
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
