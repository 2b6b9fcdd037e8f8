"""Atomic writes: all or nothing, and ordinary file permissions."""

import json
import os
import stat
from pathlib import Path

import pytest

from entromix.common.atomic import atomic_path, write_json


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
