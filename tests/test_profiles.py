"""Named recipes in profiles/: they load onto params.yaml, validate, print their -S arguments, and run."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from entromix.common.errors import ParamsError
from entromix.common.params import load_params, section
from entromix.common.profiles import apply_profile, load_profile, set_args
from entromix.data.ingest_config import IngestConfig
from entromix.scoring.config import ScoreConfig
from entromix.training.config import TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loop import train_curriculum
from entromix.training.table import TrainingTable

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = PROJECT / "profiles" / "reference-gpu.yaml"


def reference_params() -> dict:
    return apply_profile(load_params(PROJECT / "params.yaml"), load_profile(REFERENCE), REFERENCE)


def test_reference_profile_loads_and_validates_every_section():
    params = reference_params()
    train = section(params, "train", TrainConfig)
    score = section(params, "score", ScoreConfig)
    curriculum = section(params, "curriculum", CurriculumConfig)
    ingest = section(params, "ingest", IngestConfig)
    assert (train.model, train.image_size, train.epochs, train.batch_size, train.optimizer, train.lr) == (
        "resnet50",
        224,
        90,
        16,
        "sgd",
        0.0007,
    )
    assert train.color_jitter == 0.2 and not train.rotate90 and train.lr_warmup_epochs == 0
    assert (curriculum.warmup_epochs, curriculum.jsd_end) == (20, 1.0)
    assert score.model == "resnet50" and score.image_size == ingest.image_size == 224
    curriculum.check_epochs(train.epochs)


def test_set_args_and_the_command_line():
    args = set_args(load_profile(REFERENCE))
    assert (
        args[:2] == ["-S", "ingest.image_size=224"] and "train.optimizer=sgd" in args and "train.rotate90=false" in args
    )
    proc = subprocess.run(
        [sys.executable, "-m", "entromix.common.profiles", str(REFERENCE)], cwd=PROJECT, capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == " ".join(args)
    bad = subprocess.run(
        [sys.executable, "-m", "entromix.common.profiles", "profiles/nope.yaml"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no such profile" in bad.stderr and "Traceback" not in bad.stderr


def test_unknown_keys_are_refused(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  lr_rate: 0.1\n")
    with pytest.raises(ParamsError, match="unknown key\\(s\\) train.lr_rate"):
        apply_profile(load_params(PROJECT / "params.yaml"), load_profile(typo), typo)
    typo.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ParamsError, match="section 'trian' is not in params.yaml"):
        apply_profile(load_params(PROJECT / "params.yaml"), load_profile(typo), typo)


def record_the_training_run(monkeypatch) -> dict[str, list]:
    """Spies on the train loop: the optimiser it makes, the input shapes its model trains on, the
    keys of its final layer, and the augmentation settings of every training batch."""
    import entromix.modeling.fit as fit_module
    import entromix.training.run as run_module

    seen: dict[str, list] = {"optimizers": [], "train_inputs": [], "fc": [], "augment": []}
    make_optimizer, build_model, augment = run_module.make_optimizer, run_module.build_model, fit_module.augment

    def optimizer_spy(*args, **kwargs):
        seen["optimizers"].append(make_optimizer(*args, **kwargs))
        return seen["optimizers"][-1]

    def build_spy(*args, **kwargs):
        model = build_model(*args, **kwargs)
        seen["fc"].append(tuple(model.fc.weight.shape))
        model.register_forward_pre_hook(
            lambda m, a: seen["train_inputs"].append(tuple(a[0].shape)) if m.training else None
        )
        return model

    def augment_spy(*args, **kwargs):
        seen["augment"].append((kwargs.get("color_jitter"), kwargs.get("rotate90")))
        return augment(*args, **kwargs)

    monkeypatch.setattr(run_module, "make_optimizer", optimizer_spy)
    monkeypatch.setattr(run_module, "build_model", build_spy)
    monkeypatch.setattr(fit_module, "augment", augment_spy)
    return seen


@pytest.mark.slow
def test_reference_profile_trains(monkeypatch):
    """The profile's own model, image size, optimiser and augmentation, shortened to 2 epochs: each
    one is what the loop used (a ResNet-50 head on 224 px batches, SGD with the profile's weight
    decay, colour jitter 0.2 without quarter turns), not only a finite loss."""
    params = reference_params()
    config = replace(section(params, "train", TrainConfig), epochs=2, device="cpu")
    curriculum = replace(section(params, "curriculum", CurriculumConfig), warmup_epochs=1)
    rng = np.random.default_rng(0)
    size = config.image_size
    labels = np.array([0] * 12 + [1] * 4 + [1] * 4)
    table = TrainingTable(
        images=rng.integers(0, 256, (20, size, size, 3), dtype=np.uint8),
        labels=labels,
        is_syn=np.array([False] * 16 + [True] * 4),
        jsd=np.linspace(0, 1, 20).astype(np.float32),
        ids=np.arange(20),
    )
    val_labels = np.array([0, 1, 0, 1])
    val = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    seen = record_the_training_run(monkeypatch)
    result = train_curriculum(config, curriculum, table, val, val_labels, torch.device("cpu"), log=lambda s: None)
    assert len(result.history) == 2 and result.history[1]["tau"] == pytest.approx(1.0)
    assert result.history[0]["lr"] == pytest.approx(0.0007)  # no LR warmup in the reference recipe
    assert np.isfinite(result.history[-1]["train_loss"])
    # each member of params.yaml's ensemble a ResNet-50 (2048 features, bottleneck blocks)
    assert seen["fc"] == [(2, 2048)] * config.ensemble
    assert any(key.endswith("layer1.0.conv3.weight") for key in result.last_state)
    assert seen["train_inputs"] and {shape[1:] for shape in seen["train_inputs"]} == {(3, 224, 224)}
    (optim,) = seen["optimizers"]
    assert isinstance(optim, torch.optim.SGD) and optim.param_groups[0]["weight_decay"] == 0.0005
    assert seen["augment"] and set(seen["augment"]) == {(0.2, False)}


def test_smoke_profile_loads_validates_and_is_small():
    """profiles/smoke.yaml: every key exists in params.yaml, every section still validates, and it is
    the quick end-to-end check the docs promise (tiny images, few folds and epochs, one member)."""
    path = PROJECT / "profiles" / "smoke.yaml"
    params = apply_profile(load_params(PROJECT / "params.yaml"), load_profile(path), path)
    train, score = section(params, "train", TrainConfig), section(params, "score", ScoreConfig)
    curriculum = section(params, "curriculum", CurriculumConfig)
    assert section(params, "ingest", IngestConfig).image_size == score.image_size == train.image_size == 32
    assert (score.folds, score.epochs, train.epochs, train.ensemble) == (2, 2, 3, 1)
    curriculum.check_epochs(train.epochs)
