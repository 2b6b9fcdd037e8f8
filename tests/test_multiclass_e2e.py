"""End to end with four labels and self-training: the real `dvc repro` in a temporary git repo.

The data are small generated folders (no test reads real data): benign and three malignant
subtypes (Early, Pre, Pro) in train/val/test, a synthetic pool of the subtypes, and a folder of
unlabelled images. ``ingest.labels`` lists the four labels, ``positive_labels`` the three
subtypes, and ``curriculum.pseudo_labels`` is on, so every stage runs its K-class path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_folder
from test_pipeline_e2e import GIT, TINY, copy_project, ran, set_params, sh

pytestmark = pytest.mark.slow

LABELS = ["benign", "early", "pre", "pro"]
FOLDERS = {"Benign": "benign", "Early": "early", "Pre": "pre", "Pro": "pro"}
REAL = {"train": [16, 6, 6, 6], "val": [6, 3, 3, 3], "test": [6, 3, 3, 3]}
UNLABELLED = 9


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("e2e4") / "project"
    copy_project(repo)
    data = repo / "data" / "four"
    counts = {f"{split}/{folder}": n for split, ns in REAL.items() for folder, n in zip(FOLDERS, ns)}
    make_folder(data / "real", counts, seed=11)
    make_folder(data / "synthetic", {"Early": 3, "Pre": 3, "Pro": 3}, seed=12)
    make_folder(data / "unlabelled", {"batch": UNLABELLED}, seed=13)
    make_folder(repo / "inbox", {"new": 2}, seed=14)
    set_params(repo, TINY)
    set_params(
        repo,
        {
            "ingest": {
                "data_root": "data/four",
                "unlabelled_dir": "unlabelled",
                "groups_csv": None,
                "tiers_csv": None,
                "labels": LABELS,
                "positive_labels": ["early", "pre", "pro"],
                "class_map": FOLDERS,
                "scarce_label": ["early", "pre", "pro"],
            },
            "curriculum": {"pseudo_labels": True, "pseudo_threshold": 0.3},
        },
    )
    sh(["git", "init", "-q"], repo)
    sh(GIT + ["add", "-A"], repo)
    sh(GIT + ["commit", "-qm", "init"], repo)
    return repo


def test_four_labels_and_self_training_run_through_dvc_repro(repo):
    out = sh(["dvc", "repro"], repo)
    assert ran(out) == {"demo", "ingest", "score", "train", "evaluate", "predict"}
    manifest = pd.read_csv(repo / "data/prepared/manifest.csv", keep_default_na=False)
    assert sorted(manifest.loc[manifest["split"] != "unlabelled", "label"].unique()) == [0, 1, 2, 3]
    assert ((manifest["split"] == "unlabelled") == (manifest["label"] == -1)).all()
    assert (manifest["split"] == "unlabelled").sum() == UNLABELLED
    ingest = json.loads((repo / "metrics/ingest.json").read_text())["ingest"]
    assert ingest["unlabelled"] == UNLABELLED and ingest["real"]["test"]["pro"] == 3

    # score: K-class scorer; the unlabelled images are not scored (they have no label to score against)
    dataset = pd.read_csv(repo / "data/dataset.csv")
    assert set(dataset["label"]) == {0, 1, 2, 3} and dataset["jsd_score"].between(0, 1).all()
    assert not dataset["id"].isin(manifest.loc[manifest["split"] == "unlabelled", "id"]).any()
    score = json.loads((repo / "metrics/score.json").read_text())["score"]
    assert {"oof_auc", "oof_auc_ovr_macro"} <= set(score)

    # train: a 4-class head, the binary view recorded, the unlabelled pool pseudo-labelled after warmup
    ckpt = torch.load(repo / "models/train/best.pt", weights_only=True)
    assert ckpt["num_classes"] == 4 and ckpt["labels"] == LABELS
    heads = [v for k, v in ckpt["model"].items() if k.endswith("fc.weight")]
    assert ckpt["positive_labels"] == ["early", "pre", "pro"] and len(heads) == ckpt["ensemble"]
    assert all(head.shape[0] == 4 for head in heads)
    train = json.loads((repo / "metrics/train.json").read_text())["train"]
    assert train["pseudo_labels"]["pool"] == UNLABELLED
    history = pd.read_csv(repo / "plots/train/history.csv")
    assert {"pseudo_accepted", "eligible_pseudo", "admitted_pseudo"} <= set(history.columns)
    assert history.loc[0, "pseudo_accepted"] == 0  # warmup: nothing labelled yet

    # evaluate: the binary view (malignant = any subtype) and the K-class metrics beside it
    evaluate = json.loads((repo / "metrics/evaluate.json").read_text())["evaluate"]["test"]
    n_test = sum(REAL["test"])
    assert evaluate["n"] == n_test and evaluate["n_malignant"] == sum(REAL["test"][1:])
    multi = evaluate["multiclass"]
    assert multi["labels"] == LABELS and np.array(multi["confusion"]).sum(1).tolist() == REAL["test"]
    assert set(multi["per_class"]) == set(LABELS) and multi["macro_f1"] is not None
    predictions = pd.read_csv(repo / "data/predictions/test.csv")
    assert set(predictions["label"]) == {0, 1} and len(predictions) == n_test
    assert {f"p_{name}" for name in LABELS} <= set(predictions.columns)
    summed = predictions[["p_early", "p_pre", "p_pro"]].sum(axis=1)
    assert np.allclose(summed, predictions["probability"], atol=2e-6)
    assert (repo / "plots/evaluate/figures/confusion_multiclass.png").stat().st_size > 1000
    card = (repo / "models/deploy/MODEL_CARD.md").read_text()
    assert "benign vs early+pre+pro" in card and "| pro | 3 |" in card

    # predict: P(malignant) is the summed probability of the subtypes
    inbox = pd.read_csv(repo / "data/predictions/inbox.csv")
    assert list(inbox.columns)[:2] == ["path", "p_early+pre+pro"] and len(inbox) == 2
    assert set(inbox["label"]) <= {"benign", "early+pre+pro"}
    assert sh(["dvc", "status"], repo).strip().endswith("Data and pipelines are up to date.")
    shown = sh(["dvc", "metrics", "show"], repo)
    assert "multiclass.macro_f1" in shown and "pseudo_labels.pool" in shown
