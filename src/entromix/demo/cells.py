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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import fft, ndimage

#: cell kinds the renderer draws
LYMPHOCYTE = "lymphocyte"
LYMPHOBLAST = "lymphoblast"
CELL_KINDS = (LYMPHOCYTE, LYMPHOBLAST)

#: image degradations of the synthetic "degraded" tier (one per image)
DEGRADATIONS = ("blur", "noise", "off_stain", "jpeg")

# Transmitted colour (RGB in (0, 1]) of each component at full coverage under the median stain,
# read off Wright-Giemsa smears. OD = -ln(colour) relative to the plasma layer underneath.
_BASE_COLOURS = {
    "plasma": (0.95, 0.91, 0.93),
    "rbc": (0.90, 0.63, 0.67),
    "cyto_mature": (0.76, 0.83, 0.96),  # thin pale-blue rim
    "cyto_blast": (0.72, 0.77, 0.94),  # basophilic, a little deeper blue
    "nucleus_mature": (0.33, 0.18, 0.50),  # dense, dark purple
    "nucleus_blast": (0.56, 0.44, 0.76),  # open chromatin, lighter purple
    "nucleolus": (0.80, 0.78, 0.95),  # pale, bluish
    "platelet": (0.55, 0.38, 0.70),
}
# Stain "groups": Giemsa's basic dye (blue/purple: nuclei, cytoplasm, platelets) and acid dye
# (eosin: red cells) vary independently between labs and patients.
_BASIC = ("cyto_mature", "cyto_blast", "nucleus_mature", "nucleus_blast", "nucleolus", "platelet")

# Geometry in units of the image side S, so a field looks the same at any resolution.
_RBC_RADIUS = 0.09  # median red-cell radius / S (about 9 px at 96 px)
_LYMPHOCYTE_RADIUS = (1.05, 1.5)  # x red-cell radius: "about a red cell or a bit larger"
_LYMPHOBLAST_RADIUS = (1.45, 2.3)  # x red-cell radius: 1.5-2x the lymphocyte, overlap 1.45-1.5
# Chromatin maturity (0 = blast, 1 = mature; see _paint_white_cell), with a gap between classes.
_MATURITY = {LYMPHOCYTE: (0.6, 1.0), LYMPHOBLAST: (0.0, 0.45)}


@dataclass(frozen=True)
class Stain:
    """One stain and illumination setting; ``Stain()`` is the median stain.

    ``palette()`` maps it to optical densities: for every component
    ``od' = strength * group_gain * R(hue) @ (m + saturation * (od - m))`` with ``m`` the mean of
    ``od`` over RGB (so saturation scales the colour, not the darkness) and ``R`` a rotation about
    the grey axis (1, 1, 1) (a hue shift in OD space). ``group_gain`` is ``basic_gain`` for the
    blue/purple components and ``eosin_gain`` for red cells.
    """

    hue_deg: float = 0.0  # rotation about the grey axis in OD space
    saturation: float = 1.0
    basic_gain: float = 1.0  # strength of the blue/purple dye (nuclei, cytoplasm)
    eosin_gain: float = 1.0  # strength of the pink dye (red cells)
    strength: float = 1.0  # overall staining density (smear thickness)
    brightness: float = 1.0  # lamp gain
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # camera per-channel gain

    def jitter(self, rng: np.random.Generator, scale: float = 1.0) -> Stain:
        """Same stain with small per-image changes (slide position, focus, exposure)."""
        d = rng.uniform(-1.0, 1.0, 9) * scale  # (9,): one draw per setting, fixed order
        return replace(
            self,
            hue_deg=self.hue_deg + 3.0 * d[0],
            saturation=self.saturation * (1.0 + 0.05 * d[1]),
            basic_gain=self.basic_gain * (1.0 + 0.05 * d[2]),
            eosin_gain=self.eosin_gain * (1.0 + 0.05 * d[3]),
            strength=self.strength * (1.0 + 0.04 * d[4]),
            brightness=self.brightness * (1.0 + 0.04 * d[5]),
            white_balance=tuple(float(w * (1.0 + 0.015 * e)) for w, e in zip(self.white_balance, d[6:])),
        )

    def palette(self) -> dict[str, np.ndarray]:
        """Optical density (3,) float32 of every component under this stain."""
        rot = _grey_axis_rotation(math.radians(self.hue_deg))
        out = {}
        for name, colour in _BASE_COLOURS.items():
            od = -np.log(np.asarray(colour, dtype=np.float64))
            if name != "plasma":
                od = od - (-np.log(np.asarray(_BASE_COLOURS["plasma"])))  # on top of plasma
            m = od.mean()
            od = rot @ (m + self.saturation * (od - m))
            gain = self.basic_gain if name in _BASIC else self.eosin_gain if name == "rbc" else 1.0
            out[name] = np.clip(od * gain * self.strength, 0.0, None).astype(np.float32)
        return out


def sample_stain(rng: np.random.Generator) -> Stain:
    """A random stain as one patient's slide (or one synthetic image) would have it.

    Ranges are wide enough that colour alone does not identify a patient's class, narrow enough
    that the dark mature nucleus stays darker than the open blast nucleus under most stains.
    """
    return Stain(
        hue_deg=float(rng.uniform(-14.0, 14.0)),
        saturation=float(rng.uniform(0.8, 1.25)),
        basic_gain=float(rng.uniform(0.82, 1.2)),
        eosin_gain=float(rng.uniform(0.7, 1.25)),
        strength=float(rng.uniform(0.9, 1.1)),
        brightness=float(rng.uniform(0.92, 1.06)),
        white_balance=tuple(float(v) for v in rng.uniform(0.96, 1.04, 3)),
    )


def render_field(
    rng: np.random.Generator,
    size: int,
    cell: str,
    stain: Stain,
    degradation: str | None = None,
) -> np.ndarray:
    """Draw one field: ``(size, size, 3)`` uint8 RGB with a ``cell`` near the centre.

    ``degradation`` (one of :data:`DEGRADATIONS`) spoils the finished image as a weak generator
    would; ``None`` leaves it realistic.
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
        rot = _grey_axis_rotation(math.radians(rng.choice([-1, 1]) * rng.uniform(50, 130)))
        sat = rng.choice([rng.uniform(0.25, 0.55), rng.uniform(1.6, 2.2)])
        m = od.mean(axis=-1, keepdims=True)
        od = (m + sat * (od - m)) @ rot.T.astype(np.float32)
        out = np.exp(-np.clip(od, 0.0, None))
    elif kind == "jpeg":
        out = _jpeg_like(img, quality=int(rng.integers(4, 13)))
    else:
        raise ValueError(f"degradation must be one of {DEGRADATIONS}, got {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


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


def _grey_axis_rotation(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` about the grey axis (1, 1, 1)/sqrt(3) (Rodrigues' formula)."""
    k = np.full(3, 1 / math.sqrt(3))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)


# --------------------------------------------------------------------------------------------
# JPEG-like artefacts

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
