"""entromix predict / export on a tiny project that ran every stage: predict gives evaluate's
probabilities image by image, checkpoints describe themselves, exports match PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from in_process import cli_in_process, stage_in_process
from tiny_project import copy_finished, run_stage

from entromix.common.errors import DataError
from entromix.prediction.predict import find_images
from entromix.training.checkpoints import CHECKPOINT_KEYS, load_checkpoint, load_trained_model

pytestmark = pytest.mark.slow  # the session's finished project: ingest, score, train (2 epochs), evaluate
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def project(finished_project, tmp_path_factory) -> Path:
    """A copy of the session's finished tiny project (these tests write predictions and an inbox into it)."""
    return copy_finished(finished_project, tmp_path_factory.mktemp("predict") / "project")


def cli(project: Path, *args: str) -> subprocess.CompletedProcess:
    """The entromix command, run in this process (no torch import per call); the first test runs it
    as a real process, ``python -m entromix.cli``."""
    return cli_in_process(project, *args)


def cli_process(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "entromix.cli", *args], cwd=project, capture_output=True, text=True)


def test_predict_gives_evaluates_probabilities_image_by_image(project):
    test = pd.read_csv(project / "data/predictions/test.csv")
    proc = cli_process(project, "predict", *test["filename"], "--out", "out/preds.csv", "--quiet")
    assert proc.returncode == 0, proc.stderr
    preds = pd.read_csv(project / "out/preds.csv")
    assert list(preds.columns) == ["path", "p_malignant", "prediction", "label", "ood_distance", "ood", "error"]
    assert preds["error"].isna().all() and set(preds["ood"]) <= {0, 1}
    assert preds["path"].tolist() == test["filename"].tolist()
    assert np.abs(preds["p_malignant"].to_numpy() - test["probability"].to_numpy()).max() <= 1e-6
    assert preds["prediction"].tolist() == test["prediction"].tolist()  # at the tuned threshold
    assert "tuned on val" in proc.stderr


def test_a_folder_is_walked_and_extra_columns_are_added(project):
    proc = cli(project, "predict", "data/real", "--out", "all.csv", "--quiet", "--per-class", "--uncertainty", "tta")
    assert proc.returncode == 0, proc.stderr
    preds = pd.read_csv(project / "all.csv")
    assert len(preds) == len(find_images([project / "data/real"])[0])
    assert np.allclose(preds["p_benign"] + preds["p_malignant"], 1.0, atol=2e-6)
    assert (preds["tta_std"] >= 0).all() and preds["tta_std"].max() > 0
    no_dropout = cli(project, "predict", "data/real", "--out", "x.csv", "--quiet", "--uncertainty", "mc-dropout")
    assert no_dropout.returncode == 2 and "no dropout layer" in no_dropout.stderr
    assert not (project / "x.csv").exists()


def test_bad_images_are_skipped_and_reported_or_stop_before_writing(project, tmp_path):
    folder = tmp_path / "new"
    folder.mkdir()
    good = sorted((project / "data/real").rglob("*.png"))[:2]
    for i, path in enumerate(good):
        (folder / f"good{i}.png").write_bytes(path.read_bytes())
    (folder / "broken.png").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "p.csv"
    stop = cli(project, "predict", str(folder), "--out", str(out), "--bad-images", "error", "--quiet")
    assert stop.returncode == 2 and "broken.png" in stop.stderr and "Traceback" not in stop.stderr
    assert not out.exists()
    # the default: every file gets a row, in the order found; unreadable ones say why, and exit 3 says so
    skip = cli(project, "predict", str(folder), "--out", str(out), "--quiet")
    assert skip.returncode == 3, skip.stderr
    rows = pd.read_csv(out, keep_default_na=False)
    assert [Path(p).name for p in rows["path"]] == ["broken.png", "empty.jpg", "good0.png", "good1.png"]
    assert rows["error"].astype(bool).tolist() == [True, True, False, False]
    assert "empty" in rows["error"][1] and rows["p_malignant"][0] == "" and rows["label"][0] == ""
    assert "2 unreadable" in skip.stderr and "broken.png" in skip.stderr and "exit code 3" in skip.stderr
    named = cli(project, "predict", str(folder / "good0.png"), str(folder / "broken.png"), "--out", str(out), "--quiet")
    assert named.returncode == 3 and pd.read_csv(out)["path"].tolist() == [
        str(folder / "good0.png"),
        str(folder / "broken.png"),
    ]
    none = cli(project, "predict", str(folder / "broken.png"), "--out", str(out), "--quiet")
    assert none.returncode == 3 and len(pd.read_csv(out)) == 1 and "0 image(s)" in none.stderr
    missing = cli(project, "predict", str(tmp_path / "nowhere"), "--out", str(out), "--quiet")
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr


