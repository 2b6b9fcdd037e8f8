"""The demo generator: deterministic, laid out like user data, and drawing the classes as designed."""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from entromix.common.errors import DataError, ParamsError
from entromix.demo import DemoConfig, cells, degradations, generate_demo, save_preview_grid, stain

TINY = DemoConfig(
    seed=3,
    image_size=48,
    n_benign=12,
    n_malignant=6,
    images_per_patient=2,
    syn_good=4,
    syn_degraded=6,
    syn_hallucinated=3,
)


def _digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _without_split(digests: dict[str, str]) -> dict[str, str]:
    """Keys real/<split>/<class>/<name> -> real/<class>/<name>."""
    return {("real/" + k.split("/", 2)[2] if k.startswith("real/") else k): v for k, v in digests.items()}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _pngs(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, generate_demo(TINY, out, progress=False)


def test_same_config_gives_identical_bytes(tiny, tmp_path):
    out, _ = tiny
    generate_demo(TINY, tmp_path, progress=False)
    assert _digests(out) == _digests(tmp_path)
    assert "groups.csv" in _digests(out) and "synthetic_quality.csv" in _digests(out)


def test_other_seed_changes_images(tiny, tmp_path):
    out, _ = tiny
    other = DemoConfig(**{**TINY.__dict__, "seed": TINY.seed + 1})
    generate_demo(other, tmp_path, progress=False)
    a, b = (_without_split(_digests(root)) for root in (out, tmp_path))  # the seed also redraws the split
    pngs = [k for k in a if k.endswith(".png")]
    assert set(a) == set(b)
    assert all(a[k] != b[k] for k in pngs)


def test_image_depends_only_on_its_own_seed(tiny, tmp_path):
    """More benign images change neither the malignant nor the synthetic ones (seeds are keyed
    by role, class and index, not by drawing order)."""
    out, _ = tiny
    generate_demo(DemoConfig(**{**TINY.__dict__, "n_benign": 18}), tmp_path, progress=False)
    a, b = _digests(out), _digests(tmp_path)  # malignant patients' splits are drawn per class: unchanged
    kept = [k for k in a if "/lymphoblast/" in k or k == "synthetic_quality.csv"]
    assert len(kept) == TINY.n_malignant + 13 + 1
    assert all(a[k] == b[k] for k in kept)


def test_counts_and_layout(tiny):
    out, summary = tiny
    real = _pngs(out / "real")
    assert sorted(p.split("/", 1)[1] for p in real) == sorted(
        [f"lymphocyte/lymphocyte_{i:04d}.png" for i in range(TINY.n_benign)]
        + [f"lymphoblast/lymphoblast_{i:04d}.png" for i in range(TINY.n_malignant)]
    )
    assert {p.split("/")[0] for p in real} == {"train", "val", "test"}
    syn = _pngs(out / "synthetic")
    n_syn = TINY.syn_good + TINY.syn_degraded + TINY.syn_hallucinated
    assert syn == [f"lymphoblast/syn_{i:04d}.png" for i in range(n_syn)]
    assert summary.real_counts == {"lymphocyte": 12, "lymphoblast": 6}
    assert summary.synthetic_counts == {"good": 4, "degraded": 6, "hallucinated": 3}
    assert sum(summary.degraded_details.values()) == 6
    assert sorted(p.name for p in out.iterdir()) == ["groups.csv", "real", "synthetic", "synthetic_quality.csv"]


def test_groups_cover_real_images_once_single_class(tiny):
    out, summary = tiny
    rows = _rows(out / "groups.csv")
    paths = [r["path"] for r in rows]
    assert list(rows[0]) == ["path", "group"]
    assert paths == sorted(paths) == _pngs(out / "real")
    classes: dict[str, set[str]] = {}
    for r in rows:
        classes.setdefault(r["group"], set()).add(tuple(r["path"].split("/")[:2]))  # (split, class)
    assert all(len(c) == 1 for c in classes.values())
    sizes = Counter(r["group"] for r in rows)
    assert len(sizes) == summary.n_patients == 6 + 3  # ceil(12/2) + ceil(6/2)
    assert all(1 <= n <= TINY.images_per_patient for n in sizes.values())
    assert max(sizes.values()) - min(sizes.values()) <= 2


def test_quality_csv_covers_synthetic_once_and_hides_tiers(tiny):
    out, _ = tiny
    rows = _rows(out / "synthetic_quality.csv")
    assert list(rows[0]) == ["filename", "tier", "detail"]
    names = [r["filename"] for r in rows]
    assert names == sorted(names) == _pngs(out / "synthetic")
    assert Counter(r["tier"] for r in rows) == {"good": 4, "degraded": 6, "hallucinated": 3}
    details = {r["tier"]: set() for r in rows}
    for r in rows:
        details[r["tier"]].add(r["detail"])
    assert details["good"] == {"realistic"} and details["hallucinated"] == {"benign_cell"}
    assert details["degraded"] <= set(degradations.DEGRADATIONS)
    for name in names:
        assert not any(t in name for t in ("good", "degraded", "hallucinated", "benign", "blur"))
    tiers = [r["tier"] for r in rows]
    assert tiers != sorted(tiers, key=("good", "degraded", "hallucinated").index)  # shuffled


def test_images_are_square_rgb_uint8_png(tiny):
    out, _ = tiny
    for p in sorted(out.rglob("*.png")):
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "RGB"
            arr = np.asarray(im)
        assert arr.shape == (48, 48, 3) and arr.dtype == np.uint8


def _nucleus_area(img: np.ndarray) -> float:
    """Fraction of pixels stained purple/blue like a nucleus: blue exceeds green by > 0.2.

    Red cells (pink: blue close to green), plasma and pale cytoplasm stay below the threshold.
    """
    x = img.astype(np.float32) / 255.0
    return float(((x[..., 2] - x[..., 1]) > 0.2).mean())


def test_classes_differ_as_designed():
    """Known answer: blasts have about twice the nuclear area of lymphocytes, and so do the
    synthetic tiers that copy them; hallucinated images measure like benign ones."""
    rng = lambda i, k: np.random.default_rng([i, k])  # noqa: E731
    area = {
        kind: np.mean(
            [
                _nucleus_area(cells.render_field(rng(i, k), 64, kind, stain.sample_stain(rng(i, k + 9))))
                for i in range(40)
            ]
        )
        for k, kind in enumerate(cells.CELL_KINDS)
    }
    assert area["lymphoblast"] > 1.6 * area["lymphocyte"]


def test_synthetic_tiers_match_their_source(tmp_path):
    cfg = DemoConfig(
        seed=1,
        image_size=64,
        n_benign=12,
        n_malignant=12,
        images_per_patient=6,
        syn_good=12,
        syn_degraded=0,
        syn_hallucinated=12,
    )
    generate_demo(cfg, tmp_path, progress=False)

    def mean_area(paths):
        return np.mean([_nucleus_area(np.asarray(Image.open(p))) for p in paths])

    real = {c: mean_area(sorted((tmp_path / "real").glob(f"*/{c}/*.png"))) for c in ("lymphocyte", "lymphoblast")}
    tier = {
        t: mean_area(
            [
                tmp_path / "synthetic" / r["filename"]
                for r in _rows(tmp_path / "synthetic_quality.csv")
                if r["tier"] == t
            ]
        )
        for t in ("good", "hallucinated")
    }
    assert real["lymphoblast"] > 1.6 * real["lymphocyte"]
    assert abs(tier["hallucinated"] - real["lymphocyte"]) < abs(tier["good"] - real["lymphocyte"])
    assert abs(tier["good"] - real["lymphoblast"]) < abs(tier["good"] - real["lymphocyte"])


@pytest.mark.parametrize(
    "field,value",
    [
        ("n_benign", -1),
        ("image_size", 16),
        ("images_per_patient", 0),
        ("syn_good", -3),
        ("seed", -1),
        ("n_malignant", 2.5),
        ("syn_degraded", True),
    ],
)
def test_bad_config_names_the_params_key(field, value):
    with pytest.raises(ParamsError, match=rf"demo\.{field}\b"):
        DemoConfig(**{field: value})


def test_rerun_with_smaller_counts_leaves_no_stale_files(tmp_path):
    generate_demo(TINY, tmp_path, progress=False)
    small = DemoConfig(**{**TINY.__dict__, "n_benign": 3, "n_malignant": 2, "syn_good": 1, "syn_degraded": 0})
    generate_demo(small, tmp_path, progress=False)
    assert len(_pngs(tmp_path / "real")) == 5 == len(_rows(tmp_path / "groups.csv"))
    assert len(_pngs(tmp_path / "synthetic")) == 4 == len(_rows(tmp_path / "synthetic_quality.csv"))


def test_foreign_files_are_refused_not_deleted(tmp_path):
    stray = tmp_path / "real" / "lymphocyte" / "mine.jpg"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    with pytest.raises(DataError, match="mine.jpg"):
        generate_demo(TINY, tmp_path, progress=False)
    assert stray.exists()


def test_degradations_change_the_image():
    rng = np.random.default_rng(0)
    clean = cells.draw_field(np.random.default_rng(5), 48, "lymphoblast", stain.Stain())
    for kind in degradations.DEGRADATIONS:
        spoilt = degradations.degrade(clean, rng, kind)
        assert spoilt.shape == clean.shape and spoilt.dtype == np.float32
        assert np.abs(spoilt - clean).mean() > 0.01, kind


def test_preview_grid(tiny, tmp_path):
    out, _ = tiny
    png = save_preview_grid(out, tmp_path / "grid.png", n_cols=3)
    with Image.open(png) as im:
        assert im.width > 3 * 48 and im.height >= 5 * 48


def test_demo_split_keeps_patients_whole_and_follows_the_shares():
    """demo.split: per class, the patients' shares (largest remainders), each patient in one split;
    the shipped default gives the 48 + 16 / 24 + 8 / 120 + 40 images the README's figures rest on."""
    from entromix.demo.generate import _real_plan

    rows, _ = _real_plan(DemoConfig(n_benign=192, n_malignant=64, images_per_patient=2))
    counts = Counter((path.split("/")[0], cls) for path, cls, *_ in rows)
    assert counts == {
        ("train", "lymphocyte"): 48,
        ("val", "lymphocyte"): 24,
        ("test", "lymphocyte"): 120,
        ("train", "lymphoblast"): 16,
        ("val", "lymphoblast"): 8,
        ("test", "lymphoblast"): 40,
    }
    splits_of_patient: dict[str, set[str]] = {}
    for path, _cls, _i, patient, _key in rows:
        splits_of_patient.setdefault(patient, set()).add(path.split("/")[0])
    assert all(len(s) == 1 for s in splits_of_patient.values())


def test_bad_demo_split_names_the_key():
    from entromix.demo.generate import DemoSplit

    with pytest.raises(ParamsError, match=r"demo\.split"):
        DemoSplit(train=0.5, val=0.5, test=0.0)
