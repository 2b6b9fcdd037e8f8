"""The OOD detector (entromix.evaluation.ood) on features with a known answer, its safe round trip
through a checkpoint, and the reference preprocessing (entromix.prediction.preprocess) against
predict's own reading of a JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from entromix.common.errors import DataError
from entromix.evaluation.ood import KNN_K, OodDetector, fit_ood_detector


def fit(score: str, train: np.ndarray, labels: np.ndarray, val: np.ndarray, quantile: float):
    """fit_ood_detector on one stage's features (K, M, D), as the ``penultimate`` features."""
    return fit_ood_detector(score, {"penultimate": train}, labels, {"penultimate": val}, quantile, "penultimate")


def pen(features: np.ndarray) -> dict[str, np.ndarray]:
    return {"penultimate": features}


def _features(rng: np.random.Generator, n: int, shift: float = 0.0, members: int = 2, dim: int = 16) -> np.ndarray:
    """(members, n, dim): two classes around +-1 on the first axis; ``shift`` moves them all away."""
    labels = np.arange(n) % 2
    centre = np.zeros((n, dim))
    centre[:, 0] = np.where(labels == 1, 1.0, -1.0)
    centre[:, 1] += shift
    return np.stack([centre + 0.3 * rng.normal(size=(n, dim)) for _ in range(members)])


@pytest.mark.parametrize("score", ["mahalanobis", "knn"])
def test_the_threshold_flags_the_val_quantile_and_separates_shifted_features(score):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    train, val, test = _features(rng, 200), _features(rng, 200), _features(rng, 400)
    shifted = _features(rng, 100, shift=3.0)
    if score == "knn":  # cosine distance ignores the scale: move the shifted ones to another direction
        shifted = shifted[:, :, ::-1].copy()
    detector, val_distances = fit(score, train, np.arange(200) % 2, val, 0.975)
    assert detector.val_flag_rate == pytest.approx(0.025, abs=0.006)  # 5 of 200 above the 0.975 quantile
    assert np.array_equal(detector.flags(val_distances), val_distances > detector.threshold)
    assert detector.flags(detector.distances(pen(test))).mean() < 0.06  # the same distribution: ~2.5%
    d_in, d_out = detector.distances(pen(test)), detector.distances(pen(shifted))
    auroc = roc_auc_score(np.r_[np.zeros(len(d_in)), np.ones(len(d_out))], np.r_[d_in, d_out])
    assert auroc > 0.99 and detector.flags(d_out).mean() > 0.9


def test_mahalanobis_is_the_nearest_class_distance_averaged_over_members_and_scaled_by_val():
    rng = np.random.default_rng(1)
    train, labels, val = _features(rng, 100), np.arange(100) % 2, _features(rng, 20)
    detector, val_distances = fit("mahalanobis", train, labels, val, 0.9)
    stage = detector.stages[0]

    def by_hand(x):
        raw = []
        for k in range(2):
            diff = x[k][:, None, :] - stage.means[k][None]  # (N, C, D)
            raw.append(np.einsum("ncd,de,nce->nc", diff, stage.precision[k], diff).min(1))
        return np.mean(raw, axis=0)

    assert stage.scale == pytest.approx(np.median(by_hand(val)))  # 1.0 = a typical val image
    assert np.median(val_distances) == pytest.approx(1.0)
    x = _features(rng, 5)
    np.testing.assert_allclose(detector.distances(pen(x)), by_hand(x) / stage.scale, rtol=1e-10)


def test_stages_are_averaged_after_scaling_each_by_its_val_median():
    rng = np.random.default_rng(7)
    labels = np.arange(80) % 2
    small, big = _features(rng, 80, dim=4), 100 * _features(rng, 80, dim=32)  # very different raw scales
    val = {"a": _features(rng, 40, dim=4), "b": 100 * _features(rng, 40, dim=32)}
    detector, _ = fit_ood_detector("mahalanobis", {"a": small, "b": big}, labels, val, 0.975)
    query = {"a": _features(rng, 6, dim=4), "b": 100 * _features(rng, 6, dim=32)}
    per_stage = [s.raw(query[s.name]) / s.scale for s in detector.stages]
    np.testing.assert_allclose(detector.distances(query), np.mean(per_stage, axis=0))
    assert [s.name for s in detector.stages] == ["a", "b"] and detector.features == "stages"
    with pytest.raises(DataError, match="no b features"):
        detector.distances({"a": query["a"]})


