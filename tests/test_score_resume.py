"""The score stage resumes: finished fold models survive SIGKILL (data/score_resume/, not a DVC
output) and a rerun trains only the rest, with the same bytes as an uninterrupted run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_score import CPU, config, toy_data
from tiny_project import PROJECT, copy_finished, write_params

from entromix.modeling.fit import EpochStats
from entromix.scoring.fold_resume import FoldStore, epochs_array, epochs_from_array, resume_line
from entromix.scoring.out_of_fold import score_training_images

SCORE = str(PROJECT / "pipeline" / "score.py")
RESUME = Path("data/score_resume")
OUTPUTS = [
    "data/dataset.csv",
    "data/synthetic_scores.csv",
    "metrics/score.json",
    "plots/score/jsd_histogram.csv",
    "dvclive/score/metrics.json",  # the live log of the resumed run: the finished folds' epochs replayed
    "dvclive/score/plots/metrics/scorer_loss.tsv",
]
# 3 folds, so that a run killed in fold 3 has two finished; aum: one more model after the folds
SCORE_CHANGES = {"score": {"folds": 3, "synthetic_score": "aum"}}
# python pipeline/score.py, except that fold 3 (k = 2) announces itself and waits to be killed
KILLED_IN_FOLD_3 = """
import runpy, sys, time
import entromix.scoring.folds as folds
fit = folds._fit_fold_model

def fit_or_wait(config, k, *args, **kwargs):
    if k == 2:
        print("TEST: training fold 3", flush=True)
        time.sleep(600)
    return fit(config, k, *args, **kwargs)

