"""How much does what the pipeline reports depend on the CPU, the thread count and the seed?

Reruns the whole pipeline (``dvc repro -f``) in scratch copies of this project under perturbations
that stand in for other machines and other draws, and reports, per run and as a spread (range,
sd), what a user reads: the test ROC-AUC, sensitivity and specificity at 0.5 and at the tuned
threshold, the threshold, the Brier score, the evaluated epoch, and how far the scorer's JSD of
the same images drifts between runs that differ only in the machine (same seeds).

    python benchmarks/bench_stability.py --out results/stability/demo/stability.json   # the demo, 8 runs
    python benchmarks/bench_stability.py --isa AVX2 --threads 1 --seeds 0-7 --seed-keys train.seed \\
        -S ingest.data_root=/data/leukemia_dev -S ingest.scarce_train_images=10 ...  # any data via params

Perturbations (every combination is one run):

* ``--isa``: ``ONEDNN_MAX_CPU_ISA`` (oneDNN's own variable: the convolutions as on a CPU without
  AVX-512 (``AVX2``), or with it (``AVX512_CORE``); ``DEFAULT`` leaves it unset). On a CPU without
  AVX-512 the two give the same code path, and the report says which CPU it ran on.
* ``--threads``: ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` of every stage (reductions split
  differently round differently).
* ``--seeds``: each value goes into every key of ``--seed-keys`` (default ``train.seed`` and
  ``score.seed``).

``--scorer-only`` runs the score stage (and what it needs) and reports the scorer's own figures
and its JSD drift: the cheap way to compare scorer recipes (``-S score.tta=true`` ...) for how
much their scores move with the machine.

Every run starts from the same copy of the working tree (code, dvc.yaml, params.yaml; outputs and
DVC cache left behind) with ``-S`` overrides applied to params.yaml, so uncommitted changes are
measured too. ``--jobs N`` runs N at a time, each in its own copy (their thread counts add up:
on 2 cores use ``--jobs 2`` only with ``--threads 1``). The JSON holds every run's metrics, the
spreads and the machine; the Markdown table is printed (BENCHMARKS.md) and written beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
#: copied into every scratch project: what `dvc repro` needs and nothing it produces
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore", "params.yaml", "models/.gitignore")
PROJECT_DIRS = ("pipeline", "src", "inbox", "profiles")
#: the figures of one run (rows of the table) and whether higher is the better direction
METRICS = (
    "val_auc",
    "val_loss",
    "roc_auc",
    "sensitivity_050",
    "specificity_050",
    "sensitivity_tuned",
    "specificity_tuned",
    "threshold",
    "brier",
    "epoch",
)


@dataclass(frozen=True)
class Perturbation:
    isa: str  # ONEDNN_MAX_CPU_ISA, or DEFAULT (unset)
    threads: int
    seed: int

    @property
    def name(self) -> str:
        return f"isa-{self.isa.lower()}-t{self.threads}-s{self.seed}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if self.isa != "DEFAULT":
            env["ONEDNN_MAX_CPU_ISA"] = self.isa
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        return env


def parse_list(text: str, kind: type = str) -> list:
    """``a,b,c``; for integers also ranges ``0-7``."""
    out: list = []
    for part in text.split(","):
        part = part.strip()
        if kind is int and "-" in part[1:]:
            low, high = part.split("-", 1)
            out.extend(range(int(low), int(high) + 1))
        elif part:
            out.append(kind(part))
    return out


def parse_override(text: str) -> tuple[list[str], object]:
    """``section.key=value`` with a YAML value (``null``, ``10``, ``[a, b]``, ``{A: a}``)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        sys.exit(f"bench_stability: -S {text!r} is not section.key=value (for example -S train.epochs=10)")
    key, value = text.split("=", 1)
    return key.split("."), yaml.safe_load(value)


def apply_overrides(params: dict, overrides: list[tuple[list[str], object]], source: str) -> dict:
    for path, value in overrides:
        node = params
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                sys.exit(f"bench_stability: {'.'.join(path)} is not a key of {source}")
            node = node[part]
        if path[-1] not in node:
            sys.exit(f"bench_stability: {'.'.join(path)} is not a key of {source} (a typo?)")
        node[path[-1]] = value
    return params


