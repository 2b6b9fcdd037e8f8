"""Ordered parallel map over worker processes, with a progress bar.

Decoding and hashing are CPU bound and independent per file; ``imap`` keeps results in input
order while workers run ahead by at most a few chunks, so memory stays bounded.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

A = TypeVar("A")
R = TypeVar("R")


def resolve_workers(workers: int) -> int:
    """``0`` means one worker per available CPU core."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _default_signals() -> None:
    """Workers die quietly on SIGTERM (``Pool.terminate`` sends it when the ``with`` block ends).
    A forked worker inherits the parent stage's handler (entromix.common.stage), which would raise in
    the worker instead and can leave the pool waiting for it."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the parent


def ordered_map(fn: Callable[[A], R], items: Sequence[A], workers: int, desc: str, chunksize: int = 16) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in order, computed by ``workers`` processes."""
    bar = tqdm(total=len(items), desc=desc, unit="img", disable=None, dynamic_ncols=True)
    try:
        if workers <= 1 or len(items) < 2 * chunksize:
            for item in items:
                yield fn(item)
                bar.update()
            return
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(workers, initializer=_default_signals) as pool:
            results: Iterable[R] = pool.imap(fn, items, chunksize=chunksize)
            for result in results:
                yield result
                bar.update()
    finally:
        bar.close()
