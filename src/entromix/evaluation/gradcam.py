"""Grad-CAM of the evaluated model on test images: where it looked when it got a case wrong.

The cases (:func:`select_cases`): the test errors at the tuned threshold, false negatives first
(the misses a clinician fears; lowest P(malignant) first), then false positives (highest first),
up to ``errors``; then ``correct`` correctly called images, a seeded sample, half malignant.

Each case is explained for the class the model called at the threshold (a false negative: what
made it say benign), with pytorch-grad-cam's ``GradCAM`` on a late convolutional stage
(:func:`cam_layer`). The input is prepared exactly as the evaluate stage's predictions
(``entromix.modeling.fit.prepare_batch``: resized to the checkpoint's image size, ImageNet
normalisation, channels_last for CNNs), in float32, so the map explains the evaluated model; the
figure shows the image at the model's input size, the map over it, the true label, P(malignant)
and the threshold.

The target layer: the last block of the deepest stage (torchvision resnet ``layer1``..``layer4``,
timm ``layer1``..``layer4`` or ``stages``) whose feature map is at least :data:`MIN_CAM_SIDE`
pixels on a side at the model's input size; at 224 px that is resnet's ``layer4[-1]`` (7x7, the
usual Grad-CAM layer), at 64 px ``layer2[-1]`` (8x8: ``layer3``'s 4x4 cells are 16 px squares, too
coarse to say which part of a cell the model looked at). Transformers (ViT, Swin) and architectures
without such stages get no map: a log line and a figure that says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from entromix.evaluation.figures import plot_message, save_figure
from entromix.modeling.augment import to_float
from entromix.modeling.ensemble import members
from entromix.modeling.fit import prepare_batch
from entromix.modeling.models import TIMM_PREFIX

MIN_CAM_SIDE = 7  # pixels of the target layer's map: 7x7 as at 224 px; a 4x4 map says little about a cell
TRANSFORMERS = ("vit", "swin", "deit", "beit", "eva", "cait", "xcit", "mixer", "levit", "pvt", "twins")
KIND_ORDER = ("FN", "FP", "TP", "TN")


@dataclass(frozen=True)
class CamLayer:
    layer: nn.Module | None  # None: no Grad-CAM for this architecture
    name: str  # e.g. "layer3[-1]"; or why there is none
    side: int = 0  # the map's side in pixels at the model's input size
    # the same layer in every member of an ensemble (entromix.modeling.ensemble): their maps are averaged
    layers: tuple[nn.Module, ...] = ()

    @property
    def targets(self) -> list[nn.Module]:
        return list(self.layers) or ([] if self.layer is None else [self.layer])


def select_cases(
    labels: np.ndarray, probability: np.ndarray, threshold: float, errors: int, correct: int, seed: int
) -> list[tuple[int, str]]:
    """``[(row, kind), ...]``: FN by ascending P(malignant), then FP by descending, ``errors`` in all;
    then ``correct`` seeded TP / TN rows (TP first, half of them rounded up, the rest TN)."""
    labels, p = np.asarray(labels).astype(int), np.asarray(probability, dtype=np.float64)
    called = p >= threshold
    rows = np.arange(len(p))
    fn = rows[(labels == 1) & ~called][np.lexsort((rows[(labels == 1) & ~called], p[(labels == 1) & ~called]))]
    fp = rows[(labels == 0) & called][np.lexsort((rows[(labels == 0) & called], -p[(labels == 0) & called]))]
    cases = [(int(r), "FN") for r in fn] + [(int(r), "FP") for r in fp]
    cases = cases[:errors]
    rng = np.random.default_rng(seed)
    tp, tn = rows[(labels == 1) & called], rows[(labels == 0) & ~called]
    n_tp = min(len(tp), (correct + 1) // 2)
    n_tn = min(len(tn), correct - n_tp)
    n_tp = min(len(tp), correct - n_tn)
    for kind, pool, n in (("TP", tp, n_tp), ("TN", tn, n_tn)):
        cases += [(int(r), kind) for r in sorted(rng.choice(pool, size=n, replace=False))] if n else []
    return cases


def _stages(model: nn.Module, model_name: str) -> list[tuple[str, nn.Module]]:
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [(f"layer{i}[-1]", getattr(model, f"layer{i}")[-1]) for i in range(1, 5)]
    if model_name.startswith(TIMM_PREFIX) and isinstance(getattr(model, "stages", None), nn.Sequential):
        return [(f"stages[{i}]", stage) for i, stage in enumerate(model.stages)]
    return []


@torch.no_grad()
def _map_sides(model: nn.Module, modules: list[nn.Module], image_size: int, device: torch.device) -> list[int]:
    """The side of each module's output map for one blank input (0 when it is not an NCHW square)."""
    shapes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape))) for m in modules]
    try:
        model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for h in hooks:
            h.remove()
    return [s[2] if len(s) == 4 and s[2] == s[3] else 0 for s in shapes]


