"""Queue and run the strategy comparison as DVC experiments, then export them for the compare script.

    python scripts/run_experiments.py --seeds 0,1,2 --settings full,10 --jobs 1 --export results/demo.json

For every setting (``full``, or ``N``: ``ingest.scarce_train_images=N`` with the scarce draw
seeded like the run), every strategy preset and every seed it queues one experiment,

    dvc exp run --queue -n full-curriculum-s0 -S curriculum.strategy=curriculum -S curriculum.jsd_end=1.0 ... -S train.seed=0

then runs the queue with ``dvc queue start -j JOBS``, waits for it, and writes
``dvc exp show --json`` (only these experiments) to ``--export``. Each preset sets every
curriculum key it depends on, so the comparison does not drift when params.yaml's defaults change.
Stages whose inputs an experiment does not change are restored from DVC's run cache, not rerun
(the score stage runs once per setting and draw). Run it from the repository root, with the
baseline committed (`git status` clean) and ``dvc repro`` done once.

``--scorer`` queues the scorer ablation instead: the score stage alone (``dvc exp run ... score``)
with and without augmentation, with more epochs, more folds, and without temperature scaling,
named ``scorer-<variant>-s<seed>``; the compare script reports the tier AUROCs of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: The reference design's curriculum; every preset starts from it.
REFERENCE = {"curriculum.strategy": "curriculum", "curriculum.jsd_end": 1.0, "curriculum.gate": "hard",
             "curriculum.pacing": "linear", "curriculum.rescore_every": 0, "curriculum.max_synthetic_fraction": 0.5}  # fmt: skip
PRESETS: dict[str, dict[str, object]] = {
    "real_only": {"curriculum.strategy": "real_only"},
    "naive": {"curriculum.strategy": "naive"},
    "random": {"curriculum.strategy": "random"},
    "curriculum": {},
    "capped": {"curriculum.jsd_end": 0.311},  # p_true >= 0.5 at the end: never admits what the scorer calls benign
    "soft": {"curriculum.gate": "soft"},
    "sqrt": {"curriculum.pacing": "sqrt"},
    "rescore": {"curriculum.rescore_every": 2},
    "quarter": {"curriculum.max_synthetic_fraction": 0.25},  # at most 4 of 16 synthetic per batch (not 8)
}

#: Scorer ablation (``--scorer``): how the score stage's choices change how well the JSD ranks the
#: known synthetic tiers. Run with target ``score`` only (nothing downstream), seeds via score.seed.
SCORER_REFERENCE = {"score.augment": "true", "score.epochs": 8, "score.folds": 4, "score.temperature_scaling": "true"}
SCORER_PRESETS: dict[str, dict[str, object]] = {
    "base": {},
    "no-augment": {"score.augment": "false"},
    "epochs-16": {"score.epochs": 16},
    "folds-8": {"score.folds": 8},
    "no-temperature": {"score.temperature_scaling": "false"},
}


def dvc(*args: str, capture: bool = False) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=capture, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip() if capture else ""
        sys.exit(f"run_experiments: `dvc {' '.join(args)}` failed (exit {proc.returncode}). {detail}")
    return proc.stdout if capture else ""


def overrides(setting: str, preset: str, seed: int) -> dict[str, object]:
    values = dict(REFERENCE) | PRESETS[preset] | {"train.seed": seed}
    if setting == "full":
        values["ingest.scarce_train_images"] = "null"
    else:
        values["ingest.scarce_train_images"] = int(setting)
        values["ingest.scarce_seed"] = seed
    return values


def experiment_name(setting: str, preset: str, seed: int) -> str:
    return f"{'full' if setting == 'full' else 'n' + setting}-{preset.replace('_', '-')}-s{seed}"


def wait_for_queue(poll_s: float, jobs: int) -> None:
    """Poll `dvc queue status` until nothing is queued or running. A worker that exits while
    tasks are still queued (seen with DVC 3.67 after the first task) is started again."""
    while True:
        status = dvc("queue", "status", capture=True).splitlines()
        queued = sum(" Queued" in line for line in status)
        running = sum(" Running" in line for line in status)
        if not queued and not running:
            return
        if queued and not running and any("Worker status: 0 active" in line for line in status):
            subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        time.sleep(poll_s)


def slim(rev: dict) -> dict:
    """An experiment without its deps and outs listings (hashes of every file): the compare
    script reads params and metrics only, and the export stays small enough to commit."""
    data = {k: v for k, v in (rev.get("data") or {}).items() if k not in ("deps", "outs")}
    return {**rev, "data": data}


def filter_export(exported: list, names: set[str]) -> list:
    """Keep only the named experiments (and their commits) of a `dvc exp show --json` export."""
    out = []
    for commit in exported:
        runs = [{**run, "revs": [slim(rev) for rev in run.get("revs") or []]} for run in (commit.get("experiments") or [])
                if any(rev.get("name") in names for rev in run.get("revs") or [])]  # fmt: skip
        if runs:
            out.append({**slim(commit), "experiments": runs})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2", help="train.seed values (and scarce draws), comma-separated")
    parser.add_argument("--settings", default="full,10", help="full and/or N (malignant training images kept)")
    parser.add_argument("--strategies", default=",".join(PRESETS), help=f"presets: {', '.join(PRESETS)}")
    parser.add_argument("--jobs", type=int, default=1, help="parallel queue workers (1 on a 2-core machine)")
    parser.add_argument("--export", type=Path, required=True, help="where to write the filtered `dvc exp show --json`")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between queue status checks")
    parser.add_argument("--no-run", action="store_true", help="only export experiments that already ran")
    parser.add_argument("--scorer", action="store_true",
                        help="queue the scorer ablation instead (score stage only, named scorer-*; seeds = score.seed)")
    parser.add_argument("--variants", default=",".join(SCORER_PRESETS), help=f"with --scorer: {', '.join(SCORER_PRESETS)}")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    presets = args.strategies.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    bad_settings = [s for s in settings if s != "full" and not s.isdigit()]
    if unknown or bad_settings:
        sys.exit(f"run_experiments: unknown preset(s) {unknown} or setting(s) {bad_settings}; presets are "
                 f"{', '.join(PRESETS)} and settings 'full' or a number.")  # fmt: skip
    names: set[str] = set()
    queue: list[list[str]] = []  # no --force: in `dvc exp run` it also means "rerun every stage"
    if args.scorer:
        variants = args.variants.split(",")
        if unknown := [v for v in variants if v not in SCORER_PRESETS]:
            sys.exit(f"run_experiments: unknown scorer variant(s) {unknown}; choose from {', '.join(SCORER_PRESETS)}.")
        for preset, changes in ((v, SCORER_PRESETS[v]) for v in variants):
            for seed in seeds:
                name = f"scorer-{preset}-s{seed}"
                names.add(name)
                if not args.no_run:
                    values = SCORER_REFERENCE | changes | {"score.seed": seed}
                    sets = [arg for k, v in values.items() for arg in ("-S", f"{k}={v}")]
                    queue.append(["exp", "run", "--queue", "-n", name, *sets, "score"])
        settings = []
    for setting in settings:
        for preset in presets:
            for seed in seeds:
                name = experiment_name(setting, preset, seed)
                names.add(name)
                if args.no_run:
                    continue
                sets = [arg for k, v in overrides(setting, preset, seed).items() for arg in ("-S", f"{k}={v}")]
                queue.append(["exp", "run", "--queue", "-n", name, *sets])
    if queue:
        existing = set(dvc("exp", "list", "--name-only", capture=True).split())
        if names & existing:  # a rerun replaces the earlier result of the same name
            dvc("exp", "remove", *sorted(names & existing))
        for command in queue:
            dvc(*command)
        print(f"run_experiments: {len(names)} experiments queued; `dvc queue start -j {args.jobs}`", flush=True)
        dvc("queue", "start", "-j", str(args.jobs))
        wait_for_queue(args.poll, args.jobs)
    exported = filter_export(json.loads(dvc("exp", "show", "--json", "--all-commits", capture=True)), names)
    args.export.parent.mkdir(parents=True, exist_ok=True)
    args.export.write_text(json.dumps(exported, indent=1) + "\n")
    found = sum(1 for c in exported for r in c["experiments"] for rev in r.get("revs") or [] if rev.get("name") in names)
    print(f"run_experiments: {found}/{len(names)} experiments exported to {args.export}")
    return 0 if found == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
