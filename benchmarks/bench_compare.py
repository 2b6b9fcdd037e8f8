"""Speed and memory of `entromix compare`'s statistics on test sets of N images.

    .venv/bin/python benchmarks/bench_compare.py                      # N = 665, 5000, 20000
    .venv/bin/python benchmarks/bench_compare.py --sizes 160 --resamples 500

For each N (a quarter malignant) it draws two correlated classifiers' probabilities and 0/1
decisions, then times DeLong's test, the stratified paired bootstrap and McNemar's test, each in
a fresh process so that the peak resident memory (ru_maxrss) is that of one comparison. Reading
the revisions through DVC is not included: it is a few seconds per revision whatever N is (the
README's and RESULTS.md's `done in` lines).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, time
import numpy as np
from entromix.comparison.stats import delong_test, mcnemar_exact, paired_bootstrap
n, resamples = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
y = (np.arange(n) < n // 4).astype(int)
shared = rng.normal(size=n)
a = 1 / (1 + np.exp(-(1.5 * (2 * y - 1) + shared + rng.normal(size=n))))
b = 1 / (1 + np.exp(-(1.7 * (2 * y - 1) + shared + rng.normal(size=n))))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter(); delong_test(y, a, b); t1 = time.perf_counter()
paired_bootstrap(y, (a >= 0.5).astype(int), (b >= 0.5).astype(int), resamples, 0); t2 = time.perf_counter()
mcnemar_exact(y, (a >= 0.5).astype(int), (b >= 0.5).astype(int)); t3 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"delong_s": t1 - t0, "bootstrap_s": t2 - t1, "mcnemar_s": t3 - t2,
                  "rss_before_mib": before, "peak_rss_mib": peak}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="665,5000,20000", help="test-set sizes, comma-separated")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (entromix compare's default)")
    args = parser.parse_args()
    print(f"| N | DeLong s | bootstrap ({args.resamples}) s | image draws/s | McNemar s | peak RSS MiB (before) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(n), str(args.resamples)], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {n:,} | {r['delong_s']:.4f} | {r['bootstrap_s']:.3f} | {n * args.resamples / r['bootstrap_s']:,.0f} | "
            f"{r['mcnemar_s']:.4f} | "
            f"{r['peak_rss_mib']:.0f} ({r['rss_before_mib']:.0f}) |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
