"""Benchmark memory at scale (issue 36): peak resident memory of the real stage processes against N.

Generates a pool of small smooth random PNGs (80% real Benign/Malignant 3:1, 20% synthetic
Malignant) once, then for each N builds a scratch project of N of them (hard links) with a
params.yaml, and runs the stage scripts themselves (`python pipeline/<stage>.py`, one fresh
process each) as `dvc repro` would: ingest (64 px array), score (2 folds x 1 epoch at 32 px),
train (1 epoch, ensemble 1, at 32 px) and predict (the evaluated model on a folder of N images).
For each stage and N it reports the prepared array's size, the process's peak RSS (the kernel's
ru_maxrss of the stage process and its workers), peak RSS minus the array, the peak anonymous
memory of the whole process tree (sampled every 50 ms from /proc: memory that is not a file
mapping, so not the array's pages) and the wall time. A ceiling that does not grow with N beyond
the array shows as a flat "RSS - array" column.

    python benchmarks/bench_memory.py --workdir /tmp/bench_memory              # the full run
    python benchmarks/bench_memory.py --stages score,train --sizes 2500,5000 --out memory.json
    python benchmarks/bench_memory.py --quick                                   # toy sizes (the test)

Not a test: the figures depend on the machine. Record them in BENCHMARKS.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "score", "train", "predict")
STORED = 64  # ingest.image_size: the array's side
MODEL_SIZE = 32  # score.image_size and train.image_size
SYNTHETIC_SHARE = 0.2


def pool_files(pool: Path, n: int) -> list[tuple[Path, str]]:
    """The first n files of the pool, as (pool path, path inside a project's data/); written when missing."""
    n_syn = int(round(n * SYNTHETIC_SHARE))
    files = [(f"real/{'Malignant' if i % 4 == 0 else 'Benign'}", f"r{i:06d}.png") for i in range(n - n_syn)]
    files += [("synthetic/Malignant", f"s{i:06d}.png") for i in range(n_syn)]
    out = []
    for folder, name in files:
        path = pool / folder / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # smooth random content from the file's own seed: the same file whatever N asked for it first
            rng = np.random.default_rng(_seed(folder, name))
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((STORED, STORED), Image.Resampling.BICUBIC).save(path, compress_level=1)
        out.append((path, f"{folder}/{name}"))
    return out


def _seed(folder: str, name: str) -> int:
    return int(name[1:7]) * 2 + (folder.startswith("synthetic"))


def params(quick: bool) -> dict:
    """The repository's params.yaml with the benchmark's small settings (same code paths)."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    batch = 16 if quick else 32
    p["ingest"].update(
        data_root="data",
        real_dir="real",
        synthetic_dir="synthetic",
        unlabelled_dir=None,
        groups_csv=None,
        tiers_csv=None,
        layout="flat",
        labels=["benign", "malignant"],
        positive_labels=["malignant"],
        class_map={"Benign": "benign", "Malignant": "malignant"},
        image_size=STORED,
        workers=0,
        scarce_train_images=None,
    )
    common = dict(image_size=MODEL_SIZE, epochs=1, min_steps=0, lr_warmup_epochs=0, batch_size=batch, device="cpu")
    p["score"].update(common, folds=2, nproc_per_node=1, pretrained_weights=None, model="resnet18")
    p["curriculum"].update(warmup_epochs=0, strategy="curriculum", pseudo_labels=False, rescore_every=0)
    p["train"].update(common, ensemble=1, resume=False, nproc_per_node=1, nnodes=1, pretrained_weights=None)
    p["evaluate"].update(bootstrap_resamples=0, gradcam_errors=0, gradcam_correct=0, device="cpu")
    p["evaluate"].update(gallery_per_side=2, gallery_sample=2)
    p["predict"].update(input_dir="inbox", per_class=False, uncertainty="none", bad_images="error", device="cpu")
    return p


def make_project(project: Path, pool: Path, n: int, settings: dict) -> None:
    """A scratch project: data/{real,synthetic} and inbox/ hold hard links to the pool's first n files."""
    if project.exists():
        shutil.rmtree(project)
    for source, rel in pool_files(pool, n):
        for target in (project / "data" / rel, project / "inbox" / rel):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(source, target)
    (project / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))


