"""The resume state of the train stage: everything an interrupted run needs to continue exactly.

``models/train/checkpoints/resume.pt`` is written atomically after every epoch. Its schema is
:class:`ResumeState`, here and nowhere else. A run reads it back only when its ``fingerprint``
(:func:`run_fingerprint`: the settings, the input data, the torch version and entromix's source)
matches, and only with ``train.resume: true``. The batches of an epoch depend only on (seed,
epoch), so on CPU a resumed run ends with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entromix.training.checkpoints import load_resume_state, save_checkpoint
from entromix.training.curriculum import CurriculumConfig

#: entromix's source: a change to any of it starts a run afresh
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ResumeState:
    """The state after the last finished epoch (``len(history)`` epochs)."""

    fingerprint: str  # which run this is (:func:`run_fingerprint`)
    model: dict[str, torch.Tensor]  # CPU state_dict
    average: dict[str, torch.Tensor]  # the moving average of the weights (AveragedModel's state_dict; empty when off)
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    augment_rng: torch.Tensor  # the augmentation generator's state (a CPU ByteTensor; empty without augmentation)
    torch_rng: torch.Tensor  # torch's global CPU generator
    history: list[dict[str, Any]]  # one row per finished epoch
    best_row: dict[str, Any] | None  # the history row of the best epoch so far (None during a curriculum's warmup)
    best_state: dict[str, torch.Tensor]  # its CPU state_dict (empty while best_row is None)
    gate_jsd: torch.Tensor  # (N,) float32 scores the gate read (re-scoring changes them)
    used: torch.Tensor  # (n_gated,) bool: gated images (synthetic, then unlabelled) placed in a batch so far
    labels: torch.Tensor  # (N,) int64: the training table's labels, pseudo-labels included
    rank_rngs: list[dict[str, torch.Tensor]]  # several processes: each rank's "augment" and "torch" generator states

    def save(self, path: str | Path) -> None:
        save_checkpoint(path, {f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path, fingerprint: str) -> ResumeState | None:
        """The state at ``path`` when it exists, is complete and belongs to this run; else None."""
        payload = load_resume_state(path, fingerprint)
        if payload is None:
            return None
        missing = [f.name for f in fields(cls) if f.name not in payload]
        if missing:
            print(f"entromix train: {path} lacks {', '.join(missing)} (an older entromix); starting from epoch 1")
            return None
        return cls(**{f.name: payload[f.name] for f in fields(cls)})

    def scores(self) -> np.ndarray:
        return self.gate_jsd.numpy().astype(np.float32)

    def used_mask(self) -> np.ndarray:
        return self.used.numpy().astype(bool)


def run_fingerprint(curriculum: CurriculumConfig, config: Any, inputs: list[Path], array_shape: tuple) -> str:
    """Which run a resume state belongs to: sha256 of the settings (``resume``, ``device`` and the
    rendezvous address aside; the number of processes counts),
    the input files, the torch version and entromix's own source (a code change starts afresh)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("resume", "device", "rdzv_endpoint")}
    digest = hashlib.sha256(
        json.dumps([asdict(curriculum), settings, list(array_shape), torch.__version__], sort_keys=True).encode()
    )
    for path in inputs:
        digest.update(Path(path).read_bytes())
    for source in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()
