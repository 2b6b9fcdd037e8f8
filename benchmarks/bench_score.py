"""Benchmark the score stage's inference path against the model's own inference speed.

Pipeline efficiency = (images/s of the score stage's path: gather rows from the memory-mapped
uint8 array, convert, resize if needed, normalise, forward) / (images/s of the same model's
forward pass on ready-made random float tensors of the same shape). The ratio says how much the
data path costs on top of the network, which is the honest figure on a noisy shared machine.
Target: >= 0.8.

    python benchmarks/bench_score.py                         # resnet18 at 64 px, CPU
    python benchmarks/bench_score.py --model resnet50 --size 224 --n 512 --device cuda

Also reports training images/s of one fold-training epoch vs training on random tensors.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from entromix.common.device import autocast, describe, resolve_device
from entromix.common.image_store import ImageArrayWriter, open_images
from entromix.modeling.augment import normalize
from entromix.modeling.fit import FitSettings, fit_classifier, predict_logits, uses_channels_last
from entromix.modeling.models import build_model


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=64, help="model input size (px)")
    parser.add_argument("--stored", type=int, default=None, help="stored array size (default: --size)")
    parser.add_argument("--n", type=int, default=2048, help="images to score")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-n", type=int, default=256, help="images for the training comparison (0 = skip)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    stored = args.stored or args.size
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, 2, args.size).to(device).eval()
    cl = uses_channels_last(args.model, device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {describe(device)}")
    print(f"model {args.model}, input {args.size}px (stored {stored}px), N={args.n}, batch {args.batch}")

    # plain inference on ready-made random tensors
    x = normalize(torch.rand(args.batch, 3, args.size, args.size, device=device))
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    n_batches = max(1, args.n // args.batch)

    @torch.no_grad()
    def plain():
        for _ in range(n_batches):
            with autocast(device):
                model(x)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npy"
        rng = np.random.default_rng(0)
        with ImageArrayWriter(path, args.n * 2, stored) as writer:
            for _ in range(args.n * 2):
                writer.append(rng.integers(0, 256, (stored, stored, 3), dtype=np.uint8))
        images = open_images(path)
        ids = np.sort(
            rng.choice(args.n * 2, size=n_batches * args.batch, replace=False)
        )  # scattered rows, like synthetic ids

        def pipeline():
            predict_logits(model, np.asarray(images[ids]), device, args.size, batch_size=args.batch, channels_last=cl)

        plain()  # warm-up
        pipeline()
        t_plain = best_of(plain, args.repeats)
        t_pipe = best_of(pipeline, args.repeats)
        n = n_batches * args.batch
        print(
            f"inference: plain {n / t_plain:8.1f} img/s | score path {n / t_pipe:8.1f} img/s | "
            f"efficiency {t_plain / t_pipe:.3f}"
        )

        if args.train_n:
            settings = FitSettings(
                epochs=1,
                batch_size=32,
                optimizer="adamw",
                lr=1e-3,
                weight_decay=1e-4,
                augment=True,
                color_jitter=0.0,
                image_size=args.size,
                rotate90=True,
            )
            u8 = torch.from_numpy(np.array(images[: args.train_n])).to(device)
            labels = torch.from_numpy(rng.integers(0, 2, args.train_n)).to(device)
            train_model = build_model(args.model, 2, args.size).to(device)
            xr = normalize(torch.rand(32, 3, args.size, args.size, device=device))
            if cl:
                train_model = train_model.to(memory_format=torch.channels_last)
                xr = xr.contiguous(memory_format=torch.channels_last)
            yr = torch.randint(0, 2, (32,), device=device)
            opt = torch.optim.AdamW(train_model.parameters(), lr=1e-3)
            loss_fn = torch.nn.CrossEntropyLoss()

            def plain_train():
                train_model.train()
                for _ in range(args.train_n // 32):
                    with autocast(device):
                        loss = loss_fn(train_model(xr).float(), yr)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

            def pipeline_train():
                fit_classifier(train_model, u8, labels, settings, device, seed=0, channels_last=cl)

            plain_train()
            t_plain_tr = best_of(plain_train, args.repeats)
            t_pipe_tr = best_of(pipeline_train, args.repeats)
            n_tr = (args.train_n // 32) * 32
            print(
                f"training:  plain {n_tr / t_plain_tr:8.1f} img/s | score path {n_tr / t_pipe_tr:8.1f} img/s | "
                f"efficiency {t_plain_tr / t_pipe_tr:.3f}  (score path includes augmentation)"
            )


if __name__ == "__main__":
    main()
