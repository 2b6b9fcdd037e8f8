"""EntroMixLoss: the reference's worked example, the gates, and the zero-admitted case."""

import math

import numpy as np
import pytest
import torch

from entromix.modeling.fit import class_weights
from entromix.training.gate import gate_weights
from entromix.training.loss import EntroMixLoss

# The reference's forward-pass example: 12 real (8 benign + 4 malignant) and 4 synthetic
# malignant with JSD 0.02, 0.05, 0.08, 0.15 at tau = 0.05 -> 12 real + 2 synthetic admitted.
LABELS = torch.tensor([0] * 8 + [1] * 4 + [1] * 4)
IS_SYN = torch.tensor([False] * 12 + [True] * 4)
JSD = torch.tensor([0.0] * 12 + [0.02, 0.05, 0.08, 0.15])
TAU = 0.05
# class weights from the reference's real counts, 120 benign and 40 malignant:
# n_total / (n_classes * n_class) = 160 / 240 and 160 / 80
WEIGHTS = class_weights(np.array([0] * 120 + [1] * 40), 2)


def test_class_weights_follow_the_counts():
    assert WEIGHTS.tolist() == pytest.approx([2 / 3, 2.0])


def test_worked_example_gate_admits_14():
    g = gate_weights(IS_SYN, JSD, TAU)
    assert g.tolist() == [1.0] * 12 + [1.0, 1.0, 0.0, 0.0]
    assert g.sum().item() == 14


def test_worked_example_loss_by_hand_with_uniform_logits():
    # every CE is log 2 with equal logits, so the loss is log 2 * (sum of admitted weights) / 14
    loss = EntroMixLoss(WEIGHTS)(torch.zeros(16, 2), LABELS, IS_SYN, JSD, TAU)
    by_hand = math.log(2) * (8 * (2 / 3) + 4 * 2.0 + 2 * 2.0) / 14
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_worked_example_loss_matches_numpy_for_random_logits():
    logits = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
    loss = EntroMixLoss(WEIGHTS)(logits, LABELS, IS_SYN, JSD, TAU)
    z = logits.double().numpy()
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    ce = -log_softmax[np.arange(16), LABELS.numpy()] * WEIGHTS.double().numpy()[LABELS.numpy()]
    assert loss.item() == pytest.approx(ce[:14].sum() / 14, rel=1e-5)


def test_rejected_synthetic_images_get_no_gradient():
    logits = torch.randn(16, 2, requires_grad=True)
    EntroMixLoss(WEIGHTS)(logits, LABELS, IS_SYN, JSD, TAU).backward()
    assert torch.all(logits.grad[14:] == 0)
    assert torch.all(logits.grad[:14].abs().sum(1) > 0)


def test_warmup_gate_admits_real_only():
    g = gate_weights(IS_SYN, JSD, None)
    assert g.tolist() == [1.0] * 12 + [0.0] * 4


def test_zero_admitted_gives_zero_loss_that_backpropagates():
    logits = torch.randn(4, 2, requires_grad=True)
    loss = EntroMixLoss(WEIGHTS)(
        logits, torch.ones(4, dtype=torch.long), torch.ones(4, dtype=torch.bool), torch.full((4,), 0.9), 0.1
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad == 0)


def test_soft_gate_is_a_sigmoid_around_tau():
    g = gate_weights(IS_SYN, JSD, TAU, gate="soft", temperature=0.02)
    expected = 1 / (1 + np.exp(-(TAU - np.array([0.02, 0.05, 0.08, 0.15])) / 0.02))
    assert g[:12].tolist() == [1.0] * 12
    assert g[12:].numpy() == pytest.approx(expected, rel=1e-6)
    assert g[13].item() == pytest.approx(0.5)


def test_soft_gate_loss_is_weighted_mean_over_gate_weights():
    logits = torch.randn(16, 2, generator=torch.Generator().manual_seed(1))
    loss = EntroMixLoss(WEIGHTS, gate="soft", temperature=0.02)(logits, LABELS, IS_SYN, JSD, TAU)
    g = gate_weights(IS_SYN, JSD, TAU, "soft", 0.02)
    ce = torch.nn.functional.cross_entropy(logits, LABELS, weight=WEIGHTS, reduction="none")
    assert loss.item() == pytest.approx(((ce * g).sum() / g.sum()).item(), rel=1e-6)


