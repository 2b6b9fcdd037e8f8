"""DVC stage `train`: the curriculum (warmup, JSD threshold ramp, gate, class-balanced batches).

Reads params sections `curriculum` and `train`, ingest's array and manifest, and the score
stage's data/dataset.csv (all checked first: entromix.common.stage_io). Writes, as one set (and the
resume state after every epoch):
  models/train/best.pt        weights of the epoch with the best train.select_metric on val
  models/train/last.pt        weights after the last epoch
  models/train/checkpoints/resume.pt   the full training state after every epoch (DVC persist:
                              a killed run continues from here on the next `dvc repro`)
  models/train/run.json       the settings of this run, the device, the versions and the timings
  plots/train/history.csv     one row per epoch: tau, admitted synthetic, losses, val metrics, speed
                              (also rewritten after every epoch, so `dvc plots show` follows a run)
  dvclive/train/              the DVCLive log, a step per epoch (metrics.json: the latest values, read
                              by `dvc exp show` while the stage runs; plots/metrics/*.tsv: the series);
                              a resumed run continues it (DVC persist)
  metrics/train.json          best and final validation metrics, the curriculum's end state and,
                              where ingest.tiers_csv gives the synthetic tiers, the synthetic images
                              eligible at the end and ever used, per tier (measurement only)

With train.nproc_per_node * train.nnodes > 1 the script checks its inputs, then runs itself as
that many processes through torchrun (entromix.common.distributed); rank 0 writes everything.
"""

import os
import platform
import sys
from pathlib import Path

import pandas as pd
import torch

from entromix.common.atomic import atomic_paths, json_text
from entromix.common.device import describe, resolve_device
from entromix.common.distributed import (
    World,
    init_world,
    launch,
    needs_launch,
    shutdown,
    stop_quietly_when_a_peer_dies,
)
from entromix.common.live import LiveLog
from entromix.common.params import load_params, section, to_dict
from entromix.common.provenance import git_revision, versions
from entromix.common.stage import run_stage, stage_args
from entromix.common.stage_io import DATASET, PREPARED, Prepared, load_dataset, load_prepared
from entromix.common.torch_files import save_torch_file
from entromix.training.config import TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loop import train_curriculum
from entromix.training.report import (
    best_epoch_line,
    checkpoint_payload,
    history_frame,
    live_values,
    train_metrics,
)
from entromix.training.result import TrainResult
from entromix.training.resume import run_fingerprint
from entromix.training.table import TrainingTable, synthetic_tiers, training_table, with_tiers, with_unlabelled

MODELS = Path("models/train")
HISTORY = Path("plots/train/history.csv")
METRICS = Path("metrics/train.json")
LIVE = Path("dvclive/train")


