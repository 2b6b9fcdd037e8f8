"""Ingest's one heavy step: decode every kept image once into the stage's image array.

:func:`decode_images` runs after :func:`entromix.data.prepare.plan_ingest` has checked everything
cheap, decodes each manifest file in worker processes and streams the pixels into one
(N, H, W, 3) uint8 ``.npy`` file in manifest order (row ``i`` is the image with ``id == i``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from entromix.common.errors import DataError
from entromix.common.image_store import ImageArrayWriter
from entromix.data.images import INTENSITY_FULL_SCALE, decode_image
from entromix.data.parallel import ordered_map, resolve_workers
from entromix.data.prepare import MANIFEST_COLUMNS, IngestPlan


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
                raise DataError(f"{path}: cannot decode this image ({error}). Replace or remove the file and re-run.")
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
