"""``entromix sweep`` and ``entromix results``: strategy sweeps as DVC experiments, and their tables.

    entromix sweep sweeps/strategies.yaml --settings full,10 --seeds 0,1,2 --jobs 2 \\
        --export results/leukemia_dev/strategies.json
    entromix sweep sweeps/strategies.yaml --variants real-only,capped --dry-run   (print the dvc commands)
    entromix results [--results results] [--out RESULTS.md]   (RESULTS.md's tables from results/*/*.json)

The work is done by :mod:`entromix.comparison.sweep_run` and
:mod:`entromix.comparison.results_report`; this module only declares the options.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_sweep_parsers(sub) -> None:
    """``entromix sweep`` and ``entromix results``."""
    from entromix.comparison import results_report, sweep_run, sweeps

    sweep = sub.add_parser(
        "sweep",
        help="queue and run a sweep file's variants x settings x seeds as DVC experiments, then export them",
        description=sweep_run.__doc__.split("\n\n")[0] + "\n\n" + sweeps.__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("sweep", type=Path, help="a sweep file, e.g. sweeps/strategies.yaml")
    sweep.add_argument("--seeds", default="0,1,2", help="seeds, comma-separated (into the sweep's seed_keys)")
    sweep.add_argument(
        "--settings", default=None, help="full and/or N (malignant training images kept); default: the sweep file's"
    )
    sweep.add_argument("--variants", default=None, help="a comma-separated subset of the sweep's variants")
    sweep.add_argument("--jobs", type=int, default=1, help="parallel queue workers")
    sweep.add_argument(
        "--export", type=Path, default=None, help="where to write their dvc.api.exp_show rows (needed unless --dry-run)"
    )
    sweep.add_argument("--poll", type=float, default=20.0, help="seconds between queue status checks")
    sweep.add_argument("--no-run", action="store_true", help="only export experiments that already ran")
    sweep.add_argument("--dry-run", action="store_true", help="print the dvc commands and exit")
    results = sub.add_parser(
        "results",
        help="rebuild RESULTS.md's tables, the comparison figures and results/summary.csv from results/",
        description=results_report.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    results.add_argument(
        "--results", type=Path, default=Path("results"), help="folder of <dataset>/<sweep>.json exports"
    )
    results.add_argument("--sweeps", type=Path, default=Path("sweeps"), help="folder of the sweep files")
    results.add_argument("--out", type=Path, default=Path("RESULTS.md"))
    results.add_argument("--figures", type=Path, default=Path("docs/figures"), help="where the comparison figures go")
    results.add_argument("--csv", type=Path, default=Path("results/summary.csv"), help="the summary table as CSV")
    results.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when RESULTS.md or the CSV is out of date"
    )


def run_sweep(args: argparse.Namespace) -> int:
    from entromix.comparison.sweep_run import run_sweep as run

    return run(
        args.sweep,
        args.export,
        seeds=args.seeds,
        settings=args.settings,
        variants=args.variants,
        jobs=args.jobs,
        poll_s=args.poll,
        no_run=args.no_run,
        dry_run=args.dry_run,
    )


def run_results(args: argparse.Namespace) -> int:
    from entromix.comparison.results_report import build_results, check_results

    if args.check:
        stale = check_results(args.results, args.sweeps, args.out, args.figures, args.csv)
        if stale:
            print(
                f"entromix results: out of date: {', '.join(stale)} differ from what the exports in {args.results} "
                "give. Run `entromix results` (make results) and commit the result."
            )
            return 1
        print(f"entromix results: {args.out} and {args.csv} match the exports in {args.results}")
        return 0
    print("entromix results: " + build_results(args.results, args.sweeps, args.out, args.figures, args.csv))
    return 0
