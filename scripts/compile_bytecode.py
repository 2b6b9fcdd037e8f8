"""Compile the environment's installed packages to bytecode once, at install time (`make` runs it).

Why: with PYTHONDONTWRITEBYTECODE=1 in the environment (set on the development and CI machines)
Python never writes the ``__pycache__`` files it would otherwise write on first import, so every
stage process, ``dvc`` command and test subprocess compiled torch, torchvision (and the
torch._dynamo it imports), sympy, scikit-learn and pandas from source again: 8-10 s of every
stage's start-up. Compiling them here takes 20-35 s once on 2 cores; BENCHMARKS.md, "The test
suite and make run", has the start-up times before and after.

Files this Python cannot compile (torch ships a test helper in Python 3.12 syntax) are skipped, as
``pip install`` skips them. Usage::

    python scripts/compile_bytecode.py            # the running interpreter's site-packages
    python scripts/compile_bytecode.py DIR        # another folder of modules
"""

from __future__ import annotations

import compileall
import sys
import sysconfig
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    site_packages = Path(argv[0] if argv else sysconfig.get_paths()["purelib"])
    start = time.perf_counter()
    every_file = compileall.compile_dir(site_packages, quiet=2, workers=0)  # quiet=2: no per-file errors
    note = "" if every_file else " (files in a newer Python's syntax skipped)"
    print(f"bytecode: {site_packages} compiled in {time.perf_counter() - start:.0f} s{note}")


if __name__ == "__main__":
    main(sys.argv[1:])
