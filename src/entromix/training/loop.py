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
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from entromix.common.device import DeviceName, generator, seed_everything
from entromix.common.distributed import (
    SINGLE,
    World,
    all_reduce_sum,
    broadcast_from_main,
    gather_to_main,
    shard,
    unwrap,
    wrap_model,
)
from entromix.common.errors import DataError, ParamsError
from entromix.common.labels import LabelSpace
from entromix.common.progress import Eta
from entromix.modeling.ensemble import build_ensemble
from entromix.modeling.fit import (
    BatchPrep,
    EpochStats,
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
from entromix.modeling.weight_average import WeightAverage, half_life_steps
from entromix.training.checkpoints import state_to_cpu
from entromix.training.curriculum import CurriculumConfig, p_true_equivalent, threshold
from entromix.training.gate import within
from entromix.training.loss import EntroMixLoss
from entromix.training.pseudo_labels import NOT_ACCEPTED, pseudo_label_summary
from entromix.training.report import epoch_line
from entromix.training.resume import ResumeState
from entromix.training.synthetic_pool import SyntheticPool, min_batches
from entromix.training.table import TrainingTable, place_on_device

SelectMetric = Literal["val_auc", "val_balanced_accuracy", "val_sensitivity", "val_accuracy", "val_loss"]

ClassWeights = Literal["real", "mix", "none"] | list[float]  # or one weight per label (the focal loss's alpha)

#: called after each epoch with (the history so far, resumed epochs included; the model; whether this
#: epoch is the best so far): the train stage writes its live history.csv with it
EpochObserver = Callable[[list[dict], torch.nn.Module, bool], None]

#: called once before the first epoch this process trains, with the history it continues from
#: (empty for a fresh run; the restored epochs when it resumes): the train stage opens its live log
StartObserver = Callable[[list[dict]], None]

#: two labels, label 1 malignant: the default label space
BINARY = LabelSpace(("benign", "malignant"), (1,))


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section of params.yaml."""

    model: str  # resnet18 | resnet50 | vit_b_16 | swin_t (torchvision, a K-class head)
    pretrained_weights: str | None  # local state_dict file; None = from scratch (never downloads)
    image_size: int  # px the model sees (the prepared array is resized on the fly when different)
    ensemble: int  # members trained side by side from their own initial weights, used as one (1 = one network)
    epochs: int
    min_steps: int  # optimiser steps at least over the run: small data sets get longer epochs
    batch_size: int
    optimizer: Optimizer  # sgd (reference: momentum 0.9) | adamw
    lr: float
    lr_warmup_epochs: float  # linear LR warmup, then cosine to 0 (per step)
    weight_decay: float
    label_smoothing: float  # cross-entropy label smoothing in [0, 1)
    class_weights: ClassWeights  # counts behind w_c: real training images | the epoch's mix | none | [w_0, ...]
    loss: Literal["ce", "focal"]  # per-image loss inside EntroMixLoss's gate: cross-entropy | focal
    focal_gamma: float  # focal loss: (1 - p_true)^gamma times the cross-entropy; 0 = cross-entropy
    augment: bool  # the reference's flips, rotation, affine and colour jitter, on the device
    rotate90: bool  # augment also with random quarter turns
    color_jitter: float  # strength j of brightness/contrast/saturation (1 +- j) and hue (+- j/4 turn)
    ema_half_life: float  # epochs: validate and keep the moving average of the weights (0 = the last step's weights)
    select_metric: SelectMetric  # best checkpoint by this validation metric (val_loss: lowest)
    seed: int
    device: DeviceName
    resume: bool  # continue an interrupted run from models/train/checkpoints/resume.pt (same settings and data)
    early_stopping_patience: int | None  # stop after this many epochs without a better select_metric; None = off
    nproc_per_node: int  # processes per node (torchrun + DistributedDataParallel when > 1)
    nnodes: int  # nodes; > 1 needs rdzv_endpoint reachable from every node
    rdzv_endpoint: str  # host:port of the c10d rendezvous for several nodes (unused on one node)

    def __post_init__(self) -> None:
        if not is_model_name(self.model):
            raise ParamsError(
                f"train.model is {self.model!r}; choose one of {', '.join(MODEL_NAMES)}, or timm:<architecture>."
            )
        if not 16 <= self.image_size <= 1024:
            raise ParamsError(f"train.image_size must be between 16 and 1024 px, got {self.image_size}.")
        if self.epochs < 1:
            raise ParamsError(f"train.epochs must be >= 1, got {self.epochs}.")
        if not 1 <= self.ensemble <= 32:
            raise ParamsError(f"train.ensemble must be between 1 (one network) and 32 members, got {self.ensemble}.")
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
        if self.ema_half_life < 0:
            raise ParamsError(f"train.ema_half_life must be >= 0 epochs (0 = off), got {self.ema_half_life}.")
        if isinstance(self.class_weights, list):
            if not self.class_weights or min(self.class_weights) <= 0:
                raise ParamsError(
                    f"train.class_weights is {self.class_weights}; a list needs one weight > 0 per label."
                )
        elif self.class_weights not in ("real", "mix", "none"):
            raise ParamsError(
                f"train.class_weights is {self.class_weights!r}; choose real, mix, none or a list of one weight "
                "per label."
            )
        if self.focal_gamma < 0:
            raise ParamsError(f"train.focal_gamma must be >= 0 (0 = cross-entropy), got {self.focal_gamma}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ParamsError(
                f"train.early_stopping_patience must be null (off) or >= 1 epochs, got {self.early_stopping_patience}."
            )
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ParamsError("train.nproc_per_node and train.nnodes must be >= 1 (1 and 1: one process).")
        if self.nnodes > 1 and not re.fullmatch(r"[^\s:]+:\d+", self.rdzv_endpoint):
            raise ParamsError(
                f"train.nnodes is {self.nnodes}, so train.rdzv_endpoint must be host:port of a node every node "
                f"can reach (for example node0.cluster:29400), got {self.rdzv_endpoint!r}."
            )
        processes = self.nproc_per_node * self.nnodes
        if self.batch_size < 2 * processes:
            raise ParamsError(
                f"train.batch_size {self.batch_size} is the global batch, shared by {processes} processes: each "
                "needs at least 2 images (BatchNorm). Raise train.batch_size or lower train.nproc_per_node."
            )


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
    pseudo: dict | None = None  # self-training: the unlabelled pool at the end (pseudo_labels.pseudo_label_summary)


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
    average: WeightAverage  # the moving average of the weights (or the model itself with ema_half_life 0)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_row: dict[str, Any] | None = None
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    world: World = SINGLE  # the processes training together (rank 0 writes)
    label_space: LabelSpace = BINARY  # the K labels and the binary view the val metrics read

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network that is validated, kept in the checkpoints and used to re-score and
        pseudo-label: the moving average of the weights (``train.ema_half_life``), else the model."""
        return self.average.module

    def rng_states(self) -> dict[str, torch.Tensor]:
        gen = self.prep.augment_gen
        augment = gen.get_state().cpu() if gen is not None else torch.zeros(0, dtype=torch.uint8)
        return {"augment": augment, "torch": torch.get_rng_state()}

    def resume_state(self, fingerprint: str) -> ResumeState:
        """The state to save; every rank calls it (it gathers each rank's generators to rank 0)."""
        rngs = self.rng_states()
        return ResumeState(
            fingerprint=fingerprint,
            model=state_to_cpu(unwrap(self.model).state_dict()),
            average=state_to_cpu(self.average.state_dict()),
            optimizer=self.optim.state_dict(),
            scheduler=self.sched.state_dict(),
            augment_rng=rngs["augment"],
            torch_rng=rngs["torch"],
            history=self.history,
            best_row=self.best_row,
            best_state=self.best_state,
            gate_jsd=torch.from_numpy(self.pool.scores.copy()),
            used=torch.from_numpy(self.pool.used.copy()),
            labels=torch.from_numpy(self.pool.table.labels.copy()),
            rank_rngs=(gather_to_main(rngs, self.world) or []) if self.world.distributed else [],
        )

    def restore(self, state: ResumeState) -> None:
        unwrap(self.model).load_state_dict(state.model)
        self.average.load_state_dict(state.average)
        self.optim.load_state_dict(state.optimizer)
        self.sched.load_state_dict(state.scheduler)
        rngs = state.rank_rngs[self.world.rank] if self.world.distributed else {}
        if self.prep.augment_gen is not None:  # a CPU ByteTensor for CPU and CUDA generators
            self.prep.augment_gen.set_state(rngs.get("augment", state.augment_rng))
        torch.set_rng_state(rngs.get("torch", state.torch_rng))
        self.history = list(state.history)
        # None while no epoch could be selected yet (a curriculum's warmup: ``selectable``)
        self.best_row = None if state.best_row is None else dict(state.best_row)
        self.best_state = dict(state.best_state or {})
        self.pool.set_scores(state.scores())
        self.pool.used[:] = state.used_mask()
        self.pool.table.labels[:] = state.labels.numpy()
        self.labels = torch.from_numpy(self.pool.table.labels).to(self.device)


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
    world: World = SINGLE,
    label_space: LabelSpace = BINARY,
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
        world: the processes training together (``entromix.common.distributed``): each takes its
            shard of every global batch; only rank 0 logs, saves the resume state and calls
            ``on_start`` and ``on_epoch``.
        label_space: the K labels and the positive ones: the model has K outputs, and the
            validation metrics (``val_auc``, ``val_sensitivity``, ...) are the binary view's (the
            summed probability of the positive labels).
    """
    _check_inputs(config, curriculum, table, val_labels, label_space)
    if not world.is_main:
        log = _quiet
    run = _start(config, curriculum, table, val_images, val_labels, device, log, world, label_space)
    if resume_path is not None and config.resume:
        _resume(run, resume_path, fingerprint, log)
    if on_start is not None and world.is_main:
        on_start(list(run.history))
    eta = Eta(config.epochs)
    eta.skip(len(run.history))  # resumed epochs: done, but not timed
    for epoch in range(len(run.history), config.epochs):
        row, is_best = _epoch(run, epoch, log)
        log(f"{epoch_line(row, config.epochs)} | {eta.step(count=False)}")
        if resume_path is not None:
            state = run.resume_state(fingerprint)  # a collective: every rank builds it
            if world.is_main:
                state.save(resume_path)
        if on_epoch is not None and world.is_main:
            on_epoch(run.history, run.evaluated, is_best)
        if epoch + 1 < config.epochs and stops_early(run.history, run.best_row, config.early_stopping_patience):
            log(
                f"entromix train: early stopping after epoch {epoch + 1}/{config.epochs}: no better "
                f"{config.select_metric} for {config.early_stopping_patience} epochs "
                f"(best: epoch {run.best_row['epoch'] + 1})"
            )
            break
    assert run.best_row is not None
    return TrainResult(
        history=run.history,
        best_epoch=run.best_row["epoch"],
        best_state=run.best_state,
        last_state=state_to_cpu(run.evaluated.state_dict()),
        best_val=run.best_row,
        gate_jsd=run.pool.synthetic_scores.copy(),
        used=run.pool.used[: run.pool.n_syn],
        final_eligible=run.pool.eligible_mask(threshold(len(run.history) - 1, config.epochs, curriculum))[
            : run.pool.n_syn
        ],
        pseudo=_pseudo_summary(run) if table.n_unlabelled else None,
    )


def _pseudo_summary(run: _Run) -> dict:
    """The unlabelled pool at the end of training: pseudo-labels accepted, used and, where known, right."""
    pool, table = run.pool, run.pool.table
    rows = pool.unlabelled
    return pseudo_label_summary(
        table.labels[rows],
        pool.scores[rows] < NOT_ACCEPTED,
        pool.used[pool.n_syn :],
        None if table.hidden is None or not (table.hidden[rows] >= 0).any() else table.hidden[rows],
        list(run.label_space.names),
    )


def stops_early(history: list[dict], best_row: dict | None, patience: int | None) -> bool:
    """``train.early_stopping_patience`` epochs have passed since the best epoch. tau and the LR
    schedule keep referring to the planned ``train.epochs``: stopping early only cuts the run."""
    return patience is not None and best_row is not None and history[-1]["epoch"] - best_row["epoch"] >= patience


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


def _check_inputs(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    val_labels: np.ndarray,
    label_space: LabelSpace,
) -> None:
    curriculum.check_epochs(config.epochs)
    if curriculum.pseudo_labels and not table.n_unlabelled:
        raise ParamsError(
            "curriculum.pseudo_labels is true but there are no unlabelled images: set ingest.unlabelled_dir "
            "(a folder of real images without labels), or ingest.scarce_unlabelled with scarce_train_images, or "
            "set curriculum.pseudo_labels: false."
        )
    if curriculum.strategy == "oracle_gate" and (table.tiers is None or not (table.tiers[table.is_syn] != "").any()):
        raise ParamsError(
            "curriculum.strategy is 'oracle_gate' (a diagnostic) but no synthetic image has a known tier; "
            "it needs ingest.tiers_csv (filename,tier with tier 'good' for the images to admit). "
            "Use another strategy for data without tiers."
        )
    if isinstance(config.class_weights, list) and len(config.class_weights) != label_space.num_classes:
        raise ParamsError(
            f"train.class_weights lists {len(config.class_weights)} weights but there are {label_space.num_classes} "
            f"labels ({', '.join(label_space.names)}); give one per label, in that order."
        )
    real = table.labels[~table.is_syn]
    missing = [name for c, name in enumerate(label_space.names) if not (real == c).any()]
    if missing or np.unique(label_space.binary_targets(val_labels)).size != 2:
        raise DataError(
            f"the real training images must hold every label ({', '.join(label_space.names)}; none of "
            f"{', '.join(missing) or '-'}) and the validation images both sides of the binary view "
            f"({label_space.positive_title} and the rest); check ingest's split fractions and class_map."
        )


def _start(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    device: torch.device,
    log: Callable[[str], None],
    world: World = SINGLE,
    label_space: LabelSpace = BINARY,
) -> _Run:
    """The model, loss, optimiser, schedule, synthetic pool and device tensors of a fresh run (the
    model wrapped in DistributedDataParallel across ``world``)."""
    seed_everything(config.seed)
    channels_last = uses_channels_last(config.model, device)
    num_classes = label_space.num_classes
    model = build_ensemble(
        lambda: build_model(config.model, num_classes, config.image_size, config.pretrained_weights, "train"),
        config.ensemble,
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = wrap_model(model, world, device)
    pool = SyntheticPool(
        table, curriculum, config.seed, config.batch_size, min_batches(config.min_steps, config.epochs), device
    )
    if isinstance(config.class_weights, list):  # given per label (checked against K in _check_inputs)
        weights = torch.tensor(config.class_weights, dtype=torch.float32)
    elif config.class_weights == "none":
        weights = torch.ones(num_classes)
    else:  # "mix" starts here and is recomputed every epoch
        weights = class_weights(table.labels[~table.is_syn], num_classes)
    criterion = EntroMixLoss(
        weights,
        curriculum.loss_gate,
        curriculum.gate_temperature,
        config.label_smoothing,
        world=world,
        loss=config.loss,
        focal_gamma=config.focal_gamma,
    )
    optim = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    nb = pool.sampler.num_batches
    sched = warmup_cosine(optim, config.epochs * nb, round(config.lr_warmup_epochs * nb))
    average = WeightAverage(unwrap(model), half_life_steps(config.ema_half_life, nb))
    prep = BatchPrep(
        config.image_size,
        config.color_jitter,
        config.rotate90,
        channels_last,
        # each rank draws its own augmentations (rank 0 as a single process does)
        generator(device, config.seed + 1 + 7919 * world.rank) if config.augment else None,
    )
    source = {"real": "real training counts", "mix": "the images each epoch's loss sees", "none": "none"}
    natural = table.n_real // config.batch_size
    origin = source.get(str(config.class_weights), "given in train.class_weights")
    log(
        f"entromix train: class weights {[round(float(w), 3) for w in weights]} (n_total / (n_classes * n_class), "
        f"{origin}); {nb} batches of {config.batch_size} per epoch"
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
        average=average,
        world=world,
        label_space=label_space,
    )


def _resume(run: _Run, path: Path, fingerprint: str, log: Callable[[str], None]) -> None:
    """Continue from the resume state at ``path`` when it belongs to this run and is unfinished."""
    state = ResumeState.load(path, fingerprint)
    patience = run.config.early_stopping_patience
    if state is not None and (
        len(state.history) >= run.config.epochs or stops_early(state.history, state.best_row, patience)
    ):
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
    if curriculum.rescores_at(epoch) and pool.n_syn:
        pool.rescore(run.evaluated, run.images, run.val_x, run.val_y, config.image_size, run.prep.channels_last)
        log(
            f"entromix train: re-scored {pool.n_syn} synthetic images with the current model before epoch "
            f"{epoch + 1}; {int(within(pool.synthetic_scores, tau or 0.0).sum())} now have jsd <= tau"
        )
    if curriculum.pseudo_labels_at(epoch) and table_has_unlabelled(pool):
        _pseudo_label(run, epoch, tau, log)
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
    pseudo = {}
    if table_has_unlabelled(pool):
        pseudo = {
            "pseudo_accepted": int((pool.scores[pool.unlabelled] < NOT_ACCEPTED).sum()),
            "eligible_pseudo": eligible_pseudo,
            "admitted_pseudo": pool.admitted(plan, tau, "unlabelled"),
        }
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
    is_best = selectable(epoch, config.epochs, curriculum) and _is_better(config.select_metric, row, run.best_row)
    if is_best:
        run.best_row, run.best_state = row, state_to_cpu(run.evaluated.state_dict())
    return row, is_best


def selectable(epoch: int, epochs: int, curriculum: CurriculumConfig) -> bool:
    """Whether ``epoch`` may become ``best.pt``: every epoch of a run that never admits a gated
    image (``real_only``), else only the epochs the gate is open (a curriculum's warmup epochs
    train on real images alone: a model from them is a ``real_only`` model under the curriculum's name)."""
    return threshold(epoch, epochs, curriculum) is not None or threshold(epochs - 1, epochs, curriculum) is None


def table_has_unlabelled(pool: SyntheticPool) -> bool:
    return pool.unlabelled.stop > pool.unlabelled.start


def _pseudo_label(run: _Run, epoch: int, tau: float | None, log: Callable[[str], None]) -> None:
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


def _validate(run: _Run) -> dict[str, Any]:
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
