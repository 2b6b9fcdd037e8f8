"""Model checkpoints: written atomically, read back only with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers and strings (nothing that needs unpickling code)
that describes itself, so that ``entromix predict`` and ``entromix export`` need nothing else:

* ``format`` (:data:`CHECKPOINT_FORMAT`) and ``version`` (:data:`CHECKPOINT_VERSION`);
* ``model`` (state_dict), ``model_name`` (the architecture), ``ensemble`` (members of that
  architecture averaged in probability, ``entromix.modeling.ensemble``; absent: 1), ``num_classes``, ``labels`` (class
  names in label order), ``positive_labels`` (the labels whose summed probability is P(malignant);
  absent in checkpoints written before it: ``labels[1:]``, ``entromix.common.labels``);
* ``preprocess``: how a file becomes the model's input. ``stored_size`` and ``resize_mode`` are
  ingest's (decode, orient, RGB, resize to a ``stored_size`` square), ``image_size`` the model's
  input (resized again, bilinear, when it differs), ``mean`` / ``std`` the normalisation of
  pixel values scaled to [0, 1];
* ``temperature`` (logits are divided by it before the softmax) and ``threshold`` (the tuned
  P(malignant) cut, its ``target_sensitivity`` and ``val_sensitivity``): 1.0 and None in the
  train stage's ``best.pt`` / ``last.pt``; the evaluate stage's ``models/deploy/model.pt`` sets them;
* ``epoch`` (the last finished, from 0), ``val`` (that epoch's validation metrics) and
  ``provenance``: the params that made it, the git revision, the torch and entromix versions.

The resume state (``models/train/checkpoints/resume.pt``, written after every epoch) adds what an
interrupted run needs to continue exactly: ``optimizer``, ``scheduler``, ``augment_rng``,
``torch_rng``, the ``history``, the best row and weights so far, and a ``fingerprint`` of the
settings and input data it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entromix.common.atomic import atomic_path
from entromix.common.errors import DataError
from entromix.common.labels import LabelSpace, label_space_of_checkpoint
from entromix.common.torch_files import load_torch_file, save_torch_file


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        save_torch_file(payload, tmp)


CHECKPOINT_FORMAT = "entromix-checkpoint"
CHECKPOINT_VERSION = 2

#: What an entromix checkpoint must hold to rebuild the model and prepare its input.
CHECKPOINT_KEYS = (
    "format",
    "version",
    "model",
    "model_name",
    "num_classes",
    "image_size",
    "labels",
    "preprocess",
    "temperature",
    "threshold",
    "epoch",
    "provenance",
)
PREPROCESS_KEYS = ("stored_size", "resize_mode", "image_size", "mean", "std")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An entromix checkpoint, checked to hold :data:`CHECKPOINT_KEYS`; any problem is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {path} does not exist; run the train stage first (dvc repro train; "
            "`dvc repro` runs every stage in order)."
        )
    fix = "Rerun the train stage to write it again (dvc repro -f train)."
    ckpt = load_torch_file(path, "the train stage's checkpoint", fix)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if not missing and isinstance(ckpt["preprocess"], dict):
        missing = [f"preprocess.{k}" for k in PREPROCESS_KEYS if k not in ckpt["preprocess"]]
    if missing:
        written_by = "an older entromix" if isinstance(ckpt, dict) and "model_name" in ckpt else "another program"
        raise DataError(
            f"{path}: not a self-describing entromix checkpoint (version {CHECKPOINT_VERSION}): missing "
            f"{', '.join(missing)}. It was written by {written_by}. {fix}"
        )
    if ckpt["format"] != CHECKPOINT_FORMAT or int(ckpt["version"]) > CHECKPOINT_VERSION:
        raise DataError(
            f"{path}: format {ckpt['format']!r} version {ckpt['version']} is not one this entromix reads "
            f"({CHECKPOINT_FORMAT!r} up to version {CHECKPOINT_VERSION}). Upgrade entromix or {fix[0].lower()}{fix[1:]}"
        )
    return ckpt


def load_resume_state(path: str | Path, fingerprint: str) -> dict[str, Any] | None:
    """The resume state at ``path`` if it exists and belongs to this run (same fingerprint), else None.

    An unreadable state (a crash can only leave a complete file or none, since writes are atomic,
    but the file may come from an older entromix) is ignored with a message, not an error.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a stale or foreign file: start afresh
        print(f"entromix train: ignoring unreadable resume state {path} ({exc}); starting from epoch 1")
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"entromix train: {path} belongs to other settings, data or code; starting from epoch 1")
        return None
    return state


def state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state_dict (the model keeps training on its device)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


@dataclass
class TrainedModel:
    """A classifier rebuilt from a train-stage checkpoint, in eval mode on its device."""

    model: torch.nn.Module
    checkpoint: dict[str, Any]
    device: torch.device
    channels_last: bool

    @property
    def image_size(self) -> int:
        return int(self.checkpoint["image_size"])

    @property
    def label_space(self) -> LabelSpace:
        return label_space_of_checkpoint(self.checkpoint)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, K) softmax of the logits for uint8 images (N, H, W, 3)."""
        from entromix.modeling.fit import predict_logits

        logits = predict_logits(self.model, images, self.device, self.image_size, channels_last=self.channels_last)
        return torch.softmax(torch.from_numpy(logits), 1).numpy()

    def malignant_probability(self, images: np.ndarray | None, probs: np.ndarray | None = None) -> np.ndarray:
        """float64 (N,) P(malignant): the summed softmax of the positive labels (``probs``: the
        :meth:`probabilities` of ``images`` when already computed)."""
        probs = self.probabilities(images) if probs is None else probs
        return self.label_space.positive_probability(probs).astype(np.float64)


def load_trained_model(path: str | Path, labels: list[str] | None, device: torch.device) -> TrainedModel:
    """The model of the checkpoint at ``path``, checked to be trained for ``labels`` (the prepared
    data's; None: any); any mismatch is a DataError that says to rerun the train stage."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    trained_for = [str(x) for x in ckpt["labels"]]
    if labels is not None and trained_for != labels:
        raise DataError(
            f"{path} was trained for labels {trained_for}, but the prepared data has {labels}. "
            "Rerun the train stage (dvc repro train)."
        )
    # torchvision (about 3 s to import) only where a network is built: reading a checkpoint needs torch alone
    from entromix.modeling.ensemble import build_ensemble
    from entromix.modeling.fit import uses_channels_last
    from entromix.modeling.models import build_model

    # checkpoints written before train.ensemble hold one network
    model = build_ensemble(
        lambda: build_model(ckpt["model_name"], int(ckpt["num_classes"]), int(ckpt["image_size"])),
        int(ckpt.get("ensemble", 1)),
    )
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError) as exc:
        raise DataError(
            f"{path}: its weights do not fit {ckpt['model_name']} ({str(exc).splitlines()[0]}). "
            "Rerun the train stage (dvc repro -f train)."
        ) from None
    channels_last = uses_channels_last(ckpt["model_name"], device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return TrainedModel(model=model.eval(), checkpoint=ckpt, device=device, channels_last=channels_last)
