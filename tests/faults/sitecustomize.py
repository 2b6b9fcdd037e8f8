"""Fault injection for tests/test_kill_anywhere.py, loaded by every Python process that starts with
this folder on PYTHONPATH (Python imports ``sitecustomize`` at start-up).

It acts only in the process whose command line contains ``ENTROMIX_FAULT_ARGV`` (a stage script
such as ``pipeline/train.py``, or ``entromix export``), so DVC and worker processes run untouched:

* ``ENTROMIX_FAULT=record:<file>``: append one JSON line per file the process opens for writing
  (``{"open": path}``, from Python's audit hook, which sees ``open``, ``os.open`` and ``mkstemp``) and
  per ``os.replace`` (``{"replace": [src, dst]}``) to ``<file>``;
* ``ENTROMIX_FAULT=kill:<n>:midwrite``: at the n-th ``os.replace`` (1-based), cut the temporary
  file to half its bytes (what a writer killed mid-write leaves) and SIGKILL the process group
  (the stage and the ``dvc repro`` that started it, as a power cut or the OOM killer would);
* ``ENTROMIX_FAULT=kill:<n>:after``: do the n-th ``os.replace``, then SIGKILL the process group
  (between two renames of a set, or after the last one and before DVC records the run);
* ``ENTROMIX_FAULT=fail:<n>:error``: the n-th ``os.replace`` raises ``OSError(EIO)`` (a failing
  disk: an exception the stage does not expect); ``fail:<n>:sigint``: the process sends itself
  SIGINT (Ctrl-C) there and carries on until Python raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

_FAULT = os.environ.get("ENTROMIX_FAULT", "")
_ARGV = os.environ.get("ENTROMIX_FAULT_ARGV", "")


def _kill_group() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _install() -> None:
    real_replace = os.replace
    if _FAULT.startswith("record:"):
        log_path = _FAULT.split(":", 1)[1]

        def log(event: dict) -> None:
            with open(log_path, "a", encoding="utf-8") as fh:  # noqa: PTH123 - outside the audit filter below
                fh.write(json.dumps(event) + "\n")

        def audit(name: str, args: tuple) -> None:
            if name != "open" or not isinstance(args[0], (str, bytes, os.PathLike)) or args[0] == log_path:
                return
            mode, flags = args[1], args[2] or 0
            writing = any(c in (mode or "") for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writing:
                log({"open": os.path.abspath(os.fsdecode(args[0]))})

        def replace(src, dst, *args, **kwargs):
            log({"replace": [os.path.abspath(os.fsdecode(src)), os.path.abspath(os.fsdecode(dst))]})
            return real_replace(src, dst, *args, **kwargs)

        sys.addaudithook(audit)
        os.replace = replace
    elif _FAULT.startswith("kill:"):
        _, nth, how = _FAULT.split(":")
        count = [0]

        def replace(src, dst, *args, **kwargs):
            count[0] += 1
            if count[0] == int(nth):
                if how == "midwrite":
                    os.truncate(src, os.path.getsize(src) // 2)
                    _kill_group()
                real_replace(src, dst, *args, **kwargs)
                _kill_group()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif _FAULT.startswith("fail:"):
        _, nth, how = _FAULT.split(":")
        count = [0]
        # as in a terminal: a shell starts background jobs (and so some CI runners) with SIGINT
        # ignored, which every child inherits, and Python then installs no KeyboardInterrupt handler
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def replace(src, dst, *args, **kwargs):
            count[0] += 1
            if count[0] == int(nth):
                if how == "error":
                    raise OSError(errno.EIO, "injected I/O error", os.fspath(dst))
                os.kill(os.getpid(), signal.SIGINT)
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace


if _FAULT and _ARGV and _ARGV in " ".join(sys.argv):
    _install()
