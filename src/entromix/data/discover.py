"""Find the image files of one data folder and the class and split each belongs to.

Two layouts are accepted (``layout`` param; ``auto`` tells them apart by the top-level names):

* pre-split: ``<root>/<split>/<class>/<image>`` with split folders ``train``, ``val``, ``test``
  (``training``, ``valid``, ``validation`` and ``testing`` are accepted as aliases);
* flat: ``<root>/<class>/<image>``; ingest then makes a stratified split itself.

Images may sit in sub-folders below the class folder (``<class>/<patient>/<image>``). Hidden files
and folders are skipped; files whose extension is not an image extension are ignored and counted.
A class folder that is not in ``class_map`` is an error: nothing is dropped silently. A folder mapped
to ``null`` (``Normal: null``) is excluded on purpose: its image files are counted, not read.

Links and names are checked before anything is read: symbolic links (to files or folders) are
followed when they stay inside the data root (``ingest.data_root``), and a link that leaves it,
dangles or loops is an error naming the link. File and folder names must be valid UTF-8 (spaces
and any Unicode character are fine): the manifest and ``dataset.csv`` are UTF-8 text, so a name in
another encoding is refused up front, with the name as Python shows it and how to rename it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from entromix.common.errors import DataError
from entromix.data.images import IMAGE_EXTENSIONS

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
    excluded: bool = False  # mapped to null in class_map: counted, never read


@dataclass
class Discovery:
    root: Path
    layout: Literal["split", "flat"]
    images: list[FoundImage]
    folders: list[FolderReport]
    ignored_top_level: list[str] = field(default_factory=list)  # loose files above the class folders


def _visible(name: str) -> bool:
    return not name.startswith(".")


def check_utf8_name(path: Path) -> None:
    """Refuse a file or folder name that is not valid UTF-8 (``os`` decodes such bytes to surrogates)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        raise DataError(
            f"{raw!r}: this file or folder name is not valid UTF-8, so it cannot be written to the manifest "
            "or dataset.csv. Rename it to UTF-8 (for example `convmv -f latin1 -t utf-8 --notest -r FOLDER`, "
            "or rename the file by hand) and re-run."
        ) from None


def resolve_inside(path: Path, boundary: Path) -> Path:
    """The real path of ``path``, which must exist and lie inside ``boundary`` (both after
    following links); a dangling link, a link loop or a link leaving ``boundary`` is an error."""
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        raise DataError(
            f"{path}: symbolic link to {os.readlink(path) if path.is_symlink() else path}, which does not "
            "exist (a dangling link). Fix the link, or remove it."
        ) from None
    except (RuntimeError, OSError) as exc:  # ELOOP: RuntimeError("Symlink loop") or OSError(errno 40)
        raise DataError(
            f"{path}: symbolic link loop ({exc}). Replace the link with the file it should point to, or remove it."
        ) from None
    if not real.is_relative_to(boundary):
        raise DataError(
            f"{path}: symlink points outside the data root ({real}; the data root is {boundary}). Copy the "
            "image into the data root (ingest.data_root) or remove the link."
        )
    return real


