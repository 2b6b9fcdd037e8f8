"""Sweeps and their reports (entromix.comparison's sweeps, exports, sweep_tables, results_report;
`entromix sweep`, `entromix results`) on fabricated `dvc exp show --json` exports."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from in_process import cli_in_process

from entromix.common.errors import DataError
from entromix.comparison.exports import experiments_from_exp_show
from entromix.comparison.sweep_tables import summarise, sweep_rows, sweep_tables
from entromix.comparison.sweeps import experiment_name, load_sweep, parse_name

PROJECT = Path(__file__).resolve().parents[1]

SWEEP = """\
name: strat
title: Strategies
about: A fabricated comparison.
report: test
seed_keys: [train.seed, score.seed]
settings: [full, "10"]
base: {curriculum.jsd_end: 0.311}
variants:
  real-only: {curriculum.strategy: real_only}
  capped: {}
"""


def exp_state(name: str, auc: float, sens: float, spec: float, status: str = "Success", val_auc: float = 0.9) -> dict:
    """One experiment as `dvc exp show --json` (DVC 3) writes it."""
    at = {"sensitivity": sens, "specificity": spec, "balanced_accuracy": (sens + spec) / 2}
    tiers = {
        "all": {"pool": 6, "eligible_final": 3, "used": 3},
        "good": {"pool": 3, "eligible_final": 3, "used": 3},
        "degraded": {"pool": 2, "eligible_final": 0, "used": 0},
        "hallucinated": {"pool": 1, "eligible_final": 0, "used": 0},
    }
    return {
        "rev": f"{abs(hash(name)):040x}"[:40],
        "name": name,
        "error": None,
        "experiments": None,
        "data": {
            "rev": "x",
            "timestamp": "2026-12-01T18:00:00",
            "status": status,
            "executor": None,
            "error": None,
            "params": {"params.yaml": {"data": {"train": {"seed": 0}}}},
            "metrics": {
                "metrics/evaluate.json": {
                    "data": {"evaluate": {"test": {"roc_auc": auc, "at_050": at, "at_tuned": at}}}
                },
                "metrics/train.json": {
                    "data": {
                        "train": {
                            "best_epoch": 3,
                            "synthetic": tiers,
                            "final": {"val_auc": val_auc, "val_loss": 0.3},
                            "best": {"val_auc": val_auc + 0.01},
                        }
                    }
                },
                "metrics/score.json": {
                    "data": {
                        "score": {
                            "tier_auroc_hallucinated_vs_good": 0.9,
                            "tier_auroc_degraded_vs_good": 0.6,
                            "oof_auc": 0.8,
                            "temperature": 1.5,
                        }
                    }
                },
            },
            "deps": {},
            "outs": {},
            "meta": {"has_checkpoints": False},
        },
    }


def queued(state: dict) -> dict:
    """The same experiment while it waits in `dvc queue`: DVC shows the baseline's metrics."""
    return {**state, "name": state["name"].replace("-s", "-q"), "rev": "b" * 40, "_executor": {"state": "queued"}}


def export(states: list[dict]) -> list:
    workspace = {
        "rev": "workspace",
        "name": None,
        "error": None,
        "experiments": None,
        "data": {"rev": "workspace", "params": {}, "metrics": {}},
    }
    baseline = {
        "rev": "a" * 40,
        "name": "main",
        "error": None,
        "data": {"rev": "a" * 40, "params": {}, "metrics": {}},
        "experiments": [
            {"revs": [s], "executor": s.get("_executor") or {"state": "success"}, "name": s["name"]} for s in states
        ],
    }
    return [workspace, baseline]


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        out.update(flat(value, name) if isinstance(value, dict) else {name: value})
    return out


