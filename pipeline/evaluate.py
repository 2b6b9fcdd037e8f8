"""DVC stage `evaluate`: clinical metrics on the real test images at 0.5 and at a threshold tuned on val.

Reads params section `evaluate`, the train stage's checkpoint, history and run settings, ingest's
array and manifest, and the score stage's data/dataset.csv (for the JSD figure), all checked first
(entromix.common.stage_io). Writes, as one set:
  metrics/evaluate.json               test metrics at 0.5 and at the tuned threshold, intervals
  data/predictions/test.csv           filename,class,label,probability,prediction (tuned threshold)
  data/predictions/val.csv            the same for the val images the threshold was tuned on
  models/deploy/model.pt              the evaluated checkpoint with its tuned threshold and its OOD
                                      detector (the real training images' feature statistics, the
                                      threshold from val): what `entromix predict` and `entromix export` read
  models/deploy/MODEL_CARD.md         its model card, generated from the metrics files
  plots/evaluate/{roc,pr,confusion,calibration}.csv   series for `dvc plots show`
  plots/evaluate/figures/*.png        the same as figures, plus training curves, curriculum, JSD, the
                                      synthetic pool gallery and its JSD per tier, Grad-CAM of test cases
"""

from pathlib import Path

import pandas as pd

from entromix.common.device import describe, resolve_device
from entromix.common.params import load_params, section
from entromix.common.rounding import round_floats
from entromix.common.stage import run_stage, stage_args
from entromix.common.stage_io import DATASET, PREPARED, load_dataset, load_prepared, missing_input
from entromix.evaluation.ood import ood_detector
from entromix.evaluation.outputs import (
    deploy_checkpoint,
    prediction_table,
    read_ingest_metrics,
    read_train_run,
    summary_lines,
    write_outputs,
)
from entromix.evaluation.pictures import picture_figures
from entromix.evaluation.report import EvaluateConfig, evaluation_report, side_classes
from entromix.modeling.metrics import multiclass_metrics
from entromix.training.checkpoints import load_trained_model

MODELS = Path("models/train")
HISTORY = Path("plots/train/history.csv")
INGEST_METRICS = Path("metrics/ingest.json")
OUTPUTS = {
    "predictions": Path("data/predictions/test.csv"),
    "val_predictions": Path("data/predictions/val.csv"),
    "metrics": Path("metrics/evaluate.json"),
    "model": Path("models/deploy/model.pt"),
    "card": Path("models/deploy/MODEL_CARD.md"),
    "plots": Path("plots/evaluate"),
    "figures": Path("plots/evaluate/figures"),
}


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "evaluate", EvaluateConfig, args.params)
    device = resolve_device(config.device, "evaluate.device")
    prepared = load_prepared(PREPARED)
    dataset = load_dataset(DATASET, prepared)
    trained = load_trained_model(MODELS / f"{config.checkpoint}.pt", prepared.labels, device)
    run = _read_train_run()
    ingest_metrics = read_ingest_metrics(INGEST_METRICS) | {"identity": prepared.identity()}  # for the model card
    manifest, images = prepared.manifest, prepared.images
    real = manifest[manifest["is_syn"] == 0]
    val, test = real[real["split"] == "val"], real[real["split"] == "test"]
    ckpt = trained.checkpoint
    print(
        f"entromix evaluate: {config.checkpoint} checkpoint (epoch {int(ckpt['epoch']) + 1}, {ckpt['model_name']}) on "
        f"{len(val)} real val and {len(test)} real test images; threshold tuned on val for sensitivity "
        f"{config.target_sensitivity}; device {describe(device)}"
    )
    space = trained.label_space
    val_probs = trained.probabilities(images[val["id"].to_numpy()])
    test_probs = trained.probabilities(images[test["id"].to_numpy()])
    predictions, val_predictions, metrics, tuned, multiclass = _evaluate(
        config, trained, space, val, test, val_probs, test_probs
    )
    print(f"entromix evaluate: {tuned.note}")
    for warning in tuned.warnings():
        print(f"entromix evaluate: WARNING: {warning}")
    detector = ood_detector(config, trained, images, dataset, val, test, metrics)
    deploy = deploy_checkpoint(ckpt, tuned.threshold, config.target_sensitivity, metrics, detector)
    history = pd.read_csv(HISTORY)
    pictures = picture_figures(
        config,
        trained,
        prepared,
        dataset,
        history,
        run,
        test,
        predictions,
        tuned.threshold,
        side_classes(space, test_probs),
        multiclass,
    )
    write_outputs(
        OUTPUTS,
        deploy,
        predictions,
        metrics,
        space.binary_names,
        config.calibration_bins,
        history,
        run,
        dataset,
        prepared.tiers,
        ingest_metrics,
        pictures,
        val_predictions,
    )
    for line in summary_lines(metrics, space):
        print(line)


def _read_train_run() -> dict:
    """The train stage's run settings, after checking that its run.json and history were written."""
    for path in (MODELS / "run.json", HISTORY):
        if not path.is_file():
            raise missing_input(path, "train")
    return read_train_run(MODELS / "run.json")


def _evaluate(config, trained, space, val: pd.DataFrame, test: pd.DataFrame, val_probs, test_probs) -> tuple:
    """Tune the threshold on val and measure test: (test predictions, val predictions, metrics, the
    tuned threshold, the multi-class metrics or None), predictions made at the tuned threshold."""
    p_val = trained.malignant_probability(None, val_probs)  # the binary view: summed positive probability
    predictions = prediction_table(test, trained.malignant_probability(None, test_probs), space, test_probs)
    val_predictions = prediction_table(val, p_val, space, val_probs)
    metrics, tuned = evaluation_report(space.binary_targets(val["label"].to_numpy()), p_val, predictions, config)
    metrics["evaluate"]["evaluated_epoch"] = int(trained.checkpoint["epoch"]) + 1
    multiclass = None
    if space.num_classes > 2:
        multiclass = round_floats(multiclass_metrics(test["label"].to_numpy(), test_probs, list(space.names)), 4)
        metrics["evaluate"]["test"]["multiclass"] = multiclass
    for frame in (predictions, val_predictions):
        frame["prediction"] = (frame["probability"] >= tuned.threshold).astype(int)
    return predictions, val_predictions, metrics, tuned, multiclass


if __name__ == "__main__":
    run_stage("evaluate", main)
