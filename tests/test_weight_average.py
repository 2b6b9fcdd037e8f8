"""The moving average of the weights: its known answer, its half-life, and where the stages use it."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from entromix.modeling.fit import FitSettings, fit_classifier
from entromix.modeling.weight_average import WeightAverage, ema_decay, half_life_steps


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1, bias=False)
        self.norm = nn.BatchNorm1d(1)


def test_decay_halves_a_step_after_half_life_steps():
    for h in (1.0, 3.0, 37.5):
        assert ema_decay(h) ** h == pytest.approx(0.5)
    with pytest.raises(ValueError):
        ema_decay(0)


def test_half_life_in_epochs_becomes_steps():
    assert half_life_steps(0.0, 20) is None
    assert half_life_steps(2.0, 20) == 40.0
    assert half_life_steps(0.5, 0) == 0.5  # an epoch has at least one step


def test_known_answer_of_the_average_over_weights_and_buffers():
    """w_ema(0) = w(0); w_ema(s) = d w_ema(s-1) + (1-d) w(s), for parameters and BatchNorm's running mean."""
    model = Tiny()
    h = 2.0
    d = 0.5 ** (1 / h)
    avg = WeightAverage(model, h)
    expected_w = model.linear.weight.detach().clone()
    expected_mean = model.norm.running_mean.clone()
    for s in range(1, 6):
        with torch.no_grad():
            model.linear.weight.copy_(torch.tensor([[float(s), -2.0 * s]]))
            model.norm.running_mean.fill_(10.0 * s)
        avg.update()
        expected_w = d * expected_w + (1 - d) * model.linear.weight.detach()
        expected_mean = d * expected_mean + (1 - d) * model.norm.running_mean
    torch.testing.assert_close(avg.module.linear.weight, expected_w)
    torch.testing.assert_close(avg.module.norm.running_mean, expected_mean)
    assert avg.module is not model and avg.enabled


def test_off_is_the_model_itself():
    model = Tiny()
    avg = WeightAverage(model, None)
    avg.update()
    assert avg.module is model and not avg.enabled and avg.state_dict() == {}


def test_state_round_trip_continues_identically():
    model = Tiny()
    a = WeightAverage(model, 3.0)
    for _ in range(3):
        with torch.no_grad():
            model.linear.weight.add_(1.0)
        a.update()
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    b = WeightAverage(model, 3.0)
    b.load_state_dict(saved)
    with torch.no_grad():
        model.linear.weight.add_(1.0)
    a.update()
    b.update()
    torch.testing.assert_close(a.module.linear.weight, b.module.linear.weight)


def test_fit_classifier_returns_the_average_and_it_differs_from_the_last_weights():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, size=(16, 16, 16, 3), dtype=np.uint8))
    labels = torch.tensor([0, 1] * 8)
    from entromix.modeling.models import build_model

    settings = dict(
        epochs=2, batch_size=8, optimizer="adamw", lr=1e-2, weight_decay=0.0, augment=False, color_jitter=0.0
    )
    model = build_model("resnet18", 2, 16)
    plain = fit_classifier(model, images, labels, FitSettings(**settings, image_size=16), torch.device("cpu"), seed=0)
    assert plain is model
    model = build_model("resnet18", 2, 16)
    averaged = fit_classifier(
        model, images, labels, FitSettings(**settings, image_size=16, ema_half_life=1.0), torch.device("cpu"), seed=0
    )
    assert averaged is not model
    w_avg, w_last = averaged.fc.weight.detach(), model.fc.weight.detach()
    assert not torch.equal(w_avg, w_last) and math.isfinite(float(w_avg.sum()))
