"""Derive requirements-cpu.lock (``make run TORCH=cpu``) from requirements.lock.

The CPU lock pins the same versions of everything, except that torch and torchvision are
PyTorch's CPU-only wheels (``+cpu``, from PyTorch's own index, https://download.pytorch.org/whl/cpu)
and the CUDA runtime packages (nvidia-*, cuda-*, triton: Linux x86_64 only, 4.0 GB installed
with the default lock) are left out.

    python scripts/cpu_lock.py           # rewrite requirements-cpu.lock
    python scripts/cpu_lock.py --check   # exit 1 when it is out of date (tests/test_install.py)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "requirements.lock"
TARGET = ROOT / "requirements-cpu.lock"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_WHEELS = ("torch", "torchvision")
CUDA_RUNTIME = re.compile(
    r"^(nvidia-(?!ml-py)[a-z0-9-]+|cuda-[a-z0-9-]+|triton)=="
)  # nvidia-ml-py is NVML's Python API

HEADER = f"""\
# GENERATED from requirements.lock by scripts/cpu_lock.py (make lock runs it): do not edit.
# The CPU-only install, `make run TORCH=cpu` / `make test TORCH=cpu`: the same pins as
# requirements.lock, but torch/torchvision are PyTorch's CPU-only wheels from its own index and the
# CUDA runtime packages are left out. UNTESTED on the project's build machines, which cannot reach
# {CPU_INDEX}; the default install (requirements.lock) is the tested one.
--extra-index-url {CPU_INDEX}
"""


def cpu_lock(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or CUDA_RUNTIME.match(line):
            continue
        name, _, version = line.partition("==")
        if name in CPU_WHEELS:
            line = f"{name}=={version.split()[0]}+cpu"
        lines.append(line)
    return HEADER + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    expected = cpu_lock(SOURCE.read_text())
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != expected:
            print(f"{TARGET.name} is out of date with {SOURCE.name}: run `python scripts/cpu_lock.py`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected)
    print(f"wrote {TARGET.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
