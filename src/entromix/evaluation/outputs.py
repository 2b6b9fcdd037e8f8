"""The evaluate stage's files: predictions, metrics, the plot series and the figures, written as one set."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from entromix.common.atomic import atomic_paths, json_text
from entromix.common.errors import DataError
from entromix.common.labels import LabelSpace
from entromix.common.stage_io import missing_input
from entromix.common.torch_files import save_torch_file
from entromix.evaluation.figures import (
    plot_calibration,
    plot_confusion,
    plot_curriculum,
    plot_pr,
    plot_roc,
    plot_training_curves,
)
from entromix.evaluation.model_card import model_card
from entromix.evaluation.ood import OodDetector
from entromix.evaluation.report import calibration_table, curves
from entromix.scoring.jsd_plots import jsd_groups, plot_jsd_distribution

FIGURES = ("roc", "pr", "confusion", "calibration", "training_curves", "curriculum", "jsd_admission")
TABLES = ("roc", "pr", "confusion", "calibration")


def read_train_run(path: Path) -> dict[str, Any]:
    """The train stage's ``run.json`` (settings and best epoch); damage is a DataError naming the file."""
    try:
        run = json.loads(path.read_text())
        missing = {"jsd_start", "jsd_end"} - set(run["curriculum"])
        if missing:
            raise KeyError(", ".join(sorted(missing)))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: damaged ({type(exc).__name__}: {exc}). Rerun the train stage (dvc repro -f train)."
        ) from None
    return run


