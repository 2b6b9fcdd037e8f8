"""Run a stage script or the entromix command inside the test's process, as a command would run.

A new Python process spends about five seconds importing torch and torchvision before it can
refuse a bad input; the tests that check how a stage or a command refuses (exit code 2, one
message, nothing changed) run it here instead. The tests that check a real process (exit codes
and output of ``python pipeline/<stage>.py`` and ``python -m entromix.cli``, signals, torchrun)
still start one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def stage_in_process(project: Path, stage: str) -> subprocess.CompletedProcess:
    """``python pipeline/<stage>.py`` in ``project``, run in this process: the script as
    ``__main__`` with the folder as working directory, its exit code from ``SystemExit`` and its
    output captured. An exception that escapes the stage (a bug: a process would print a traceback
    and exit 1) comes back as exit 1 with the traceback in stderr.
    """
    import runpy

    script = str(PROJECT / "pipeline" / f"{stage}.py")
    return run_in_process(project, [script], lambda: runpy.run_path(script, run_name="__main__"))


def cli_in_process(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m entromix.cli ARGS`` in ``project``, run in this process (see
    :func:`stage_in_process`)."""
    from entromix.cli.main import main

    return run_in_process(project, ["entromix", *args], lambda: main(list(args)))


def run_in_process(cwd: Path, argv: list[str], target) -> subprocess.CompletedProcess:
    """Call ``target()`` as a command would run: in ``cwd`` with ``sys.argv = argv``, stdout and
    stderr captured, the exit code from ``SystemExit`` (0 when it returns, 1 with the traceback in
    stderr when an exception escapes). The working directory, ``sys.argv`` and the SIGTERM handler
    (``entromix.common.stage.run_stage`` sets one) are restored afterwards."""
    import contextlib
    import io
    import signal
    import traceback

    out, err = io.StringIO(), io.StringIO()
    saved = os.getcwd(), sys.argv, signal.getsignal(signal.SIGTERM)
    code = 0
    try:
        os.chdir(cwd)
        sys.argv = list(argv)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                target()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except Exception:
                traceback.print_exc(file=err)
                code = 1
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        signal.signal(signal.SIGTERM, saved[2])
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
