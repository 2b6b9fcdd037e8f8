"""The train stage's loop: a classifier trained on real images plus the synthetic images the curriculum admits.

Per epoch ``t``: the threshold ``tau(t)`` (``entromix.training.curriculum``), the batches
(``entromix.training.synthetic_pool`` and ``.sampler``: real at the real class ratio, eligible
synthetic spread evenly), one pass with EntroMixLoss (``entromix.training.loss``) and
augmentation on the training device (``entromix.modeling.fit.train_epoch``, the loop the scorer
shares), then the validation metrics on the real validation images. The model with the best
``select_metric`` and the last one are kept; after every epoch the resume state
(``entromix.training.resume``) is written, and ``on_epoch`` observers are called.

Data path: the training table (real training rows, then the synthetic pool) and the validation
images are gathered from the prepared uint8 array once, moved to the device once (on CUDA when
they fit in half the free memory, else pinned host memory), and indexed per batch. Nothing is
decoded and no Dataset or DataLoader exists. CPU runs are deterministic for a fixed seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from entromix.common.device import generator, seed_everything
from entromix.common.errors import DataError, ParamsError
from entromix.modeling.fit import (
    BatchPrep,
    Optimizer,
    class_weights,
    make_optimizer,
    predict_logits,
    train_epoch,
    uses_channels_last,
)
from entromix.modeling.lr_schedule import warmup_cosine
from entromix.modeling.metrics import binary_metrics
from entromix.modeling.models import MODEL_NAMES, build_model, is_model_name
from entromix.training.checkpoints import state_to_cpu
from entromix.training.curriculum import CurriculumConfig, p_true_equivalent, threshold
from entromix.training.gate import within
from entromix.training.loss import EntroMixLoss
from entromix.training.report import epoch_line
from entromix.training.resume import ResumeState
from entromix.training.synthetic_pool import SyntheticPool, min_batches
from entromix.training.table import TrainingTable, place_on_device

SelectMetric = Literal["val_auc", "val_balanced_accuracy", "val_sensitivity", "val_accuracy", "val_loss"]

ClassWeights = Literal["real", "mix", "none"]

#: called after each epoch with (the history so far, resumed epochs included; the model; whether this
#: epoch is the best so far): the train stage writes its live history.csv with it
EpochObserver = Callable[[list[dict], torch.nn.Module, bool], None]

#: called once before the first epoch this process trains, with the history it continues from
#: (empty for a fresh run; the restored epochs when it resumes): the train stage opens its live log
StartObserver = Callable[[list[dict]], None]

NUM_CLASSES = 2


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of params.yaml."""

    model: str  # resnet18 | resnet50 | vit_b_16 | swin_t (torchvision, 2-class head)
    pretrained_weights: str | None  # local state_dict file; None = from scratch (never downloads)
    image_size: int  # px the model sees (the prepared array is resized on the fly when different)
    epochs: int
    min_steps: int  # optimiser steps at least over the run: small data sets get longer epochs
    batch_size: int
    optimizer: Optimizer  # sgd (reference: momentum 0.9) | adamw
    lr: float
    lr_warmup_epochs: float  # linear LR warmup, then cosine to 0 (per step)
    weight_decay: float
    label_smoothing: float  # cross-entropy label smoothing in [0, 1)
    class_weights: ClassWeights  # counts behind w_c: real training images | the epoch's mix | none
    augment: bool  # the reference's flips, rotation, affine and colour jitter, on the device
    rotate90: bool  # augment also with random quarter turns
    color_jitter: float  # strength j of brightness/contrast/saturation (1 +- j) and hue (+- j/4 turn)
    select_metric: SelectMetric  # best checkpoint by this validation metric (val_loss: lowest)
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    resume: bool  # continue an interrupted run from models/train/checkpoints/resume.pt (same settings and data)

    def __post_init__(self) -> None:
        if not is_model_name(self.model):
            raise ParamsError(
                f"train.model is {self.model!r}; choose one of {', '.join(MODEL_NAMES)}, or timm:<architecture>."
            )
        if not 16 <= self.image_size <= 1024:
            raise ParamsError(f"train.image_size must be between 16 and 1024 px, got {self.image_size}.")
        if self.epochs < 1:
            raise ParamsError(f"train.epochs must be >= 1, got {self.epochs}.")
        if self.batch_size < 2:
            raise ParamsError(
                f"train.batch_size must be >= 2 (BatchNorm needs two images per batch), got {self.batch_size}."
            )
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.color_jitter < 1:
            raise ParamsError("train.lr must be > 0, train.weight_decay >= 0 and train.color_jitter in [0, 1).")
        if self.min_steps < 0 or self.lr_warmup_epochs < 0 or not 0 <= self.label_smoothing < 1:
            raise ParamsError(
                "train.min_steps and train.lr_warmup_epochs must be >= 0 and train.label_smoothing in [0, 1)."
            )
        if self.class_weights not in ("real", "mix", "none"):
            raise ParamsError(f"train.class_weights is {self.class_weights!r}; choose real, mix or none.")


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_state: dict[str, torch.Tensor]  # CPU state_dict of the best epoch
    last_state: dict[str, torch.Tensor]
    best_val: dict[str, Any] = field(default_factory=dict)
    gate_jsd: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (n_syn,) scores the gate saw last
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n_syn,) placed in a batch in any epoch
    final_eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n_syn,) eligible at the last epoch


