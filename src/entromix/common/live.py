"""Live logs of the score and train stages through DVCLive: the values of every epoch, which
`dvc exp show` and `dvc plots` read while the stage runs.

A :class:`LiveLog` wraps ``dvclive.Live`` in a folder that the stage declares in dvc.yaml
(``dvclive/<stage>/``): ``metrics.json`` holds the latest value of each series and its ``step``
(a ``metrics:`` entry), ``plots/metrics/<name>.tsv`` one row per step (``step``, value; the
top-level ``plots:`` section draws them). Every file is replaced atomically (a temporary file and
a rename: ``entromix.common.atomic``), so neither a ``dvc plots show`` mid-run nor a process
killed mid-write ever sees a half-written row. DVCLive writes no dvc.yaml of its own
(``dvcyaml=None``) and saves no experiment (``save_dvc_exp=False``): dvc.yaml declares the files,
and ``dvc exp run`` records them with the rest of the stage's outputs.

Timings (``images_per_s``, ``scorer_images_per_s``: :data:`SERIES_ONLY`) are logged as series but
kept out of ``metrics.json``: that file is a committed metric (``cache: false``) that ``dvc metrics
diff`` reads, and a value that changes every run would make every diff non-empty.

A fresh log removes what an earlier run left there (DVCLive's own clean-up). A log that a
resumed run continues keeps the folder (``Live(resume=True)``) and rewrites each series from the
rows the run resumes from, then carries on at the next step: the resume state is the record, so
a step the killed run logged after its last saved state, or a row it half-appended, cannot
survive into the continued log.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from dvclive import Live
from scmrepo.exceptions import SCMError

from entromix.common.atomic import atomic_path, write_json
from entromix.common.errors import DataError

Value = float | int | None

#: series that vary from run to run on the same machine (speed): in plots/metrics/, not in metrics.json
SERIES_ONLY = frozenset({"images_per_s", "scorer_images_per_s"})


def _value(value: Value) -> float | int | None:
    """6 significant digits for floats (a learning rate of 2.3e-7 stays readable), ints as they are;
    None, NaN and infinity are not logged."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _unwritable(directory: Path, exc: OSError) -> DataError:
    return DataError(
        f"cannot write the live log in {directory}/: {exc}. Check the folder's permissions and free space."
    )


class _AtomicLive(Live):
    def make_summary(self) -> None:
        """``metrics.json`` through a temporary file and a rename (DVCLive writes it in place)."""
        self.summary["step"] = self.step
        write_json(self.metrics_file, self.summary)

    def next_step(self) -> None:
        """DVCLive's, less its signal for the VS Code extension (``mark_dvclive_step_completed``):
        that file is written into the main repository's ``.dvc/tmp/exps/run`` by every experiment
        the queue runs at once, and one experiment's clean-up deletes it under another's feet
        (FileNotFoundError, a failed experiment)."""
        if self._step is None:
            self._step = 0
        self.sync()
        self.step += 1

    def end(self) -> None:
        try:
            super().end()
        except FileNotFoundError:  # its last step, the clean-up of that signal file, raced another process
            pass

    def _init_dvc(self) -> None:
        """DVCLive 3.49 asks git for HEAD before it checks that there is one: in a repository with
        no commit yet (``git init``, then ``dvc repro``) that raises. Nothing here needs DVC's
        experiment machinery (no experiment saved, no dvc.yaml written), so log without it."""
        try:
            super()._init_dvc()
        except SCMError:
            self._dvc_repo = None


class LiveLog:
    """One stage's DVCLive log in ``directory``: :meth:`log` one step's values, :meth:`close` at the end.

    DVCLive keeps the summary; the series files (``plots/metrics/<name>.tsv``, DVCLive's format:
    tab-separated ``step`` and value) are written here, each rewritten whole through a temporary
    file at every step (DVCLive appends to them in place).

    Args:
        resume_rows: the values of the steps a resumed run continues from (step ``i`` is
            ``resume_rows[i]``); empty for a fresh run, which clears the folder.
    """

    def __init__(self, directory: str | Path, resume_rows: Sequence[Mapping[str, Value]] = ()) -> None:
        self.directory = Path(directory)
        self._series: dict[str, list[tuple[int, float | int]]] = {}
        try:
            if resume_rows:
                self._drop_unreadable_summary()
            self.live = _AtomicLive(
                str(self.directory), resume=bool(resume_rows), save_dvc_exp=False, dvcyaml=None, report=None
            )
            if resume_rows:
                self._rewrite(resume_rows)
        except OSError as exc:
            raise _unwritable(self.directory, exc) from exc

    @property
    def step(self) -> int:
        return self.live.step

    def log(self, step: int, values: Mapping[str, Value]) -> None:
        """The values of ``step`` (None: not logged, and dropped from ``metrics.json``)."""
        try:
            self.live.step = step
            for name, raw in values.items():
                value = _value(raw)
                if value is None:
                    self.live.summary.pop(name, None)
                    continue
                self.live.log_metric(name, value, plot=False)
                if name in SERIES_ONLY:
                    self.live.summary.pop(name, None)
                self._series.setdefault(name, []).append((step, value))
                self._write_series(name)
            self.live.next_step()
        except OSError as exc:
            raise _unwritable(self.directory, exc) from exc

    def close(self) -> None:
        self.live.end()

    def _drop_unreadable_summary(self) -> None:
        """A ``metrics.json`` that does not parse (a process killed while DVCLive wrote it) is
        removed: the summary is rebuilt from the resume rows."""
        path = self.directory / "metrics.json"
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            pass
        except (ValueError, UnicodeDecodeError):
            path.unlink()

    def _write_series(self, name: str) -> None:
        lines = [f"step\t{name}"] + [f"{step}\t{value}" for step, value in self._series[name]]
        with atomic_path(Path(self.live.plots_dir) / "metrics" / f"{name}.tsv") as tmp:
            tmp.write_text(os.linesep.join(lines) + os.linesep, encoding="utf-8")

    def _rewrite(self, rows: Sequence[Mapping[str, Value]]) -> None:
        """Each series from ``rows``, then the summary of the last row; the next :meth:`log`
        continues at step ``len(rows)``."""
        names = list(dict.fromkeys(name for row in rows for name in row))
        for name in names:
            self._series[name] = [
                (step, _value(row.get(name))) for step, row in enumerate(rows) if _value(row.get(name)) is not None
            ]
            self._write_series(name)
        last = {name: _value(value) for name, value in rows[-1].items()}
        self.live.summary = {
            name: value for name, value in last.items() if value is not None and name not in SERIES_ONLY
        }
        self.live.step = len(rows) - 1
        self.live.make_summary()
        self.live.step = len(rows)
