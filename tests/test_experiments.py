"""The experiment comparison (entromix.experiments, scripts/compare_experiments.py) on fabricated exports."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from entromix.errors import DataError
from entromix.experiments import (experiment_rows, experiments_from_exp_show, markdown_tables, setting_label,
                                  strategy_label, summarise)  # fmt: skip

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = {"strategy": "curriculum", "jsd_end": 1.0, "gate": "hard", "pacing": "linear", "rescore_every": 0,
             "max_synthetic_fraction": 0.5, "warmup_epochs": 4, "jsd_start": 0.03}  # fmt: skip


def exp_state(name: str, curriculum: dict, seed: int, auc: float, sens: float, spec: float, scarce=None,
              status: str = "Success") -> dict:  # fmt: skip
    """One experiment as `dvc exp show --json` (DVC 3) writes it."""
    params = {"curriculum": {**REFERENCE, **curriculum}, "train": {"seed": seed},
              "ingest": {"scarce_train_images": scarce, "scarce_label": "malignant"}}  # fmt: skip
    at = {"sensitivity": sens, "specificity": spec, "balanced_accuracy": (sens + spec) / 2}
    tiers = {"all": {"pool": 6, "eligible_final": 3, "used": 3}, "good": {"pool": 3, "eligible_final": 3, "used": 3},
             "degraded": {"pool": 2, "eligible_final": 0, "used": 0},
             "hallucinated": {"pool": 1, "eligible_final": 0, "used": 0}}  # fmt: skip
    return {
        "rev": f"{abs(hash((name, seed))):040x}"[:40], "name": name, "error": None, "experiments": None,
        "data": {
            "rev": "x", "timestamp": "2026-11-23T18:00:00", "status": status, "executor": None, "error": None,
            "params": {"params.yaml": {"data": params}},
            "metrics": {
                "metrics/evaluate.json": {"data": {"evaluate": {"test": {"roc_auc": auc, "at_050": at, "at_tuned": at}}}},
                "metrics/train.json": {"data": {"train": {"best_epoch": seed + 3, "synthetic": tiers}}},
                "metrics/score.json": {"data": {"score": {"tier_auroc_hallucinated_vs_good": 0.9,
                                                          "tier_auroc_degraded_vs_good": 0.6, "oof_auc": 0.8}}},
            },
            "deps": {}, "outs": {}, "meta": {"has_checkpoints": False},
        },
    }  # fmt: skip


def queued(state: dict) -> dict:
    """The same experiment while it waits in `dvc queue`: DVC shows the baseline's metrics."""
    return {**state, "name": state["name"] + "-queued", "rev": "b" * 40, "_executor": {"state": "queued"}}


def export(states: list[dict]) -> list:
    workspace = {"rev": "workspace", "name": None, "error": None, "experiments": None,
                 "data": {"rev": "workspace", "params": {}, "metrics": {}}}  # fmt: skip
    baseline = {"rev": "a" * 40, "name": "main", "error": None, "data": {"rev": "a" * 40, "params": {}, "metrics": {}},
                "experiments": [{"revs": [s], "executor": s.get("_executor") or {"state": "success"}, "name": s["name"]}
                                for s in states]}  # fmt: skip
    return [workspace, baseline]


FABRICATED = [
    exp_state("full-real-only-s0", {"strategy": "real_only"}, 0, 0.80, 0.6, 0.9),
    exp_state("full-real-only-s1", {"strategy": "real_only"}, 1, 0.90, 0.8, 0.7),
    exp_state("full-real-only-s2", {"strategy": "real_only"}, 2, 0.70, 0.7, 0.8),
    exp_state("full-capped-s0", {"jsd_end": 0.311}, 0, 0.95, 0.9, 0.9),
    exp_state("full-capped-s1", {"jsd_end": 0.311}, 1, 0.85, 0.9, 0.7),
    exp_state("n10-curriculum-s0", {}, 0, 0.60, 0.5, 0.5, scarce=10),
    exp_state("failed", {}, 5, 0.1, 0.1, 0.1, status="Failed"),
]
FABRICATED.append(queued(exp_state("full-real-only-s3", {"strategy": "real_only"}, 3, 0.1, 0.1, 0.1)))


def scorer_state(name: str, score: dict, seed: int, halluc: float, degraded: float) -> dict:
    """A score-only run (`dvc exp run ... score`): evaluate metrics are the baseline's, stale."""
    state = exp_state(name, {}, 0, 0.5, 0.5, 0.5)
    state["data"]["params"]["params.yaml"]["data"]["score"] = {"augment": True, "epochs": 8, "folds": 4,
                                                               "temperature_scaling": True, "seed": seed, **score}
    state["data"]["metrics"]["metrics/score.json"]["data"]["score"] = {
        "tier_auroc_hallucinated_vs_good": halluc, "tier_auroc_degraded_vs_good": degraded, "oof_auc": 0.8}
    return state


SCORER = [
    scorer_state("scorer-base-s0", {}, 0, 0.8, 0.6),
    scorer_state("scorer-no-augment-s0", {"augment": False}, 0, 0.7, 0.5),
]


def test_scorer_ablation_table():
    from entromix.experiments import is_scorer_ablation, scorer_label, scorer_rows, scorer_table

    experiments = experiments_from_exp_show(export(SCORER + [scorer_state("scorer-base-s1", {}, 1, 0.9, 0.7)]))
    assert all(is_scorer_ablation(e) for e in experiments)
    assert scorer_label({"score.epochs": 16, "score.folds": 4}) == "epochs 16"
    text = scorer_table(scorer_rows(experiments, "leuk"))
    assert "| base | 0.850 ± 0.071 | 0.650 ± 0.071 | 0.800 ± 0.000 | 2 |" in text
    assert "| augment false | 0.700 | 0.500 | 0.800 | 1 |" in text


