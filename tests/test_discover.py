"""Folder layouts, class_map checks and what is ignored."""

import os

import pytest
from conftest import make_folder, write_image

from entromix.common.errors import DataError
from entromix.data.discover import discover_images

MAP = {"Benign": "benign", "Early": "malignant"}


def test_flat_layout(tmp_path):
    make_folder(tmp_path, {"Benign": 3, "Early": 2})
    found = discover_images(tmp_path, MAP)
    assert found.layout == "flat"
    assert [(i.rel_path, i.class_name, i.split) for i in found.images][:1] == [("Benign/img_000.png", "Benign", None)]
    assert {f.folder: f.expected for f in found.folders} == {"Benign": 3, "Early": 2}


def test_pre_split_layout_with_aliases(tmp_path):
    make_folder(tmp_path, {"training/Benign": 2, "valid/Early": 1, "test/Benign": 1})
    found = discover_images(tmp_path, MAP)
    assert found.layout == "split"
    assert sorted({(i.split, i.class_name) for i in found.images}) == [
        ("test", "Benign"),
        ("train", "Benign"),
        ("val", "Early"),
    ]


def test_mixed_top_level_is_an_error(tmp_path):
    make_folder(tmp_path, {"train/Benign": 1, "Early": 1})
    with pytest.raises(DataError, match="mix split names"):
        discover_images(tmp_path, MAP)


def test_forced_split_layout_names_the_unknown_folder(tmp_path):
    make_folder(tmp_path, {"train/Benign": 1, "holdout/Benign": 1})
    with pytest.raises(DataError, match="holdout"):
        discover_images(tmp_path, MAP, layout="split")


def test_unmapped_class_is_named(tmp_path):
    make_folder(tmp_path, {"Benign": 1, "Pro": 1})
    with pytest.raises(DataError) as err:
        discover_images(tmp_path, MAP)
    assert "'Pro'" in str(err.value) and "ingest.class_map" in str(err.value)


def test_missing_root_and_empty_class(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover_images(tmp_path / "nope", MAP)
    make_folder(tmp_path, {"Benign": 1})
    (tmp_path / "Early").mkdir()
    with pytest.raises(DataError, match="has no images"):
        discover_images(tmp_path, MAP)


def test_non_images_hidden_files_and_nesting(tmp_path):
    make_folder(tmp_path, {"Benign": 2, "Early/patient7": 2})
    (tmp_path / "Benign" / "notes.txt").write_text("x")
    (tmp_path / "Benign" / ".DS_Store").write_text("x")
    (tmp_path / "README.md").write_text("x")
    found = discover_images(tmp_path, MAP)
    assert {f.folder: (f.expected, f.ignored) for f in found.folders} == {"Benign": (2, 1), "Early": (2, 0)}
    assert "Early/patient7/img_000.png" in [i.rel_path for i in found.images]
    assert found.ignored_top_level == ["README.md"]


def test_symlink_leaving_the_root_is_an_error(tmp_path):
    outside = write_image(tmp_path / "outside.png", 1)
    make_folder(tmp_path / "root", {"Benign": 1})
    os.symlink(outside, tmp_path / "root" / "Benign" / "link.png")
    with pytest.raises(DataError, match="outside the data root"):
        discover_images(tmp_path / "root", MAP)
