"""Draw one blood-smear-like field in numpy: red cells behind one white cell, stained and lit.

Pure compute, no file I/O: every function takes a ``numpy.random.Generator`` and returns arrays,
so an image depends only on the generator it is given (the caller seeds one per image).

Optical model (Beer-Lambert, as in a bright-field microscope)::

    I(y, x) = L(y, x) * exp(-OD(y, x))         I, L, OD: (H, W, 3), I in [0, 1]
    OD      = sum_k a_k(y, x) * od_k           a_k in [0, 1]: coverage/thickness of component k

``od_k = -ln(colour_k)`` is the optical density of stain component k (plasma, red cell, cytoplasm,
nucleus, nucleolus, platelet) per RGB channel, and ``L`` the illumination field. Absorbances add,
so overlapping red cells look darker as in real smears, and a stain change (hue, saturation,
strength) is a transform of the ``od_k`` vectors, not of the finished image.

What tells the classes apart (the task the demo sets):

* benign, mature lymphocyte: small (radius 1.05-1.5x a red cell), round and smooth, dense dark
  purple nucleus filling most of the cell (often eccentric, leaving a crescent of pale-blue
  cytoplasm), coarse low-contrast chromatin, no nucleoli;
* malignant, lymphoblast: larger (radius 1.45-2.3x a red cell; the two ranges overlap a little),
  outline modulated by low-frequency angular harmonics and sometimes cleft, lighter purple nucleus
  with fine chromatin (high-frequency noise) and 1-3 pale nucleoli (none in 15 %), scanty
  cytoplasm.

Nuclear colour and chromatin grain follow a "maturity" in [0, 1] drawn per cell from separate
class ranges, so under stain variation colour is a strong cue but not a perfect one. As a
measure of difficulty: at 64 px, logistic regression on two hand features (stained-nucleus area,
its mean green level) separates the classes with about 98 % accuracy; a CNN sees more (texture,
nucleoli, outline).

Edges are anti-aliased: a shape's coverage is ``clip((r(theta) - rho) / w + 0.5, 0, 1)`` with
``rho, theta`` the polar coordinates of the pixel centre, ``r(theta)`` the outline radius and ``w``
the edge width in pixels. Each shape is evaluated only in its bounding box.

The stain (colours, optical densities) is :mod:`entromix.demo.stain`; the damage of the synthetic
"degraded" tier is :mod:`entromix.demo.degradations`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from entromix.demo.degradations import degrade
from entromix.demo.stain import Stain

#: cell kinds the renderer draws
LYMPHOCYTE = "lymphocyte"
LYMPHOBLAST = "lymphoblast"
CELL_KINDS = (LYMPHOCYTE, LYMPHOBLAST)

# Geometry in units of the image side S, so a field looks the same at any resolution.
_RBC_RADIUS = 0.09  # median red-cell radius / S (about 9 px at 96 px)
_LYMPHOCYTE_RADIUS = (1.05, 1.5)  # x red-cell radius: "about a red cell or a bit larger"
_LYMPHOBLAST_RADIUS = (1.45, 2.3)  # x red-cell radius: 1.5-2x the lymphocyte, overlap 1.45-1.5
# Chromatin maturity (0 = blast, 1 = mature; see _paint_white_cell), with a gap between classes.
_MATURITY = {LYMPHOCYTE: (0.6, 1.0), LYMPHOBLAST: (0.0, 0.45)}


def render_field(
    rng: np.random.Generator,
    size: int,
    cell: str,
    stain: Stain,
    degradation: str | None = None,
) -> np.ndarray:
    """Draw one field: ``(size, size, 3)`` uint8 RGB with a ``cell`` near the centre.

    ``degradation`` (one of :data:`entromix.demo.degradations.DEGRADATIONS`) spoils the finished
    image as a weak generator would; ``None`` leaves it realistic.
    """
    if cell not in CELL_KINDS:
        raise ValueError(f"cell must be one of {CELL_KINDS}, got {cell!r}")
    img = draw_field(rng, size, cell, stain)
    if degradation is not None:
        img = degrade(img, rng, degradation)
    return to_uint8(img)


def draw_field(rng: np.random.Generator, size: int, cell: str, stain: Stain) -> np.ndarray:
    """The clean field as float32 ``(size, size, 3)`` in [0, 1] (before quantisation)."""
    s = float(size)
    pal = stain.palette()
    rbc_r = _RBC_RADIUS * s * rng.uniform(0.92, 1.08)  # this field's red-cell size (magnification)

    # Plasma: a thin film, slightly uneven (low-frequency thickness variation of about 10 %).
    thick = 1.0 + 0.1 * _smooth_noise(rng, size, cells=5)  # (S, S)
    film = thick[..., None] * pal["plasma"]  # (S, S, 3)
    od = np.zeros((size, size, 3), np.float32)  # everything on top of the film

    # Red cells behind the white cell; some overlap (absorbances add), some cut by the border.
    for _ in range(int(rng.integers(8, 17))):
        cy, cx = rng.uniform(-0.6 * rbc_r, s + 0.6 * rbc_r, 2)
        _add_red_cell(od, rng, cy, cx, rbc_r * rng.uniform(0.9, 1.1), pal["rbc"])
    for _ in range(int(rng.integers(0, 3))):  # platelets: tiny purple granules
        cy, cx = rng.uniform(0, s, 2)
        r = rbc_r * rng.uniform(0.12, 0.22)
        _add_shape(od, cy, cx, r, _outline(rng, r, amp=0.12), pal["platelet"] * 1.5, edge=1.0)

    # The white cell, jittered around the centre, painted over (it pushes the red cells aside).
    cy, cx = s / 2 + rng.uniform(-0.08, 0.08, 2) * s
    if cell == LYMPHOCYTE:
        _paint_lymphocyte(od, rng, cy, cx, rbc_r, pal)
    else:
        _paint_lymphoblast(od, rng, cy, cx, rbc_r, pal)

    # Illumination: lamp gain x linear gradient x vignette x white balance (per channel).
    yy, xx = _grid(size)
    ang = rng.uniform(0, 2 * np.pi)
    grad = 1.0 + rng.uniform(0.0, 0.08) * ((np.cos(ang) * xx + np.sin(ang) * yy) / s - 0.5)
    vign = 1.0 - rng.uniform(0.0, 0.12) * (((xx - s / 2) ** 2 + (yy - s / 2) ** 2) / (s * s / 2))
    light = (stain.brightness * grad * vign)[..., None] * np.asarray(stain.white_balance, np.float32)

    img = light * np.exp(-(film + od))  # (S, S, 3)
    # Optics: slight defocus, then sensor noise.
    img = ndimage.gaussian_filter(img, sigma=(0.45 * s / 96, 0.45 * s / 96, 0), mode="nearest")
    img = img + rng.normal(0.0, rng.uniform(0.005, 0.014), img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 [0, 255], rounding to nearest."""
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# cells


