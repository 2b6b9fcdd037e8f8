"""Device choice: ``auto`` picks CUDA, then MPS, then CPU; precision falls back to fp32 off CUDA."""

from __future__ import annotations

import contextlib

import pytest
import torch

from entromix.common import device as dev
from entromix.common.errors import ParamsError


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has the given accelerators."""

    def set_machine(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(dev, "mps_available", lambda: mps)

    return set_machine


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, expected):
    machine(cuda, mps)
    assert dev.resolve_device("auto").type == expected


def test_mps_is_accepted_where_available(machine):
    machine(cuda=False, mps=True)
    assert dev.resolve_device("mps", "train.device") == torch.device("mps")


@pytest.mark.parametrize("name", ["cuda", "mps"])
def test_a_missing_accelerator_names_the_key_and_the_way_out(machine, name):
    machine(cuda=False, mps=False)
    with pytest.raises(ParamsError, match=rf"train\.device is '{name}' but .*Use 'auto' or 'cpu'"):
        dev.resolve_device(name, "train.device")


def test_an_unknown_device_lists_the_choices():
    with pytest.raises(ParamsError, match=r"score\.device is 'tpu'; use auto, cpu, cuda, mps"):
        dev.resolve_device("tpu", "score.device")


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # building the CUDA context on a CPU machine
def test_bf16_autocast_only_on_cuda():
    assert isinstance(dev.autocast(torch.device("cpu")), contextlib.nullcontext)
    assert isinstance(dev.autocast(torch.device("mps")), contextlib.nullcontext)
    cuda = dev.autocast(torch.device("cuda"))
    assert isinstance(cuda, torch.autocast) and cuda.fast_dtype == torch.bfloat16


def test_mps_is_described_as_fp32():
    assert "fp32" in dev.describe(torch.device("mps"))


def test_every_stage_config_accepts_the_same_devices():
    import typing

    from entromix.evaluation.report import EvaluateConfig
    from entromix.scoring.config import ScoreConfig
    from entromix.training.config import TrainConfig

    for config in (ScoreConfig, TrainConfig, EvaluateConfig):
        assert typing.get_args(typing.get_type_hints(config)["device"]) == dev.DEVICE_NAMES
