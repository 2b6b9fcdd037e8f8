"""Atomic file writes: a stage killed mid-write never leaves a half-written output.

Every output is written to a temporary file in the same directory and moved into place with
``os.replace`` (atomic on POSIX when source and target share a file system). A failed write
deletes its temporary file; one left by a process killed mid-write (SIGKILL cannot be caught) is
deleted by the next write of the same output (.gitignore and .dvcignore keep such leftovers out of
git and out of a folder output's hash). A path that is already one of these temporaries (a
figure drawn into a set's temporary) is written directly: the set's rename is the atomic step.

Files a stage rewrites while it runs, so that the run can be followed (the DVCLive logs, the
training history), are taken back to what they were when the run fails or is interrupted
(:func:`restored_on_failure`), so a failed run leaves every output of the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from entromix.common.errors import DiskFullError

#: errnos that mean the file system is full (a quota counts)
FULL = (errno.ENOSPC, errno.EDQUOT)
#: below this many free bytes after a failed write, the failure is taken as a full disk: torch.save
#: and others wrap ENOSPC in a RuntimeError that no longer carries the errno
NEARLY_FULL = 1 << 20


def size_text(n: int) -> str:
    """``12.3 MiB``, ``48 KiB``, ``512 bytes``."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def output_name(path: Path) -> Path:
    """The output a temporary file of this module stands for (``.x.csv.ab12cd.tmp`` -> ``x.csv``)."""
    path = Path(path)
    match = re.fullmatch(r"\.(.+)\.[^.]+\.tmp", path.name)
    return output_name(path.parent / match.group(1)) if match else path


def disk_full_error(paths: list[Path], tmps: list[Path], exc: BaseException) -> DiskFullError | None:
    """A :class:`DiskFullError` naming the outputs and the space they took before the disk filled, if
    ``exc`` (raised while writing them) was a full file system; else None."""
    folder = Path(paths[0]).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return None
    full = isinstance(exc, OSError) and exc.errno in FULL
    if not full and not (isinstance(exc, (OSError, RuntimeError)) and free < NEARLY_FULL):
        return None
    written = sum(t.stat().st_size for t in tmps if t.exists())
    shown = list(dict.fromkeys(output_name(p) for p in paths))
    names = ", ".join(str(p) for p in shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    return DiskFullError(
        f"the file system of {output_name(folder)} is full (no space left on device) while writing {names}: "
        f"they needed more than the {size_text(written)} written before it filled, and {size_text(free)} is "
        "free there. Free some space (or point the outputs elsewhere) and rerun; the previous outputs were "
        "not replaced."
    )


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else delete it.
    A full file system becomes a :class:`DiskFullError` naming ``path``."""
    with atomic_paths(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Outputs that belong together, replaced as a set: yield one temporary path per output; only
    when the whole block succeeds are they renamed into place, one after the other (a crash in
    that loop of renames is the only window for a mixed set, and later stages check each set's
    checksums). On any error every temporary file is deleted and no output is touched."""
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(_temporary(Path(p))) for p in paths]
        try:
            yield tmps
        except (OSError, RuntimeError) as exc:
            full = disk_full_error([Path(p) for p in paths], tmps, exc)
            if full is not None:
                raise full from exc
            raise
        mode = 0o666 & ~_umask()
        for tmp in tmps:
            os.chmod(tmp, mode)
        for tmp, path in zip(tmps, paths):
            if tmp != Path(path):
                os.replace(tmp, path)


def _files_under(paths: tuple[Path, ...]) -> dict[Path, bytes]:
    found: dict[Path, bytes] = {}
    for path in paths:
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.is_file() else []
        found.update({p: p.read_bytes() for p in files if not is_temporary(p)})
    return found


@contextlib.contextmanager
def restored_on_failure(*paths: str | Path) -> Iterator[None]:
    """Files and folders that the block rewrites as it goes (a live log), put back as they were
    when it does not finish: an exception, Ctrl-C or SIGTERM (a ``BaseException``). What they
    held is read into memory on entry (a live log is a few KiB); files the block added are
    deleted, changed or deleted ones written back atomically. A process killed with SIGKILL
    cannot restore anything: its run-in-progress files stay, whole (each was written atomically),
    DVC sees the stage's outputs changed, and the next run replaces them."""
    roots = tuple(Path(p) for p in paths)
    before = _files_under(roots)
    try:
        yield
    except BaseException:
        try:
            for path in set(_files_under(roots)) - set(before):
                path.unlink()
            for path, data in before.items():
                if not path.is_file() or path.read_bytes() != data:
                    with atomic_path(path) as tmp:
                        tmp.write_bytes(data)
        except OSError as exc:  # the failure itself (a full disk, say) is what the user must see
            print(f"entromix: could not put back the previous {', '.join(map(str, roots))}: {exc}", file=sys.stderr)
        raise


TEMPORARY_NAME = re.compile(r"\..+\.[^.]+\.tmp")


def is_temporary(path: str | Path) -> bool:
    """Whether ``path`` is named as this module's temporary files are (``.x.csv.ab12cd.tmp``)."""
    return TEMPORARY_NAME.fullmatch(Path(path).name) is not None


@contextlib.contextmanager
def _temporary(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` (stale ones of killed writers removed), deleted on exit
    unless it was renamed; ``path`` itself when it is such a temporary already (the caller's set
    renames it)."""
    if is_temporary(path):
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(obj: Any) -> str:
    """Indented JSON. NaN and Infinity are not JSON (DVC and most readers reject them): a metric
    that can be undefined must be written as null with a reason, so meeting one here is a bug."""
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (:func:`json_text`), atomically."""
    text = json_text(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
