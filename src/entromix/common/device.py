"""Device choice, seeding and the precision/layout rules for CPU and CUDA.

* CPU: fp32, deterministic algorithms, so a fixed seed gives identical results run to run.
* CUDA: bf16 autocast (tensor cores); results are close but not bit-identical between runs.
* Both: channels_last memory format for CNNs (``entromix.modeling.fit.uses_channels_last``).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from entromix.common.errors import ParamsError


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{key} is 'cuda' but no CUDA GPU is visible. Use 'auto' or 'cpu'.")
    if name not in ("cpu", "cuda"):
        raise ParamsError(f"{key} is {name!r}; use auto, cpu or cuda.")
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
    """bf16 autocast on CUDA; a no-op on CPU (fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)}, bf16 autocast)"
    return f"cpu ({torch.get_num_threads()} threads, fp32)"
