"""A change reviewed at several seeds, in one command: ``entromix review -S key=value --seeds 5``.

For seeds 0..N-1 it queues two DVC experiments per seed, the baseline (the workspace's params as
they are) and the change (the same plus the ``-S`` overrides), each with the seed in
``train.seed`` and ``score.seed`` (``--seed-keys``)::

    dvc exp run --queue -n review-<params hash>-base-s<k>    -S train.seed=<k> -S score.seed=<k>
    dvc exp run --queue -n review-<params hash>-<change>-s<k> -S <overrides> -S train.seed=<k> ...

runs the queue with ``dvc queue start -j JOBS`` (printing a progress line with an ETA), and then
compares the two sides seed by seed (:func:`entromix.comparison.report.compare_seeds`). What DVC
already has is reused: an experiment of the same name on the same commit (the name carries a hash
of params.yaml and of the commit, so an edited params.yaml gets new names) is not queued again, and the score
stage of a seed that already ran is rebuilt from its kept fold models without training
(``entromix.scoring.fold_resume``). Every stage's outputs persist, which DVC's run cache does not keep,
so ingest, train and evaluate run. The experiments stay in
``dvc exp show`` / ``make exp-show``.

The baseline's seed-to-seed spread is recorded in ``results/seed_spread.json`` (commit it):
a later one-pair ``entromix compare`` on the same test set prints it next to its difference, so a
difference that two seeds of one configuration also show is not read as a finding.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from entromix.common.errors import DataError, listing
from entromix.common.progress import format_seconds
from entromix.comparison.revisions import PARAMS, Revision, flatten

SPREAD_FILE = Path("results/seed_spread.json")
DEFAULT_SEED_KEYS = ("train.seed", "score.seed")
_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][\w.\-]*)=(?P<value>.*)$")


@dataclass(frozen=True)
class Override:
    key: str
    value: str  # as written after '=' (DVC/Hydra override grammar)

    @property
    def argument(self) -> str:
        return f"{self.key}={self.value}"


@dataclass
class ReviewPlan:
    """Which experiments a review needs: ``base[k]`` and ``change[k]`` for each seed ``k``."""

    overrides: list[Override]
    seeds: list[int]
    seed_keys: tuple[str, ...]
    params_hash: str
    base: list[str] = field(default_factory=list)
    change: list[str] = field(default_factory=list)

    def commands(self) -> list[list[str]]:
        """The ``dvc exp run --queue`` argument lists, baseline and change per seed."""
        out = []
        for k, base, change in zip(self.seeds, self.base, self.change):
            seeds = [a for key in self.seed_keys for a in ("-S", f"{key}={k}")]
            out.append(["exp", "run", "--queue", "-n", base, *seeds])
            sets = [a for o in self.overrides for a in ("-S", o.argument)]
            out.append(["exp", "run", "--queue", "-n", change, *sets, *seeds])
        return out

    @property
    def names(self) -> list[str]:
        return [n for pair in zip(self.base, self.change) for n in pair]


def parse_overrides(items: list[str], params: dict) -> list[Override]:
    """``-S key=value`` items checked against params.yaml: the key must exist there (a misspelt key
    is refused with the nearest names, before anything is queued or written)."""
    if not items:
        raise DataError("give the change to review with -S key=value (e.g. -S curriculum.jsd_start=0.05).")
    known = flatten(params)
    prefixes = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    out = []
    for item in items:
        match = _OVERRIDE.match(item.strip())
        if not match:
            raise DataError(f"-S '{item}' is not key=value (e.g. -S curriculum.jsd_start=0.05).")
        key = match["key"]
        if key not in known and not ("." in key and key in prefixes):  # a mapping value: ingest.class_map
            if key in prefixes:
                raise DataError(
                    f"-S '{item}': {key} is a section of {PARAMS}, not a value; name one key in it "
                    f"(e.g. {sorted(k for k in known if k.startswith(key + '.'))[0]})."
                )
            near = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(near)}?" if near else ""
            stage = key.split(".")[0]
            where = "" if stage in params else f" ({stage} is not a section of {PARAMS}: {', '.join(params)})"
            raise DataError(f"-S '{item}': {PARAMS} has no key {key}{where}.{hint}")
        out.append(Override(key, match["value"]))
    keys = [o.key for o in out]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise DataError(f"-S sets {listing(repeated)} more than once; give each key once.")
    return out


def plan_review(
    params_text: str,
    overrides: list[str],
    seeds: list[int],
    seed_keys: tuple[str, ...] = DEFAULT_SEED_KEYS,
    baseline_commit: str = "",
) -> ReviewPlan:
    """The experiments to queue for ``overrides`` at ``seeds`` on the project whose params.yaml
    reads ``params_text``. Bad input (no seeds, an unknown key, a seed key the change also sets)
    is a DataError before anything runs."""
    if not seeds:
        raise DataError("--seeds must name at least one seed (e.g. --seeds 5 for seeds 0-4, or --seeds 0,3,7).")
    if len(set(seeds)) != len(seeds):
        raise DataError(f"--seeds lists a seed twice ({seeds}); each seed is one paired draw.")
    try:
        params = yaml.safe_load(params_text) or {}
    except yaml.YAMLError as exc:
        raise DataError(f"{PARAMS} is not valid YAML ({exc}); fix it before reviewing a change.") from None
    if not isinstance(params, dict):
        raise DataError(f"{PARAMS} must be a mapping of stage sections; fix it before reviewing a change.")
    known = flatten(params)
    missing = [k for k in seed_keys if k not in known]
    if missing:
        raise DataError(f"--seed-keys: {PARAMS} has no key {listing(missing)}; give keys it has (train.seed).")
    parsed = parse_overrides(overrides, params)
    clash = [o.key for o in parsed if o.key in seed_keys]
    if clash:
        raise DataError(
            f"-S sets {listing(clash)}, which the review varies itself (--seed-keys {','.join(seed_keys)}); "
            "leave it out, or review with other --seed-keys."
        )
    unchanged = [o.argument for o in parsed if o.key in known and _same_value(o.value, known[o.key])]
    if unchanged and len(unchanged) == len(parsed):
        raise DataError(
            f"-S {' '.join(unchanged)}: {PARAMS} already has that value, so the change is the baseline. "
            "Review a value that differs."
        )
    # the commit goes into the name too: DVC resolves an experiment name across commits, and two
    # commits with the same params.yaml would otherwise hold two experiments of one name
    digest = hashlib.sha1((baseline_commit + params_text).encode("utf-8")).hexdigest()[:6]
    slug = "-".join(f"{o.key.split('.')[-1]}-{o.value}" for o in parsed)
    slug = re.sub(r"[^A-Za-z0-9_.]+", "-", slug).strip("-")[:40].rstrip("-.")
    change_id = hashlib.sha1(" ".join(o.argument for o in parsed).encode()).hexdigest()[:4]
    plan = ReviewPlan(parsed, list(seeds), tuple(seed_keys), digest)
    plan.base = [f"review-{digest}-base-s{k}" for k in seeds]
    plan.change = [f"review-{digest}-{slug}-{change_id}-s{k}" for k in seeds]
    return plan


def _same_value(text: str, value: object) -> bool:
    try:
        return yaml.safe_load(text) == value
    except yaml.YAMLError:
        return False


# ---------------------------------------------------------------- running through DVC's queue


def dvc(args: list[str], cwd: Path, tries: int = 1) -> str:
    """``dvc ARGS`` in ``cwd``; its stdout. ``tries``: for read-only commands such as ``dvc queue
    status``, which fails now and then while a worker writes a task's state (DVC 3.x: "Expecting
    value: line 1 column 1"), try again after a pause."""
    for attempt in range(tries):
        proc = subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True)
        if proc.returncode == 0:
            break
        if attempt + 1 < tries:
            time.sleep(3)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout or "").split())[-600:]
        raise DataError(f"`dvc {' '.join(args)}` failed (exit {proc.returncode}): {detail}")
    return proc.stdout


