"""The prepared image array: one ``.npy`` file of shape (N, H, W, 3), dtype uint8.

Ingest writes it row by row (memory stays at one image however large N is); score and train open
it with ``np.load(path, mmap_mode="r")`` and index rows by the manifest's ``id`` column.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

import numpy as np

from entromix.common.atomic import FULL, atomic_path, output_name, size_text
from entromix.common.errors import DiskFullError


class ImageArrayWriter:
    """Stream images into a ``.npy`` file whose shape is fixed up front.

    Usage::

        with ImageArrayWriter(path, n, size) as writer:
            for pixels in images:      # each (size, size, 3) uint8
                writer.append(pixels)

    The file appears at ``path`` only if exactly ``n`` rows were written without an exception.
    With ``atomic=False`` the rows go straight to ``path``, a temporary file of the caller's
    (``entromix.common.atomic.atomic_paths``, which replaces several outputs as a set).
    """

    def __init__(self, path: str | Path, n: int, size: int, atomic: bool = True):
        self.path = Path(path)
        self.shape = (n, size, size, 3)
        self.count = 0
        self._atomic = atomic_path(self.path) if atomic else contextlib.nullcontext(self.path)
        self._fh: BinaryIO | None = None

    def __enter__(self) -> ImageArrayWriter:
        tmp = self._atomic.__enter__()
        self._fh = open(tmp, "wb")
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
            "fortran_order": False,
            "shape": self.shape,
        }
        np.lib.format.write_array_header_1_0(self._fh, header)
        self._reserve()
        return self

    def _reserve(self) -> None:
        """Claim the array's whole size on disk now, so a full file system stops ingest before it
        decodes anything, with the size it needs (:class:`DiskFullError`)."""
        assert self._fh is not None
        needed = self._fh.tell() + int(np.prod(self.shape))
        try:
            os.posix_fallocate(self._fh.fileno(), 0, needed)
        except OSError as exc:
            if exc.errno not in FULL:  # a file system without fallocate (EOPNOTSUPP): writes will tell
                return
            free = shutil.disk_usage(self.path.parent).free
            full = DiskFullError(
                f"{output_name(self.path)}: the image array needs {size_text(needed)} and its file system has "
                f"{size_text(free)} free. Free some space (or point the project elsewhere) and rerun; the previous "
                "outputs were not replaced."
            )
            self._fh.close()
            self._atomic.__exit__(DiskFullError, full, None)  # __exit__ will not run: delete the temporary now
            raise full from None

    def append(self, pixels: np.ndarray) -> None:
        if pixels.shape != self.shape[1:] or pixels.dtype != np.uint8:
            raise ValueError(f"expected a {self.shape[1:]} uint8 image, got {pixels.shape} {pixels.dtype}")
        if self.count >= self.shape[0]:
            raise ValueError(f"more than the declared {self.shape[0]} images")
        assert self._fh is not None
        self._fh.write(np.ascontiguousarray(pixels).tobytes())
        self.count += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._fh is not None
        self._fh.close()
        if exc_type is None and self.count != self.shape[0]:
            exc = ValueError(f"{self.path}: wrote {self.count} of {self.shape[0]} images")
            self._atomic.__exit__(type(exc), exc, None)
            raise exc
        self._atomic.__exit__(exc_type, exc, tb)


def open_images(path: str | Path) -> np.ndarray:
    """Open the prepared array read-only as a memory map, shape (N, H, W, 3) uint8."""
    return np.load(Path(path), mmap_mode="r")
