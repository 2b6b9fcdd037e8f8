"""Classifier architectures from torchvision with a fresh ``num_classes`` head.

Weights are never downloaded. By default a model starts from random initialisation (the
pipeline must run offline); ``weights_path`` names a local file of pretrained weights (a
``state_dict``, for example torchvision's ImageNet file copied onto the machine), loaded with
``torch.load(weights_only=True)``, or a torchvision weights name such as ``IMAGENET1K_V1`` or
``DEFAULT``, resolved to its file in the local torch hub cache (``$TORCH_HOME/hub/checkpoints``;
:func:`resolve_weights`). The classifier head of the file is skipped when its shape does not
match (ImageNet's 1000 classes vs our 2); every other tensor must match, except a ViT's position
embeddings, which are interpolated to the configured image size.

| name       | input size           | notes                                              |
|------------|----------------------|----------------------------------------------------|
| resnet18   | any (>= 32 px)       | the CPU default, at 64 px                          |
| resnet50   | any (>= 32 px)       | the reference design's default, at 224 px          |
| vit_b_16   | multiple of 16       | built for the configured image size               |
| swin_t     | multiple of 32       |                                                    |
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.vision_transformer import interpolate_embeddings

from entromix.common.errors import ParamsError
from entromix.common.torch_files import load_torch_file

MODEL_NAMES = ("resnet18", "resnet50", "vit_b_16", "swin_t")
TIMM_PREFIX = "timm:"  # model: timm:<architecture>, any of timm.list_models() (the optional extra entromix[timm])


def is_model_name(name: str) -> bool:
    """A torchvision name of :data:`MODEL_NAMES`, or ``timm:<architecture>`` (checked when built)."""
    return name in MODEL_NAMES or (name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX))


def check_model_and_size(section: str, model: str, image_size: int) -> None:
    """The checks the score and train sections share: a network this module builds, at a size it takes."""
    if not is_model_name(model):
        names = ", ".join(MODEL_NAMES)
        raise ParamsError(f"{section}.model is {model!r}; choose one of {names}, or timm:<architecture>.")
    if not 16 <= image_size <= 1024:
        raise ParamsError(f"{section}.image_size must be between 16 and 1024 px, got {image_size}.")


CNN_MODELS = ("resnet18", "resnet50")  # channels_last helps these (CPU and CUDA)


def build_model(
    name: str, num_classes: int, image_size: int, weights_path: str | None = None, section: str = ""
) -> nn.Module:
    """A torchvision ``name`` with a ``num_classes`` head; optionally load local weights.

    ``section`` (``score``, ``train``) names the params keys in error messages: ``<section>.model``
    for the architecture, ``<section>.pretrained_weights`` for the weights file.
    """
    prefix = f"{section}." if section else ""
    key = f"{prefix}model"
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name[len(TIMM_PREFIX) :], num_classes, weights_path, prefix)
    if name == "resnet18":
        model = tvm.resnet18(weights=None)
    elif name == "resnet50":
        model = tvm.resnet50(weights=None)
    elif name == "vit_b_16":
        if image_size % 16:
            raise ParamsError(f"{key}: vit_b_16 needs an image size that is a multiple of 16, got {image_size}.")
        model = tvm.vit_b_16(weights=None, image_size=image_size)
    elif name == "swin_t":
        if image_size % 32:
            raise ParamsError(f"{key}: swin_t needs an image size that is a multiple of 32, got {image_size}.")
        model = tvm.swin_t(weights=None)
    else:
        raise ParamsError(f"{key} is {name!r}; choose one of {', '.join(MODEL_NAMES)}.")
    if weights_path is not None:
        weights_key = f"{prefix}pretrained_weights"
        path = resolve_weights(name, str(weights_path), weights_key)
        _load_local_weights(model, path, weights_key, image_size if name == "vit_b_16" else None)
    _replace_head(model, name, num_classes)
    return model


#: torchvision's weights enum of each architecture: pretrained_weights may name a member (IMAGENET1K_V1, DEFAULT)
TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "vit_b_16": "ViT_B_16_Weights",
    "swin_t": "Swin_T_Weights",
}


def hub_checkpoints_dir() -> Path:
    """Where torchvision keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints`` (default
    ``~/.cache/torch/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(name: str, value: str, key: str) -> Path:
    """The weights file ``value`` names: a path as given, or a torchvision weights name for the
    architecture ``name`` (``IMAGENET1K_V1``, ``DEFAULT``) resolved to its file in the local torch
    hub cache. Never downloads: a name whose file is not cached is a ParamsError that says which
    file, where to put it and where to get it."""
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", value) or Path(value).exists():
        return Path(value)
    enum = getattr(tvm, TORCHVISION_WEIGHTS[name])
    if value not in enum.__members__:
        raise ParamsError(
            f"{key} is {value!r}: not a file, and not a torchvision weights name for {name} "
            f"(one of {', '.join(enum.__members__)}). Give a path to a state_dict file or one of those names."
        )
    weights = enum[value]
    path = hub_checkpoints_dir() / Path(urlparse(weights.url).path).name
    if not path.is_file():
        raise ParamsError(
            f"{key}: {name} weights {value} are not in the local torch hub cache ({path} does not exist), and "
            f"entromix never downloads. On a machine with network access fetch {weights.url} and copy it to "
            f"{path} (the folder is $TORCH_HOME/hub/checkpoints), or name the file's path in {key}; "
            "null trains from scratch."
        )
    return path


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    if name.startswith("resnet"):
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    elif name == "vit_b_16":
        model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
    elif name == "swin_t":
        model.head = nn.Linear(model.head.in_features, num_classes)


def _load_local_weights(model: nn.Module, path: Path, key: str, vit_image_size: int | None = None) -> None:
    fix = (
        f"entromix never downloads weights: copy a state_dict file onto this machine and name its path in {key}, "
        "or set the key to null to train from scratch."
    )
    if not path.is_file():
        raise ParamsError(f"{key}: pretrained weights file {path} does not exist. {fix}")
    state = load_torch_file(path, f"the pretrained weights named by {key}", fix, ParamsError)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ParamsError(f"{path} ({key}): not a state_dict (a mapping of parameter names to tensors). {fix}")
    if vit_image_size is not None and "encoder.pos_embedding" in state:
        state = _fit_vit_positions(state, vit_image_size, path)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    head = [k for k in mismatched if k.startswith(("fc.", "heads.", "head."))]
    body = [k for k in mismatched if k not in head]
    if body:
        raise ParamsError(
            f"{path} ({key}): tensor shapes do not match the architecture ({', '.join(body[:5])}). "
            "Is it the right model?"
        )
    state = {k: v for k, v in state.items() if k not in head}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("fc.", "heads.", "head."))]
    if missing or unexpected:
        raise ParamsError(
            f"{path} ({key}): does not fit the architecture (missing {missing[:5]}, unexpected {unexpected[:5]}). "
            "Is it the right model?"
        )


