"""Classify new image files with a trained model, exactly as the pipeline does.

Each file is decoded, oriented, converted to RGB and resized to the checkpoint's
``preprocess.stored_size`` with its ``resize_mode`` (ingest's ``decode_image``), then resized to
the model's input size and normalised as in training (``entromix.modeling.fit.prepare_batch``).
Probabilities are ``softmax(logits / temperature)`` and an image is called positive (label index
1) when its probability reaches the checkpoint's tuned threshold. On the test images this gives
evaluate's probabilities exactly (``tests/test_predict.py``).

Uncertainty, optional: ``tta`` is the standard deviation of P(positive) over the eight
orientations of each image (flips and quarter turns, to which a smear's class is indifferent);
``mc-dropout`` the standard deviation over :data:`MC_DROPOUT_PASSES` passes with dropout active,
for models that have dropout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from entromix.common.device import autocast
from entromix.common.errors import DataError, listing
from entromix.data.images import IMAGE_EXTENSIONS, check_image_file, decode_image, images_in
from entromix.modeling.fit import dihedral_views, predict_logits, prepare_batch
from entromix.training.checkpoints import TrainedModel

Uncertainty = Literal["none", "tta", "mc-dropout"]
BadImages = Literal["skip", "error"]

MC_DROPOUT_PASSES = 20
#: files decoded and classified at a time by :func:`predict_files` (a multiple of the batch size), so
#: that memory does not grow with the number of files: 4096 images at 64 px are 48 MiB
PREDICT_CHUNK = 4096
DEFAULT_MAX_PIXELS = 100_000_000  # ingest's defaults, for checkpoints that do not record them
DEFAULT_MIN_SIDE = 16


@dataclass
class Predictions:
    frame: pd.DataFrame  # one row per classified file
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable ones
    threshold: float = 0.5
    threshold_source: str = ""


def find_images(inputs: list[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders walked (:func:`images_in`).
    A path that does not exist, or no image at all, is a DataError."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_file():
            found.append(item)
        elif item.is_dir():
            found += images_in(item)
        else:
            raise DataError(f"{item}: no such file or folder. Name image files or folders of images.")
    if not found:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}.")
    return found


def read_images(
    files: list[Path], preprocess: dict, bad_images: BadImages, progress: bool = True
) -> tuple[np.ndarray, list[Path], list[tuple[str, str]]]:
    """uint8 (N, S, S, 3) of the readable files as ingest stores them, the files kept, and the
    unreadable ones with the reason. ``bad_images: error`` stops on any unreadable file, naming
    every one, before anything is written. Holds every image at once: :func:`predict_files` reads
    :data:`PREDICT_CHUNK` files at a time instead."""
    with tqdm(total=len(files), desc="reading images", unit="img", disable=None if progress else True) as bar:
        pixels, kept, skipped = _decode_files(files, preprocess, bar)
    _refuse_unreadable(files, kept, skipped, bad_images)
    return np.stack(pixels), kept, skipped


def _decode_files(
    files: list[Path], preprocess: dict, bar: tqdm
) -> tuple[list[np.ndarray], list[Path], list[tuple[str, str]]]:
    """The pixels of the readable ``files`` (stored size), those files, and the unreadable ones with
    the reason; ``bar`` advances by one per file."""
    size, mode = int(preprocess["stored_size"]), str(preprocess["resize_mode"])
    intensity = str(preprocess.get("intensity", "fixed16"))  # checkpoints from before ingest.intensity: fixed16
    max_pixels = int(preprocess.get("max_pixels", DEFAULT_MAX_PIXELS))
    min_side = int(preprocess.get("min_image_size", DEFAULT_MIN_SIDE))
    pixels, kept, skipped = [], [], []
    for path in files:
        bar.update(1)
        reason = check_image_file(path, max_pixels, min_side)
        if reason is None:
            try:
                pixels.append(decode_image(path, size, mode, intensity).pixels)
                kept.append(path)
                continue
            except Exception as exc:  # noqa: BLE001 - a file that passed the header check but does not decode
                reason = f"not a readable image ({type(exc).__name__}: {exc})"
        skipped.append((str(path), reason))
    return pixels, kept, skipped


def _refuse_unreadable(
    files: list[Path], kept: list[Path], skipped: list[tuple[str, str]], bad_images: BadImages
) -> None:
    if skipped and bad_images == "error":
        raise DataError(
            f"{len(skipped)} file(s) cannot be read: "
            + listing([f"{p}: {r}" for p, r in skipped])
            + ". Remove or fix them, or pass --bad-images skip to classify the rest."
        )
    if not kept:
        raise DataError(f"none of the {len(files)} file(s) could be read as an image.")


def class_probabilities(
    trained: TrainedModel,
    images: np.ndarray,
    uncertainty: Uncertainty = "none",
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 (N, C) probabilities at the checkpoint's temperature, and (N,) the spread of
    P(class 1) under ``uncertainty`` (None for ``none``). The logits come from
    ``entromix.modeling.fit.predict_logits``, the evaluate stage's own path (autocast included)."""
    model, device = trained.model, trained.device
    temperature = float(trained.checkpoint.get("temperature", 1.0))
    if uncertainty == "mc-dropout" and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        raise DataError(
            f"--uncertainty mc-dropout: {trained.checkpoint['model_name']} has no dropout layer; use --uncertainty tta."
        )
    probs, spread = [], []
    starts = range(0, len(images), batch_size)
    for start in tqdm(starts, desc="classifying", unit="batch", disable=None if progress else True):
        chunk = images[start : start + batch_size]
        logits = predict_logits(model, chunk, device, trained.image_size, batch_size, trained.channels_last)
        probs.append(torch.softmax(torch.from_numpy(logits) / temperature, 1).double())  # (B, C)
        if uncertainty != "none":
            spread.append(_spread(trained, chunk, uncertainty, temperature))
    out = torch.cat(probs).numpy()
    return out, (torch.cat(spread).numpy() if spread else None)


