"""The ``entromix`` command: use a trained model outside the pipeline.

    entromix predict <folder or files> [--model models/deploy/model.pt] [--out predictions.csv]
    entromix export --format onnx|torchscript [--model models/deploy/model.pt] [--out model.onnx]

Exit codes as the pipeline's stages: 0 done, 2 bad input (one message naming the file or
option), 130 / 143 interrupted; nothing is written unless the whole command succeeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entromix.common.atomic import atomic_path
from entromix.common.device import DEVICE_NAMES, describe, resolve_device
from entromix.common.stage import run_stage
from entromix.prediction.export import SUFFIX, export_model
from entromix.prediction.predict import find_images, predict_files
from entromix.training.checkpoints import load_trained_model

DEFAULT_MODEL = "models/deploy/model.pt"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="entromix", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    predict = sub.add_parser("predict", help="classify image files with a trained model")
    predict.add_argument("inputs", nargs="+", help="image files or folders of images (walked recursively)")
    predict.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"checkpoint (default {DEFAULT_MODEL}: the evaluated model with its tuned threshold; "
        "models/train/best.pt works too, at threshold 0.5)",
    )
    predict.add_argument("--out", default="predictions.csv", help="CSV to write (default predictions.csv)")
    predict.add_argument("--threshold", type=float, default=None, help="override the tuned threshold on P(label 1)")
    predict.add_argument("--per-class", action="store_true", help="add a probability column per class")
    predict.add_argument(
        "--uncertainty",
        choices=["none", "tta", "mc-dropout"],
        default="none",
        help="add the spread of P(label 1): over 8 orientations (tta) or dropout passes",
    )
    predict.add_argument(
        "--bad-images",
        choices=["skip", "error"],
        default="skip",
        help="unreadable files: report and skip them (default), or stop before writing anything",
    )
    predict.add_argument("--device", default="auto", choices=list(DEVICE_NAMES))
    predict.add_argument("--quiet", action="store_true", help="no progress bars")
    export = sub.add_parser("export", help="write the model as ONNX or TorchScript with its preprocessing")
    export.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    export.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint (default {DEFAULT_MODEL})")
    export.add_argument("--out", default=None, help="file to write (default model.onnx / model.torchscript.pt)")
    return top


def run_predict(args: argparse.Namespace) -> None:
    device = resolve_device(args.device, "--device")
    trained = load_trained_model(args.model, None, device)
    files = find_images(args.inputs)
    print(
        f"entromix predict: {len(files)} file(s) with {args.model} ({trained.checkpoint['model_name']}, "
        f"labels {', '.join(map(str, trained.checkpoint['labels']))}); device {describe(device)}",
        file=sys.stderr,
    )
    result = predict_files(
        trained, files, args.threshold, args.per_class, args.uncertainty, args.bad_images, progress=not args.quiet
    )
    with atomic_path(args.out) as tmp:
        result.frame.round(6).to_csv(tmp, index=False, encoding="utf-8")
    for path, reason in result.skipped:
        print(f"entromix predict: skipped {path}: {reason}", file=sys.stderr)
    counts = result.frame["label"].value_counts().to_dict()
    print(
        f"entromix predict: wrote {args.out}: {len(result.frame)} image(s) ({counts}) at threshold "
        f"{result.threshold:.4f}, {result.threshold_source}; {len(result.skipped)} skipped",
        file=sys.stderr,
    )


def run_export(args: argparse.Namespace) -> None:
    trained = load_trained_model(args.model, None, resolve_device("cpu", "--device"))
    out = Path(args.out or ("model" + (".onnx" if args.format == "onnx" else ".torchscript" + SUFFIX["torchscript"])))
    model_path, description = export_model(trained, args.format, out)
    print(
        f"entromix export: wrote {model_path} ({args.format}) and {description} (its preprocessing, labels "
        "and threshold)",
        file=sys.stderr,
    )


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    action = run_predict if args.command == "predict" else run_export
    run_stage(args.command, lambda: action(args))


if __name__ == "__main__":
    main()
