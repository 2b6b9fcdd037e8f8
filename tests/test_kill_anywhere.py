"""SIGKILL anywhere (issue 36): a stage killed at any write, mid-write included, never leaves a
half-written output that a later stage reads as valid, and the next `dvc repro` finishes with
outputs byte-identical to an uninterrupted run's.

The faults are real: ``tests/faults/sitecustomize.py`` is loaded into the stage process, counts its
``os.replace`` calls (every output of every stage is written to a temporary file and renamed into
place: ``entromix.common.atomic``), and at the chosen one SIGKILLs the process group (the stage and
the ``dvc repro`` that started it), either after cutting the temporary file to half its bytes
(what a kill mid-write leaves) or right after the rename (between two renames of a set, or after
the last one, before DVC records the run). The points are chosen from a recorded run of the same
stage: the first rename, one in the middle and the last.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_pipeline_e2e import GIT, TINY, copy_project, ran, set_params, sh

pytestmark = pytest.mark.slow
FAULTS = Path(__file__).resolve().parent / "faults"
STAGES = ["ingest", "score", "train", "evaluate", "predict"]
# the tiny project of tests/test_pipeline_e2e.py at 16 px with one ensemble member: the same code paths, faster
SMALL = {
    **TINY,
    "ingest": {**TINY["ingest"], "image_size": 16},
    "score": {**TINY["score"], "image_size": 16},
    "train": {**TINY["train"], "image_size": 16, "ensemble": 1},
}
# an atomic temporary file: ``.<output name>.<random>.tmp`` beside the output (entromix.common.atomic)
TEMPORARY = re.compile(r"\..+\.[^.]+\.tmp")
# what a run records about its own speed and timing (not results, and different in every run)
TIMED = {"models/train/run.json", "models/deploy/MODEL_CARD.md", "dvclive/train/plots/metrics/images_per_s.tsv"}
TIMED |= {"dvclive/score/plots/metrics/scorer_images_per_s.tsv"}
TIMED |= {"models/train/checkpoints/resume.pt"}  # training state whose history rows carry each epoch's seconds
TIMED_COLUMNS = ["epoch_seconds", "images_per_s"]  # of plots/train/history.csv
# rewritten while a stage runs, so that it can be followed: a SIGKILLed run leaves them as it had
# got (each file whole), and the next run replaces them; a failed or interrupted run puts them back
LIVE = ("dvclive/score/", "dvclive/train/", "plots/train/history.csv")


def env_with(fault: str = "", argv: str = "") -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    pythonpath = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PATH=path, PYTHONPATH=pythonpath, ENTROMIX_FAULT=fault, ENTROMIX_FAULT_ARGV=argv)


def stage_outputs(repo: Path, stage: str) -> list[str]:
    """The outs and metrics that dvc.yaml declares for ``stage``."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]
    return [next(iter(o)) if isinstance(o, dict) else o for o in spec.get("outs", []) + spec.get("metrics", [])]


def output_files(repo: Path, stages: list[str]) -> dict[str, bytes]:
    """Every file of the stages' declared outputs (a folder output: every file in it but a killed
    writer's temporaries, which .dvcignore keeps out of its hash), by path."""
    files = {}
    for stage in stages:
        for out in stage_outputs(repo, stage):
            path = repo / out
            found = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path] if path.exists() else []
            found = [p for p in found if not TEMPORARY.fullmatch(p.name)]
            files.update({p.relative_to(repo).as_posix(): p.read_bytes() for p in found})
    return files


def compared(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if name not in TIMED}


def same_result(name: str, a: bytes, b: bytes) -> bool:
    """Byte for byte (checkpoints and models included: entromix.common.torch_files.save_torch_file),
    except the training history's timing columns."""
    if a == b:
        return True
    if name == "plots/train/history.csv":
        a_frame, b_frame = (pd.read_csv(io.BytesIO(x)).drop(columns=TIMED_COLUMNS) for x in (a, b))
        return a_frame.equals(b_frame)
    return False


def assert_whole(files: dict[str, bytes]) -> None:
    """Each live file parses whole: every series row a step and a value, the summary JSON, the history CSV."""
    for name, data in files.items():
        if name.endswith(".tsv"):
            rows = [line.split("\t") for line in data.decode().splitlines()[1:]]
            assert all(len(row) == 2 and row[0].isdigit() and float(row[1]) == float(row[1]) for row in rows), name
        elif name.endswith(".json"):
            json.loads(data)
        elif name.endswith(".csv"):
            assert not pd.read_csv(io.BytesIO(data)).isna().all(axis=1).any(), name


def differing(files: dict[str, bytes], reference: dict[str, bytes]) -> list[str]:
    """The files of ``files`` whose results differ from ``reference``'s."""
    kept = compared(files)
    return sorted(name for name in kept if not same_result(name, kept[name], reference[name]))


