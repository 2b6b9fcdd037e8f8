"""What one revision of the project predicted on the test set, read through DVC.

A revision is anything ``dvc metrics diff`` takes: a branch, tag or commit (``main``, ``HEAD~1``,
``a1b2c3d``), an experiment name (``dvc exp show`` lists them; queued experiments such as
``strat-real-only-n10-s0`` once they have run), or ``workspace`` for the files on disk now.

From each revision three files are read:

* ``data/predictions/test.csv`` (the evaluate stage's per-image output, committed to git like the
  metrics, so every clone reads HEAD's; revisions made before it was, kept it in DVC's cache, which
  an experiment's or a colleague's commit needs here: ``dvc exp pull`` / ``dvc pull``),
* ``metrics/evaluate.json`` for the tuned threshold (optional: only shown),
* ``params.yaml`` for the seeds that pair revisions and the settings that differ (optional).

Every problem (unknown revision, missing predictions, a file that is not the evaluate stage's) is
a :class:`~entromix.common.errors.DataError` naming the revision and the file.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from entromix.common.errors import DataError, listing

WORKSPACE = "workspace"
PREDICTIONS = "data/predictions/test.csv"
EVALUATE_METRICS = "metrics/evaluate.json"
PARAMS = "params.yaml"
LOCK = "dvc.lock"
REQUIRED_COLUMNS = ["filename", "label", "probability", "prediction"]
# the keys that make two runs replicates of each other when everything else is equal
SEED_KEYS = ("train.seed", "score.seed", "ingest.scarce_seed")


@dataclass
class Revision:
    """One revision's test predictions, sorted by filename (so two revisions align row by row)."""

    name: str  # as the user gave it
    sha: str | None  # the commit it resolved to; None for the workspace
    predictions: pd.DataFrame  # filename, label (0/1), probability, prediction (0/1 at the tuned threshold)
    threshold: float | None  # the tuned threshold (metrics/evaluate.json), when recorded
    params: dict = field(default_factory=dict)  # params.yaml flattened to dotted keys; {} when unreadable

    @property
    def label(self) -> str:
        return self.name if self.sha is None or self.sha.startswith(self.name) else f"{self.name} ({self.sha[:7]})"

    def seeds(self) -> dict[str, object]:
        return {k: self.params[k] for k in SEED_KEYS if k in self.params}


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"seed": 0}}`` -> ``{"train.seed": 0}`` (lists and scalars are leaves)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


class RevisionReader:
    """Reads files at revisions of the DVC project in ``root`` (a git repository)."""

    def __init__(self, root: str | Path = "."):
        self.root = Path(root).resolve()
        if not (self.root / ".dvc").is_dir():
            raise DataError(
                f"{self.root} is not a DVC project (no .dvc folder). Run entromix compare from the project's "
                "root (where dvc.yaml is), or pass --repo PATH."
            )
        self._scm = None

    def resolve(self, name: str) -> str | None:
        """The commit ``name`` stands for (None for the workspace); unknown names are a DataError."""
        if name == WORKSPACE:
            return None
        from dvc.scm import RevError, SCMError, resolve_rev
        from scmrepo.git import Git

        if self._scm is None:
            try:
                self._scm = Git(str(self.root))
            except SCMError as exc:
                raise DataError(f"{self.root}: not a git repository ({exc}); entromix compare needs one.") from None
        try:
            return resolve_rev(self._scm, name)
        except (RevError, SCMError) as exc:
            raise DataError(
                f"'{name}' is neither a git revision nor an experiment of {self.root} ({exc}). "
                "Name a branch, tag or commit (git log --oneline), an experiment (dvc exp list --all-commits), "
                f"or '{WORKSPACE}' for the files on disk."
            ) from None

    def read_text(self, name: str, sha: str | None, path: str) -> str | None:
        """The file's text at the revision, None when the revision has no such file."""
        if sha is None:
            file = self.root / path
            return file.read_text(encoding="utf-8") if file.is_file() else None
        import dvc.api
        from dvc.exceptions import DvcException, PathMissingError

        try:
            return dvc.api.read(path, repo=str(self.root), rev=sha, mode="r", encoding="utf-8")
        except PathMissingError:
            return None
        except (DvcException, FileNotFoundError, OSError) as exc:
            raise DataError(
                f"{path} at '{name}' ({sha[:7]}) is tracked by DVC but could not be read: {type(exc).__name__}: {exc}. "
                "Its data is probably not in this machine's DVC cache: fetch it (dvc pull, or dvc exp pull <remote> "
                f"{name} for an experiment) or rerun it (dvc exp run)."
            ) from None

    def missing_predictions(self, name: str, sha: str | None, where: str) -> str:
        """Why the revision has no readable test predictions, and what to run: the evaluate stage
        never ran there, or it ran but its DVC-cached output is not in this clone's cache."""
        lock_text = None
        try:
            lock_text = self.read_text(name, sha, LOCK)
        except DataError:
            pass
        outs: list[str] = []
        if lock_text:
            try:
                stage = (yaml.safe_load(lock_text) or {}).get("stages", {}).get("evaluate") or {}
                outs = [o.get("path") for o in stage.get("outs", []) if isinstance(o, dict)]
            except (yaml.YAMLError, AttributeError):
                outs = []
        if PREDICTIONS in outs:
            return (
                f"{where} ran the evaluate stage (its dvc.lock records {PREDICTIONS}), but that revision kept the "
                "file in DVC's cache and this clone's cache does not hold it (another machine's run, no remote). "
                f"Fetch it (dvc pull, or dvc exp pull <remote> {name}), or rerun it: git stash; git checkout {name}; "
                "dvc repro evaluate. Revisions from this version on commit the file to git, so any clone reads it."
            )
        if sha is None:
            return (
                f"the workspace has no {PREDICTIONS}: the evaluate stage has not run here. Run it: dvc repro "
                "(or make run)."
            )
        return (
            f"{where} has no {PREDICTIONS}: the evaluate stage never ran there (its dvc.lock has no evaluate "
            "stage with that output). Run it (git checkout it, then dvc repro evaluate; dvc exp run for an "
            "experiment), or compare revisions that have it (git log --oneline, dvc exp show)."
        )

    def revision(self, name: str) -> Revision:
        sha = self.resolve(name)
        where = f"'{name}'" + (f" ({sha[:7]})" if sha else "")
        text = self.read_text(name, sha, PREDICTIONS)
        if text is None:
            raise DataError(self.missing_predictions(name, sha, where))
        predictions = parse_predictions(text, f"{PREDICTIONS} at {where}")
        threshold = None
        metrics_text = self.read_text(name, sha, EVALUATE_METRICS)
        if metrics_text:
            try:
                threshold = float(json.loads(metrics_text)["evaluate"]["threshold"]["tuned"])
            except (ValueError, KeyError, TypeError):
                threshold = None
        params: dict = {}
        params_text = self.read_text(name, sha, PARAMS)
        if params_text:
            try:
                loaded = yaml.safe_load(params_text)
                params = flatten(loaded) if isinstance(loaded, dict) else {}
            except yaml.YAMLError:
                params = {}
        return Revision(name, sha, predictions, threshold, params)


