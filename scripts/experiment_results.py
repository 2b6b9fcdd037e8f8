"""Sweeps of DVC experiments: which variant, in which setting, over how many seeds.

A sweep (``sweeps/*.yaml``, :func:`load_sweep`) is a set of named variants, each a handful of
``-S`` overrides on a common base; ``scripts/run_experiments.py`` queues one ordinary DVC
experiment per (setting, variant, seed), named ``<sweep>-<variant>-<full|nN>-s<seed>``
(:func:`experiment_name`), and exports ``dvc.api.exp_show``'s rows (earlier exports: ``dvc exp show
--json``; both are read). This module turns such exports
into one row per (dataset, sweep, setting, variant) with the mean and the standard deviation
over seeds (:func:`summarise`), and renders the tables of ``RESULTS.md``
(``scripts/compare_experiments.py``). What a table shows depends on the sweep's ``report``:

* ``score``: the scorer's out-of-fold ROC-AUC and how well its JSD ranks the known synthetic
  tiers (score-stage-only sweeps);
* ``scores``: the same AUROCs for every quality score the score stage computes (``ensemble``
  = the reference JSD, ``knn``, ``mahalanobis``, ``rank_mean``), from ``tier_auroc_by_score``;
* ``val``: validation metrics, for choosing a recipe (never test);
* ``test``: the test metrics of a comparison, with the validation AUC beside them and the
  synthetic images admitted per known tier;
* ``gate``: how well the scorer ranked the tiers next to what the gate then did downstream (test
  AUC and the images admitted per tier), for scorer changes run through the whole pipeline.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from entromix.common.errors import DataError

Report = Literal["score", "scores", "val", "test", "gate"]
NAME_RE = re.compile(r"^(?P<sweep>[a-z0-9]+)-(?P<variant>[a-z0-9][a-z0-9.-]*?)-(?P<setting>full|n\d+)-s(?P<seed>\d+)$")
VARIANT_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")


@dataclass(frozen=True)
class Sweep:
    """A sweep file (``sweeps/*.yaml``): named variants of ``-S`` overrides on a common base."""

    name: str
    title: str
    about: str
    report: Report
    target: str | None
    seed_keys: tuple[str, ...]
    settings: tuple[str, ...]
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such sweep file (see sweeps/ for examples).")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML ({exc}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("variants"), dict) or not data["variants"]:
        raise DataError(f"{path}: expected a mapping with a non-empty 'variants' mapping (name -> overrides).")
    name = str(data.get("name", ""))
    if not re.fullmatch(r"[a-z0-9]+", name):
        raise DataError(
            f"{path}: 'name' must be lower-case letters and digits (it prefixes experiment names), got {name!r}."
        )
    report = data.get("report", "test")
    if report not in ("score", "scores", "val", "test", "gate"):
        raise DataError(f"{path}: 'report' is {report!r}; use score, scores, val, test or gate.")
    variants = {}
    for variant, changes in data["variants"].items():
        if not VARIANT_RE.fullmatch(str(variant)):
            raise DataError(f"{path}: variant name {variant!r} must be lower-case letters, digits, '.' and '-'.")
        if not isinstance(changes or {}, dict):
            raise DataError(f"{path}: variants.{variant} must be a mapping of dotted params keys to values.")
        variants[str(variant)] = dict(changes or {})
    return Sweep(
        name=name,
        title=str(data.get("title", name)),
        about=str(data.get("about", "")).strip(),
        report=report,
        target=data.get("target"),
        seed_keys=tuple(data.get("seed_keys", ["train.seed"])),
        settings=tuple(str(s) for s in data.get("settings", ["full"])),
        base=dict(data.get("base") or {}),
        variants=variants,
    )


def experiment_name(sweep: str, variant: str, setting: str, seed: int) -> str:
    """``<sweep>-<variant>-<full|nN>-s<seed>``, the DVC experiment name (parsed by :func:`parse_name`)."""
    return f"{sweep}-{variant}-{'full' if setting == 'full' else 'n' + str(setting)}-s{seed}"


def parse_name(name: str) -> dict[str, Any] | None:
    """The sweep, variant, setting and seed of an experiment name, or None for another name."""
    match = NAME_RE.match(name or "")
    if not match:
        return None
    setting = match["setting"]
    return {
        "sweep": match["sweep"],
        "variant": match["variant"],
        "setting": "full" if setting == "full" else setting[1:],
        "seed": int(match["seed"]),
    }


#: The reference design's curriculum; a strategy label names what an experiment changes from it.
REFERENCE_CURRICULUM = {
    "jsd_end": 1.0,
    "gate": "hard",
    "pacing": "linear",
    "rescore_every": 0,
    "max_synthetic_fraction": 0.5,
}

#: (column, metrics key) reported per strategy, mean and std over seeds.
TEST_METRICS = [
    ("roc_auc", "evaluate.test.roc_auc"),
    ("sens_050", "evaluate.test.at_050.sensitivity"),
    ("spec_050", "evaluate.test.at_050.specificity"),
    ("bacc_050", "evaluate.test.at_050.balanced_accuracy"),
    ("sens_tuned", "evaluate.test.at_tuned.sensitivity"),
    ("spec_tuned", "evaluate.test.at_tuned.specificity"),
    ("bacc_tuned", "evaluate.test.at_tuned.balanced_accuracy"),
]
#: How well the score stage's JSD ranked the known tiers (AUROC: the worse tier scores higher).
SCORE_METRICS = [
    ("auroc_halluc_vs_good", "score.tier_auroc_hallucinated_vs_good"),
    ("auroc_degraded_vs_good", "score.tier_auroc_degraded_vs_good"),
    ("oof_auc", "score.oof_auc"),
]
TIERS = ("good", "degraded", "hallucinated")


@dataclass(frozen=True)
class Experiment:
    """One finished experiment: its name, flattened params (``train.seed``) and metrics
    (``evaluate.test.roc_auc``), each keyed by the dotted path inside its file."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, Any]


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _merge_files(files: dict | None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for content in (files or {}).values():
        merged.update(flatten((content or {}).get("data") or {}))
    return merged


#: the ``format`` of the exports scripts/run_experiments.py writes: ``dvc.api.exp_show``'s rows
API_FORMAT = "dvc.api.exp_show"
#: the columns of a ``dvc.api.exp_show`` row that describe the experiment rather than a value
API_HEADERS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
#: how ``dvc.api.exp_show`` writes a value that is missing (it formats every value as text and
#: parses numbers back: an absent key or a null is the string "None", a file it could not read "!")
API_MISSING = ("None", "!")
#: where a ``path:key`` column comes from a params file (DVC prefixes a key with its file's path
#: when another file has the same key: ``params.yaml:train.epochs`` beside ``metrics/train.json:train.epochs``)
PARAMS_SUFFIXES = (".yaml", ".yml", ".toml", ".py")


def experiments_from_exp_show(exported: Any, source: str = "dvc exp show --json") -> list[Experiment]:
    """The finished experiments of an export: either what scripts/run_experiments.py writes
    (``{"format": "dvc.api.exp_show", "rows": [...]}``, :func:`experiments_from_api_rows`) or a
    ``dvc exp show --json`` list, the format of the exports made before it used ``dvc.api``.
    """
    if isinstance(exported, dict) and exported.get("format") == API_FORMAT:
        rows = exported.get("rows")
        if not isinstance(rows, list):
            raise DataError(f"{source}: a {API_FORMAT} export needs a list of rows under 'rows'.")
        return experiments_from_api_rows(rows)
    return experiments_from_cli_json(exported, source)


def experiments_from_api_rows(rows: list[dict[str, Any]]) -> list[Experiment]:
    """The finished experiments among ``dvc.api.exp_show()`` rows (DVC 3): one flat dict per row,
    with ``Experiment`` (the name), ``rev``, ``typ`` (``workspace``, ``baseline``, or
    ``branch_commit`` / ``branch_base`` for an experiment), ``State`` (None once finished;
    ``Queued``, ``Running`` and ``Failed`` rows are skipped), then one column per param and metric
    key (``train.seed``, ``evaluate.test.roc_auc``; ``path:key`` where two files share a key) and
    one per dependency. An unprefixed key is offered as both a param and a metric: the reports read
    metrics by their file's top-level key (``evaluate.``, ``train.``, ``score.``)."""
    found: dict[str, Experiment] = {}
    for row in rows:
        if not isinstance(row, dict) or str(row.get("typ")) not in ("branch_commit", "branch_base"):
            continue
        if row.get("State") not in (None, "None", "Success"):
            continue
        params: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        for column, cell in row.items():
            if column in API_HEADERS:
                continue
            value = None if cell in API_MISSING else cell
            path, _, key = column.partition(":")
            if not key:  # no file prefix
                path, key = "", path
            if not path:
                params[key] = metrics[key] = value
            elif path.endswith(PARAMS_SUFFIXES):
                params[key] = value
            else:
                metrics[key] = value
        if "evaluate.test.roc_auc" not in metrics and "score.oof_auc" not in metrics:
            continue
        name = str(row.get("Experiment") or row.get("rev") or "")
        found[f"{name}@{row.get('rev')}"] = Experiment(name, params, metrics)
    return list(found.values())


def experiments_from_cli_json(exported: Any, source: str = "dvc exp show --json") -> list[Experiment]:
    """The finished experiments in a ``dvc exp show --json`` export (DVC 3).

    The export is a list of commits (``workspace`` first), each with ``experiments``: a list of
    runs whose ``revs`` hold ``{"rev", "name", "data": {"params", "metrics"}}``. The workspace and
    the commits themselves are left out (they repeat an experiment or predate it). Runs still
    queued or running (their ``executor.state``; they show the baseline's metrics), runs that
    failed, and runs with neither evaluate nor score metrics are skipped.
    """
    if not isinstance(exported, list):
        raise DataError(f"{source}: expected the JSON list that `dvc exp show --json` writes.")
    found: dict[str, Experiment] = {}
    for commit in exported:
        for run in (commit or {}).get("experiments") or []:
            state = ((run or {}).get("executor") or {}).get("state", "success")
            if state != "success":
                continue
            for rev in (run or {}).get("revs") or []:
                data = (rev or {}).get("data") or {}
                if rev.get("error") or data.get("status") not in (None, "Success"):
                    continue
                metrics = _merge_files(data.get("metrics"))
                if "evaluate.test.roc_auc" not in metrics and "score.oof_auc" not in metrics:
                    continue
                name = rev.get("name") or run.get("name") or str(rev.get("rev", ""))[:7]
                found[str(rev.get("rev", name))] = Experiment(name, _merge_files(data.get("params")), metrics)
    return list(found.values())


#: (column, metrics key, header) of every figure a table can show.
METRICS = [
    ("oof_auc", "score.oof_auc", "scorer OOF ROC-AUC"),
    ("auroc_halluc", "score.tier_auroc_hallucinated_vs_good", "JSD AUROC hallucinated vs good"),
    ("auroc_degraded", "score.tier_auroc_degraded_vs_good", "JSD AUROC degraded vs good"),
    ("temperature", "score.temperature", "temperature"),
    *[
        (f"auroc_{tier}_{name}", f"score.tier_auroc_by_score.{name}.{tier}_vs_good", f"{name}: {tier} vs good")
        for name in ("ensemble", "knn", "mahalanobis", "rank_mean")
        for tier in ("hallucinated", "degraded")
    ],
    ("val_auc_final", "train.final.val_auc", "val ROC-AUC, last epoch"),
    ("val_loss_final", "train.final.val_loss", "val loss, last epoch"),
    ("val_bacc_final", "train.final.val_balanced_accuracy", "val bal. acc. at 0.5, last epoch"),
    ("val_auc_best", "train.best.val_auc", "val ROC-AUC, best epoch"),
    ("best_epoch", "train.best_epoch", "best epoch"),
    ("test_auc", "evaluate.test.roc_auc", "test ROC-AUC"),
    ("test_bacc_tuned", "evaluate.test.at_tuned.balanced_accuracy", "test bal. acc., tuned"),
    ("test_sens_tuned", "evaluate.test.at_tuned.sensitivity", "test sens., tuned"),
    ("test_spec_tuned", "evaluate.test.at_tuned.specificity", "test spec., tuned"),
    ("test_bacc_050", "evaluate.test.at_050.balanced_accuracy", "test bal. acc. at 0.5"),
    ("admitted_good", "train.synthetic.good.eligible_final", "good"),
    ("admitted_degraded", "train.synthetic.degraded.eligible_final", "degraded"),
    ("admitted_hallucinated", "train.synthetic.hallucinated.eligible_final", "hallucinated"),
]
HEADERS = {column: header for column, _, header in METRICS}
REPORT_COLUMNS: dict[str, list[str]] = {
    "score": ["oof_auc", "auroc_halluc", "auroc_degraded", "temperature"],
    # every quality score of the score stage (metrics/score.json tier_auroc_by_score), AUROC vs the good tier
    "scores": [
        "oof_auc",
        *[
            f"auroc_{t}_{n}"
            for n in ("ensemble", "knn", "mahalanobis", "rank_mean")
            for t in ("hallucinated", "degraded")
        ],
    ],
    "val": ["val_auc_final", "val_loss_final", "val_bacc_final", "val_auc_best", "best_epoch"],
    "test": [
        "test_auc",
        "test_bacc_tuned",
        "test_sens_tuned",
        "test_spec_tuned",
        "test_bacc_050",
        "val_auc_final",
        "best_epoch",
    ],
    "gate": ["auroc_halluc", "auroc_degraded", "oof_auc", "test_auc", "test_bacc_tuned", "val_auc_final"],
}
TIERS = ("good", "degraded", "hallucinated")


def sweep_rows(experiments: Iterable[Experiment], dataset: str) -> pd.DataFrame:
    """One row per experiment named by :func:`experiment_name` (others are left out)."""
    rows = []
    for exp in experiments:
        parsed = parse_name(exp.name)
        if parsed is None:
            continue
        row: dict[str, Any] = {"dataset": dataset, **parsed, "experiment": exp.name}
        for column, key, _ in METRICS:
            value = exp.metrics.get(key)
            row[column] = np.nan if value is None else float(value)
        if not math.isnan(row["best_epoch"]):
            row["best_epoch"] += 1  # 1-based, as the logs
        for tier in TIERS:
            pool = exp.metrics.get(f"train.synthetic.{tier}.pool")
            row[f"pool_{tier}"] = np.nan if pool is None else float(pool)
        rows.append(row)
    columns = ["dataset", "sweep", "variant", "setting", "seed", "experiment"] + [c for c, _, _ in METRICS]
    return pd.DataFrame(rows, columns=columns + [f"pool_{t}" for t in TIERS])


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
    values = [c for c, _, _ in METRICS]
    grouped = rows.groupby(keys, sort=False)
    out = grouped[values].mean().add_suffix("_mean").join(grouped[values].std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped["seed"].nunique()
    for tier in TIERS:
        out[f"pool_{tier}"] = grouped[f"pool_{tier}"].first()
    return out.reset_index()


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def setting_title(setting: str) -> str:
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
