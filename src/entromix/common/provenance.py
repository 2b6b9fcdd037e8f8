"""Where a result came from: the git revision of the code and the versions that ran it."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

import entromix

#: the code whose edits make a revision "-modified" (a running `dvc repro` rewrites dvc.lock and
#: outputs, and `dvc exp run -S` params.yaml, which the checkpoint records anyway)
CODE_PATHS = ("src", "pipeline")


def git_revision(cwd: str | Path = ".") -> str | None:
    """The commit checked out in ``cwd``, with ``-modified`` when the code (:data:`CODE_PATHS`)
    differs from it; None outside a git repository or without git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", *CODE_PATHS], cwd=cwd, capture_output=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("-modified" if dirty.returncode == 1 else "")


def versions() -> dict[str, str]:
    return {"entromix": str(entromix.__version__), "torch": str(torch.__version__), "python": platform.python_version()}
