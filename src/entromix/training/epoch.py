"""One epoch of a training run: the gate's threshold, re-scoring and pseudo-labelling when due, the
batches, one training pass, validation, and the epoch's history row (:func:`run_epoch`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from entromix.common.distributed import World, all_reduce_sum, broadcast_from_main, shard
from entromix.modeling.fit import EpochStats, predict_logits, train_epoch
from entromix.modeling.metrics import binary_metrics
from entromix.training.checkpoints import state_to_cpu
from entromix.training.curriculum import p_true_equivalent, threshold
from entromix.training.gate import within
from entromix.training.pseudo_labels import NOT_ACCEPTED
from entromix.training.run import TrainingRun
from entromix.training.sampler import EpochBatches
from entromix.training.selection import is_better, selectable
from entromix.training.synthetic_pool import SyntheticPool


def run_epoch(run: TrainingRun, epoch: int, log: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """Gate, batches, one training pass and validation for ``epoch``; returns its history row and
    whether it is the best so far."""
    config, curriculum, pool = run.config, run.curriculum, run.pool
    tau = threshold(epoch, config.epochs, curriculum)
    _relabel(run, epoch, tau, log)
    plan = pool.epoch(epoch, tau)
    if config.class_weights == "mix":
        run.criterion.set_class_weights(pool.mix_class_weights(plan, tau, run.label_space.num_classes))
    lr = run.optim.param_groups[0]["lr"]

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return run.criterion(logits, run.labels[idx], run.is_syn[idx], pool.device_scores[idx], tau)

    start = time.perf_counter()
    stats = train_epoch(
        run.model,
        [torch.from_numpy(shard(rows, run.world)) for rows in plan.batches],  # this rank's part of each batch
        run.images,
        loss_fn,
        run.optim,
        run.sched,
        run.prep,
        run.device,
        targets=run.labels,
        positive=run.label_space.positive,
        average=run.average,
    )
    loss, images, recall = _global_stats(stats, run.world)
    val = broadcast_from_main(_validate(run) if run.world.is_main else None, run.world)
    eligible_synthetic, eligible_pseudo = pool.eligible_counts(tau)
    pseudo = _pseudo_columns(pool, plan, tau, eligible_pseudo)
    row = {
        "epoch": epoch,
        "phase": "warmup" if tau is None else "ramp",
        "tau": tau,
        "p_true_at_tau": p_true_equivalent(tau),
        "eligible_synthetic": eligible_synthetic,
        "admitted_synthetic": pool.admitted(plan, tau),
        "train_loss": loss,
        **val,
        "lr": lr,
        "epoch_seconds": time.perf_counter() - start,
        "train_images": images,
        "images_per_s": images / stats.seconds,
        "train_recall_malignant": recall,  # over the epoch's batches (every rank's), real and synthetic
        **pseudo,
    }
    run.history.append(row)
    is_best = selectable(epoch, config.epochs, curriculum) and is_better(config.select_metric, row, run.best_row)
    if is_best:
        run.best_row, run.best_state = row, state_to_cpu(run.evaluated.state_dict())
    return row, is_best


def _relabel(run: TrainingRun, epoch: int, tau: float | None, log: Callable[[str], None]) -> None:
    """Before ``epoch``: re-score the synthetic images and pseudo-label the unlabelled ones when due."""
    config, curriculum, pool = run.config, run.curriculum, run.pool
    if curriculum.rescores_at(epoch) and pool.n_syn:
        pool.rescore(run.evaluated, run.images, run.val_x, run.val_y, config.image_size, run.prep.channels_last)
        log(
            f"entromix train: re-scored {pool.n_syn} synthetic images with the current model before epoch "
            f"{epoch + 1}; {int(within(pool.synthetic_scores, tau or 0.0).sum())} now have jsd <= tau"
        )
    if curriculum.pseudo_labels_at(epoch) and table_has_unlabelled(pool):
        _pseudo_label(run, epoch, tau, log)


def _pseudo_columns(pool: SyntheticPool, plan: EpochBatches, tau: float | None, eligible_pseudo: int) -> dict[str, Any]:
    """The history columns of the unlabelled pool (none without one)."""
    if not table_has_unlabelled(pool):
        return {}
    return {
        "pseudo_accepted": int((pool.scores[pool.unlabelled] < NOT_ACCEPTED).sum()),
        "eligible_pseudo": eligible_pseudo,
        "admitted_pseudo": pool.admitted(plan, tau, "unlabelled"),
    }


def table_has_unlabelled(pool: SyntheticPool) -> bool:
    return pool.unlabelled.stop > pool.unlabelled.start


def _pseudo_label(run: TrainingRun, epoch: int, tau: float | None, log: Callable[[str], None]) -> None:
    """Label the unlabelled images with the current model (rank 0's labelling on every rank: with
    per-process BatchNorm statistics the ranks' models could disagree)."""
    pool = run.pool
    mine = None
    if run.world.is_main:
        mine = pool.label_unlabelled(
            run.evaluated, run.images, run.val_x, run.val_y, run.config.image_size, run.prep.channels_last
        )
    labelled = broadcast_from_main(mine, run.world)
    pool.apply_pseudo_labels(labelled)
    run.labels = torch.from_numpy(pool.table.labels).to(run.device)
    names = run.label_space.names
    per_class = ", ".join(
        f"{names[c]} {int((labelled.accepted & (labelled.labels == c)).sum())} (>= {labelled.thresholds[c]:.3f})"
        for c in range(len(names))
    )
    log(
        f"entromix train: pseudo-labelled {len(labelled.labels)} unlabelled images before epoch {epoch + 1}; "
        f"accepted per label (threshold): {per_class}; "
        f"{int(within(pool.scores[pool.unlabelled], tau if tau is not None else -1.0).sum())} have jsd <= tau"
    )


def _validate(run: TrainingRun) -> dict[str, Any]:
    """``val_loss`` (cross-entropy over the K labels) and the ``val_*`` metrics of the binary view
    (the summed probability of the positive labels) of the current model on the real validation images."""
    model = run.evaluated
    val_logits = torch.from_numpy(
        predict_logits(model, run.val_x, run.device, run.config.image_size, channels_last=run.prep.channels_last)
    )
    space = run.label_space
    probs = torch.softmax(val_logits, 1).numpy()
    metrics = binary_metrics(space.binary_targets(run.val_y.numpy()), space.positive_probability(probs))
    return {"val_loss": float(F.cross_entropy(val_logits, run.val_y)), **{f"val_{k}": v for k, v in metrics.items()}}


def _global_stats(stats: EpochStats, world: World) -> tuple[float, int, float | None]:
    """The epoch's mean loss, image count and training malignant recall over every rank (each
    rank's loss is already scaled to the global batch's mean, ``entromix.training.loss``: their
    mean is the global one)."""
    if not world.distributed:
        return stats.loss, stats.images, stats.recall_positive
    local = [stats.loss, stats.images, stats.positives, stats.true_positives]
    loss, images, positives, true_positives = all_reduce_sum(torch.tensor(local, dtype=torch.float64), world).tolist()
    return loss / world.size, int(images), (true_positives / positives if positives else None)