def _is_better(metric: SelectMetric, row: dict, best: dict | None) -> bool:
    """Higher is better (val_loss: lower); ties go to the lower validation loss, then the earlier epoch."""
    if best is None:
        return True
    sign = -1.0 if metric == "val_loss" else 1.0
    value, best_value = row[metric], best[metric]
    value = -math.inf if value is None else sign * value
    best_value = -math.inf if best_value is None else sign * best_value
    if value != best_value:
        return value > best_value
    return row["val_loss"] < best["val_loss"]


@dataclass
class _Run:
    """What one training run holds while it goes: built by :func:`_start`, advanced by :func:`_epoch`."""

    config: TrainConfig
    curriculum: CurriculumConfig
    device: torch.device
    model: torch.nn.Module
    criterion: EntroMixLoss
    optim: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    prep: BatchPrep
    pool: SyntheticPool
    images: torch.Tensor  # (N, H, W, 3) uint8: the training table
    labels: torch.Tensor  # (N,) on the device
    is_syn: torch.Tensor  # (N,) on the device
    val_x: torch.Tensor
    val_y: torch.Tensor  # (M,) CPU int64
    history: list[dict[str, Any]] = field(default_factory=list)
    best_row: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def resume_state(self, fingerprint: str) -> ResumeState:
        gen = self.prep.augment_gen
        return ResumeState(
            fingerprint=fingerprint,
            model=state_to_cpu(self.model.state_dict()),
            optimizer=self.optim.state_dict(),
            scheduler=self.sched.state_dict(),
            augment_rng=gen.get_state().cpu() if gen is not None else torch.zeros(0, dtype=torch.uint8),
            torch_rng=torch.get_rng_state(),
            history=self.history,
            best_row=self.best_row,
            best_state=self.best_state,
            gate_jsd=torch.from_numpy(self.pool.scores.copy()),
            used=torch.from_numpy(self.pool.used.copy()),
        )

    def restore(self, state: ResumeState) -> None:
        self.model.load_state_dict(state.model)
        self.optim.load_state_dict(state.optimizer)
        self.sched.load_state_dict(state.scheduler)
        if self.prep.augment_gen is not None:
            self.prep.augment_gen.set_state(state.augment_rng)  # a CPU ByteTensor for CPU and CUDA generators
        torch.set_rng_state(state.torch_rng)
        self.history, self.best_row, self.best_state = list(state.history), dict(state.best_row), dict(state.best_state)
        self.pool.set_synthetic_scores(state.scores()[self.pool.n_real :])
        self.pool.used[:] = state.used_mask()


