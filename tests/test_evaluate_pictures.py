"""The evaluate stage's pictures: the synthetic pool gallery and Grad-CAM, on small known arrays.

Selection logic is checked on hand-made scores; the figures are rendered from random images and
an untrained resnet18 (no training here), and checked to be PNGs of the expected size; the
Grad-CAM maps to have the model input's shape and not to be constant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from entromix.common.errors import ParamsError
from entromix.evaluation.gallery import final_tau, gallery_figures, select_gallery, synthetic_pool
from entromix.evaluation.gradcam import cam_layer, gradcam_figure, gradcam_maps, select_cases
from entromix.evaluation.report import EvaluateConfig
from entromix.modeling.models import build_model
from entromix.training.checkpoints import TrainedModel

CPU = torch.device("cpu")
PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


# --- gallery selection ---


def test_gallery_takes_the_images_nearest_tau_on_each_side():
    jsd = np.array([0.05, 0.30, 0.32, 0.311, 0.90, 0.10, 0.29, 0.50, 0.20])
    sel = select_gallery(jsd, tau=0.311, per_side=2, sample=10, seed=0)
    assert sel.near_admitted.tolist() == [3, 1]  # 0.311 (at tau: admitted, float32 as the gate) then 0.30
    assert sel.near_kept_out.tolist() == [2, 7]  # 0.32 then 0.50
    assert sel.admitted.tolist() == [True, True, False, True, False, True, True, False, True]
    # the samples are the rest of each side, sorted by jsd, never repeating a nearest tile
    assert sel.sample_admitted.tolist() == [0, 5, 8, 6]
    assert sel.sample_kept_out.tolist() == [4]


def test_gallery_sample_is_seeded_and_drawn_from_the_rest_of_its_side():
    jsd = np.linspace(0.0, 1.0, 101)
    a = select_gallery(jsd, 0.5, per_side=3, sample=5, seed=7)
    b = select_gallery(jsd, 0.5, per_side=3, sample=5, seed=7)
    c = select_gallery(jsd, 0.5, per_side=3, sample=5, seed=8)
    assert a.sample_admitted.tolist() == b.sample_admitted.tolist() != c.sample_admitted.tolist()
    assert len(a.sample_admitted) == len(a.sample_kept_out) == 5
    assert set(a.sample_admitted).isdisjoint(a.near_admitted) and (jsd[a.sample_admitted] < jsd[48]).all()
    assert set(a.sample_kept_out).isdisjoint(a.near_kept_out) and (jsd[a.sample_kept_out] > 0.53).all()
    assert np.all(np.diff(jsd[a.sample_admitted]) > 0)


def test_gallery_with_everything_on_one_side():
    sel = select_gallery(np.array([0.1, 0.2, 0.3]), 1.0, per_side=2, sample=2, seed=0)  # naive: tau 1 bit
    assert sel.near_admitted.tolist() == [2, 1] and sel.sample_admitted.tolist() == [0]
    assert len(sel.near_kept_out) == len(sel.sample_kept_out) == 0


def test_final_tau_from_the_history():
    history = pd.DataFrame({"phase": ["warmup", "ramp", "ramp"], "tau": [0.0, 0.1, 0.25]})
    assert final_tau(history, {"curriculum": {"strategy": "curriculum"}}) == (0.25, "")
    tau, why = final_tau(history, {"curriculum": {"strategy": "real_only"}})
    assert tau is None and "real_only" in why
    tau, why = final_tau(history.iloc[:1], {"curriculum": {"strategy": "curriculum"}})
    assert tau is None and "warmup" in why


# --- Grad-CAM case selection ---


def test_cases_are_false_negatives_first_then_false_positives_then_correct():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 1, 0])
    p = np.array([0.4, 0.1, 0.9, 0.6, 0.95, 0.1, 0.8, 0.7, 0.3, 0.2])
    cases = select_cases(y, p, threshold=0.5, errors=10, correct=4, seed=0)
    assert cases[:6] == [(1, "FN"), (8, "FN"), (0, "FN"), (2, "FP"), (7, "FP"), (3, "FP")]
    assert [k for _, k in cases[6:]] == ["TP", "TP", "TN", "TN"]
    assert {r for r, _ in cases[6:8]} == {4, 6} and {r for r, _ in cases[8:]} <= {5, 9}
    assert select_cases(y, p, 0.5, errors=4, correct=0, seed=0) == [(1, "FN"), (8, "FN"), (0, "FN"), (2, "FP")]
    assert select_cases(y, p, 0.5, 0, 3, seed=1) == select_cases(y, p, 0.5, 0, 3, seed=1)


def test_correct_cases_fill_from_the_other_class_when_one_runs_short():
    y, p = np.array([1, 0, 0, 0, 0]), np.array([0.9, 0.1, 0.2, 0.3, 0.4])
    cases = select_cases(y, p, 0.5, errors=5, correct=4, seed=0)
    assert [k for _, k in cases] == ["TP", "TN", "TN", "TN"]


@pytest.mark.parametrize("key", ["gallery_per_side", "gallery_sample", "gradcam_errors", "gradcam_correct"])
def test_picture_counts_are_checked(key):
    values = {"gallery_per_side": 8, "gallery_sample": 8, "gradcam_errors": 8, "gradcam_correct": 4, key: -1}
    with pytest.raises(ParamsError, match=f"evaluate.{key}"):
        EvaluateConfig("best", 0.9, "single", 100, 10, 0, "cpu", **values)


# --- rendering ---


def pool_fixture(n: int = 30, size: int = 16, tiers: bool = True):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n + 5, size, size, 3), dtype=np.uint8)  # rows 0..4 real
    dataset = pd.DataFrame(
        {
            "id": np.arange(n + 5),
            "is_syn": [0] * 5 + [1] * n,
            "jsd_score": rng.uniform(0, 1, n + 5).round(6),
            "label": 1,
        }
    )
    names = ["good", "degraded", "hallucinated"]
    tier_table = pd.DataFrame(
        {"id": np.arange(5, n + 5), "filename": "x.png", "tier": [names[i % 3] for i in range(n)], "detail": ""}
    )
    return dataset, (tier_table if tiers else tier_table.iloc[:0]), images


HISTORY = pd.DataFrame({"phase": ["warmup", "ramp"], "tau": [0.0, 0.4]})
RUN = {"curriculum": {"strategy": "curriculum", "gate": "hard", "rescore_every": 0}}


def test_gallery_and_tier_figures_render(tmp_path):
    dataset, tiers, images = pool_fixture()
    pool = synthetic_pool(dataset, tiers)
    assert pool["id"].tolist() == list(range(5, 35)) and set(pool["tier"]) == {"good", "degraded", "hallucinated"}
    figures = gallery_figures(dataset, tiers, images, HISTORY, RUN, per_side=6, sample=4, seed=0)
    for name, draw in figures.items():
        draw(tmp_path / f"{name}.png")
    w, h = png_size(tmp_path / "synthetic_gallery.png")
    assert (w, h) == (int(round((1.6 + 6) * 110)), int(round(5.2 * 110)))
    w, h = png_size(tmp_path / "synthetic_tiers.png")
    assert w == 704 and h > 400  # three tier panels


def test_gallery_says_why_when_there_is_nothing_to_show(tmp_path):
    dataset, tiers, images = pool_fixture(tiers=False)
    real_only = {"curriculum": {"strategy": "real_only"}}
    figures = gallery_figures(dataset, tiers, images, HISTORY, real_only, 8, 8, 0)
    figures["synthetic_gallery"](tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (704, 242)
    no_pool = dataset[dataset["is_syn"] == 0]
    figures = gallery_figures(no_pool, tiers, images, HISTORY, RUN, 8, 8, 0)
    figures["synthetic_tiers"](tmp_path / "t.png")
    assert png_size(tmp_path / "t.png") == (704, 242)
    figures = gallery_figures(dataset, tiers, images, HISTORY, RUN, 8, 8, 0)  # a pool but no tier file
    figures["synthetic_gallery"](tmp_path / "g2.png")
    figures["synthetic_tiers"](tmp_path / "t2.png")
    assert png_size(tmp_path / "g2.png")[0] > 704
    assert png_size(tmp_path / "t2.png") == (704, 192)  # the whole pool as one histogram, not a placeholder


@pytest.mark.parametrize(
    ("size", "layer", "side"), [(16, "layer1[-1]", 4), (64, "layer2[-1]", 8), (224, "layer4[-1]", 7)]
)
def test_gradcam_maps_have_the_input_shape_and_are_not_constant(size, layer, side):
    torch.manual_seed(0)
    model = build_model("resnet18", 2, size).eval()
    target = cam_layer(model, "resnet18", size, CPU)
    assert (target.name, target.side) == (layer, side)
    images = np.random.default_rng(1).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)  # stored at 24 px
    maps, shown = gradcam_maps(model, target.layer, images, [1, 0, 1], size, True, CPU)
    assert maps.shape == (3, size, size) and shown.shape == (3, size, size, 3)
    assert 0.0 <= maps.min() and maps.max() <= 1.0 + 1e-6
    assert all(m.std() > 0.01 for m in maps)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())  # the model is left as it was


def test_transformers_get_no_gradcam_but_a_figure_that_says_so(tmp_path, capsys):
    assert cam_layer(torch.nn.Identity(), "vit_b_16", 32, CPU).layer is None
    assert cam_layer(torch.nn.Identity(), "timm:swin_tiny_patch4_window7_224", 224, CPU).layer is None
    assert "no known convolutional stages" in cam_layer(torch.nn.Linear(2, 2), "timm:mystery", 32, CPU).name
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    trained = TrainedModel(model, {"model_name": "vit_b_16", "image_size": 16}, CPU, False)
    draw = gradcam_figure(
        trained,
        np.arange(2),
        np.zeros((2, 16, 16, 3), np.uint8),
        np.array([1, 0]),
        np.array([0.2, 0.1]),
        0.5,
        [(0, "FN"), (1, "TN")],
        ["benign", "malignant"],
    )
    assert "no Grad-CAM figure: vit_b_16 is a transformer" in capsys.readouterr().out
    draw(tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (704, 242)


def test_gradcam_figure_renders_a_grid(tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("resnet18", 2, 32).eval()
    trained = TrainedModel(model, {"model_name": "resnet18", "image_size": 32}, CPU, True)
    images = np.random.default_rng(2).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0])
    p = np.array([0.1, 0.3, 0.8, 0.2, 0.9, 0.1, 0.7, 0.3])
    cases = select_cases(y, p, 0.5, errors=3, correct=4, seed=0)
    assert [k for _, k in cases] == ["FN", "FN", "FP", "TP", "TP", "TN", "TN"]
    draw = gradcam_figure(trained, np.arange(8)[::-1].copy(), images, y, p, 0.5, cases, ["benign", "malignant"])
    assert "Grad-CAM of 7 test images on resnet18 layer1[-1]" in capsys.readouterr().out  # 8x8 at 32 px
    draw(tmp_path / "gradcam.png")
    w, h = png_size(tmp_path / "gradcam.png")
    assert (w, h) == (int(round(1.45 * 6 * 110)), int(round((0.5 + 1.75 * 3) * 110)))


def test_no_cases_is_a_figure_that_says_so(tmp_path, capsys):
    trained = TrainedModel(
        build_model("resnet18", 2, 16).eval(), {"model_name": "resnet18", "image_size": 16}, CPU, False
    )
    draw = gradcam_figure(
        trained, np.arange(1), np.zeros((1, 16, 16, 3), np.uint8), np.array([1]), np.array([0.9]), 0.5, [], ["b", "m"]
    )
    assert "no test case to show" in capsys.readouterr().out
    draw(tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (704, 242)
