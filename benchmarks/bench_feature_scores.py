"""What the feature-space scores add to the score stage's time.

    .venv/bin/python benchmarks/bench_feature_scores.py        # leukemia_dev's sizes: 134 real, 300 synthetic
    .venv/bin/python benchmarks/bench_feature_scores.py --n-real 120 --n-syn 160   # the demo's

Runs the score stage's own function (``score_training_images``: K fold models trained in turn)
on generated 64 px images and times, inside the same run, the two things the feature scores add
to each fold: the forward pass over the real images the fold model trained on (the reference
features) and the knn / Mahalanobis scoring itself. The penultimate features of the synthetic
images come from the forward pass that already gives their logits. Because both parts are timed
in the same process as the training they add to, the overhead fraction holds on a loaded machine.
Peak resident memory is that of the whole run.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import pandas as pd
import torch

import entromix.scoring.folds as folds
from entromix.common.device import describe, resolve_device
from entromix.scoring.config import ScoreConfig
from entromix.scoring.out_of_fold import score_training_images


def toy_set(n_real: int, n_syn: int, size: int, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """Learnable images (malignant brighter), a quarter of the real ones malignant, the pool malignant."""
    rng = np.random.default_rng(seed)
    labels = np.r_[(np.arange(n_real) % 4 == 0).astype(int), np.ones(n_syn, int)]
    images = rng.integers(0, 150, size=(n_real + n_syn, size, size, 3)).astype(np.uint8)
    images[labels == 1] += 80
    manifest = pd.DataFrame(
        {
            "id": np.arange(n_real + n_syn),
            "path": [f"c/{i}.png" for i in range(n_real + n_syn)],
            "label": labels,
            "split": "train",
            "is_syn": np.r_[np.zeros(n_real, int), np.ones(n_syn, int)],
            "source": ["real"] * n_real + ["syn"] * n_syn,
            "group": "",
        }
    )
    return images, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-real", type=int, default=134)
    parser.add_argument("--n-syn", type=int, default=300)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30, help="score.epochs (params.yaml: 30)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = resolve_device(args.device)
    config = ScoreConfig(
        model="resnet18",
        pretrained_weights=None,
        image_size=args.size,
        epochs=args.epochs,
        min_steps=0,
        batch_size=32,
        optimizer="adamw",
        lr=1e-3,
        lr_warmup_epochs=2,
        weight_decay=1e-4,
        label_smoothing=0.0,
        augment=True,
        rotate90=True,
        color_jitter=0.0,
        ema_half_life=0.0,
        folds=args.folds,
        synthetic_score="ensemble",
        knn_k=10,
        rank_mean_of=["ensemble", "mahalanobis"],
        tta=False,
        temperature_scaling=True,
        seed=0,
        device=args.device,
        nproc_per_node=1,
    )
    images, manifest = toy_set(args.n_real, args.n_syn, args.size)

    timings = {"reference_forward_s": 0.0, "feature_scoring_s": 0.0}
    predict, score = folds.fold_predictor(config, device), folds.fold_feature_scores

    def timed_predict(k, part, model, images):
        start = time.perf_counter()
        out = predict(k, part, model, images)
        if part == "reference":  # the forward pass over the fold model's own training images
            timings["reference_forward_s"] += time.perf_counter() - start
        return out

    def timed_score(*a, **kw):
        start = time.perf_counter()
        out = score(*a, **kw)
        timings["feature_scoring_s"] += time.perf_counter() - start
        return out

    folds.fold_feature_scores = timed_score  # the feature scoring has no hook of its own: timed in place
    start = time.perf_counter()
    result = score_training_images(config, images, manifest, device, log=lambda s: None, predict=timed_predict)
    total = time.perf_counter() - start
    added = timings["reference_forward_s"] + timings["feature_scoring_s"]
    report = {
        "machine": f"{platform.machine()} {platform.processor() or platform.platform()}",
        "threads": torch.get_num_threads(),
        "device": describe(device),
        "n_real": args.n_real,
        "n_synthetic": args.n_syn,
        "folds": args.folds,
        "epochs": args.epochs,
        "score_stage_s": round(total, 2),
        # every fold model sees (K - 1) / K of the real images per epoch
        "training_images/s": round(args.epochs * (args.folds - 1) * args.n_real / total, 1),
        "reference_forward_s": round(timings["reference_forward_s"], 3),
        "feature_scoring_s": round(timings["feature_scoring_s"], 3),
        "overhead_fraction": round(added / (total - added), 4),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "scores": list(result.synthetic_scores.columns[3:]),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
