"""The ``entromix`` command: use a trained model outside the pipeline, and review changes.

    entromix predict <folder or files> [--model models/deploy/model.pt] [--out predictions.csv]
    entromix export --format onnx|torchscript [--model models/deploy/model.pt] [--out model.onnx]
    entromix compare [A [B]] [--seeds 0-7] [--json] [--out FILE]   (A: HEAD, B: workspace by default)

Exit codes as the pipeline's stages: 0 done, 2 bad input (one message naming the file or
option), 130 / 143 interrupted; nothing is written unless the whole command succeeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entromix.common.atomic import atomic_path
from entromix.common.errors import DataError
from entromix.common.stage import run_stage
from entromix.comparison.report import Settings, compare_seeds, to_markdown
from entromix.comparison.revisions import WORKSPACE, RevisionReader

DEFAULT_MODEL = "models/deploy/model.pt"
# entromix.common.device's DEVICE_NAMES, written out so that building the parser (and so `entromix
# compare`) does not import torch; tests/test_compare_cli.py checks the two agree
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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
    predict.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES))
    predict.add_argument("--quiet", action="store_true", help="no progress bars")
    export = sub.add_parser("export", help="write the model as ONNX or TorchScript with its preprocessing")
    export.add_argument("--format", choices=["onnx", "torchscript"], required=True)
    export.add_argument("--model", default=DEFAULT_MODEL, help=f"checkpoint (default {DEFAULT_MODEL})")
    export.add_argument("--out", default=None, help="file to write (default model.onnx / model.torchscript.pt)")
    compare = sub.add_parser(
        "compare",
        help="paired tests of two revisions' test predictions: is a metrics diff beyond noise?",
        description="Compare the test predictions (data/predictions/test.csv) of two revisions on the same test "
        "images: ROC-AUC by DeLong's test, sensitivity/specificity/balanced accuracy at each revision's tuned "
        "threshold by a paired bootstrap, the 0.5 decisions by McNemar's exact test. With lists of revisions "
        "(or a {seed} pattern and --seeds), the per-seed paired differences, their mean and t-interval.",
    )
    compare.add_argument(
        "a",
        nargs="?",
        default="HEAD",
        help="the baseline: a git revision, an experiment name or 'workspace'; a comma-separated list for several "
        "seeds; '{seed}' in a name is replaced by each of --seeds (default HEAD)",
    )
    compare.add_argument("b", nargs="?", default=WORKSPACE, help=f"the candidate, as A (default {WORKSPACE})")
    compare.add_argument("--seeds", default=None, help="seeds for a {seed} pattern: 0,1,2 or 0-7")
    compare.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    compare.add_argument("--out", default=None, help="also write the output to this file")
    compare.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    compare.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    compare.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    compare.add_argument("--repo", default=".", help="the project (default: the current folder)")
    return top


def expand_names(spec: str, seeds: list[int] | None, option: str) -> list[str]:
    """``a,b`` -> [a, b]; ``exp-s{seed}`` with seeds [0, 1] -> [exp-s0, exp-s1]."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise DataError(f"{option} is empty; name a revision, an experiment or '{WORKSPACE}'.")
    if any("{seed}" in n for n in names):
        if seeds is None:
            raise DataError(f"{option} '{spec}' holds {{seed}}: give the seeds with --seeds 0,1,2.")
        expanded = []
        for name in names:
            expanded += [name.replace("{seed}", str(s)) for s in seeds] if "{seed}" in name else [name]
        return expanded
    return names


def parse_seeds(spec: str | None) -> list[int] | None:
    if spec is None:
        return None
    seeds: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    except ValueError:
        raise DataError(f"--seeds '{spec}' is not a list of seeds: write 0,1,2 or 0-7.") from None
    if not seeds:
        raise DataError(f"--seeds '{spec}' is empty: write 0,1,2 or 0-7.")
    return seeds


def run_compare(args: argparse.Namespace) -> None:
    import json

    if args.resamples < 100:
        raise DataError(f"--resamples {args.resamples} is too few for a 95% interval: use >= 100.")
    if not 0.5 <= args.level < 1:
        raise DataError(f"--level {args.level} must be in [0.5, 1), e.g. 0.95.")
    seeds = parse_seeds(args.seeds)
    names_a, names_b = expand_names(args.a, seeds, "A"), expand_names(args.b, seeds, "B")
    if len(names_a) != len(names_b):
        raise DataError(
            f"A names {len(names_a)} revision(s) and B {len(names_b)}; they are compared in "
            "pairs (the i-th of A with the i-th of B), so give as many of each."
        )
    reader = RevisionReader(args.repo)
    cache: dict = {}

    def revision(name: str):
        if name not in cache:
            cache[name] = reader.revision(name)
        return cache[name]

    pairs = [(revision(a), revision(b)) for a, b in zip(names_a, names_b)]
    report = compare_seeds(pairs, Settings(args.resamples, args.seed, args.level))
    text = json.dumps(report, indent=1, default=float) + "\n" if args.json else to_markdown(report)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


def run_predict(args: argparse.Namespace) -> None:
    # the model's modules (torch) are imported here, not at the top: `entromix compare` needs none of them
    from entromix.common.device import describe, resolve_device
    from entromix.prediction.predict import find_images, predict_files
    from entromix.training.checkpoints import load_trained_model

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
    from entromix.common.device import resolve_device
    from entromix.prediction.export import SUFFIX, export_model
    from entromix.training.checkpoints import load_trained_model

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
    action = {"predict": run_predict, "export": run_export, "compare": run_compare}[args.command]
    run_stage(args.command, lambda: action(args), report_to_stderr=args.command == "compare")


if __name__ == "__main__":
    main()
