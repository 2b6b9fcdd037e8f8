"""Write the built-in demo dataset: scarce real smears in patients plus a tiered synthetic pool.

Layout under ``out_dir`` (the same shape as a user's pre-split data, so ingest cannot tell the difference)::

    real/<split>/lymphocyte/lymphocyte_0000.png ...   benign class (mature lymphocytes)
    real/<split>/lymphoblast/lymphoblast_0000.png ... malignant class (lymphoblasts)
    groups.csv             path,group        path relative to real/, group = patient id (P000...)

``<split>`` is train, val or test: the demo splits its own patients (``demo.split``, per class,
patients kept whole, a seeded draw), so its test set keeps the 40 malignant images a review needs
while ``ingest.split`` keeps the usual 0.6 / 0.2 / 0.2 for a user's flat folder.
    synthetic/lymphoblast/syn_0000.png ...   ALL labelled malignant by their folder
    synthetic_quality.csv  filename,tier,detail   ground truth, for measuring only

The synthetic pool mimics a generator of uneven quality, in three tiers shuffled over the file
names (a name never reveals its tier):

* ``good``: realistic lymphoblasts (detail ``realistic``);
* ``degraded``: lymphoblasts spoilt by one of ``blur``, ``noise``, ``off_stain``, ``jpeg``;
* ``hallucinated``: mature lymphocytes, i.e. benign cells under a malignant label
  (detail ``benign_cell``). A scorer trained on the real images should give these
  the highest JSD to their (wrong) label.

Determinism: image ``i`` of a role draws from ``SeedSequence(seed, spawn_key=(role, ..., i))``,
so it depends on ``(seed, role, index)`` only, never on the order of drawing or on the other
counts; a real image also uses its patient's stain, drawn from that patient's own seed. PNGs are
written with a fixed compress level and no metadata: the same config gives byte-identical files
(on the same numpy/scipy/Pillow versions; float rounding may differ across builds).
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import asdict, dataclass, fields
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from entromix.common.errors import DataError, ParamsError
from entromix.demo.cells import LYMPHOBLAST, LYMPHOCYTE, render_field
from entromix.demo.degradations import DEGRADATIONS
from entromix.demo.stain import Stain, sample_stain

#: class folder names (benign, malignant); map lymphocyte -> 0, lymphoblast -> 1
BENIGN_CLASS = LYMPHOCYTE
MALIGNANT_CLASS = LYMPHOBLAST
TIERS = ("good", "degraded", "hallucinated")

GROUPS_CSV = "groups.csv"
QUALITY_CSV = "synthetic_quality.csv"
PNG_COMPRESS_LEVEL = 6  # fixed: part of byte-identical output

# spawn_key roles; never renumber (that would change every image of a given seed)
_ROLE_PATIENT, _ROLE_REAL, _ROLE_SYNTHETIC, _ROLE_TIER_ORDER, _ROLE_SPLIT = 0, 1, 2, 3, 4
SPLITS = ("train", "val", "test")
_CLASS_INDEX = {BENIGN_CLASS: 0, MALIGNANT_CLASS: 1}

# Bounds of every DemoConfig field. image_size >= 32 so a cell keeps some nuclear detail;
# <= 1024 because larger is only slow (ingest downsizes anyway). Each class needs an image.
_MINIMUM = {
    "seed": 0,
    "image_size": 32,
    "n_benign": 1,
    "n_malignant": 1,
    "images_per_patient": 1,
    "syn_good": 0,
    "syn_degraded": 0,
    "syn_hallucinated": 0,
}
_MAXIMUM = {"image_size": 1024}


@dataclass(frozen=True)
class DemoSplit:
    """``demo.split``: the share of each class's patients in train, val and test."""

    train: float = 0.25
    val: float = 0.125
    test: float = 0.625

    def __post_init__(self) -> None:
        values = [getattr(self, name) for name in SPLITS]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not numbers or min(values) <= 0 or abs(sum(values) - 1) > 1e-6:
            raise ParamsError(
                f"params.yaml: demo.split is {dict(zip(SPLITS, values))}; it needs train, val and test, each "
                "> 0, summing to 1 (the default: train 0.25, val 0.125, test 0.625)."
            )


