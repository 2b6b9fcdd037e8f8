"""The train stage's loop: a classifier trained on real images plus the synthetic images the curriculum admits.

Per epoch ``t``: the threshold ``tau(t)`` (``entromix.training.curriculum``), the batches
(``entromix.training.synthetic_pool`` and ``.sampler``: real at the real class ratio, eligible
synthetic spread evenly), one pass with EntroMixLoss (``entromix.training.loss``) and
augmentation on the training device (``entromix.modeling.fit.train_epoch``, the loop the scorer
shares), then the validation metrics on the real validation images. The model with the best
``select_metric`` and the last one are kept (``entromix.training.selection``); after every epoch the resume state
(``entromix.training.resume``) is written, and ``on_epoch`` observers are called.

Data path: the training table (real training rows, then the synthetic pool) and the validation
images are gathered from the prepared uint8 array once, moved to the device once (on CUDA when
they fit in half the free memory, else pinned host memory), and indexed per batch. Nothing is
decoded and no Dataset or DataLoader exists. CPU runs are deterministic for a fixed seed.

This module is the orchestration, :func:`train_curriculum`; the settings are in
``entromix.training.config``, the run's state and setup in ``.run``, one epoch in ``.epoch``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from entromix.common.distributed import SINGLE, World
from entromix.common.errors import DataError, ParamsError
from entromix.common.labels import LabelSpace
from entromix.common.progress import Eta
from entromix.training.checkpoints import state_to_cpu
from entromix.training.config import BINARY, TrainConfig
from entromix.training.curriculum import CurriculumConfig, threshold
from entromix.training.epoch import run_epoch
from entromix.training.pseudo_labels import NOT_ACCEPTED, pseudo_label_summary
from entromix.training.report import epoch_line
from entromix.training.result import TrainResult
from entromix.training.resume import ResumeState
from entromix.training.run import TrainData, TrainingRun, start_run
from entromix.training.selection import stops_early
from entromix.training.table import TrainingTable

#: called after each epoch with (the history so far, resumed epochs included; the model; whether this
#: epoch is the best so far): the train stage writes its live history.csv with it
EpochObserver = Callable[[list[dict], torch.nn.Module, bool], None]

#: called once before the first epoch this process trains, with the history it continues from
#: (empty for a fresh run; the restored epochs when it resumes): the train stage opens its live log
StartObserver = Callable[[list[dict]], None]


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
    data = TrainData(table, val_images, val_labels, label_space)
    _check_inputs(config, curriculum, data)
    if not world.is_main:
        log = _quiet
    run = start_run(config, curriculum, data, device, log, world)
    if resume_path is not None and config.resume:
        _resume(run, resume_path, fingerprint, log)
    if on_start is not None and world.is_main:
        on_start(list(run.history))
    _train_epochs(run, log, on_epoch, resume_path, fingerprint)
    return _result(run, table)


def _train_epochs(
    run: TrainingRun,
    log: Callable[[str], None],
    on_epoch: EpochObserver | None,
    resume_path: Path | None,
    fingerprint: str,
) -> None:
    """The epochs left to train (all unless the run resumed), up to the last one or an early stop."""
    config, world = run.config, run.world
    eta = Eta(config.epochs)
    eta.skip(len(run.history))  # resumed epochs: done, but not timed
    for epoch in range(len(run.history), config.epochs):
        row, is_best = run_epoch(run, epoch, log)
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


def _result(run: TrainingRun, table: TrainingTable) -> TrainResult:
    """The finished run: its history, best and last weights and the synthetic pool's end state."""
    config, curriculum = run.config, run.curriculum
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


def _pseudo_summary(run: TrainingRun) -> dict:
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


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


def _check_inputs(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    data: TrainData,
) -> None:
    """The settings fit the data: every label among the real training images, both sides of the
    binary view in the validation set, unlabelled images or tiers where the curriculum needs them."""
    table, val_labels, label_space = data.table, data.val_labels, data.label_space
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


def _resume(run: TrainingRun, path: Path, fingerprint: str, log: Callable[[str], None]) -> None:
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