def train_curriculum(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    device: torch.device,
    log: Callable[[str], None] = print,
    on_epoch: EpochObserver | None = None,
    resume_path: Path | None = None,
    fingerprint: str = "",
    on_start: StartObserver | None = None,
) -> TrainResult:
    """Train with the curriculum; return the per-epoch history and the best and last weights.

    Args:
        table: the training rows (``entromix.training.table.training_table``).
        val_images: uint8 (M, H, W, 3) real validation images; val_labels: (M,) int.
        on_epoch: called after each epoch with (the history so far, the model, whether the epoch
            is the best so far): the train stage writes the history with it, so ``dvc plots show``
            can follow a run.
        resume_path: after every epoch the :class:`~entromix.training.resume.ResumeState` is
            written here atomically; a run that finds a state with the same ``fingerprint``
            continues after its last finished epoch. With ``config.resume`` false an existing
            state is not read (and is overwritten by this run's first epoch).
        fingerprint: identifies the run (settings and input data); a state with another one is ignored.
        on_start: called with the history the run continues from (empty unless it resumes),
            before the first epoch it trains.
    """
    _check_inputs(config, curriculum, table, val_labels)
    run = _start(config, curriculum, table, val_images, val_labels, device, log)
    if resume_path is not None and config.resume:
        _resume(run, resume_path, fingerprint, log)
    if on_start is not None:
        on_start(list(run.history))
    for epoch in range(len(run.history), config.epochs):
        row, is_best = _epoch(run, epoch, log)
        log(epoch_line(row, config.epochs))
        if resume_path is not None:
            run.resume_state(fingerprint).save(resume_path)
        if on_epoch is not None:
            on_epoch(run.history, run.model, is_best)
    assert run.best_row is not None
    return TrainResult(
        history=run.history,
        best_epoch=run.best_row["epoch"],
        best_state=run.best_state,
        last_state=state_to_cpu(run.model.state_dict()),
        best_val=run.best_row,
        gate_jsd=run.pool.synthetic_scores.copy(),
        used=run.pool.used,
        final_eligible=run.pool.eligible_mask(threshold(config.epochs - 1, config.epochs, curriculum)),
    )


def _check_inputs(
    config: TrainConfig, curriculum: CurriculumConfig, table: TrainingTable, val_labels: np.ndarray
) -> None:
    curriculum.check_epochs(config.epochs)
    if curriculum.strategy == "oracle_gate" and (table.tiers is None or not (table.tiers[table.is_syn] != "").any()):
        raise ParamsError(
            "curriculum.strategy is 'oracle_gate' (a diagnostic) but no synthetic image has a known tier; "
            "it needs ingest.tiers_csv (filename,tier with tier 'good' for the images to admit). "
            "Use another strategy for data without tiers."
        )
    if np.unique(table.labels[~table.is_syn]).size != NUM_CLASSES or np.unique(val_labels).size != NUM_CLASSES:
        raise DataError(
            "the real training and validation images must both hold benign (0) and malignant (1) images; "
            "check ingest's split fractions and class_map."
        )


def _start(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    device: torch.device,
    log: Callable[[str], None],
) -> _Run:
    """The model, loss, optimiser, schedule, synthetic pool and device tensors of a fresh run."""
    seed_everything(config.seed)
    channels_last = uses_channels_last(config.model, device)
    model = build_model(config.model, NUM_CLASSES, config.image_size, config.pretrained_weights, "train").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    pool = SyntheticPool(
        table, curriculum, config.seed, config.batch_size, min_batches(config.min_steps, config.epochs), device
    )
    weights = (
        class_weights(table.labels[~table.is_syn], NUM_CLASSES)
        if config.class_weights != "none"
        else torch.ones(NUM_CLASSES)
    )  # "mix" starts here and is recomputed every epoch
    criterion = EntroMixLoss(weights, curriculum.loss_gate, curriculum.gate_temperature, config.label_smoothing)
    optim = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    nb = pool.sampler.num_batches
    sched = warmup_cosine(optim, config.epochs * nb, round(config.lr_warmup_epochs * nb))
    prep = BatchPrep(
        config.image_size,
        config.color_jitter,
        config.rotate90,
        channels_last,
        generator(device, config.seed + 1) if config.augment else None,
    )
    source = {"real": "real training counts", "mix": "the images each epoch's loss sees", "none": "none"}
    natural = table.n_real // config.batch_size
    log(
        f"entromix train: class weights {[round(float(w), 3) for w in weights]} (n_total / (n_classes * n_class), "
        f"{source[config.class_weights]}); {nb} batches of {config.batch_size} per epoch"
        + (f" (lengthened from {natural} to reach train.min_steps {config.min_steps})" if nb > natural else "")
    )
    return _Run(
        config=config,
        curriculum=curriculum,
        device=device,
        model=model,
        criterion=criterion.to(device),
        optim=optim,
        sched=sched,
        prep=prep,
        pool=pool,
        images=place_on_device(table.images, device),
        labels=torch.from_numpy(table.labels).to(device),
        is_syn=torch.from_numpy(table.is_syn).to(device),
        val_x=place_on_device(val_images, device),
        val_y=torch.from_numpy(np.array(val_labels, dtype=np.int64)),
    )


