"""The DVCLive logs of the score and train stages (entromix.common.live): a fresh log drops what an
earlier run left, a resumed one continues its step numbering from the resume state's rows."""

import json

import pandas as pd
import pytest

from entromix.common.errors import DataError
from entromix.common.live import LiveLog
from entromix.training.report import LIVE_KEYS, live_values


def series(directory, name: str) -> pd.DataFrame:
    return pd.read_csv(directory / "plots" / "metrics" / f"{name}.tsv", sep="\t")


def summary(directory) -> dict:
    return json.loads((directory / "metrics.json").read_text())


def test_a_step_per_log_call_with_the_latest_values_in_metrics_json(tmp_path):
    live = LiveLog(tmp_path / "live")
    for step in range(3):
        live.log(step, {"loss": 1.0 / (step + 1), "lr": 1.234567891e-7, "count": step, "auc": None if step else 0.5})
    live.close()
    loss = series(tmp_path / "live", "loss")
    assert loss["step"].tolist() == [0, 1, 2] and loss["loss"].tolist() == pytest.approx([1.0, 0.5, 0.333333])
    assert series(tmp_path / "live", "auc")["step"].tolist() == [0]  # None: not logged
    latest = summary(tmp_path / "live")
    assert latest == {"loss": 0.333333, "lr": 1.23457e-07, "count": 2, "step": 2}  # auc dropped: no stale value
    assert not list((tmp_path / "live").rglob("*.tmp")) and not (tmp_path / "live" / "dvc.yaml").exists()


def test_a_fresh_log_drops_the_steps_of_an_earlier_run(tmp_path):
    old = LiveLog(tmp_path / "live")
    for step in range(4):
        old.log(step, {"loss": 1.0, "old_only": 2.0})
    old.close()
    fresh = LiveLog(tmp_path / "live")
    fresh.log(0, {"loss": 3.0})
    fresh.close()
    assert series(tmp_path / "live", "loss").to_dict("list") == {"step": [0], "loss": [3.0]}
    assert not (tmp_path / "live" / "plots" / "metrics" / "old_only.tsv").exists()
    assert summary(tmp_path / "live") == {"loss": 3.0, "step": 0}


def test_a_resumed_log_continues_after_the_resume_rows(tmp_path):
    rows = [{"loss": 1.0 - 0.1 * step, "auc": 0.5 + 0.1 * step} for step in range(5)]
    killed = LiveLog(tmp_path / "live")
    for step in range(4):  # the killed run logged 4 steps, the last one after its last saved state
        killed.log(step, rows[step])
    with open(tmp_path / "live" / "plots" / "metrics" / "loss.tsv", "a") as f:
        f.write("4\t0.6")  # and half-appended a fifth row when it was killed
    (tmp_path / "live" / "metrics.json").write_text('{"loss": 0.')  # mid-write
    resumed = LiveLog(tmp_path / "live", rows[:3])  # the resume state holds 3 finished epochs
    assert resumed.step == 3 and summary(tmp_path / "live")["step"] == 2
    for step in range(3, 5):
        resumed.log(step, rows[step])
    resumed.close()
    for name in ("loss", "auc"):
        logged = series(tmp_path / "live", name)
        assert logged["step"].tolist() == [0, 1, 2, 3, 4]
        assert logged[name].tolist() == pytest.approx([row[name] for row in rows])
    assert summary(tmp_path / "live") == {"loss": pytest.approx(0.6), "auc": pytest.approx(0.9), "step": 4}


def test_live_values_are_the_history_row_with_tau_0_in_warmup():
    row = {key: 0.5 for key in LIVE_KEYS} | {"tau": None, "epoch": 0, "phase": "warmup", "train_images": 48}
    values = live_values(row)
    assert list(values) == LIVE_KEYS and values["tau"] == 0.0


def test_an_unwritable_log_folder_is_a_user_error(tmp_path):
    (tmp_path / "dvclive").write_text("a file where the folder should be")
    with pytest.raises(DataError, match="cannot write the live log in .*dvclive/train"):
        LiveLog(tmp_path / "dvclive" / "train")


def test_timings_are_series_but_not_in_metrics_json(tmp_path):
    """metrics.json is a committed metric (dvc metrics diff): a speed that changes every run stays out of it."""
    live = LiveLog(tmp_path / "live")
    for step in range(2):
        live.log(step, {"loss": 1.0, "images_per_s": 150.0 + step, "scorer_images_per_s": 90.0})
    live.close()
    assert series(tmp_path / "live", "images_per_s")["images_per_s"].tolist() == [150.0, 151.0]
    assert summary(tmp_path / "live") == {"loss": 1.0, "step": 1}
    resumed = LiveLog(tmp_path / "live", [{"loss": 1.0, "images_per_s": 150.0}, {"loss": 0.5, "images_per_s": 151.0}])
    resumed.close()
    assert summary(tmp_path / "live") == {"loss": 0.5, "step": 1}