folds._fit_fold_model = fit_or_wait
sys.argv = [{score!r}]
runpy.run_path({score!r}, run_name="__main__")
"""


def arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    stats = [EpochStats(0.5, 16, 0.25, 1e-3, 5, 3), EpochStats(0.25, 16, 0.5, 5e-4, 6, 6)]
    return {
        "held_logits": rng.normal(size=(8, 2)).astype(np.float32),
        "feature_knn": rng.normal(size=4),
        "seconds": np.array(1.5),
        "epochs": epochs_array(stats),
    }


def test_a_damaged_or_foreign_model_file_is_deleted_not_used(tmp_path):
    store = FoldStore(tmp_path / "resume", "run-a")
    for k in range(5):
        store.save(k, arrays(k))
    assert not list(store.directory.glob(".*.tmp"))  # written atomically
    truncated = store.path(1).read_bytes()
    store.path(1).write_bytes(truncated[: len(truncated) // 2])
    damaged = bytearray(store.path(2).read_bytes())  # one bit of the stored logits flipped
    at = bytes(damaged).index(arrays(2)["held_logits"].tobytes()[:16])
    damaged[at + 3] ^= 0x10
    store.path(2).write_bytes(bytes(damaged))
    FoldStore(store.directory, "run-b").save(3, arrays(3))  # another run's model 4
    store.path(4).rename(store.directory / "model-7.pt")  # not a model this run has (another file name)
    (store.directory / "model-5.pt").write_text("not a checkpoint")
    lines = []
    finished = FoldStore(store.directory, "run-a").scan(6, lines.append)
    assert sorted(finished) == [0]
    for key, value in arrays(0).items():
        assert finished[0][key].dtype == value.dtype and np.array_equal(finished[0][key], value), key
    assert [p.name for p in store.directory.iterdir()] == ["model-0.pt"]  # the rest deleted
    text = "\n".join(lines)
    assert "model-1.pt" in text and "model-5.pt" in text and "unreadable" in text
    assert "model-2.pt in" in text and "checksum does not match" in text
    assert "model-3.pt in" in text and "of other settings, data, code or device" in text
    assert "model-7.pt in" in text
    assert epochs_from_array(finished[0]["epochs"]) == [
        EpochStats(0.5, 16, 0.25, 1e-3, 5, 3),
        EpochStats(0.25, 16, 0.5, 5e-4, 6, 6),
    ]
    # nothing is kept or read without a folder
    assert FoldStore(None).scan(3) == {} and FoldStore(None).save(0, arrays()) is None


def test_resume_line_names_what_is_finished_and_what_comes_next():
    where = Path("data/score_resume")
    assert resume_line([0, 1], 5, 5, where) == (
        "entromix score: resuming: folds 1-2 of 5 finished in an earlier run (data/score_resume), training fold 3"
    )
    assert resume_line([1], 2, 2, where).endswith(
        "fold 2 of 2 finished in an earlier run (data/score_resume), training fold 1"
    )
    assert "folds 1, 3-4 of 5 finished" in resume_line([0, 2, 3], 5, 6, where)
    assert resume_line([0, 1, 2], 3, 4, where).endswith(", training the aum model")
    assert "folds 1-3 of 3 and the aum model finished" in resume_line([0, 1, 2, 3], 3, 4, where)
    assert resume_line([0, 1, 2, 3], 3, 4, where).endswith("; nothing left to train")


class Stop(Exception):
    pass


@pytest.mark.slow  # trains a network for more than one epoch
def test_a_run_stopped_in_the_aum_model_resumes_to_the_same_scores(tmp_path):
    """The library: stopped while the aum model trains (after every fold), then continued, then
    run again once every model is kept (as when writing the outputs failed): the same result each time."""
    images, manifest = toy_data(size=16)
    cfg = config(image_size=16, synthetic_score="aum")
    uninterrupted = score_training_images(cfg, images, manifest, CPU, log=lambda line: None)

    def stop_in_aum(k: int, epoch: int, stats: EpochStats) -> None:
        if k == cfg.folds:
            raise Stop

    with pytest.raises(Stop):
        score_training_images(
            cfg, images, manifest, CPU, log=lambda line: None, on_epoch=stop_in_aum, resume=FoldStore(tmp_path, "a")
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model-0.pt", "model-1.pt"]
    for expected in (", training the aum model", "; nothing left to train"):
        lines, epochs = [], []
        got = score_training_images(
            cfg,
            images,
            manifest,
            CPU,
            log=lines.append,
            on_epoch=lambda k, epoch, stats, epochs=epochs: epochs.append((k, epoch)),
            resume=FoldStore(tmp_path, "a"),
        )
        assert any(
            line.startswith("entromix score: resuming: folds 1-2 of 2") and line.endswith(expected) for line in lines
        )
        assert epochs == [(0, 0), (1, 0), (2, 0)]  # kept models' epochs replayed in order
        assert not any("fold 1/2 epoch" in line for line in lines)  # a kept model is not trained again
        assert got.dataset.equals(uninterrupted.dataset)
        assert got.synthetic_scores.equals(uninterrupted.synthetic_scores)
        assert np.array_equal(got.oof_logits, uninterrupted.oof_logits) and got.temperature == uninterrupted.temperature


def score_process(project: Path, script: list[str]) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *script], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow  # trains a network for more than one epoch
def test_the_score_stage_killed_after_two_folds_resumes_at_fold_3_with_the_same_bytes(finished_project, tmp_path):
    uninterrupted = copy_finished(finished_project, tmp_path / "uninterrupted")
    killed = copy_finished(finished_project, tmp_path / "killed")
    for project in (uninterrupted, killed):
        write_params(project, SCORE_CHANGES)
        shutil.rmtree(project / RESUME, ignore_errors=True)  # the finished project's own kept folds
    baseline = score_process(uninterrupted, [SCORE])  # alongside the killed run
    proc = score_process(killed, ["-c", KILLED_IN_FOLD_3.format(score=SCORE)])
    out = []
    for line in proc.stdout:
        out.append(line)
        if line.startswith("TEST: training fold 3"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(out)
    assert any(line.startswith("entromix score: fold 2/3: trained on") for line in out)
    (store,) = (killed / RESUME).iterdir()  # one folder per fingerprint of the settings, data and code
    assert sorted(p.name for p in store.iterdir()) == ["model-0.pt", "model-1.pt"]
    assert (killed / "data/dataset.csv").read_bytes() == (finished_project / "data/dataset.csv").read_bytes()
    rerun = score_process(killed, [SCORE])
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert (
        f"entromix score: resuming: folds 1-2 of 3 finished in an earlier run (data/score_resume/{store.name}), "
        "training fold 3" in stdout
    )
    assert "fold 1/3 epoch" not in stdout and "fold 3/3 epoch" in stdout and "aum model epoch" in stdout
    _, stderr = baseline.communicate(timeout=300)
    assert baseline.returncode == 0, stderr
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (uninterrupted / name).read_bytes(), name
    # the finished models stay, as the stage's own run cache: a rerun of the same settings trains nothing
    assert sorted(p.name for p in store.iterdir()) == ["model-0.pt", "model-1.pt", "model-2.pt", "model-3.pt"]
    again = score_process(killed, [SCORE])
    stdout, stderr = again.communicate(timeout=300)
    assert again.returncode == 0, stderr
    assert "nothing left to train" in stdout and " epoch " not in stdout.replace("resuming", "")
    for name in OUTPUTS:
        assert (killed / name).read_bytes() == (uninterrupted / name).read_bytes(), name


def test_the_store_is_shared_by_the_workspace_and_its_queued_experiments(tmp_path):
    """A DVC project keeps the finished models in .dvc/tmp/entromix-score/, and an experiment that
    `dvc queue` runs in .dvc/tmp/exps/<name>/ finds the same folder; without DVC, data/score_resume/.
    Only the newest folders are kept."""
    from entromix.scoring.fold_resume import prune, store_directory, store_root

    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    queued = project / ".dvc" / "tmp" / "exps" / "tmpabc123"
    queued.mkdir(parents=True)
    assert store_root(project) == project / ".dvc" / "tmp" / "entromix-score"
    assert store_root(queued) == store_root(project)  # the queued copy has its own .dvc: not used
    (queued / ".dvc").mkdir()
    assert store_root(queued) == store_root(project)
    assert store_root(tmp_path / "plain") == tmp_path / "plain" / "data" / "score_resume"
    assert store_directory("ab" * 32, project).name == "ab" * 8
    root = store_root(project)
    for k in range(5):
        (root / f"f{k}").mkdir(parents=True)
        os.utime(root / f"f{k}", (k, k))
    prune(root, keep=2)
    assert sorted(p.name for p in root.iterdir()) == ["f3", "f4"]
