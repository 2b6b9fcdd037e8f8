"""Plot data (CSV series for ``dvc plots``) and matplotlib figures (PNGs for the README)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from entromix.common.atomic import atomic_path  # noqa: E402
from entromix.scoring.jsd import TAU_AT_P_HALF  # noqa: E402

TIER_COLOURS = {"good": "#2ca02c", "degraded": "#ff7f0e", "hallucinated": "#d62728"}


def jsd_groups(dataset: pd.DataFrame, tiers: pd.DataFrame | None) -> dict[str, np.ndarray]:
    """JSD values by group: real (out-of-fold), synthetic, and synthetic per known tier."""
    groups = {
        "real": dataset.loc[dataset["is_syn"] == 0, "jsd_score"].to_numpy(),
        "synthetic": dataset.loc[dataset["is_syn"] == 1, "jsd_score"].to_numpy(),
    }
    if tiers is not None and len(tiers):
        merged = dataset[dataset["is_syn"] == 1].merge(tiers[["id", "tier"]], on="id")
        for tier in TIER_COLOURS:
            values = merged.loc[merged["tier"] == tier, "jsd_score"].to_numpy()
            if len(values):
                groups[f"synthetic_{tier}"] = values
    return groups


def jsd_histogram_table(groups: dict[str, np.ndarray], bins: int = 20) -> pd.DataFrame:
    """Fraction of each group's images per JSD bin (bin centres in bits), for ``dvc plots``."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = pd.DataFrame({"jsd": np.round((edges[:-1] + edges[1:]) / 2, 4)})
    for name, values in groups.items():
        counts, _ = np.histogram(np.clip(values, 0, 1), bins=edges)
        table[name] = np.round(counts / max(1, len(values)), 4)
    return table


def plot_jsd_distribution(
    groups: dict[str, np.ndarray], path: str | Path, thresholds: dict[str, float] | None = None
) -> None:
    """Histogram of JSD (bits) for real and synthetic images, with admission thresholds marked."""
    edges = np.linspace(0.0, 1.0, 26)
    fig, ax = plt.subplots(figsize=(8.5, 3.6), dpi=110)
    ax.hist(
        groups["real"],
        bins=edges,
        density=True,
        alpha=0.45,
        color="#1f77b4",
        label=f"real, out-of-fold (n={len(groups['real'])})",
    )
    tiered = [k for k in groups if k.startswith("synthetic_")]
    if tiered:
        for key in tiered:
            tier = key.removeprefix("synthetic_")
            ax.hist(
                groups[key],
                bins=edges,
                density=True,
                histtype="step",
                linewidth=2,
                color=TIER_COLOURS[tier],
                label=f"synthetic {tier} (n={len(groups[key])})",
            )
    elif len(groups["synthetic"]):
        ax.hist(
            groups["synthetic"],
            bins=edges,
            density=True,
            histtype="step",
            linewidth=2,
            color="#9467bd",
            label=f"synthetic (n={len(groups['synthetic'])})",
        )
    for row, (names, tau) in enumerate(threshold_marks(thresholds)):
        ax.axvline(tau, color="black", linestyle=":", linewidth=1)
        ax.annotate(
            f"{' = '.join(names)}\n{tau:.3f} bits",
            (tau, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3 - 22 * row),  # each label a row lower: neighbours never overlap
            textcoords="offset points",
            fontsize=7,
            va="top",
        )
    ax.set_xlabel("JSD(softmax || one-hot label), bits")
    ax.set_ylabel("density")
    ax.set_title("Reference-classifier disagreement with the label")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def threshold_marks(thresholds: dict[str, float] | None) -> list[tuple[list[str], float]]:
    """The vertical lines of the JSD figure, by tau: p_true = 0.5 and the curriculum's thresholds,
    names that share a tau on one line (``jsd_end = p_true = 0.5``, not two labels printed over each other)."""
    lines: list[tuple[list[str], float]] = []
    for name, tau in sorted(({"p_true = 0.5": TAU_AT_P_HALF} | (thresholds or {})).items(), key=lambda m: m[1]):
        if lines and abs(lines[-1][1] - tau) < 5e-4:
            lines[-1][0].append(name)
        else:
            lines.append(([name], tau))
    return [(sorted(names, key=lambda n: n == "p_true = 0.5"), tau) for names, tau in lines]
