"""One training run's state: :class:`TrainingRun` (model, loss, optimiser, schedule, synthetic pool,
device tensors, history and best weights) and :func:`start_run`, which builds a fresh one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from entromix.common.device import generator, seed_everything
from entromix.common.distributed import SINGLE, World, gather_to_main, unwrap, wrap_model
from entromix.common.labels import LabelSpace
from entromix.modeling.ensemble import build_ensemble
from entromix.modeling.fit import BatchPrep, class_weights, make_optimizer, uses_channels_last
from entromix.modeling.lr_schedule import warmup_cosine
from entromix.modeling.models import build_model
from entromix.modeling.weight_average import WeightAverage, half_life_steps
from entromix.training.checkpoints import state_to_cpu
from entromix.training.config import BINARY, TrainConfig
from entromix.training.curriculum import CurriculumConfig
from entromix.training.loss import EntroMixLoss
from entromix.training.resume import ResumeState
from entromix.training.synthetic_pool import SyntheticPool, min_batches
from entromix.training.table import TrainingTable, place_on_device


@dataclass(frozen=True)
class TrainData:
    """The images a run trains and validates on, and their labels."""

    table: TrainingTable  # the training rows (``entromix.training.table.training_table``)
    val_images: np.ndarray  # uint8 (M, H, W, 3) real validation images
    val_labels: np.ndarray  # (M,) int
    label_space: LabelSpace = BINARY  # the K labels and the binary view the val metrics read


@dataclass
class TrainingRun:
    """What one training run holds while it goes: built by :func:`start_run`, advanced by
    :func:`entromix.training.epoch.run_epoch`."""

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


def start_run(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    data: TrainData,
    device: torch.device,
    log: Callable[[str], None],
    world: World = SINGLE,
) -> TrainingRun:
    """The model, loss, optimiser, schedule, synthetic pool and device tensors of a fresh run (the
    model wrapped in DistributedDataParallel across ``world``)."""
    seed_everything(config.seed)
    channels_last = uses_channels_last(config.model, device)
    table, num_classes = data.table, data.label_space.num_classes
    model = _build_model(config, num_classes, device, channels_last, world)
    pool = SyntheticPool(
        table, curriculum, config.seed, config.batch_size, min_batches(config.min_steps, config.epochs), device
    )
    weights = _initial_class_weights(config, table, num_classes)
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
    _log_batches(config, table, weights, nb, log)
    return TrainingRun(
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
        val_x=place_on_device(data.val_images, device),
        val_y=torch.from_numpy(np.array(data.val_labels, dtype=np.int64)),
        average=average,
        world=world,
        label_space=data.label_space,
    )


def _build_model(
    config: TrainConfig, num_classes: int, device: torch.device, channels_last: bool, world: World
) -> torch.nn.Module:
    """The network (an ensemble of ``train.ensemble`` members) on ``device``, wrapped across ``world``."""
    model = build_ensemble(
        lambda: build_model(config.model, num_classes, config.image_size, config.pretrained_weights, "train"),
        config.ensemble,
    ).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return wrap_model(model, world, device)


def _initial_class_weights(config: TrainConfig, table: TrainingTable, num_classes: int) -> torch.Tensor:
    """The loss's class weights before the first epoch (``train.class_weights``)."""
    if isinstance(config.class_weights, list):  # given per label (checked against K in loop._check_inputs)
        return torch.tensor(config.class_weights, dtype=torch.float32)
    if config.class_weights == "none":
        return torch.ones(num_classes)
    # "mix" starts here and is recomputed every epoch
    return class_weights(table.labels[~table.is_syn], num_classes)


def _log_batches(
    config: TrainConfig, table: TrainingTable, weights: torch.Tensor, nb: int, log: Callable[[str], None]
) -> None:
    """The run's class weights and batches per epoch, in one log line."""
    source = {"real": "real training counts", "mix": "the images each epoch's loss sees", "none": "none"}
    natural = table.n_real // config.batch_size
    origin = source.get(str(config.class_weights), "given in train.class_weights")
    log(
        f"entromix train: class weights {[round(float(w), 3) for w in weights]} (n_total / (n_classes * n_class), "
        f"{origin}); {nb} batches of {config.batch_size} per epoch"
        + (f" (lengthened from {natural} to reach train.min_steps {config.min_steps})" if nb > natural else "")
    )
