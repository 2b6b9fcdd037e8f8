"""The synthetic pool as pictures: which synthetic images the gate let in at the end of training, and which it kept out.

``tau`` is the final epoch's threshold (``plots/train/history.csv``); a synthetic image is
admitted when ``jsd <= tau``, tested in float32 by the same function the sampler and the loss
use (``entromix.training.gate.within``), on the score stage's JSD (``data/dataset.csv``).

* :func:`select_gallery`: on each side of ``tau`` the ``per_side`` images nearest to it (the
  admitted ones by descending JSD, the kept-out ones by ascending JSD: the gate's hardest calls
  first), plus a seeded random ``sample`` of the rest of each side (sorted by JSD);
* :func:`plot_gallery`: those images as a grid, JSD (and tier, when known) on each tile, a green
  border for admitted and a red one for kept out;
* :func:`plot_tier_histograms`: with a tier file, the JSD histogram of each tier with ``tau``
  marked and how many of the tier it admits.

What the marks mean depends on ``curriculum.strategy``: with ``curriculum`` (and ``naive``: tau 1
bit, everything in) they are what the gate did. ``random`` gates shuffled scores, ``oracle_gate``
admits by tier and ``rescore_every > 0`` replaces the scores during training, so there the marks
show what a gate on the score stage's JSD would admit, and the figure says so. ``real_only`` admits
nothing: the figure says that instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from entromix.evaluation.figures import plot_message, save_figure
from entromix.scoring.jsd import TAU_AT_P_HALF
from entromix.scoring.jsd_plots import TIER_COLOURS
from entromix.training.gate import within

ADMITTED, KEPT_OUT = "#2ca02c", "#d62728"


@dataclass(frozen=True)
class GallerySelection:
    """Positions into the pool's arrays (not image ids) of the tiles of each row."""

    near_admitted: np.ndarray  # admitted, nearest tau first (descending jsd)
    near_kept_out: np.ndarray  # kept out, nearest tau first (ascending jsd)
    sample_admitted: np.ndarray  # a seeded sample of the other admitted images, by jsd
    sample_kept_out: np.ndarray  # a seeded sample of the other kept-out images, by jsd
    admitted: np.ndarray  # bool (N,): jsd <= tau in float32


def select_gallery(jsd: np.ndarray, tau: float, per_side: int, sample: int, seed: int) -> GallerySelection:
    """The gallery's tiles for synthetic JSD scores ``jsd`` (N,) and threshold ``tau``; ties by position."""
    jsd = np.array(jsd, dtype=np.float64)  # a writable copy (torch warns on read-only arrays)
    admitted = within(jsd, tau).numpy()
    pos = np.arange(len(jsd))
    inside = pos[admitted][np.lexsort((pos[admitted], -jsd[admitted]))]
    outside = pos[~admitted][np.lexsort((pos[~admitted], jsd[~admitted]))]
    rng = np.random.default_rng(seed)

    def draw(rest: np.ndarray) -> np.ndarray:
        chosen = rng.choice(rest, size=min(sample, len(rest)), replace=False) if len(rest) else rest
        return chosen[np.lexsort((chosen, jsd[chosen]))].astype(np.int64)

    return GallerySelection(
        near_admitted=inside[:per_side],
        near_kept_out=outside[:per_side],
        sample_admitted=draw(inside[per_side:]),
        sample_kept_out=draw(outside[per_side:]),
        admitted=admitted,
    )


def final_tau(history: pd.DataFrame, run: dict[str, Any]) -> tuple[float | None, str]:
    """The last epoch's tau, or None with the reason there is none (real_only, warmup only)."""
    strategy = run.get("curriculum", {}).get("strategy", "curriculum")
    if strategy == "real_only":
        return None, "curriculum.strategy is real_only: the run admitted no synthetic image."
    if history.empty or history.iloc[-1]["phase"] == "warmup":
        return None, "the run ended in warmup: the gate never opened."
    return float(history.iloc[-1]["tau"]), ""


def strategy_note(run: dict[str, Any]) -> str:
    """One line on what the admitted/kept-out marks mean for the run's strategy ('' when they are what happened)."""
    cur = run.get("curriculum", {})
    strategy, note = cur.get("strategy", "curriculum"), ""
    if strategy == "random":
        note = "strategy random: training gated shuffled scores; marks show jsd <= tau on the scores themselves"
    elif strategy == "oracle_gate":
        note = "strategy oracle_gate: training admitted the 'good' tier; marks show jsd <= tau"
    elif cur.get("rescore_every", 0):
        note = "rescore_every > 0: training re-scored the pool; marks use the score stage's JSD"
    elif cur.get("gate") == "soft":
        note = "soft gate: images near tau counted with partial weight; marks show jsd <= tau"
    return note


def _tile(ax, image: np.ndarray, jsd: float, admitted: bool, tier: str | None) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(ADMITTED if admitted else KEPT_OUT)
        spine.set_linewidth(3)
    ax.set_title(f"{jsd:.3f}" + (f" {tier}" if tier else ""), fontsize=6.5, pad=2)