def _tree(pid: int) -> list[int]:
    """pid and its descendants (/proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except OSError:
            continue
    return out


def _anon_kib(pid: int) -> int:
    """RssAnon of one process in KiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(cmd: list[str], cwd: Path, log: Path) -> dict:
    """Run cmd; its wall time, the kernel's peak RSS of it (ru_maxrss: the largest of it and its
    waited-for workers) and the peak sampled anonymous memory of its whole process tree."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        peak_anon = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_anon = max(peak_anon, sum(_anon_kib(p) for p in _tree(proc.pid)))
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "peak_anon_mib": peak_anon / 1024}


def stage(project: Path, name: str) -> dict:
    return measure([sys.executable, str(ROOT / "pipeline" / f"{name}.py")], project, project / f"{name}.log")


def run_size(project: Path, pool: Path, n: int, todo: set[str], deploy: Path, settings: dict) -> list[dict]:
    """The stages of ``todo`` at N = n in a fresh project (ingest always runs: the others read its array)."""
    make_project(project, pool, n, settings)
    rows = []
    result = stage(project, "ingest")
    array_mib = (project / "data" / "prepared" / "images.npy").stat().st_size / 2**20
    if "ingest" in todo:
        rows.append({"stage": "ingest", "n": n, "array_mib": array_mib, **result})
    for name in ("score", "train"):
        if name in todo or (name == "score" and "train" in todo) or ("predict" in todo and not deploy.exists()):
            result = stage(project, name)
            if name in todo:
                rows.append({"stage": name, "n": n, "array_mib": array_mib, **result})
    if "predict" in todo:
        if not deploy.exists():  # the evaluated model of the first (smallest) N serves every N
            stage(project, "evaluate")
            shutil.copy(project / "models" / "deploy" / "model.pt", deploy)
        (project / "models" / "deploy").mkdir(parents=True, exist_ok=True)
        shutil.copy(deploy, project / "models" / "deploy" / "model.pt")
        rows.append({"stage": "predict", "n": n, "array_mib": 0.0, **stage(project, "predict")})
    shutil.rmtree(project)
    return rows


def table(rows: list[dict]) -> str:
    """The Markdown table, one row per stage and N (predict has no prepared array: its column is -)."""
    lines = [
        "| stage | N | array MiB | peak RSS MiB | RSS - array MiB | peak anon MiB | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        array = f"{r['array_mib']:.1f}" if r["array_mib"] else "-"
        lines.append(
            f"| {r['stage']} | {r['n']:,} | {array} | {r['peak_rss_mib']:.0f} | "
            f"{r['peak_rss_mib'] - r['array_mib']:.0f} | {r['peak_anon_mib']:.0f} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def slopes(rows: list[dict]) -> list[str]:
    """Per stage: how much RSS - array and anonymous memory grew per 1,000 images, smallest to largest N."""
    out = []
    for name in STAGES:
        mine = sorted((r for r in rows if r["stage"] == name), key=lambda r: r["n"])
        if len(mine) >= 2:
            a, b = mine[0], mine[-1]
            k = (b["n"] - a["n"]) / 1000
            extra = ((b["peak_rss_mib"] - b["array_mib"]) - (a["peak_rss_mib"] - a["array_mib"])) / k
            anon = (b["peak_anon_mib"] - a["peak_anon_mib"]) / k
            out.append(
                f"{name}: RSS - array {extra:+.2f} MiB, anon {anon:+.2f} MiB per 1,000 images "
                f"(N {a['n']:,} -> {b['n']:,})"
            )
    return out


def sizes(text: str) -> list[int]:
    return sorted({int(s) for s in text.split(",") if s.strip()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated, of ingest,score,train,predict")
    parser.add_argument("--ingest-sizes", default="5000,10000,20000,50000", help="N for ingest")
    parser.add_argument("--sizes", default="2500,5000,10000,20000", help="N for score, train and predict")
    parser.add_argument("--quick", action="store_true", help="toy sizes (ingest 60,120; the others 120), batch 16")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir, removed after)")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    if unknown := set(stages) - set(STAGES):
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    ingest_sizes, model_sizes = sizes(args.ingest_sizes), sizes(args.sizes)
    if args.quick:
        ingest_sizes, model_sizes = [60, 120], [120]
    scratch = tempfile.TemporaryDirectory(prefix="entromix-memory-") if args.workdir is None else None
    base = Path(args.workdir or scratch.name)
    base.mkdir(parents=True, exist_ok=True)
    settings = params(args.quick)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"{STORED} px PNG -> ingest {STORED} px; score / train at {MODEL_SIZE} px; stages {', '.join(stages)}")
    rows: list[dict] = []
    deploy = base / "deploy_model.pt"
    deploy.unlink(missing_ok=True)
    for n in sorted(set(ingest_sizes) | set(model_sizes)):
        todo = {s for s in stages if (n in ingest_sizes if s == "ingest" else n in model_sizes)}
        if todo:
            rows += run_size(base / f"n{n}", base / "pool", n, todo, deploy, settings)
            done = [
                f"{r['stage']} {r['seconds']:.1f} s ({r['n'] / r['seconds']:.0f} img/s)" for r in rows if r["n"] == n
            ]
            print(f"N = {n:,}: " + "; ".join(done), flush=True)
    rows.sort(key=lambda r: (STAGES.index(r["stage"]), r["n"]))
    print(table(rows))
    print("\n".join(slopes(rows)))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=2) + "\n"
        )
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()
