"""Classify new image files with a trained model, exactly as the pipeline does.

Each file is decoded, oriented, converted to RGB and resized to the checkpoint's
``preprocess.stored_size`` with its ``resize_mode`` (ingest's ``decode_image``), then resized to
the model's input size and normalised as in training (``entromix.modeling.fit.prepare_batch``).
Probabilities are ``softmax(logits / temperature)`` and an image is called positive (label index
1) when its probability reaches the checkpoint's tuned threshold. On the test images this gives
evaluate's probabilities exactly (``tests/test_predict.py``).

Every input file gets a row. A file that cannot be read (empty, not an image, truncated, too
large or too small) gets its reason in ``error`` and empty probabilities (``bad_images: skip``, the
default; the ``entromix predict`` command then exits with :data:`EXIT_SOME_UNREADABLE`), or stops
the command before anything is written (``bad_images: error``).

Out of distribution: with a checkpoint from the evaluate stage, ``ood_distance`` is the image's
distance from the real training images in the model's feature space and ``ood`` is 1 above the
threshold calibrated on val (``entromix.evaluation.ood``; about 2.5% of in-distribution images
are flagged). An ensemble's distance is its members' mean. Checkpoints without the statistics (the
train stage's ``best.pt``) leave both columns empty.

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
from entromix.common.progress import Eta
from entromix.data.images import IMAGE_EXTENSIONS, inputs_in
from entromix.evaluation.ood import OodDetector, capture_features
from entromix.modeling.fit import dihedral_views, predict_logits, prepare_batch
from entromix.prediction.preprocess import settings, stored_pixels
from entromix.training.checkpoints import TrainedModel

Uncertainty = Literal["none", "tta", "mc-dropout"]
BadImages = Literal["skip", "error"]

MC_DROPOUT_PASSES = 20
#: files decoded and classified at a time by :func:`predict_files`, so that memory does not grow with
#: the number of files: 4096 images at 64 px are 48 MiB
PREDICT_CHUNK = 4096
#: exit code of ``entromix predict`` when some files could not be read (their rows hold the reason
#: in ``error``); 2 stays "bad usage", and nothing is written then
EXIT_SOME_UNREADABLE = 3


@dataclass
class Predictions:
    frame: pd.DataFrame  # one row per input file, in their order; unreadable ones with ``error``
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason) of unreadable ones
    threshold: float = 0.5
    threshold_source: str = ""
    ood: OodDetector | None = None  # the checkpoint's detector; None: no OOD columns filled

    @property
    def n_flagged(self) -> int:
        return int((self.frame["ood"] == 1).sum())

    def summary(self) -> str:
        """``N image(s) ({'benign': .., 'malignant': ..}); F flagged out of distribution; U unreadable``."""
        classified = self.frame[self.frame["error"] == ""]
        counts = classified["label"].value_counts().to_dict()
        ood = (
            f"{self.n_flagged} flagged out of distribution (ood: {self.ood.score} distance > "
            f"{self.ood.threshold:.4g}, the val {self.ood.quantile} quantile)"
            if self.ood is not None
            else "no OOD flag (the checkpoint has no OOD statistics)"
        )
        return f"{len(classified)} image(s) ({counts}); {ood}; {len(self.skipped)} unreadable"


def find_images(inputs: list[str | Path]) -> tuple[list[Path], dict[str, str]]:
    """The image files named by ``inputs``: files as given, folders walked (:func:`inputs_in`), and
    the entries of those folders that are not read, with why. A path that does not exist, or no
    image at all, is a DataError."""
    found: list[Path] = []
    refused: dict[str, str] = {}
    for item in map(Path, inputs):
        if item.is_file():
            found.append(item)
        elif item.is_dir():
            entries, not_read = inputs_in(item)
            found += entries
            refused |= not_read
        else:
            raise DataError(f"{item}: no such file or folder. Name image files or folders of images.")
    if not found:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}.")
    return found, refused


def read_images(
    files: list[Path], preprocess: dict, bad_images: BadImages, progress: bool = True
) -> tuple[np.ndarray, list[Path], list[tuple[str, str]]]:
    """uint8 (N, S, S, 3) of the readable files as ingest stores them
    (``entromix.prediction.preprocess.stored_pixels``), the files kept, and the unreadable ones
    with the reason. ``bad_images: error`` stops on any unreadable file, naming every one, before
    anything is written. No readable file gives an empty (0, S, S, 3) array."""
    decoding = settings(preprocess)
    size = decoding["stored_size"]
    pixels, kept, skipped = [], [], []
    for path in tqdm(files, desc="reading images", unit="img", disable=None if progress else True):
        try:
            pixels.append(stored_pixels(path, decoding))
            kept.append(path)
        except DataError as exc:
            skipped.append((str(path), str(exc).removeprefix(f"{path}: ")))
    if bad_images == "error":
        _refuse_unreadable(skipped)
    return (np.stack(pixels) if pixels else np.zeros((0, size, size, 3), np.uint8)), kept, skipped


def _refuse_unreadable(skipped: list[tuple[str, str]]) -> None:
    """``bad_images: error``: stop before anything is written, naming every unreadable file."""
    if skipped:
        raise DataError(
            f"{len(skipped)} file(s) cannot be read: "
            + listing([f"{p}: {r}" for p, r in skipped])
            + ". Remove or fix them, or pass --bad-images skip to classify the rest."
        )


def class_probabilities(
    trained: TrainedModel,
    images: np.ndarray,
    uncertainty: Uncertainty = "none",
    batch_size: int = 256,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """float64 (N, C) probabilities at the checkpoint's temperature, and (N,) the spread of
    P(class 1) under ``uncertainty`` (None for ``none``); :func:`classify` without the features."""
    probs, spread, _ = classify(trained, images, uncertainty, batch_size, progress)
    return probs, spread


def classify(
    trained: TrainedModel,
    images: np.ndarray,
    uncertainty: Uncertainty = "none",
    batch_size: int = 256,
    progress: bool = True,
    features: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """float64 (N, C) probabilities at the checkpoint's temperature, (N,) the spread of P(class 1)
    under ``uncertainty`` (None for ``none``), and with ``features`` (``stages`` / ``penultimate``)
    the members' features from the same forward passes (``entromix.evaluation.ood.model_features``:
    name -> float32 (K, N, D); {} without). The logits come from the evaluate stage's own path
    (``entromix.modeling.fit.predict_logits``, autocast included), so the probabilities are evaluate's."""
    model, device = trained.model, trained.device
    temperature = float(trained.checkpoint.get("temperature", 1.0))
    if uncertainty == "mc-dropout" and not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
        raise DataError(
            f"--uncertainty mc-dropout: {trained.checkpoint['model_name']} has no dropout layer; use --uncertainty tta."
        )
    probs, spread = [], []
    starts = range(0, len(images), batch_size)
    with capture_features(model, features or "penultimate") as capture:
        capture.paused = features is None
        for start in tqdm(starts, desc="classifying", unit="batch", disable=None if progress else True):
            chunk = images[start : start + batch_size]
            logits = predict_logits(model, chunk, device, trained.image_size, batch_size, trained.channels_last)
            probs.append(torch.softmax(torch.from_numpy(logits) / temperature, 1).double())  # (B, C)
            if uncertainty != "none":
                paused, capture.paused = capture.paused, True  # the extra passes are not the image's features
                spread.append(_spread(trained, chunk, uncertainty, temperature))
                capture.paused = paused
        if not probs:  # no readable image: an empty pass gives the shapes
            logits = predict_logits(model, images, device, trained.image_size)
            return logits.astype(np.float64), (np.zeros(0) if uncertainty != "none" else None), capture.arrays()
        found = capture.arrays() if features is not None else {}
    return torch.cat(probs).numpy(), (torch.cat(spread).numpy() if spread else None), found


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
    refused: dict[str, str] | None = None,
) -> Predictions:
    """One row per file, in the order given (``refused``: files not to read, with why: a row each
    with the reason, as an unreadable file's): ``path``, ``p_<positive label>`` (with several positive
    labels, ``p_early+pre+pro``: their summed probability), ``prediction`` (0/1) and ``label`` at the
    threshold (the checkpoint's tuned one unless ``threshold`` is given, else 0.5), ``p_<label>``
    for every class with ``per_class``, ``<uncertainty>_std`` with ``uncertainty``, then
    ``ood_distance`` and ``ood`` (module docstring) and ``error`` ("" for a classified file, the
    reason for an unreadable one, whose other columns are empty)."""
    ckpt = trained.checkpoint
    cut, source = _threshold(ckpt, threshold)
    detector = OodDetector.from_checkpoint(ckpt["ood"], "the checkpoint") if ckpt.get("ood") is not None else None
    kind = detector.features if detector is not None else None
    probs, spread, features, kept, skipped = _classify_in_chunks(
        trained, files, uncertainty, bad_images, progress, kind, refused or {}
    )
    space = trained.label_space
    positive = space.positive_probability(probs)  # the summed probability of the positive labels
    frame = pd.DataFrame({"path": [str(p) for p in kept], f"p_{space.positive_title}": positive})
    frame["prediction"] = pd.array((positive >= cut).astype(int), dtype="Int64")
    frame["label"] = pd.Series([space.binary_names[i] for i in frame["prediction"]], dtype=object)
    if per_class:
        for i, name in enumerate(str(x) for x in ckpt["labels"]):
            frame[f"p_{name}"] = probs[:, i]
    if spread is not None:
        frame[f"{uncertainty.replace('-', '_')}_std"] = spread
    distance = detector.distances(features) if detector is not None else np.full(len(kept), np.nan)
    frame["ood_distance"] = distance
    frame["ood"] = pd.array(detector.flags(distance).astype(int), dtype="Int64") if detector is not None else pd.NA
    frame["error"] = ""
    failed = pd.DataFrame({"path": [p for p, _ in skipped], "error": [r for _, r in skipped]}, dtype=object)
    frame = pd.concat([frame, failed], ignore_index=True) if len(failed) else frame
    frame["label"] = frame["label"].fillna("")
    # read_images keeps the input order within each part: interleave them back into it
    readable = np.isin(np.arange(len(files)), _positions(files, kept))
    order = np.concatenate([np.flatnonzero(readable), np.flatnonzero(~readable)])
    frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
    return Predictions(frame=frame, skipped=skipped, threshold=cut, threshold_source=source, ood=detector)


