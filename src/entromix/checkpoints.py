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

from pathlib import Path
from typing import Any

import torch

from entromix.atomic import atomic_path
from entromix.errors import DataError
from entromix.torch_files import load_torch_file


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


#: What an entromix checkpoint must hold for evaluate to rebuild and run the model.
CHECKPOINT_KEYS = ("model", "model_name", "num_classes", "image_size", "labels", "epoch")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """An entromix checkpoint, checked to hold :data:`CHECKPOINT_KEYS`; any problem is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; run the train stage first (dvc repro train; "
                        "`dvc repro` runs every stage in order).")  # fmt: skip
    fix = "Rerun the train stage to write it again (dvc repro -f train)."
    ckpt = load_torch_file(path, "the train stage's checkpoint", fix)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DataError(f"{path}: not an entromix checkpoint (missing {', '.join(missing)}); it was written by another "
                        f"program or an older entromix. {fix}")  # fmt: skip
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
