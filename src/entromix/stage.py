"""What every pipeline script shares: argument parsing and user-facing error reporting."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

from entromix.errors import EntromixError


def stage_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return parser.parse_args()


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; print user errors as one paragraph (no traceback) and exit 2."""
    start = time.perf_counter()
    try:
        main()
    except EntromixError as exc:
        print(f"entromix {name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"entromix {name}: interrupted; outputs were not replaced.", file=sys.stderr)
        sys.exit(130)
    print(f"entromix {name}: done in {time.perf_counter() - start:.1f} s")