def test_knn_is_the_cosine_distance_to_the_kth_nearest_training_image():
    rng = np.random.default_rng(2)
    train = _features(rng, 50, members=1)
    detector, _ = fit("knn", train, np.arange(50) % 2, _features(rng, 10, members=1), 0.9)
    x = _features(rng, 3, members=1)
    unit = train[0] / np.linalg.norm(train[0], axis=1, keepdims=True)
    q = x[0] / np.linalg.norm(x[0], axis=1, keepdims=True)
    expected = np.sort(1 - q @ unit.T, axis=1)[:, KNN_K - 1] / detector.stages[0].scale
    np.testing.assert_allclose(detector.distances(pen(x)), expected, rtol=1e-5)  # float32 storage


@pytest.mark.parametrize("score", ["mahalanobis", "knn"])
def test_the_detector_travels_in_a_weights_only_checkpoint(tmp_path, score):
    rng = np.random.default_rng(3)
    detector, val = fit(score, _features(rng, 60), np.arange(60) % 2, _features(rng, 30), 0.975)
    torch.save({"ood": detector.to_checkpoint()}, tmp_path / "m.pt")
    back = OodDetector.from_checkpoint(torch.load(tmp_path / "m.pt", weights_only=True)["ood"])
    assert (back.score, back.threshold, back.n_train, back.n_val) == (score, detector.threshold, 60, 30)
    # the threshold was computed from the float32 statistics the checkpoint keeps: the same distances back
    query = _features(rng, 30)
    np.testing.assert_allclose(back.distances(pen(query)), detector.distances(pen(query)), rtol=1e-12)
    assert np.array_equal(back.flags(val), detector.flags(val))
    assert back.distances(pen(query[:, :0])).shape == (0,)


def test_a_malformed_or_mismatched_detector_is_a_clear_error():
    with pytest.raises(DataError, match="not an entromix OOD detector"):
        OodDetector.from_checkpoint({"score": "pickle", "features": "stages"})
    broken = {"score": "mahalanobis", "features": "stages", "threshold": 1.0, "quantile": 0.9}
    with pytest.raises(DataError, match="lacks stages.precision"):
        OodDetector.from_checkpoint({**broken, "stages": [{"name": "a", "scale": 1.0, "means": torch.ones(1)}]})
    rng = np.random.default_rng(4)
    detector, _ = fit("mahalanobis", _features(rng, 40), np.arange(40) % 2, _features(rng, 10), 0.9)
    with pytest.raises(DataError, match="2 ensemble member"):
        detector.distances(pen(_features(rng, 5, members=3)))
    with pytest.raises(DataError, match="every label"):
        fit("mahalanobis", _features(rng, 40), np.full(40, 1), _features(rng, 10), 0.9)


def test_the_capture_takes_each_members_stages_from_the_forward_pass_predict_runs():
    """ResNet stages pooled to channel means, per ensemble member; the last stage's means are the
    penultimate features (the input of fc)."""
    from entromix.evaluation.ood import capture_features
    from entromix.modeling.ensemble import build_ensemble
    from entromix.modeling.fit import predict_logits
    from entromix.modeling.models import build_model

    torch.manual_seed(0)
    model = build_ensemble(lambda: build_model("resnet18", 2, 32), 2).eval()
    images = np.random.default_rng(8).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    with capture_features(model, "stages") as stages:
        logits = predict_logits(model, images, cpu, 32, batch_size=2)
    with capture_features(model, "penultimate") as penultimate:
        again = predict_logits(model, images, cpu, 32, batch_size=2)
    got, last = stages.arrays(), penultimate.arrays()
    assert list(got) == ["layer1", "layer2", "layer3", "layer4"] and np.array_equal(logits, again)
    assert [got[n].shape for n in got] == [(2, 5, 64), (2, 5, 128), (2, 5, 256), (2, 5, 512)]
    np.testing.assert_allclose(got["layer4"], last["penultimate"], atol=1e-5)
    assert not model.members[0].layer1._forward_hooks  # the hooks are gone afterwards


