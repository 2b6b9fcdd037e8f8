"""Batch preparation and the reference design's augmentations, as tensor ops on the training device.

Images live as uint8 (N, H, W, 3); a batch becomes float (B, 3, S, S) here, on whatever device
the batch is on, so a GPU never waits for a CPU data loader and no image is decoded again.

Augmentations (the reference's ``RandomHorizontalFlip(0.5)``, ``RandomVerticalFlip(0.3)``,
``RandomRotation(10)``, ``RandomAffine(translate=0.05, scale=(0.9, 1.1))`` and ``ColorJitter``),
drawn per image from a seeded ``torch.Generator``, plus optional rotations by a random multiple of
90 degrees (``rotate90``: a smear has no "up", so with the flips this covers all eight
orientations of the square):

* flips, rotation, translation and scale are folded into one 2x3 affine matrix per image and
  applied with a single ``grid_sample`` (reflection padding, so no black corners);
* colour jitter: brightness ``x * b``, contrast ``(x - mean) * c + mean``, saturation
  ``gray + (x - gray) * s`` with ``b, c, s ~ U(1 - j, 1 + j)``, and a hue rotation of up to
  ``j / 4`` of a turn in YIQ space; then clamped to [0, 1]. Stain colour varies between labs and
  slides, and the scorer trained without colour jitter keys on it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def to_float(batch_u8: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, size, size) in [0, 1], resized if H != size."""
    x = batch_u8.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def normalize(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean/std normalisation of a (B, 3, H, W) batch in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def augment(
    x: torch.Tensor,
    gen: torch.Generator,
    hflip: float = 0.5,
    vflip: float = 0.3,
    rotation_deg: float = 10.0,
    translate: float = 0.05,
    scale: tuple[float, float] = (0.9, 1.1),
    color_jitter: float = 0.2,
    rotate90: bool = False,
) -> torch.Tensor:
    """Randomly flip, rotate, shift, scale and colour-jitter a (B, 3, H, W) batch in [0, 1]."""
    b, device = x.shape[0], x.device
    # geometric: output pixel -> input pixel mapping in normalised coordinates
    angle = _uniform(b, -rotation_deg, rotation_deg, gen, device) * (math.pi / 180.0)
    if rotate90:
        quarter_turns = torch.randint(0, 4, (b,), generator=gen, device=device)
        angle = angle + quarter_turns.to(angle.dtype) * (math.pi / 2)
    zoom = _uniform(b, scale[0], scale[1], gen, device)
    fx = torch.where(torch.rand(b, generator=gen, device=device) < hflip, -1.0, 1.0)
    fy = torch.where(torch.rand(b, generator=gen, device=device) < vflip, -1.0, 1.0)
    shift = _uniform(2 * b, -2 * translate, 2 * translate, gen, device).view(b, 2)  # [-1, 1] spans the image
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * fx, -sin * fy, shift[:, 0]], 1), torch.stack([sin * fx, cos * fy, shift[:, 1]], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if color_jitter <= 0:
        return x
    j = color_jitter
    brightness = _uniform(b, 1 - j, 1 + j, gen, device).view(b, 1, 1, 1)
    contrast = _uniform(b, 1 - j, 1 + j, gen, device).view(b, 1, 1, 1)
    saturation = _uniform(b, 1 - j, 1 + j, gen, device).view(b, 1, 1, 1)
    hue = _uniform(b, -j / 4, j / 4, gen, device) * (2 * math.pi)
    x = x * brightness
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)  # (B, 1, H, W)
    x = (x - gray.mean(dim=(2, 3), keepdim=True)) * contrast + gray.mean(dim=(2, 3), keepdim=True)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = gray + (x - gray) * saturation
    # hue: rotate the chroma (I, Q) plane of YIQ by a per-image angle
    to_yiq, to_rgb = _RGB_TO_YIQ.to(x), _YIQ_TO_RGB.to(x)
    c, s = torch.cos(hue), torch.sin(hue)
    rot = torch.zeros(b, 3, 3, device=device, dtype=x.dtype)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = c, -s, s, c
    matrix = to_rgb @ rot @ to_yiq  # (B, 3, 3)
    x = torch.einsum("bij,bjhw->bihw", matrix, x)
    return x.clamp_(0.0, 1.0)
