"""DVC stage `score`: scorer (K-fold, real train only) -> per-image JSD.

Reads params section `score` and ingest's outputs (checked: entromix.common.stage_io). Writes, as one set:
  data/dataset.csv                    filename,is_syn,jsd_score,label,split,p_true,predicted,fold,id
                                      (a synthetic row's jsd_score: the gate's score, score.synthetic_score)
  data/synthetic_scores.csv           id,filename,label and every score of each synthetic image
                                      (ensemble = reference JSD, knn, mahalanobis, rank_mean; larger = worse)
  metrics/score.json                  out-of-fold accuracy/AUC, mean JSD, tier AUROCs when known
  plots/score/jsd_histogram.csv       fraction of images per JSD bin (dvc plots)
  plots/score/jsd_distribution.png    the same as a figure
and, while it trains, the DVCLive log dvclive/score/ (one step per epoch of each fold model, in
order: fold, epoch, loss, lr, training recall of the malignant (positive) labels, images/s).

With score.nproc_per_node > 1 the script checks its inputs, then runs itself as that many
processes through torchrun (entromix.common.distributed): fold k trains in process k mod N, and
process 0 collects the folds and writes everything (its own folds' epochs in the live log).

Every finished fold model (and the AUM model) is kept, per fingerprint of the settings, data and
code, in the project's .dvc/tmp/entromix-score/ (not a DVC output), so a run stopped by Ctrl-C or
SIGKILL continues at the next model with the same results, and a setting that ran before is
rebuilt from them without training (the stage's own run cache: DVC's does not keep stages with
persistent outputs; entromix.scoring.fold_resume).
"""

import os
import sys
from pathlib import Path

import pandas as pd

from entromix.common.atomic import atomic_paths, json_text
from entromix.common.device import describe, resolve_device
from entromix.common.distributed import init_world, launch, needs_launch, shutdown, stop_quietly_when_a_peer_dies
from entromix.common.live import LiveLog
from entromix.common.params import load_params, section
from entromix.common.stage import run_stage, stage_args
from entromix.common.stage_io import DATASET, PREPARED, SYNTHETIC_SCORES_CSV, load_prepared
from entromix.modeling.fit import EpochStats
from entromix.scoring.config import ScoreConfig
from entromix.scoring.fold_resume import FoldStore, prune, score_fingerprint, store_directory, store_root
from entromix.scoring.jsd_plots import jsd_groups, jsd_histogram_table, plot_jsd_distribution
from entromix.scoring.metrics import score_metrics
from entromix.scoring.out_of_fold import ScoreResult, score_training_images

METRICS = Path("metrics/score.json")
PLOTS = Path("plots/score")
LIVE = Path("dvclive/score")


def scorer_values(k: int, epoch: int, stats: EpochStats) -> dict:
    """One scorer epoch in the live log: ``fold`` counts from 1 (folds + 1: the area-under-the-margin model)."""
    return {
        "fold": k + 1,
        "epoch": epoch + 1,
        "scorer_loss": stats.loss,
        "scorer_train_recall_malignant": stats.recall_positive,
        "scorer_lr": stats.lr,
        "scorer_images_per_s": stats.images_per_s,
    }


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "score", ScoreConfig, args.params)
    device = resolve_device(config.device, "score.device")
    prepared = load_prepared(PREPARED)
    manifest, tiers, images = prepared.manifest, prepared.tiers, prepared.images
    n_real = int(((manifest["is_syn"] == 0) & (manifest["split"] == "train")).sum())
    n_syn = int((manifest["is_syn"] == 1).sum())
    if needs_launch(config.nproc_per_node, 1):
        launch(__file__, ["--params", args.params], config.nproc_per_node, 1, "", "score")
        return
    world, device = init_world(device)
    fingerprint = score_fingerprint(config, PREPARED, device)
    store = FoldStore(store_directory(fingerprint), fingerprint)
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - process 0 reports; errors still reach stderr
    print(
        f"entromix score: {config.folds}-fold {config.model} at {config.image_size}px, {config.epochs} epochs, "
        f"on {n_real} real training images; scoring them out-of-fold and {n_syn} synthetic; device {describe(device)}"
    )
    # one step per epoch of each model: fold k's epoch e is step k * epochs + e. Opened (which clears
    # the previous run's log) at the first finished epoch, so a stage that stops on bad input or bad
    # weights before training leaves the previous log as it was.
    live: list[LiveLog] = []

    def log_epoch(k: int, epoch: int, stats: EpochStats) -> None:
        if world.is_main:
            if not live:
                live.append(LiveLog(LIVE))
            live[0].log(k * config.epochs + epoch, scorer_values(k, epoch, stats))

    with stop_quietly_when_a_peer_dies(world, "score"):
        result = score_training_images(
            config,
            images,
            manifest,
            device,
            on_epoch=log_epoch,
            world=world,
            label_space=prepared.label_space,
            resume=store,
        )
    for log in live:
        log.close()
    if result is None:  # a process other than 0: its folds went to process 0
        shutdown(world)
        return
    metrics = score_metrics(result, tiers, label_space=prepared.label_space)
    print_summary(metrics["score"], config.synthetic_score)
    write_outputs(result, metrics, tiers)
    prune(store_root())  # the finished models stay: the next run of these settings trains nothing
    shutdown(world)


def print_summary(m: dict, synthetic_score: str) -> None:
    """The stage's closing lines: the scorer's out-of-fold quality, the mean JSDs and, with known
    tiers, how well each score ranks them (``m``: metrics/score.json's ``score``)."""
    print(
        f"entromix score: out-of-fold accuracy {m['oof_accuracy']}, AUC {m['oof_auc']}, temperature "
        f"{m['temperature']}; mean JSD real {m['real_jsd_mean']}, synthetic {m['synthetic_jsd_mean']}; "
        f"the gate sorts synthetic images by {synthetic_score}"
    )
    for name, auroc in m.get("tier_auroc_by_score", {}).items():
        print(
            f"entromix score: {name:<11} AUROC hallucinated vs good {auroc['hallucinated_vs_good']}, "
            f"degraded vs good {auroc['degraded_vs_good']}"
        )


def write_outputs(result: ScoreResult, metrics: dict, tiers: pd.DataFrame) -> None:
    """Every output of the stage, written as one set (entromix.common.atomic)."""
    groups = jsd_groups(result.dataset, tiers)
    paths = (DATASET, SYNTHETIC_SCORES_CSV, METRICS, PLOTS / "jsd_histogram.csv", PLOTS / "jsd_distribution.png")
    with atomic_paths(*paths) as tmp:
        dataset_csv, scores_csv, metrics_json, histogram_csv, figure = tmp
        result.dataset.round({"jsd_score": 6, "p_true": 6}).to_csv(dataset_csv, index=False, encoding="utf-8")
        result.synthetic_scores.to_csv(scores_csv, index=False, encoding="utf-8", float_format="%.6g")
        metrics_json.write_text(json_text(metrics))
        jsd_histogram_table(groups).to_csv(histogram_csv, index=False)
        plot_jsd_distribution(groups, figure)


if __name__ == "__main__":
    run_stage("score", main, live_outputs=(LIVE,))