def api_rows(states: list[dict]) -> dict:
    """The same experiments as `entromix sweep` exports them: dvc.api.exp_show's flat rows
    (DVC 3.67), a key two files share prefixed with its file's path, then the dependency hashes."""
    rows = [
        {"Experiment": "workspace", "rev": "workspace", "typ": "workspace", "State": None},
        {"Experiment": "main", "rev": "aaaaaaa", "typ": "baseline", "State": None, "evaluate.test.roc_auc": 0.5},
    ]
    for i, s in enumerate(states):
        data = s["data"]
        metrics = {k: v for path, f in data["metrics"].items() for k, v in flat(f["data"]).items()}
        params = flat(data["params"]["params.yaml"]["data"])
        metrics["train.epochs"], params["train.epochs"] = 6, 30  # the same key in metrics/train.json and params.yaml
        state = (s.get("_executor") or {}).get("state", "failed" if data["status"] == "Failed" else "success")
        metrics["score.temperature"] = "None" if s["name"] == "not-a-sweep-name" else metrics["score.temperature"]
        rows.append(
            {
                "Experiment": s["name"],
                "rev": s["rev"][-7:],
                "typ": "branch_base" if i == len(states) - 1 else "branch_commit",
                "Created": "06:00 PM",
                "parent": None,
                "State": {"queued": "Queued", "running": "Running", "failed": "Failed"}.get(state),  # None: done
                "Executor": "workspace" if state == "running" else None,
                **{k: v for k, v in metrics.items() if k != "train.epochs"},
                "metrics/train.json:train.epochs": metrics["train.epochs"],
                **{k: v for k, v in params.items() if k != "train.epochs"},
                "params.yaml:train.epochs": params["train.epochs"],
                "pipeline/train.py": "0123456789abcdef0123456789abcdef",
            }
        )
    return {"format": "dvc.api.exp_show", "dvc": "3.67.1", "rows": rows}


FABRICATED = [
    exp_state("strat-real-only-full-s0", 0.80, 0.6, 0.9),
    exp_state("strat-real-only-full-s1", 0.90, 0.8, 0.7),
    exp_state("strat-real-only-full-s2", 0.70, 0.7, 0.8),
    exp_state("strat-capped-full-s0", 0.95, 0.9, 0.9),
    exp_state("strat-capped-full-s1", 0.85, 0.9, 0.7),
    exp_state("strat-capped-n10-s0", 0.60, 0.5, 0.5),
    exp_state("strat-capped-n10-s1", 0.1, 0.1, 0.1, status="Failed"),
    exp_state("not-a-sweep-name", 0.1, 0.1, 0.1),
    queued(exp_state("strat-real-only-full-s3", 0.1, 0.1, 0.1)),
]


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "strategies.yaml"
    path.write_text(SWEEP)
    return path


def test_names_round_trip():
    for sweep, variant, setting, seed in [
        ("scorer", "lr-3e-4", "10", 1),
        ("train", "size-96", "full", 0),
        ("strat", "real-only", "full", 12),
    ]:
        name = experiment_name(sweep, variant, setting, seed)
        assert parse_name(name) == {"sweep": sweep, "variant": variant, "setting": setting, "seed": seed}
    assert parse_name("workspace") is None and parse_name("strat-x-full") is None


