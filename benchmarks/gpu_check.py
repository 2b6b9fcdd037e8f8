"""The GPU path checked in one call: environment, CUDA-touching tests, the demo pipeline's stages on
the GPU, the train and score benchmarks at ResNet-50 / 224 px bf16, and 2-process training.

    python benchmarks/gpu_check.py --out /tmp/gpu_check            # on a CUDA machine (about 5 min on an H100)
    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_dry    # every step on the CPU at toy sizes (2 min)

Everything goes under ``--out``: one log per step, ``summary.json`` and ``summary.md`` (the
figures BENCHMARKS.md quotes). Exit 0 when every step passed, 1 otherwise (the summary says which).

Steps (each a subprocess with its own time limit, so one hang does not eat the device time):

1. ``environment``: the GPU(s), driver, torch and CUDA versions (nvidia-smi, torch.cuda).
2. ``tests``: the device-selection, ensemble and averaged-weights tests (pytest, not slow).
3. ``pipeline``: the demo pipeline's stage scripts, in dvc.yaml's order (demo, ingest, score, train,
   evaluate, predict) in a scratch copy of the working tree with every stage's ``device: cuda``;
   then ``entromix export`` to ONNX and TorchScript. No DVC on the device machine: the stage scripts
   are what DVC would run (dvc.yaml's ``cmd``), and the check reads their metrics.
4. ``bench_train``: ``benchmarks/bench_train.py --model resnet50 --size 224 --device cuda`` (bf16 autocast,
   channels_last, images on the device): the train stage's loop against the model's own speed on
   random tensors (pipeline efficiency; target >= 0.9, and >= 3,000 images/s end to end on an H100).
5. ``bench_score``: ``benchmarks/bench_score.py`` the same way for the scorer's inference and training.
6. ``distributed``: ``benchmarks/bench_distributed.py --nproc 1,2 --device cuda`` (torchrun, NCCL) when
   the machine has 2 GPUs; with one, skipped with a note.

``--dry-run`` runs the same steps with ``device: cpu``, ResNet-18 at 32 px and the tiny pipeline of
the tests (tests/test_gpu_check.py runs it), so the script is known to work before a GPU is lent.

On the lent device machine (see docs/install.md, "Checking a GPU machine"): carry ``.venv`` built from
requirements.lock (PyPI's CUDA build of torch) and run from the repository root:

    python benchmarks/gpu_check.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("src", "pipeline", "profiles", "inbox", "dvc.yaml", "params.yaml", "pyproject.toml")
STAGES = ("demo", "ingest", "score", "train", "evaluate", "predict")

#: the tiny pipeline of tests/test_pipeline_e2e.py (as tests/test_bench_stability.py's TINY_PIPELINE)
TINY = {
    "demo": {"image_size": 48, "n_benign": 24, "n_malignant": 12, "syn_good": 4, "syn_degraded": 2,
             "syn_hallucinated": 2, "split": {"train": 0.375, "val": 0.125, "test": 0.5}},
    "ingest": {"image_size": 32, "workers": 1},
    "score": {"image_size": 32, "epochs": 1, "folds": 2, "batch_size": 8},
    "curriculum": {"warmup_epochs": 1},
    "train": {"image_size": 32, "epochs": 2, "batch_size": 8, "ensemble": 1},
    "evaluate": {"bootstrap_resamples": 20, "gradcam_errors": 0, "gradcam_correct": 0},
}  # fmt: skip

BENCH = {
    "bench_train": {
        "gpu": ["--model", "resnet50", "--size", "224", "--batch", "128", "--n-real", "2048", "--n-syn", "1024",
                "--epochs", "3", "--device", "cuda"],
        "dry": ["--size", "32", "--batch", "8", "--n-real", "32", "--n-syn", "8", "--epochs", "2", "--device", "cpu"],
    },
    "bench_score": {
        "gpu": ["--model", "resnet50", "--size", "224", "--n", "4096", "--batch", "256", "--train-n", "1024",
                "--repeats", "3", "--device", "cuda"],
        "dry": ["--size", "32", "--n", "32", "--batch", "16", "--train-n", "16", "--repeats", "1", "--device", "cpu"],
    },
    "distributed": {
        "gpu": ["--nproc", "1,2", "--model", "resnet50", "--size", "224", "--batch", "128", "--n-real", "2048",
                "--n-syn", "512", "--epochs", "3", "--device", "cuda"],
        "dry": ["--nproc", "2", "--size", "32", "--batch", "8", "--n-real", "32", "--n-syn", "8", "--epochs", "2",
                "--device", "cpu"],
    },
}  # fmt: skip

#: figures read from a step's output: (regex, name)
FIGURES = {
    "bench_train": [
        (r"train stage loop: ([\d.]+) images/s", "pipeline_images_per_s"),
        (r"random tensors:\s+([\d.]+) images/s", "model_images_per_s"),
        (r"pipeline efficiency: ([\d.]+)", "efficiency"),
    ],
    "bench_score": [
        (r"inference: plain\s+([\d.]+) img/s", "inference_model_images_per_s"),
        (r"inference: .*score path\s+([\d.]+) img/s", "inference_pipeline_images_per_s"),
        (r"inference: .*efficiency ([\d.]+)", "inference_efficiency"),
        (r"training:  plain\s+([\d.]+) img/s", "training_model_images_per_s"),
        (r"training: .*efficiency ([\d.]+)", "training_efficiency"),
    ],
    "distributed": [
        (r"1 process\(es\): ([\d.]+) images/s", "one_process_images_per_s"),
        (r"2 process\(es\): ([\d.]+) images/s", "two_process_images_per_s"),
    ],
}


def merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class Check:
    def __init__(self, out: Path, dry_run: bool):
        self.out, self.dry_run = out, dry_run
        self.steps: list[dict] = []
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"

    def run(self, name: str, command: list[str], cwd: Path, timeout: int, env: dict | None = None) -> dict:
        """One command, its output in <out>/<name>.log; a record of its exit status, time and figures."""
        log = self.out / f"{name}.log"
        start = time.monotonic()
        try:
            proc = subprocess.run(
                command, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=timeout
            )
            rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc = 124
            text = f"{exc.stdout or ''}{exc.stderr or ''}\n[gpu_check: timed out after {timeout} s]"
            text = text if isinstance(text, str) else text.decode(errors="replace")
        with log.open("a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(command)}\n{text}\n[exit {rc}]\n")
        seconds = round(time.monotonic() - start, 1)
        step = {"step": name, "command": " ".join(command), "rc": rc, "seconds": seconds, "log": log.name}
        figures = {}
        for pattern, key in FIGURES.get(name.split(":")[0], []):
            match = re.search(pattern, text)
            if match:
                figures[key] = float(match.group(1))
        if figures:
            step["figures"] = figures
        print(f"gpu_check: {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {seconds} s", flush=True)
        self.steps.append(step)
        return step

    def skip(self, name: str, why: str) -> None:
        print(f"gpu_check: {name}: skipped ({why})", flush=True)
        self.steps.append({"step": name, "rc": None, "skipped": why})

    # ------------------------------------------------------------------ steps

    def environment(self) -> dict:
        probe = (
            "import json, platform, torch; c = torch.cuda.is_available(); print(json.dumps({"
            "'python': platform.python_version(), 'torch': torch.__version__, 'cuda_build': torch.version.cuda, "
            "'cuda_available': c, 'gpus': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] "
            "if c else [], 'bf16': bool(c and torch.cuda.is_bf16_supported()), "
            "'cudnn': torch.backends.cudnn.version() if c else None}))"
        )
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=self.env)
        info = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr}
        smi = shutil.which("nvidia-smi")
        if smi:
            query = [smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
            info["nvidia_smi"] = subprocess.run(query, capture_output=True, text=True).stdout.strip()
        (self.out / "environment.json").write_text(json.dumps(info, indent=1) + "\n")
        self.steps.append({"step": "environment", "rc": 0 if "error" not in info else 1, "info": info})
        print(f"gpu_check: environment: {json.dumps(info)}", flush=True)
        return info

    def tests(self) -> None:
        tests = ["tests/test_device.py", "tests/test_ensemble.py", "tests/test_weight_average.py"]
        command = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider", *tests]
        self.run("tests", command, ROOT, 600)

    def pipeline(self, device: str) -> None:
        project = self.out / "project"
        if project.exists():
            shutil.rmtree(project)
        project.mkdir(parents=True)
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, project / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.exists():
                shutil.copy2(source, project / name)
        params = yaml.safe_load((project / "params.yaml").read_text())
        devices = {section: {"device": device} for section in ("score", "train", "evaluate", "predict")}
        params = merge(params, devices)
        if self.dry_run:
            params = merge(params, TINY)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        (project / params["predict"]["input_dir"]).mkdir(parents=True, exist_ok=True)
        env = dict(self.env, PYTHONPATH=str(project / "src"))
        stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
        for stage in STAGES:
            step = self.run(f"pipeline:{stage}", stages[stage]["cmd"].split(), project, 1200, env)
            if step["rc"] != 0:
                return
        for fmt in ("onnx", "torchscript"):
            command = [sys.executable, "-m", "entromix.cli", "export", "--format", fmt, "--out", f"model.{fmt}"]
            self.run(f"pipeline:export-{fmt}", command, project, 300, env)
        metrics = json.loads((project / "metrics/evaluate.json").read_text())["evaluate"]
        train = json.loads((project / "metrics/train.json").read_text())
        self.steps.append(
            {
                "step": "pipeline:metrics",
                "rc": 0,
                "figures": {
                    "test_roc_auc": metrics["test"]["roc_auc"],
                    "threshold": metrics["threshold"]["tuned"],
                    "train_seconds": (train.get("train") or {}).get("seconds"),
                },
            }
        )

    def benchmarks(self, gpus: int) -> None:
        mode = "dry" if self.dry_run else "gpu"
        for name, script in (("bench_train", "bench_train.py"), ("bench_score", "bench_score.py")):
            self.run(name, [sys.executable, f"benchmarks/{script}", *BENCH[name][mode]], ROOT, 900)
        if self.dry_run or gpus >= 2:
            self.run("distributed", [sys.executable, "benchmarks/bench_distributed.py", *BENCH["distributed"][mode]],
                     ROOT, 900)  # fmt: skip
        else:
            self.skip("distributed", f"{gpus} GPU(s) here; the 2-process NCCL case needs 2")

    def summary(self, info: dict) -> int:
        failed = [s["step"] for s in self.steps if s.get("rc") not in (0, None)]
        report = {"dry_run": self.dry_run, "environment": info, "steps": self.steps, "failed": failed}
        (self.out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
        lines = [
            f"gpu_check{' (dry run, CPU)' if self.dry_run else ''}: torch {info.get('torch')}, CUDA "
            f"{info.get('cuda_build')}, GPUs {info.get('gpus')}, {info.get('nvidia_smi', 'no nvidia-smi')}",
            "",
            "| step | result | s | figures |",
            "|---|---|---|---|",
        ]
        for s in self.steps:
            if s["step"] == "environment":
                continue
            result = "skipped: " + s["skipped"] if "skipped" in s else ("ok" if s["rc"] == 0 else f"exit {s['rc']}")
            figures = ", ".join(f"{k} {v}" for k, v in (s.get("figures") or {}).items())
            lines.append(f"| {s['step']} | {result} | {s.get('seconds', '-')} | {figures} |")
        (self.out / "summary.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the logs and the summary")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU at toy sizes")
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out: tests,pipeline,bench")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out.resolve(), args.dry_run)
    info = check.environment()
    if not args.dry_run and not info.get("cuda_available"):
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --dry-run on a CPU machine")
        check.summary(info)
        return 1
    skip = set(filter(None, args.skip.split(",")))
    if "tests" not in skip:
        check.tests()
    if "pipeline" not in skip:
        check.pipeline("cpu" if args.dry_run else "cuda")
    if "bench" not in skip:
        check.benchmarks(len(info.get("gpus") or []))
    return check.summary(info)


if __name__ == "__main__":
    sys.exit(main())
