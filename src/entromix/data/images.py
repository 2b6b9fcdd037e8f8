"""Decode one image file into a fixed-size RGB uint8 array.

Every image is decoded exactly once, in the ingest stage; later stages read the resulting array.
Mode handling (what users' folders actually contain):

* ``RGB``: as is. ``L`` (grayscale), ``1`` (bilevel), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``:
  converted to RGB by Pillow.
* ``RGBA``, ``LA``, ``PA`` and palette (``P``) images with transparency: composited over a white
  background. In a bright-field smear, transparent means "no stain", which is white light.
* 16-bit and 32-bit integer grayscale (``I;16*``, ``I``), by ``intensity`` (``ingest.intensity``):
  ``fixed16`` (default) scales the 16-bit range to 8 bits with one fixed factor (``v / 257``), so
  intensities stay comparable between images; ``fixed12`` scales 0..4095 (12-bit cameras stored
  in 16-bit PNG/TIFF, which ``fixed16`` would squeeze into 0..16) and clips above; ``per_image_minmax``
  stretches each image's own min..max to 0..255 (comparability between images is lost).
  ``F`` (float): values in [0, 1] are scaled by 255, others clipped to [0, 255].
* EXIF orientation is applied, so a rotated phone photo is stored upright.
* Multi-frame files (TIFF stacks, GIFs): the first frame.

Resizing (``resize_mode``): ``stretch`` squashes to ``size x size`` as the reference design's
``Resize((224, 224))`` does; ``center_crop`` crops the largest centred square first (keeps the
aspect ratio, may cut the edges); ``pad`` letterboxes on white (keeps everything, adds borders).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

ResizeMode = Literal["stretch", "center_crop", "pad"]
Intensity = Literal["fixed16", "fixed12", "per_image_minmax"]

#: The largest raw value of each fixed intensity scale (``per_image_minmax`` has none).
INTENSITY_FULL_SCALE = {"fixed16": 65535, "fixed12": 4095}

#: Extensions ingest treats as images (lower case). Anything else is ignored and counted.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")

_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image: the resized pixels and what the original file was."""

    pixels: np.ndarray  # (size, size, 3) uint8
    width: int  # original width in pixels
    height: int
    mode: str  # original Pillow mode, e.g. "RGB", "L", "I;16", "P"
    peak: int | None = None  # the largest raw value of a high-depth integer image (I;16*, I); else None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (exact-duplicate detection)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_high_depth_integer(img: Image.Image) -> bool:
    """16- or 32-bit integer grayscale: the images ``ingest.intensity`` applies to."""
    return img.mode.startswith("I")


