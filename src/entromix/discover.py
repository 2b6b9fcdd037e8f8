"""Find the image files of one data folder and the class and split each belongs to.

Two layouts are accepted (``layout`` param; ``auto`` tells them apart by the top-level names):

* pre-split: ``<root>/<split>/<class>/<image>`` with split folders ``train``, ``val``, ``test``
  (``training``, ``valid``, ``validation`` and ``testing`` are accepted as aliases);
* flat: ``<root>/<class>/<image>``; ingest then makes a stratified split itself.

Images may sit in sub-folders below the class folder (``<class>/<patient>/<image>``). Hidden files
and folders are skipped; files whose extension is not an image extension are ignored and counted.
A class folder that is not in ``class_map`` is an error: nothing is dropped silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from entromix.errors import DataError
from entromix.images import IMAGE_EXTENSIONS

Layout = Literal["auto", "split", "flat"]

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class FoundImage:
    """One image file: where it is and what its folder says about it."""

    rel_path: str  # POSIX path relative to the data folder's root, e.g. "train/Benign/a.jpg"
    class_name: str  # the class folder's name, e.g. "Benign"
    split: str | None  # "train" | "val" | "test" from a pre-split layout, else None


@dataclass
class FolderReport:
    """What one class folder held."""

    folder: str  # relative to the root, e.g. "train/Benign"
    expected: int = 0  # files with an image extension
    ignored: int = 0  # other files (counted, not read)


@dataclass
class Discovery:
    root: Path
    layout: Literal["split", "flat"]
    images: list[FoundImage]
    folders: list[FolderReport]
    ignored_top_level: list[str] = field(default_factory=list)  # loose files above the class folders


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _list_dirs(path: Path) -> tuple[list[str], list[str]]:
    dirs, files = [], []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        (dirs if entry.is_dir() else files).append(entry.name)
    return dirs, files


def detect_layout(root: Path, layout: Layout, what: str) -> Literal["split", "flat"]:
    """Decide between the pre-split and the flat layout from the top-level folder names."""
    dirs, _ = _list_dirs(root)
    split_like = [d for d in dirs if d.lower() in SPLIT_ALIASES]
    others = [d for d in dirs if d.lower() not in SPLIT_ALIASES]
    if layout == "split":
        if others:
            raise DataError(
                f"{root}: {what} is set to the pre-split layout, but folder(s) {', '.join(others)} are "
                f"not split names. Use {', '.join(SPLITS)} (or rename/move those folders), or set "
                "ingest.layout: flat if the top-level folders are classes."
            )
        return "split"
    if layout == "flat":
        return "flat"
    if split_like and others:
        raise DataError(
            f"{root}: the top-level folders mix split names ({', '.join(split_like)}) and other "
            f"names ({', '.join(others)}). Use either <root>/<split>/<class>/<image> with splits "
            f"{', '.join(SPLITS)}, or <root>/<class>/<image>; then re-run."
        )
    return "split" if split_like else "flat"


def discover_images(
    root: str | Path,
    class_map: Mapping[str, str],
    layout: Layout = "auto",
    what: str = "the data folder",
) -> Discovery:
    """List every image under ``root`` with its class and (pre-split layout) split.

    Raises :class:`DataError` for a missing root, an empty root, a class folder that is not in
    ``class_map``, a class folder with no images, or a symlink pointing outside ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: {what} does not exist or is not a folder. Check ingest.data_root and the "
            "sub-folder names in params.yaml."
        )
    resolved_root = root.resolve()
    chosen = detect_layout(root, layout, what)
    top_dirs, top_files = _list_dirs(root)
    if not top_dirs:
        raise DataError(
            f"{root}: {what} holds no folders. Expected <root>/<class>/<image> or "
            "<root>/<split>/<class>/<image>."
        )

    class_dirs: list[tuple[str, str | None, Path]] = []  # (class name, split, path)
    if chosen == "split":
        seen_splits: dict[str, str] = {}
        for d in top_dirs:
            split = SPLIT_ALIASES[d.lower()]
            if split in seen_splits:
                raise DataError(
                    f"{root}: folders '{seen_splits[split]}' and '{d}' both mean the {split} split. Merge them."
                )
            seen_splits[split] = d
            sub_dirs, sub_files = _list_dirs(root / d)
            top_files += [f"{d}/{f}" for f in sub_files]
            class_dirs += [(c, split, root / d / c) for c in sub_dirs]
    else:
        class_dirs = [(c, None, root / c) for c in top_dirs]

    unmapped = sorted({c for c, _, _ in class_dirs if c not in class_map})
    if unmapped:
        raise DataError(
            f"{root}: class folder(s) {', '.join(repr(c) for c in unmapped)} are not in ingest.class_map "
            f"(which maps {', '.join(repr(k) for k in class_map) or 'nothing'}). Add each to "
            "ingest.class_map with its label (for example  Pre: malignant), or move the folder "
            "out of the data root if it does not belong in training."
        )

    images: list[FoundImage] = []
    folders: list[FolderReport] = []
    for class_name, split, class_dir in class_dirs:
        report = FolderReport(folder=class_dir.relative_to(root).as_posix())
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for name in sorted(filenames):
                if not _visible(name):
                    continue
                path = Path(dirpath) / name
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    report.ignored += 1
                    continue
                if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
                    raise DataError(
                        f"{path}: symlink points outside the data root ({path.resolve()}). Copy the "
                        "image into the data root or remove the link."
                    )
                report.expected += 1
                images.append(FoundImage(path.relative_to(root).as_posix(), class_name, split))
        if report.expected == 0:
            raise DataError(
                f"{class_dir}: class folder has no images (extensions {', '.join(IMAGE_EXTENSIONS)}). "
                "Add images or remove the empty folder."
            )
        folders.append(report)
    return Discovery(root=root, layout=chosen, images=images, folders=folders, ignored_top_level=top_files)
