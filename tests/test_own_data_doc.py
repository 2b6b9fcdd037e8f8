"""docs/own-data.md as a new user follows it: images laid out as its step 1 says, its params.yaml
snippet pasted as written, the smoke profile's sizes, then the real `dvc repro` to the end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import make_folder
from test_pipeline_e2e import GIT, TINY, copy_project, ran, set_params, sh

from entromix.common.profiles import load_profile

PROJECT = Path(__file__).resolve().parents[1]
DOC = PROJECT / "docs" / "own-data.md"
pytestmark = pytest.mark.slow


def doc_snippet() -> dict:
    """The YAML block after the `<!-- own-data snippet -->` marker, de-indented as a user pastes it."""
    text = DOC.read_text()
    found = re.search(r"<!-- own-data snippet -->\s*```yaml\n(.*?)```", text, re.S)
    assert found, f"{DOC}: the marked ingest snippet is missing"
    lines = found.group(1).splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return yaml.safe_load("\n".join(line[indent:] for line in lines))


def test_the_snippet_sets_every_data_specific_key():
    """Every ingest key whose shipped value describes the demo's data is in the snippet (the reason
    it once failed on tiers_csv)."""
    snippet = doc_snippet()["ingest"]
    shipped = yaml.safe_load((PROJECT / "params.yaml").read_text())["ingest"]
    demo_specific = {
        "data_root",
        "real_dir",
        "synthetic_dir",
        "unlabelled_dir",
        "groups_csv",
        "tiers_csv",
        "layout",
        "split",
        "labels",
        "positive_labels",
        "class_map",
        "scarce_label",
    }
    assert demo_specific <= set(snippet) <= set(shipped)


def test_own_data_as_documented_runs_to_the_end(tmp_path):
    repo = tmp_path / "project"
    copy_project(repo)
    set_params(repo, {name: TINY[name] for name in ("score", "curriculum", "train", "evaluate")})
    smoke = load_profile(PROJECT / "profiles" / "smoke.yaml")
    set_params(repo, {section: values for section, values in smoke.items() if section != "ingest"})
    set_params(repo, {"ingest": {"workers": 1, **smoke["ingest"]}})
    set_params(repo, doc_snippet())  # as written, over everything else
    sh(["git", "init", "-q"], repo)
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "init"], repo)
    data = repo / "data" / "mydata"  # step 1 of the page: flat, with a class folder to leave out
    make_folder(data / "real", {"Benign": 20, "Early": 4, "Pre": 3, "Pro": 3, "Normal": 5}, seed=1)
    make_folder(data / "synthetic", {"Early": 3, "Pro": 3}, seed=2)
    sh(["dvc", "add", "data/mydata"], repo)  # step 2
    sh(GIT + ["add", "data/mydata.dvc", "data/.gitignore"], repo)
    sh(GIT + ["commit", "-qm", "Add raw data"], repo)

    out = sh(["dvc", "repro"], repo)

    assert {"ingest", "score", "train", "evaluate"} <= ran(out)
    ingest = json.loads((repo / "metrics" / "ingest.json").read_text())["ingest"]
    assert ingest["excluded_by_class_map"] == {"real/Normal": 5}
    assert ingest["real"]["train"]["total"] + ingest["real"]["val"]["total"] + ingest["real"]["test"]["total"] == 30
    assert 15 <= ingest["real"]["train"]["total"] <= 18  # about 0.6 of each class folder (not the demo's 0.25)
    assert ingest["synthetic"]["total"] == 6
    evaluate = json.loads((repo / "metrics" / "evaluate.json").read_text())
    assert evaluate  # the last stage wrote its metrics
