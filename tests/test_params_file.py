"""params.yaml is written the way `dvc exp run -S` writes it, and docs/params.md documents it key for key.

DVC applies ``-S key=value`` by loading params.yaml with ruamel.yaml, setting the value and writing
the whole file back (``dvc.utils.hydra.apply_overrides``). Anything it writes differently from the
file (``null``, inline ``[a, b]`` lists, ``""``, a comment after a list) was rewritten by every
experiment, so each ``-S`` here must change exactly one line. The reference page has a table row
per key, starting with the key's dotted name in backticks (docs/params.md says so at its top).
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
PARAMS = PROJECT / "params.yaml"
DOC = PROJECT / "docs" / "params.md"
#: mappings whose entries are data (class folder names), not keys: documented as one key
DATA_KEYS = {"ingest.class_map"}
#: a documented key's row: | `section.key` | default | values | meaning |
ROW = re.compile(r"^\| `([a-z_]+(?:\.[a-z0-9_]+)+)` \| (.*?) \|", re.M)
NAME = re.compile(r"`([a-z_]+(?:\.[a-z0-9_]+)+)`")


def params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def key_paths(tree: dict, prefix: str = "") -> dict[str, object]:
    """Every leaf key of ``tree`` as ``section.key`` (``ingest.split.train``) with its value."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in DATA_KEYS:
            out.update(key_paths(value, f"{path}."))
        else:
            out[path] = value
    return out


def as_written_in_the_doc(value: object) -> str:
    """How the page's default column writes a value (backticks stripped)."""
    if value is None:
        return "empty"
    if value == "":
        return "'' (empty text)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(map(as_written_in_the_doc, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {as_written_in_the_doc(v)}" for k, v in value.items())
    return str(value)


def test_every_key_has_one_row_and_every_row_is_a_key():
    rows = [name for name, _ in ROW.findall(DOC.read_text())]
    keys = key_paths(params())
    assert len(rows) == len(set(rows)), (
        f"docs/params.md: keys with two rows: {sorted({r for r in rows if rows.count(r) > 1})}"
    )
    assert not set(keys) - set(rows), f"docs/params.md lacks a row for {sorted(set(keys) - set(rows))}"
    assert not set(rows) - set(keys), (
        f"docs/params.md documents keys params.yaml lacks: {sorted(set(rows) - set(keys))}"
    )
    assert rows == list(keys), "docs/params.md lists the keys in an order other than params.yaml's"


def test_each_rows_default_is_the_value_in_params_yaml():
    keys = key_paths(params())
    wrong = {
        name: (default, as_written_in_the_doc(keys[name]))
        for name, default in ROW.findall(DOC.read_text())
        if default.replace("`", "") != as_written_in_the_doc(keys[name])
    }
    assert not wrong, f"docs/params.md defaults (page, params.yaml) that differ: {wrong}"


def test_the_page_names_no_key_that_params_yaml_lacks():
    sections, keys = set(params()), set(key_paths(params()))
    named = {name for name in NAME.findall(DOC.read_text()) if name.split(".")[0] in sections}
    assert named - keys == set(), f"docs/params.md names keys params.yaml lacks: {sorted(named - keys)}"
    headings = re.findall(r"^## (\S+)$", DOC.read_text(), re.M)
    assert [h for h in headings if h in sections] == list(params()), (
        "docs/params.md needs a '## <section>' heading each"
    )


def test_every_key_has_a_one_line_comment_and_nothing_follows_a_list():
    """A comment on each key's line and no comment line inside a section (DVC keeps a comment on a
    key's line, but one after a list's last item is dropped); class_map's entries are data."""
    lines = PARAMS.read_text().splitlines()
    parent = ""
    for number, line in enumerate(lines, start=1):
        if line.startswith(" ") and line.strip().startswith("#"):
            raise AssertionError(f"params.yaml:{number}: a comment line inside a section: {line!r}")
        key = re.match(r"( *)([a-z_0-9]+):", line)
        if not key or not key.group(1):
            continue  # a list item or a section
        if len(key.group(1)) == 2:
            parent = key.group(2)
        elif parent == "class_map":
            continue
        assert " # " in line, f"params.yaml:{number}: {key.group(2)} has no comment on its line"


# a key of each section, nested keys, lists, an empty value set and a value emptied
OVERRIDES = [
    ("curriculum.jsd_start=0.05", "jsd_start: 0.05"),
    ("train.epochs=5", "epochs: 5"),
    ("score.folds=3", "folds: 3"),
    ("ingest.image_size=96", "image_size: 96"),
    ("train.pretrained_weights=/x.pt", "pretrained_weights: /x.pt"),
    ("evaluate.checkpoint=best", "checkpoint: best"),
    ("demo.n_benign=10", "n_benign: 10"),
    ("predict.device=cpu", "device: cpu"),
    ("ingest.split.val=0.3", "val: 0.3"),
    ("ingest.positive_labels=[benign]", "- benign"),
    ("score.rank_mean_of=[ensemble,knn]", "- knn"),
    ("train.early_stopping_patience=5", "early_stopping_patience: 5"),
    ("train.rdzv_endpoint=host:29500", "rdzv_endpoint: host:29500"),
    ("ingest.synthetic_dir=null", "synthetic_dir:  "),
    ("ingest.class_map.lymphoblast=pro", "lymphoblast: pro"),
]


@pytest.mark.parametrize(("override", "new_line"), OVERRIDES, ids=[o for o, _ in OVERRIDES])
def test_dvcs_set_param_changes_one_line(tmp_path, override, new_line):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(PARAMS, path)
    apply_overrides(str(path), [override])
    diff = [
        line
        for line in difflib.unified_diff(PARAMS.read_text().splitlines(), path.read_text().splitlines(), lineterm="")
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert len(diff) == 2 and diff[0][0] == "-" and diff[1][0] == "+", "\n".join(diff)
    assert diff[1][1:].strip().startswith(new_line.strip()), diff


def test_dvcs_set_param_with_the_current_value_changes_nothing(tmp_path):
    """The whole file is a fixed point of DVC's rewrite (every null, list, quote and comment)."""
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    shutil.copy(PARAMS, path)
    apply_overrides(str(path), ["curriculum.jsd_start=0.03", "train.epochs=30"])
    assert path.read_text() == PARAMS.read_text()


def test_dvc_exp_run_set_param_leaves_a_one_line_diff(tmp_path):
    """The real command of docs/params.md, "Changing a value": `dvc exp run -S ... demo`, then
    `git diff --stat`, in a git repo holding this params.yaml and a `demo` stage that does nothing."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def sh(*args: str) -> str:
        result = subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    shutil.copy(PARAMS, tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text("stages:\n  demo:\n    cmd: python -c pass\n    params:\n      - demo\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh(*git, "add", "params.yaml", "dvc.yaml", ".dvc")
    sh(*git, "commit", "-qm", "init")

    sh("dvc", "exp", "run", "-S", "curriculum.jsd_start=0.05", "demo")

    stat = sh("git", "diff", "--stat")
    assert stat.splitlines() == [" params.yaml | 2 +-", " 1 file changed, 1 insertion(+), 1 deletion(-)"], stat
    changed = [line for line in sh("git", "diff").splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert [line.split("#")[0].strip() for line in changed] == ["-  jsd_start: 0.03", "+  jsd_start: 0.05"]