def test_labels():
    assert strategy_label({"curriculum.strategy": "naive", "curriculum.jsd_end": 0.3}) == "naive"
    assert strategy_label({"curriculum.strategy": "curriculum", "curriculum.jsd_end": 1.0}) == "curriculum"
    label = strategy_label({"curriculum.strategy": "curriculum", "curriculum.jsd_end": 0.311, "curriculum.gate": "soft",
                            "curriculum.pacing": "sqrt", "curriculum.rescore_every": 2})  # fmt: skip
    assert label == "curriculum, jsd_end 0.311, soft gate, sqrt pacing, rescore every 2"
    assert setting_label({"ingest.scarce_train_images": None}) == "full"
    assert setting_label({"ingest.scarce_train_images": 10, "ingest.scarce_label": "malignant"}) == "10 malignant"


def test_reads_finished_experiments_and_averages_over_seeds():
    experiments = experiments_from_exp_show(export(FABRICATED))
    assert sorted(e.name for e in experiments) == sorted(s["name"] for s in FABRICATED[:-2])  # failed, queued left out
    rows = experiment_rows(experiments, "demo")
    summary = summarise(rows).set_index(["setting", "strategy"])
    real = summary.loc[("full", "real_only")]
    assert real["seeds"] == 3
    assert real["roc_auc_mean"] == pytest.approx(0.8) and real["roc_auc_std"] == pytest.approx(0.1)  # sample std
    assert real["sens_050_mean"] == pytest.approx(0.7) and real["spec_tuned_mean"] == pytest.approx(0.8)
    assert real["bacc_050_mean"] == pytest.approx(np.mean([0.75, 0.75, 0.75]))
    capped = summary.loc[("full", "curriculum, jsd_end 0.311")]
    assert capped["seeds"] == 2 and capped["roc_auc_mean"] == pytest.approx(0.9)
    assert capped["roc_auc_std"] == pytest.approx(np.std([0.95, 0.85], ddof=1))
    one = summary.loc[("10 malignant", "curriculum")]
    assert one["seeds"] == 1 and np.isnan(one["roc_auc_std"])
    assert capped["admitted_good_mean"] == 3 and capped["admitted_hallucinated_mean"] == 0
    assert capped["auroc_halluc_vs_good"] == pytest.approx(0.9)
    assert real["best_epoch_mean"] == pytest.approx(5.0)  # best_epoch 3, 4, 5 (0-based) -> 4, 5, 6


def test_markdown_has_every_setting_and_strategy_in_order():
    summary = summarise(experiment_rows(experiments_from_exp_show(export(FABRICATED)), "demo"))
    text = markdown_tables(summary, ["real_only", "naive", "random", "curriculum"])
    assert text.index("### demo: full") < text.index("### demo: 10 malignant")
    full = text[text.index("### demo: full"):text.index("### demo: 10 malignant")]
    assert full.index("| real_only |") < full.index("| curriculum, jsd_end 0.311 |")
    assert "| real_only | 0.800 ± 0.100 | 0.700 ± 0.100 |" in full
    assert "hallucinated vs good 0.900, degraded vs good 0.600" in full
    assert "| curriculum | 0.600 | 0.500 |" in text  # one seed: no std


def test_a_repeated_seed_is_an_error():
    states = FABRICATED[:3] + [exp_state("again", {"strategy": "real_only"}, 0, 0.5, 0.5, 0.5)]
    with pytest.raises(DataError, match="repeat 'real_only' \\(full, seed 0\\)"):
        summarise(experiment_rows(experiments_from_exp_show(export(states)), "demo"))


def test_not_an_export_is_a_clear_error():
    with pytest.raises(DataError, match="expected the JSON list"):
        experiments_from_exp_show({"rev": "workspace"}, "x.json")


def test_compare_script_writes_results_keeping_the_hand_written_part(tmp_path):
    demo, leuk = tmp_path / "demo.json", tmp_path / "leuk.json"
    demo.write_text(json.dumps(export(FABRICATED)))
    leuk.write_text(json.dumps(export(FABRICATED[:3] + SCORER)))
    out = tmp_path / "RESULTS.md"
    out.write_text("# Results\n\nOur conclusion, written by hand.\n\n<!-- generated:start -->\nSTALE TABLE\n<!-- generated:end -->\n\nTail.\n")
    args = [sys.executable, str(PROJECT / "scripts" / "compare_experiments.py"), "--export", f"demo={demo}",
            "--export", f"leukemia_dev={leuk}", "--out", str(out), "--figure", str(tmp_path / "r.png"),
            "--csv", str(tmp_path / "s.csv")]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# Results\n\nOur conclusion, written by hand.") and text.rstrip().endswith("Tail.")
    assert "STALE TABLE" not in text and "### demo: full" in text and "### leukemia_dev: full" in text
    assert "9 strategy experiments and 2 scorer runs in all." in text
    assert "### leukemia_dev: scorer ablation" in text and "| augment false | 0.700 | 0.500 | 0.800 | 1 |" in text
    assert (tmp_path / "r.png").stat().st_size > 1000
    assert len(pd.read_csv(tmp_path / "s.csv")) == 4
    missing = subprocess.run(args[:2] + ["--export", f"demo={tmp_path / 'nope.json'}", "--out", str(out)],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and "nope.json: no such export" in missing.stderr
