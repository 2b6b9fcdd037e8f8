"""The ``entromix`` command: use a trained model outside the pipeline, and review changes.

    entromix predict <folder or files> [--model models/deploy/model.pt] [--out predictions.csv]
    entromix export --format onnx|torchscript [--model models/deploy/model.pt] [--out model.onnx]
    entromix compare [A [B]] [--seeds 0-7] [--json] [--out FILE]   (A: HEAD, B: workspace by default)
    entromix exp-show [-A] [--filter TEXT]                          (dvc exp show, the columns a review reads)
    entromix review -S key=value [-S ...] [--seeds 5] [--jobs 2]   (the change against the workspace's
                                                                    params, seed-paired, as DVC experiments)
    entromix sweep sweeps/NAME.yaml [--settings full,10] [--seeds 0,1,2] [--variants a,b] [--jobs 2]
                   [--export results/DATASET/NAME.json] [--no-run] [--dry-run]   (a sweep as DVC experiments)
    entromix results [--results results] [--out RESULTS.md]     (RESULTS.md's tables from the sweep exports)

Exit codes as the pipeline's stages: 0 done, 2 bad input (one message naming the file or
option), 130 / 143 interrupted; nothing is written unless the whole command succeeds. `entromix
predict` exits 3 when it wrote its CSV but some files could not be read (each has a row with the
reason in its `error` column; `--bad-images error` stops with 2 instead, writing nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from entromix.cli.sweeps import add_sweep_parsers, run_results, run_sweep
from entromix.common.atomic import atomic_path
from entromix.common.errors import DataError
from entromix.common.stage import run_stage
from entromix.comparison.report import Settings, compare_seeds, to_markdown
from entromix.comparison.review import read_seed_spread
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
        help="unreadable files: give them a row with the reason in `error` and exit 3 (default), or stop "
        "before writing anything (exit 2)",
    )
    predict.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES))
    predict.add_argument("--quiet", action="store_true", help="no progress bars")
    add_review_parsers(sub)
    add_sweep_parsers(sub)
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


def add_review_parsers(sub) -> None:
    """``entromix review`` and ``entromix exp-show``."""
    review = sub.add_parser(
        "review",
        help="run a change and its baseline at N seeds as DVC experiments and compare them seed by seed",
        description="Queue the baseline (the workspace's params.yaml) and the change (-S overrides) at the "
        "same seeds as DVC experiments, run them with dvc queue start -j JOBS, and print entromix compare's "
        "seed-paired table. Experiments that already ran are reused; all stay in dvc exp show. The baseline's "
        "seed-to-seed spread is recorded in results/seed_spread.json for later one-pair comparisons.",
    )
    review.add_argument(
        "-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="the change (dvc's -S)"
    )
    review.add_argument("--seeds", default="3", help="a count N (seeds 0..N-1; default 3) or a list: 0,3,7 or 0-4")
    review.add_argument(
        "--seed-keys", default="train.seed,score.seed", help="params keys each seed goes into (default: these two)"
    )
    review.add_argument("--jobs", type=int, default=1, help="experiments run at once (dvc queue start -j; default 1)")
    review.add_argument("--out", default=None, help="also write the comparison to this file")
    review.add_argument("--json", action="store_true", help="print JSON instead of the Markdown table")
    review.add_argument("--dry-run", action="store_true", help="print the dvc commands and exit")
    review.add_argument("--poll", type=float, default=10.0, help=argparse.SUPPRESS)
    review.add_argument("--repo", default=".", help="the project (default: the current folder)")
    exp_show = sub.add_parser(
        "exp-show",
        help="DVC's experiments with the params that differ and the metrics a review reads",
        description="dvc exp show, cut to what a reviewer reads: each experiment's state, the params whose "
        "values differ between the rows, test ROC-AUC, sensitivity and specificity at the tuned threshold, the "
        "threshold, Brier and the synthetic images admitted.",
    )
    exp_show.add_argument("--all-commits", "-A", action="store_true", help="experiments of every commit (dvc's -A)")
    exp_show.add_argument("--filter", default=None, help="only experiments whose name contains this text")
    exp_show.add_argument("--repo", default=".", help="the project (default: the current folder)")


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
    spread = read_seed_spread(Path(args.repo)) if len(pairs) == 1 else None
    report = compare_seeds(pairs, Settings(args.resamples, args.seed, args.level), spread)
    text = json.dumps(report, indent=1, default=float) + "\n" if args.json else to_markdown(report)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


def parse_review_seeds(spec: str) -> list[int]:
    """``5`` -> seeds 0..4; ``0,3,7`` or ``0-4`` -> those seeds."""
    spec = spec.strip()
    if spec.isdigit():
        count = int(spec)
        if count < 1:
            raise DataError(f"--seeds {spec}: review at least 1 seed (3 or more to see the spread), e.g. --seeds 5.")
        return list(range(count))
    return parse_seeds(spec) or []


def run_review(args: argparse.Namespace) -> None:
    import json
    import subprocess

    from entromix.comparison import review

    root = Path(args.repo).resolve()
    if not (root / "dvc.yaml").is_file() or not (root / "params.yaml").is_file():
        raise DataError(f"{root} has no dvc.yaml and params.yaml: run entromix review from the project's root.")
    if args.jobs < 1:
        raise DataError(f"--jobs {args.jobs}: run at least 1 experiment at a time.")
    seed_keys = tuple(k.strip() for k in args.seed_keys.split(",") if k.strip())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    plan = review.plan_review(
        (root / "params.yaml").read_text(encoding="utf-8"),
        args.overrides,
        parse_review_seeds(args.seeds),
        seed_keys,
        baseline_commit=head,
    )
    if args.dry_run:
        for command in plan.commands():
            print("dvc " + " ".join(command))
        return
    reader = RevisionReader(root)  # a DVC project in git, before anything is queued
    seconds = review.run_plan(plan, root, args.jobs, args.poll, review.log_to_stderr)
    pairs = [(reader.revision(a), reader.revision(b)) for a, b in zip(plan.base, plan.change)]
    report = compare_seeds(pairs)
    report["review"] = {
        "overrides": [o.argument for o in plan.overrides],
        "seeds": plan.seeds,
        "seed_keys": list(plan.seed_keys),
        "experiments": {"baseline": plan.base, "change": plan.change},
        "wall_seconds": round(seconds, 1),
    }
    spread_path = root / review.SPREAD_FILE
    if len(pairs) > 1:
        spread = review.seed_spread([a for a, _ in pairs], report["pairs"], plan.seed_keys)
        spread_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(spread_path) as tmp:
            tmp.write_text(json.dumps(spread, indent=1) + "\n", encoding="utf-8")
    if args.json:
        text = json.dumps(report, indent=1, default=float) + "\n"
    else:
        text = to_markdown(report).replace(
            "## entromix compare",
            f"## entromix review: {' '.join('-S ' + o.argument for o in plan.overrides)}, {len(plan.seeds)} seed(s)",
            1,
        )
        text += (
            f"\n_Baseline: the workspace's params.yaml; experiments {plan.base[0]}.. and {plan.change[0]}.. "
            f"(dvc exp show); wall time {review.format_seconds(seconds)}."
            + (f" The baseline's seed spread is in {review.SPREAD_FILE}._\n" if len(pairs) > 1 else "_\n")
        )
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(text, encoding="utf-8")
    sys.stdout.write(text)


def run_exp_show(args: argparse.Namespace) -> None:
    import json
    import subprocess
    import time

    from entromix.comparison.experiments import rows_from_exp_show, to_markdown

    command = ["dvc", "exp", "show", "--json", *(["-A"] if args.all_commits else [])]
    for _attempt in range(3):  # a queue worker setting up its temporary copy makes dvc fail for a moment
        proc = subprocess.run(command, cwd=args.repo, capture_output=True, text=True)
        if proc.returncode == 0 or "does not exist" not in proc.stderr:
            break
        time.sleep(2)
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())[-400:]
        raise DataError(f"`{' '.join(command)}` failed in {args.repo} (exit {proc.returncode}): {detail}")
    try:
        shown = json.loads(proc.stdout)
    except ValueError:
        raise DataError(f"`{' '.join(command)}` printed no JSON; is this DVC 3? ({proc.stdout[:200]!r})") from None
    sys.stdout.write(to_markdown(rows_from_exp_show(shown), args.filter))


def run_predict(args: argparse.Namespace) -> int:
    """Classify, write the CSV, print the summary; the exit code: 0, or 3 when some files were unreadable."""
    # the model's modules (torch) are imported here, not at the top: `entromix compare` needs none of them
    from entromix.common.device import describe, resolve_device
    from entromix.prediction.predict import EXIT_SOME_UNREADABLE, find_images, predict_files
    from entromix.training.checkpoints import load_trained_model

    device = resolve_device(args.device, "--device")
    trained = load_trained_model(args.model, None, device)
    files, refused = find_images(args.inputs)
    print(
        f"entromix predict: {len(files)} file(s) with {args.model} ({trained.checkpoint['model_name']}, "
        f"labels {', '.join(map(str, trained.checkpoint['labels']))}); device {describe(device)}",
        file=sys.stderr,
    )
    result = predict_files(
        trained,
        files,
        args.threshold,
        args.per_class,
        args.uncertainty,
        args.bad_images,
        progress=not args.quiet,
        refused=refused,
    )
    with atomic_path(args.out) as tmp:
        result.frame.round(6).to_csv(tmp, index=False, encoding="utf-8")
    for path, reason in result.skipped:
        print(f"entromix predict: unreadable {path}: {reason}", file=sys.stderr)
    print(
        f"entromix predict: wrote {args.out}: {result.summary()}; at threshold {result.threshold:.4f}, "
        f"{result.threshold_source}",
        file=sys.stderr,
    )
    if result.skipped:
        print(
            f"entromix predict: {len(result.skipped)} of {len(files)} file(s) could not be read (their rows give "
            f"the reason in the error column); exit code {EXIT_SOME_UNREADABLE}",
            file=sys.stderr,
        )
        return EXIT_SOME_UNREADABLE
    return 0


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
    action = {
        "predict": run_predict,
        "export": run_export,
        "compare": run_compare,
        "review": run_review,
        "exp-show": run_exp_show,
        "sweep": run_sweep,
        "results": run_results,
    }[args.command]
    outcome: dict[str, int | None] = {}
    run_stage(
        args.command,
        lambda: outcome.update(code=action(args)),
        report_to_stderr=args.command in ("compare", "review", "exp-show", "sweep", "results"),
    )
    if outcome.get("code"):  # the command finished but has something to report (predict: unreadable files)
        sys.exit(outcome["code"])


if __name__ == "__main__":
    main()
