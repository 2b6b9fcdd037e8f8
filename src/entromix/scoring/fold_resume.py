"""The score stage's finished models, kept so that an interrupted run continues where it stopped.

The stage trains ``score.folds`` fold models (and, with ``synthetic_score: aum``, one more: model
index ``folds``). After each one, what the stage needs of it is written to
``<directory>/model-<k>.pt``: a fold's held-out logits, synthetic logits and feature scores, the
AUM model's synthetic AUM, and its per-epoch stats (replayed into the live log) and seconds. A run
stopped by Ctrl-C, SIGTERM or SIGKILL loses only the model it was training; the next run loads
the finished ones and trains the rest. The outputs are byte-identical to an uninterrupted run's
on the same machine: model ``k`` trains from its own seed (``seed * 1000 + k``,
``entromix.scoring.folds``), never from random state that the models before it left, and
its arrays are stored exactly (float32 logits, float64 scores).

The same files are the score stage's own run cache. Every output of the stage persists (dvc.yaml:
a failed run keeps the last good ones), and DVC's run cache does not keep stages with persistent
outputs; so the finished models stay after the stage succeeds, one folder per fingerprint
(:func:`store_directory`), and a run whose settings, data and code ran before (a sweep that
revisits a scarce-data draw, a review's change at a seed its baseline ran) loads every model and
trains none, with the same bytes. In a DVC project the folders live in the project's
``.dvc/tmp/entromix-score/`` (ignored by git and DVC), which the experiments that ``dvc queue``
runs in ``.dvc/tmp/exps/<name>/`` share with the workspace: a folder's files are written
atomically and only ever hold one fingerprint's results, so two experiments writing the same
model at once write the same bytes. The newest :data:`KEEP` folders are kept (kilobytes each).
Outside a DVC project (a stage script run by hand) the folder is ``data/score_resume/``.

A file is a ``torch.save`` of tensors, numbers and strings (read with ``weights_only=True``,
never unpickling code): ``format``, ``version``, ``fingerprint``, ``model`` (k), ``arrays``
(name -> tensor) and ``sha256`` (of the arrays, :func:`arrays_sha256`). It is written atomically.
A file that does not load, whose checksum does not match (truncated, damaged) or that belongs to
another run (:func:`score_fingerprint`: the score settings, the prepared data, torch, the device,
entromix's source and the fold assignment) is deleted, never used.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from entromix.common.atomic import atomic_path
from entromix.common.device import describe
from entromix.common.torch_files import save_torch_file
from entromix.modeling.fit import EpochStats

FORMAT = "entromix-score-model"
VERSION = 1
#: entromix's source: a change to any of it starts the folds afresh
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"model-(\d+)\.pt")
#: fingerprint folders kept in the store (the newest by modification time)
KEEP = 200
FALLBACK = Path("data/score_resume")


def store_root(cwd: str | Path | None = None) -> Path:
    """Where the finished models of every fingerprint live: the DVC project's
    ``.dvc/tmp/entromix-score`` (the workspace's, also from a queued experiment's temporary copy
    in ``<project>/.dvc/tmp/exps/<name>``), else ``data/score_resume`` relative to ``cwd``."""
    here = Path(cwd or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if len(folder.parents) > 2 and (folder.parent.name, folder.parents[1].name, folder.parents[2].name) == (
            "exps",
            "tmp",
            ".dvc",
        ):
            return folder.parents[2] / "tmp" / "entromix-score"
    if (here / ".dvc").is_dir():
        return Path(".dvc") / "tmp" / "entromix-score" if cwd is None else here / ".dvc" / "tmp" / "entromix-score"
    return FALLBACK if cwd is None else here / FALLBACK


def store_directory(fingerprint: str, cwd: str | Path | None = None) -> Path:
    """The folder of one fingerprint's finished models."""
    return store_root(cwd) / fingerprint[:16]


def prune(root: str | Path, keep: int = KEEP) -> None:
    """Delete all but the ``keep`` newest fingerprint folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return
    folders = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def score_fingerprint(config: Any, prepared: str | Path, device: torch.device) -> str:
    """Which run finished models belong to: sha256 of the ``score`` settings (``device`` as resolved:
    :func:`describe` names the GPU or the CPU threads, which change float rounding), the torch
    version, ingest's ``checksums.json`` and ``ingest_config.json`` (the images, manifest and
    labels) and entromix's source. :meth:`FoldStore.for_folds` adds the fold assignment."""
    settings = {k: v for k, v in asdict(config).items() if k != "device"}
    digest = hashlib.sha256(json.dumps([settings, describe(device), torch.__version__], sort_keys=True).encode())
    for name in ("checksums.json", "ingest_config.json"):
        digest.update((Path(prepared) / name).read_bytes())
    for source in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 of every array's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


_EPOCH_FIELDS = [f.name for f in fields(EpochStats)]