class EpochOutputs:
    """What the stage writes after every epoch, so that a running stage can be followed:
    history.csv (`dvc plots show`) and the DVCLive log (`dvc exp show`, `dvc plots show`)."""

    def __init__(self) -> None:
        self.live: LiveLog | None = None

    def start(self, history: list[dict]) -> None:
        """Before the first epoch: a fresh log, or the resumed run's log continued after ``history``."""
        self.live = LiveLog(LIVE, [live_values(row) for row in history])

    def __call__(self, history: list[dict], model: torch.nn.Module, is_best: bool) -> None:
        with atomic_paths(HISTORY) as (path,):
            history_frame(history).to_csv(path, index=False)
        if self.live is not None:
            self.live.log(history[-1]["epoch"], live_values(history[-1]))

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def main() -> None:
    args = stage_args(__doc__)
    params = load_params(args.params)
    curriculum = section(params, "curriculum", CurriculumConfig, args.params)
    config = section(params, "train", TrainConfig, args.params)
    curriculum.check_epochs(config.epochs)
    device = resolve_device(config.device, "train.device")
    prepared = load_prepared(PREPARED)
    manifest, images = prepared.manifest, prepared.images
    table = training_table(images, manifest, load_dataset(DATASET, prepared), str(DATASET))
    tiers = synthetic_tiers(table, prepared.tiers)
    table = with_tiers(table, tiers)  # read only by the oracle_gate diagnostic and the per-tier metrics
    if curriculum.pseudo_labels:  # self-training: the unlabelled real images join as gated rows
        table = with_unlabelled(table, images, manifest, prepared.config.get("class_map", {}), prepared.labels)
    val = manifest[(manifest["split"] == "val") & (manifest["is_syn"] == 0)]
    if needs_launch(config.nproc_per_node, config.nnodes):
        launch(__file__, ["--params", args.params], config.nproc_per_node, config.nnodes, config.rdzv_endpoint, "train")
        return
    world, device = init_world(device)
    if not world.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - rank 0 reports; errors still reach stderr
    print(_banner(config, curriculum, table, len(val), device, world))
    inputs = [DATASET, PREPARED / "manifest.csv"] + [p for p in [PREPARED / "synthetic_tiers.csv"] if p.exists()]
    outputs = EpochOutputs()  # rank 0 only: train_curriculum calls it there
    with stop_quietly_when_a_peer_dies(world, "train"):
        result = train_curriculum(
            config,
            curriculum,
            table,
            images[val["id"].to_numpy()],
            val["label"].to_numpy(),
            device,
            on_epoch=outputs,
            resume_path=MODELS / "checkpoints" / "resume.pt",  # read only with train.resume
            fingerprint=run_fingerprint(curriculum, config, inputs, images.shape),
            on_start=outputs.start,
            world=world,
            label_space=prepared.label_space,
        )
    outputs.close()
    if not world.is_main:
        shutdown(world)
        return
    _save(result, config, curriculum, prepared, tiers, device, world)
    shutdown(world)


def _banner(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    n_val: int,
    device: torch.device,
    world: World,
) -> str:
    """The stage's first line: the model, the schedule, the data and the device."""
    return (
        f"entromix train: {config.model} at {config.image_size}px, {config.epochs} epochs ({curriculum.warmup_epochs} "
        f"warmup), {config.optimizer} lr {config.lr}; strategy {curriculum.strategy}; {table.n_real} real + "
        f"{table.n_synthetic} synthetic"
        + (f" + {table.n_unlabelled} unlabelled (self-training)" if table.n_unlabelled else "")
        + f" training images, {n_val} real val; {curriculum.gate} gate, "
        f"tau {curriculum.jsd_start} -> {curriculum.jsd_end} bits ({curriculum.pacing}); device {describe(device)}"
        + (f" x {world.size} processes" if world.distributed else "")
    )


def _save(
    result: TrainResult,
    config: TrainConfig,
    curriculum: CurriculumConfig,
    prepared: Prepared,
    tiers: pd.Series | None,
    device: torch.device,
    world: World,
) -> None:
    """Rank 0's outputs, written as one set: best.pt, last.pt, history.csv, metrics and run.json."""
    history = history_frame(result.history)
    run = {
        "curriculum": to_dict(curriculum),
        "train": to_dict(config),
        "device": describe(device),
        "processes": world.size,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "best_epoch": result.best_epoch,
        "seconds": round(float(history["epoch_seconds"].sum()), 1),
        "median_images_per_s": round(float(history["images_per_s"].median()), 1),
    }
    with atomic_paths(MODELS / "best.pt", MODELS / "last.pt", HISTORY, METRICS, MODELS / "run.json") as tmp:
        best, last, history_csv, metrics_json, run_json = tmp
        made_by = {
            "params": {"curriculum": to_dict(curriculum), "train": to_dict(config)},
            "git_revision": git_revision(),
            **versions(),
        }
        for path, state, row in (
            (best, result.best_state, result.best_val),
            (last, result.last_state, result.history[-1]),
        ):
            save_torch_file(checkpoint_payload(state, row, config, prepared.labels, prepared.config, made_by), path)
        history.to_csv(history_csv, index=False)
        metrics_json.write_text(json_text(train_metrics(result, config, curriculum, tiers)))
        run_json.write_text(json_text(run))
    print(best_epoch_line(result, config, history))


if __name__ == "__main__":
    run_stage("train", main, live_outputs=(HISTORY, LIVE))