def _paint_lymphocyte(od, rng, cy, cx, rbc_r, pal) -> None:
    """Mature lymphocyte: small, round, smooth, dark nucleus filling 75-90 % of the radius."""
    r_cell = rbc_r * rng.uniform(*_LYMPHOCYTE_RADIUS)
    r_nuc = r_cell * rng.uniform(0.75, 0.9)
    _paint_white_cell(
        od,
        rng,
        cy,
        cx,
        pal,
        maturity=rng.uniform(*_MATURITY[LYMPHOCYTE]),
        cell=_outline(rng, r_cell, amp=0.02, k_max=4),
        nuc=_outline(rng, r_nuc, amp=0.03, k_max=4),
        # eccentric nucleus: the cytoplasm shows as a crescent on one side
        shift=(r_cell - r_nuc) * rng.uniform(0.2, 0.8),
        n_nucleoli=0,
    )


def _paint_lymphoblast(od, rng, cy, cx, rbc_r, pal) -> None:
    """Lymphoblast: large, irregular, high N:C ratio, light fine chromatin, usually nucleoli."""
    r_cell = rbc_r * rng.uniform(*_LYMPHOBLAST_RADIUS)
    r_nuc = r_cell * rng.uniform(0.8, 0.92)
    notch = None
    if rng.random() < 0.35:  # nuclear cleft / indentation: (direction, depth, angular width)
        notch = (rng.uniform(0, 2 * np.pi), rng.uniform(0.15, 0.35), rng.uniform(0.15, 0.35))
    _paint_white_cell(
        od,
        rng,
        cy,
        cx,
        pal,
        maturity=rng.uniform(*_MATURITY[LYMPHOBLAST]),
        cell=_outline(rng, r_cell, amp=rng.uniform(0.03, 0.08), k_max=5),
        nuc=_outline(rng, r_nuc, amp=rng.uniform(0.03, 0.07), k_max=5, notch=notch),
        shift=(r_cell - r_nuc) * rng.uniform(0.0, 0.5),
        # 1-3 nucleoli; some blasts (L1-like) show none, which keeps the task from being trivial
        n_nucleoli=int(rng.integers(1, 4)) if rng.random() > 0.15 else 0,
    )


