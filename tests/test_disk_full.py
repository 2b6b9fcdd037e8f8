"""A full disk (issue 36): a stage whose outputs do not fit exits with one message naming the path
and the space, and the previous outputs stay as they were. Real file-system limits: the project
is copied onto a tmpfs only a little larger than the project itself (mounted directly when this
process may, else inside `unshare -rm`, a user namespace where an unprivileged user may mount)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_project import copy_finished

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[1]


def _du_kib(path: Path) -> int:
    """Disk usage in KiB as a file system with 4 KiB blocks counts it (tmpfs counts pages)."""
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout.split()[0])


def run_on_small_tmpfs(project: Path, stage: str, slack_bytes: int) -> subprocess.CompletedProcess:
    """Copy ``project`` onto a tmpfs, fill it to ``slack_bytes`` free, run the stage there,
    copy the project back (to inspect it), and return the stage's process."""
    size_kb = _du_kib(project) * 2 + 1024  # room to copy it; the filler then takes all but the slack
    script = (
        'set -e; mnt="$1"; src="$2"; stage="$3"; size="$4"; mount -t tmpfs -o "size=${size}k" tmpfs "$mnt"; '
        'cp -a "$src/." "$mnt/"; avail=$(df --output=avail -B1 "$mnt" | tail -1); '
        'head -c $((avail - $7)) /dev/zero > "$mnt/.filler"; '  # the disk now has $7 bytes free
        'cd "$mnt"; set +e; "$5" "$6/pipeline/$stage.py" > "$src.out" 2> "$src.err"; code=$?; '
        'rm -f "$mnt/.filler"; rm -rf "$src"; mkdir "$src"; cp -a "$mnt/." "$src/"; cd /; umount "$mnt"; exit $code'
    )
    mnt = project.parent / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    args = [script, "sh", str(mnt), str(project), stage, str(size_kb), sys.executable, str(PROJECT), str(slack_bytes)]
    for prefix in ([], ["unshare", "-rm"]):
        probe = subprocess.run(
            [*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {mnt} && umount {mnt}"], capture_output=True
        )
        if probe.returncode == 0:
            code = subprocess.run([*prefix, "sh", "-c", *args], env=env).returncode
            out, err = (Path(f"{project}.{s}").read_text() for s in ("out", "err"))
            return subprocess.CompletedProcess(args, code, out, err)
    pytest.skip("cannot mount a tmpfs here (neither as root nor in a user namespace)")


def digests(project: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (project / name).read_bytes() for name in names}


@pytest.mark.parametrize(
    ("stage", "outputs"),
    [
        ("ingest", ["data/prepared/images.npy", "data/prepared/manifest.csv", "metrics/ingest.json"]),
        ("score", ["data/dataset.csv", "metrics/score.json"]),
        ("train", ["models/train/best.pt", "models/train/last.pt", "metrics/train.json"]),
        ("evaluate", ["models/deploy/model.pt", "metrics/evaluate.json", "data/predictions/test.csv"]),
    ],
)
def test_a_stage_on_a_full_disk_says_so_and_keeps_the_previous_outputs(finished_project, tmp_path, stage, outputs):
    project = copy_finished(finished_project, tmp_path / "project")
    before = digests(project, outputs)
    proc = run_on_small_tmpfs(project, stage, slack_bytes=8 * 1024)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert "Traceback" not in message and message.startswith(f"entromix {stage}: error:"), message
    assert "no space left on device" in message or "free. Free some space" in message, message
    assert any(part in message for part in ("data/", "models/", "plots/", "metrics/")), message  # names an output
    assert "previous outputs were not replaced" in message and ".tmp" not in message, message
    assert digests(project, outputs) == before
    assert not list(project.rglob(".*.tmp"))  # no temporary file left behind
