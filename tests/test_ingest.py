"""The ingest stage's logic on tiny generated folders: splits, duplicates, leakage, the array."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_file, ingest_config, make_folder, write_image
from PIL import Image

from entromix.common.errors import DataError
from entromix.common.image_store import open_images
from entromix.data.decode import decode_images
from entromix.data.images import decode_image
from entromix.data.ingest_metrics import ingest_metrics
from entromix.data.prepare import MANIFEST_COLUMNS, plan_ingest


def run(config, tmp_path):
    plan = plan_ingest(config)
    manifest = decode_images(plan, tmp_path / "out" / "images.npy")
    return plan, manifest, open_images(tmp_path / "out" / "images.npy")


def test_flat_layout_stratified_manifest_and_array(flat_data, tmp_path):
    plan, manifest, images = run(ingest_config(flat_data), tmp_path)
    assert list(manifest.columns) == MANIFEST_COLUMNS
    assert manifest["id"].tolist() == list(range(len(manifest))) and images.shape == (45, 16, 16, 3)
    real = manifest[manifest["is_syn"] == 0]
    # 30 Benign -> 18/6/6, 6 Early -> 4/1/1 (largest remainder 3.6/1.2/1.2), 4 Pre -> 2/1/1
    assert real.groupby(["class", "split"]).size().to_dict() == {
        ("Benign", "test"): 6,
        ("Benign", "train"): 18,
        ("Benign", "val"): 6,
        ("Early", "test"): 1,
        ("Early", "train"): 4,
        ("Early", "val"): 1,
        ("Pre", "test"): 1,
        ("Pre", "train"): 2,
        ("Pre", "val"): 1,
    }
    assert set(manifest.loc[manifest["is_syn"] == 1, "split"]) == {"train"}
    assert manifest["label"].tolist() == [0 if c == "Benign" else 1 for c in manifest["class"]]
    # every array row is the decoded file that the manifest row names
    for row in manifest.sample(5, random_state=0).itertuples():
        expected = decode_image(f"{row.source}/{row.path}", 16).pixels
        np.testing.assert_array_equal(images[row.id], expected)
    assert (manifest["orig_width"] == 40).all() and (manifest["orig_mode"] == "RGB").all()


def test_pre_split_layout_keeps_the_given_splits(split_data, tmp_path):
    _, manifest, _ = run(ingest_config(split_data, class_map={"Benign": "benign", "Early": "malignant"}), tmp_path)
    real = manifest[manifest["is_syn"] == 0]
    assert (real["split"] == real["path"].str.split("/").str[0]).all()
    assert real["split"].value_counts().to_dict() == {"train": 12, "val": 5, "test": 5}


def test_same_seed_same_split_other_seed_other_split(flat_data):
    a = plan_ingest(ingest_config(flat_data, seed=1)).manifest
    b = plan_ingest(ingest_config(flat_data, seed=1)).manifest
    c = plan_ingest(ingest_config(flat_data, seed=2)).manifest
    pd.testing.assert_frame_equal(a, b)
    assert not a.set_index("path")["split"].equals(c.set_index("path")["split"])


def test_groups_csv_keeps_patients_in_one_split(tmp_path):
    root = tmp_path / "data"
    paths = make_folder(root / "real", {"Benign": 24, "Early": 12}, seed=5)
    rows = [(p.relative_to(root / "real").as_posix(), f"P{i // 3}") for i, p in enumerate(paths)]
    pd.DataFrame(rows, columns=["path", "group"]).to_csv(root / "groups.csv", index=False)
    config = ingest_config(root, synthetic_dir=None, groups_csv="groups.csv")
    manifest = plan_ingest(config).manifest
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert manifest["group"].nunique() == 12 and set(manifest["split"]) == {"train", "val", "test"}


def test_groups_csv_errors(tmp_path):
    root = tmp_path / "data"
    make_folder(root / "real", {"Benign": 3, "Early": 3}, seed=6)
    rows = [("Benign/img_000.png", "P1"), ("Benign/img_001.png", "P1"), ("Benign/missing.png", "P2")]
    pd.DataFrame(rows, columns=["path", "group"]).to_csv(root / "groups.csv", index=False)
    config = ingest_config(root, synthetic_dir=None, groups_csv="groups.csv")
    with pytest.raises(DataError, match="Benign/missing.png"):
        plan_ingest(config)
    pd.DataFrame(rows[:2], columns=["path", "group"]).to_csv(root / "groups.csv", index=False)
    with pytest.raises(DataError, match="4 image\\(s\\) have no group: Benign/img_002.png"):
        plan_ingest(config)


def test_duplicates_within_a_split_collapse_and_are_reported(flat_data, tmp_path):
    real = flat_data / "real"
    copy_file(real / "Benign" / "img_000.png", real / "Benign" / "zz_copy.png")
    copy_file(flat_data / "synthetic" / "Pre" / "img_000.png", flat_data / "synthetic" / "Pre" / "zz_copy.png")
    plan, manifest, _ = run(ingest_config(flat_data), tmp_path)
    assert len(manifest) == 45
    assert plan.duplicates[["path", "kept_path", "reason"]].values.tolist() == [
        ["Benign/zz_copy.png", "Benign/img_000.png", "within_split"],
        ["Pre/zz_copy.png", "Pre/img_000.png", "within_split"],
    ]
    metrics = ingest_metrics(plan)["ingest"]
    assert metrics["duplicates_dropped"] == {"within_split": 2, "across_splits": 0}
    assert metrics["folders"]["real/Benign"] == {
        "expected": 31,
        "found": 31,
        "duplicates_dropped": 1,
        "bad_images_skipped": 0,
        "ingested": 30,
        "ignored_files": 0,
    }


def test_same_image_in_two_splits_is_leakage(split_data, tmp_path):
    real = split_data / "real"
    copy_file(real / "train/Benign/img_000.png", real / "test/Benign/leak.png")
    config = ingest_config(split_data, class_map={"Benign": "benign", "Early": "malignant"})
    with pytest.raises(
        DataError, match="leakage.*real/test/Benign/leak.png \\[test\\] = real/train/Benign/img_000.png \\[train\\]"
    ):
        plan_ingest(config)
    plan = plan_ingest(ingest_config(split_data, class_map=config.class_map, duplicates_across="drop"))
    assert "test/Benign/leak.png" not in plan.manifest["path"].tolist()
    assert "train/Benign/img_000.png" in plan.manifest["path"].tolist()
    assert plan.duplicates["reason"].tolist() == ["across_splits"]


def test_real_image_in_the_synthetic_pool_is_leakage(flat_data):
    copy_file(flat_data / "real" / "Early" / "img_001.png", flat_data / "synthetic" / "Early" / "copy.png")
    with pytest.raises(DataError, match="synthetic/Early/copy.png"):
        plan_ingest(ingest_config(flat_data))
    plan = plan_ingest(ingest_config(flat_data, duplicates_across="drop"))
    assert "Early/copy.png" not in plan.manifest.loc[plan.manifest["is_syn"] == 1, "path"].tolist()
    assert ingest_metrics(plan)["ingest"]["duplicates_dropped"]["across_splits"] == 1


def test_same_file_under_two_labels_is_an_error(flat_data):
    copy_file(flat_data / "real" / "Benign" / "img_002.png", flat_data / "real" / "Early" / "x.png")
    with pytest.raises(DataError, match="under two labels"):
        plan_ingest(ingest_config(flat_data, duplicates_across="drop"))


def test_synthetic_images_never_go_to_val_or_test(flat_data):
    write_image(flat_data / "synthetic2" / "val" / "Pre" / "a.png", 99)
    write_image(flat_data / "synthetic2" / "train" / "Pre" / "b.png", 98)
    with pytest.raises(DataError, match="never go to val or test"):
        plan_ingest(ingest_config(flat_data, synthetic_dir="synthetic2"))


def test_corrupt_image_names_the_file_before_any_decoding(flat_data):
    (flat_data / "real" / "Benign" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        plan_ingest(ingest_config(flat_data))


def test_a_file_spoilt_after_the_check_is_caught_at_decode_and_names_the_file(flat_data, tmp_path):
    """The check reads every file before the split; a file truncated after it (a copy still running)
    is still refused by the decode step, by name, with no half-written array."""
    good = write_image(tmp_path / "whole.jpg", 5, size=(64, 64))
    data = good.read_bytes()
    (flat_data / "real" / "Benign" / "cut.jpg").write_bytes(data)
    plan = plan_ingest(ingest_config(flat_data))
    (flat_data / "real" / "Benign" / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg: cannot decode"):
        decode_images(plan, tmp_path / "images.npy")
    assert not (tmp_path / "images.npy").exists()  # no half-written array left behind


def _bad_files(root):
    """A zero-byte file, a text file named .jpg, a truncated PNG, three truncated JPEGs (found only by
    decoding), a bomb header and a tiny image."""
    folder = root / "real" / "Benign"
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not an image")
    png = write_image(root / "scratch" / "whole.png", 7, size=(64, 64)).read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    Image.new("L", (20_000, 20_000)).save(folder / "bomb.png")  # 400 Mpixel, about 400 KB on disk
    Image.new("L", (12_000, 10_000)).save(folder / "big.png")  # 120 Mpixel: ingest's limit, not Pillow's
    write_image(folder / "tiny.png", 8, size=(8, 8))
    for k in range(3):  # three truncated JPEGs: all named in one run, not one per run
        jpeg = write_image(root / "scratch" / f"whole{k}.jpg", 20 + k, size=(64, 64)).read_bytes()
        (folder / f"cut{k}.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    return {
        "cut0.jpg": "truncated",
        "cut1.jpg": "truncated",
        "cut2.jpg": "truncated",
        "empty.png": "empty file",
        "notes.jpg": "not a readable image",
        "truncated.png": "not a readable image",
        "bomb.png": "above ingest.max_pixels",
        "big.png": "above ingest.max_pixels",
        "tiny.png": "smaller than ingest.min_image_size",
    }


def test_bad_images_stop_ingest_with_every_file_and_reason(flat_data):
    expected = _bad_files(flat_data)
    with pytest.raises(DataError) as err:
        plan_ingest(ingest_config(flat_data))
    message = str(err.value)
    assert "9 file(s) cannot be ingested" in message and "ingest.bad_images: skip" in message
    for name, reason in expected.items():
        assert any(name in line and reason in line for line in message.splitlines()), (name, message)


def test_bad_images_skip_mode_reports_and_leaves_them_out(flat_data, tmp_path):
    expected = _bad_files(flat_data)
    before = {p: p.stat().st_mtime_ns for p in (flat_data / "real").rglob("*")}
    plan = plan_ingest(ingest_config(flat_data, bad_images="skip"))
    assert sorted(Path(p).name for p in plan.skipped["path"]) == sorted(expected)
    assert not plan.manifest["path"].str.contains("|".join(expected)).any()
    metrics = ingest_metrics(plan)["ingest"]
    assert metrics["images"] == 45
    assert sum(f["bad_images_skipped"] for f in metrics["folders"].values()) == 9 == metrics["bad_images_skipped"]
    decode_images(plan, tmp_path / "images.npy")
    assert {p: p.stat().st_mtime_ns for p in (flat_data / "real").rglob("*")} == before  # user files untouched


def test_metrics_counts(flat_data):
    metrics = ingest_metrics(plan_ingest(ingest_config(flat_data)))["ingest"]
    assert metrics["images"] == 45
    assert metrics["real"]["train"] == {"benign": 18, "malignant": 6, "total": 24}
    assert metrics["synthetic"] == {"benign": 0, "malignant": 5, "total": 5}
    assert metrics["folders"]["synthetic/Pre"]["expected"] == 5


def test_parallel_decode_equals_serial(flat_data, tmp_path):
    one = run(ingest_config(flat_data, workers=1), tmp_path / "a")[2]
    two = run(ingest_config(flat_data, workers=2), tmp_path / "b")[2]
    np.testing.assert_array_equal(np.asarray(one), np.asarray(two))


def test_tier_file_maps_to_manifest_ids(flat_data):
    pd.DataFrame({"filename": ["Pre/img_000.png", "Pre/img_003.png"], "tier": ["good", "hallucinated"]}).to_csv(
        flat_data / "quality.csv", index=False
    )
    plan = plan_ingest(ingest_config(flat_data, tiers_csv="quality.csv"))
    syn = plan.manifest[plan.manifest["is_syn"] == 1].set_index("path")["id"]
    assert plan.tiers[["id", "tier"]].values.tolist() == [
        [syn["Pre/img_000.png"], "good"],
        [syn["Pre/img_003.png"], "hallucinated"],
    ]
    pd.DataFrame({"filename": ["Pre/nope.png"], "tier": ["good"]}).to_csv(flat_data / "quality.csv", index=False)
    with pytest.raises(DataError, match="Pre/nope.png"):
        plan_ingest(ingest_config(flat_data, tiers_csv="quality.csv"))


def test_scarce_train_images_keeps_n_of_one_label_and_leaves_evaluation_alone(flat_data, tmp_path):
    full = plan_ingest(ingest_config(flat_data)).manifest
    plan = plan_ingest(ingest_config(flat_data, scarce_train_images=2, scarce_seed=0))
    scarce = plan.manifest
    real_train = lambda m, label: m[(m["is_syn"] == 0) & (m["split"] == "train") & (m["label"] == label)]  # noqa: E731
    assert len(real_train(full, 1)) == 6 and len(real_train(scarce, 1)) == 2  # malignant: 6 -> 2
    assert set(real_train(scarce, 1)["path"]) <= set(real_train(full, 1)["path"])
    assert real_train(scarce, 0)["path"].tolist() == real_train(full, 0)["path"].tolist()  # benign untouched
    held_out = lambda m: m[m["split"].isin(["val", "test"])][["path", "split"]].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(held_out(scarce), held_out(full))  # val/test identical
    assert (scarce["is_syn"] == 1).sum() == (full["is_syn"] == 1).sum()
    assert scarce["id"].tolist() == list(range(len(scarce)))  # ids stay array rows
    assert ingest_metrics(plan)["ingest"]["scarce"] == {"label": "malignant", "limit": 2, "dropped": 4}
    # seeded: same seed, same images; the draws differ across seeds
    again = plan_ingest(ingest_config(flat_data, scarce_train_images=2, scarce_seed=0)).manifest
    assert real_train(again, 1)["path"].tolist() == real_train(scarce, 1)["path"].tolist()
    draws = {
        tuple(
            real_train(plan_ingest(ingest_config(flat_data, scarce_train_images=2, scarce_seed=s)).manifest, 1)["path"]
        )
        for s in range(6)
    }
    assert len(draws) > 1
    _, manifest, images = run(ingest_config(flat_data, scarce_train_images=2), tmp_path)
    assert len(images) == len(manifest) == len(full) - 4  # dropped images are never decoded


def test_scarce_params_are_checked(flat_data):
    from entromix.common.errors import ParamsError

    with pytest.raises(DataError, match="ingest.scarce_train_images is 50 but there are only 6"):
        plan_ingest(ingest_config(flat_data, scarce_train_images=50))
    with pytest.raises(ParamsError, match="ingest.scarce_label"):
        ingest_config(flat_data, scarce_label="Early")
    with pytest.raises(ParamsError, match="ingest.scarce_train_images must be null"):
        ingest_config(flat_data, scarce_train_images=0)


@pytest.mark.parametrize("escape", ["../outside.png", "../../etc/passwd", "/etc/passwd", "Benign/../../outside.png"])
def test_csv_paths_that_leave_the_data_root_are_refused_not_opened(tmp_path, escape):
    """Paths in the groups and tier CSVs are only matched against the files ingest found under the
    data root; one that leads elsewhere is an error naming it, and nothing is read from it."""
    root = tmp_path / "data"
    make_folder(root / "real", {"Benign": 3, "Early": 3}, seed=6)
    make_folder(root / "synthetic", {"Early": 2}, seed=7)
    outside = write_image(tmp_path / "outside.png", 99)  # a real image the escape would reach
    before = outside.read_bytes()
    rows = [(p.relative_to(root / "real").as_posix(), "P1") for p in sorted((root / "real").rglob("*.png"))]
    pd.DataFrame(rows + [(escape, "P9")], columns=["path", "group"]).to_csv(root / "groups.csv", index=False)
    with pytest.raises(DataError, match="name images that are not in the real-images folder"):
        plan_ingest(ingest_config(root, groups_csv="groups.csv"))
    pd.DataFrame({"filename": ["Early/img_000.png", escape], "tier": ["good", "good"]}).to_csv(
        root / "q.csv", index=False
    )
    with pytest.raises(DataError, match="not ingested synthetic images"):
        plan_ingest(ingest_config(root, tiers_csv="q.csv"))
    assert outside.read_bytes() == before


def _twelve_bit_folder(root):
    rng = np.random.default_rng(0)
    for folder, n in {"Benign": 30, "Early": 10}.items():
        (root / "real" / folder).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 4096, (20, 20), dtype=np.uint16)).save(root / "real" / folder / f"{i}.png")


def test_ingest_intensity_fixed12_uses_the_whole_8_bit_range_and_fixed16_warns(tmp_path, capsys):
    _twelve_bit_folder(tmp_path / "data")
    config = ingest_config(tmp_path / "data", synthetic_dir=None)
    _, _, images = run(config, tmp_path / "a")
    assert images.max() <= 16
    err = capsys.readouterr().err
    assert "WARNING: 40 16-bit image(s) never exceed" in err and "ingest.intensity: fixed12" in err
    _, _, images12 = run(ingest_config(tmp_path / "data", synthetic_dir=None, intensity="fixed12"), tmp_path / "b")
    assert images12.max() > 200
    assert "WARNING" not in capsys.readouterr().err


def test_intensity_warning_names_the_setting():
    from entromix.data.decode import intensity_warning

    assert intensity_warning("fixed16", []) is None
    assert intensity_warning("fixed16", [60000, 4095]) is None
    message = intensity_warning("fixed16", [4000, 4095])
    assert "2 16-bit image(s) never exceed 4095" in message and "0..16 of 255" in message
    assert "ingest.intensity: fixed12" in message
    assert intensity_warning("fixed12", [4095, 100]) is None
    assert "1 of 2 16-bit image(s) exceed 4095 (up to 60000)" in intensity_warning("fixed12", [4095, 60000])
    assert intensity_warning("per_image_minmax", [100]) is None


def test_class_map_null_leaves_a_folder_out_and_counts_it(flat_data):
    """`Normal: null` in ingest.class_map excludes that class folder on purpose: nothing of it is read,
    and metrics/ingest.json says how many image files were left out."""
    make_folder(flat_data / "real", {"Normal": 7}, seed=9)
    with pytest.raises(DataError, match=r"'Normal'.*Normal: null"):  # unmapped: the message says how to exclude
        plan_ingest(ingest_config(flat_data))
    class_map = {"Benign": "benign", "Early": "malignant", "Pre": "malignant", "Normal": None}
    plan = plan_ingest(ingest_config(flat_data, class_map=class_map))
    assert not (plan.manifest["class"] == "Normal").any()
    metrics = ingest_metrics(plan)["ingest"]
    assert metrics["images"] == 45
    assert metrics["excluded_by_class_map"] == {"real/Normal": 7}
    assert metrics["folders"]["real/Normal"]["excluded"] is True