def _list_dirs(path: Path) -> tuple[list[str], list[str]]:
    dirs, files = [], []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not _visible(entry.name):
            continue
        check_utf8_name(Path(entry.path))
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
    class_map: Mapping[str, str | None],
    layout: Layout = "auto",
    what: str = "the data folder",
    boundary: str | Path | None = None,
) -> Discovery:
    """List every image under ``root`` with its class and (pre-split layout) split.

    Raises :class:`DataError` for a missing root, an empty root, a class folder that is not in
    ``class_map``, a class folder with no images, a name that is not UTF-8, or a symbolic link
    that dangles, loops or points outside ``boundary`` (the data root; default ``root``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: {what} does not exist or is not a folder. Check ingest.data_root and the "
            "sub-folder names in params.yaml."
        )
    resolved_root = Path(boundary if boundary is not None else root).resolve()
    chosen = detect_layout(root, layout, what)
    top_dirs, top_files = _list_dirs(root)
    if not top_dirs:
        raise DataError(
            f"{root}: {what} holds no folders. Expected <root>/<class>/<image> or <root>/<split>/<class>/<image>."
        )

    class_dirs = _class_folders(root, chosen, top_dirs, top_files)
    unmapped = sorted({c for c, _, _ in class_dirs if c not in class_map})
    if unmapped:
        raise DataError(
            f"{root}: class folder(s) {', '.join(repr(c) for c in unmapped)} are not in ingest.class_map "
            f"(which maps {', '.join(repr(k) for k in class_map) or 'nothing'}). Add each to "
            "ingest.class_map with its label (for example  Pre: malignant), or with null to leave "
            "it out on purpose (for example  Normal: null; counted in metrics/ingest.json)."
        )
    images: list[FoundImage] = []
    folders = []
    for class_name, split, class_dir in class_dirs:
        excluded = class_map[class_name] is None
        report = _walk_class_folder(root, class_name, split, class_dir, resolved_root, [] if excluded else images)
        report.excluded = excluded
        folders.append(report)
    if not images:
        raise DataError(
            f"{root}: {what} has images only in class folders that ingest.class_map excludes (null). "
            "Map at least one folder to a label."
        )
    return Discovery(root=root, layout=chosen, images=images, folders=folders, ignored_top_level=top_files)


def discover_unlabelled(root: str | Path, boundary: str | Path | None = None) -> Discovery:
    """Every image under ``root`` (any sub-folders; folder names mean nothing), as unlabelled
    images: class "" and split ``unlabelled``. The same checks as :func:`discover_images`."""
    root = Path(root)
    what = "the unlabelled-images folder (ingest.unlabelled_dir)"
    if not root.is_dir():
        raise DataError(
            f"{root}: {what} does not exist or is not a folder. Check ingest.data_root and "
            "ingest.unlabelled_dir in params.yaml, or set ingest.unlabelled_dir: null."
        )
    resolved_root = Path(boundary if boundary is not None else root).resolve()
    images: list[FoundImage] = []
    folder = _walk_class_folder(root, "", "unlabelled", root, resolved_root, images)
    return Discovery(root=root, layout="flat", images=images, folders=[folder])


def _class_folders(
    root: Path, layout: str, top_dirs: list[str], top_files: list[str]
) -> list[tuple[str, str | None, Path]]:
    """(class name, split or None, folder) of every class folder; files beside the split folders are
    added to ``top_files`` (reported, not read)."""
    if layout != "split":
        return [(c, None, root / c) for c in top_dirs]
    class_dirs: list[tuple[str, str | None, Path]] = []
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
    return class_dirs


def _walk_class_folder(
    root: Path, class_name: str, split: str | None, class_dir: Path, resolved_root: Path, images: list[FoundImage]
) -> FolderReport:
    """Append the images under ``class_dir`` to ``images`` (sorted walk, links followed but kept
    inside ``resolved_root``, loops refused) and report what the folder held."""
    report = FolderReport(folder=class_dir.relative_to(root).as_posix())
    visited: set[Path] = set()  # real paths of the folders walked: a folder link loop stops here
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        here = resolve_inside(Path(dirpath), resolved_root)
        if here in visited:
            raise DataError(
                f"{dirpath}: a folder link leads back to {here}, which is already listed (a link "
                "loop). Remove the link."
            )
        visited.add(here)
        for name in dirnames + filenames:
            check_utf8_name(Path(dirpath) / name)
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        for name in sorted(filenames):
            if not _visible(name):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                report.ignored += 1
                continue
            resolve_inside(path, resolved_root)
            report.expected += 1
            images.append(FoundImage(path.relative_to(root).as_posix(), class_name, split))
    if report.expected == 0:
        raise DataError(
            f"{class_dir}: class folder has no images (extensions {', '.join(IMAGE_EXTENSIONS)}). "
            "Add images or remove the empty folder."
        )
    return report
