"""Elapsed time and an ETA for the long loops (scorer folds and epochs, training epochs, predict).

``Eta(total)`` counts steps done in this process against a wall clock; ``skip(n)`` marks steps done
by an earlier, resumed run (counted as done, not timed, so they do not shorten the ETA). The text
reads ``12/150, 1 min 05 s elapsed, ETA 12 min 20 s``; before the first step ends there is no rate
yet and it says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def format_seconds(s: float) -> str:
    """``1 min 05 s``, or ``2 h 03 min`` from an hour on."""
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


class Eta:
    """Progress over ``total`` steps of roughly equal cost."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(int(total), 0)
        self.done = 0
        self._timed = 0  # steps this process ran (the rate's denominator)
        self._clock = clock
        self._start = clock()

    def skip(self, steps: int) -> None:
        """``steps`` were finished by an earlier run (resumed): done, but not part of the rate."""
        self.done = min(self.total, self.done + steps)

    def step(self, steps: int = 1, count: bool = True) -> str:
        """Mark ``steps`` done now and return :meth:`text`."""
        self.done = min(self.total, self.done + steps)
        self._timed += steps
        return self.text(count)

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    def remaining_seconds(self) -> float | None:
        if self._timed == 0:
            return None
        return self.elapsed / self._timed * (self.total - self.done)

    def text(self, count: bool = True) -> str:
        """``12/150, 1 min 05 s elapsed, ETA 12 min 20 s`` (without ``12/150, `` when ``count`` is false)."""
        left = self.remaining_seconds()
        eta = "ETA after the first step" if left is None else f"ETA {format_seconds(left)}"
        return (f"{self.done}/{self.total}, " if count else "") + f"{format_seconds(self.elapsed)} elapsed, {eta}"
