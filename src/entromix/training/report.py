"""What the train stage reports: the console line of each epoch, ``plots/train/history.csv`` and
``metrics/train.json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from entromix.common.labels import LabelSpace
from entromix.common.rounding import round_floats
from entromix.modeling.augment import IMAGENET_MEAN, IMAGENET_STD
from entromix.training.checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from entromix.training.curriculum import CurriculumConfig
from entromix.training.synthetic_pool import synthetic_by_tier

if TYPE_CHECKING:
    from entromix.training.config import TrainConfig
    from entromix.training.result import TrainResult

HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "tau",
    "p_true_at_tau",
    "eligible_synthetic",
    "admitted_synthetic",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_sensitivity",
    "val_specificity",
    "val_balanced_accuracy",
    "val_auc",
    "lr",
    "epoch_seconds",
    "train_images",
    "images_per_s",
    "train_recall_malignant",
]
#: history columns a run with unlabelled images adds (self-training, ``curriculum.pseudo_labels``)
PSEUDO_COLUMNS = ["pseudo_accepted", "eligible_pseudo", "admitted_pseudo"]


#: the per-epoch values of the train stage's DVCLive log (``dvclive/train``), from a history row
LIVE_KEYS = [
    "train_loss",
    "train_recall_malignant",
    "val_loss",
    "val_accuracy",
    "val_sensitivity",
    "val_specificity",
    "val_balanced_accuracy",
    "val_auc",
    "tau",
    "eligible_synthetic",
    "admitted_synthetic",
    "lr",
    "images_per_s",
]


def live_values(row: dict[str, Any]) -> dict[str, Any]:
    """One epoch's values for the live log; ``tau`` is 0 during warmup, as in history.csv."""
    values = {key: row.get(key) for key in LIVE_KEYS + [k for k in PSEUDO_COLUMNS if k in row]}
    values["tau"] = 0.0 if row["tau"] is None else row["tau"]
    return values


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def epoch_line(row: dict, epochs: int) -> str:
    """One console line per epoch: the gate, the synthetic images, the LR, the losses, the training
    recall of the malignant class, the val sensitivity / specificity / AUC and the speed."""
    gate = "warmup, real only" if row["tau"] is None else f"tau {row['tau']:.4f} (p_true >= {row['p_true_at_tau']:.3f})"
    return (
        f"epoch {row['epoch'] + 1:>3}/{epochs} | {gate} | synthetic {row['admitted_synthetic']:.0f} admitted "
        f"of {row['eligible_synthetic']} eligible | "
        + (
            f"pseudo-labelled {row['admitted_pseudo']:.0f} admitted of {row['eligible_pseudo']} eligible "
            f"({row['pseudo_accepted']} accepted) | "
            if "admitted_pseudo" in row
            else ""
        )
        + f"lr {row['lr']:.2e} | "
        f"loss {row['train_loss']:.4f} val {row['val_loss']:.4f} | train recall "
        f"{_fmt(row.get('train_recall_malignant'))} | sens {_fmt(row['val_sensitivity'])} "
        f"spec {_fmt(row['val_specificity'])} AUC {_fmt(row['val_auc'])} | {row['epoch_seconds']:.1f} s, "
        f"{row['images_per_s']:.0f} img/s"
    )


def history_frame(history: list[dict[str, Any]], digits: int = 6) -> pd.DataFrame:
    """The per-epoch series for ``plots/train/history.csv``; tau is 0 during warmup (gate closed)."""
    extra = [c for c in PSEUDO_COLUMNS if history and c in history[0]]
    frame = pd.DataFrame(history, columns=HISTORY_COLUMNS + extra)
    frame["tau"] = frame["tau"].fillna(0.0)
    frame["p_true_at_tau"] = frame["p_true_at_tau"].fillna(1.0)
    return frame.round(digits)


def train_metrics(
    result: TrainResult,
    config: TrainConfig,
    curriculum: CurriculumConfig | None = None,
    tiers: pd.Series | None = None,
    digits: int = 4,
) -> dict:
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
        out["train"]["synthetic"] = synthetic_by_tier(result.used, result.final_eligible, tiers)
    if result.pseudo is not None:
        out["train"]["pseudo_labels"] = result.pseudo
    return out


def checkpoint_payload(
    state: dict, row: dict, config: TrainConfig, labels: list[str], ingest: dict, provenance: dict
) -> dict:
    """``best.pt`` / ``last.pt``: the weights and everything needed to use them on new image files
    (``entromix.training.checkpoints`` describes the keys). ``ingest``: ingest_config.json;
    ``provenance``: the params, git revision and versions of this run."""
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": state,
        "model_name": config.model,
        "ensemble": config.ensemble,  # members averaged in probability (entromix.modeling.ensemble); 1 = one network
        "num_classes": len(labels),
        "image_size": config.image_size,
        "labels": list(labels),
        # the binary view (entromix.common.labels): P(malignant) is the sum over these labels
        "positive_labels": LabelSpace.from_names(labels, ingest.get("positive_labels")).positive_names,
        "preprocess": {
            "stored_size": int(ingest["image_size"]),
            "resize_mode": str(ingest.get("resize_mode", "stretch")),
            "intensity": str(ingest.get("intensity", "fixed16")),  # 16-bit grayscale to 8 bits
            "image_size": config.image_size,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "max_pixels": int(ingest.get("max_pixels", 100_000_000)),
            "min_image_size": int(ingest.get("min_image_size", 16)),
        },
        "temperature": 1.0,
        "threshold": None,
        "epoch": row["epoch"],
        "val": {k: v for k, v in row.items() if k.startswith("val_")},
        "provenance": provenance,
    }


def best_epoch_line(result: TrainResult, config: TrainConfig, history: pd.DataFrame) -> str:
    b = {k: "-" if v is None else f"{v:.3f}" for k, v in result.best_val.items() if k.startswith("val_")}
    return (
        f"entromix train: best epoch {result.best_epoch + 1} by {config.select_metric}: val sensitivity "
        f"{b['val_sensitivity']}, specificity {b['val_specificity']}, AUC {b['val_auc']}; "
        f"median {history['images_per_s'].median():.0f} training images/s"
    )
