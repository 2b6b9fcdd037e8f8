"""The per-step learning-rate schedule: linear warmup, then cosine to 0, resumable."""

import math

import pytest
import torch

from entromix.modeling.fit import batches_per_epoch, epoch_order
from entromix.modeling.lr_schedule import warmup_cosine, warmup_cosine_factor


def test_factor_known_values():
    # 10 steps, 2 of warmup: 0.5, 1.0, then cosine over the remaining 8 steps
    assert [warmup_cosine_factor(s, 10, 2) for s in range(2)] == [0.5, 1.0]
    assert warmup_cosine_factor(2, 10, 2) == pytest.approx(1.0)
    assert warmup_cosine_factor(6, 10, 2) == pytest.approx(0.5)  # half-way through the decay
    assert warmup_cosine_factor(10, 10, 2) == pytest.approx(0.0)
    assert warmup_cosine_factor(4, 8, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_scheduler_steps_and_resumes_exactly():
    def make():
        param = torch.nn.Parameter(torch.zeros(1))
        optim = torch.optim.SGD([param], lr=0.1)
        return optim, warmup_cosine(optim, total_steps=20, warmup_steps=4)

    optim, sched = make()
    lrs = []
    for _ in range(20):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert max(lrs) == pytest.approx(0.1) and lrs[-1] < 0.01
    assert all(b <= a + 1e-12 for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay after warmup

    optim2, sched2 = make()
    for _ in range(7):
        optim2.step()
        sched2.step()
    state = sched2.state_dict()
    optim3, sched3 = make()
    sched3.load_state_dict(state)
    optim3.param_groups[0]["lr"] = optim2.param_groups[0]["lr"]
    optim3.step()
    sched3.step()
    optim2.step()
    sched2.step()
    assert optim3.param_groups[0]["lr"] == pytest.approx(optim2.param_groups[0]["lr"])


def test_warmup_longer_than_the_run_still_decays():
    param = torch.nn.Parameter(torch.zeros(1))
    optim = torch.optim.SGD([param], lr=1.0)
    sched = warmup_cosine(optim, total_steps=3, warmup_steps=10)
    seen = []
    for _ in range(3):
        seen.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    assert seen[0] < seen[1] and max(seen) <= 1.0


def test_min_steps_lengthen_small_epochs_only():
    assert batches_per_epoch(4, 30, 0) == 4
    assert batches_per_epoch(4, 30, 120) == 4  # already 120 steps
    assert batches_per_epoch(4, 30, 300) == 10
    assert batches_per_epoch(20, 30, 300) == 20


def test_epoch_order_repeats_every_index_evenly():
    order = epoch_order(7, 30, torch.Generator().manual_seed(0))
    counts = torch.bincount(order, minlength=7)
    assert len(order) == 30 and counts.min() >= 4 and counts.max() <= 5
    assert sorted(order[:7].tolist()) == list(range(7))  # the first pass is a permutation