def test_predict_reads_and_classifies_a_chunk_of_files_at_a_time(project, tmp_path, monkeypatch):
    """Issue 36: predict_files decodes and classifies PREDICT_CHUNK files at a time, so memory does
    not grow with the number of files. Chunks of 3 give the one-chunk answer (TTA and per-class
    columns included), and an unreadable file in the first and in the last chunk is named by the
    error (bad_images error) or skipped with the rest classified (skip)."""
    import entromix.prediction.predict as predict

    trained = load_trained_model(project / "models/deploy/model.pt", None, CPU)
    files = sorted((project / "data/real").rglob("*.png"))[:10]
    whole = predict.predict_files(trained, files, None, True, "tta", progress=False)
    monkeypatch.setattr(predict, "PREDICT_CHUNK", 3)
    chunked = predict.predict_files(trained, files, None, True, "tta", progress=False)
    pd.testing.assert_frame_equal(chunked.frame, whole.frame, check_exact=False, atol=1e-6)
    broken = [tmp_path / "first.png", tmp_path / "last.png"]
    for path in broken:
        path.write_text("not an image")
    mixed = [broken[0], *files[:4], broken[1]]
    with pytest.raises(DataError, match=r"2 file\(s\) cannot be read") as err:
        predict.predict_files(trained, mixed, bad_images="error", progress=False)
    assert "first.png" in str(err.value) and "last.png" in str(err.value)
    skipped = predict.predict_files(trained, mixed, bad_images="skip", progress=False)
    assert skipped.frame["path"].tolist() == [str(f) for f in mixed] and len(skipped.skipped) == 2  # a row each
    assert (skipped.frame["error"] != "").tolist() == [True, False, False, False, False, True]
    columns = ["path", "p_malignant", "prediction", "label", "ood_distance", "ood"]
    readable = skipped.frame[skipped.frame["error"] == ""][columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(readable, whole.frame[columns][:4], check_exact=False, atol=1e-6, check_dtype=False)


def test_the_deployed_checkpoint_describes_itself(project):
    import json

    ckpt = load_checkpoint(project / "models/deploy/model.pt")
    assert set(CHECKPOINT_KEYS) <= set(ckpt)
    ingest = json.loads((project / "data/prepared/ingest_config.json").read_text())
    assert ckpt["preprocess"]["stored_size"] == ingest["image_size"]
    assert ckpt["preprocess"]["resize_mode"] == ingest["resize_mode"]
    assert ckpt["preprocess"]["intensity"] == ingest["intensity"] == "fixed16"
    assert ckpt["labels"] == ["benign", "malignant"] and ckpt["model_name"] == "resnet18"
    metrics = json.loads((project / "metrics/evaluate.json").read_text())["evaluate"]["threshold"]
    assert ckpt["threshold"]["value"] == pytest.approx(metrics["tuned"], abs=1e-4)
    assert ckpt["threshold"]["target_sensitivity"] == metrics["target_sensitivity"]
    assert ckpt["provenance"]["params"]["train"]["epochs"] == 2 and "torch" in ckpt["provenance"]
    best = load_checkpoint(project / "models/train/best.pt")
    assert best["threshold"] is None and best["temperature"] == 1.0


def test_an_old_or_foreign_checkpoint_is_a_clear_error(project, tmp_path):
    best = torch.load(project / "models/train/best.pt", weights_only=True)
    old = {k: best[k] for k in ("model", "model_name", "num_classes", "image_size", "labels", "epoch")}
    torch.save(old, tmp_path / "old.pt")
    proc = cli(project, "predict", "data/real", "--model", str(tmp_path / "old.pt"), "--out", "o.csv", "--quiet")
    assert proc.returncode == 2 and "older entromix" in proc.stderr and "preprocess" in proc.stderr
    torch.save({"weights": best["model"]}, tmp_path / "foreign.pt")
    with pytest.raises(DataError, match="another program"):
        load_checkpoint(tmp_path / "foreign.pt")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_with_the_reference_preprocessing_reproduces_predict(project, tmp_path, fmt):
    """What docs/using-the-model.md shows: load_images(files, the export's JSON) + the exported model
    gives predict's probabilities (the CSV's, not only PyTorch's on the prepared array)."""
    import json
    import warnings

    from entromix.prediction.preprocess import load_images

    out = tmp_path / f"model.{fmt}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = cli(project, "export", "--format", fmt, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    # torch.jit.trace's three FutureWarnings give way to one line of export's own
    assert not [w for w in caught if "deprecated" in str(w.message)]
    assert ("TorchScript is deprecated" in proc.stderr) == (fmt == "torchscript")
    described = json.loads(Path(str(out) + ".json").read_text())
    assert described["output"]["labels"] == ["benign", "malignant"] and described["threshold"]["value"] > 0
    assert described["output"]["positive_labels"] == ["malignant"]
    assert described["input"]["reference_preprocessing"] == "entromix.prediction.preprocess.load_images"
    files = pd.read_csv(project / "data/predictions/test.csv")["filename"].tolist()
    predicted = cli(project, "predict", *files, "--out", str(tmp_path / "p.csv"), "--quiet", "--per-class")
    assert predicted.returncode == 0, predicted.stderr
    expected = pd.read_csv(tmp_path / "p.csv")[["p_benign", "p_malignant"]].to_numpy()
    x = load_images([project / f for f in files], Path(str(out) + ".json"))  # (N, 3, S, S) in [0, 1]
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {"images": x})[0]
    else:
        got = torch.jit.load(str(out))(torch.from_numpy(x)).detach().numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1e-4