def parse_predictions(text: str, where: str) -> pd.DataFrame:
    """The evaluate stage's test.csv, checked and sorted by filename."""
    try:
        frame = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{where}: not a CSV file ({type(exc).__name__}: {exc}). Rerun the evaluate stage.") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: missing column(s) {', '.join(missing)} (found {', '.join(map(str, frame.columns))}); "
            "it is not the evaluate stage's output. Rerun the evaluate stage (dvc repro -f evaluate)."
        )
    frame = frame[REQUIRED_COLUMNS].copy()
    if frame.empty:
        raise DataError(f"{where}: no test images. Rerun the evaluate stage with a test split.")
    dup = frame["filename"][frame["filename"].duplicated()].tolist()
    if dup:
        raise DataError(f"{where}: image(s) listed twice: {listing(dup)}. Rerun the evaluate stage.")
    for col in ("label", "prediction"):
        bad = ~frame[col].isin([0, 1])
        if bad.any():
            raise DataError(
                f"{where}: column {col} must be 0 or 1, but row(s) {listing(frame.index[bad] + 2)} are not "
                "(line numbers). Rerun the evaluate stage."
            )
    p = pd.to_numeric(frame["probability"], errors="coerce")
    bad = ~np.isfinite(p) | (p < 0) | (p > 1)
    if bad.any():
        raise DataError(
            f"{where}: probability must be a number in [0, 1], but line(s) {listing(frame.index[bad] + 2)} are not. "
            "Rerun the evaluate stage."
        )
    frame["probability"] = p.astype(np.float64)
    frame[["label", "prediction"]] = frame[["label", "prediction"]].astype(np.int64)
    return frame.sort_values("filename", kind="stable").reset_index(drop=True)


def check_same_test_set(a: Revision, b: Revision) -> None:
    """Both revisions must have predicted the same images with the same labels (a paired test
    compares the two on each image); otherwise say which images differ."""
    fa, fb = set(a.predictions["filename"]), set(b.predictions["filename"])
    if fa != fb:
        only_a, only_b = sorted(fa - fb), sorted(fb - fa)
        raise DataError(
            f"the test sets differ: {a.label} has {len(fa)} test images, {b.label} has {len(fb)}; "
            f"only in {a.label}: {listing(only_a, 5) or 'none'}; only in {b.label}: {listing(only_b, 5) or 'none'}. "
            "A paired comparison needs the same test images: compare revisions with the same ingest settings "
            "(data, ingest.split, ingest.seed)."
        )
    differ = a.predictions["label"].to_numpy() != b.predictions["label"].to_numpy()
    if differ.any():
        names = a.predictions["filename"][differ].tolist()
        raise DataError(
            f"the test sets differ: {len(names)} image(s) have another label in {a.label} than in {b.label}: "
            f"{listing(names, 5)}. Compare revisions with the same ingest.class_map and positive_labels."
        )
