"""``entromix exp-show``: DVC's experiments as a reviewer reads them.

``dvc exp show`` lists every param and every metric (over 250 columns here). This reads its JSON
(``dvc exp show --json``) and keeps, per experiment: its name, state and time, the params whose
values differ between the rows shown, and a handful of metrics a review turns on (test ROC-AUC,
sensitivity and specificity at the tuned threshold, the threshold, Brier, the synthetic images the
curriculum admitted). Rows: the workspace, the baseline commit(s) and their experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

from entromix.comparison.revisions import flatten

# (metrics file, dotted key in it) -> column title
METRIC_COLUMNS = {
    ("metrics/evaluate.json", "evaluate.test.roc_auc"): "test ROC-AUC",
    ("metrics/evaluate.json", "evaluate.test.at_tuned.sensitivity"): "sens (tuned)",
    ("metrics/evaluate.json", "evaluate.test.at_tuned.specificity"): "spec (tuned)",
    ("metrics/evaluate.json", "evaluate.threshold.tuned"): "threshold",
    ("metrics/evaluate.json", "evaluate.test.brier"): "Brier",
    ("metrics/train.json", "train.final_admitted_synthetic"): "synthetic admitted",
}


@dataclass
class ExperimentRow:
    name: str  # experiment name, or the commit's / workspace's
    rev: str
    state: str  # done | running | queued | failed | workspace | commit
    timestamp: str | None
    params: dict[str, object]
    metrics: dict[str, object]  # title -> value


def _metrics(data: dict) -> dict[str, object]:
    out: dict[str, object] = {}
    metrics = data.get("metrics") or {}
    for (file, key), title in METRIC_COLUMNS.items():
        values = (metrics.get(file) or {}).get("data") or {}
        out[title] = flatten(values).get(key)
    return out


def _row(entry: dict, name: str, state: str) -> ExperimentRow:
    data = entry.get("data") or {}
    params = flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {})
    timestamp = data.get("timestamp")
    # a queued or running experiment has no metrics of its own yet (DVC shows its baseline's)
    metrics = _metrics(data) if state in ("done", "workspace", "commit") else dict.fromkeys(METRIC_COLUMNS.values())
    return ExperimentRow(name, str(entry.get("rev", ""))[:7], state, timestamp, params, metrics)


def rows_from_exp_show(shown: list[dict]) -> list[ExperimentRow]:
    """The rows of ``dvc exp show --json``: each commit, then its experiments."""
    rows = []
    for i, commit in enumerate(shown):
        rev = str(commit.get("rev", ""))
        if rev == "workspace":
            rows.append(_row(commit, "workspace", "workspace"))
            continue
        if i <= 1 or commit.get("experiments"):  # HEAD, and older commits only with experiments (-A)
            rows.append(_row(commit, commit.get("name") or rev[:7], "commit"))
        for experiment in commit.get("experiments") or []:
            executor = experiment.get("executor") or {}
            state = {"success": "done", "running": "running", "queued": "queued", "failed": "failed"}.get(
                executor.get("state", "success"), executor.get("state", "done")
            )
            for rev_entry in experiment.get("revs") or []:
                name = experiment.get("name") or rev_entry.get("name") or str(rev_entry.get("rev", ""))[:7]
                rows.append(_row(rev_entry, name, state))
    return rows


def changed_params(rows: list[ExperimentRow]) -> list[str]:
    """The params keys whose values differ between the rows that have params."""
    with_params = [r for r in rows if r.params]
    keys = sorted({k for r in with_params for k in r.params})
    return [k for k in keys if len({repr(r.params.get(k)) for r in with_params}) > 1]


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def to_markdown(rows: list[ExperimentRow], name_filter: str | None = None) -> str:
    """One Markdown table: name, state, the changed params, the review metrics."""
    if name_filter:  # the matching experiments only, and the params that differ between them
        rows = [r for r in rows if r.state not in ("workspace", "commit") and name_filter in r.name]
    params = changed_params(rows)
    head = ["experiment", "rev", "state", *params, *METRIC_COLUMNS.values()]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.name, r.rev, r.state, *(_cell(r.params.get(k)) for k in params)]
        cells += [_cell(r.metrics[t]) for t in METRIC_COLUMNS.values()]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"\n{len(rows)} row(s); params shown: those that differ between them ({len(params)}); "
        "all columns: dvc exp show.\n"
    )
    return "\n".join(lines) + "\n" + note