def _paint_white_cell(od, rng, cy, cx, pal, *, maturity, cell, nuc, shift, n_nucleoli) -> None:
    """Paint cytoplasm + textured nucleus (+ nucleoli) over ``od`` (S, S, 3, above the film), in place.

    ``maturity`` m in [0, 1] blends blast (0) and mature (1) appearance, as a cell's chromatin
    condenses: nucleus and cytoplasm OD ``od = (1 - m) od_blast + m od_mature``, chromatin
    grain sigma ``0.55 -> 1.4`` px at 96 px (fine -> clumped) and contrast ``0.22 -> 0.14``. The
    classes draw m from separate ranges (:data:`_MATURITY`), so colour is a strong cue but, under
    stain variation, not a perfect one. ``cell``/``nuc`` are outlines from :func:`_outline`.
    """
    size = od.shape[0]
    sl, yy, xx = _patch(size, cy, cx, cell.r_max + 2)
    if sl is None:
        return
    m = float(maturity)
    a = rng.uniform(0, 2 * np.pi)
    ncy, ncx = cy + shift * np.sin(a), cx + shift * np.cos(a)
    rho, th = _polar(yy, xx, cy, cx)
    a_cell = _coverage(cell.radius(th), rho, edge=1.1)  # (h, w)
    nrho, nth = _polar(yy, xx, ncy, ncx)
    # Keep the nucleus inside the cell with at least a hair of cytoplasm (0.6 px).
    a_nuc = np.minimum(_coverage(nuc.radius(nth), nrho, edge=1.0), _coverage(cell.radius(th) - 0.6, rho, 1.0))

    sigma, amp = (1 - m) * 0.55 + m * 1.4, (1 - m) * 0.22 + m * 0.14
    tex = ndimage.gaussian_filter(rng.standard_normal(a_cell.shape).astype(np.float32), sigma * size / 96)
    tex *= amp / max(float(tex.std()), 1e-6)  # set the contrast whatever sigma did to the variance
    nuc_od = (1 - m) * pal["nucleus_blast"] + m * pal["nucleus_mature"]  # (3,)
    cyto_od = (1 - m) * pal["cyto_blast"] + m * pal["cyto_mature"]
    nuc_map = (1.0 + tex)[..., None] * nuc_od  # (h, w, 3)
    for _ in range(n_nucleoli):  # pale round bodies in the inner half of the nucleus
        rr, aa = nuc.r0 * 0.55 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        d = np.hypot(yy - (ncy + rr * np.sin(aa)), xx - (ncx + rr * np.cos(aa)))
        a_nl = _coverage(np.float32(nuc.r0 * rng.uniform(0.12, 0.2)), d, edge=1.3)[..., None]  # (h, w, 1)
        nuc_map = nuc_map * (1 - a_nl) + a_nl * (pal["nucleolus"] + 0.25 * nuc_od)
    cyto_map = (1.0 + 0.3 * tex)[..., None] * cyto_od
    cell_map = cyto_map * (1 - a_nuc[..., None]) + nuc_map * a_nuc[..., None]
    # The cell sits in the plasma film and pushes the red cells aside: over its coverage the
    # red-cell absorbance gives way to the cell's own.
    od[sl] = od[sl] * (1 - a_cell[..., None]) + a_cell[..., None] * cell_map