def test_the_ood_flag_is_calibrated_on_val_and_flags_foreign_images(project, tmp_path):
    """evaluate stores the detector (tensors only) with a threshold that flags ~2.5% of val; predict
    gives the val images evaluate's distances and flags images unlike the training data."""
    import json

    from PIL import Image

    from entromix.evaluation.ood import OodDetector

    ckpt = torch.load(project / "models/deploy/model.pt", weights_only=True)
    detector = OodDetector.from_checkpoint(ckpt["ood"])
    assert (detector.score, detector.features) == ("mahalanobis", "stages")
    assert [s.name for s in detector.stages] == ["layer1", "layer2", "layer3", "layer4"]
    assert all(s.means.shape[0] == 2 for s in detector.stages)  # the tiny project's 2 members
    ood = json.loads((project / "metrics/evaluate.json").read_text())["evaluate"]["ood"]
    assert ood["threshold"] == pytest.approx(detector.threshold, abs=1e-4)
    # the 0.975 quantile of n val distances leaves at most ceil(0.025 n) above it (1 of the tiny project's few)
    assert 0 < detector.val_flag_rate <= np.ceil(0.025 * detector.n_val) / detector.n_val
    val = pd.read_csv(project / "data/predictions/val.csv")["filename"].tolist()
    folder = tmp_path / "foreign"
    folder.mkdir()
    for i, grey in enumerate((120, 160, 200, 240)):  # flat colours: nothing like the tiny project's noise images
        Image.fromarray(np.full((64, 64, 3), grey, dtype=np.uint8)).save(folder / f"odd{i}.png")
    proc = cli(project, "predict", *val, str(folder), "--out", str(tmp_path / "v.csv"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(tmp_path / "v.csv")
    in_dist, foreign = rows[: len(val)], rows[len(val) :]
    assert in_dist["ood"].mean() == pytest.approx(detector.val_flag_rate)  # the same distances as evaluate's
    assert (in_dist["ood_distance"] > detector.threshold).sum() == in_dist["ood"].sum()
    assert foreign["ood"].tolist() == [1, 1, 1, 1] and f"{int(rows['ood'].sum())} flagged" in proc.stderr
    best = cli(project, "predict", str(folder), "--model", "models/train/best.pt", "--out", "b.csv", "--quiet")
    assert best.returncode == 0 and "no OOD flag" in best.stderr
    assert pd.read_csv(project / "b.csv")["ood"].isna().all()


def test_evaluate_writes_a_model_card_from_the_metrics(project):
    import json

    card = (project / "models/deploy/MODEL_CARD.md").read_text(encoding="utf-8")
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())["evaluate"]
    ingest = json.loads((project / "metrics/ingest.json").read_text())["ingest"]
    assert "Not a medical device and not for diagnosis" in card
    assert f"ROC-AUC {evaluate['test']['roc_auc']:.4f}" in card
    assert f"Tuned threshold {evaluate['threshold']['tuned']:.4f}" in card
    real_train = ingest["real"]["train"]
    assert f"| real train | {real_train['benign']} | {real_train['malignant']} | {real_train['total']} |" in card
    assert "| Early | malignant |" in card and "Synthetic images admitted per epoch" in card
    checksums = json.loads((project / "data/prepared/checksums.json").read_text())
    assert f"manifest sha256 `{checksums['manifest.csv']['sha256'][:16]}`" in card  # which data
    assert "reached on val: val sensitivity" in card and "True" not in card
    assert "resized to 16 px (stretch);" in card  # one resize: ingest's size is the model's


def test_the_predict_stage_classifies_the_inbox_and_writes_a_header_for_an_empty_one(project):
    inbox = project / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "README.md").write_text("not an image")
    proc = run_stage(project, "predict")
    assert proc.returncode == 0, proc.stderr
    header = "path,p_malignant,prediction,label,ood_distance,ood,error"
    assert (project / "data/predictions/inbox.csv").read_text().strip() == header
    for i, path in enumerate(sorted((project / "data/real").rglob("*.png"))[:3]):
        (inbox / f"new{i}.png").write_bytes(path.read_bytes())
    proc = stage_in_process(project, "predict")
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_csv(project / "data/predictions/inbox.csv")
    assert rows["path"].tolist() == [f"inbox/new{i}.png" for i in range(3)]
    direct = cli(project, "predict", "inbox", "--out", "direct.csv", "--quiet")
    assert direct.returncode == 0 and pd.read_csv(project / "direct.csv").equals(rows)
    # an unreadable file gets its row and the stage still succeeds (the CLI would exit 3)
    (inbox / "new9.png").write_text("not an image")
    proc = stage_in_process(project, "predict")
    assert proc.returncode == 0 and "1 unreadable" in proc.stdout, proc.stderr
    rows = pd.read_csv(project / "data/predictions/inbox.csv", keep_default_na=False)
    assert rows["path"].tolist()[-1] == "inbox/new9.png" and rows["error"].astype(bool).tolist() == [0, 0, 0, 1]


