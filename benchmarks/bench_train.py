"""Benchmark the train stage's training loop against the model's own training speed.

Pipeline efficiency = (training images/s of ``entromix.training.loop.train_curriculum``: sampler, gather
uint8 rows, augment on the device, EntroMixLoss, step; validation excluded) / (images/s of
forward + backward + optimiser step on ready-made random float tensors of the same shape and
batch size, same model, same precision and memory format). Target: >= 0.9.

    python benchmarks/bench_train.py                                  # resnet18, 64 px, CPU
    python benchmarks/bench_train.py --model resnet50 --size 224 --batch 16 --device cuda

Synthetic data only (random uint8 images), so the figure does not depend on the demo data.
Peak resident memory (CPU) or peak allocated memory (CUDA) is printed too.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from entromix.common.device import autocast, describe, resolve_device
from entromix.modeling.augment import normalize
from entromix.modeling.fit import make_optimizer, uses_channels_last
from entromix.modeling.models import build_model
from entromix.training.config import TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loop import train_curriculum
from entromix.training.table import TrainingTable


def random_tensor_speed(model_name: str, size: int, batch: int, steps: int, device: torch.device) -> float:
    """images/s of plain training steps on one ready-made random batch."""
    torch.manual_seed(0)
    model = build_model(model_name, 2, size).to(device).train()
    cl = uses_channels_last(model_name, device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    optim = make_optimizer(model, "adamw", 1e-3, 1e-4)  # the train profile in params.yaml
    x = normalize(torch.rand(batch, 3, size, size, device=device))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,), device=device)

    def step():
        with autocast(device):
            loss = F.cross_entropy(model(x).float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    for _ in range(3):  # warm-up: allocator, oneDNN / cuDNN kernel choice
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="model input size = stored size (px)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--n-real", type=int, default=320, help="real training images (an epoch = n_real // batch batches)"
    )
    parser.add_argument("--n-syn", type=int, default=160, help="synthetic pool (half admitted from epoch 2)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, {describe(device)}"
    )
    print(
        f"model {args.model}, {args.size}px, batch {args.batch}, {args.n_real} real + {args.n_syn} synthetic, "
        f"{args.epochs} epochs"
    )

    rng = np.random.default_rng(0)
    n = args.n_real + args.n_syn
    table = TrainingTable(
        images=rng.integers(0, 256, size=(n, args.size, args.size, 3), dtype=np.uint8),
        labels=np.array([0, 0, 0, 1] * (args.n_real // 4) + [0] * (args.n_real % 4) + [1] * args.n_syn, dtype=np.int64),
        is_syn=np.array([False] * args.n_real + [True] * args.n_syn),
        jsd=np.concatenate([np.zeros(args.n_real), rng.uniform(0, 1, args.n_syn)]).astype(np.float32),
        ids=np.arange(n),
    )
    val_labels = np.array([0, 1] * 16)
    val_images = rng.integers(0, 256, size=(len(val_labels), args.size, args.size, 3), dtype=np.uint8)
    config = TrainConfig(
        model=args.model,
        pretrained_weights=None,
        image_size=args.size,
        ensemble=1,
        epochs=args.epochs,
        min_steps=0,
        batch_size=args.batch,
        optimizer="adamw",
        lr=1e-3,
        lr_warmup_epochs=1,
        weight_decay=1e-4,
        label_smoothing=0.0,
        class_weights="real",
        loss="ce",
        focal_gamma=2.0,
        augment=True,
        rotate90=True,
        color_jitter=0.0,
        ema_half_life=0.0,
        select_metric="val_auc",
        seed=0,
        device=args.device,
        resume=False,
        early_stopping_patience=None,
        nproc_per_node=1,
        nnodes=1,
        rdzv_endpoint="",
    )
    curriculum = CurriculumConfig(
        warmup_epochs=1,
        jsd_start=0.5,
        jsd_end=0.5,
        pacing="linear",
        gate="hard",
        gate_temperature=0.02,
        max_synthetic_fraction=0.5,
        synthetic_slots="replace",
        strategy="curriculum",
        rescore_every=0,
        pseudo_labels=False,
        pseudo_threshold=0.95,
        pseudo_every=1,
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = train_curriculum(config, curriculum, table, val_images, val_labels, device, log=lambda s: None)
    speeds = [r["images_per_s"] for r in result.history[1:]]  # epoch 0 includes one-off warm-up costs
    pipeline = float(np.median(speeds))
    steps = max(10, (args.n_real // args.batch))
    plain = random_tensor_speed(args.model, args.size, args.batch, steps, device)
    if device.type == "cuda":
        peak = f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB"
    else:
        peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    print(
        f"train stage loop: {pipeline:.1f} images/s (median of epochs 2..{args.epochs}; per epoch: "
        f"{', '.join(f'{s:.1f}' for s in speeds)})"
    )
    print(f"random tensors:   {plain:.1f} images/s ({steps} steps)")
    print(f"pipeline efficiency: {pipeline / plain:.3f}  ({peak})")


if __name__ == "__main__":
    main()