@torch.no_grad()
def _spread(trained: TrainedModel, chunk: np.ndarray, uncertainty: Uncertainty, temperature: float) -> torch.Tensor:
    """(B,) standard deviation of P(malignant) (the positive labels' summed probability) over the
    eight orientations (``tta``) or over :data:`MC_DROPOUT_PASSES` passes with dropout active
    (``mc-dropout``)."""
    model, device = trained.model, trained.device
    x = prepare_batch(
        torch.from_numpy(np.ascontiguousarray(chunk)).to(device), trained.image_size, None, 0.0, trained.channels_last
    )
    if uncertainty == "tta":
        inputs = dihedral_views(x)
    else:
        inputs = [x] * MC_DROPOUT_PASSES
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.train()
    with autocast(device):
        positive = list(trained.label_space.positive)
        passes = torch.stack(
            [torch.softmax(model(v.contiguous()).float() / temperature, 1)[:, positive].sum(1) for v in inputs]
        )
    model.eval()
    return passes.double().std(0).cpu()  # (B,)


def predict_files(
    trained: TrainedModel,
    files: list[Path],
    threshold: float | None = None,
    per_class: bool = False,
    uncertainty: Uncertainty = "none",
    bad_images: BadImages = "skip",
    progress: bool = True,
) -> Predictions:
    """One row per readable file: ``path``, ``p_<positive label>`` (with several positive labels,
    ``p_early+pre+pro``: their summed probability), ``prediction`` (0/1) and ``label`` at the
    threshold (the checkpoint's tuned one unless ``threshold`` is given, else 0.5), plus
    ``p_<label>`` for every class with ``per_class`` and ``<uncertainty>_std`` with ``uncertainty``."""
    ckpt = trained.checkpoint
    labels = [str(x) for x in ckpt["labels"]]
    cut, source = _threshold(ckpt, threshold)
    probs, spread, kept, skipped = _classify_in_chunks(trained, files, uncertainty, bad_images, progress)
    space = trained.label_space
    positive = space.positive_probability(probs)  # the summed probability of the positive labels
    frame = pd.DataFrame({"path": [str(p) for p in kept], f"p_{space.positive_title}": positive})
    frame["prediction"] = (positive >= cut).astype(int)
    frame["label"] = [space.binary_names[i] for i in frame["prediction"]]
    if per_class:
        for i, name in enumerate(labels):
            frame[f"p_{name}"] = probs[:, i]
    if spread is not None:
        frame[f"{uncertainty.replace('-', '_')}_std"] = spread
    return Predictions(frame=frame, skipped=skipped, threshold=cut, threshold_source=source)


def _classify_in_chunks(
    trained: TrainedModel, files: list[Path], uncertainty: Uncertainty, bad_images: BadImages, progress: bool
) -> tuple[np.ndarray, np.ndarray | None, list[Path], list[tuple[str, str]]]:
    """:func:`read_images` then :func:`class_probabilities`, :data:`PREDICT_CHUNK` files at a time
    (issue 36: memory does not grow with the number of files). With ``bad_images: error`` the files
    after the first unreadable one are only checked, so that the error names every one."""
    probs, spread, kept, skipped = [], [], [], []
    bar = tqdm(total=len(files), desc="predicting", unit="img", disable=None if progress else True)
    for start in range(0, len(files), PREDICT_CHUNK):
        pixels, chunk_kept, chunk_skipped = _decode_files(
            files[start : start + PREDICT_CHUNK], trained.checkpoint["preprocess"], bar
        )
        kept += chunk_kept
        skipped += chunk_skipped
        if pixels and not (skipped and bad_images == "error"):
            p, s = class_probabilities(trained, np.stack(pixels), uncertainty, progress=False)
            probs.append(p)
            spread += [] if s is None else [s]
    bar.close()
    _refuse_unreadable(files, kept, skipped, bad_images)
    return np.concatenate(probs), (np.concatenate(spread) if spread else None), kept, skipped


def _threshold(ckpt: dict, given: float | None) -> tuple[float, str]:
    if given is not None:
        if not 0.0 <= given <= 1.0:
            raise DataError(f"--threshold must be in [0, 1], got {given}.")
        return float(given), "given with --threshold"
    tuned = ckpt.get("threshold")
    if isinstance(tuned, dict) and tuned.get("value") is not None:
        return float(tuned["value"]), (
            f"tuned on val for sensitivity {tuned.get('target_sensitivity')} "
            f"(val sensitivity {tuned.get('val_sensitivity')})"
        )
    print(
        "entromix predict: this checkpoint has no tuned threshold (the train stage's best.pt / last.pt); "
        "using 0.5. models/deploy/model.pt, written by the evaluate stage, carries the tuned one.",
        file=sys.stderr,
    )
    return 0.5, "0.5 (no tuned threshold in the checkpoint)"
