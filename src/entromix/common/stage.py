"""What every pipeline script shares: argument parsing and user-facing error reporting."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from entromix.common.atomic import restored_on_failure
from entromix.common.errors import EntromixError


def stage_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser.parse_args()


class Terminated(Exception):
    """SIGTERM, raised in the main thread so that temporary files are cleaned up on the way out."""


_STAGE_PID = os.getpid()


def _raise_terminated(signum: int, frame: object) -> None:
    if os.getpid() != _STAGE_PID:  # a forked child that kept the handler: die as SIGTERM would
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated


def run_stage(
    name: str, main: Callable[[], None], report_to_stderr: bool = False, live_outputs: Sequence[Path] = ()
) -> None:
    """Run a stage's ``main``; print user errors as one paragraph (no traceback) and exit 2.

    SIGINT (Ctrl-C) and SIGTERM (a scheduler's kill) end the stage with a one-line message and
    exit 130 / 143; every output is written atomically, so none is left half-written, and the
    train stage resumes from its last finished epoch on the next run. An ``OSError`` (a failing
    disk, a lost network mount) is one line and exit 1. ``live_outputs``: the files
    and folders the stage rewrites while it runs (its DVCLive log, the history so far), put back
    as the previous run left them when this one fails or is interrupted
    (:func:`entromix.common.atomic.restored_on_failure`; in a run of several processes, process 0
    does it). ``report_to_stderr``: the closing "done" line goes to stderr (a command whose stdout
    is its result, ``entromix compare``).
    """
    global _STAGE_PID
    start = time.perf_counter()
    _STAGE_PID = os.getpid()
    signal.signal(signal.SIGTERM, _raise_terminated)
    first_process = os.environ.get("RANK", "0") == "0"  # torchrun numbers its processes in RANK
    restoring = restored_on_failure(*live_outputs) if live_outputs and first_process else contextlib.nullcontext()
    try:
        with restoring:
            main()
    except EntromixError as exc:
        print(f"entromix {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"entromix {name}: interrupted; outputs were not replaced.", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print(f"entromix {name}: terminated (SIGTERM); outputs were not replaced.", file=sys.stderr)
        sys.exit(143)
    except OSError as exc:  # the machine's, not the input's: a failing disk, a lost network mount
        if os.environ.get("ENTROMIX_TRACEBACK"):
            raise
        print(
            f"entromix {name}: error: {exc}. The previous outputs were not replaced; rerun once the cause is "
            "fixed (ENTROMIX_TRACEBACK=1 shows where it happened).",
            file=sys.stderr,
        )
        sys.exit(1)
    print(
        f"entromix {name}: done in {time.perf_counter() - start:.1f} s",
        file=sys.stderr if report_to_stderr else sys.stdout,
    )
