"""Stains and their colours: the optical densities every component of a smear absorbs with.

Pure compute, like :mod:`entromix.demo.cells`, which paints with these densities. A stain is a
transform of the per-component optical-density vectors ``od_k = -ln(colour_k)`` (hue, saturation,
dye strength), never of a finished image, so overlapping absorbances stay physical. Each patient's
slide (or synthetic image) gets one :func:`sample_stain`, each image of it a :meth:`Stain.jitter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

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
        rot = grey_axis_rotation(math.radians(self.hue_deg))
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


def grey_axis_rotation(angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` about the grey axis (1, 1, 1)/sqrt(3) (Rodrigues' formula)."""
    k = np.full(3, 1 / math.sqrt(3))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)
