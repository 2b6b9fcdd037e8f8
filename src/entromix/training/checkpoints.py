"""Model checkpoints: written atomically, read back only with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers and strings (nothing that needs unpickling code):
``model`` (state_dict), ``model_name``, ``num_classes``, ``image_size``, ``labels``, ``epoch`` (the
last finished, from 0) and ``val`` (that epoch's validation metrics).

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
from entromix.common.torch_files import load_torch_file
from entromix.modeling.fit import predict_logits, uses_channels_last
from entromix.modeling.models import build_model


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


#: What an entromix checkpoint must hold for evaluate to rebuild and run the model.
CHECKPOINT_KEYS = ("model", "model_name", "num_classes", "image_size", "labels", "epoch")


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
    if missing:
        raise DataError(
            f"{path}: not an entromix checkpoint (missing {', '.join(missing)}); it was written by another "
            f"program or an older entromix. {fix}"
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

    def malignant_probability(self, images: np.ndarray) -> np.ndarray:
        """float64 (N,) P(class 1) for uint8 images (N, H, W, 3): softmax of the logits."""
        logits = predict_logits(self.model, images, self.device, self.image_size, channels_last=self.channels_last)
        return torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy().astype(np.float64)


def load_trained_model(path: str | Path, labels: list[str], device: torch.device) -> TrainedModel:
    """The model of the checkpoint at ``path``, checked to be trained for ``labels`` (the prepared
    data's); any mismatch is a DataError that says to rerun the train stage."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    trained_for = [str(x) for x in ckpt["labels"]]
    if trained_for != labels:
        raise DataError(
            f"{path} was trained for labels {trained_for}, but the prepared data has {labels}. "
            "Rerun the train stage (dvc repro train)."
        )
    model = build_model(ckpt["model_name"], int(ckpt["num_classes"]), int(ckpt["image_size"]))
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