def test_git_revision_marks_modified_code_only(tmp_path):
    from entromix.common.provenance import git_revision

    assert git_revision(tmp_path) is None  # not a repository
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("a\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    (tmp_path / "dvc.lock").write_text("b\n")  # what a running `dvc repro` changes
    assert git_revision(tmp_path) == head
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_revision(tmp_path) == head + "-modified"


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as im:
        return im.size


def test_evaluate_draws_the_gallery_and_gradcam_of_the_run(project):
    figures = project / "plots/evaluate/figures"
    placeholder = (704, 242)  # figures.plot_message: a picture that says why it is empty
    gallery = _png_size(figures / "synthetic_gallery.png")
    assert gallery != placeholder and gallery[1] == 572  # four rows of synthetic tiles
    assert _png_size(figures / "synthetic_tiers.png") == (704, 192)  # no tiers file: the pool as one histogram
    width, height = _png_size(figures / "gradcam.png")
    assert width == 957 and height > placeholder[1]


def test_gradcam_explains_the_model_evaluate_scored(project):
    from entromix.common.stage_io import load_prepared
    from entromix.evaluation.gradcam import cam_layer, gradcam_maps

    prepared = load_prepared(project / "data/prepared")
    trained = load_trained_model(project / "models/train/best.pt", prepared.labels, CPU)
    test = prepared.manifest[(prepared.manifest["is_syn"] == 0) & (prepared.manifest["split"] == "test")]
    images = prepared.images[test["id"].to_numpy()]
    evaluated = pd.read_csv(project / "data/predictions/test.csv")["probability"].to_numpy()
    assert np.abs(trained.malignant_probability(images) - evaluated).max() < 1e-5  # the same model and input
    target = cam_layer(trained.model, "resnet18", trained.image_size, CPU)
    # 16 px: the deepest stage with a 4x4 map, in each of the tiny project's 2 members
    assert (target.name, target.side, len(target.targets)) == ("layer1[-1] of each of 2 members", 4, 2)
    maps, shown = gradcam_maps(trained.model, target.targets, images, [1] * len(images), 16, trained.channels_last, CPU)
    assert maps.shape == (len(images), 16, 16) and shown.shape == (len(images), 16, 16, 3)
    assert sum(m.std() > 0.01 for m in maps) >= len(images) - 1
    assert np.abs(trained.malignant_probability(images) - evaluated).max() < 1e-5  # Grad-CAM changed nothing