def temporaries(repo: Path) -> list[str]:
    return sorted(
        p.relative_to(repo).as_posix()
        for p in repo.rglob("*.tmp")
        if TEMPORARY.fullmatch(p.name) and ".dvc" not in p.relative_to(repo).parts
    )


def dvc(repo: Path, args: list[str], fault: str = "", argv: str = "") -> subprocess.CompletedProcess:
    """``dvc <args>`` in its own process group (a kill takes DVC and its stage, as a power cut would)."""
    return subprocess.run(
        ["dvc", *args],
        cwd=repo,
        env=env_with(fault, argv),
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """The tiny project, committed, then run to the end once: the uninterrupted run. (Not committed
    after it: the checkpoints and the model card record HEAD's revision, which must stay the same.)"""
    repo = tmp_path_factory.mktemp("kill") / "project"
    copy_project(repo)
    set_params(repo, SMALL)
    sh(["git", "init", "-q"], repo)
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "the tiny project"], repo)
    sh(["dvc", "repro"], repo)
    return repo


def recorded_run(repo: Path, stage: str) -> list[dict]:
    """Run ``stage`` again (``dvc repro -f -s``) recording what it writes and renames; a stage
    recorded before in this project is not run again (the events are the same every run)."""
    log = repo.parent / f"{stage}.writes.jsonl"
    if log.is_file():
        return [json.loads(line) for line in log.read_text().splitlines()]
    proc = dvc(repo, ["repro", "-f", "-s", stage], fault=f"record:{log}", argv=f"pipeline/{stage}.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("stage", STAGES)
def test_every_file_a_stage_writes_is_a_temporary_renamed_into_place(repo, stage):
    """Inside the project, a stage opens no file for writing under its final name: each is a
    temporary file beside the output, renamed over it only when complete."""
    events = recorded_run(repo, stage)
    root = str(repo.resolve())
    opened = {e["open"] for e in events if "open" in e and e["open"].startswith(root + os.sep)}
    # DVC's and DVCLive's own state (.dvc/tmp/btime, a step marker) is theirs; the score stage's fold store is ours
    opened = {p for p in opened if "/.dvc/" not in p or "/.dvc/tmp/entromix-" in p}
    renamed = {src: dst for src, dst in (e["replace"] for e in events if "replace" in e)}
    assert renamed, "the stage wrote nothing through entromix.common.atomic"
    direct = sorted(p for p in opened if not TEMPORARY.fullmatch(Path(p).name))
    assert direct == [], f"{stage} writes these under their final names: {direct}"
    assert sorted(p for p in opened if p not in renamed) == []  # every temporary is renamed (none left behind)
    outputs = [str((repo / out).resolve()) for out in stage_outputs(repo, stage)]
    for dst in (d for d in renamed.values() if d not in renamed):  # a temporary may be renamed onto another
        assert any(dst == out or dst.startswith(out + os.sep) for out in outputs) or "/.dvc/" in dst, dst
    assert temporaries(repo) == []


def kill_points(events: list[dict]) -> list[tuple[int, str]]:
    """(n, how): the first rename cut mid-write, a middle one right after it, the last one both ways."""
    n = sum(1 for e in events if "replace" in e)
    return sorted({(1, "midwrite"), ((n + 1) // 2, "after"), (n, "midwrite"), (n, "after")})


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_killed_at_any_write_costs_nothing_and_the_next_repro_is_byte_identical(repo, stage):
    """For each kill point: the killed run's outputs are each the uninterrupted run's bytes or
    absent (never a partial file under an output's name), the next plain `dvc repro` finishes
    (rerunning what the kill left out of date), and every output of every stage is then
    byte-identical to the uninterrupted run's and `dvc status` is clean; a temporary a mid-write kill
    left beside an output the recovery did not rewrite stays out of git (git status unchanged) and
    out of folder hashes (.dvcignore), and the next write of that output deletes it.
    Even points start from a project without this stage's outputs (a first run killed), odd ones
    from the finished project (`dvc repro -f`: a rerun killed with the previous outputs in place)."""
    reference = output_files(repo, ["demo", *STAGES])
    git_status = sh(["git", "status", "--porcelain"], repo)
    points = kill_points(recorded_run(repo, stage))
    for i, (nth, how) in enumerate(points):
        if i % 2 == 0:
            for out in stage_outputs(repo, stage):
                shutil.rmtree(repo / out) if (repo / out).is_dir() else (repo / out).unlink(missing_ok=True)
            args = ["repro"]
        else:
            args = ["repro", "-f", "-s", stage]
        killed = dvc(repo, args, fault=f"kill:{nth}:{how}", argv=f"pipeline/{stage}.py")
        assert killed.returncode == -9, (nth, how, killed.stdout + killed.stderr)  # the kill took dvc too
        after_kill = output_files(repo, [stage])
        assert_whole(after_kill)
        partial = [name for name in differing(after_kill, reference) if not name.startswith(LIVE)]
        assert partial == [], f"kill {nth}/{how}: outputs neither the run's nor absent: {partial}"
        recovered = dvc(repo, ["repro"])
        assert recovered.returncode == 0, (nth, how, recovered.stdout + recovered.stderr)
        if set(after_kill) != set(output_files(repo, [stage])):  # the kill left outputs missing
            assert stage in ran(recovered.stdout), (nth, how, recovered.stdout)
        assert "up to date" in sh(["dvc", "status"], repo), (nth, how)
        now = output_files(repo, ["demo", *STAGES])
        assert sorted(now) == sorted(reference), (nth, how)
        assert differing(now, reference) == [], (nth, how)
        assert sh(["git", "status", "--porcelain"], repo) == git_status, (nth, how)  # no temporary shows in git


@pytest.mark.parametrize(("stage", "fault"), [("score", "error"), ("train", "sigint")])
def test_a_stage_that_fails_or_is_interrupted_mid_run_leaves_every_previous_output(repo, stage, fault):
    """Issue 36's first case, mid-run: the stage, rerun over the previous outputs (`dvc repro -f`),
    meets an I/O error it does not expect (score), or Ctrl-C (train; tests/test_train.py also stops
    training with SIGINT and SIGTERM at several epochs), after its live log has started. It exits with
    one message (1 or 130), and every output of every stage, the DVCLive log and the training
    history included, is the previous run's byte for byte. The one exception is the train stage's
    resume state (models/train/checkpoints/resume.pt), which records the interrupted run so that
    the next `dvc repro` continues it: `dvc status` names that folder and nothing else, and the
    next `dvc repro` ends with the previous results again."""
    n = sum(1 for e in recorded_run(repo, stage) if "replace" in e)
    assert dvc(repo, ["repro"]).returncode == 0  # the later stages again (the training history records its seconds)
    reference = output_files(repo, ["demo", *STAGES])
    failed = dvc(repo, ["repro", "-f", "-s", stage], fault=f"fail:{n // 2}:{fault}", argv=f"pipeline/{stage}.py")
    assert failed.returncode != 0
    expected = "injected I/O error" if fault == "error" else "interrupted; outputs were not replaced"
    lines = failed.stderr.strip().splitlines()
    assert any(line.startswith(f"entromix {stage}:") and expected in line for line in lines), failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    now = output_files(repo, ["demo", *STAGES])
    resume = "models/train/checkpoints/resume.pt"
    assert sorted(now) == sorted(reference)
    assert [name for name in now if now[name] != reference[name]] == ([resume] if stage == "train" else [])
    status = sh(["dvc", "status"], repo)
    assert (
        status == "train:\n\tchanged outs:\n\t\tmodified:           models/train/checkpoints\n"
        if stage == "train"
        else ("up to date" in status)
    ), status
    recovered = dvc(repo, ["repro"])
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert differing(output_files(repo, ["demo", *STAGES]), reference) == []
    assert "up to date" in sh(["dvc", "status"], repo)


CLI = {
    "export": ["export", "--format", "torchscript", "--out", "exported/model.pt"],
    "predict": ["predict", "data/demo/real/test", "--out", "exported/predictions.csv", "--quiet"],
}


@pytest.mark.parametrize("command", sorted(CLI))
def test_a_killed_cli_command_leaves_its_previous_output_and_the_rerun_is_byte_identical(repo, command, tmp_path):
    """`entromix export` and `entromix predict` killed at each of their writes: the files it writes
    are the previous run's or absent, never partial, and rerunning the command gives the bytes of
    an uninterrupted run."""
    entromix = [str(Path(sys.executable).parent / "entromix"), *CLI[command]]
    argv = f"entromix {command}"

    def run(fault: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            entromix, cwd=repo, env=env_with(fault, argv), capture_output=True, text=True, start_new_session=True
        )

    out_dir = repo / "exported"
    shutil.rmtree(out_dir, ignore_errors=True)
    log = tmp_path / "writes.jsonl"
    assert run(f"record:{log}").returncode == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    reference = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert reference and not any(TEMPORARY.fullmatch(name) for name in reference)
    for i, (nth, how) in enumerate(kill_points(events)):
        if i % 2 == 0:  # a first run killed; odd points: a rerun killed over the previous output
            shutil.rmtree(out_dir)
        assert run(f"kill:{nth}:{how}").returncode == -9
        after = {p.name: p.read_bytes() for p in out_dir.iterdir() if not TEMPORARY.fullmatch(p.name)}
        assert differing(after, reference) == [], (nth, how)
        assert run().returncode == 0
        now = {p.name: p.read_bytes() for p in out_dir.iterdir()}
        assert sorted(now) == sorted(reference) and differing(now, reference) == [], (nth, how)
    shutil.rmtree(out_dir)