@dataclass(frozen=True)
class DemoConfig:
    """The ``demo:`` section of params.yaml, key for key."""

    seed: int = 0
    image_size: int = 96  # px, square; ingest resizes to its own size later
    n_benign: int = 240  # real mature lymphocytes
    n_malignant: int = 80  # real lymphoblasts: 3:1, as in the reference design
    images_per_patient: int = 8  # one stain per patient; enables patient-aware splits
    syn_good: int = 80
    syn_degraded: int = 40
    syn_hallucinated: int = 40
    split: DemoSplit = DemoSplit()

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name == "split":
                continue
            value, lo = getattr(self, f.name), _MINIMUM[f.name]
            hi = _MAXIMUM.get(f.name)
            ok = isinstance(value, Integral) and not isinstance(value, bool)
            if ok and value >= lo and (hi is None or value <= hi):
                continue
            bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise ParamsError(
                f"params.yaml: demo.{f.name} = {value!r} is invalid: it must be an integer "
                f"{bounds}. Set demo.{f.name} in the demo: section of params.yaml "
                f"(default {f.default}), or pass -S demo.{f.name}=<value> to dvc exp run."
            )


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote."""

    out_dir: Path
    real_counts: dict[str, int]  # class folder -> images
    synthetic_counts: dict[str, int]  # tier -> images
    degraded_details: dict[str, int]  # degradation -> images (within the degraded tier)
    n_patients: int

    def as_dict(self) -> dict:
        """JSON-ready (``out_dir`` as a string)."""
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def generate_demo(config: DemoConfig, out_dir: str | Path, progress: bool = True) -> DemoSummary:
    """Draw and write the demo dataset under ``out_dir``; see the module docstring for the layout.

    Files this generator owns from an earlier run (its PNGs and the two CSVs) are removed first, so
    a re-run with smaller counts leaves no stale images. Anything else under ``real/`` or
    ``synthetic/`` is refused (:class:`DataError`) rather than deleted or mixed in.
    ``progress`` shows a tqdm bar on a terminal (hidden otherwise); nothing else is printed.
    """
    out = Path(out_dir)
    _clear_previous(out)
    real_rows, n_patients = _real_plan(config)  # paths under real/ start with the patient's split
    syn_rows = _synthetic_plan(config)

    bar = tqdm(total=len(real_rows) + len(syn_rows), desc="demo images", unit="img", disable=None if progress else True)
    stains: dict[tuple[int, int], Stain] = {}  # (class index, patient in class) -> Stain
    for rel, cls, i, _group, pkey in real_rows:
        if pkey not in stains:
            stains[pkey] = sample_stain(_rng(config.seed, _ROLE_PATIENT, *pkey))
        rng = _rng(config.seed, _ROLE_REAL, _CLASS_INDEX[cls], i)
        stain = stains[pkey].jitter(rng)  # same slide, another spot
        _write_png(out / "real" / rel, render_field(rng, config.image_size, cls, stain))
        bar.update()
    syn_done = []  # (path under synthetic/, tier, detail)
    for rel, i, tier in syn_rows:
        rng = _rng(config.seed, _ROLE_SYNTHETIC, i)
        stain = sample_stain(rng).jitter(rng)  # every synthetic image has its own stain
        if tier == "hallucinated":
            img, detail = render_field(rng, config.image_size, LYMPHOCYTE, stain), "benign_cell"
        elif tier == "degraded":
            detail = DEGRADATIONS[int(rng.integers(len(DEGRADATIONS)))]
            img = render_field(rng, config.image_size, LYMPHOBLAST, stain, degradation=detail)
        else:
            img, detail = render_field(rng, config.image_size, LYMPHOBLAST, stain), "realistic"
        syn_done.append((rel, tier, detail))
        _write_png(out / "synthetic" / rel, img)
        bar.update()
    bar.close()

    _write_csv(out / GROUPS_CSV, ["path", "group"], sorted((r[0], r[3]) for r in real_rows))
    _write_csv(out / QUALITY_CSV, ["filename", "tier", "detail"], sorted(syn_done))
    return DemoSummary(
        out_dir=out,
        real_counts={BENIGN_CLASS: config.n_benign, MALIGNANT_CLASS: config.n_malignant},
        synthetic_counts={t: sum(r[1] == t for r in syn_done) for t in TIERS},
        degraded_details=dict(sorted(Counter(r[2] for r in syn_done if r[1] == "degraded").items())),
        n_patients=n_patients,
    )


def save_preview_grid(out_dir: str | Path, png_path: str | Path, n_cols: int = 6) -> Path:
    """A PNG grid of a written demo dataset: one row per class and synthetic tier, for the README.

    Rows: real benign, real malignant (spread over patients, to show the stain variation),
    synthetic good, degraded (cycling through the degradations) and hallucinated. Stored as a
    256-colour palette PNG to keep it small (smears use few colours).
    """
    out = Path(out_dir)
    with open(out / GROUPS_CSV, newline="") as fh:
        real = [r["path"] for r in csv.DictReader(fh)]
    with open(out / QUALITY_CSV, newline="") as fh:
        syn = list(csv.DictReader(fh))

    def spread(paths):  # n_cols evenly spaced, so several patients show up
        idx = np.unique(np.linspace(0, len(paths) - 1, n_cols).round().astype(int)) if paths else []
        return [paths[i] for i in idx]

    rows = [
        ("real benign", [out / "real" / p for p in spread([p for p in real if p.split("/")[1] == BENIGN_CLASS])]),
        (
            "real malignant",
            [out / "real" / p for p in spread([p for p in real if p.split("/")[1] == MALIGNANT_CLASS])],
        ),
    ]
    for tier in TIERS:
        picked = [r for r in syn if r["tier"] == tier]
        if tier == "degraded":  # round-robin over the degradations
            by = {d: [r for r in picked if r["detail"] == d] for d in sorted({r["detail"] for r in picked})}
            picked = [r for grp in zip(*by.values()) for r in grp] + picked  # zip cuts unequal groups
            picked = list({r["filename"]: r for r in picked}.values())
        rows.append((f"synthetic {tier}", [out / "synthetic" / r["filename"] for r in picked[:n_cols]]))

    tiles = [[np.asarray(Image.open(p).convert("RGB")) for p in paths] for _, paths in rows]
    size = next(t[0].shape[0] for t in tiles if t)
    label_w, gap = 140, 3
    grid = Image.new("RGB", (label_w + n_cols * (size + gap), len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(grid)
    for r, ((label, _), row) in enumerate(zip(rows, tiles)):
        y = r * (size + gap)
        draw.text((6, y + size // 2 - 6), label, fill=(40, 40, 40))
        for c, tile in enumerate(row):
            grid.paste(Image.fromarray(tile), (label_w + c * (size + gap), y))
    png = Path(png_path)
    png.parent.mkdir(parents=True, exist_ok=True)
    grid.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        png, format="PNG", optimize=True
    )
    return png


# --------------------------------------------------------------------------------------------


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _patient_sizes(n: int, per_patient: int) -> list[int]:
    """Split n images into ceil(n / per_patient) patients whose sizes differ by at most one."""
    k = math.ceil(n / per_patient)
    return [n // k + (j < n % k) for j in range(k)]


def _patient_splits(config: DemoConfig, cls: str, n_patients: int) -> list[str]:
    """The split of each of a class's patients: shares of ``demo.split`` (largest remainders), drawn
    by a seeded permutation. A class with fewer patients than splits leaves a split without it
    (ingest then says which)."""
    shares = np.array([getattr(config.split, name) for name in SPLITS]) * n_patients
    counts = np.floor(shares).astype(int)
    for index in np.argsort(-(shares - counts), kind="stable")[: n_patients - counts.sum()]:
        counts[index] += 1
    order = _rng(config.seed, _ROLE_SPLIT, _CLASS_INDEX[cls]).permutation(n_patients)
    labels = np.repeat(SPLITS, counts)
    return [str(labels[rank]) for rank in np.argsort(order)]


def _real_plan(config: DemoConfig):
    """Rows (path under real/, class, index, patient id, patient seed key); patients single-class."""
    rows, pid = [], 0
    for cls, n in ((BENIGN_CLASS, config.n_benign), (MALIGNANT_CLASS, config.n_malignant)):
        i = 0
        sizes = _patient_sizes(n, config.images_per_patient)
        for j, (k, split) in enumerate(zip(sizes, _patient_splits(config, cls, len(sizes)))):
            for _ in range(k):
                rows.append((f"{split}/{cls}/{cls}_{i:04d}.png", cls, i, f"P{pid:03d}", (_CLASS_INDEX[cls], j)))
                i += 1
            pid += 1
    return rows, pid


def _synthetic_plan(config: DemoConfig):
    """Rows (path under synthetic/, index, tier), the tiers in shuffled file order."""
    tiers = ["good"] * config.syn_good + ["degraded"] * config.syn_degraded + ["hallucinated"] * config.syn_hallucinated
    order = _rng(config.seed, _ROLE_TIER_ORDER).permutation(len(tiers))
    return [(f"{MALIGNANT_CLASS}/syn_{i:04d}.png", i, tiers[j]) for i, j in enumerate(order)]


def _owned(out: Path) -> tuple[list[Path], list[Path]]:
    """(files this generator wrote in an earlier run, foreign files under real/ and synthetic/)."""
    patterns = {
        out / "real" / split / cls: f"{cls}_*.png" for split in SPLITS for cls in (BENIGN_CLASS, MALIGNANT_CLASS)
    }
    patterns |= {
        out / "real" / cls: f"{cls}_*.png" for cls in (BENIGN_CLASS, MALIGNANT_CLASS)
    }  # the flat layout of earlier versions
    patterns[out / "synthetic" / MALIGNANT_CLASS] = "syn_*.png"
    owned = [p for d, pat in patterns.items() if d.is_dir() for p in d.glob(pat) if p.is_file()]
    owned += [p for p in (out / GROUPS_CSV, out / QUALITY_CSV) if p.is_file()]
    mine = set(owned)
    foreign = [
        p
        for sub in ("real", "synthetic")
        if (out / sub).is_dir()
        for p in sorted((out / sub).rglob("*"))
        if not p.is_dir() and p not in mine
    ]
    return owned, foreign


def _clear_previous(out: Path) -> None:
    owned, foreign = _owned(out)
    if foreign:
        raise DataError(
            f"{out}: the demo generator owns real/ and synthetic/ in this folder, but found "
            f"{len(foreign)} file(s) it did not write, e.g. {foreign[0]}. Point the demo at an "
            f"empty folder (or move those files away) so they are neither deleted nor mixed in."
        )
    for p in owned:
        p.unlink()
    classes = (BENIGN_CLASS, MALIGNANT_CLASS)
    emptied = [out / "real" / split / cls for split in SPLITS for cls in classes] + [out / "real" / s for s in SPLITS]
    for folder in emptied + [out / "real" / cls for cls in classes]:  # so a smaller draw leaves no empty split
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
