"""Which threshold rule transfers from val to test? The single-image rule, the quantile, the bootstrap median.

For every finished DVC experiment whose name matches ``--match`` (a regular expression), reads the
val and test predictions its evaluate stage wrote (``data/predictions/val.csv`` and ``test.csv``,
from the repository's DVC cache through the experiment's dvc.lock), tunes a threshold on val with
each rule of ``entromix.evaluation.threshold`` (``single``, ``quantile``) and with the median of
the single-image rule over 1,000 stratified bootstrap resamples of val (``bootstrap_median``: the
alternative measured and not adopted, kept here so the measurement can be repeated), applies it
to test, and reports per rule, over the experiments: the test sensitivity (mean, sd, and the mean
distance to the target), the test specificity, the spread of the threshold itself, and how many
thresholds were degenerate. ``--val-malignant 8 --val-benign 24`` tunes on random val subsets of
that size instead (``--repeats`` per run): the few-image regime of a small val split, on real data.

    python scripts/threshold_methods.py --repo ../lk2 --match '^a-(real|curriculum)-' \\
        --export results/stability/leukemia_dev/threshold_methods.json

Only val is used to tune; test is what the rule is judged on (a property of the rule, measured
over runs, not a choice made per run).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from entromix.evaluation.threshold import TunedThreshold, tune_threshold, tune_threshold_quantile
from entromix.modeling.metrics import threshold_metrics

PREDICTIONS = ("data/predictions/val.csv", "data/predictions/test.csv")
RULES = ("single", "bootstrap_median", "quantile")


def experiment_refs(repo: Path) -> dict[str, str]:
    """name -> git ref of every experiment in ``repo`` (refs/exps/...)."""
    out = subprocess.run(
        ["git", "for-each-ref", "refs/exps", "--format=%(refname)"], cwd=repo, capture_output=True, text=True
    ).stdout
    return {ref.rsplit("/", 1)[-1]: ref for ref in out.split() if not ref.startswith("refs/exps/celery")}


def cached_file(repo: Path, ref: str, path: str) -> pd.DataFrame | None:
    """An output of the experiment at ``ref``, read from the DVC cache by its md5 in dvc.lock."""
    lock = subprocess.run(["git", "show", f"{ref}:dvc.lock"], cwd=repo, capture_output=True, text=True)
    if lock.returncode != 0:
        return None
    for stage in yaml.safe_load(lock.stdout).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                md5 = out["md5"]
                blob = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
                return pd.read_csv(io.StringIO(blob.read_text())) if blob.is_file() else None
    return None


def bootstrap_median(y: np.ndarray, p: np.ndarray, target: float, seed: int, resamples: int = 1000) -> TunedThreshold:
    """The median of the single-image rule over stratified bootstrap resamples of val (malignant and
    benign images each resampled to their own count)."""
    single = tune_threshold(y, p, target)
    if not single.reached:
        return single
    y = np.asarray(y).astype(bool)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    rng = np.random.default_rng(seed)
    values = [
        tune_threshold(y[rows], p[rows], target).threshold
        for rows in (np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]) for _ in range(resamples))
    ]
    return TunedThreshold(float(np.median(values)), target, True, "", "single", single.threshold, len(pos))


def evaluate_rules(val: pd.DataFrame, test: pd.DataFrame, target: float, seed: int) -> dict[str, dict]:
    y_val, p_val = val["label"].to_numpy(), val["probability"].to_numpy(dtype=np.float64)
    y, p = test["label"].to_numpy(), test["probability"].to_numpy(dtype=np.float64)
    out = {}
    for rule, tuned in (
        ("single", tune_threshold(y_val, p_val, target)),
        ("bootstrap_median", bootstrap_median(y_val, p_val, target, seed)),
        ("quantile", tune_threshold_quantile(y_val, p_val, target)),
    ):
        m = threshold_metrics(y, p, tuned.threshold)
        out[rule] = {
            "threshold": tuned.threshold,
            "sensitivity": m["sensitivity"],
            "specificity": m["specificity"],
            "degenerate": tuned.degenerate,
            "reliable": tuned.reliable,
        }
    return out


def summary(rows: list[dict], target: float) -> dict[str, dict]:
    out = {}
    for rule in RULES:
        sens = np.array([r[rule]["sensitivity"] for r in rows], dtype=np.float64)
        spec = np.array([r[rule]["specificity"] for r in rows], dtype=np.float64)
        thr = np.array([r[rule]["threshold"] for r in rows], dtype=np.float64)
        out[rule] = {
            "runs": len(rows),
            "test_sensitivity_mean": round(float(sens.mean()), 4),
            "test_sensitivity_sd": round(float(sens.std(ddof=1)), 4) if len(rows) > 1 else None,
            "distance_to_target_mean": round(float(np.abs(sens - target).mean()), 4),
            "test_specificity_mean": round(float(spec.mean()), 4),
            "test_specificity_sd": round(float(spec.std(ddof=1)), 4) if len(rows) > 1 else None,
            "threshold_sd": round(float(thr.std(ddof=1)), 4) if len(rows) > 1 else None,
            "degenerate": int(sum(r[rule]["degenerate"] for r in rows)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--match", default=".", help="regular expression the experiment names must match")
    parser.add_argument("--target", type=float, default=0.9, help="evaluate.target_sensitivity of the runs")
    parser.add_argument("--seed", type=int, default=0, help="evaluate.seed of the runs")
    parser.add_argument("--export", type=Path)
    parser.add_argument(
        "--val-malignant",
        type=int,
        default=None,
        help="tune on random subsets of val with this many malignant images (the few-image regime of a small "
        "val split) and --val-benign benign ones, --repeats per run",
    )
    parser.add_argument("--val-benign", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    pattern = re.compile(args.match)
    rows = []
    for name, ref in sorted(experiment_refs(args.repo).items()):
        if not pattern.search(name):
            continue
        val, test = (cached_file(args.repo, ref, path) for path in PREDICTIONS)
        if val is None or test is None:
            continue
        if args.val_malignant is None:
            rows.append({"name": name, **evaluate_rules(val, test, args.target, args.seed)})
            continue
        rng = np.random.default_rng(args.seed)
        malignant, benign = np.flatnonzero(val["label"] == 1), np.flatnonzero(val["label"] == 0)
        for r in range(args.repeats):
            keep = np.concatenate(
                [
                    rng.choice(malignant, min(args.val_malignant, len(malignant)), replace=False),
                    rng.choice(benign, min(args.val_benign or len(benign), len(benign)), replace=False),
                ]
            )
            subset = val.iloc[np.sort(keep)]
            rows.append({"name": name, "subset": r, **evaluate_rules(subset, test, args.target, args.seed)})
    if not rows:
        sys.exit(f"threshold_methods: no experiment matching {args.match!r} has val and test predictions in the cache")
    result = {
        "target": args.target,
        "val_subsets": None
        if args.val_malignant is None
        else {"malignant": args.val_malignant, "benign": args.val_benign, "repeats": args.repeats},
        "rows": rows,
        "summary": summary(rows, args.target),
    }
    if args.export:
        args.export.parent.mkdir(parents=True, exist_ok=True)
        args.export.write_text(json.dumps(result, indent=1) + "\n")
    print(
        "| rule | runs | test sensitivity (mean, sd) | mean distance to target | test specificity (mean, sd) "
        "| threshold sd | degenerate |"
    )
    print("|---|---|---|---|---|---|---|")
    for rule, s in result["summary"].items():
        print(
            f"| {rule} | {s['runs']} | {s['test_sensitivity_mean']}, {s['test_sensitivity_sd']} "
            f"| {s['distance_to_target_mean']} | {s['test_specificity_mean']}, {s['test_specificity_sd']} "
            f"| {s['threshold_sd']} | {s['degenerate']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
