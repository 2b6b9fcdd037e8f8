"""Reading PyTorch files the user gives us (pretrained weights, checkpoints) with errors that say
what the file is, not what torch's unpickler tripped over; and writing ours byte-reproducibly
(:func:`save_torch_file`).

Every load is ``torch.load(weights_only=True)``: a file can hold tensors, numbers and strings, never
code. Before that, the common wrong files are recognised by their first bytes:

* a Git LFS pointer (``version https://git-lfs.github.com/spec/v1``), which is what a repository
  cloned without git-lfs holds in place of the weights;
* a text file (a README, an HTML error page saved as ``.pth``);
* an empty file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from entromix.common.errors import DataError, EntromixError

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def save_torch_file(obj: Any, path: str | Path) -> None:
    """``torch.save(obj)`` into ``path`` through a file object. Saved by name, torch names the zip's
    top folder after the file, here a temporary of ``entromix.common.atomic`` with a random name,
    so two runs that save the same tensors would write different bytes (and DVC would take a rerun
    for a change); through a file object the folder is always ``archive``."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def load_torch_file(path: str | Path, what: str, fix: str, error: type[EntromixError] = DataError) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU; any failure is an ``error`` (a user error,
    exit 2) that names ``what`` the file is for (``the pretrained weights named by
    score.pretrained_weights``, ``the train stage's checkpoint``) and ``fix`` (how to get a good file)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} does not exist. {fix}")
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        raise error(f"{path}: {what} is an empty file. {fix}")
    if head.startswith(LFS_POINTER):
        raise error(
            f"{path}: {what} is a Git LFS pointer (a small text file that stands in for the real file), not "
            "PyTorch weights: the repository was cloned without git-lfs. Install git-lfs and run `git lfs pull` "
            f"in that repository (or download the file itself), then re-run. {fix}"
        )
    if _looks_like_text(head):
        first = head.decode("utf-8").strip().splitlines()[0][:60] if head.strip() else ""
        raise error(f"{path}: {what} is not a PyTorch checkpoint: it is a text file (it starts with {first!r}). {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():  # torch's safe loader met Python objects, not just tensors
            raise error(
                f"{path}: {what} holds Python objects besides tensors (a whole pickled model, or code), which "
                "entromix does not load because unpickling can run arbitrary code. Save the weights alone "
                f"with torch.save(model.state_dict(), PATH) and use that file. {fix}"
            ) from None
        raise error(
            f"{path}: {what} is not a readable PyTorch checkpoint; it is damaged or another kind of file "
            f"(UnpicklingError). {fix}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever torch's reader raises, the file is at fault
        detail = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:120]
        raise error(
            f"{path}: {what} is not a readable PyTorch checkpoint; it is damaged, truncated or another kind of "
            f"file (torch.load with weights_only=True said: {detail}). {fix}"
        ) from None