def read_ingest_metrics(path: Path) -> dict:
    """metrics/ingest.json's ``ingest`` section (the data counts of the model card)."""
    if not path.is_file():
        raise missing_input(path, "ingest")
    try:
        return json.loads(path.read_text())["ingest"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: damaged ({type(exc).__name__}: {exc}). Rerun ingest (dvc repro -f ingest).") from None


def prediction_table(
    rows: pd.DataFrame, probability: np.ndarray, space: LabelSpace | None = None, probs: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per real image (``rows``: manifest rows of the test or the val split): filename,
    class, label and P(malignant) (``prediction`` is added once the threshold is tuned). ``label``
    is the binary view's target (1: a positive label).

    With more than two labels (``space``, and ``probs`` the (N, K) probabilities) each row also
    has its ``true_label`` and ``predicted_label`` (argmax) names and ``p_<label>`` per label."""
    space = space or LabelSpace(("benign", "malignant"), (1,))
    frame = pd.DataFrame(
        {
            "filename": rows["source"].astype(str) + "/" + rows["path"].astype(str),
            "class": rows["class"].astype(str),
            "label": space.binary_targets(rows["label"].to_numpy()),
            "probability": probability,
        }
    )
    if space.num_classes > 2 and probs is not None:
        names = np.array(space.names)
        frame["true_label"] = names[rows["label"].to_numpy(dtype=np.int64)]
        frame["predicted_label"] = names[probs.argmax(1)]
        for i, name in enumerate(space.names):
            frame[f"p_{name}"] = np.round(probs[:, i].astype(np.float64), 6)
    return frame.reset_index(drop=True)


def deploy_checkpoint(
    checkpoint: dict, threshold: float, target_sensitivity: float, metrics: dict, ood: OodDetector | None = None
) -> dict:
    """The evaluated checkpoint with its operating point: what ``entromix predict`` and ``export`` use.

    ``threshold``: P(malignant) at or above which an image is called malignant, tuned on val for
    ``target_sensitivity``; ``metrics``: evaluate.json, whose val sensitivity at that threshold
    and test summary go along; ``ood``: the out-of-distribution detector (``entromix.evaluation.ood``),
    stored under ``ood`` as tensors and numbers."""
    test = metrics["evaluate"]["test"]
    extra = {"ood": ood.to_checkpoint()} if ood is not None else {}
    return {
        **checkpoint,
        **extra,
        "threshold": {
            "value": float(threshold),
            "target_sensitivity": float(target_sensitivity),
            "val_sensitivity": metrics["evaluate"]["threshold"]["val_sensitivity"],
        },
        "test": {"roc_auc": test["roc_auc"], "at_tuned": test["at_tuned"]},
    }


def write_outputs(
    paths: dict[str, Path],
    deploy: dict,
    predictions: pd.DataFrame,
    metrics: dict,
    labels: list[str],
    calibration_bins: int,
    history: pd.DataFrame,
    run: dict[str, Any],
    dataset: pd.DataFrame,
    tiers: pd.DataFrame | None,
    ingest: dict,
    pictures: dict[str, Callable[[Path], None]] | None = None,
    val_predictions: pd.DataFrame | None = None,
) -> None:
    """Write every output at once (all or none). ``paths``: ``predictions`` (test), ``val_predictions``
    (the val images the threshold was tuned on, written when given), ``metrics``, ``model`` (the
    deployable checkpoint, :func:`deploy_checkpoint`), ``card`` (its model card, from ``ingest``:
    metrics/ingest.json's section), ``plots`` (the folder of the plot series) and
    ``figures`` (the folder of the PNG figures). ``pictures``: more figures, name -> ``draw(path)``
    (``entromix.evaluation.pictures``), written as ``figures/<name>.png`` in the same set."""
    pictures = pictures or {}
    y, p = predictions["label"].to_numpy(), predictions["probability"].to_numpy()
    m = metrics["evaluate"]["test"]
    tables = _plot_tables(y, p, predictions["prediction"], labels, calibration_bins)
    card = model_card(deploy, ingest, run, history, metrics["evaluate"], predictions)
    targets = [paths["predictions"], paths["metrics"], paths["model"], paths["card"]]
    targets += [paths["plots"] / f"{n}.csv" for n in TABLES]
    targets += [paths["figures"] / f"{n}.png" for n in (*FIGURES, *pictures)]
    if val_predictions is not None:
        targets.append(paths["val_predictions"])
    with atomic_paths(*targets) as tmp:
        predictions_csv, metrics_json, model_pt, card_md, *rest = tmp
        if val_predictions is not None:
            *rest, val_csv = rest
            write_predictions(val_predictions, val_csv)
        for draw, picture_png in zip(pictures.values(), rest[len(TABLES) + len(FIGURES) :]):
            draw(picture_png)
        save_torch_file(deploy, model_pt)
        card_md.write_text(card, encoding="utf-8")
        table_paths, fig = dict(zip(TABLES, rest[: len(TABLES)])), dict(zip(FIGURES, rest[len(TABLES) :]))
        write_predictions(predictions, predictions_csv)
        metrics_json.write_text(json_text(metrics))
        for name, frame in tables.items():
            frame.round(6).to_csv(table_paths[name], index=False)
        _draw_figures(fig, tables, m, y, labels, history, run, dataset, tiers)
    # the outputs persist (dvc.yaml: a failed run keeps the last good ones), so a figure this run does
    # not draw (a multi-class confusion matrix after a binary run) must not linger in the folder
    for stale in sorted(set(Path(paths["figures"]).glob("*.png")) - {Path(t) for t in targets}):
        stale.unlink()


def _plot_tables(
    y: np.ndarray, p: np.ndarray, predicted: pd.Series, labels: list[str], calibration_bins: int
) -> dict[str, pd.DataFrame]:
    """The plot series of the test predictions, by :data:`TABLES` name: ROC, PR, confusion, calibration."""
    roc, pr = curves(y, p)
    calibration = calibration_table(y, p, calibration_bins)
    confusion = pd.DataFrame({"actual": [labels[i] for i in y], "predicted": [labels[i] for i in predicted]})
    return dict(zip(TABLES, (roc, pr, confusion, calibration)))


def _draw_figures(
    fig: dict[str, Path],
    tables: dict[str, pd.DataFrame],
    m: dict,
    y: np.ndarray,
    labels: list[str],
    history: pd.DataFrame,
    run: dict[str, Any],
    dataset: pd.DataFrame,
    tiers: pd.DataFrame | None,
) -> None:
    """Draw the :data:`FIGURES` into ``fig`` (name -> PNG path); ``m``: evaluate.json's test section."""
    roc, pr, calibration = tables["roc"], tables["pr"], tables["calibration"]
    plot_roc(roc, m["roc_auc"], {"threshold 0.5": m["at_050"], "tuned": m["at_tuned"]}, fig["roc"])
    plot_pr(pr, m["pr_auc"], float(y.mean()) if len(y) else 0.0, fig["pr"])
    plot_confusion(m["at_tuned"], labels, fig["confusion"])
    plot_calibration(calibration, m["brier"], fig["calibration"])
    plot_training_curves(history, run.get("best_epoch"), fig["training_curves"])
    plot_curriculum(history, int((dataset["is_syn"] == 1).sum()), fig["curriculum"])
    cur = run["curriculum"]
    plot_jsd_distribution(
        jsd_groups(dataset, tiers), fig["jsd_admission"], {"jsd_start": cur["jsd_start"], "jsd_end": cur["jsd_end"]}
    )


def write_predictions(predictions: pd.DataFrame, path: Path) -> None:
    """A predictions CSV. 9 significant digits, not 6 decimals: a confident model's P(malignant) of
    3e-8 and 4e-7 must stay apart (rounded to 0.000000 they tie, and the ROC-AUC recomputed from
    the file, as entromix compare does, fell from 0.990 to 0.959 on the demo); 9 digits hold a
    float32 exactly."""
    written = predictions.assign(probability=[f"{v:.9g}" for v in predictions["probability"].astype(float)])
    written.to_csv(path, index=False, encoding="utf-8")


def summary_lines(metrics: dict, space: LabelSpace | None = None) -> list[str]:
    """The console summary: ROC-AUC with its interval, the operating points at 0.5 and tuned, and
    with more than two labels the K-class model's macro-F1 and per-label recall."""
    m = metrics["evaluate"]["test"]
    t, h, ci = m["at_tuned"], m["at_050"], m["ci95"]
    multi = []
    if "multiclass" in m:
        mc = m["multiclass"]
        recalls = ", ".join(f"{name} {v['recall']}" for name, v in mc["per_class"].items())
        multi = [
            f"entromix evaluate: {len(mc['labels'])} labels (argmax): accuracy {mc['accuracy']}, macro-F1 "
            f"{mc['macro_f1']}, one-vs-rest ROC-AUC {mc['roc_auc_ovr_macro']}; recall {recalls}"
        ]
    side = f" ({space.positive_title} vs the rest)" if space is not None and not space.is_plain_binary else ""
    return [
        *multi,
        f"entromix evaluate: test ROC-AUC{side} {m['roc_auc']} (95% CI {ci['roc_auc_low']}-{ci['roc_auc_high']}), "
        f"PR-AUC {m['pr_auc']}, Brier {m['brier']}",
        f"entromix evaluate: at 0.5: sensitivity {h['sensitivity']}, specificity {h['specificity']}; at tuned "
        f"{t['threshold']}: sensitivity {t['sensitivity']} ({ci['sensitivity_low']}-{ci['sensitivity_high']}), "
        f"specificity {t['specificity']} ({ci['specificity_low']}-{ci['specificity_high']})",
    ]
