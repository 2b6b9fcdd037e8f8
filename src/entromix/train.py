"""The train stage: a classifier trained on real images plus the synthetic images the curriculum admits.

Per epoch ``t``: the threshold ``tau(t)`` (``entromix.curriculum``), the batches
(``entromix.sampler``: real at the real class ratio, eligible synthetic spread evenly), one pass
with EntroMixLoss (``entromix.entromix_loss``) and augmentation on the training device, then the
validation metrics on the real validation images. The model with the best ``select_metric`` and
the last one are kept.

Data path: the training table (real training rows, then the synthetic pool) and the validation
images are gathered from the prepared uint8 array once, moved to the device once (on CUDA when
they fit in half the free memory, else pinned host memory), and indexed per batch. Nothing is
decoded and no Dataset or DataLoader exists. CPU runs are deterministic for a fixed seed.

The gate reads ``gate_jsd``, one score per synthetic image: the score stage's JSD, except

* ``curriculum.strategy: random``: the same scores shuffled among the synthetic images with
  ``default_rng([seed, RANDOM_GATE_STREAM])``, so each epoch admits as many images as the
  curriculum would, but chosen without regard to quality;
* ``curriculum.strategy: oracle_gate`` (a diagnostic): 0 for the synthetic images of the known
  ``good`` tier and :data:`ORACLE_SHUT` for every other, so after warmup the gate admits exactly
  the good tier, whatever ``tau``;
* ``curriculum.rescore_every = k``: before epochs ``W, W + k, W + 2k, ...`` the current model
  scores the synthetic pool (eval mode, no augmentation, softmax at the temperature fitted on
  that epoch's validation logits, so ``tau`` keeps its meaning as a ``p_true`` threshold) and
  its JSD replaces the scores. The model has then seen the images it admitted, so this can
  confirm its own mistakes; ``RESULTS.md`` measures whether it helps.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from entromix.calibration import calibrated_probs, fit_temperature
from entromix.checkpoints import load_resume_state, save_checkpoint, state_to_cpu
from entromix.clinical_metrics import binary_metrics
from entromix.curriculum import CurriculumConfig, p_true_equivalent, threshold
from entromix.device import autocast, generator, seed_everything
from entromix.entromix_loss import EntroMixLoss, gate_weights
from entromix.errors import DataError, ParamsError
from entromix.fit import (Optimizer, class_weights, make_optimizer, predict_logits, prepare_batch, uses_channels_last,
                          weights_from_counts)
from entromix.lr_schedule import warmup_cosine
from entromix.jsd import jsd_to_onehot
from entromix.models import MODEL_NAMES, build_model
from entromix.rounding import round_floats
from entromix.sampler import CurriculumBatchSampler

SelectMetric = Literal["val_auc", "val_balanced_accuracy", "val_sensitivity", "val_accuracy", "val_loss"]

# soft gate: synthetic images within this many temperatures above tau still enter batches
# (weight >= sigmoid(-4) = 0.018); further out their weight would be negligible
SOFT_GATE_MARGIN_TEMPERATURES = 4.0

# second seed word of the generator that shuffles the scores for curriculum.strategy: random
RANDOM_GATE_STREAM = 7919

# oracle_gate's score for a synthetic image outside the good tier: above any tau (at most 1 bit)
ORACLE_SHUT = 2.0

ClassWeights = Literal["real", "mix", "none"]

HISTORY_COLUMNS = [
    "epoch", "phase", "tau", "p_true_at_tau", "eligible_synthetic", "admitted_synthetic", "train_loss",
    "val_loss", "val_accuracy", "val_sensitivity", "val_specificity", "val_balanced_accuracy", "val_auc",
    "lr", "epoch_seconds", "train_images", "images_per_s",
]  # fmt: skip


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
        if self.model not in MODEL_NAMES:
            raise ParamsError(f"train.model is {self.model!r}; choose one of {', '.join(MODEL_NAMES)}.")
        if not 16 <= self.image_size <= 1024:
            raise ParamsError(f"train.image_size must be between 16 and 1024 px, got {self.image_size}.")
        if self.epochs < 1:
            raise ParamsError(f"train.epochs must be >= 1, got {self.epochs}.")
        if self.batch_size < 2:
            raise ParamsError(f"train.batch_size must be >= 2 (BatchNorm needs two images per batch), got {self.batch_size}.")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.color_jitter < 1:
            raise ParamsError("train.lr must be > 0, train.weight_decay >= 0 and train.color_jitter in [0, 1).")
        if self.min_steps < 0 or self.lr_warmup_epochs < 0 or not 0 <= self.label_smoothing < 1:
            raise ParamsError("train.min_steps and train.lr_warmup_epochs must be >= 0 and train.label_smoothing in [0, 1).")
        if self.class_weights not in ("real", "mix", "none"):
            raise ParamsError(f"train.class_weights is {self.class_weights!r}; choose real, mix or none.")


@dataclass
class TrainingTable:
    """Rows of the training set: real training images first, then the synthetic pool.

    images: uint8 (N, H, W, 3); labels int64 (N,); is_syn bool (N,); jsd float32 (N,) bits (0 for
    real rows, never read); ids: row of each image in the prepared array (N,); tiers: the known
    quality tier of each row ("" for real rows and unknown ones), read only by the oracle_gate
    diagnostic, or None when no tiers file exists.
    """

    images: np.ndarray
    labels: np.ndarray
    is_syn: np.ndarray
    jsd: np.ndarray
    ids: np.ndarray
    tiers: np.ndarray | None = None

    @property
    def n_real(self) -> int:
        return int((~self.is_syn).sum())


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


def training_table(images: np.ndarray, manifest: pd.DataFrame, dataset: pd.DataFrame, source: str = "data/dataset.csv") -> TrainingTable:
    """Join the score stage's ``dataset.csv`` (jsd per training image) to ingest's array and manifest."""
    missing = ~dataset["id"].isin(manifest["id"])
    if missing.any():
        raise DataError(f"{source}: {int(missing.sum())} row(s) name an id not in data/prepared/manifest.csv "
                        f"(first: {dataset.loc[missing, 'filename'].iloc[0]}). Rerun the score stage (dvc repro score).")  # fmt: skip
    jsd = pd.to_numeric(dataset["jsd_score"], errors="coerce")
    bad = jsd.isna() | (jsd < 0) | (jsd > 1)
    if bad.any():
        row = dataset.loc[bad].iloc[0]
        raise DataError(f"{source}: jsd_score must be a number in [0, 1] bits; {int(bad.sum())} row(s) are not "
                        f"(first: {row['filename']} = {str(row['jsd_score'])!r}). Rerun the score stage.")  # fmt: skip
    data = dataset.assign(jsd_score=jsd).sort_values(["is_syn", "id"], kind="stable").reset_index(drop=True)
    known = manifest.set_index("id").loc[data["id"]]
    if {"source", "path"} <= set(manifest.columns):
        # the file of each row must be the manifest's: a hand-edited path (../, absolute, another
        # image) is refused rather than trusted; data roots may legitimately lie outside the project
        expected = (known["source"].astype(str) + "/" + known["path"].astype(str)).to_numpy()
        moved = data["filename"].astype(str).to_numpy() != expected
        if moved.any():
            first = int(np.flatnonzero(moved)[0])
            raise DataError(f"{source}: {int(moved.sum())} row(s) name a different file than data/prepared/manifest.csv "
                            f"for their id (first: id {int(data['id'].iloc[first])} is {data['filename'].iloc[first]!r}, "
                            f"expected {expected[first]!r}). Rerun the score stage (dvc repro score) instead of "
                            "editing the file by hand.")  # fmt: skip
    labels = known["label"].to_numpy()
    if (labels != data["label"].to_numpy()).any():
        raise DataError(f"{source}: labels disagree with data/prepared/manifest.csv. Rerun the score stage.")
    ids = data["id"].to_numpy(dtype=np.int64)
    return TrainingTable(
        images=np.asarray(images[ids]),
        labels=np.array(data["label"], dtype=np.int64),  # np.array: writable copies for torch.from_numpy
        is_syn=np.array(data["is_syn"], dtype=bool),
        jsd=np.array(data["jsd_score"], dtype=np.float32),
        ids=ids,
    )


def place_on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A uint8 array on ``device`` once when it fits in half the free memory, else in pinned host memory."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    free, _ = torch.cuda.mem_get_info(device)
    return tensor.to(device) if tensor.numel() < free // 2 else tensor.pin_memory()


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


def train_curriculum(
    config: TrainConfig,
    curriculum: CurriculumConfig,
    table: TrainingTable,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    device: torch.device,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict, torch.nn.Module, bool], None] | None = None,
    resume_path: Path | None = None,
    fingerprint: str = "",
) -> TrainResult:
    """Train with the curriculum; return the per-epoch history and the best and last weights.

    Args:
        table: the training rows (:func:`training_table`).
        val_images: uint8 (M, H, W, 3) real validation images; val_labels: (M,) int.
        on_epoch: called after each epoch with (history row, model, is_best), e.g. to checkpoint.
        resume_path: after every epoch the full training state (weights, optimiser, scheduler,
            random generators, history, best so far) is written here atomically; a run that finds
            a state with the same ``fingerprint`` continues after its last finished epoch. The
            batches of an epoch depend only on (seed, epoch), so on CPU a resumed run ends with the
            same weights and metrics as an uninterrupted one.
            With ``config.resume`` false an existing state is not read (and is overwritten by
            this run's first epoch).
        fingerprint: identifies the run (settings and input data); a state with another one is ignored.
    """
    curriculum.check_epochs(config.epochs)
    seed_everything(config.seed)
    num_classes = 2
    if curriculum.strategy == "oracle_gate" and (table.tiers is None or not (table.tiers[table.is_syn] != "").any()):
        raise ParamsError("curriculum.strategy is 'oracle_gate' (a diagnostic) but no synthetic image has a known tier; "
                          "it needs ingest.tiers_csv (filename,tier with tier 'good' for the images to admit). "
                          "Use another strategy for data without tiers.")  # fmt: skip
    if np.unique(table.labels[~table.is_syn]).size != num_classes or np.unique(val_labels).size != num_classes:
        raise DataError("the real training and validation images must both hold benign (0) and malignant (1) images; "
                        "check ingest's split fractions and class_map.")  # fmt: skip
    channels_last = uses_channels_last(config.model, device)
    model = build_model(config.model, num_classes, config.image_size, config.pretrained_weights, "train")
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    margin = SOFT_GATE_MARGIN_TEMPERATURES * curriculum.gate_temperature if curriculum.loss_gate == "soft" else 0.0

    n_real = table.n_real
    gate_jsd = initial_gate_scores(table, curriculum, config.seed)  # (N,): 0 for real rows
    used = np.zeros(len(gate_jsd) - n_real, dtype=bool)
    sampler = CurriculumBatchSampler(table.labels[:n_real], gate_jsd[n_real:], config.batch_size,
                                     curriculum.max_synthetic_fraction, config.seed,
                                     min_batches=math.ceil(config.min_steps / config.epochs),
                                     synthetic_slots=curriculum.synthetic_slots)  # fmt: skip
    weights = (class_weights(table.labels[~table.is_syn], num_classes) if config.class_weights != "none"
               else torch.ones(num_classes))  # "mix" starts here and is recomputed every epoch  # fmt: skip
    criterion = EntroMixLoss(weights, curriculum.loss_gate, curriculum.gate_temperature, config.label_smoothing).to(device)
    optim = make_optimizer(model, config.optimizer, config.lr, config.weight_decay)
    nb = sampler.num_batches
    sched = warmup_cosine(optim, config.epochs * nb, round(config.lr_warmup_epochs * nb))
    aug_gen = generator(device, config.seed + 1) if config.augment else None
    images = place_on_device(table.images, device)  # (N, H, W, 3) uint8
    labels = torch.from_numpy(table.labels).to(device)
    is_syn = torch.from_numpy(table.is_syn).to(device)
    jsd = torch.from_numpy(gate_jsd).to(device)
    val_x = place_on_device(val_images, device)
    val_y = torch.from_numpy(np.array(val_labels, dtype=np.int64))
    weight_source = {"real": "real training counts", "mix": "the images each epoch's loss sees", "none": "none"}
    log(f"entromix train: class weights {[round(float(w), 3) for w in weights]} (n_total / (n_classes * n_class), "
        f"{weight_source[config.class_weights]}); {nb} batches of {config.batch_size} per epoch"
        + (f" (lengthened from {n_real // config.batch_size} to reach train.min_steps {config.min_steps})"
           if nb > n_real // config.batch_size else ""))  # fmt: skip

    history: list[dict[str, Any]] = []
    best_row: dict | None = None
    best_state: dict[str, torch.Tensor] = {}
    start_epoch = 0
    state = load_resume_state(resume_path, fingerprint) if resume_path is not None and config.resume else None
    if state is not None and len(state["history"]) >= config.epochs:
        # a finished run's state: `dvc repro -f train` means train again, not reload the end
        log(f"entromix train: {resume_path} holds a finished run; training afresh")
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if aug_gen is not None:
            aug_gen.set_state(state["augment_rng"])  # a CPU ByteTensor for CPU and CUDA generators
        torch.set_rng_state(state["torch_rng"])
        history, best_row, best_state = list(state["history"]), dict(state["best_row"]), dict(state["best_state"])
        gate_jsd, used = state["gate_jsd"].numpy().astype(np.float32), state["used"].numpy().astype(bool)
        sampler.set_scores(gate_jsd[n_real:])
        jsd = torch.from_numpy(gate_jsd).to(device)
        start_epoch = len(history)
        log(f"entromix train: resuming from {resume_path} after epoch {start_epoch}/{config.epochs}")
    for epoch in range(start_epoch, config.epochs):
        tau = threshold(epoch, config.epochs, curriculum)
        if curriculum.rescores_at(epoch) and len(used):
            gate_jsd[n_real:] = rescore_synthetic(model, images[n_real:], table.labels[n_real:], val_x, val_y,
                                                  device, config.image_size, channels_last)  # fmt: skip
            sampler.set_scores(gate_jsd[n_real:])
            jsd = torch.from_numpy(gate_jsd).to(device)
            log(f"entromix train: re-scored {len(used)} synthetic images with the current model before epoch "
                f"{epoch + 1}; {int((gate_jsd[n_real:] <= (tau or 0.0)).sum())} now have jsd <= tau")  # fmt: skip
        plan = sampler.epoch(epoch, tau, margin)
        placed = np.concatenate(plan.batches)
        placed = placed[placed >= n_real]
        used[placed - n_real] = True
        admitted = float(gate_weights(torch.from_numpy(table.is_syn[placed]), torch.from_numpy(gate_jsd[placed]),
                                      tau, curriculum.loss_gate, curriculum.gate_temperature).sum())  # fmt: skip
        if config.class_weights == "mix":
            criterion.set_class_weights(mix_class_weights(plan.batches, table, gate_jsd, tau, curriculum, num_classes))
        lr = optim.param_groups[0]["lr"]

        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # accumulated on the device: no sync per step
        n_images = 0
        for rows in plan.batches:
            idx = torch.from_numpy(rows).to(images.device)
            x = prepare_batch(images[idx].to(device, non_blocking=True), config.image_size, aug_gen,
                              config.color_jitter, channels_last, config.rotate90)  # (B, 3, S, S)  # fmt: skip
            idx = idx.to(device)
            with autocast(device):
                logits = model(x)
            loss = criterion(logits, labels[idx], is_syn[idx], jsd[idx], tau)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()  # per step: warmup, then cosine
            loss_sum += loss.detach()
            n_images += len(rows)
        train_loss = float(loss_sum) / len(plan.batches)  # float() synchronises the device
        train_seconds = time.perf_counter() - start

        val_logits = torch.from_numpy(predict_logits(model, val_x, device, config.image_size, channels_last=channels_last))
        val_loss = float(F.cross_entropy(val_logits, val_y))
        val = binary_metrics(val_y.numpy(), torch.softmax(val_logits, 1)[:, 1].numpy())
        row = {
            "epoch": epoch, "phase": "warmup" if tau is None else "ramp",
            "tau": tau, "p_true_at_tau": p_true_equivalent(tau),
            "eligible_synthetic": plan.eligible, "admitted_synthetic": admitted, "train_loss": train_loss,
            "val_loss": val_loss, **{f"val_{k}": v for k, v in val.items()},
            "lr": lr, "epoch_seconds": time.perf_counter() - start, "train_images": n_images,
            "images_per_s": n_images / train_seconds,
        }  # fmt: skip
        history.append(row)
        is_best = _is_better(config.select_metric, row, best_row)
        if is_best:
            best_row = row
            best_state = state_to_cpu(model.state_dict())
        log(_epoch_line(row, config.epochs))
        if resume_path is not None:
            save_checkpoint(resume_path, {
                "fingerprint": fingerprint, "model": state_to_cpu(model.state_dict()),
                "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                "augment_rng": aug_gen.get_state().cpu() if aug_gen is not None else torch.zeros(0, dtype=torch.uint8),
                "torch_rng": torch.get_rng_state(), "history": history, "best_row": best_row, "best_state": best_state,
                "gate_jsd": torch.from_numpy(gate_jsd.copy()), "used": torch.from_numpy(used.copy()),
            })  # fmt: skip
        if on_epoch is not None:
            on_epoch(row, model, is_best)
    assert best_row is not None
    final_eligible = np.zeros(len(used), dtype=bool)
    final_eligible[sampler.eligible(threshold(config.epochs - 1, config.epochs, curriculum), margin) - n_real] = True
    return TrainResult(history=history, best_epoch=best_row["epoch"], best_state=best_state,
                       last_state=state_to_cpu(model.state_dict()), best_val=best_row,
                       gate_jsd=gate_jsd[n_real:].copy(), used=used, final_eligible=final_eligible)  # fmt: skip


def initial_gate_scores(table: TrainingTable, curriculum: CurriculumConfig, seed: int) -> np.ndarray:
    """The per-row scores the gate starts from: the score stage's JSD, shuffled among the synthetic
    rows for ``strategy: random`` (same counts per epoch as the curriculum, chosen blindly)."""
    scores = np.array(table.jsd, dtype=np.float32)
    scores[~table.is_syn] = 0.0
    if curriculum.strategy == "oracle_gate":
        good = table.is_syn & (table.tiers == "good")
        scores[table.is_syn] = ORACLE_SHUT
        scores[good] = 0.0
    if curriculum.strategy == "random":
        syn = np.flatnonzero(table.is_syn)
        scores[syn] = np.random.default_rng([seed, RANDOM_GATE_STREAM]).permutation(scores[syn])
    return scores


def mix_class_weights(batches: list[np.ndarray], table: TrainingTable, gate_jsd: np.ndarray, tau: float | None,
                      curriculum: CurriculumConfig, num_classes: int) -> torch.Tensor:  # fmt: skip
    """``train.class_weights: mix``: ``w_c = n / (C n_c)`` over the images of this epoch's batches,
    each counted by its gate weight (1 for real images, 0..1 for synthetic ones), so a
    malignant-only synthetic pool lowers the malignant weight instead of multiplying it."""
    rows = np.concatenate(batches)
    g = gate_weights(torch.from_numpy(table.is_syn[rows]), torch.from_numpy(gate_jsd[rows]), tau,
                     curriculum.loss_gate, curriculum.gate_temperature).numpy()  # fmt: skip
    counts = np.bincount(table.labels[rows], weights=g, minlength=num_classes)
    return weights_from_counts(np.maximum(counts, 1e-6))


def rescore_synthetic(model: torch.nn.Module, images: torch.Tensor, labels: np.ndarray, val_x: torch.Tensor,
                      val_y: torch.Tensor, device: torch.device, image_size: int, channels_last: bool) -> np.ndarray:  # fmt: skip
    """JSD in bits of the current model's calibrated softmax against each synthetic image's label.

    The temperature is fitted on the model's validation logits, as the score stage fits it on its
    out-of-fold logits, so the same ``tau`` means the same ``p_true`` before and after re-scoring.
    """
    val_logits = predict_logits(model, val_x, device, image_size, channels_last=channels_last)
    temperature = fit_temperature(val_logits, val_y.numpy())
    logits = predict_logits(model, images, device, image_size, channels_last=channels_last)
    scores, _ = jsd_to_onehot(calibrated_probs(logits, temperature), labels)
    return scores.astype(np.float32)


def synthetic_tiers(table: TrainingTable, tiers: pd.DataFrame) -> pd.Series | None:
    """The known quality tier of each synthetic row of ``table`` from ingest's tier table
    (``synthetic_tiers.csv``; "" where unknown), or None when no tier is known."""
    if tiers is None or tiers.empty or not {"id", "tier"} <= set(tiers.columns):
        return None
    by_id = dict(zip(tiers["id"].astype(int), tiers["tier"].astype(str)))
    return pd.Series([by_id.get(int(i), "") for i in table.ids[table.is_syn]], dtype=object)


def with_tiers(table: TrainingTable, synthetic: pd.Series | None) -> TrainingTable:
    """``table`` with the known tier of each row (:func:`synthetic_tiers` gives the synthetic rows')."""
    if synthetic is None:
        return table
    tiers = np.full(len(table.labels), "", dtype=object)
    tiers[table.is_syn] = synthetic.to_numpy(dtype=object)
    return replace(table, tiers=tiers)


def synthetic_by_tier(result: TrainResult, tiers: pd.Series) -> dict[str, dict[str, int]]:
    """Per known quality tier (and ``all``): the pool, the images eligible at the last epoch and
    the images placed in any batch. ``tiers``: the tier of each synthetic row, "" when unknown."""
    tiers = tiers.fillna("").astype(str).to_numpy()
    out: dict[str, dict[str, int]] = {}
    for name in ["all", *sorted(t for t in set(tiers) if t)]:
        rows = np.ones(len(tiers), dtype=bool) if name == "all" else tiers == name
        out[name] = {"pool": int(rows.sum()), "eligible_final": int((result.final_eligible & rows).sum()),
                     "used": int((result.used & rows).sum())}  # fmt: skip
    return out


def run_fingerprint(curriculum: CurriculumConfig, config: TrainConfig, inputs: list[Path], array_shape: tuple) -> str:
    """Which run a resume state belongs to: sha256 of the settings (``resume`` and ``device`` aside),
    the input files, the torch version and entromix's own source (a code change starts afresh)."""
    settings = {k: v for k, v in asdict(config).items() if k not in ("resume", "device")}
    digest = hashlib.sha256(json.dumps([asdict(curriculum), settings, list(array_shape), torch.__version__],
                                       sort_keys=True).encode())  # fmt: skip
    for path in inputs:
        digest.update(Path(path).read_bytes())
    for source in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _epoch_line(row: dict, epochs: int) -> str:
    gate = ("warmup, real only" if row["tau"] is None
            else f"tau {row['tau']:.4f} (p_true >= {row['p_true_at_tau']:.3f})")  # fmt: skip
    return (f"epoch {row['epoch'] + 1:>3}/{epochs} | {gate} | synthetic {row['admitted_synthetic']:.0f} admitted "
            f"of {row['eligible_synthetic']} eligible | "
            f"loss {row['train_loss']:.4f} val {row['val_loss']:.4f} | sens {_fmt(row['val_sensitivity'])} "
            f"spec {_fmt(row['val_specificity'])} AUC {_fmt(row['val_auc'])} | {row['epoch_seconds']:.1f} s, "
            f"{row['images_per_s']:.0f} img/s")  # fmt: skip


def history_frame(history: list[dict[str, Any]], digits: int = 6) -> pd.DataFrame:
    """The per-epoch series for ``plots/train/history.csv``; tau is 0 during warmup (gate closed)."""
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    frame["tau"] = frame["tau"].fillna(0.0)
    frame["p_true_at_tau"] = frame["p_true_at_tau"].fillna(1.0)
    return frame.round(digits)


def train_metrics(result: TrainResult, config: TrainConfig, curriculum: CurriculumConfig | None = None,
                  tiers: pd.Series | None = None, digits: int = 4) -> dict:  # fmt: skip
    """``metrics/train.json``: the best and final validation values and the curriculum's end state;
    with ``tiers`` (the known quality tier of each synthetic row) also the synthetic images per tier."""
    keys = ["val_loss", "val_accuracy", "val_sensitivity", "val_specificity", "val_balanced_accuracy", "val_auc"]
    last = result.history[-1]

    def pick(row: dict) -> dict:
        return {k: round_floats(row[k], digits) for k in keys}

    out = {
        "train": {
            "strategy": curriculum.strategy if curriculum is not None else "curriculum",
            "select_metric": config.select_metric,
            "best_epoch": result.best_epoch,
            "best": pick(result.best_val),
            "final": {**pick(last), "train_loss": round_floats(last["train_loss"], digits)},
            "final_tau": round_floats(last["tau"], digits),
            "final_eligible_synthetic": last["eligible_synthetic"],
            "final_admitted_synthetic": round_floats(last["admitted_synthetic"], 2),
            "epochs": len(result.history),
        }
    }  # no timings here: metrics files are identical run to run on CPU (speed: history.csv)
    if tiers is not None and len(result.used):
        out["train"]["synthetic"] = synthetic_by_tier(result, tiers)
    return out
