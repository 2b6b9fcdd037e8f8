"""Where does the spread of a result come from? The classifier's seed, the scorer's seed, the data draw.

Reads DVC experiments named ``<prefix>-<variant>-t<T>-c<C>-d<D>`` (``train.seed`` T, ``score.seed``
C, ``ingest.scarce_seed`` D: one draw of the scarce real images), for example queued with

    dvc exp run --queue -n after-real-t3-c0-d0 -S train.seed=3 -S score.seed=0 -S ingest.scarce_seed=0 \\
        -S curriculum.strategy=real_only

and reports, for every variant and for every variant's paired difference to ``--baseline`` (the
two runs of a (T, C, D) triple), the spread over each factor with the other two held at 0:

* ``classifier seed``: T varies, C = D = 0;
* ``scorer seed``: C varies, T = D = 0;
* ``data draw``: D varies, T = C = 0;
* ``classifier + scorer seed``: T = C = k varies, D = 0 (one data draw, as a user with one dataset has);

each as n, mean, sd and range of the test ROC-AUC (``--metric``), the validation ROC-AUC beside it.

    python scripts/stability_decomposition.py --repo ../lk --prefix after \
        --export results/stability/leukemia_dev/decomposition_after.json
    python scripts/stability_decomposition.py --from results/stability/leukemia_dev/decomposition_after.json

The export holds one row per experiment (name, seeds, variant and its metrics), so the tables can
be remade without the repository that ran them.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

NAME = re.compile(r"^(?P<prefix>[a-z0-9]+)-(?P<variant>[a-z0-9.]+)-t(?P<t>\d+)-c(?P<c>\d+)-d(?P<d>\d+)$")
METRICS = {
    "test_auc": "evaluate.test.roc_auc",
    "val_auc": "train.best.val_auc",
    "val_auc_final": "train.final.val_auc",
    "brier": "evaluate.test.brier",
    "threshold": "evaluate.threshold.tuned",
    "sensitivity_050": "evaluate.test.at_050.sensitivity",
    "sensitivity_tuned": "evaluate.test.at_tuned.sensitivity",
    "specificity_tuned": "evaluate.test.at_tuned.specificity",
    "epoch": "train.best_epoch",
}
FACTORS = {
    "classifier seed": lambda t, c, d: c == 0 and d == 0,
    "scorer seed": lambda t, c, d: t == 0 and d == 0,
    "data draw": lambda t, c, d: t == 0 and c == 0,
    "classifier + scorer seed": lambda t, c, d: t == c and d == 0,
}


def read_experiments(repo: Path, prefix: str, commits: int = 1) -> list[dict]:
    """The experiments named ``<prefix>-...`` (``prefix`` may list several: ``ra,a`` reads both as
    one set, e.g. real_only runs kept from an earlier commit whose training code is unchanged) of
    the last ``commits`` commits."""
    import dvc.api

    prefixes = set(prefix.split(","))
    rows = []
    for row in dvc.api.exp_show(str(repo), num=commits):
        match = NAME.match(str(row.get("Experiment") or ""))
        if not match or match["prefix"] not in prefixes:
            continue
        if row.get("State") not in (None, "Success"):  # queued or running rows show the baseline's metrics
            continue
        # dvc shows "!" where a metric could not be read: kept as missing
        values = {key: _number(row.get(column)) for key, column in METRICS.items()}
        if values["test_auc"] is None:  # queued, running or failed
            continue
        rows.append(
            {
                "name": row["Experiment"],
                "variant": match["variant"],
                "t": int(match["t"]),
                "c": int(match["c"]),
                "d": int(match["d"]),
                **values,
            }
        )
    # the same (variant, seeds) under two prefixes: the later prefix in the list wins (the newer run)
    order = {p: i for i, p in enumerate(prefix.split(","))}
    unique: dict[tuple, dict] = {}
    for row in sorted(rows, key=lambda r: order[r["name"].split("-")[0]]):
        unique[(row["variant"], row["t"], row["c"], row["d"])] = row
    return sorted(unique.values(), key=lambda r: r["name"])


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def stats(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    if not len(a):
        return {"n": 0}
    return {
        "n": len(a),
        "mean": round(float(a.mean()), 4),
        "sd": round(float(a.std(ddof=1)), 4) if len(a) > 1 else None,
        "range": round(float(a.max() - a.min()), 4),
    }


def decomposition(rows: list[dict], baseline: str, metric: str) -> list[dict]:
    by_key = {(r["variant"], r["t"], r["c"], r["d"]): r for r in rows}
    variants = sorted({r["variant"] for r in rows}, key=lambda v: (v != baseline, v))
    table = []
    for factor, keep in FACTORS.items():
        for variant in variants:
            runs = [r for r in rows if r["variant"] == variant and keep(r["t"], r["c"], r["d"])]
            entry = {"factor": factor, "variant": variant, metric: stats([r[metric] for r in runs])}
            entry["val_auc"] = stats([r["val_auc"] for r in runs if r["val_auc"] is not None])
            if variant != baseline:
                diffs = [
                    r[metric] - by_key[(baseline, r["t"], r["c"], r["d"])][metric]
                    for r in runs
                    if (baseline, r["t"], r["c"], r["d"]) in by_key
                ]
                entry["paired_difference"] = stats(diffs)
            table.append(entry)
    return table


def markdown(table: list[dict], baseline: str, metric: str) -> str:
    lines = [
        f"| factor varied | variant | n | {metric} mean | sd | range | val AUC sd | paired difference to {baseline}: "
        "mean | sd | range |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        m, v, p = e[metric], e["val_auc"], e.get("paired_difference", {})
        if not m.get("n"):
            continue
        cells = [e["factor"], e["variant"], m["n"], m.get("mean"), m.get("sd"), m.get("range"), v.get("sd")]
        cells += [p.get("mean", "-"), p.get("sd", "-"), p.get("range", "-")] if p else ["-", "-", "-"]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--repo", type=Path, help="the DVC repository whose experiments to read")
    source.add_argument("--from", dest="export_in", type=Path, help="an export written by --export")
    parser.add_argument("--prefix", default="after", help="the experiments' name prefix")
    parser.add_argument("--commits", type=int, default=1, help="read the experiments of this many commits")
    parser.add_argument("--baseline", default="real", help="the variant the paired differences are taken to")
    parser.add_argument("--metric", default="test_auc", choices=sorted(METRICS))
    parser.add_argument("--export", type=Path, help="write the rows and the table here (JSON)")
    args = parser.parse_args(argv)
    if args.export_in:
        data = json.loads(args.export_in.read_text())
        rows, prefix = data["rows"], data["prefix"]
    else:
        rows, prefix = read_experiments(args.repo, args.prefix, args.commits), args.prefix
    if not rows:
        sys.exit(f"stability_decomposition: no finished experiments named {prefix}-<variant>-t<T>-c<C>-d<D>")
    table = decomposition(rows, args.baseline, args.metric)
    if args.export:
        args.export.parent.mkdir(parents=True, exist_ok=True)
        args.export.write_text(json.dumps({"prefix": prefix, "rows": rows, "table": table}, indent=1) + "\n")
    print(markdown(table, args.baseline, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