def cam_layer(model: nn.Module, model_name: str, image_size: int, device: torch.device) -> CamLayer:
    """The Grad-CAM target layer for ``model`` (see module doc), or a CamLayer with ``layer`` None and
    the reason. For an ensemble: the same layer in every member (their maps are averaged)."""
    arch = model_name.removeprefix(TIMM_PREFIX).lower()
    if any(arch.startswith(t) for t in TRANSFORMERS):
        return CamLayer(None, f"{model_name} is a transformer: Grad-CAM of a convolutional stage does not apply")
    nets = members(model)
    if len(nets) > 1:
        first = cam_layer(nets[0], model_name, image_size, device)
        if first.layer is None:
            return first
        index = [m for _, m in _stages(nets[0], model_name)].index(first.layer)
        layers = tuple(_stages(net, model_name)[index][1] for net in nets)
        return CamLayer(first.layer, f"{first.name} of each of {len(nets)} members", first.side, layers)
    stages = _stages(model, model_name)
    if not stages:
        return CamLayer(None, f"{model_name}: no known convolutional stages to take Grad-CAM from")
    sides = _map_sides(model, [m for _, m in stages], image_size, device)
    if not any(sides):
        return CamLayer(None, f"{model_name}: its stages do not give (B, C, H, W) maps")
    usable = [i for i, s in enumerate(sides) if s >= MIN_CAM_SIDE] or [max(range(len(sides)), key=sides.__getitem__)]
    i = usable[-1]
    return CamLayer(stages[i][1], stages[i][0], sides[i])


def gradcam_maps(
    model: nn.Module,
    layer: nn.Module | list[nn.Module],
    images_u8: np.ndarray,
    classes: list[int],
    image_size: int,
    channels_last: bool,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (N, S, S) in [0, 1] for ``classes`` (one per image) and the images as the model
    saw them, (N, S, S, 3) float in [0, 1], ``S`` = ``image_size``. Several layers (an ensemble's
    members, :attr:`CamLayer.targets`): the mean of their maps."""
    layers = layer if isinstance(layer, list) else [layer]
    batch = torch.from_numpy(np.ascontiguousarray(images_u8)).to(device)
    shown = to_float(batch, image_size).permute(0, 2, 3, 1).cpu().numpy()  # (N, S, S, 3)
    x = prepare_batch(batch, image_size, None, 0.0, channels_last)  # as predict_logits
    # gradients only from the output back to ``layer``: the layers before it need none (about
    # half the backward pass); each parameter's requires_grad is restored afterwards
    before = {p: p.requires_grad for p in model.parameters()}
    own = [p for target in layers for p in target.parameters()]
    try:
        for p in model.parameters() if own else []:
            p.requires_grad_(False)
        for p in own:
            p.requires_grad_(True)
        with GradCAM(model=model, target_layers=layers) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
    return maps.astype(np.float32), np.clip(shown, 0.0, 1.0)


def plot_gradcam(
    cases: list[tuple[int, str]],
    shown: np.ndarray,
    maps: np.ndarray,
    labels: list[str],
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    title: str,
    path: str | Path,
    per_row: int = 3,
) -> None:
    """A grid of (image, image + map) pairs, ``per_row`` cases a row, with kind, label, P(malignant)."""
    n_rows = max(1, -(-len(cases) // per_row))
    fig, axes = plt.subplots(n_rows, 2 * per_row, figsize=(1.45 * 2 * per_row, 0.5 + 1.75 * n_rows), dpi=110)
    axes = np.atleast_2d(axes)
    for ax in axes.flat:
        ax.axis("off")
    for k, (row, kind) in enumerate(cases):
        a, b = axes[k // per_row, 2 * (k % per_row)], axes[k // per_row, 2 * (k % per_row) + 1]
        a.imshow(shown[k], interpolation="nearest")
        b.imshow(show_cam_on_image(shown[k].astype(np.float32), maps[k], use_rgb=True), interpolation="nearest")
        sign = ">=" if p[row] >= threshold else "<"
        colour = "#d62728" if kind in ("FN", "FP") else "black"
        a.set_title(f"{kind}: true {labels[int(y[row])]}", fontsize=7, color=colour, pad=2)
        b.set_title(f"p_mal {p[row]:.3f} {sign} {threshold:.3f}", fontsize=7, pad=2)
    fig.suptitle(title, fontsize=8)
    save_figure(fig, path)


def gradcam_figure(
    trained,
    test_ids: np.ndarray,
    images: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    cases,
    labels,
    side_classes: np.ndarray | None = None,
):
    """``draw(path)`` for the Grad-CAM grid of ``cases`` (:func:`select_cases`) of the test images
    (``test_ids``: their rows of ``images``; ``y``, ``p``: labels and P(malignant)); a figure that
    says why when the architecture has no usable convolutional stage or there are no cases.
    ``labels``: the binary view's two names; ``side_classes``: (N, 2) the model label to explain
    for each test image when called benign and when called malignant (None: labels 0 and 1)."""
    name, size = str(trained.checkpoint["model_name"]), trained.image_size
    target = cam_layer(trained.model, name, size, trained.device)
    if target.layer is None or not cases:
        why = (
            target.name
            if target.layer is None
            else "no test case to show (evaluate.gradcam_errors and gradcam_correct)"
        )
        print(f"entromix evaluate: no Grad-CAM figure: {why}")
        return lambda path: plot_message("Grad-CAM of test cases", [f"Not drawn: {why}."], path)
    rows = [r for r, _ in cases]
    called = [int(p[r] >= threshold) for r in rows]  # the side the model called at the threshold
    if side_classes is not None:  # a multi-class model: that side's most probable label
        called = [int(side_classes[r, side]) for r, side in zip(rows, called)]
    maps, shown = gradcam_maps(
        trained.model, target.targets, images[test_ids[rows]], called, size, trained.channels_last, trained.device
    )
    n_err = sum(kind in ("FN", "FP") for _, kind in cases)
    title = (
        f"Grad-CAM of the class called at threshold {threshold:.3f}: {name} {target.name}, "
        f"{target.side}x{target.side} map at {size} px\n{n_err} test errors, false negatives first (their map: "
        f"what looked benign), then {len(cases) - n_err} correct"
    )
    print(f"entromix evaluate: Grad-CAM of {len(cases)} test images on {name} {target.name}")
    return lambda path: plot_gradcam(cases, shown, maps, labels, y, p, threshold, title, path)