def plot_gallery(
    pool: pd.DataFrame, images: np.ndarray, sel: GallerySelection, tau: float, title: str, path: str | Path
) -> None:
    """The grid: rows nearest-admitted, nearest-kept-out, sample-admitted, sample-kept-out.

    ``pool``: the synthetic images in the selection's order, columns ``id`` (row of ``images``),
    ``jsd_score`` and ``tier`` ('' when unknown)."""
    rows = [
        (f"admitted, nearest tau\n({sel.admitted.sum()} admitted)", sel.near_admitted, True),
        (f"kept out, nearest tau\n({(~sel.admitted).sum()} kept out)", sel.near_kept_out, False),
        ("admitted,\nrandom sample", sel.sample_admitted, True),
        ("kept out,\nrandom sample", sel.sample_kept_out, False),
    ]
    cols = max(1, max(len(r[1]) for r in rows))
    fig, axes = plt.subplots(4, cols, figsize=(1.6 + 1.0 * cols, 5.2), dpi=110, squeeze=False)
    for r, (label, positions, admitted) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(positions):
                ax.axis("off")
                if c == 0:
                    ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            row = pool.iloc[int(positions[c])]
            _tile(ax, images[int(row["id"])], float(row["jsd_score"]), admitted, row["tier"] or None)
        axes[r, 0].annotate(
            label, (-0.12, 0.5), xycoords="axes fraction", ha="right", va="center", fontsize=7.5, color="black"
        )
    fig.suptitle(
        f"{title}\ntile: JSD (bits); border green = admitted (jsd <= tau {tau:.3f}), red = kept out", fontsize=8
    )
    fig.subplots_adjust(left=1.5 / (1.6 + cols), right=0.99, top=0.86, bottom=0.01, wspace=0.08, hspace=0.35)
    save_figure(fig, path, tight=False)


def plot_tier_histograms(pool: pd.DataFrame, admitted: np.ndarray, tau: float, path: str | Path) -> None:
    """One JSD histogram per known tier, ``tau`` marked, with the share of the tier it admits."""
    tiers = [t for t in TIER_COLOURS if (pool["tier"] == t).any()]
    tiers += sorted(set(pool["tier"]) - set(tiers) - {""})
    edges = np.linspace(0.0, 1.0, 41)
    fig, axes = plt.subplots(len(tiers), 1, figsize=(6.4, 0.4 + 1.35 * len(tiers)), dpi=110, sharex=True, squeeze=False)
    for ax, tier in zip(axes[:, 0], tiers):
        rows = (pool["tier"] == tier).to_numpy()
        ax.hist(pool.loc[rows, "jsd_score"], bins=edges, color=TIER_COLOURS.get(tier, "#7f7f7f"), alpha=0.8)
        ax.axvline(tau, color="black", linewidth=1.2)
        ax.axvline(TAU_AT_P_HALF, color="grey", linestyle=":", linewidth=1)
        ax.text(
            0.99,
            0.9,
            f"{tier}: {int(admitted[rows].sum())} of {int(rows.sum())} admitted",
            ha="right",
            va="top",
            fontsize=8,
            transform=ax.transAxes,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.set_ylabel("images", fontsize=8)
    axes[0, 0].set_title(f"Synthetic JSD per tier; solid line tau = {tau:.3f} bits, dotted p_true = 0.5", fontsize=9)
    axes[-1, 0].set_xlabel("JSD(softmax || one-hot label), bits (score stage)")
    save_figure(fig, path)


def synthetic_pool(dataset: pd.DataFrame, tiers: pd.DataFrame | None) -> pd.DataFrame:
    """The synthetic rows of dataset.csv (``id``, ``jsd_score``) with their ``tier`` ('' when unknown), by id."""
    pool = dataset.loc[dataset["is_syn"] == 1, ["id", "jsd_score"]].sort_values("id").reset_index(drop=True)
    if tiers is not None and len(tiers):
        pool = pool.merge(tiers[["id", "tier"]].astype({"id": int}), on="id", how="left")
    else:
        pool["tier"] = ""
    pool["tier"] = pool["tier"].fillna("").astype(str)
    return pool


def gallery_figures(
    dataset: pd.DataFrame,
    tiers: pd.DataFrame | None,
    images: np.ndarray,
    history: pd.DataFrame,
    run: dict[str, Any],
    per_side: int,
    sample: int,
    seed: int,
) -> dict[str, Any]:
    """``{"synthetic_gallery": draw, "synthetic_tiers": draw}``, each ``draw(path)`` writing its PNG."""
    pool = synthetic_pool(dataset, tiers)
    tau, why = final_tau(history, run)
    if tau is None or pool.empty:
        why = why or "the training set has no synthetic image (no synthetic pool)."
        message = ["Nothing to show: " + why]
        return {
            "synthetic_gallery": lambda p: plot_message("Synthetic pool gallery", message, p),
            "synthetic_tiers": lambda p: plot_message("Synthetic JSD per tier", message, p),
        }
    sel = select_gallery(pool["jsd_score"].to_numpy(), tau, per_side, sample, seed)
    note = strategy_note(run)
    title = f"Synthetic pool at the final epoch: {len(pool)} images, tau {tau:.3f} bits" + (f"\n{note}" if note else "")
    figures = {"synthetic_gallery": lambda p: plot_gallery(pool, images, sel, tau, title, p)}
    if (pool["tier"] != "").any():
        figures["synthetic_tiers"] = lambda p: plot_tier_histograms(pool, sel.admitted, tau, p)
    else:  # no tier file (your own data): the whole pool as one histogram, what tau admits of it
        unknown = pool.assign(tier="all synthetic (tiers unknown)")
        figures["synthetic_tiers"] = lambda p: plot_tier_histograms(unknown, sel.admitted, tau, p)
    return figures