def queue_states(cwd: Path) -> dict[str, str]:
    """``dvc queue status`` as {experiment name: Queued | Running | Success | Failed}."""
    states: dict[str, str] = {}
    for line in dvc(["queue", "status"], cwd, tries=5).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1] in ("Queued", "Running", "Success", "Failed"):
            states[parts[1]] = parts[-1]
    return states


def existing_experiments(cwd: Path) -> set[str]:
    """The experiments of the current commit that finished (``dvc exp list --name-only``)."""
    return set(dvc(["exp", "list", "--name-only"], cwd, tries=3).split())


def worker_env(jobs: int, environ: dict[str, str] | None = None, cores: int | None = None) -> dict[str, str]:
    """The queue workers' environment: with J experiments at once, each gets cores // J threads
    (``OMP_NUM_THREADS``, unless the user set it). Without it every stage process takes a thread per
    core: a demo review at 2 jobs on 2 cores (with other work on the machine) trained at 1 image/s,
    75 s an epoch, where one job alone takes a few seconds (OpenMP threads spin on oversubscribed cores)."""
    env = dict(os.environ if environ is None else environ)
    if "OMP_NUM_THREADS" not in env:
        threads = str(max(1, (cores or os.cpu_count() or 1) // max(1, jobs)))
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    return env


#: seconds after starting workers before the review counts them again (a new worker takes a while to register)
WORKER_GRACE_S = 120


def start_workers(jobs: int, cwd: Path) -> None:
    subprocess.run(
        ["dvc", "queue", "start", "-j", str(jobs)],
        cwd=cwd,
        env=worker_env(jobs),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _active_workers(cwd: Path) -> int:
    """The queue's workers, busy or idle (``Worker status: N active, M idle``)."""
    match = re.search(r"Worker status: (\d+) active, (\d+) idle", dvc(["queue", "status"], cwd, tries=5))
    return int(match.group(1)) + int(match.group(2)) if match else 0


def progress_line(done: int, running: int, total: int, elapsed: float, pending_at_start: int) -> str:
    """``review: 3/10 done, 2 running; 4 min 10 s elapsed, ETA 9 min 40 s`` (the ETA from the runs
    this review ran itself; none before the first one ends)."""
    ran = done - (total - pending_at_start)
    eta = "ETA after the first run ends"
    if ran > 0:
        eta = f"ETA {format_seconds(elapsed / ran * (total - done))}"
    return f"review: {done}/{total} done, {running} running; {format_seconds(elapsed)} elapsed, {eta}"


def _queue_missing(plan: ReviewPlan, cwd: Path, done_before: set[str]) -> list[str]:
    """Queue the review's experiments not run before it (``done_before``) and not already queued or
    running; returns the names still to wait for, in plan order."""
    states = queue_states(cwd)
    pending = []
    for cmd, name in zip(plan.commands(), plan.names):
        if name in done_before:
            continue
        if states.get(name) in ("Queued", "Running"):
            pending.append(name)
            continue
        if states.get(name) in ("Failed", "Success"):  # a failed earlier try, or one since removed
            dvc(["queue", "remove", name], cwd)
        dvc(cmd, cwd)
        pending.append(name)
    return pending


def _stop_on_failure(pending: list[str], states: dict[str, str], cwd: Path) -> None:
    """When an experiment of the review failed, take its other runs out of the queue and raise a
    DataError naming it and the command that shows its log."""
    failed = [n for n in pending if states.get(n) == "Failed"]
    if failed:
        # the review stops here; its other runs would have no comparison to go into
        running = [n for n in pending if states.get(n) == "Running"]
        queued = [n for n in pending if states.get(n) == "Queued"]
        for command, names in (("remove", queued), ("kill", running)):
            for name in names:  # best effort, one by one: a run may end between the status read and here
                with contextlib.suppress(DataError):
                    dvc(["queue", command, name], cwd)
        raise DataError(
            f"experiment(s) {listing(failed)} failed, so the review has no result for them. See why with "
            f"`dvc queue logs {failed[0]}`; fix the cause (a bad -S value is the usual one), then rerun the "
            "review: what finished is reused."
        )


def run_plan(plan: ReviewPlan, cwd: Path, jobs: int, poll_s: float = 10.0, log=print) -> float:
    """Queue what is missing, run it with ``jobs`` workers, wait; returns the wall seconds. A failed
    experiment of the review is a DataError naming it and the command that shows its log."""
    start = time.monotonic()
    log("review: queueing (dvc exp run --queue snapshots the workspace: leave its files alone until the next line)")
    done_before = existing_experiments(cwd)
    pending = _queue_missing(plan, cwd, done_before)
    total = len(plan.names)
    log(
        f"review: {total} experiments ({len(plan.seeds)} seeds x baseline and change); "
        f"{total - len(pending)} already run, {len(pending)} queued; {jobs} worker(s)"
    )
    started = time.monotonic()
    if pending:
        start_workers(jobs, cwd)
    last = ""
    vanished: list[str] = []
    while pending:
        time.sleep(poll_s)
        states = queue_states(cwd)
        # finished: before the review, or Success in the queue (not `dvc exp list`, which lists the
        # experiments of the current commit only: a commit made meanwhile would hide them)
        finished = done_before | {n for n in pending if states.get(n) == "Success"}
        _stop_on_failure(pending, states, cwd)
        gone = [n for n in pending if n not in states and n not in finished]
        if gone and gone == vanished:  # two polls in a row: removed or killed from outside the review
            raise DataError(
                f"experiment(s) {listing(gone)} left DVC's queue without finishing (dvc queue remove / kill?). "
                "Rerun the review: what finished is reused."
            )
        vanished = gone
        done = sum(n in finished for n in plan.names)
        running = sum(states.get(n) == "Running" for n in pending)
        line = progress_line(done, running, total, time.monotonic() - start, len(pending))
        if line != last:
            log(line)
            last = line
        if done == total:
            break
        # a worker that exited early (seen with DVC 3.x) is replaced, but only when fewer than JOBS run
        # and none was started for WORKER_GRACE_S: a new worker registers slowly on a loaded machine, and
        # counting the workers alone once started 5 for -j 2 (2026-12-07, the demo review)
        running = sum(states.get(n) == "Running" for n in pending)
        waiting = any(states.get(n) == "Queued" for n in pending)
        if waiting and running < jobs and time.monotonic() - started > WORKER_GRACE_S:
            active = _active_workers(cwd)
            if active < jobs:
                start_workers(jobs - active, cwd)
                started = time.monotonic()
    return time.monotonic() - start


# ---------------------------------------------------------------- the seed spread on this data


def test_set_id(revision: Revision) -> str:
    """A short hash of the test images and their labels: a spread recorded for one test set is
    shown only next to comparisons on the same one."""
    rows = revision.predictions[["filename", "label"]].astype(str).agg(",".join, axis=1)
    return hashlib.sha1("\n".join(rows).encode("utf-8")).hexdigest()[:12]


def seed_spread(revisions: list[Revision], report_pairs: list[dict], seed_keys: tuple[str, ...]) -> dict:
    """The baseline's per-seed figures and their spread (sd, range), per compare metric."""
    from entromix.comparison.report import METRICS

    figures = {k: [pair["metrics"][k]["a"] for pair in report_pairs] for k in METRICS}
    return {
        "test_set": test_set_id(revisions[0]),
        "test_images": int(len(revisions[0].predictions)),
        "experiments": [r.name for r in revisions],
        "seed_keys": list(seed_keys),
        "n": len(revisions),
        "recorded": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "metrics": {
            k: {
                "values": [float(v) for v in values],
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                "range": float(np.max(values) - np.min(values)),
            }
            for k, values in figures.items()
        },
    }


def read_seed_spread(root: Path) -> dict | None:
    """The recorded spread (``results/seed_spread.json``), None when absent or unreadable."""
    path = root / SPREAD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "metrics" in data and "test_set" in data else None


def log_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
