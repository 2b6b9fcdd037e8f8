"""Queue and run a sweep as DVC experiments, then export them for the compare script.

    python scripts/run_experiments.py sweeps/strategies.yaml --settings full,10 --seeds 0,1,2 \\
        --export results/leukemia_dev/strategies.json

A sweep file (``sweeps/*.yaml``) names its variants, each a set of ``-S`` overrides, plus a
``base`` that every variant starts from (it pins what the sweep holds fixed, so the sweep means
the same thing when params.yaml's defaults change). For every setting (``full``, or ``N``:
``ingest.scarce_train_images=N``), every variant and every seed it queues one experiment,

    dvc exp run --queue -n <sweep>-<variant>-<setting>-s<seed> -S key=value ... [target]

then runs the queue with ``dvc queue start -j JOBS``, waits for it, and writes these
experiments' rows of ``dvc.api.exp_show`` to ``--export`` (``{"format": "dvc.api.exp_show",
"dvc": version, "rows": [...]}``; exports made before, ``dvc exp show --json`` lists, are read
too). The seed goes into every key of the sweep's ``seed_keys`` (default ``train.seed``) and, in a scarce setting, into
``ingest.scarce_seed`` too (each seed draws its own N images). Stages whose inputs an experiment
does not change are restored from DVC's run cache, not rerun. Run it from the repository root,
with the baseline committed (``git status`` clean) and ``dvc repro`` done once.

Sweep file keys: ``name`` (experiment name prefix), ``title`` and ``about`` (for RESULTS.md),
``report`` (``score``: out-of-fold and tier AUROCs; ``scores``: those of every quality score;
``val``: validation metrics, for choosing a recipe; ``test``: the test metrics of a comparison),
``target`` (optional stage: ``score`` runs the score stage and what it needs, nothing downstream),
``seed_keys``, ``base``, ``variants``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from entromix.common.errors import DataError
from experiment_results import API_FORMAT, Sweep, experiment_name, load_sweep


def dvc(*args: str, capture: bool = False) -> str:
    proc = subprocess.run(["dvc", *args], capture_output=capture, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip() if capture else ""
        sys.exit(f"run_experiments: `dvc {' '.join(args)}` failed (exit {proc.returncode}). {detail}")
    return proc.stdout if capture else ""


def overrides(sweep: Sweep, variant: str, setting: str, seed: int) -> dict[str, object]:
    values = dict(sweep.base) | dict(sweep.variants[variant]) | {key: seed for key in sweep.seed_keys}
    if setting == "full":
        values["ingest.scarce_train_images"] = "null"
    else:
        values["ingest.scarce_train_images"] = int(setting)
        values["ingest.scarce_seed"] = seed
    return values


def format_value(value: object) -> str:
    """A ``-S key=value`` value in the override grammar DVC reads (Hydra's): ``null``, ``true``,
    ``[a,b]`` for a list, ``{k:v}`` for a mapping (``ingest.labels``, ``ingest.class_map``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def active_workers(status: list[str]) -> int:
    """The N of `dvc queue status`'s "Worker status: N active, M idle" line (0 when absent)."""
    for line in status:
        match = re.search(r"Worker status: (\d+) active", line)
        if match:
            return int(match.group(1))
    return 0


def wait_for_queue(poll_s: float, jobs: int) -> None:
    """Poll `dvc queue status` until nothing is queued or running. A worker that exits while
    tasks are still queued (seen with DVC 3.67, after a task or two) is started again, so the
    queue keeps ``jobs`` workers to the end."""
    while True:
        status = dvc("queue", "status", capture=True).splitlines()
        queued = sum(" Queued" in line for line in status)
        running = sum(" Running" in line for line in status)
        if not queued and not running:
            return
        if queued and active_workers(status) < jobs:
            subprocess.run(
                ["dvc", "queue", "start", "-j", str(jobs)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        time.sleep(poll_s)


def export_rows(names: set[str], repo: str | None = None) -> dict:
    """The named experiments as ``dvc.api.exp_show`` gives them (one flat row each: name, rev,
    state, then the params, metrics and dependency hashes), over every commit of the current
    branch's first-parent history (``num=-1``), so an export made after a later commit still
    finds a sweep queued on an earlier one. ``experiment_results.experiments_from_exp_show`` reads it."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        rows = dvc.api.exp_show(repo=repo, num=-1)
    except DvcException as exc:
        sys.exit(f"run_experiments: dvc.api.exp_show failed: {exc}")
    kept = [row for row in rows if row.get("Experiment") in names]
    return {"format": API_FORMAT, "dvc": dvc_version(), "rows": kept}


def dvc_version() -> str:
    from dvc import __version__

    return __version__


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="a sweep file, e.g. sweeps/strategies.yaml")
    parser.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (into the sweep's seed_keys)")
    parser.add_argument(
        "--settings",
        default=None,
        help="full and/or N (malignant training images kept); default: the sweep file's settings",
    )
    parser.add_argument("--variants", default=None, help="a comma-separated subset of the sweep's variants")
    parser.add_argument("--jobs", type=int, default=1, help="parallel queue workers")
    parser.add_argument("--export", type=Path, required=True, help="where to write their dvc.api.exp_show rows")
    parser.add_argument("--poll", type=float, default=20.0, help="seconds between queue status checks")
    parser.add_argument("--no-run", action="store_true", help="only export experiments that already ran")
    parser.add_argument("--dry-run", action="store_true", help="print the dvc commands and exit")
    args = parser.parse_args()
    try:
        sweep = load_sweep(args.sweep)
    except DataError as exc:
        sys.exit(f"run_experiments: {exc}")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",") if args.settings else list(sweep.settings)
    variants = args.variants.split(",") if args.variants else list(sweep.variants)
    unknown = [v for v in variants if v not in sweep.variants]
    bad_settings = [s for s in settings if s != "full" and not s.isdigit()]
    if unknown or bad_settings:
        sys.exit(
            f"run_experiments: unknown variant(s) {unknown} or setting(s) {bad_settings}; {args.sweep} has "
            f"{', '.join(sweep.variants)}, and settings are 'full' or a number."
        )
    names: set[str] = set()
    queue: list[list[str]] = []  # no --force: in `dvc exp run` it also means "rerun every stage"
    for setting in settings:
        for variant in variants:
            for seed in seeds:
                name = experiment_name(sweep.name, variant, setting, seed)
                names.add(name)
                sets = [
                    arg
                    for k, v in overrides(sweep, variant, setting, seed).items()
                    for arg in ("-S", f"{k}={format_value(v)}")
                ]
                queue.append(["exp", "run", "--queue", "-n", name, *sets, *([sweep.target] if sweep.target else [])])
    if args.dry_run:
        for command in queue:
            print("dvc " + " ".join(command))
        return 0
    if not args.no_run:
        existing = set(dvc("exp", "list", "--name-only", capture=True).split())
        if names & existing:  # a rerun replaces the earlier result of the same name
            dvc("exp", "remove", *sorted(names & existing))
        for command in queue:
            dvc(*command)
        print(f"run_experiments: {len(names)} experiments queued; `dvc queue start -j {args.jobs}`", flush=True)
        dvc("queue", "start", "-j", str(args.jobs))
        wait_for_queue(args.poll, args.jobs)
    exported = export_rows(names)
    args.export.parent.mkdir(parents=True, exist_ok=True)
    args.export.write_text(json.dumps(exported, indent=1) + "\n")
    found = len({row["Experiment"] for row in exported["rows"]})
    print(f"run_experiments: {found}/{len(names)} experiments exported to {args.export}")
    return 0 if found == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
