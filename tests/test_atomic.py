"""Atomic writes: all or nothing, and ordinary file permissions."""

import json
import os
import stat
from pathlib import Path

import pytest

from entromix.common.atomic import atomic_path, atomic_paths, is_temporary, restored_on_failure, write_json


def test_written_file_gets_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    stale = tmp_path / ".out.json.abc123.tmp"  # what SIGKILL during a write leaves
    stale.write_text('{"half": ')
    other = tmp_path / ".other.json.abc123.tmp"  # another output's: not ours to delete
    other.write_text("x")
    write_json(tmp_path / "out.json", {"a": 1})
    assert not stale.exists() and other.exists()
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}


def test_output_name_and_size_text_name_what_the_user_knows():
    from entromix.common.atomic import output_name, size_text

    assert output_name(Path("data/.x.csv.ab12cd.tmp")) == Path("data/x.csv")
    assert output_name(Path("f/..g.png.ab.tmp.zz9.tmp")) == Path("f/g.png")  # a temporary of a temporary
    assert output_name(Path("data/x.csv")) == Path("data/x.csv")
    assert (size_text(512), size_text(48 * 1024), size_text(3 * 2**20)) == ("512 bytes", "48 KiB", "3.0 MiB")


def test_a_path_that_is_already_a_temporary_is_written_directly(tmp_path):
    """A figure drawn into a set's temporary (its own atomic_path inside the set's) makes no
    temporary of a temporary, which a kill would leave under a name no later write cleans up."""
    with atomic_paths(tmp_path / "a.png", tmp_path / "b.csv") as (png, csv):
        with atomic_path(png) as inner:
            assert inner == png and is_temporary(inner)
            inner.write_bytes(b"png")
        csv.write_text("x")
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([png.name, csv.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.csv"]
    assert (tmp_path / "a.png").read_bytes() == b"png"


@pytest.mark.parametrize("failure", [RuntimeError("a bug"), KeyboardInterrupt(), SystemExit(2)])
def test_live_files_are_put_back_when_the_run_fails(tmp_path, failure):
    live, history = tmp_path / "live", tmp_path / "history.csv"
    (live / "plots").mkdir(parents=True)
    (live / "plots" / "loss.tsv").write_text("step\tloss\n0\t1.5\n")
    (live / "metrics.json").write_text('{"step": 0}')
    history.write_text("epoch\n0\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(type(failure)):
        with restored_on_failure(live, history):
            (live / "plots" / "loss.tsv").write_text("step\tloss\n")  # a fresh run's log
            (live / "plots" / "acc.tsv").write_text("step\tacc\n0\t0.5\n")
            (live / "metrics.json").unlink()
            history.write_text("epoch\n0\n1\n")
            raise failure
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_live_files_of_a_finished_run_stay(tmp_path):
    live = tmp_path / "live"
    with restored_on_failure(live, tmp_path / "history.csv"):  # neither exists before the first run
        live.mkdir()
        (live / "metrics.json").write_text('{"step": 2}')
    assert (live / "metrics.json").read_text() == '{"step": 2}'
    with pytest.raises(ValueError):
        with restored_on_failure(live):
            (live / "metrics.json").write_text('{"step": 0}')
            raise ValueError
    assert (live / "metrics.json").read_text() == '{"step": 2}'
