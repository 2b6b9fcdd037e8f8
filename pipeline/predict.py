"""DVC stage `predict`: classify the images in `predict.input_dir` with the evaluated model.

Reads params section `predict` and models/deploy/model.pt (the evaluate stage's checkpoint with its
tuned threshold). Writes data/predictions/inbox.csv: path, P(positive), prediction and label at the
tuned threshold (plus per-class probabilities and an uncertainty column when asked). With no image
in the folder it writes the header only, from the checkpoint's labels, without building the network
(torchvision and the prediction code are imported only when there is an image to classify).
Every image file gets a row: an unreadable one gets the reason in its `error` column and the stage
still succeeds (`predict.bad_images: skip`; it prints how many), or stops the stage before anything
is written (`error`). `ood_distance` and `ood` flag images unlike the training data
(entromix.evaluation.ood, calibrated on val by the evaluate stage).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from entromix.common.atomic import atomic_path
from entromix.common.device import DeviceName, describe, resolve_device
from entromix.common.errors import ParamsError
from entromix.common.labels import label_space_of_checkpoint
from entromix.common.params import load_params, section
from entromix.common.stage import run_stage, stage_args
from entromix.data.images import IMAGE_EXTENSIONS, inputs_in
from entromix.training.checkpoints import load_checkpoint

MODEL = Path("models/deploy/model.pt")
OUT = Path("data/predictions/inbox.csv")
EXTRA_COLUMNS = ("ood_distance", "ood", "error")  # entromix.prediction.predict.predict_files's last three


@dataclass(frozen=True)
class PredictConfig:
    """The ``predict`` section of params.yaml."""

    input_dir: str
    per_class: bool
    uncertainty: Literal["none", "tta", "mc-dropout"]
    bad_images: Literal["skip", "error"]
    device: DeviceName

    def __post_init__(self) -> None:
        if self.uncertainty not in ("none", "tta", "mc-dropout"):
            raise ParamsError(f"predict.uncertainty is {self.uncertainty!r}; choose none, tta or mc-dropout.")
        if self.bad_images not in ("skip", "error"):
            raise ParamsError(f"predict.bad_images is {self.bad_images!r}; choose skip or error.")


def main() -> None:
    args = stage_args(__doc__)
    config = section(load_params(args.params), "predict", PredictConfig, args.params)
    folder = Path(config.input_dir)
    if not folder.is_dir():
        raise ParamsError(f"predict.input_dir: {folder} is not a folder. Create it or point the key at your images.")
    device = resolve_device(config.device, "predict.device")
    files, refused = inputs_in(folder)  # folders named like images and links out of the folder: a row, not read
    if not files:
        positive_title = label_space_of_checkpoint(load_checkpoint(MODEL)).positive_title
        frame = pd.DataFrame(columns=["path", f"p_{positive_title}", "prediction", "label", *EXTRA_COLUMNS])
        print(f"entromix predict: no images in {folder} ({', '.join(IMAGE_EXTENSIONS)}); wrote the header only")
    else:
        from entromix.prediction.predict import predict_files
        from entromix.training.checkpoints import load_trained_model

        trained = load_trained_model(MODEL, None, device)
        print(f"entromix predict: {len(files)} file(s) in {folder} with {MODEL}; device {describe(device)}")
        result = predict_files(
            trained, files, None, config.per_class, config.uncertainty, config.bad_images, refused=refused
        )
        for path, reason in result.skipped:
            print(f"entromix predict: unreadable {path}: {reason} (a row with the reason in `error`)")
        frame = result.frame
        print(f"entromix predict: {result.summary()}; at threshold {result.threshold:.4f} ({result.threshold_source})")
    with atomic_path(OUT) as tmp:
        frame.round(6).to_csv(tmp, index=False, encoding="utf-8")


if __name__ == "__main__":
    run_stage("predict", main)
