"""Device choice, seeding and the precision/layout rules for CPU, CUDA and Apple's MPS.

* CPU: fp32, deterministic algorithms, so a fixed seed gives identical results run to run.
* CUDA: bf16 autocast (tensor cores); results are close but not bit-identical between runs.
* MPS (Apple silicon): fp32. bf16 autocast is the CUDA path only; on MPS it is not used, so the
  same code runs unchanged (untested here: the development machines have no Apple GPU).
* All: channels_last memory format for CNNs (``entromix.modeling.fit.uses_channels_last``).
"""

from __future__ import annotations

import contextlib
import random
from typing import Literal

import numpy as np
import torch

from entromix.common.errors import ParamsError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICE_NAMES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def mps_available() -> bool:
    """Apple's Metal backend: macOS on Apple silicon with a torch build that includes it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; asking for a device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name not in DEVICE_NAMES:
        raise ParamsError(f"{key} is {name!r}; use {', '.join(DEVICE_NAMES)}.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{key} is 'cuda' but no CUDA GPU is visible. Use 'auto' or 'cpu'.")
    if name == "mps" and not mps_available():
        raise ParamsError(
            f"{key} is 'mps' but Apple's MPS backend is not available (it needs macOS on Apple silicon "
            "and a torch build with MPS). Use 'auto' or 'cpu'."
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False


def generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op (fp32) on CPU and MPS."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, bf16 autocast)"
    if device.type == "mps":
        return "mps (Apple GPU, fp32: bf16 autocast is CUDA-only)"
    return f"cpu ({torch.get_num_threads()} threads, fp32)"