def epochs_array(stats: Iterable[EpochStats]) -> np.ndarray:
    """(E, 6) float64, one row per epoch: loss, images, seconds, lr, positives, true_positives."""
    rows = [[float(getattr(s, name)) for name in _EPOCH_FIELDS] for s in stats]
    return np.array(rows, dtype=np.float64).reshape(-1, len(_EPOCH_FIELDS))


def epochs_from_array(array: np.ndarray) -> list[EpochStats]:
    """The inverse of :func:`epochs_array` (counts back to ints)."""
    ints = {"images", "positives", "true_positives"}
    return [
        EpochStats(**{name: int(v) if name in ints else float(v) for name, v in zip(_EPOCH_FIELDS, row)})
        for row in array
    ]


class FoldStore:
    """The finished models of one score run in ``directory`` (None: keep nothing, resume nothing).

    :meth:`scan` loads the finished models into :attr:`finished` (model index -> arrays); the stage
    trains the others and :meth:`save` s each as it finishes."""

    def __init__(self, directory: str | Path | None, fingerprint: str = "") -> None:
        self.directory = None if directory is None else Path(directory)
        self.fingerprint = fingerprint
        self.finished: dict[int, dict[str, np.ndarray]] = {}

    def for_folds(self, fold: np.ndarray) -> FoldStore:
        """This store with the fold assignment (n_real,) in its fingerprint (another split of the
        images, by another sklearn say, makes every kept fold another fold)."""
        digest = hashlib.sha256(self.fingerprint.encode())
        digest.update(np.ascontiguousarray(fold, dtype=np.int64).tobytes())
        return FoldStore(self.directory, digest.hexdigest())

    def path(self, k: int) -> Path:
        assert self.directory is not None
        return self.directory / f"model-{k}.pt"

    def save(self, k: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Model ``k``'s arrays, written atomically with their checksum."""
        if self.directory is None:
            return
        tensors = {name: torch.from_numpy(np.array(a, copy=True)) for name, a in arrays.items()}
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "model": k,
            "arrays": tensors,
            "sha256": arrays_sha256(arrays),
        }
        with atomic_path(self.path(k)) as tmp:
            save_torch_file(payload, tmp)

    def load(self, path: Path, k: int) -> tuple[dict[str, np.ndarray] | None, str]:
        """The arrays in ``path`` if it is model ``k`` of this run, whole; else (None, why)."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated, damaged or not ours: never used
            return None, f"unreadable ({type(exc).__name__})"
        if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
            return None, "not a finished score model of this entromix"
        if payload.get("fingerprint") != self.fingerprint or payload.get("model") != k:
            return None, "of other settings, data, code or device"
        tensors = payload.get("arrays")
        if not isinstance(tensors, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
            return None, "not a finished score model of this entromix"
        arrays = {name: t.numpy() for name, t in tensors.items()}
        if arrays_sha256(arrays) != payload.get("sha256"):
            return None, "its checksum does not match (damaged)"
        return arrays, ""

    def scan(self, models: int, log: Callable[[str], None] = print) -> dict[int, dict[str, np.ndarray]]:
        """Load the finished models among ``0..models-1`` into :attr:`finished`; delete every
        model file that is not usable (one line per reason says which)."""
        self.finished = {}
        if self.directory is None or not self.directory.is_dir():
            return self.finished
        dropped: dict[str, list[str]] = {}
        for path in sorted(self.directory.glob("model-*.pt")):
            match = _NAME.fullmatch(path.name)
            k = int(match.group(1)) if match else -1
            arrays, why = self.load(path, k) if 0 <= k < models else (None, "of another number of models")
            if arrays is None:
                path.unlink(missing_ok=True)
                dropped.setdefault(why, []).append(path.name)
            else:
                self.finished[k] = arrays
        for why, names in dropped.items():
            log(f"entromix score: deleted {', '.join(names)} in {self.directory}, not used: {why}")
        return self.finished


def _model_list(ks: list[int], folds: int) -> str:
    """``folds 1-2``, ``fold 3``, ``folds 1, 3-4``, ``the aum model`` (k == folds)."""
    fold_ks = [k + 1 for k in ks if k < folds]
    runs: list[list[int]] = []
    for k in fold_ks:
        if runs and k == runs[-1][-1] + 1:
            runs[-1].append(k)
        else:
            runs.append([k])
    text = ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
    parts = [f"fold{'s' if len(fold_ks) > 1 else ''} {text} of {folds}"] if fold_ks else []
    if any(k >= folds for k in ks):
        parts.append("the aum model")
    return " and ".join(parts)


def resume_line(finished: Iterable[int], folds: int, models: int, directory: Path | None) -> str:
    """``entromix score: resuming: folds 1-2 of 5 finished in an earlier run (data/score_resume),
    training fold 3``."""
    done = sorted(finished)
    todo = [k for k in range(models) if k not in done]
    if not todo:
        rest = "; nothing left to train"
    else:
        rest = f", training fold {todo[0] + 1}" if todo[0] < folds else ", training the aum model"
    return f"entromix score: resuming: {_model_list(done, folds)} finished in an earlier run ({directory}){rest}"
