"""The train stage's loop as 1 and as several processes (torchrun, DistributedDataParallel).

    python benchmarks/bench_distributed.py                      # 1 and 2 processes, CPU (gloo)
    python benchmarks/bench_distributed.py --nproc 1,2,4,8 --device cuda --size 224 --model resnet50

Each setting runs ``entromix.training.loop.train_curriculum`` on the same random uint8 data
(seeded) with the same global batch, so every run does the same optimiser steps; with N processes
each takes 1/N of every batch. Reported: the median training images/s over epochs 2.. (all
processes together), the wall time of the epochs, and the peak resident memory of each process.
On 2 CPU cores two processes cannot be faster than one (each gets one core, and the gradients
are all-reduced every step); the point there is that it runs and gives the same steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys

import numpy as np
import torch

from entromix.common.device import describe, resolve_device
from entromix.common.distributed import gather_to_main, init_world, shutdown, torchrun_command
from entromix.training.config import TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loop import train_curriculum
from entromix.training.table import TrainingTable


def worker(args: argparse.Namespace) -> None:
    world, device = init_world(resolve_device(args.device))
    rng = np.random.default_rng(0)
    n = args.n_real + args.n_syn
    table = TrainingTable(
        images=rng.integers(0, 256, size=(n, args.size, args.size, 3), dtype=np.uint8),
        labels=np.array([0, 0, 0, 1] * (args.n_real // 4) + [1] * args.n_syn, dtype=np.int64),
        is_syn=np.array([False] * args.n_real + [True] * args.n_syn),
        jsd=np.concatenate([np.zeros(args.n_real), rng.uniform(0, 1, args.n_syn)]).astype(np.float32),
        ids=np.arange(n),
    )
    val_labels = np.array([0, 1] * 16)
    val_images = rng.integers(0, 256, size=(len(val_labels), args.size, args.size, 3), dtype=np.uint8)
    config = TrainConfig(
        **dict(
            model=args.model, pretrained_weights=None, image_size=args.size, epochs=args.epochs, min_steps=0, ensemble=1
        ),
        **dict(batch_size=args.batch, optimizer="adamw", lr=1e-3, lr_warmup_epochs=1, weight_decay=1e-4),
        **dict(label_smoothing=0.0, class_weights="real", augment=True, rotate90=True, color_jitter=0.0),
        **dict(loss="ce", focal_gamma=2.0, ema_half_life=0.0),
        **dict(select_metric="val_auc", seed=0, device=args.device, resume=False, early_stopping_patience=None),
        **dict(nproc_per_node=world.size, nnodes=1, rdzv_endpoint=""),
    )
    curriculum = CurriculumConfig(
        **dict(warmup_epochs=1, jsd_start=0.5, jsd_end=0.5, pacing="linear", gate="hard", gate_temperature=0.02),
        **dict(max_synthetic_fraction=0.5, synthetic_slots="replace", strategy="curriculum", rescore_every=0),
        **dict(pseudo_labels=False, pseudo_threshold=0.95, pseudo_every=1),
    )
    result = train_curriculum(config, curriculum, table, val_images, val_labels, device, lambda s: None, world=world)
    peak = gather_to_main(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, world)
    if world.is_main:
        rows = result.history[1:]  # epoch 0 includes one-off warm-up costs
        print(
            "RESULT "
            + json.dumps(
                {
                    "processes": world.size,
                    "images_per_s": float(np.median([r["images_per_s"] for r in rows])),
                    "epoch_seconds": float(np.median([r["epoch_seconds"] for r in rows])),
                    "train_loss": [round(r["train_loss"], 4) for r in result.history],
                    "peak_rss_mib": [round(p) for p in peak],
                }
            )
        )
    shutdown(world)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", default="1,2", help="comma-separated process counts")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="the global batch")
    parser.add_argument("--n-real", type=int, default=320)
    parser.add_argument("--n-syn", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    device = resolve_device(args.device)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {describe(device)}")
    print(f"model {args.model}, {args.size}px, global batch {args.batch}, {args.n_real} real + {args.n_syn} synthetic")
    passed = [f"--model={args.model}", f"--size={args.size}", f"--batch={args.batch}", f"--n-real={args.n_real}"]
    passed += [f"--n-syn={args.n_syn}", f"--epochs={args.epochs}", f"--device={args.device}"]
    for nproc in (int(n) for n in args.nproc.split(",")):
        script = [__file__, "--worker", *passed]
        command = (
            [sys.executable, *script] if nproc == 1 else [*torchrun_command(__file__, nproc, 1, "", ""), *script[1:]]
        )
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // nproc)))
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(f"{nproc} process(es): failed\n{out.stderr[-2000:]}")
            continue
        r = json.loads(line[len("RESULT ") :])
        print(
            f"{nproc} process(es): {r['images_per_s']:.1f} images/s, {r['epoch_seconds']:.1f} s per epoch, "
            f"peak RSS per process {r['peak_rss_mib']} MiB; train loss per epoch {r['train_loss']}"
        )


if __name__ == "__main__":
    main()
