"""Print which PyTorch build the environment holds and how much disk it takes (`make` runs it
after installing); on the 2-core development machine with requirements.lock::

    torch 2.14.1+cu130 (CUDA 13.0 build; no CUDA GPU visible, runs on CPU) + torchvision 0.29.1:
      torch and torchvision 1.08 GB, CUDA runtime packages 4.03 GB (nvidia-*, cuda-*, triton), 5.12 GB in all
"""

from __future__ import annotations

import re
from importlib import metadata

CUDA_RUNTIME = re.compile(r"^(nvidia-(?!ml-py)[a-z0-9-]+|cuda-[a-z0-9-]+|triton)$")


def installed_bytes(dist: metadata.Distribution) -> int:
    """The size of a distribution's files as its RECORD lists them."""
    return sum(int(f.size or 0) for f in dist.files or [])


def build_line() -> str:
    import torch

    sizes = {"torch": 0, "cuda": 0}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in ("torch", "torchvision"):
            sizes["torch"] += installed_bytes(dist)
        elif CUDA_RUNTIME.match(name):
            sizes["cuda"] += installed_bytes(dist)
    if torch.version.cuda:
        gpu = "CUDA GPU visible" if torch.cuda.is_available() else "no CUDA GPU visible, runs on CPU"
        kind = f"CUDA {torch.version.cuda} build; {gpu}"
    else:
        kind = "CPU-only build"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        kind += "; Apple MPS available"
    try:
        vision = f" + torchvision {metadata.version('torchvision')}"
    except metadata.PackageNotFoundError:
        vision = ""
    gb = 1024**3
    runtime = f", CUDA runtime packages {sizes['cuda'] / gb:.2f} GB (nvidia-*, cuda-*, triton)" if sizes["cuda"] else ""
    total = (sizes["torch"] + sizes["cuda"]) / gb
    return (
        f"torch {torch.__version__} ({kind}){vision}:\n"
        f"  torch and torchvision {sizes['torch'] / gb:.2f} GB{runtime}, {total:.2f} GB in all"
    )


if __name__ == "__main__":
    print(build_line())