def _fit_vit_positions(state: dict, image_size: int, path: Path) -> dict:
    """ViT weights trained at another image size: the position embeddings interpolated (bicubic,
    torchvision's ``interpolate_embeddings``) to ``image_size``'s patch grid, with a note in the log."""
    tokens = state["encoder.pos_embedding"].shape[1] - 1  # minus the class token
    if tokens == (image_size // 16) ** 2:
        return state
    side = int(round(tokens**0.5))
    print(
        f"entromix: {path}: ViT position embeddings interpolated from a {side}x{side} patch grid "
        f"({side * 16} px) to {image_size // 16}x{image_size // 16} ({image_size} px)"
    )
    return dict(interpolate_embeddings(image_size, 16, OrderedDict(state)))


def _timm_model(arch: str, num_classes: int, weights: str | None, prefix: str) -> nn.Module:
    """A timm backbone with a ``num_classes`` head. ``weights``: None (from scratch), a local file,
    or a pretrained tag (``DEFAULT`` or one of timm's, e.g. ``in12k_ft_in1k``) read from the local
    Hugging Face cache only (offline: never downloads)."""
    key = f"{prefix}model"
    try:
        import huggingface_hub.constants
        import timm
    except ImportError:
        raise ParamsError(
            f"{key} is timm:{arch} but timm is not installed: pip install 'entromix[timm]' (or timm)."
        ) from None
    if not timm.is_model(arch):
        raise ParamsError(f"{key}: timm has no architecture {arch!r} (timm.list_models() lists them).")
    if weights is None:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    weights_key = f"{prefix}pretrained_weights"
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", weights) or Path(weights).exists():
        path = Path(weights)
        if not path.is_file():
            raise ParamsError(f"{weights_key}: pretrained weights file {path} does not exist.")
        return timm.create_model(
            arch, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(path)}
        )
    name = arch if weights == "DEFAULT" else f"{arch}.{weights}"
    huggingface_hub.constants.HF_HUB_OFFLINE = True  # the cache or nothing
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as exc:
        hub_id = getattr(timm.models.get_pretrained_cfg(name), "hf_hub_id", None) or name
        raise ParamsError(
            f"{weights_key}: timm weights {name} are not in the local Hugging Face cache "
            f"({huggingface_hub.constants.HF_HUB_CACHE}), and entromix never downloads ({type(exc).__name__}). "
            f"On a machine with network access run `huggingface-cli download {hub_id}` and copy that cache folder "
            f"here (or set HF_HOME to it), or name a weights file's path in {weights_key}; null trains from scratch."
        ) from None
