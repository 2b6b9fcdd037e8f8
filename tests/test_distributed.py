"""Training across processes (torchrun + DistributedDataParallel), tested on CPU with gloo and 2
processes: the global batch, the admitted count and the loss equal a single-process run's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from entromix.common.distributed import SINGLE, World, shard, torchrun_command
from entromix.training.loss import EntroMixLoss

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "distributed" / "worker.py"
sys.path.insert(0, str(WORKER.parent))
import worker  # noqa: E402  (the same setups, run here in one process)


def run_two_processes(case: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{case}.json"
    command = torchrun_command(str(WORKER), 2, 1, "", "")
    result = subprocess.run([*command, case, str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_shards_partition_a_batch_in_order():
    rows = np.arange(11)
    parts = [shard(rows, World(rank, 3, rank)) for rank in range(3)]
    assert [len(p) for p in parts] == [3, 4, 4]
    np.testing.assert_array_equal(np.concatenate(parts), rows)
    assert shard(rows, SINGLE) is rows


def test_torchrun_command_single_and_multi_node():
    single = torchrun_command("pipeline/train.py", 4, 1, "host:29400", "run1")
    assert single[1:] == ["-m", "torch.distributed.run", "--nproc-per-node=4", "--standalone", "pipeline/train.py"]
    multi = torchrun_command("pipeline/train.py", 8, 2, "node0:29400", "run1")
    assert "--nnodes=2" in multi and "--rdzv-endpoint=node0:29400" in multi and "--rdzv-id=run1" in multi
    assert "--standalone" not in multi


def test_two_processes_see_the_single_process_global_batches(tmp_path):
    result = run_two_processes("batches", tmp_path)
    sampler = worker.sampler_setup()
    for epoch, tau in ((0, None), (1, 0.1), (2, 0.311)):
        plan = sampler.epoch(epoch, tau)
        rank0, rank1 = result["epochs"][str(epoch)]
        assert len(rank0) == len(rank1) == len(plan.batches)
        for b, rows in enumerate(plan.batches):
            assert rank0[b] + rank1[b] == rows.tolist()  # the global batch, composition and order
            assert not set(rank0[b]) & set(rank1[b])
        seen = [r for b in range(len(plan.batches)) for r in rank0[b] + rank1[b]]
        assert len(seen) == len(set(seen))  # no image twice in an epoch (R <= n_real here)


def single_process_step() -> tuple[float, float, list[list[float]]]:
    batch = worker.loss_batch()
    model = worker.tiny_model()
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    criterion = EntroMixLoss(torch.tensor([1.0, 2.0]))
    loss = criterion(model(batch["x"]), batch["y"], batch["is_syn"], batch["jsd"], tau=0.1)
    admitted = float(((~batch["is_syn"]) | (batch["jsd"] <= 0.1)).sum())
    optim.zero_grad()
    loss.backward()
    optim.step()
    return float(loss.detach()), admitted, [p.detach().flatten().tolist() for p in model.parameters()]


def test_two_process_loss_and_step_equal_the_single_process_ones(tmp_path):
    result = run_two_processes("loss", tmp_path)
    loss, admitted, params = single_process_step()
    assert admitted == 10  # 8 real + the 2 synthetic images with jsd <= 0.1, both in rank 1's half
    # each rank's value is world * its numerator / the global count: their mean is the global loss
    assert np.mean(result["losses"]) == pytest.approx(loss, rel=1e-6)
    for got, expected in zip(result["params"], params):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_a_per_rank_mean_would_not_have_matched():
    """The check above can fail: averaging each rank's own mean gives another loss on this batch."""
    batch, model = worker.loss_batch(), worker.tiny_model()
    criterion = EntroMixLoss(torch.tensor([1.0, 2.0]))
    halves = [{k: shard(v, World(r, 2, r)) for k, v in batch.items()} for r in range(2)]
    per_rank = [float(criterion(model(h["x"]), h["y"], h["is_syn"], h["jsd"], tau=0.1)) for h in halves]
    whole = float(criterion(model(batch["x"]), batch["y"], batch["is_syn"], batch["jsd"], tau=0.1))
    assert abs(np.mean(per_rank) - whole) > 1e-3
