"""Sweep exports as tables: one row per experiment, the mean and standard deviation over seeds per
(dataset, sweep, setting, variant) (:func:`summarise`), RESULTS.md's Markdown tables
(:func:`sweep_tables`) and the comparison figures (:func:`comparison_figure`).

Which figures a table shows depends on the sweep's ``report``
(:data:`~entromix.comparison.sweep_metrics.REPORT_COLUMNS`); every metrics key comes from
:data:`~entromix.comparison.sweep_metrics.METRICS`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from entromix.common.errors import DataError
from entromix.comparison.exports import Experiment
from entromix.comparison.sweep_metrics import COLUMNS, HEADERS, KEYS, POOL_KEYS, REPORT_COLUMNS, TIERS
from entromix.comparison.sweeps import Sweep, parse_name


def sweep_rows(experiments: Iterable[Experiment], dataset: str) -> pd.DataFrame:
    """One row per experiment named by :func:`~entromix.comparison.sweeps.experiment_name` (others
    are left out): every column of the metrics table, then the synthetic pool per tier."""
    rows = []
    for exp in experiments:
        parsed = parse_name(exp.name)
        if parsed is None:
            continue
        row: dict[str, Any] = {"dataset": dataset, **parsed, "experiment": exp.name}
        for column, key in (KEYS | POOL_KEYS).items():
            value = exp.metrics.get(key)
            row[column] = np.nan if value is None else float(value)
        if not math.isnan(row["best_epoch"]):
            row["best_epoch"] += 1  # 1-based, as the logs
        rows.append(row)
    columns = ["dataset", "sweep", "variant", "setting", "seed", "experiment", *COLUMNS, *POOL_KEYS]
    return pd.DataFrame(rows, columns=columns)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) standard deviation over seeds per (dataset, sweep, setting, variant).

    A repeat with the same seed as another is an error: it would count one run twice.
    """
    keys = ["dataset", "sweep", "setting", "variant"]
    repeated = rows[rows.duplicated(keys + ["seed"], keep=False)]
    if not repeated.empty:
        names = ", ".join(repeated["experiment"].head(4))
        raise DataError(
            f"experiments {names} repeat a (dataset, sweep, setting, variant, seed); remove one "
            "(dvc exp remove NAME) or keep one export per sweep, so no run counts twice."
        )
    values = list(COLUMNS)
    grouped = rows.groupby(keys, sort=False)
    out = grouped[values].mean().add_suffix("_mean").join(grouped[values].std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped["seed"].nunique()
    for pool in POOL_KEYS:
        out[pool] = grouped[pool].first()
    return out.reset_index()


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def setting_title(setting: str) -> str:
    """``full`` -> "full training set"; ``10`` -> "10 malignant training images"."""
    return "full training set" if setting == "full" else f"{setting} malignant training images"


def _ordered(block: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    rank = {name: i for i, name in enumerate(order)}
    return (
        block.assign(_rank=block["variant"].map(lambda v: rank.get(v, len(rank))))
        .sort_values(["_rank", "variant"], kind="stable")
        .drop(columns="_rank")
    )


def sweep_tables(summary: pd.DataFrame, sweep: Sweep, dataset: str) -> str:
    """Markdown for one sweep on one dataset: a table per setting (full first, then fewer images)."""
    block = summary[(summary["dataset"] == dataset) & (summary["sweep"] == sweep.name)]
    if block.empty:
        return ""
    columns = REPORT_COLUMNS[sweep.report]
    parts = [f"### {dataset}: {sweep.title}\n"]
    if sweep.about:
        parts.append(sweep.about + "\n")
    settings = sorted(block["setting"].unique(), key=lambda s: (0, 0) if s == "full" else (1, -int(s)))
    for setting in settings:
        rows = _ordered(block[block["setting"] == setting], list(sweep.variants))
        seeds = "/".join(str(int(n)) for n in sorted(rows["seeds"].unique()))
        parts.append(f"**{setting_title(setting)}**, mean ± std over {seeds} seeds:\n")
        tiers = sweep.report in ("test", "gate") and rows["pool_good"].notna().any()
        header = ["variant"] + [HEADERS[c] for c in columns]
        if tiers:
            pools = ", ".join(
                f"{t} {int(rows[f'pool_{t}'].dropna().iloc[0])}" for t in TIERS if rows[f"pool_{t}"].notna().any()
            )
            header += [f"eligible at the end: {t}" for t in TIERS]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in rows.to_dict("records"):
            digits = {"best_epoch": 1, "temperature": 2}
            cells = [
                _pm(r[f"{c}_mean"], r[f"{c}_std"] if c != "best_epoch" else np.nan, digits.get(c, 3)) for c in columns
            ]
            if tiers:
                cells += [_pm(r[f"admitted_{t}_mean"], np.nan, 1) for t in TIERS]
            lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
        if tiers:
            parts.append(
                f"Eligible at the end: synthetic images with jsd <= tau at the last epoch, mean over seeds "
                f"(pool: {pools}).\n"
            )
    return "\n".join(parts)


def comparison_figure(summary: pd.DataFrame, sweep: Sweep, path: str) -> None:
    """Bars of test ROC-AUC and tuned balanced accuracy (mean ± std) per variant of a ``test``
    sweep, one panel per dataset and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    block = summary[summary["sweep"] == sweep.name]
    groups = list(block.groupby(["dataset", "setting"], sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.0 + 0.42 * len(sweep.variants) * len(groups)), squeeze=False)
    for ax, ((dataset, setting), rows) in zip(axes[:, 0], groups):
        rows = _ordered(rows, list(sweep.variants))
        y = np.arange(len(rows))
        for offset, (column, label) in enumerate(
            [("test_auc", "test ROC-AUC"), ("test_bacc_tuned", "balanced accuracy, tuned")]
        ):
            ax.barh(
                y + (offset - 0.5) * 0.38,
                rows[f"{column}_mean"],
                0.38,
                xerr=rows[f"{column}_std"].fillna(0),
                label=label,
                capsize=2,
            )
        ax.set_yticks(y, rows["variant"])
        ax.invert_yaxis()
        ax.set_xlim(0.5, 1)
        ax.set_title(f"{dataset}: {setting_title(setting)} (mean ± std over seeds)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
