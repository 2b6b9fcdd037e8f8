"""Exports of DVC experiments (``results/<dataset>/<sweep>.json``) read as finished experiments.

``entromix sweep --export`` writes ``dvc.api.exp_show``'s rows (``{"format": "dvc.api.exp_show",
"dvc": version, "rows": [...]}``); exports made before it used ``dvc.api`` are ``dvc exp show
--json`` lists. :func:`experiments_from_exp_show` reads both with one parser: a ``dvc exp show
--json`` list is first rewritten as the rows ``dvc.api.exp_show`` would give
(:func:`rows_from_cli_json`), then every row is read the same way (:func:`experiments_from_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from entromix.common.errors import DataError
from entromix.comparison.sweep_metrics import FINISHED_KEYS

#: the ``format`` of the exports ``entromix sweep`` writes: ``dvc.api.exp_show``'s rows
API_FORMAT = "dvc.api.exp_show"
#: the columns of a ``dvc.api.exp_show`` row that describe the experiment rather than a value
API_HEADERS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
#: how ``dvc.api.exp_show`` writes a value that is missing (it formats every value as text and
#: parses numbers back: an absent key or a null is the string "None", a file it could not read "!")
API_MISSING = ("None", "!")
#: where a ``path:key`` column comes from a params file (DVC prefixes a key with its file's path
#: when another file has the same key: ``params.yaml:train.epochs`` beside ``metrics/train.json:train.epochs``)
PARAMS_SUFFIXES = (".yaml", ".yml", ".toml", ".py")
#: the ``typ`` of an experiment's row (the others: ``workspace``, ``baseline``)
EXPERIMENT_TYPES = ("branch_commit", "branch_base")


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


def experiments_from_exp_show(exported: Any, source: str = "dvc exp show --json") -> list[Experiment]:
    """The finished experiments of an export: either what ``entromix sweep`` writes
    (``{"format": "dvc.api.exp_show", "rows": [...]}``) or a ``dvc exp show --json`` list, the
    format of the exports made before it used ``dvc.api``."""
    if isinstance(exported, dict) and exported.get("format") == API_FORMAT:
        rows = exported.get("rows")
        if not isinstance(rows, list):
            raise DataError(f"{source}: a {API_FORMAT} export needs a list of rows under 'rows'.")
        return experiments_from_rows(rows)
    return experiments_from_rows(rows_from_cli_json(exported, source))


def experiments_from_rows(rows: list[dict[str, Any]]) -> list[Experiment]:
    """The finished experiments among ``dvc.api.exp_show()`` rows (DVC 3): one flat dict per row,
    with ``Experiment`` (the name), ``rev``, ``typ`` (``workspace``, ``baseline``, or
    ``branch_commit`` / ``branch_base`` for an experiment), ``State`` (None once finished;
    ``Queued``, ``Running`` and ``Failed`` rows are skipped), then one column per param and metric
    key (``train.seed``, ``evaluate.test.roc_auc``; ``path:key`` where two files share a key) and
    one per dependency. An unprefixed key is offered as both a param and a metric: the reports read
    metrics by their file's top-level key (``evaluate.``, ``train.``, ``score.``). Rows with neither
    evaluate nor score metrics (:data:`~entromix.comparison.sweep_metrics.FINISHED_KEYS`) are skipped."""
    found: dict[str, Experiment] = {}
    for row in rows:
        if not isinstance(row, dict) or str(row.get("typ")) not in EXPERIMENT_TYPES:
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
        if not any(key in metrics for key in FINISHED_KEYS):
            continue
        name = str(row.get("Experiment") or row.get("rev") or "")
        found[f"{name}@{row.get('rev')}"] = Experiment(name, params, metrics)
    return list(found.values())


def rows_from_cli_json(exported: Any, source: str = "dvc exp show --json") -> list[dict[str, Any]]:
    """A ``dvc exp show --json`` export (DVC 3) as the rows ``dvc.api.exp_show`` gives: one per
    finished experiment, each value in a ``file:key`` column.

    The export is a list of commits (``workspace`` first), each with ``experiments``: a list of
    runs whose ``revs`` hold ``{"rev", "name", "data": {"params", "metrics"}}``. The workspace and
    the commits themselves are left out (they repeat an experiment or predate it), and so are runs
    still queued or running (their ``executor.state``; they show the baseline's metrics) and runs
    that failed.
    """
    if not isinstance(exported, list):
        raise DataError(f"{source}: expected the JSON list that `dvc exp show --json` writes.")
    rows = []
    for commit in exported:
        for run in (commit or {}).get("experiments") or []:
            if ((run or {}).get("executor") or {}).get("state", "success") != "success":
                continue
            for rev in (run or {}).get("revs") or []:
                data = (rev or {}).get("data") or {}
                if rev.get("error") or data.get("status") not in (None, "Success"):
                    continue
                name = rev.get("name") or run.get("name") or str(rev.get("rev", ""))[:7]
                row: dict[str, Any] = {"Experiment": name, "rev": str(rev.get("rev", name)), "typ": "branch_commit"}
                for kind in ("params", "metrics"):
                    for path, content in (data.get(kind) or {}).items():
                        values = flatten((content or {}).get("data") or {})
                        row.update({f"{path}:{key}": value for key, value in values.items()})
                rows.append(row | {"State": None})
    return rows
