"""Matplotlib PNGs of the evaluate stage's plots, for the README (``dvc plots show`` draws the CSVs)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entromix.common.atomic import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_roc(roc: pd.DataFrame, auc: float | None, operating: dict, path: str | Path) -> None:
    """ROC curve of the test set with the 0.5 and tuned operating points."""
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    ax.plot(
        roc["fpr"], roc["tpr"], color="#1f77b4", label=f"test ROC (AUC {auc:.3f})" if auc is not None else "test ROC"
    )
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    # a large ring, then a small filled square: two operating points at the same place both show
    styles = [
        {"marker": "o", "markersize": 11, "markerfacecolor": "none", "markeredgewidth": 1.6},
        {"marker": "s", "markersize": 5},
    ]
    for (name, m), style in zip(operating.items(), styles * len(operating)):
        if m["sensitivity"] is not None and m["specificity"] is not None:
            ax.plot(
                1 - m["specificity"],
                m["sensitivity"],
                linestyle="none",
                label=f"{name} (t={m['threshold']:.3f})",
                **style,
            )
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity")
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_pr(pr: pd.DataFrame, pr_auc: float | None, prevalence: float, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    ax.step(
        pr["recall"],
        pr["precision"],
        where="post",
        color="#1f77b4",
        label=f"test (PR-AUC {pr_auc:.3f})" if pr_auc is not None else "test",
    )
    ax.axhline(prevalence, color="grey", linestyle=":", linewidth=1, label=f"prevalence {prevalence:.2f}")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    _save(fig, path)


def plot_confusion(m: dict, labels: list[str], path: str | Path) -> None:
    """2x2 confusion matrix (rows actual, columns predicted) at the tuned threshold."""
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    fig, ax = plt.subplots(figsize=(3.8, 3.4), dpi=110)
    ax.imshow(counts, cmap="Blues")
    for (i, j), v in np.ndenumerate(counts):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > counts.max() / 2 else "black")
    ax.set_xticks([0, 1], labels)
    ax.set_yticks([0, 1], labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"test, threshold {m['threshold']:.3f}", fontsize=9)
    _save(fig, path)


def plot_confusion_matrix(counts: list[list[int]], labels: list[str], path: str | Path) -> None:
    """K x K confusion matrix of a multi-class model (rows actual, columns predicted by argmax), with
    each row's share of its class in brackets."""
    counts = np.asarray(counts)
    k = len(labels)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * k + 1.8, 1.0 * k + 1.4), dpi=110)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(counts):
        colour = "white" if shares[i, j] > 0.5 else "black"
        ax.text(j, i, f"{v}\n({shares[i, j]:.0%})", ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(k), labels, rotation=30, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted (argmax)")
    ax.set_ylabel("actual")
    ax.set_title("test, per label", fontsize=9)
    _save(fig, path)


def plot_calibration(table: pd.DataFrame, brier: float | None, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    ax.plot(
        table["mean_predicted"],
        table["observed_fraction"],
        "o-",
        color="#1f77b4",
        label=f"test (Brier {brier:.3f}); n images per bin" if brier is not None else "test; n images per bin",
    )
    if "count" in table:
        for x, y, n in zip(table["mean_predicted"], table["observed_fraction"], table["count"]):
            ax.annotate(f"{int(n)}", (x, y), xytext=(4, -9), textcoords="offset points", fontsize=6, color="#1f77b4")
    ax.set_xlabel("mean predicted malignant probability")
    ax.set_ylabel("observed malignant fraction")
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)


def plot_training_curves(history: pd.DataFrame, best_epoch: int | None, path: str | Path) -> None:
    """Losses and validation sensitivity / specificity per epoch, warmup shaded."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    epochs = history["epoch"] + 1
    warm = history["phase"] == "warmup"
    for ax in (a, b):
        if warm.any():
            ax.axvspan(0.5, epochs[warm].max() + 0.5, color="grey", alpha=0.12, label="warmup (real only)")
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="black", linestyle=":", linewidth=1, label="best checkpoint")
        ax.set_xlabel("epoch")
    a.plot(epochs, history["train_loss"], label="train (EntroMixLoss)")
    a.plot(epochs, history["val_loss"], label="val (cross-entropy)")
    a.set_ylabel("loss")
    b.plot(epochs, history["val_sensitivity"], label="val sensitivity")
    b.plot(epochs, history["val_specificity"], label="val specificity")
    b.plot(epochs, history["val_auc"], label="val AUC", alpha=0.6)
    b.set_ylim(0, 1.02)
    a.legend(fontsize=7)
    b.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_curriculum(history: pd.DataFrame, pool: int, path: str | Path) -> None:
    """tau per epoch (left axis) and eligible / admitted synthetic images (right axis)."""
    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=110)
    epochs = history["epoch"] + 1
    ramp = history["phase"] != "warmup"
    ax.plot(epochs[ramp], history.loc[ramp, "tau"], "k-", label="tau (bits)")
    ax.axhline(0.311, color="grey", linestyle=":", linewidth=1)
    ax.annotate("p_true = 0.5", (epochs.min(), 0.311), fontsize=7, va="bottom")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("epoch")
    ax.set_ylabel("tau, bits")
    right = ax.twinx()
    right.bar(
        epochs - 0.2,
        history["eligible_synthetic"],
        width=0.4,
        alpha=0.35,
        color="#ff7f0e",
        label="eligible (jsd <= tau)",
    )
    right.bar(
        epochs + 0.2,
        history["admitted_synthetic"],
        width=0.4,
        alpha=0.6,
        color="#2ca02c",
        label="admitted into batches",
    )
    right.set_ylim(0, max(1, pool) * 1.05)
    right.set_ylabel(f"synthetic images (pool {pool})")
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    names = ax.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    ax.legend(lines, names, fontsize=7, loc="upper left")
    _save(fig, path)


def save_figure(fig, path: str | Path, tight: bool = True) -> None:
    """Write ``fig`` to ``path`` as a PNG (atomically) and close it; ``tight``: tight_layout first."""
    if tight:
        fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def plot_message(title: str, lines: list[str], path: str | Path) -> None:
    """A figure that says why a picture could not be drawn (a DVC output must exist either way)."""
    fig, ax = plt.subplots(figsize=(6.4, 2.2), dpi=110)
    ax.axis("off")
    ax.text(0.0, 0.95, title, fontsize=10, fontweight="bold", va="top", transform=ax.transAxes)
    ax.text(0.0, 0.7, "\n".join(lines), fontsize=8, va="top", transform=ax.transAxes, wrap=True)
    _save(fig, path)
