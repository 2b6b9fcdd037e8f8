"""``entromix sweep``: queue and run a sweep as DVC experiments, then export them for ``entromix results``.

For every setting (``full``, or ``N``: ``ingest.scarce_train_images=N``), every variant and every
seed it queues one experiment (:func:`entromix.comparison.sweeps.queue_commands`),

    dvc exp run --queue -n <sweep>-<variant>-<setting>-s<seed> -S key=value ... [target]

then runs the queue with ``dvc queue start -j JOBS``, waits for it, and writes these
experiments' rows of ``dvc.api.exp_show`` to ``--export`` (``{"format": "dvc.api.exp_show",
"dvc": version, "rows": [...]}``; exports made before, ``dvc exp show --json`` lists, are read
too). Stages whose inputs an experiment does not change are restored from DVC's run cache, not
rerun. Run it from the repository root, with the baseline committed (``git status`` clean) and
``dvc repro`` done once.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from entromix.common.errors import DataError
from entromix.comparison.exports import API_FORMAT
from entromix.comparison.sweeps import load_sweep, queue_commands, select


def dvc(*args: str, capture: bool = False) -> str:
    """Run ``dvc ARGS``; a failure is a DataError naming the command (and its output, when captured)."""
    proc = subprocess.run(["dvc", *args], capture_output=capture, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip() if capture else ""
        raise DataError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}). {detail}".rstrip())
    return proc.stdout if capture else ""


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
    finds a sweep queued on an earlier one. :func:`entromix.comparison.exports.experiments_from_exp_show`
    reads it."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        rows = dvc.api.exp_show(repo=repo, num=-1)
    except DvcException as exc:
        raise DataError(f"dvc.api.exp_show failed: {exc}") from None
    kept = [row for row in rows if row.get("Experiment") in names]
    return {"format": API_FORMAT, "dvc": dvc_version(), "rows": kept}


def dvc_version() -> str:
    from dvc import __version__

    return __version__


def parse_seed_list(spec: str) -> list[int]:
    """``0,1,2`` -> [0, 1, 2]."""
    try:
        return [int(s) for s in spec.split(",")]
    except ValueError:
        raise DataError(f"--seeds '{spec}' is not a comma-separated list of seeds, e.g. 0,1,2.") from None


def run_sweep(
    sweep_file: Path,
    export: Path | None,
    seeds: str = "0,1,2",
    settings: str | None = None,
    variants: str | None = None,
    jobs: int = 1,
    poll_s: float = 20.0,
    no_run: bool = False,
    dry_run: bool = False,
) -> int:
    """Queue, run and export a sweep (``dry_run``: print the dvc commands; ``no_run``: only
    export what already ran). The exit code: 0, or 1 when some experiments were not exported."""
    sweep = load_sweep(sweep_file)
    chosen_settings, chosen_variants = select(sweep, sweep_file, settings, variants)
    names, queue = queue_commands(sweep, chosen_settings, chosen_variants, parse_seed_list(seeds))
    if dry_run:
        for command in queue:
            print("dvc " + " ".join(command))
        return 0
    if export is None:
        raise DataError("--export FILE is needed (where to write the experiments' rows), unless --dry-run.")
    if not no_run:
        existing = set(dvc("exp", "list", "--name-only", capture=True).split())
        if names & existing:  # a rerun replaces the earlier result of the same name
            dvc("exp", "remove", *sorted(names & existing))
        for command in queue:
            dvc(*command)
        print(f"entromix sweep: {len(names)} experiments queued; `dvc queue start -j {jobs}`", flush=True)
        dvc("queue", "start", "-j", str(jobs))
        wait_for_queue(poll_s, jobs)
    exported = export_rows(names)
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_text(json.dumps(exported, indent=1) + "\n")
    found = len({row["Experiment"] for row in exported["rows"]})
    print(f"entromix sweep: {found}/{len(names)} experiments exported to {export}")
    return 0 if found == len(names) else 1
