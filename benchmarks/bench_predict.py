"""Benchmark `entromix predict`: image files on disk to a CSV of probabilities.

Writes N synthetic PNG files (default 1000 at 256 px, like microscope crops), builds a resnet18
checkpoint in the deployed format (untrained weights: speed does not depend on them), and times
the two parts of ``predict_files``: reading (decode, orient, RGB, resize to the stored size) and
classifying (the model's forward pass at its input size), plus the peak resident memory.

    python benchmarks/bench_predict.py                        # 1000 files, resnet18 at 64 px, CPU
    python benchmarks/bench_predict.py --n 2000 --file-size 512 --uncertainty tta
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from entromix.common.device import describe, resolve_device
from entromix.modeling.augment import IMAGENET_MEAN, IMAGENET_STD
from entromix.modeling.fit import uses_channels_last
from entromix.modeling.models import build_model
from entromix.prediction.predict import class_probabilities, find_images, read_images
from entromix.training.checkpoints import TrainedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--file-size", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="stored and model input size")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--uncertainty", default="none", choices=["none", "tta"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.n):
            pixels = rng.integers(0, 256, (args.file_size, args.file_size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(Path(tmp) / f"img{i:05d}.png", compress_level=1)
        model = build_model(args.model, 2, args.size).to(device).eval()
        channels_last = uses_channels_last(args.model, device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        preprocess = {
            "stored_size": args.size,
            "resize_mode": "stretch",
            "image_size": args.size,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }
        ckpt = {
            "model_name": args.model,
            "labels": ["benign", "malignant"],
            "temperature": 1.0,
            "image_size": args.size,
            "preprocess": preprocess,
        }
        trained = TrainedModel(model=model, checkpoint=ckpt, device=device, channels_last=channels_last)
        files, _ = find_images([tmp])
        start = time.perf_counter()
        images, kept, _ = read_images(files, preprocess, "error", progress=False)
        read_s = time.perf_counter() - start
        start = time.perf_counter()
        class_probabilities(trained, images, args.uncertainty, progress=False)
        classify_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; device {describe(device)}")
    print(
        f"{args.n} PNG files {args.file_size}x{args.file_size} -> {args.model} at {args.size} px, "
        f"uncertainty {args.uncertainty}"
    )
    print(f"read   {read_s:6.2f} s  {len(kept) / read_s:7.0f} img/s")
    print(f"classify {classify_s:4.2f} s  {len(kept) / classify_s:7.0f} img/s")
    print(
        f"total  {read_s + classify_s:6.2f} s  {len(kept) / (read_s + classify_s):7.0f} img/s; "
        f"peak resident memory {peak_mib:.0f} MiB"
    )


if __name__ == "__main__":
    main()