def _add_red_cell(od, rng, cy, cx, r, rbc_od) -> None:
    """Add one red cell (biconcave disc: pale centre, denser rim) to ``od`` (S, S, 3), in place."""
    size = od.shape[0]
    shape = _outline(rng, r, amp=0.035, k_max=3)
    sl, yy, xx = _patch(size, cy, cx, shape.r_max + 2)
    if sl is None:
        return
    rho, th = _polar(yy, xx, cy, cx)
    a = _coverage(shape.radius(th), rho, edge=1.1)  # (h, w)
    pallor = rng.uniform(0.45, 0.75)
    # Super-gaussian dip: a flat pale centre within about half the radius, then the thick rim.
    thickness = 1.0 - pallor * np.exp(-((rho / (0.5 * r)) ** 4))
    od[sl] += (a * thickness)[..., None] * rbc_od


def _add_shape(od, cy, cx, r, shape, colour_od, edge) -> None:
    size = od.shape[0]
    sl, yy, xx = _patch(size, cy, cx, shape.r_max + 2)
    if sl is None:
        return
    rho, th = _polar(yy, xx, cy, cx)
    od[sl] += _coverage(shape.radius(th), rho, edge)[..., None] * colour_od


# --------------------------------------------------------------------------------------------
# geometry


@dataclass(frozen=True)
class _Outline:
    """Closed outline ``r(theta) = r0 * (1 + sum_k a_k cos(k theta + phi_k)) - cleft(theta)``.

    Harmonics start at k = 2 (k = 1 would only shift the centre). The cleft is a gaussian dent
    ``depth * r0 * exp(-d^2 / (2 width^2))`` with ``d`` the angular distance to its direction.
    """

    r0: float
    ks: np.ndarray  # (K,)
    amps: np.ndarray  # (K,)
    phases: np.ndarray  # (K,)
    notch: tuple[float, float, float] | None  # (angle, depth, width) or None

    @property
    def r_max(self) -> float:
        return self.r0 * (1.0 + float(np.abs(self.amps).sum()))

    def radius(self, theta: np.ndarray) -> np.ndarray:
        """Outline radius at every angle; ``theta`` (h, w) -> (h, w)."""
        harm = np.cos(theta[..., None] * self.ks + self.phases) @ self.amps  # (h, w)
        r = self.r0 * (1.0 + harm)
        if self.notch is not None:
            ang, depth, width = self.notch
            d = np.angle(np.exp(1j * (theta - ang)))  # wrapped to (-pi, pi]
            r = r - depth * self.r0 * np.exp(-(d**2) / (2 * width**2))
        return r.astype(np.float32)


def _outline(rng, r0, amp, k_max=4, notch=None) -> _Outline:
    """Random outline with harmonics 2..k_max, amplitude ``amp / sqrt(k - 1)`` (smooth: low k dominate)."""
    ks = np.arange(2, k_max + 1, dtype=np.float32)
    amps = (amp * rng.uniform(0.3, 1.0, ks.size) / np.sqrt(ks - 1)).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, ks.size).astype(np.float32)
    return _Outline(float(r0), ks, amps, phases, notch)


def _coverage(r, rho, edge):
    """Soft inside-ness in [0, 1]: 1 well inside, 0.5 on the outline, linear over ``edge`` px."""
    return np.clip((r - rho) / edge + 0.5, 0.0, 1.0).astype(np.float32)


def _patch(size, cy, cx, rmax):
    """Bounding box of a disc clipped to the image: (slices, yy (h, 1), xx (1, w)) pixel centres."""
    y0, y1 = max(int(cy - rmax), 0), min(int(math.ceil(cy + rmax)) + 1, size)
    x0, x1 = max(int(cx - rmax), 0), min(int(math.ceil(cx + rmax)) + 1, size)
    if y0 >= y1 or x0 >= x1:
        return None, None, None
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return (slice(y0, y1), slice(x0, x1)), yy, xx


def _polar(yy, xx, cy, cx):
    dy, dx = yy - np.float32(cy), xx - np.float32(cx)
    return np.hypot(dy, dx), np.arctan2(dy, dx)  # (h, w) each


@lru_cache(maxsize=8)
def _grid(size: int):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return yy, xx  # (S, S) each; cached, never written to


def _smooth_noise(rng, size, cells):
    """Low-frequency noise (S, S), zero mean, unit-ish amplitude: a (cells+1)^2 grid, cubic-upsampled."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return ndimage.zoom(coarse, size / (cells + 1), order=3, mode="nearest")[:size, :size]
