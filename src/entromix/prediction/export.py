"""Export a trained model for serving: ONNX or TorchScript, with its preprocessing described beside it.

The exported graph takes float32 (B, 3, S, S) images in [0, 1], RGB, already resized to
``S = image_size`` as the JSON beside it says (decode, orient, RGB, resize to ``stored_size`` with
``resize_mode``, then bilinear to ``image_size``), and returns (B, C) class probabilities:
normalisation, the model and ``softmax(logits / temperature)`` are inside. The JSON also gives the
label names and the tuned threshold on P(label 1). The decoding is not in the graph: use
``entromix.prediction.preprocess.load_images(files, "<model>.json")``, predict's own decode path
(JPEG draft decoding and Pillow's ``reducing_gap=3.0`` resize included; a plain bilinear resize
moves P(malignant) by ~0.02). The OOD statistics are not exported (predict computes the flag).

TorchScript is deprecated in torch 2.14: ``torch.jit.trace`` warns on every call. Export says so
once in its own words instead of repeating torch's three FutureWarnings; ``torch.jit.load`` on the
user's side still warns. Prefer ONNX.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from entromix.common.atomic import atomic_paths, json_text
from entromix.common.labels import label_space_of_checkpoint
from entromix.training.checkpoints import TrainedModel

ExportFormat = Literal["onnx", "torchscript"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}


class ProbabilityModel(nn.Module):
    """Normalisation + model + tempered softmax: [0, 1] images (B, 3, S, S) -> probabilities (B, C)."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature = float(temperature)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model((images - self.mean) / self.std) / self.temperature, dim=1)


def preprocessing_description(trained: TrainedModel, fmt: ExportFormat) -> dict:
    ckpt = trained.checkpoint
    pre = ckpt["preprocess"]
    threshold = ckpt.get("threshold") if isinstance(ckpt.get("threshold"), dict) else None
    return {
        "format": fmt,
        "input": {
            "name": "images",
            "shape": ["batch", 3, int(pre["image_size"]), int(pre["image_size"])],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "channels": "RGB",
            "steps": [
                "decode the file, apply its EXIF orientation, convert to RGB (first frame of a stack); "
                f"16-bit grayscale to 8 bits by {pre.get('intensity', 'fixed16')} (entromix.data.images)",
                f"resize to {pre['stored_size']}x{pre['stored_size']} ({pre['resize_mode']}; antialiased)",
                f"resize to {pre['image_size']}x{pre['image_size']} (bilinear, antialiased: torch's interpolate) "
                "when different",
                "scale to [0, 1] and order as (batch, channel, height, width)",
                "all of the above: entromix.prediction.preprocess.load_images(files, this_json), predict's own "
                "code (JPEGs use libjpeg draft decoding, Pillow resizes with reducing_gap=3.0)",
            ],
            "reference_preprocessing": "entromix.prediction.preprocess.load_images",
            "image_size": int(pre["image_size"]),
            "stored_size": int(pre["stored_size"]),
            "resize_mode": pre["resize_mode"],
            "intensity": pre.get("intensity", "fixed16"),
        },
        "inside_the_graph": {"mean": pre["mean"], "std": pre["std"], "temperature": ckpt.get("temperature", 1.0)},
        "output": {
            "name": "probabilities",
            "shape": ["batch", len(ckpt["labels"])],
            "labels": list(ckpt["labels"]),
            # P(malignant), which the threshold applies to, is the sum of these labels' probabilities
            "positive_labels": label_space_of_checkpoint(ckpt).positive_names,
        },
        "threshold": threshold,
        "model_name": ckpt["model_name"],
        "provenance": ckpt.get("provenance"),
    }


def export_model(trained: TrainedModel, fmt: ExportFormat, out: Path) -> tuple[Path, Path]:
    """Write the model to ``out`` and its description to ``out`` + ``.json``; returns both paths."""
    ckpt = trained.checkpoint
    pre = ckpt["preprocess"]
    wrapped = ProbabilityModel(trained.model.float().cpu(), pre["mean"], pre["std"], ckpt.get("temperature", 1.0))
    wrapped = wrapped.eval().to(memory_format=torch.contiguous_format)
    size = int(pre["image_size"])
    example = torch.rand(2, 3, size, size)
    out = Path(out)
    description = out.with_name(out.name + ".json")
    # the model and its description are replaced as a set: a run killed between the two never leaves
    # a new model beside the description of the previous one
    with atomic_paths(out, description) as (tmp, description_tmp):
        if fmt == "onnx":
            batch = torch.export.Dim("batch", min=1)
            program = torch.onnx.export(
                wrapped,
                (example,),
                input_names=["images"],
                output_names=["probabilities"],
                dynamic_shapes={"images": {0: batch}},
                dynamo=True,
                verbose=False,
            )
            program.save(str(tmp))
        else:
            print(
                "entromix export: TorchScript is deprecated in torch 2.14 (torch.jit.trace and torch.jit.load warn); "
                "prefer --format onnx",
                file=sys.stderr,
            )
            with torch.no_grad(), warnings.catch_warnings():
                pattern = r"`torch\.jit\.(trace(_method)?|save)` is deprecated"
                warnings.filterwarnings("ignore", pattern, FutureWarning)
                scripted = torch.jit.trace(wrapped, example)
                with open(tmp, "wb") as fh:  # a file object: the archive's folder is not the temporary's random name
                    torch.jit.save(scripted, fh)
        description_tmp.write_text(json_text(preprocessing_description(trained, fmt)))
    return out, description


def read_description(path: Path) -> dict:
    return json.loads(Path(path).read_text())
