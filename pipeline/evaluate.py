"""DVC stage `evaluate`: clinical metrics on the real test images at 0.5 and at a threshold tuned on val.

Reads params section `evaluate`, the train stage's checkpoint, history and run settings, ingest's
array and manifest, and the score stage's data/dataset.csv (for the JSD figure), all checked first
(entromix.stage_io). Writes, as one set:
  metrics/evaluate.json               test metrics at 0.5 and at the tuned threshold, intervals
  data/predictions/test.csv           filename,class,label,probability,prediction (tuned threshold)
  plots/evaluate/{roc,pr,confusion,calibration}.csv   series for `dvc plots show`
  plots/evaluate/figures/*.png        the same as figures, plus training curves, curriculum, JSD
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from entromix.atomic import atomic_paths, json_text
from entromix.checkpoints import load_checkpoint
from entromix.device import describe, resolve_device
from entromix.evaluate import EvaluateConfig, calibration_table, curves, evaluation_report
from entromix.evaluation_figures import (
    plot_calibration,
    plot_confusion,
    plot_curriculum,
    plot_pr,
    plot_roc,
    plot_training_curves,
)
from entromix.fit import predict_logits, uses_channels_last
from entromix.errors import DataError
from entromix.models import build_model
from entromix.params import load_params, section
from entromix.plots import jsd_groups, plot_jsd_distribution
from entromix.stage import run_stage, stage_args
from entromix.stage_io import DATASET, PREPARED, load_dataset, load_prepared, missing_input

MODELS = Path("models/train")
PREDICTIONS = Path("data/predictions/test.csv")
HISTORY = Path("plots/train/history.csv")
PLOTS = Path("plots/evaluate")
FIGURES = PLOTS / "figures"
METRICS = Path("metrics/evaluate.json")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "evaluate", EvaluateConfig, args.params)
    device = resolve_device(config.device, "evaluate.device")
    prepared = load_prepared(PREPARED)
    dataset = load_dataset(DATASET, prepared)
    ckpt = load_checkpoint(MODELS / f"{config.checkpoint}.pt")
    for path in (MODELS / "run.json", HISTORY):
        if not path.is_file():
            raise missing_input(path, "train")
    try:
        run = json.loads((MODELS / "run.json").read_text())
        cur = run["curriculum"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{MODELS / 'run.json'}: damaged ({type(exc).__name__}: {exc}). Rerun the train stage "
                        "(dvc repro -f train).") from None  # fmt: skip
    labels = [str(x) for x in ckpt["labels"]]
    if labels != prepared.labels:
        raise DataError(f"{MODELS / f'{config.checkpoint}.pt'} was trained for labels {labels}, but the prepared data has "
                        f"{prepared.labels}. Rerun the train stage (dvc repro train).")  # fmt: skip
    model = build_model(ckpt["model_name"], int(ckpt["num_classes"]), int(ckpt["image_size"]))
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError) as exc:
        raise DataError(f"{MODELS / f'{config.checkpoint}.pt'}: its weights do not fit {ckpt['model_name']} "
                        f"({str(exc).splitlines()[0]}). Rerun the train stage (dvc repro -f train).") from None  # fmt: skip
    channels_last = uses_channels_last(ckpt["model_name"], device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    manifest, images = prepared.manifest, prepared.images
    real = manifest[manifest["is_syn"] == 0]
    val, test = real[real["split"] == "val"], real[real["split"] == "test"]
    print(f"entromix evaluate: {config.checkpoint} checkpoint (epoch {int(ckpt['epoch']) + 1}, {ckpt['model_name']}) on "
          f"{len(val)} real val and {len(test)} real test images; threshold tuned on val for sensitivity "
          f"{config.target_sensitivity}; device {describe(device)}")  # fmt: skip

    def malignant_probability(rows: pd.DataFrame) -> np.ndarray:
        logits = predict_logits(model, images[rows["id"].to_numpy()], device, int(ckpt["image_size"]), channels_last=channels_last)
        return torch.softmax(torch.from_numpy(logits), 1)[:, 1].numpy().astype(np.float64)

    p_val = malignant_probability(val)
    test_rows = pd.DataFrame({
        "filename": test["source"].astype(str) + "/" + test["path"].astype(str),
        "class": test["class"].astype(str),
        "label": test["label"].astype(int),
        "probability": malignant_probability(test),
    }).reset_index(drop=True)  # fmt: skip
    metrics, tuned = evaluation_report(val["label"].to_numpy(), p_val, test_rows, config)
    test_rows["prediction"] = (test_rows["probability"] >= tuned.threshold).astype(int)
    print(f"entromix evaluate: {tuned.note}")

    y, p = test_rows["label"].to_numpy(), test_rows["probability"].to_numpy()
    m = metrics["evaluate"]["test"]
    roc, pr = curves(y, p)
    calibration = calibration_table(y, p, config.calibration_bins)
    history = pd.read_csv(HISTORY)
    confusion = pd.DataFrame({"actual": [labels[i] for i in y], "predicted": [labels[i] for i in test_rows["prediction"]]})
    figures = ["roc", "pr", "confusion", "calibration", "training_curves", "curriculum", "jsd_admission"]
    tables = {"roc": roc, "pr": pr, "confusion": confusion, "calibration": calibration}
    with atomic_paths(PREDICTIONS, METRICS, *[PLOTS / f"{n}.csv" for n in tables],
                      *[FIGURES / f"{n}.png" for n in figures]) as tmp:  # fmt: skip
        predictions_csv, metrics_json, *rest = tmp
        table_paths, fig = dict(zip(tables, rest[: len(tables)])), dict(zip(figures, rest[len(tables):]))
        test_rows.round({"probability": 6}).to_csv(predictions_csv, index=False, encoding="utf-8")
        metrics_json.write_text(json_text(metrics))
        for name, frame in tables.items():
            frame.round(6).to_csv(table_paths[name], index=False)
        plot_roc(roc, m["roc_auc"], {"threshold 0.5": m["at_050"], "tuned": m["at_tuned"]}, fig["roc"])
        plot_pr(pr, m["pr_auc"], float(y.mean()) if len(y) else 0.0, fig["pr"])
        plot_confusion(m["at_tuned"], labels, fig["confusion"])
        plot_calibration(calibration, m["brier"], fig["calibration"])
        plot_training_curves(history, run.get("best_epoch"), fig["training_curves"])
        plot_curriculum(history, int((dataset["is_syn"] == 1).sum()), fig["curriculum"])
        plot_jsd_distribution(jsd_groups(dataset, prepared.tiers), fig["jsd_admission"],
                              {"jsd_start": cur["jsd_start"], "jsd_end": cur["jsd_end"]})  # fmt: skip

    t, h = m["at_tuned"], m["at_050"]
    ci = m["ci95"]
    print(f"entromix evaluate: test ROC-AUC {m['roc_auc']} (95% CI {ci['roc_auc_low']}-{ci['roc_auc_high']}), "
          f"PR-AUC {m['pr_auc']}, Brier {m['brier']}")  # fmt: skip
    print(f"entromix evaluate: at 0.5: sensitivity {h['sensitivity']}, specificity {h['specificity']}; at tuned "
          f"{t['threshold']}: sensitivity {t['sensitivity']} ({ci['sensitivity_low']}-{ci['sensitivity_high']}), "
          f"specificity {t['specificity']} ({ci['specificity_low']}-{ci['specificity_high']})")  # fmt: skip


if __name__ == "__main__":
    run_stage("evaluate", main)