def to_rgb(img: Image.Image, intensity: Intensity = "fixed16") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_high_depth_to_uint8(img, intensity), mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _high_depth_to_uint8(img: Image.Image, intensity: Intensity = "fixed16") -> np.ndarray:
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        scale = 255.0 if finite.size and finite.max() <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr * scale), 0, 255).round().astype(np.uint8)
    # I;16, I;16B, I;16L, I (16-bit PNG/TIFF decode to these)
    arr = arr.astype(np.int64)
    if intensity == "per_image_minmax":
        low, high = int(arr.min()), int(arr.max())
        if high == low:  # a flat image has no range to stretch: black, as 0 would be
            return np.zeros(arr.shape, dtype=np.uint8)
        return (((arr - low) * 255 + (high - low) // 2) // (high - low)).astype(np.uint8)
    full = INTENSITY_FULL_SCALE[intensity]  # a fixed scale: rounded v * 255 / full, clipped to the scale
    arr = np.clip(arr, 0, full)
    return ((arr * 255 + full // 2) // full).astype(np.uint8)


def resize_square(img: Image.Image, size: int, mode: ResizeMode) -> Image.Image:
    """Resize an RGB image to ``size x size`` (antialiased) according to ``mode``."""
    w, h = img.size
    if mode == "center_crop" and w != h:
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    elif mode == "pad" and w != h:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), _WHITE)
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = canvas
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return img


def check_image_file(path: str | Path, max_pixels: int, min_side: int) -> str | None:
    """Why ``path`` cannot be ingested, or None. Reads the header (and, for PNG, the chunk checksums).

    * zero-byte files and files Pillow cannot identify (a text file named ``.jpg``);
    * more than ``max_pixels`` pixels: a decompression bomb (a tiny file that decodes to gigabytes)
      or a whole-slide image that needs tiling first; checked from the header, before decoding;
    * a side shorter than ``min_side`` px: an icon or a thumbnail, not a smear image;
    * a truncated or corrupt file: PNG by ``verify`` (chunk checksums), every other format by
      decoding it (JPEG at 1/8 scale through libjpeg's DCT scaling: it still reads every byte of
      the compressed data, at a fraction of a full decode's cost), so ingest lists every bad
      file in one run and ``bad_images: skip`` leaves truncated ones out too.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                return (
                    f"{width}x{height} = {width * height:,} pixels is above ingest.max_pixels ({max_pixels:,}): "
                    "a decompression bomb, or a whole-slide image that needs tiling first"
                )
            if min(width, height) < min_side:
                return f"{width}x{height} px is smaller than ingest.min_image_size ({min_side} px)"
            fmt = img.format
            img.verify()
        if fmt != "PNG":
            with Image.open(path) as img:
                if fmt == "JPEG":
                    img.draft(img.mode, (1, 1))  # the smallest DCT scale: every byte read, few pixels made
                img.load()
    except Image.DecompressionBombError as exc:  # Pillow's own guard fires in open(), before ours
        return (
            f"above ingest.max_pixels ({max_pixels:,}) and Pillow's limit: a decompression bomb, or a "
            f"whole-slide image that needs tiling first ({exc})"
        )
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a usable image
        return f"not a readable image ({type(exc).__name__}: {exc})"
    return None


def decode_image(
    path: str | Path, size: int, resize_mode: ResizeMode = "stretch", intensity: Intensity = "fixed16"
) -> DecodedImage:
    """Open, orient, convert to RGB and resize one image file to (size, size, 3) uint8.

    JPEGs are decoded with libjpeg's DCT scaling (``draft``) when the target is at most half the
    original size: much faster, and the following antialiased resize makes the result visually
    the same as a full decode.
    """
    with Image.open(path) as img:
        width, height, mode = img.width, img.height, img.mode
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # both sides stay >= size: a power-of-two reduction
        img = ImageOps.exif_transpose(img) or img
        peak = int(np.asarray(img).max()) if is_high_depth_integer(img) else None
        rgb = resize_square(to_rgb(img, intensity), size, resize_mode)
        pixels = np.asarray(rgb, dtype=np.uint8)
    return DecodedImage(pixels=pixels, width=width, height=height, mode=mode, peak=peak)


def inputs_in(folder: Path) -> tuple[list[Path], dict[str, str]]:
    """Every entry under ``folder`` named like an image (hidden ones skipped), sorted, and those that
    are not read, with why: a folder named like an image file, and a symbolic link that leads out of
    ``folder`` (or nowhere). Each still gets its row in the predictions, with the reason."""
    root = folder.resolve()
    entries, refused = [], {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).parts
        if path.suffix.lower() not in IMAGE_EXTENSIONS or any(part.startswith(".") for part in relative):
            continue
        if path.is_symlink() or any(p.is_symlink() for p in list(path.parents)[: len(relative) - 1]):
            target = path.resolve()
            if not target.exists():
                refused[str(path)] = "a symbolic link to nothing (dangling): not read"
            elif root not in target.parents:
                refused[str(path)] = f"a symbolic link out of {folder} (to {target}): not read"
        if path.is_dir() and not path.is_symlink():
            refused[str(path)] = "a folder named like an image file, not an image: not read"
        elif path.is_dir():
            continue
        entries.append(path)
    return entries, refused
