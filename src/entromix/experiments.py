"""Compare DVC experiments: which strategy, in which setting, over how many seeds.

The experiments are ordinary DVC experiments (``dvc exp run --queue -S ...``, see
``scripts/run_experiments.py``); ``dvc exp show --json`` exports their params and metrics. This
module turns such exports into one row per (dataset, setting, strategy) with the mean and the
standard deviation over seeds, and renders ``RESULTS.md`` and a figure
(``scripts/compare_experiments.py``).

* **strategy** (:func:`strategy_label`): ``curriculum.strategy``, and for the curriculum what
  differs from the reference design (jsd_end 1.0, hard gate, linear pacing, no re-scoring,
  at most half a batch synthetic): e.g. ``curriculum, jsd_end 0.311`` or ``curriculum, soft gate``.
* **setting** (:func:`setting_label`): ``full`` or ``10 malignant`` (``ingest.scarce_train_images``).
* **seed**: ``train.seed``; experiments that differ only in the seed are repeats.

Experiments named ``scorer-*`` are the scorer ablation (the score stage alone, run with target
``score``; their train and evaluate metrics are the baseline's and are not read):
:func:`scorer_rows` and :func:`scorer_table` report how well the JSD ranked the known tiers for
each scoring choice (augmentation, epochs, folds, temperature scaling), over ``score.seed``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

import numpy as np
import pandas as pd
import yaml

from entromix.errors import DataError

Report = Literal["score", "val", "test"]
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
        raise DataError(f"{path}: 'name' must be lower-case letters and digits (it prefixes experiment names), got {name!r}.")
    report = data.get("report", "test")
    if report not in ("score", "val", "test"):
        raise DataError(f"{path}: 'report' is {report!r}; use score, val or test.")
    variants = {}
    for variant, changes in data["variants"].items():
        if not VARIANT_RE.fullmatch(str(variant)):
            raise DataError(f"{path}: variant name {variant!r} must be lower-case letters, digits, '.' and '-'.")
        if not isinstance(changes or {}, dict):
            raise DataError(f"{path}: variants.{variant} must be a mapping of dotted params keys to values.")
        variants[str(variant)] = dict(changes or {})
    return Sweep(name=name, title=str(data.get("title", name)), about=str(data.get("about", "")).strip(),
                 report=report, target=data.get("target"), seed_keys=tuple(data.get("seed_keys", ["train.seed"])),
                 settings=tuple(str(s) for s in data.get("settings", ["full"])), base=dict(data.get("base") or {}),
                 variants=variants)  # fmt: skip


def experiment_name(sweep: str, variant: str, setting: str, seed: int) -> str:
    """``<sweep>-<variant>-<full|nN>-s<seed>``, the DVC experiment name (parsed by :func:`parse_name`)."""
    return f"{sweep}-{variant}-{'full' if setting == 'full' else 'n' + str(setting)}-s{seed}"


def parse_name(name: str) -> dict[str, Any] | None:
    """The sweep, variant, setting and seed of an experiment name, or None for another name."""
    match = NAME_RE.match(name or "")
    if not match:
        return None
    setting = match["setting"]
    return {"sweep": match["sweep"], "variant": match["variant"],
            "setting": "full" if setting == "full" else setting[1:], "seed": int(match["seed"])}  # fmt: skip

#: The reference design's curriculum; a strategy label names what an experiment changes from it.
REFERENCE_CURRICULUM = {"jsd_end": 1.0, "gate": "hard", "pacing": "linear", "rescore_every": 0,
                        "max_synthetic_fraction": 0.5}  # fmt: skip

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


def experiments_from_exp_show(exported: Any, source: str = "dvc exp show --json") -> list[Experiment]:
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


SCORER_PREFIX = "scorer-"
#: The score stage's CPU profile; a scorer variant is named by what it changes.
REFERENCE_SCORER = {"augment": True, "epochs": 8, "folds": 4, "temperature_scaling": True}


def is_scorer_ablation(experiment: Experiment) -> bool:
    return experiment.name.startswith(SCORER_PREFIX)


def scorer_label(params: dict[str, Any]) -> str:
    """What a scoring run changes from the CPU profile (``base`` when nothing)."""
    changes = []
    for key, reference in REFERENCE_SCORER.items():
        value = params.get(f"score.{key}", reference)
        if value != reference:
            changes.append(f"{key} {str(value).lower()}")
    return ", ".join(changes) or "base"


def scorer_rows(experiments: Iterable[Experiment], dataset: str) -> pd.DataFrame:
    rows = []
    for exp in experiments:
        row = {"dataset": dataset, "variant": scorer_label(exp.params), "seed": exp.params.get("score.seed"),
               "experiment": exp.name}  # fmt: skip
        for column, key in SCORE_METRICS:
            value = exp.metrics.get(key)
            row[column] = np.nan if value is None else float(value)
        rows.append(row)
    return pd.DataFrame(rows, columns=["dataset", "variant", "seed", "experiment"] + [c for c, _ in SCORE_METRICS])


def scorer_table(rows: pd.DataFrame) -> str:
    """Markdown: per dataset and scoring variant, the tier AUROCs and OOF AUC, mean ± std over seeds."""
    if rows.empty:
        return ""
    parts = []
    for dataset, block in rows.groupby("dataset", sort=False):
        grouped = block.groupby("variant", sort=False)
        lines = [f"### {dataset}: scorer ablation\n",
                 "How well the JSD ranks the known synthetic tiers (AUROC; 1 = every worse image scores above "
                 f"every good one) for each scoring choice, mean ± std over {grouped['seed'].nunique().max()} "
                 "score seeds, full setting.\n",
                 "| scoring | hallucinated vs good | degraded vs good | reference OOF ROC-AUC | seeds |",
                 "|---|---|---|---|---|"]  # fmt: skip
        for variant, group in grouped:
            cells = [_pm(group[c].mean(), group[c].std(ddof=1)) for c, _ in SCORE_METRICS]
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {group['seed'].nunique()} |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def strategy_label(params: dict[str, Any]) -> str:
    """``curriculum.strategy`` plus, for the curriculum, what differs from the reference design."""
    strategy = str(params.get("curriculum.strategy", "curriculum"))
    if strategy != "curriculum":
        return strategy
    changes = []
    jsd_end = float(params.get("curriculum.jsd_end", 1.0))
    if not math.isclose(jsd_end, REFERENCE_CURRICULUM["jsd_end"]):
        changes.append(f"jsd_end {jsd_end:g}")
    if params.get("curriculum.gate", "hard") != "hard":
        changes.append(f"{params['curriculum.gate']} gate")
    if params.get("curriculum.pacing", "linear") != "linear":
        changes.append(f"{params['curriculum.pacing']} pacing")
    if int(params.get("curriculum.rescore_every", 0) or 0) > 0:
        changes.append(f"rescore every {int(params['curriculum.rescore_every'])}")
    fraction = float(params.get("curriculum.max_synthetic_fraction", 0.5))
    if not math.isclose(fraction, REFERENCE_CURRICULUM["max_synthetic_fraction"]):
        changes.append(f"synthetic <= {fraction:g} of a batch")
    return ", ".join(["curriculum", *changes])


def setting_label(params: dict[str, Any]) -> str:
    """``full`` or ``<N> <label>`` when ``ingest.scarce_train_images`` limits the real training set."""
    limit = params.get("ingest.scarce_train_images")
    if limit is None:
        return "full"
    return f"{int(limit)} {params.get('ingest.scarce_label', 'malignant')}"


def _tier_admitted(metrics: dict[str, Any], tier: str) -> float | None:
    value = metrics.get(f"train.synthetic.{tier}.eligible_final")
    return None if value is None else float(value)


def experiment_rows(experiments: Iterable[Experiment], dataset: str) -> pd.DataFrame:
    """One row per experiment: dataset, setting, strategy, seed, the test metrics, tiers, JSD ranking."""
    rows = []
    for exp in experiments:
        row: dict[str, Any] = {
            "dataset": dataset, "setting": setting_label(exp.params), "strategy": strategy_label(exp.params),
            "seed": exp.params.get("train.seed"), "experiment": exp.name,
        }  # fmt: skip
        for column, key in TEST_METRICS + SCORE_METRICS:
            value = exp.metrics.get(key)
            row[column] = np.nan if value is None else float(value)
        best = exp.metrics.get("train.best_epoch")
        row["best_epoch"] = np.nan if best is None else float(best) + 1  # 1-based, as the logs
        row["admitted_all"] = _tier_admitted(exp.metrics, "all")
        for tier in TIERS:
            row[f"admitted_{tier}"] = _tier_admitted(exp.metrics, tier)
            row[f"pool_{tier}"] = exp.metrics.get(f"train.synthetic.{tier}.pool")
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) standard deviation over seeds per (dataset, setting, strategy).

    A repeat with the same seed as another is an error: it would count one run twice.
    """
    keys = ["dataset", "setting", "strategy"]
    repeated = rows[rows.duplicated(keys + ["seed"], keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]
        names = ", ".join(repeated.loc[(repeated[keys + ["seed"]] == first[keys + ["seed"]]).all(axis=1), "experiment"])
        raise DataError(f"experiments {names} repeat {first['strategy']!r} ({first['setting']}, seed {first['seed']}) "
                        f"on {first['dataset']}; remove one (dvc exp remove NAME) so no run counts twice.")  # fmt: skip
    values = [c for c, _ in TEST_METRICS] + ["best_epoch"] + [c for c in rows.columns if c.startswith("admitted_")]
    grouped = rows.groupby(keys, sort=False)
    out = grouped[values].mean().add_suffix("_mean").join(grouped[values].std(ddof=1).add_suffix("_std"))
    out["seeds"] = grouped["seed"].nunique()
    for column, _ in SCORE_METRICS:
        out[column] = grouped[column].mean()
    for tier in TIERS:
        out[f"pool_{tier}"] = grouped[f"pool_{tier}"].first()
    return out.reset_index()


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _order(summary: pd.DataFrame, strategy_order: list[str] | None) -> pd.DataFrame:
    order = strategy_order or ["real_only", "naive", "random", "curriculum"]
    rank = {name: i for i, name in enumerate(order)}
    return summary.assign(_rank=summary["strategy"].map(lambda s: rank.get(s, len(rank)))).sort_values(
        ["dataset", "setting", "_rank", "strategy"], kind="stable", key=lambda c: c if c.name != "setting" else c.map(
            lambda s: (0, 0) if s == "full" else (1, -int(str(s).split()[0])))).drop(columns="_rank")  # fmt: skip


def markdown_tables(summary: pd.DataFrame, strategy_order: list[str] | None = None) -> str:
    """Per dataset and setting: the test metrics table, the admitted-per-tier table and the JSD ranking."""
    parts = []
    summary = _order(summary, strategy_order)
    for (dataset, setting), block in summary.groupby(["dataset", "setting"], sort=False):
        parts.append(f"### {dataset}: {setting}\n")
        seeds = sorted(set(block["seeds"]))
        parts.append(f"Test set, mean ± standard deviation over {'/'.join(map(str, seeds))} seeds "
                     "(sens/spec/bal. acc. at the 0.5 threshold and at the threshold tuned on val; best epoch: "
                     "the checkpoint evaluated, chosen by val AUC, mean over seeds).\n")  # fmt: skip
        header = ("| strategy | ROC-AUC | sens 0.5 | spec 0.5 | bal. acc. 0.5 | sens tuned | spec tuned | "
                  "bal. acc. tuned | best epoch |\n|---|---|---|---|---|---|---|---|---|")  # fmt: skip
        lines = [header]
        for row in block.itertuples(index=False):
            r = row._asdict()
            cells = [_pm(r[f"{c}_mean"], r[f"{c}_std"]) for c, _ in TEST_METRICS] + [_pm(r["best_epoch_mean"], np.nan, 1)]
            lines.append(f"| {r['strategy']} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
        pools = {t: block[f"pool_{t}"].dropna() for t in TIERS}
        if all(len(p) for p in pools.values()):
            pool_text = ", ".join(f"{t} {int(pools[t].iloc[0])}" for t in TIERS)
            tier_lines = [f"Synthetic images eligible at the last epoch (mean over seeds; pool: {pool_text}).\n",
                          "| strategy | all | good | degraded | hallucinated |\n|---|---|---|---|---|"]  # fmt: skip
            for row in block.itertuples(index=False):
                r = row._asdict()
                tier_lines.append(f"| {r['strategy']} | " + " | ".join(
                    _pm(r[f"admitted_{t}_mean"], np.nan, 1) for t in ("all", *TIERS)) + " |")  # fmt: skip
            parts.append("\n".join(tier_lines) + "\n")
        ranking = block.iloc[0]
        if not math.isnan(ranking["auroc_halluc_vs_good"]):
            parts.append(
                f"How well the score stage's JSD ranked the known tiers (AUROC, 1 = every worse image scored "
                f"above every good one; mean over the scoring runs): hallucinated vs good "
                f"{ranking['auroc_halluc_vs_good']:.3f}, degraded vs good {ranking['auroc_degraded_vs_good']:.3f}; "
                f"reference classifier out-of-fold ROC-AUC {ranking['oof_auc']:.3f}.\n"
            )
    return "\n".join(parts)


def comparison_figure(summary: pd.DataFrame, path: str, strategy_order: list[str] | None = None) -> None:
    """Bars of test ROC-AUC and tuned balanced accuracy (mean ± std) per strategy, one panel per
    dataset and setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = _order(summary, strategy_order)
    groups = list(summary.groupby(["dataset", "setting"], sort=False))
    fig, axes = plt.subplots(len(groups), 1, figsize=(9, 2.2 + 0.45 * summary["strategy"].nunique() * len(groups)),
                             squeeze=False)  # fmt: skip
    for ax, ((dataset, setting), block) in zip(axes[:, 0], groups):
        y = np.arange(len(block))
        for offset, (column, label) in enumerate([("roc_auc", "ROC-AUC"), ("bacc_tuned", "balanced accuracy, tuned")]):
            ax.barh(y + (offset - 0.5) * 0.38, block[f"{column}_mean"], 0.38,
                    xerr=block[f"{column}_std"].fillna(0), label=label, capsize=2)  # fmt: skip
        ax.set_yticks(y, block["strategy"])
        ax.invert_yaxis()
        ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)  # chance
        ax.set_xlim(0, 1)
        ax.set_title(f"{dataset}: {setting} (mean ± std over seeds)", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
