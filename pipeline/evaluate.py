"""DVC stage `evaluate`: clinical metrics on the real test images at 0.5 and at a threshold tuned on val.

Reads params section `evaluate`, the train stage's checkpoint, history and run settings, ingest's
array and manifest, and the score stage's data/dataset.csv (for the JSD figure). Writes (atomically):
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

from entromix.atomic import write_csv, write_json
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
from entromix.image_store import open_images
from entromix.models import build_model
from entromix.params import load_params, section
from entromix.plots import jsd_groups, plot_jsd_distribution
from entromix.stage import run_stage, stage_args

PREPARED = Path("data/prepared")
MODELS = Path("models/train")
PREDICTIONS = Path("data/predictions/test.csv")
PLOTS = Path("plots/evaluate")
FIGURES = PLOTS / "figures"
METRICS = Path("metrics/evaluate.json")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "evaluate", EvaluateConfig, args.params)
    device = resolve_device(config.device, "evaluate.device")
    ckpt = load_checkpoint(MODELS / f"{config.checkpoint}.pt")
    run = json.loads((MODELS / "run.json").read_text())
    labels = [str(x) for x in ckpt["labels"]]
    model = build_model(ckpt["model_name"], int(ckpt["num_classes"]), int(ckpt["image_size"]))
    model.load_state_dict(ckpt["model"])
    channels_last = uses_channels_last(ckpt["model_name"], device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    manifest = pd.read_csv(PREPARED / "manifest.csv", keep_default_na=False)
    images = open_images(PREPARED / "images.npy")
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
    write_csv(PREDICTIONS, test_rows.round({"probability": 6}))
    write_json(METRICS, metrics)
    write_csv(PLOTS / "roc.csv", roc.round(6))
    write_csv(PLOTS / "pr.csv", pr.round(6))
    write_csv(PLOTS / "confusion.csv", pd.DataFrame({"actual": [labels[i] for i in y],
                                                     "predicted": [labels[i] for i in test_rows["prediction"]]}))  # fmt: skip
    calibration = calibration_table(y, p, config.calibration_bins)
    write_csv(PLOTS / "calibration.csv", calibration.round(6))

    history = pd.read_csv(Path("plots/train/history.csv"))
    dataset = pd.read_csv(Path("data/dataset.csv"), keep_default_na=False)
    tiers = pd.read_csv(PREPARED / "synthetic_tiers.csv", keep_default_na=False)
    plot_roc(roc, m["roc_auc"], {"threshold 0.5": m["at_050"], "tuned": m["at_tuned"]}, FIGURES / "roc.png")
    plot_pr(pr, m["pr_auc"], float(y.mean()) if len(y) else 0.0, FIGURES / "pr.png")
    plot_confusion(m["at_tuned"], labels, FIGURES / "confusion.png")
    plot_calibration(calibration, m["brier"], FIGURES / "calibration.png")
    plot_training_curves(history, run.get("best_epoch"), FIGURES / "training_curves.png")
    plot_curriculum(history, int((dataset["is_syn"] == 1).sum()), FIGURES / "curriculum.png")
    cur = run["curriculum"]
    plot_jsd_distribution(jsd_groups(dataset, tiers), FIGURES / "jsd_admission.png",
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
