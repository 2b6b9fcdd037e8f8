"""Benchmark the ingest stage: images/s and peak memory as the number of images grows.

Generates N smooth random RGB images (JPEG or PNG, like a microscope export) in a scratch folder,
then runs the real ingest (hash, dedupe, split, decode, write the array) in a fresh process per
N and reports wall time, images/s and peak resident memory of the main process and of the
largest worker. Bounded memory shows as a flat peak RSS while N grows.

    python benchmarks/bench_ingest.py                        # 2,000 and 10,000 JPEGs, 224 px -> 64 px
    python benchmarks/bench_ingest.py --counts 10000 --workers 1 --format png

Not a test: the figures depend on the machine. Record them in BENCHMARKS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generate(root: Path, n: int, size: int, fmt: str, seed: int = 0) -> None:
    """Write n images into root/real/{Benign,Malignant}/ (3:1), smooth so they compress like photos."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = "Benign" if i % 4 else "Malignant"
        path = root / "real" / cls / f"img_{i:06d}.{fmt}"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        img.save(path, quality=90) if fmt == "jpg" else img.save(path, compress_level=6)


def child(root: str, image_size: int, workers: int) -> None:
    """Run ingest once in this (fresh) process and print its timings as JSON."""
    from entromix.data.decode import decode_images
    from entromix.data.ingest_config import IngestConfig, SplitFractions
    from entromix.data.prepare import plan_ingest

    config = IngestConfig(
        data_root=root,
        real_dir="real",
        synthetic_dir=None,
        groups_csv=None,
        tiers_csv=None,
        layout="flat",
        labels=["benign", "malignant"],
        positive_labels=["malignant"],
        unlabelled_dir=None,
        class_map={"Benign": "benign", "Malignant": "malignant"},
        image_size=image_size,
        resize_mode="stretch",
        intensity="fixed16",
        split=SplitFractions(),
        seed=0,
        duplicates_across="error",
        workers=workers,
        bad_images="error",
        max_pixels=100_000_000,
        min_image_size=16,
        scarce_label="malignant",
        scarce_train_images=None,
        scarce_seed=0,
        scarce_unlabelled=False,
    )
    out = Path(root) / "out"
    t0 = time.perf_counter()
    plan = plan_ingest(config)
    t1 = time.perf_counter()
    decode_images(plan, out / "images.npy")
    t2 = time.perf_counter()
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "n": len(plan.manifest),
                "plan_s": t1 - t0,
                "decode_s": t2 - t1,
                "total_s": t2 - t0,
                "peak_rss_main_mib": self_kb / 1024,
                "peak_rss_worker_mib": children_kb / 1024,
                "array_mib": (out / "images.npy").stat().st_size / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", default="2000,10000", help="comma-separated image counts")
    parser.add_argument("--size", type=int, default=224, help="generated image size in px")
    parser.add_argument("--image-size", type=int, default=64, help="ingest.image_size")
    parser.add_argument("--format", choices=["jpg", "png"], default="jpg")
    parser.add_argument("--workers", type=int, default=0, help="ingest.workers (0 = all cores)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed after)")
    parser.add_argument("--child", nargs=3, metavar=("ROOT", "IMAGE_SIZE", "WORKERS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return

    counts = [int(c) for c in args.counts.split(",")]
    scratch = tempfile.TemporaryDirectory(prefix="entromix-bench-") if args.workdir is None else None
    base = Path(args.workdir or scratch.name)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(
        f"images: {args.size}x{args.size} {args.format} -> ingest {args.image_size}x{args.image_size}, "
        f"workers={args.workers}"
    )
    print(
        f"{'N':>7} {'plan s':>7} {'decode s':>9} {'total s':>8} {'img/s':>8} {'main MiB':>9} "
        f"{'worker MiB':>11} {'array MiB':>10}"
    )
    for n in counts:
        root = base / f"{args.format}_{args.size}_{n}"
        generate(root, n, args.size, args.format)
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(root), str(args.image_size), str(args.workers)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{r['n']:>7} {r['plan_s']:>7.2f} {r['decode_s']:>9.2f} {r['total_s']:>8.2f} "
            f"{r['n'] / r['total_s']:>8.0f} {r['peak_rss_main_mib']:>9.0f} {r['peak_rss_worker_mib']:>11.0f} "
            f"{r['array_mib']:>10.1f}"
        )
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