def test_boundary_score_equal_to_tau_is_admitted_in_float32():
    g = gate_weights(torch.tensor([True]), torch.tensor([0.05], dtype=torch.float32), 0.05)
    assert g.item() == 1.0


def test_label_smoothing_known_answer():
    # one real image of class 1 with logits (0, 0): p = (0.5, 0.5); smoothing e = 0.2 with C = 2
    # gives target (0.1, 0.9) and weighted CE = w0 * 0.1 * ln 2 + w1 * 0.9 * ln 2
    w = torch.tensor([2.0, 0.5])
    loss = EntroMixLoss(w, label_smoothing=0.2)(
        torch.zeros(1, 2), torch.tensor([1]), torch.tensor([False]), torch.tensor([0.0]), None
    )
    assert loss.item() == pytest.approx((2.0 * 0.1 + 0.5 * 0.9) * math.log(2), rel=1e-6)


def test_set_class_weights_replaces_the_weights_in_place():
    criterion = EntroMixLoss(torch.tensor([1.0, 1.0]))
    logits = torch.tensor([[2.0, 0.0]])
    before = criterion(logits, torch.tensor([1]), torch.tensor([False]), torch.tensor([0.0]), None)
    criterion.set_class_weights(torch.tensor([1.0, 3.0]))
    after = criterion(logits, torch.tensor([1]), torch.tensor([False]), torch.tensor([0.0]), None)
    assert after.item() == pytest.approx(3 * before.item())


# Focal loss inside the gate (train.loss: focal)


def test_focal_loss_known_answer():
    """Two real images, logits (2, 0) label 0 and (0, 1) label 0, weights (1, 1), gamma 2:
    p = sigmoid(2) = 0.880797 and sigmoid(-1) = 0.268941;
    FL = (1 - p)^2 * -ln p = 0.0142094 * 0.126928 = 0.00180358 and 0.534447 * 1.313262 = 0.701868;
    mean over the two admitted images = 0.351836."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([0, 0])
    real, no_jsd = torch.zeros(2, dtype=torch.bool), torch.zeros(2)
    focal = EntroMixLoss(torch.ones(2), loss="focal", focal_gamma=2.0)
    assert float(focal(logits, targets, real, no_jsd, tau=None)) == pytest.approx(0.351836, abs=2e-6)


def test_focal_gamma_zero_is_cross_entropy_and_class_weights_act_as_alpha():
    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(16, 2, generator=gen), torch.randint(0, 2, (16,), generator=gen)
    is_syn, jsd = torch.arange(16) >= 10, torch.rand(16, generator=gen) * 0.2
    weights = torch.tensor([0.7, 2.5])
    ce = EntroMixLoss(weights)(logits, targets, is_syn, jsd, tau=0.1)
    assert float(
        EntroMixLoss(weights, loss="focal", focal_gamma=0.0)(logits, targets, is_syn, jsd, 0.1)
    ) == pytest.approx(float(ce), rel=1e-6)
    # by hand: the gated mean of w_y (1 - p_y)^gamma (-log p_y)
    p = torch.softmax(logits, 1)[torch.arange(16), targets]
    g = (~is_syn | (jsd <= 0.1)).float()
    expected = (g * weights[targets] * (1 - p) ** 1.5 * -torch.log(p)).sum() / g.sum()
    got = EntroMixLoss(weights, loss="focal", focal_gamma=1.5)(logits, targets, is_syn, jsd, 0.1)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_focal_loss_down_weights_easy_images_relative_to_hard_ones():
    easy, hard = torch.tensor([[4.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    target, real, jsd = torch.tensor([0]), torch.zeros(1, dtype=torch.bool), torch.zeros(1)
    ce, focal = EntroMixLoss(torch.ones(2)), EntroMixLoss(torch.ones(2), loss="focal")
    ratio_ce = float(ce(hard, target, real, jsd, None)) / float(ce(easy, target, real, jsd, None))
    ratio_focal = float(focal(hard, target, real, jsd, None)) / float(focal(easy, target, real, jsd, None))
    assert ratio_focal > 100 * ratio_ce
