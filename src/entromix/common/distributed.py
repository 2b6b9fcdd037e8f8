"""Several processes with torchrun and DistributedDataParallel: the process group, who writes, and
the few collectives the stages need.

A stage runs distributed when ``nproc_per_node * nnodes > 1``: the stage's script relaunches
itself through ``torch.distributed.run`` (torchrun) with those settings (:func:`torchrun_command`),
and each process then reads its rank from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). With one process nothing here starts a process group: every function is a no-op
or the identity, so single-process runs are unchanged.

* Backend: NCCL when the device is CUDA (each process takes GPU ``LOCAL_RANK``), gloo on CPU.
* BatchNorm: synchronised on CUDA (``SyncBatchNorm``: the statistics of the whole global batch).
  PyTorch's SyncBatchNorm runs on GPUs only, so on CPU every process normalises with its own
  shard's statistics, as plain DDP does; the loss and the gradients are still the global ones.
* Only rank 0 writes outputs, metrics, checkpoints and logs (:attr:`World.is_main`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the stage's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun started (its environment names the rank)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def torchrun_command(script: str, nproc_per_node: int, nnodes: int, rdzv_endpoint: str, rdzv_id: str) -> list[str]:
    """The command that runs ``script`` as ``nproc_per_node`` processes on each of ``nnodes`` nodes.

    One node: torchrun's standalone mode (a local rendezvous on a free port). Several nodes: the
    c10d rendezvous at ``rdzv_endpoint`` (host:port of one node, reachable from all), the same
    ``rdzv_id`` on every node; run the same ``dvc repro`` on each node."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        command += [
            f"--nnodes={nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
    return [*command, script]


def needs_launch(nproc_per_node: int, nnodes: int) -> bool:
    """More than one process asked for, and this is not yet one of them."""
    return nproc_per_node * nnodes > 1 and not launched_by_torchrun()


def launch(script: str, script_args: list[str], nproc_per_node: int, nnodes: int, rdzv_endpoint: str, key: str) -> None:
    """Run ``script`` as torchrun's processes and wait for them (this process is torchrun's agent).

    A failed rank ends the others (torchrun's rule); the stage then exits with that rank's code:
    2 for bad input (its message is already printed), 130/143 when interrupted, 1 otherwise, with
    one line naming the rank, instead of torchrun's error report."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    command = torchrun_command(script, nproc_per_node, nnodes, rdzv_endpoint, "entromix")[3:]
    print(f"entromix: launching {nproc_per_node * nnodes} processes ({key}): torchrun {' '.join(command)}")
    try:
        run(parse_args([*command, *script_args]))
    except ChildFailedError as exc:
        rank, code = root_failure({r: f.exitcode for r, f in exc.failures.items()})
        if code < 0:  # killed by a signal
            print(
                f"entromix: rank {rank} was killed by signal {-code}; the others were stopped. The next "
                "`dvc repro` resumes from the last finished epoch.",
                file=sys.stderr,
            )
            sys.exit(128 - code)
        if code != 2:
            print(f"entromix: rank {rank} failed with exit code {code} (its output is above).", file=sys.stderr)
        sys.exit(code if code in (2, 130, 143) else 1)
    except SignalException as exc:  # Ctrl-C or a scheduler's SIGTERM to the stage: torchrun stopped the ranks
        print(
            f"entromix: {exc.sigval.name} received; the processes were stopped and the outputs were not "
            "replaced. The next `dvc repro` resumes from the last finished epoch.",
            file=sys.stderr,
        )
        sys.exit(128 + int(exc.sigval))


def root_failure(exit_codes: dict[int, int]) -> tuple[int, int]:
    """The rank whose failure stopped the run, and its exit code. When one rank fails, the others
    fail after it: their collectives break (exit 1, :func:`stop_quietly_when_a_peer_dies`) and
    torchrun stops them (SIGTERM, or 130/143 when entromix handled the signal). So a rank killed by
    another signal (SIGKILL, the OOM killer, a crash) comes first, then another exit code (2: bad
    input), then exit 1, then the ranks that were stopped."""

    def cause(item: tuple[int, int]) -> tuple[int, int]:
        rank, code = item
        if code < 0:
            order = 3 if -code in (signal.SIGTERM, signal.SIGINT) else 0
        else:
            order = 3 if code in (130, 143) else 2 if code == 1 else 1
        return (order, rank)

    return min(exit_codes.items(), key=cause)


#: what gloo and NCCL say when another process of the group has died
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "NCCL communicator was aborted",
    "remote process",
)


@contextlib.contextmanager
def stop_quietly_when_a_peer_dies(world: World, stage: str) -> Iterator[None]:
    """When another rank dies, the collectives of this one fail: that is a consequence, not this
    rank's error. Print one line and exit 1 (torchrun then reports the rank that died, see
    :func:`launch`) instead of a traceback; any other error propagates."""
    try:
        yield
    except RuntimeError as exc:
        if not world.distributed or not any(text in str(exc) for text in _PEER_GONE):
            raise
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # torchrun's SIGTERM now ends the process quietly
        first = str(exc).strip().splitlines()[0][:200]
        print(f"entromix {stage}: rank {world.rank}: another process stopped ({first}); stopping too", file=sys.stderr)
        sys.exit(1)


def init_world(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group when launched by torchrun with more than one process; returns the
    world and the device this process uses (``cuda:LOCAL_RANK`` on CUDA)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE, device
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=30))
    # the node's cores are shared: each process gets its part (torch would take all of them)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world.size))))
    return world, device


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """DistributedDataParallel (with SyncBatchNorm on CUDA) when distributed, else ``model``."""
    if not world.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (what checkpoints and validation use)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def shard(rows: Any, world: World) -> Any:
    """This rank's contiguous part of a global batch (sizes differ by at most one)."""
    if not world.distributed:
        return rows
    n = len(rows)
    start, stop = (world.rank * n) // world.size, ((world.rank + 1) * n) // world.size
    return rows[start:stop]


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``value`` over every rank (a new tensor; no gradient flows through it)."""
    if not world.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def broadcast_from_main(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any, world: World) -> list[Any] | None:
    """Every rank's ``obj`` in rank order on rank 0; None elsewhere."""
    if not world.distributed:
        return [obj]
    boxes = [None] * world.size if world.is_main else None
    dist.gather_object(obj, boxes, dst=0)
    return boxes


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