def make_copy(source: Path, dest: Path) -> None:
    """The project's pipeline, code and params at ``dest``, as a git repository with one commit."""
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        if (source / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, dest / name)
    for name in PROJECT_DIRS:
        if (source / name).is_dir():
            shutil.copytree(source / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (dest / ".dvc").mkdir()
    shutil.copy(source / ".dvc" / "config", dest / ".dvc" / "config")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
    subprocess.run(git + ["commit", "-qm", "bench_stability copy"], cwd=dest, check=True)


#: the stages in pipeline order, and the params sections each reads
STAGES = (
    ("demo", ("demo",)),
    ("ingest", ("ingest",)),
    ("score", ("score",)),
    ("train", ("curriculum", "train")),
    ("evaluate", ("evaluate",)),
)


def first_varying_stage(seed_keys: list[str], machine_varies: bool) -> str:
    """The earliest stage whose outputs can differ between the runs: the first torch stage (score)
    when the ISA or the thread count varies, else the first stage that reads a seed key."""
    sections = {key.split(".")[0] for key in seed_keys}
    for stage, reads in STAGES:
        if (machine_varies and stage == "score") or sections & set(reads):
            return stage
    return "evaluate"


def run_one(
    copy: Path, params: dict, seed_keys: list[str], p: Perturbation, out: Path, rerun_from: str, scorer_only: bool
) -> dict:
    """One `dvc repro` of the copy under perturbation ``p``, forced from ``rerun_from`` on (the
    whole pipeline in a fresh copy; with ``scorer_only`` the score stage and what it needs, then
    the score stage alone); its outputs saved under ``out``."""
    run_params = json.loads(json.dumps(params))
    for key in seed_keys:
        section, name = key.split(".")
        run_params[section][name] = p.seed
    (copy / "params.yaml").write_text(yaml.safe_dump(run_params, sort_keys=False, allow_unicode=True))
    start = time.perf_counter()
    fresh = not (copy / "dvc.lock").exists()
    if scorer_only:
        command = ["dvc", "repro", "-f", "score"] if fresh else ["dvc", "repro", "-f", "-s", "score"]
    else:
        command = ["dvc", "repro", "-f"] + ([] if fresh else ["--downstream", rerun_from])
    env = p.env()
    # the copy's own code, also where entromix is installed in editable mode from another checkout
    env["PYTHONPATH"] = os.pathsep.join([str(copy / "src"), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    (out / "repro.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{p.name}: dvc repro failed (exit {proc.returncode}); log in {out}/repro.log\n{tail}")
    for name in (
        "metrics/evaluate.json",
        "metrics/train.json",
        "metrics/score.json",
        "data/dataset.csv",
        "data/predictions/val.csv",
        "data/predictions/test.csv",
    ):
        if (copy / name).exists():
            target = out / (f"predictions_{Path(name).name}" if "predictions" in name else Path(name).name)
            shutil.copy(copy / name, target)
    return {"seconds": round(seconds, 1), **(score_figures(out) if scorer_only else run_figures(out))}


def score_figures(out: Path) -> dict:
    """The scorer's own figures of one run (``--scorer-only``)."""
    score = json.loads((out / "score.json").read_text())["score"]
    keys = ("oof_auc", "tier_auroc_hallucinated_vs_good", "tier_auroc_degraded_vs_good", "synthetic_jsd_below_0311")
    return {key: score.get(key) for key in keys}


def scorer_markdown(result: dict) -> str:
    lines = [
        "| run | ISA | threads | seed | OOF ROC-AUC | AUROC halluc. | AUROC degraded | JSD drift max | JSD drift mean "
        "| gate flips | s |",
        "|" + "---|" * 11,
    ]
    for r in result["runs"]:
        cells = [
            r["name"],
            r["isa"],
            r["threads"],
            r["seed"],
            fmt(r["oof_auc"]),
            fmt(r["tier_auroc_hallucinated_vs_good"]),
        ]
        cells += [fmt(r["tier_auroc_degraded_vs_good"]), fmt(r["jsd_drift_max"]), fmt(r["jsd_drift_mean"])]
        cells += [r["gate_flips_at_0311"], f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines + spread_table(result))


def spread_table(result: dict) -> list[str]:
    lines = ["", "| figure | min | max | range | mean | sd |", "|---|---|---|---|---|---|"]
    for key, v in result["spread"].items():
        lines.append(f"| {key} | {v['min']} | {v['max']} | {v['range']} | {v['mean']} | {v['sd']} |")
    return lines + [""]


def run_figures(out: Path) -> dict:
    """The figures of one run from its saved metrics files."""
    ev = json.loads((out / "evaluate.json").read_text())["evaluate"]
    tr = json.loads((out / "train.json").read_text())["train"]
    test = ev["test"]
    val = tr["best"] if ev.get("checkpoint", "best") == "best" else tr["final"]
    return {
        # validation figures of the evaluated model (what a recipe may be chosen by; test is only reported)
        "val_auc": val.get("val_auc"),
        "val_loss": val.get("val_loss"),
        "roc_auc": test["roc_auc"],
        "sensitivity_050": test["at_050"]["sensitivity"],
        "specificity_050": test["at_050"]["specificity"],
        "sensitivity_tuned": test["at_tuned"]["sensitivity"],
        "specificity_tuned": test["at_tuned"]["specificity"],
        "threshold": ev["threshold"]["tuned"],
        "brier": test["brier"],
        # the evaluated epoch, from 1 (evaluate.json has it; older runs: the best epoch or the last)
        "epoch": ev.get("evaluated_epoch")
        or (tr["best_epoch"] + 1 if ev.get("checkpoint", "best") == "best" else tr["epochs"]),
    }


def jsd_drift(runs: list[dict], out_dir: Path) -> None:
    """Per run: the largest and the mean |JSD difference| of the same images against the first
    run with the same seed (a different machine or thread count, same data and settings), and
    how many synthetic images sit on the other side of 0.311 bits (p_true 0.5)."""
    reference: dict[int, pd.DataFrame] = {}
    for run in runs:
        frame = pd.read_csv(out_dir / run["name"] / "dataset.csv").sort_values("filename")
        first = reference.setdefault(run["seed"], frame)
        delta = np.abs(frame["jsd_score"].to_numpy() - first["jsd_score"].to_numpy())
        syn = frame["is_syn"].to_numpy() == 1
        flips = (frame["jsd_score"].to_numpy()[syn] <= 0.311) != (first["jsd_score"].to_numpy()[syn] <= 0.311)
        run["jsd_drift_max"] = round(float(delta.max()), 4) if len(delta) else 0.0
        run["jsd_drift_mean"] = round(float(delta.mean()), 5) if len(delta) else 0.0
        run["gate_flips_at_0311"] = int(flips.sum())


def spreads(runs: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for key in (*METRICS, "oof_auc", "jsd_drift_max", "jsd_drift_mean", "gate_flips_at_0311", "seconds"):
        values = np.array([r[key] for r in runs if r.get(key) is not None], dtype=np.float64)
        if len(values):
            out[key] = {
                "min": round(float(values.min()), 4),
                "max": round(float(values.max()), 4),
                "range": round(float(values.max() - values.min()), 4),
                "mean": round(float(values.mean()), 4),
                "sd": round(float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4),
            }
    return out


def checks(runs: list[dict], args: argparse.Namespace) -> list[tuple[str, bool]]:
    """The stability targets (issue 33's, adjustable): what a user on another machine may rely on."""
    auc = [r["roc_auc"] for r in runs]
    return [
        (f"test ROC-AUC range <= {args.max_auc_range}", max(auc) - min(auc) <= args.max_auc_range + 1e-12),
        (
            f"sensitivity at 0.5 >= {args.min_sensitivity} in every run",
            min(r["sensitivity_050"] for r in runs) >= args.min_sensitivity,
        ),
        (
            f"every tuned threshold within [{args.threshold_band[0]}, {args.threshold_band[1]}]",
            all(args.threshold_band[0] <= r["threshold"] <= args.threshold_band[1] for r in runs),
        ),
        (f"Brier <= {args.max_brier} in every run", max(r["brier"] for r in runs) <= args.max_brier),
    ]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    head = (
        "| run | ISA | threads | seed | val AUC | val loss | ROC-AUC | sens 0.5 | spec 0.5 | sens tuned | spec tuned "
        "| threshold | Brier | epoch | JSD drift max | gate flips | s |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in result["runs"]:
        cells = [r["name"], r["isa"], r["threads"], r["seed"], fmt(r["val_auc"]), fmt(r["val_loss"]), fmt(r["roc_auc"])]
        cells += [
            f"{r[k]:.3f}" for k in ("sensitivity_050", "specificity_050", "sensitivity_tuned", "specificity_tuned")
        ]
        cells += [f"{r['threshold']:.4f}", f"{r['brier']:.4f}", r["epoch"], f"{r['jsd_drift_max']:.4f}"]
        cells += [r["gate_flips_at_0311"], f"{r['seconds']:.0f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += spread_table(result)
    for text, ok in result["checks"]:
        lines.append(f"- [{'x' if ok else ' '}] {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--project", type=Path, default=ROOT, help="the project to copy (default: this one)")
    parser.add_argument("--isa", default="AVX2,AVX512_CORE", help="ONEDNN_MAX_CPU_ISA values (DEFAULT: unset)")
    parser.add_argument("--threads", default="1,2", help="OMP_NUM_THREADS values")
    parser.add_argument("--seeds", default="0,1", help="seed values, e.g. 0,1 or 0-7")
    parser.add_argument("--seed-keys", default="train.seed,score.seed", help="params keys each seed value goes into")
    parser.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override for every run (repeatable), as dvc exp run -S",
    )
    parser.add_argument(
        "--from",
        dest="rerun_from",
        choices=[s for s, _ in STAGES],
        default=None,
        help="rerun from this stage on in every run after a copy's first (default: the first stage\n"
        "a perturbation can change: score when the ISA or threads vary, else the seed keys' stage)",
    )
    parser.add_argument(
        "--scorer-only",
        action="store_true",
        help="run the score stage (and what it needs) only, and report the scorer's JSD drift\nand its own figures",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own copy")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/stability/demo/stability.json"),
        help="the JSON report (the Markdown table goes beside it, .md)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the scratch copies and every run's files here")
    parser.add_argument("--max-auc-range", type=float, default=0.01)
    parser.add_argument("--min-sensitivity", type=float, default=0.8)
    parser.add_argument("--threshold-band", type=float, nargs=2, default=(0.05, 0.95))
    parser.add_argument("--max-brier", type=float, default=0.06)
    args = parser.parse_args(argv)

    if shutil.which("dvc") is None:
        sys.exit(
            "bench_stability: dvc is not on PATH; run it with the project's environment (source .venv/bin/activate)"
        )
    seed_keys = parse_list(args.seed_keys)
    params = yaml.safe_load((args.project / "params.yaml").read_text())
    params = apply_overrides(params, [parse_override(o) for o in args.overrides], str(args.project / "params.yaml"))
    for key in seed_keys:
        apply_overrides(params, [(key.split("."), 0)], "params.yaml")  # checks the key exists
    runs = [
        Perturbation(isa, threads, seed)
        for seed, isa, threads in itertools.product(
            parse_list(args.seeds, int), parse_list(args.isa), parse_list(args.threads, int)
        )
    ]
    machine_varies = len(parse_list(args.isa)) > 1 or len(parse_list(args.threads, int)) > 1
    rerun_from = args.rerun_from or first_varying_stage(seed_keys, machine_varies)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_stability-"))
    work.mkdir(parents=True, exist_ok=True)
    copies = [work / f"project{j}" for j in range(max(1, min(args.jobs, len(runs))))]
    for copy in copies:
        if copy.exists():
            shutil.rmtree(copy)
        make_copy(args.project, copy)
    print(
        f"bench_stability: {len(runs)} runs of dvc repro -f ({len(copies)} at a time) on {cpu_name()} "
        f"(AVX-512: {'yes' if has_avx512() else 'no'}); each copy's first run is the whole pipeline, the next "
        f"ones rerun from {rerun_from}; scratch copies in {work}",
        flush=True,
    )
    started = time.perf_counter()
    results: list[dict] = [{} for _ in runs]

    def job(j: int) -> None:
        for i in range(j, len(runs), len(copies)):
            p = runs[i]
            figures = run_one(copies[j], params, seed_keys, p, work / "runs" / p.name, rerun_from, args.scorer_only)
            results[i] = {"name": p.name, "isa": p.isa, "threads": p.threads, "seed": p.seed, **figures}
            done = sum(1 for r in results if r)
            elapsed = time.perf_counter() - started
            summary = (
                f"out-of-fold ROC-AUC {fmt(figures['oof_auc'])}"
                if args.scorer_only
                else f"ROC-AUC {figures['roc_auc']:.4f}, sensitivity at 0.5 {figures['sensitivity_050']:.3f}, "
                f"threshold {figures['threshold']:.4f}, epoch {figures['epoch']}"
            )
            print(
                f"bench_stability: {done}/{len(runs)} {p.name}: {summary} ({figures['seconds']:.0f} s; "
                f"about {elapsed / done * (len(runs) - done) / 60:.0f} min left)",
                flush=True,
            )

    with ThreadPoolExecutor(len(copies)) as pool:
        for future in [pool.submit(job, j) for j in range(len(copies))]:
            future.result()
    jsd_drift(results, work / "runs")
    result = {
        "machine": {
            "cpu": cpu_name(),
            "avx512": has_avx512(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "overrides": args.overrides,
        "seed_keys": seed_keys,
        "runs": results,
        "spread": spreads(results),
    }
    result["checks"] = [] if args.scorer_only else checks(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = scorer_markdown(result) if args.scorer_only else markdown(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"bench_stability: {len(runs)} runs in {(time.perf_counter() - started) / 60:.1f} min; wrote {args.out}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
