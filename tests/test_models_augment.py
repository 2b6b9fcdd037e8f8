"""Model building (no downloads, local weights only) and tensor augmentations."""

import math

import numpy as np
import pytest
import torch

from entromix.common.errors import ParamsError
from entromix.modeling.augment import augment, normalize, to_float
from entromix.modeling.fit import class_weights
from entromix.modeling.models import build_model


@pytest.mark.parametrize("name, size", [("resnet18", 32), ("vit_b_16", 32), ("swin_t", 64)])
def test_models_have_a_two_class_head(name, size):
    model = build_model(name, 2, size).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 2)


def test_unknown_model_and_bad_sizes():
    with pytest.raises(ParamsError, match="choose one of"):
        build_model("alexnet", 2, 64)
    with pytest.raises(ParamsError, match="multiple of 16"):
        build_model("vit_b_16", 2, 40)


def test_local_weights_load_and_head_is_replaced(tmp_path):
    source = build_model("resnet18", 1000, 32)  # an "ImageNet" checkpoint with a 1000-class head
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", 2, 32, weights_path=str(path))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 2


def test_missing_or_wrong_weights_are_clear_errors(tmp_path):
    with pytest.raises(ParamsError, match="never downloads"):
        build_model("resnet18", 2, 32, weights_path=str(tmp_path / "nope.pth"))
    path = tmp_path / "r50.pth"
    torch.save(build_model("resnet50", 2, 32).state_dict(), path)
    with pytest.raises(ParamsError, match="do not match"):
        build_model("resnet18", 2, 32, weights_path=str(path))
    bad = tmp_path / "evil.pth"
    torch.save({"x": object()}, bad)  # not loadable with weights_only=True
    with pytest.raises(ParamsError, match="holds Python objects besides tensors") as err:
        build_model("resnet18", 2, 32, weights_path=str(bad), section="score")
    assert "score.pretrained_weights" in str(err.value) and "weights_only=False" not in str(err.value)


def test_class_weights_follow_the_counts():
    # the reference's 120 benign / 40 malignant give 160 / (2 * 120) and 160 / (2 * 40)
    w = class_weights([0] * 120 + [1] * 40, 2)
    assert w.tolist() == pytest.approx([2 / 3, 2.0])


def test_to_float_and_normalize():
    batch = torch.full((2, 8, 8, 3), 255, dtype=torch.uint8)
    x = to_float(batch, 4)
    assert x.shape == (2, 3, 4, 4) and torch.allclose(x, torch.ones_like(x))
    assert normalize(x)[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)


def test_augment_is_seeded_in_range_and_identity_when_disabled():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    c = augment(x, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    same = augment(
        x, torch.Generator().manual_seed(1), hflip=0, vflip=0, rotation_deg=0, translate=0, scale=(1, 1), color_jitter=0
    )
    assert torch.allclose(same, x, atol=1e-5)


def test_augment_flip_only_mirrors_the_image():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    flipped = augment(
        x, torch.Generator().manual_seed(0), hflip=1, vflip=0, rotation_deg=0, translate=0, scale=(1, 1), color_jitter=0
    )
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    assert math.isclose(float(flipped.mean()), float(x.mean()), rel_tol=1e-5)


def test_rotate90_turns_the_image_by_quarter_turns_only():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    turned = augment(
        x,
        torch.Generator().manual_seed(3),
        hflip=0,
        vflip=0,
        rotation_deg=0,
        translate=0,
        scale=(1, 1),
        color_jitter=0,
        rotate90=True,
    )
    seen = set()
    for i in range(len(x)):
        matches = [k for k in range(4) if torch.allclose(turned[i], torch.rot90(x[i], k, dims=(1, 2)), atol=1e-5)]
        assert len(matches) == 1, f"image {i} is not a quarter turn of its input"
        seen.add(matches[0])
    assert len(seen) >= 3  # the turns are drawn, not fixed


def test_tta_logits_do_not_depend_on_the_orientation():
    from entromix.modeling.fit import predict_logits
    from entromix.modeling.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", 2, 32)
    images = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    turned = torch.rot90(images, 1, dims=(1, 2)).contiguous()
    a = predict_logits(model, images, torch.device("cpu"), 32, tta=True)
    b = predict_logits(model, turned, torch.device("cpu"), 32, tta=True)
    plain = predict_logits(model, images, torch.device("cpu"), 32)
    assert np.allclose(a, b, atol=1e-4) and a.shape == plain.shape == (3, 2)


def test_a_torchvision_weights_name_is_read_from_the_local_hub_cache(tmp_path, monkeypatch):
    from torchvision import models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ParamsError) as missing:
        build_model("resnet18", 2, 32, "IMAGENET1K_V1", "train")
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    message = str(missing.value)
    assert "train.pretrained_weights" in message and str(cached) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "never downloads" in message
    imagenet = tvm.resnet18(weights=None).state_dict()  # stands in for the real file: same names and shapes
    cached.parent.mkdir(parents=True)
    torch.save(imagenet, cached)
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        model = build_model("resnet18", 2, 32, name, "train")
        assert torch.equal(model.state_dict()["conv1.weight"], imagenet["conv1.weight"])
        assert model.fc.out_features == 2
    with pytest.raises(ParamsError, match="not a torchvision weights name for resnet18"):
        build_model("resnet18", 2, 32, "IMAGENET9K", "score")