def _classify_in_chunks(
    trained: TrainedModel,
    files: list[Path],
    uncertainty: Uncertainty,
    bad_images: BadImages,
    progress: bool,
    features: str | None,
    refused: dict[str, str],
) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray], list[Path], list[tuple[str, str]]]:
    """:func:`read_images` then :func:`classify`, :data:`PREDICT_CHUNK` files at a time, so memory
    does not grow with the number of files (issue 36), with a progress line and an ETA per chunk when
    there are several. With ``bad_images: error`` the chunks after an unreadable file are only read,
    so that the error names every unreadable file before anything is written."""
    probs, spread, found, kept, skipped = [], [], [], [], []
    chunks = range(0, len(files), PREDICT_CHUNK)
    eta = Eta(len(files))
    for start in chunks:
        part = files[start : start + PREDICT_CHUNK]
        readable = [p for p in part if str(p) not in refused]
        images, part_kept, part_skipped = read_images(readable, trained.checkpoint["preprocess"], "skip", progress)
        kept += part_kept
        position = {str(p): i for i, p in enumerate(part)}  # the rows of the unread files keep the input order
        not_read = part_skipped + [(str(p), refused[str(p)]) for p in part if str(p) in refused]
        skipped += sorted(not_read, key=lambda item: position[item[0]])
        if not (skipped and bad_images == "error"):
            p, s, f = classify(trained, images, uncertainty, progress=progress, features=features)
            probs.append(p)
            spread += [] if s is None else [s]
            found.append(f)
        if len(chunks) > 1:
            print(f"entromix predict: {eta.step(len(part))} ({len(skipped)} unreadable so far)", file=sys.stderr)
    if bad_images == "error":
        _refuse_unreadable(skipped)
    names = sorted({name for f in found for name in f})  # a chunk of unreadable files only has none
    features_all = {name: np.concatenate([f[name] for f in found if name in f], axis=1) for name in names}
    return np.concatenate(probs), (np.concatenate(spread) if spread else None), features_all, kept, skipped


def _positions(files: list[Path], kept: list[Path]) -> list[int]:
    """The positions in ``files`` of ``kept``, a subsequence of it (a file named twice counts twice)."""
    positions, j = [], 0
    for i, path in enumerate(files):
        if j < len(kept) and kept[j] == path:
            positions.append(i)
            j += 1
    return positions


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
