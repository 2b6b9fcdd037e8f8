"""The reference preprocessing: an image file -> the exported model's input, exactly as predict does it.

Predict, the evaluate stage and the exported graph see the same pixels only if a file is decoded
the way ingest decoded the training images, and the details matter: JPEGs are decoded with
libjpeg's DCT scaling (``Image.draft``) when the target is at most half the original size, then
resized by Pillow's bilinear filter with ``reducing_gap=3.0`` (``entromix.data.images.decode_image``);
a plain ``Image.resize(..., BILINEAR)`` of the same file gave P(malignant) 0.953 where predict gave
0.935. So use these functions in front of an exported model (docs/using-the-model.md)::

    x = load_images(["cell.jpg"], "model.onnx.json")   # float32 (N, 3, S, S) in [0, 1]
    probabilities = onnxruntime.InferenceSession("model.onnx").run(None, {"images": x})[0]

Steps (each is predict's own code): check the file (``check_image_file``), decode, orient, RGB, resize to
``stored_size`` with ``resize_mode`` (``decode_image``, uint8 (stored, stored, 3)), then scale to
[0, 1] and resize to ``image_size`` (bilinear, antialiased) when it differs
(``entromix.modeling.augment.to_float``). Normalisation and the softmax are inside the exported
graph. ``tests/test_predict.py`` checks that this plus the ONNX / TorchScript model gives predict's
probabilities within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from entromix.common.errors import DataError
from entromix.data.images import check_image_file, decode_image
from entromix.modeling.augment import to_float

DEFAULT_MAX_PIXELS = 100_000_000  # ingest's defaults, for checkpoints that do not record them
DEFAULT_MIN_SIDE = 16


def settings(preprocess: dict | str | Path) -> dict:
    """The decoding settings from a checkpoint's ``preprocess`` dict, an exported model's JSON
    description (``model.onnx.json``) or the path of one: ``stored_size``, ``resize_mode``,
    ``intensity``, ``image_size``, ``max_pixels``, ``min_image_size``."""
    if isinstance(preprocess, (str, Path)):
        try:
            preprocess = json.loads(Path(preprocess).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(
                f"{preprocess}: cannot read the export's description ({exc}). Pass the .json that "
                "`entromix export` wrote beside the model."
            ) from None
    source = preprocess.get("input", preprocess)  # an export description keeps them under "input"
    try:
        shape = source.get("shape") or [source["stored_size"]]  # no model size given: the stored one
        image_size = int(source.get("image_size") or shape[-1])
        return {
            "stored_size": int(source["stored_size"]),
            "resize_mode": str(source["resize_mode"]),
            "intensity": str(source.get("intensity", "fixed16")),  # checkpoints from before ingest.intensity
            "image_size": image_size,
            "max_pixels": int(source.get("max_pixels", DEFAULT_MAX_PIXELS)),
            "min_image_size": int(source.get("min_image_size", DEFAULT_MIN_SIDE)),
        }
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DataError(
            f"the preprocessing description lacks {exc}; pass a checkpoint's 'preprocess' entry or the .json "
            "that `entromix export` wrote."
        ) from None


def stored_pixels(path: str | Path, preprocess: dict) -> np.ndarray:
    """uint8 (stored, stored, 3): the file as ingest stores it. An unreadable file is a DataError
    naming the file and why (empty, not an image, too large or small, truncated)."""
    s = settings(preprocess)
    reason = check_image_file(path, s["max_pixels"], s["min_image_size"])
    if reason is None:
        try:
            return decode_image(path, s["stored_size"], s["resize_mode"], s["intensity"]).pixels
        except Exception as exc:  # noqa: BLE001 - a file that passed the header check but does not decode
            reason = f"not a readable image ({type(exc).__name__}: {exc})"
    raise DataError(f"{path}: {reason}")


def to_model_input(pixels: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, 3, image_size, image_size) in [0, 1]: the exported model's
    input, from the same code that prepares every training and predict batch."""
    batch = torch.from_numpy(np.ascontiguousarray(pixels))
    return to_float(batch, image_size).contiguous().numpy()


def load_image(path: str | Path, preprocess: dict | str | Path) -> np.ndarray:
    """float32 (3, S, S) in [0, 1]: one file as the exported model takes it (module docstring)."""
    return load_images([path], preprocess)[0]


def load_images(paths: list[str | Path], preprocess: dict | str | Path) -> np.ndarray:
    """float32 (N, 3, S, S) in [0, 1]: the files as the exported model takes them (module docstring).
    ``preprocess``: the export's JSON description (or its path), or a checkpoint's ``preprocess``."""
    s = settings(preprocess)
    pixels = np.stack([stored_pixels(p, s) for p in paths])
    return to_model_input(pixels, s["image_size"])