def test_vit_weights_from_another_image_size_get_interpolated_positions(tmp_path, capsys):
    from torchvision import models as tvm

    trained_at_64 = tvm.vit_b_16(weights=None, image_size=64).state_dict()  # 4x4 patches + class token
    path = tmp_path / "vit.pth"
    torch.save({k: v for k, v in trained_at_64.items() if not k.startswith("heads.")}, path)
    model = build_model("vit_b_16", 2, 32, str(path), "train")
    assert model.encoder.pos_embedding.shape == (1, 5, 768)  # 2x2 patches + class token
    assert torch.equal(model.encoder.pos_embedding[:, :1], trained_at_64["encoder.pos_embedding"][:, :1])
    assert "interpolated from a 4x4 patch grid (64 px) to 2x2 (32 px)" in capsys.readouterr().out


def test_timm_backbones_build_and_take_weights_only_from_a_file_or_the_local_cache(tmp_path):
    import timm

    model = build_model("timm:resnet10t", 2, 32)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ParamsError) as missing:
        build_model("timm:resnet10t", 2, 32, "DEFAULT", "train")
    message = str(missing.value)
    assert "train.pretrained_weights" in message and "never downloads" in message
    assert "huggingface-cli download timm/resnet10t" in message
    imagenet = timm.create_model("resnet10t", pretrained=False).state_dict()  # 1000-class head, as a real file
    torch.save(imagenet, tmp_path / "resnet10t.pth")
    loaded = build_model("timm:resnet10t", 2, 32, str(tmp_path / "resnet10t.pth"), "train")
    assert torch.equal(loaded.state_dict()["conv1.0.weight"], imagenet["conv1.0.weight"])
    assert loaded(torch.zeros(2, 3, 32, 32)).shape == (2, 2)
    with pytest.raises(ParamsError, match="timm has no architecture 'no_such_net'"):
        build_model("timm:no_such_net", 2, 32, None, "score")


def test_train_epoch_counts_the_training_recall_of_class_1_and_the_lr():
    """train_epoch's stats: the LR of the epoch's first step and, with targets, the class-1 images
    and how many of them the training forward pass predicted as class 1 (no extra pass)."""
    from torch import nn

    from entromix.modeling.fit import BatchPrep, train_epoch

    class Fixed(nn.Module):  # predicts class 1 exactly for the images whose first pixel is bright
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            bright = (x[:, 0, 0, 0] > 0).float() * 10 + self.w * 0
            return torch.stack([-bright + 5, bright - 5], 1)

    images = torch.zeros(8, 4, 4, 3, dtype=torch.uint8)
    images[[0, 1, 2], 0, 0] = 255  # predicted 1
    labels = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0])  # class 1: rows 0, 1, 4, 6; predicted 1 among them: 0, 1
    model = Fixed()
    optim = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda step: 0.1)
    batches = [torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])]
    stats = train_epoch(
        model,
        batches,
        images,
        lambda logits, idx: nn.functional.cross_entropy(logits, labels[idx]),
        optim,
        sched,
        BatchPrep(4),
        torch.device("cpu"),
        targets=labels,
    )
    assert (stats.positives, stats.true_positives, stats.recall_positive) == (4, 2, 0.5)
    assert stats.lr == pytest.approx(0.05) and stats.images == 8 and stats.images_per_s > 0
    without = train_epoch(
        model, batches, images, lambda lg, i: lg.sum() * 0, optim, sched, BatchPrep(4), torch.device("cpu")
    )
    assert without.recall_positive is None