def _resume(run: _Run, path: Path, fingerprint: str, log: Callable[[str], None]) -> None:
    """Continue from the resume state at ``path`` when it belongs to this run and is unfinished."""
    state = ResumeState.load(path, fingerprint)
    if state is not None and len(state.history) >= run.config.epochs:
        # a finished run's state: `dvc repro -f train` means train again, not reload the end
        log(f"entromix train: {path} holds a finished run; training afresh")
        return
    if state is not None:
        run.restore(state)
        log(f"entromix train: resuming from {path} after epoch {len(run.history)}/{run.config.epochs}")


def _epoch(run: _Run, epoch: int, log: Callable[[str], None]) -> tuple[dict[str, Any], bool]:
    """Gate, batches, one training pass and validation for ``epoch``; returns its history row and
    whether it is the best so far."""
    config, curriculum, pool = run.config, run.curriculum, run.pool
    tau = threshold(epoch, config.epochs, curriculum)
    if curriculum.rescores_at(epoch) and len(pool.used):
        pool.rescore(run.model, run.images, run.val_x, run.val_y, config.image_size, run.prep.channels_last)
        log(
            f"entromix train: re-scored {len(pool.used)} synthetic images with the current model before epoch "
            f"{epoch + 1}; {int(within(pool.synthetic_scores, tau or 0.0).sum())} now have jsd <= tau"
        )
    plan = pool.epoch(epoch, tau)
    if config.class_weights == "mix":
        run.criterion.set_class_weights(pool.mix_class_weights(plan, tau, NUM_CLASSES))
    lr = run.optim.param_groups[0]["lr"]

    def loss_fn(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return run.criterion(logits, run.labels[idx], run.is_syn[idx], pool.device_scores[idx], tau)

    start = time.perf_counter()
    stats = train_epoch(
        run.model,
        [torch.from_numpy(rows) for rows in plan.batches],
        run.images,
        loss_fn,
        run.optim,
        run.sched,
        run.prep,
        run.device,
        targets=run.labels,
    )
    val_logits = torch.from_numpy(
        predict_logits(run.model, run.val_x, run.device, config.image_size, channels_last=run.prep.channels_last)
    )
    val = binary_metrics(run.val_y.numpy(), torch.softmax(val_logits, 1)[:, 1].numpy())
    row = {
        "epoch": epoch,
        "phase": "warmup" if tau is None else "ramp",
        "tau": tau,
        "p_true_at_tau": p_true_equivalent(tau),
        "eligible_synthetic": plan.eligible,
        "admitted_synthetic": pool.admitted(plan, tau),
        "train_loss": stats.loss,
        "val_loss": float(F.cross_entropy(val_logits, run.val_y)),
        **{f"val_{k}": v for k, v in val.items()},
        "lr": lr,
        "epoch_seconds": time.perf_counter() - start,
        "train_images": stats.images,
        "images_per_s": stats.images / stats.seconds,
        "train_recall_malignant": stats.recall_positive,  # over the epoch's batches, real and synthetic
    }
    run.history.append(row)
    is_best = _is_better(config.select_metric, row, run.best_row)
    if is_best:
        run.best_row, run.best_state = row, state_to_cpu(run.model.state_dict())
    return row, is_best
