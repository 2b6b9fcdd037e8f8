"""The synthetic pool's "degraded" tier: image damage as a weak generator would leave it.

Pure compute on a finished float image (:func:`degrade`), applied by
:func:`entromix.demo.cells.render_field` after drawing. The JPEG-like damage is computed in numpy
rather than by an encoder so the bytes do not depend on the installed libjpeg.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from entromix.demo.stain import grey_axis_rotation

#: image degradations of the synthetic "degraded" tier (one per image)
DEGRADATIONS = ("blur", "noise", "off_stain", "jpeg")


def degrade(img: np.ndarray, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Spoil a float ``(H, W, 3)`` image in [0, 1] the way a weak generator does.

    * ``blur``: gaussian blur, sigma 1.6-3.0 px at 96 px (nuclear detail gone);
    * ``noise``: additive gaussian noise, sigma 0.08-0.16;
    * ``off_stain``: hue rotated by 50-130 degrees in OD space and saturation changed (a stain no
      lab produces: green, orange or grey cells);
    * ``jpeg``: 8x8 block DCT quantised at JPEG quality 4-12 with 2x chroma subsampling (blocking
      and ringing), computed in numpy so the bytes do not depend on the installed libjpeg.
    """
    size = img.shape[0]
    if kind == "blur":
        sigma = rng.uniform(1.6, 3.0) * size / 96
        out = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
    elif kind == "noise":
        out = img + rng.normal(0.0, rng.uniform(0.08, 0.16), img.shape).astype(np.float32)
    elif kind == "off_stain":
        od = -np.log(np.clip(img, 1.0 / 255, 1.0))  # (H, W, 3)
        rot = grey_axis_rotation(math.radians(rng.choice([-1, 1]) * rng.uniform(50, 130)))
        sat = rng.choice([rng.uniform(0.25, 0.55), rng.uniform(1.6, 2.2)])
        m = od.mean(axis=-1, keepdims=True)
        od = (m + sat * (od - m)) @ rot.T.astype(np.float32)
        out = np.exp(-np.clip(od, 0.0, None))
    elif kind == "jpeg":
        out = _jpeg_like(img, quality=int(rng.integers(4, 13)))
    else:
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# The standard JPEG quantisation tables (ITU-T T.81, Annex K), for quality 50.
_Q_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=np.float32,
)
_Q_CHROMA = np.full((8, 8), 99, dtype=np.float32)
_Q_CHROMA[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


def _jpeg_like(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG's lossy core on a float (H, W, 3) image: YCbCr, 4:2:0 chroma, 8x8 DCT quantisation.

    Tables scale as libjpeg does: ``q = floor((Q50 * s + 50) / 100)`` with ``s = 5000 / quality``
    below quality 50. Entropy coding is lossless and skipped.
    """
    h, w, _ = img.shape
    rgb = img.astype(np.float32) * 255.0
    m = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], np.float32)
    ycc = rgb @ m.T  # (H, W, 3): Y, Cb - 128, Cr - 128
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2 * quality
    tables = [np.maximum(np.floor((q * scale + 50) / 100), 1) for q in (_Q_LUMA, _Q_CHROMA, _Q_CHROMA)]
    out = np.empty_like(ycc)
    for c in range(3):
        plane = ycc[..., c] - (128.0 if c == 0 else 0.0)
        sub = 2 if c else 1  # 4:2:0: chroma at half resolution
        if sub == 2:
            plane = _block_mean(plane, 2)
        plane = _quantise_blocks(plane, tables[c])
        if sub == 2:
            plane = np.repeat(np.repeat(plane, 2, 0), 2, 1)[:h, :w]
        out[..., c] = plane + (128.0 if c == 0 else 0.0)
    rgb = out @ np.linalg.inv(m).T.astype(np.float32)
    return rgb / 255.0


def _block_mean(plane, k):
    h, w = plane.shape
    ph, pw = -h % k, -w % k
    p = np.pad(plane, ((0, ph), (0, pw)), mode="edge")
    return p.reshape(p.shape[0] // k, k, p.shape[1] // k, k).mean(axis=(1, 3))


def _quantise_blocks(plane, table):
    """8x8 orthonormal DCT-II (equal to JPEG's), round(coef / table) * table, inverse DCT."""
    h, w = plane.shape
    p = np.pad(plane, ((0, -h % 8), (0, -w % 8)), mode="edge")
    bh, bw = p.shape[0] // 8, p.shape[1] // 8
    blocks = p.reshape(bh, 8, bw, 8).transpose(0, 2, 1, 3)  # (bh, bw, 8, 8)
    coef = fft.dctn(blocks, axes=(-2, -1), norm="ortho")
    coef = np.round(coef / table) * table
    back = fft.idctn(coef, axes=(-2, -1), norm="ortho")
    return back.transpose(0, 2, 1, 3).reshape(p.shape)[:h, :w]
