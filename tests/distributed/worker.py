"""Run under torchrun by tests/test_distributed.py: one process of a 2-process gloo group.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed/worker.py CASE OUT_JSON

Each case computes its part on every rank and rank 0 writes what the test compares with a
single-process run to OUT_JSON."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from torch import nn

from entromix.common.distributed import gather_to_main, init_world, shard, shutdown, unwrap, wrap_model
from entromix.training.loss import EntroMixLoss
from entromix.training.sampler import CurriculumBatchSampler


def sampler_setup() -> CurriculumBatchSampler:
    labels = np.array([0] * 30 + [1] * 10)
    jsd = np.linspace(0.0, 0.6, 16, dtype=np.float32)
    return CurriculumBatchSampler(labels, jsd, batch_size=8, max_synthetic_fraction=0.5, seed=3)


def case_batches(world) -> dict:
    """Every rank takes its shard of each global batch; rank 0 collects them in rank order."""
    sampler = sampler_setup()
    epochs = {}
    for epoch, tau in ((0, None), (1, 0.1), (2, 0.311)):
        plan = sampler.epoch(epoch, tau)
        mine = [shard(rows, world).tolist() for rows in plan.batches]
        epochs[str(epoch)] = gather_to_main(mine, world)
    return {"epochs": epochs}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def loss_batch() -> dict[str, torch.Tensor]:
    """A global batch of 12: 8 real, 4 synthetic, the admitted synthetic ones all in the second half."""
    gen = torch.Generator().manual_seed(1)
    return {
        "x": torch.randn(12, 3, 8, 8, generator=gen),
        "y": torch.tensor([0, 1, 0, 0, 1, 0, 1, 1, 1, 1, 1, 1]),
        "is_syn": torch.tensor([False] * 8 + [True] * 4),
        "jsd": torch.tensor([0.0] * 8 + [0.05, 0.5, 0.02, 0.9]),
    }


def case_loss(world) -> dict:
    """One DDP step of EntroMixLoss on this rank's shard of the global batch."""
    batch = loss_batch()
    model = wrap_model(tiny_model(), world, torch.device("cpu"))
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    criterion = EntroMixLoss(torch.tensor([1.0, 2.0]), world=world)
    part = {k: shard(v, world) for k, v in batch.items()}
    loss = criterion(model(part["x"]), part["y"], part["is_syn"], part["jsd"], tau=0.1)
    optim.zero_grad()
    loss.backward()
    optim.step()
    params = [p.detach().flatten().tolist() for p in unwrap(model).parameters()]
    return {"losses": gather_to_main(float(loss.detach()), world), "params": params}


def main() -> None:
    case, out = sys.argv[1], sys.argv[2]
    world, _ = init_world(torch.device("cpu"))
    assert world.size == 2, "run me with torchrun --nproc-per-node 2"
    result = {"batches": case_batches, "loss": case_loss}[case](world)
    if world.is_main:
        with open(out, "w") as fh:
            json.dump(result, fh)
    shutdown(world)


if __name__ == "__main__":
    main()
