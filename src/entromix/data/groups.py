"""Patient (group) ids for real images, read from a CSV with columns ``path,group``.

``path`` is relative to the real-images folder (``Benign/img_001.jpg``, or
``train/Benign/img_001.jpg`` in the pre-split layout), exactly as ingest lists it in the
manifest. ``group`` is any id (a patient or slide). Every image must have a group, and every
row must name an image that exists: a split that keeps patients together is only as good as
that mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from entromix.common.errors import DataError, listing
from entromix.data.user_csv import read_user_csv


def read_groups(csv_path: str | Path, image_paths: Sequence[str]) -> list[str]:
    """Return the group of each image in ``image_paths`` (same order).

    Raises :class:`DataError` when the CSV is missing or malformed, names an image that is not in
    the folder, maps one image to two groups, or leaves an image without a group.
    """
    csv_path = Path(csv_path)
    table = read_user_csv(csv_path, "groups CSV", "ingest.groups_csv", ["path", "group"], "path")
    blank = table.index[(table["group"] == "") | (table["path"] == "")]
    if len(blank):
        raise DataError(f"{csv_path}: line(s) {_lines(blank)} have an empty path or group. Fill them in.")
    conflicting = table.groupby("path")["group"].nunique()
    conflicting = conflicting[conflicting > 1]
    if len(conflicting):
        raise DataError(
            f"{csv_path}: image(s) mapped to more than one group: {listing(conflicting.index)}. Keep one row per image."
        )
    mapping = dict(zip(table["path"], table["group"]))
    known = set(image_paths)
    unknown = [p for p in mapping if p not in known]
    if unknown:
        raise DataError(
            f"{csv_path}: {len(unknown)} row(s) name images that are not in the real-images folder: "
            f"{listing(unknown)}. Paths must be relative to that folder (as in "
            f"'{next(iter(known), 'Benign/img.jpg')}'); fix or delete those rows."
        )
    ungrouped = [p for p in image_paths if p not in mapping]
    if ungrouped:
        raise DataError(
            f"{csv_path}: {len(ungrouped)} image(s) have no group: {listing(ungrouped)}. Add a row "
            "for each (a patient id; use the image's own name if it is its only image)."
        )
    return [mapping[p] for p in image_paths]


def _lines(index) -> str:
    return listing(i + 2 for i in index)  # +2: 1-based and the header line