def test_the_reference_preprocessing_is_predicts_reading_of_a_jpeg(tmp_path):
    """A 300 px JPEG to the stored 64 px, then to a 32 px model input: load_images gives what predict
    feeds the network (read_images, then the batch preparation without the normalisation)."""
    from entromix.modeling.augment import to_float
    from entromix.prediction.predict import read_images
    from entromix.prediction.preprocess import load_image, load_images

    rng = np.random.default_rng(5)
    smooth = np.kron(rng.integers(0, 255, (30, 30, 3)), np.ones((10, 10, 1))).astype(np.uint8)
    path = tmp_path / "cell.jpg"
    Image.fromarray(smooth).save(path, quality=90)
    preprocess = {"stored_size": 64, "resize_mode": "stretch", "image_size": 32, "mean": [0.5] * 3, "std": [0.2] * 3}
    pixels, kept, skipped = read_images([path], preprocess, "error", progress=False)
    expected = to_float(torch.from_numpy(pixels), 32).numpy()
    got = load_images([path], preprocess)
    assert got.shape == (1, 3, 32, 32) and got.dtype == np.float32 and np.array_equal(got, expected)
    assert np.array_equal(load_image(path, preprocess), expected[0])
    with Image.open(path) as im:  # what the issue saw: a plain bilinear resize is not the same input
        plain = np.asarray(im.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(plain.astype(int) - pixels[0].astype(int)).max() > 0


def test_the_reference_preprocessing_reads_the_export_description_and_names_bad_files(tmp_path):
    import json

    from entromix.prediction.preprocess import load_images, settings

    description = {"input": {"shape": ["batch", 3, 24, 24], "stored_size": 48, "resize_mode": "pad"}}
    (tmp_path / "m.json").write_text(json.dumps(description))
    assert settings(tmp_path / "m.json")["image_size"] == 24 and settings(description)["intensity"] == "fixed16"
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(DataError, match="bad.png"):
        load_images([tmp_path / "bad.png"], description)
    with pytest.raises(DataError, match="cannot read the export's description"):
        settings(tmp_path / "missing.json")
    with pytest.raises(DataError, match="lacks"):
        settings({"input": {"shape": [1, 3, 8, 8]}})


def test_rows_go_back_into_the_input_order():
    from entromix.prediction.predict import _positions

    files = [Path(x) for x in ("a", "bad", "b", "a", "bad2")]
    assert _positions(files, [Path("a"), Path("b"), Path("a")]) == [0, 2, 3]
    assert _positions(files, []) == []


def test_the_ood_report_script_measures_the_flag_from_two_predict_csvs(tmp_path):
    """scripts/ood_report.py, the command docs/using-the-model.md gives for the leukemia figures."""
    import json
    import subprocess
    import sys

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    rng = np.random.default_rng(6)
    detector, _ = fit("mahalanobis", _features(rng, 60), np.arange(60) % 2, _features(rng, 40), 0.975)
    torch.save({"ood": detector.to_checkpoint()}, tmp_path / "model.pt")
    in_dist = pd.DataFrame({"path": list("abcd"), "ood_distance": [1.0, 2.0, 3.0, 9.0], "ood": [0, 0, 0, 1]})
    foreign = pd.DataFrame({"path": list("efg"), "ood_distance": [2.5, 8.0, 10.0], "ood": [0, 1, 1]})
    in_dist["error"], foreign["error"] = "", ""
    foreign.loc[3] = ["broken.png", None, None, "not a readable image"]
    in_dist.to_csv(tmp_path / "in.csv", index=False)
    foreign.to_csv(tmp_path / "ood.csv", index=False)
    command = [sys.executable, str(root / "scripts" / "ood_report.py"), "--in-dist", str(tmp_path / "in.csv")]
    command += ["--ood", str(tmp_path / "ood.csv"), "--model", str(tmp_path / "model.pt"), "--json", "r.json"]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    # (in, foreign) pairs ranked right: 2.5 beats 1 and 2, 8 beats 1, 2 and 3, 10 beats all four: 9 of 12
    assert report["auroc"] == 0.75
    assert (report["in_dist_flag_rate"], report["ood_flag_rate"]) == (0.25, pytest.approx(0.6667, abs=1e-4))
    assert (report["n_in_dist"], report["n_ood"], report["unreadable_ood"]) == (4, 3, 1)
    assert report["model"]["threshold"] == pytest.approx(detector.threshold, abs=1e-4)
    assert "AUROC 0.75" in proc.stdout and "of 40 val images" in proc.stdout
    old = pd.DataFrame({"path": ["a"], "p_malignant": [0.5]})
    old.to_csv(tmp_path / "old.csv", index=False)
    bad = subprocess.run(
        [*command[:2], "--in-dist", "old.csv", "--ood", "ood.csv"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "no ood_distance, ood, error column" in bad.stderr