def test_load_sweep_checks_the_file(tmp_path, sweep_file):
    sweep = load_sweep(sweep_file)
    assert sweep.name == "strat" and list(sweep.variants) == ["real-only", "capped"]
    assert sweep.seed_keys == ("train.seed", "score.seed") and sweep.settings == ("full", "10")
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("name: Bad_Name\nvariants: {a: {}}", "'name' must be"),
        ("name: x\nvariants: {}", "non-empty 'variants'"),
        ("name: x\nreport: nope\nvariants: {a: {}}", "'report' is 'nope'"),
        ("name: x\nvariants: {A_b: {}}", "variant name 'A_b'"),
        ("name: [x", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(DataError, match=message):
            load_sweep(bad)
    with pytest.raises(DataError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_rows_keep_finished_sweep_experiments_and_average_over_seeds():
    rows = sweep_rows(experiments_from_exp_show(export(FABRICATED)), "demo")
    assert sorted(rows["experiment"]) == sorted(s["name"] for s in FABRICATED[:6])  # no failed, queued, foreign
    summary = summarise(rows)
    real = summary[(summary["variant"] == "real-only") & (summary["setting"] == "full")].iloc[0]
    assert real["seeds"] == 3
    assert real["test_auc_mean"] == pytest.approx(0.8) and real["test_auc_std"] == pytest.approx(0.1)
    assert real["best_epoch_mean"] == 4  # 1-based
    assert real["admitted_good_mean"] == 3 and real["pool_good"] == 3


def test_the_dvc_api_export_gives_the_same_rows_as_the_cli_export():
    running = queued(exp_state("strat-capped-full-s2", 0.1, 0.1, 0.1)) | {"_executor": {"state": "running"}}
    experiments = experiments_from_exp_show(api_rows(FABRICATED + [running]), "x.json")
    assert sorted(e.name for e in experiments) == sorted(s["name"] for s in FABRICATED[:6] + FABRICATED[7:8])
    pd.testing.assert_frame_equal(
        sweep_rows(experiments, "demo").sort_values("experiment", ignore_index=True),
        sweep_rows(experiments_from_exp_show(export(FABRICATED)), "demo").sort_values("experiment", ignore_index=True),
    )
    assert next(e for e in experiments if e.name == "not-a-sweep-name").metrics["score.temperature"] is None
    capped = next(e for e in experiments if e.name == "strat-capped-full-s0")
    assert capped.params["train.epochs"] == 30 and capped.metrics["train.epochs"] == 6  # path-prefixed columns
    assert capped.params["train.seed"] == 0 and capped.metrics["evaluate.test.roc_auc"] == 0.95
    with pytest.raises(DataError, match="a list of rows under 'rows'"):
        experiments_from_exp_show({"format": "dvc.api.exp_show"}, "x.json")


def test_the_committed_exports_in_the_old_format_are_still_read():
    for path in sorted((PROJECT / "results").glob("*/*.json")):
        rows = sweep_rows(experiments_from_exp_show(json.loads(path.read_text()), str(path)), path.parent.name)
        assert len(rows) > 0 and (rows["test_auc"].notna().any() or rows["oof_auc"].notna().any()), path


def test_a_repeated_seed_is_an_error():
    rows = sweep_rows(experiments_from_exp_show(export(FABRICATED[:3])), "demo")
    with pytest.raises(DataError, match="repeat a"):
        summarise(pd.concat([rows, rows.iloc[:1]]))


def test_tables_follow_the_sweep_order_and_report(sweep_file):
    sweep = load_sweep(sweep_file)
    summary = summarise(sweep_rows(experiments_from_exp_show(export(FABRICATED)), "demo"))
    text = sweep_tables(summary, sweep, "demo")
    assert text.startswith("### demo: Strategies") and "A fabricated comparison." in text
    assert text.index("**full training set**") < text.index("**10 malignant training images**")
    full = text[text.index("**full training set**") : text.index("**10 malignant")]
    assert full.index("| real-only |") < full.index("| capped |")
    assert "| real-only | 0.800 ± 0.100 |" in full and "eligible at the end: good" in full
    assert sweep_tables(summary, sweep, "other") == ""


def test_not_an_export_is_a_clear_error():
    with pytest.raises(DataError, match="expected the JSON list"):
        experiments_from_exp_show({"rev": "workspace"}, "x.json")


def test_sweep_dry_run_lists_one_command_per_setting_variant_and_seed(sweep_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "entromix.cli", "sweep", str(sweep_file), "--seeds", "0,1", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 * 2 * 2
    first = lines[0]
    assert first.startswith("dvc exp run --queue -n strat-real-only-full-s0 ")
    assert "-S curriculum.jsd_end=0.311 -S curriculum.strategy=real_only -S train.seed=0 -S score.seed=0" in first
    assert "-S ingest.scarce_train_images=null" in first
    scarce = [line for line in lines if "-n strat-capped-n10-s1 " in line][0]
    assert "-S ingest.scarce_train_images=10 -S ingest.scarce_seed=1" in scarce
    bad = cli_in_process(tmp_path, "sweep", str(sweep_file), "--variants", "nope", "--dry-run")
    assert bad.returncode == 2 and "unknown variant(s) ['nope']" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("entromix sweep: error: ") and bad.stdout == ""
    no_export = cli_in_process(tmp_path, "sweep", str(sweep_file), "--no-run")
    assert no_export.returncode == 2 and "--export FILE is needed" in no_export.stderr


def test_every_committed_sweep_file_loads_and_sets_only_known_params():
    import yaml

    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    for path in sorted((PROJECT / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path)
        for changes in [sweep.base, *sweep.variants.values()]:
            for key in changes:
                section, _, name = key.partition(".")
                top = name.split(".")[0]  # ingest.class_map.Early: one entry of a mapping
                assert top in params.get(section, {}), f"{path.name}: {key} is not a params.yaml key"


def test_list_and_mapping_values_reach_params_yaml_through_dvcs_own_override_parser(tmp_path):
    import yaml
    from dvc.utils.hydra import apply_overrides

    from entromix.comparison.sweeps import format_value

    path = tmp_path / "params.yaml"
    path.write_text((PROJECT / "params.yaml").read_text())
    values = {
        "ingest.labels": ["benign", "early", "pre", "pro"],
        "ingest.positive_labels": ["early", "pre", "pro"],
        "ingest.class_map.lymphoblast": "pro",
        "ingest.scarce_train_images": None,
        "curriculum.pseudo_labels": True,
    }
    apply_overrides(str(path), [f"{k}={format_value(v)}" for k, v in values.items()])
    ingest = yaml.safe_load(path.read_text())["ingest"]
    assert ingest["labels"] == ["benign", "early", "pre", "pro"] and ingest["positive_labels"] == [
        "early",
        "pre",
        "pro",
    ]
    assert ingest["class_map"] == {"lymphocyte": "benign", "lymphoblast": "pro"}
    assert ingest["scarce_train_images"] is None
    assert yaml.safe_load(path.read_text())["curriculum"]["pseudo_labels"] is True
    assert format_value({"a": 1, "b": [True, None]}) == "{a:1,b:[true,null]}"


def test_results_command_writes_results_keeping_the_hand_written_part(tmp_path, sweep_file):
    results, sweeps = tmp_path / "results", tmp_path / "sweeps"
    (results / "demo").mkdir(parents=True)
    (results / "leukemia_dev").mkdir()
    sweeps.mkdir()
    (sweeps / "strategies.yaml").write_text(sweep_file.read_text())
    (results / "demo" / "strategies.json").write_text(json.dumps(api_rows(FABRICATED)))  # entromix sweep's format
    (results / "leukemia_dev" / "strategies.json").write_text(json.dumps(export(FABRICATED[:3])))
    out = tmp_path / "RESULTS.md"
    out.write_text(
        "# Results\n\nOur conclusion, written by hand.\n\n"
        "<!-- generated:start -->\nSTALE TABLE\n<!-- generated:end -->\n\nTail.\n"
    )
    args = [
        "results",
        "--results",
        str(results),
        "--sweeps",
        str(sweeps),
        "--out",
        str(out),
        "--figures",
        str(tmp_path / "fig"),
        "--csv",
        str(tmp_path / "s.csv"),
    ]
    proc = cli_in_process(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("entromix results: 9 experiments, 4 rows -> ")
    assert "\t$(BIN)/entromix results\n" in (PROJECT / "Makefile").read_text()  # make results runs this command
    text = out.read_text()
    assert text.startswith("# Results\n\nOur conclusion, written by hand.") and text.rstrip().endswith("Tail.")
    assert "STALE TABLE" not in text and "9 experiments in all." in text
    assert text.index("### leukemia_dev: Strategies") < text.index("### demo: Strategies")
    assert (tmp_path / "fig" / "results_strat.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4
    (results / "demo" / "unknown.json").write_text("[]")
    missing = cli_in_process(tmp_path, *args)
    assert missing.returncode == 2 and "no sweep file" in missing.stderr and "Traceback" not in missing.stderr
    assert np.isfinite(pd.read_csv(tmp_path / "s.csv")["test_auc_mean"]).all()


def test_sweep_counts_active_queue_workers():
    """The queue watcher restarts workers while fewer than --jobs are active (DVC's workers can exit early)."""
    from entromix.comparison import sweep_run as module

    status = [
        "Task     Name      Created    Status",
        "55d3769  strat-a   06:34 PM   Running",
        "",
        "Worker status: 1 active, 0 idle",
    ]
    assert module.active_workers(status) == 1
    assert module.active_workers(["Task Name Created Status"]) == 0


def test_results_check_passes_on_the_committed_results_and_fails_on_a_stale_copy(tmp_path):
    """`entromix results --check` (issue 37): the committed RESULTS.md block and results/summary.csv
    are what the committed exports give; a copy with one figure of the generated block changed, and
    one with a row of the CSV dropped, are out of date (exit 1, naming the file). It writes nothing."""
    import shutil

    def check(root: Path):
        return cli_in_process(
            root,
            *("results", "--check", "--results", "results", "--sweeps", "sweeps", "--out", "RESULTS.md"),
            *("--figures", "docs/figures", "--csv", "results/summary.csv"),
        )

    committed = check(PROJECT)
    assert committed.returncode == 0, committed.stdout + committed.stderr
    assert "match the exports" in committed.stdout
    root = tmp_path / "copy"
    for name in ("results", "sweeps"):
        shutil.copytree(PROJECT / name, root / name)
    text = (PROJECT / "RESULTS.md").read_text()
    head, block = text[: text.index("<!-- generated:start -->")], text[text.index("<!-- generated:start -->") :]
    first_figure = next(t for t in block.split("|") if t.strip().startswith("0.9"))
    (root / "RESULTS.md").write_text(head + block.replace(first_figure, " 0.123 ", 1))
    stale = check(root)
    assert stale.returncode == 1 and "out of date: RESULTS.md differ" in stale.stdout, stale.stdout
    assert " 0.123 " in (root / "RESULTS.md").read_text()  # --check wrote nothing
    (root / "RESULTS.md").write_text(text)
    assert check(root).returncode == 0
    csv = root / "results" / "summary.csv"
    csv.write_text("".join(csv.read_text().splitlines(keepends=True)[:-1]))
    stale = check(root)
    assert stale.returncode == 1 and "results/summary.csv" in stale.stdout
