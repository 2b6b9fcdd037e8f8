"""Out-of-distribution flag: how far an image's features lie from the real training images'.

A classifier gives every input a probability, an image from another microscope, stain or cell
type included (one such image got P(malignant) 0.97 with a TTA spread of 0.006). This flag looks
at *where* the image lands in the trained model's feature space instead of at its output.

Features (``evaluate.ood_features``), captured from the forward pass that gives the probabilities:

* ``stages`` (the default; Lee et al. 2018's feature ensemble, with equal weights): the channel
  means of each stage's output (ResNet: ``layer1`` .. ``layer4``, 64 .. 512 values; timm models
  with ``stages``). Early stages see colour and texture, which is where an image from another
  source differs most; the last one, pooled, is the penultimate layer. Architectures without
  stages (ViT, Swin) fall back to ``penultimate``.
* ``penultimate``: the input of the final linear layer only.

Distance per stage (``evaluate.ood_score``), for each ensemble member ``k``:

* ``mahalanobis`` (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
  samples"): with the class means ``mu_c`` and the shared Ledoit-Wolf covariance ``S`` of the real
  training images' features (``entromix.scoring.feature_space.ClassGaussians``, the score stage's
  code): ``min_c (x - mu_c)^T S^-1 (x - mu_c)``, the squared distance to the nearest class;
* ``knn`` (Sun et al. 2022): features L2-normalised, ``1 - cos`` to the :data:`KNN_K`-th nearest
  real training image.

Each stage's distance is the mean over the members, divided by its median over the real val
images (so no stage dominates by its dimension), and ``ood_distance`` is the mean over stages: 1
is a typical val image. The threshold is the ``evaluate.ood_quantile`` (0.975) of the val images'
``ood_distance``: about 2.5% of in-distribution images are flagged, by construction. The
detector travels in ``models/deploy/model.pt`` as tensors, numbers and strings (read back with
``torch.load(weights_only=True)`` like the rest of the checkpoint).

Caveats: the statistics come from ~100 training images, so a flag says "unlike the images this
model learnt from", not "wrong"; a foreign image that lands near the training images is not
flagged. docs/using-the-model.md gives the AUROC and flag rates measured on leukemia_dev against
smears from another source.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from entromix.common.errors import DataError
from entromix.scoring.feature_space import ClassGaussians, l2_normalise

OodScore = Literal["mahalanobis", "knn"]
OodFeatures = Literal["stages", "penultimate"]
OOD_SCORES = ("mahalanobis", "knn")
OOD_FEATURES = ("stages", "penultimate")
#: knn: the neighbour whose distance counts. Sun et al. take k = 50 of 50,000 training images; with a
#: hundred or so here, the 5th nearest is far enough to ignore one odd training image.
KNN_K = 5
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
FIX = "Rerun the evaluate stage (dvc repro -f evaluate) to write it again."


def stage_modules(member: nn.Module, kind: str) -> dict[str, nn.Module] | None:
    """The modules whose outputs the ``stages`` features pool, by name; None: the member has none
    that entromix knows (then the ``penultimate`` features are used)."""
    if kind != "stages":
        return None
    if all(hasattr(member, name) for name in RESNET_STAGES):  # torchvision ResNets
        return {name: getattr(member, name) for name in RESNET_STAGES}
    stages = getattr(member, "stages", None)  # timm convolutional networks (ConvNeXt, RegNet, ...)
    if isinstance(stages, nn.Sequential) and len(stages) > 1:
        return {f"stages[{i}]": module for i, module in enumerate(stages)}
    return None


class FeatureCapture:
    """Features of every ensemble member from the forward passes run while it is active.

    ``stages``: the channel mean of each stage's output, (B, C, H, W) -> (B, C); ``penultimate``:
    the input of the member's final linear layer. :meth:`arrays` gives name -> float32 (K, N, D)."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        from entromix.common.distributed import unwrap
        from entromix.modeling.ensemble import members

        self.paused = False
        self.hooks = []
        self.captured: dict[str, list[list[torch.Tensor]]] = {}
        for k, member in enumerate(members(unwrap(model))):
            modules = stage_modules(member, kind)
            if modules is None:
                head = [m for m in member.modules() if isinstance(m, nn.Linear)][-1]
                self._hook(head, "penultimate", k, pre=True)
            else:
                for name, module in modules.items():
                    self._hook(module, name, k, pre=False)
        self.kind = "stages" if "penultimate" not in self.captured else "penultimate"

    def _hook(self, module: nn.Module, name: str, k: int, pre: bool) -> None:
        lists = self.captured.setdefault(name, [])
        while len(lists) <= k:
            lists.append([])

        def keep(_module, args, output=None) -> None:
            if self.paused:
                return
            x = (args[0] if pre else output).detach().float()
            pooled = x.flatten(2).mean(2) if x.ndim == 4 else (x.mean(1) if x.ndim == 3 else x.flatten(1))
            lists[k].append(pooled.cpu())

        register = module.register_forward_pre_hook if pre else module.register_forward_hook
        self.hooks.append(register(keep))

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            name: np.stack([torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32) for chunks in lists])
            for name, lists in self.captured.items()
        }

    def remove(self) -> None:
        for hook in self.hooks:
            hook.remove()


@contextmanager
def capture_features(model: nn.Module, kind: str) -> Iterator[FeatureCapture]:
    capture = FeatureCapture(model, kind)
    try:
        yield capture
    finally:
        capture.remove()


def model_features(trained, images: np.ndarray, kind: str) -> dict[str, np.ndarray]:
    """name -> float32 (K, N, D) features of uint8 images (N, H, W, 3), from predict's own forward
    pass (``entromix.modeling.fit.predict_logits``: the same batches, preparation and autocast)."""
    from entromix.modeling.fit import predict_logits

    with capture_features(trained.model, kind) as capture:
        predict_logits(trained.model, images, trained.device, trained.image_size, channels_last=trained.channels_last)
    return capture.arrays()


@dataclass(frozen=True)
class StageStats:
    """One stage's statistics: ``means`` (K, C, D) and ``precision`` (K, D, D) for ``mahalanobis``,
    ``reference`` (K, M, D) L2-normalised training features for ``knn``; ``scale``: the median of
    the val images' raw distance."""

    name: str
    scale: float
    means: np.ndarray | None = None
    precision: np.ndarray | None = None
    reference: np.ndarray | None = None

    @property
    def members(self) -> int:
        return (self.means if self.means is not None else self.reference).shape[0]

    def raw(self, features: np.ndarray) -> np.ndarray:
        """float64 (N,) the members' mean distance, from their features (K, N, D)."""
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 3 or f.shape[0] != self.members:
            raise DataError(
                f"the checkpoint's OOD statistics of {self.name} are for {self.members} ensemble member(s) but the "
                f"model gave features of shape {f.shape}. {FIX}"
            )
        if f.shape[1] == 0:
            return np.zeros(0)
        per_member = []
        for k in range(self.members):
            if self.reference is not None:
                cosine = 1.0 - l2_normalise(f[k]) @ self.reference[k].T  # (N, M)
                per_member.append(np.maximum(np.sort(cosine, axis=1)[:, min(KNN_K, cosine.shape[1]) - 1], 0.0))
            else:
                classes = np.arange(self.means.shape[1])
                per_member.append(ClassGaussians(classes, self.means[k], self.precision[k]).distances(f[k]).min(axis=1))
        return np.mean(per_member, axis=0)

    def to_checkpoint(self) -> dict:
        out: dict = {"name": self.name, "scale": float(self.scale)}
        for key in ("means", "precision", "reference"):
            if getattr(self, key) is not None:
                out[key] = torch.from_numpy(np.asarray(getattr(self, key), dtype=np.float32))
        return out

    @classmethod
    def fit(cls, name: str, score: str, features: np.ndarray, labels: np.ndarray) -> StageStats:
        """Statistics of the members' training features (K, M, D), kept as float32 (as stored)."""
        f = np.asarray(features, dtype=np.float64)
        if score == "mahalanobis":
            fitted = [ClassGaussians.fit(x, labels) for x in f]
            arrays = {
                "means": np.stack([g.means for g in fitted]),
                "precision": np.stack([g.precision for g in fitted]),
            }
        else:
            arrays = {"reference": np.stack([l2_normalise(x) for x in f])}
        return cls(name, 1.0, **{k: v.astype(np.float32).astype(np.float64) for k, v in arrays.items()})


@dataclass(frozen=True)
class OodDetector:
    """The stages' statistics and the threshold on their mean scaled distance (module docstring)."""

    score: str
    features: str
    stages: tuple[StageStats, ...]
    threshold: float
    quantile: float
    val_flag_rate: float
    n_train: int
    n_val: int

    def distances(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """float64 (N,) ``ood_distance`` from :func:`model_features`'s name -> (K, N, D)."""
        missing = [s.name for s in self.stages if s.name not in features]
        if missing:
            raise DataError(f"the model gave no {', '.join(missing)} features for the OOD statistics. {FIX}")
        return np.mean([s.raw(features[s.name]) / s.scale for s in self.stages], axis=0)

    def flags(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.threshold

    def describe(self) -> str:
        names = ", ".join(s.name for s in self.stages)
        return f"{self.score} on the {self.features} features ({names})"

    def to_checkpoint(self) -> dict:
        """Numbers, strings and tensors only (``torch.load(weights_only=True)`` reads it back)."""
        return {
            "score": self.score,
            "features": self.features,
            "stages": [s.to_checkpoint() for s in self.stages],
            "threshold": float(self.threshold),
            "quantile": float(self.quantile),
            "val_flag_rate": float(self.val_flag_rate),
            "n_train": int(self.n_train),
            "n_val": int(self.n_val),
        }

    @classmethod
    def from_checkpoint(cls, entry: object, where: str = "the checkpoint") -> OodDetector:
        """The detector stored by :meth:`to_checkpoint`; anything malformed is a DataError."""
        if (
            not isinstance(entry, dict)
            or entry.get("score") not in OOD_SCORES
            or entry.get("features") not in OOD_FEATURES
        ):
            raise DataError(f"{where}: its 'ood' entry is not an entromix OOD detector. {FIX}")
        needed = ("means", "precision") if entry["score"] == "mahalanobis" else ("reference",)
        stages = entry.get("stages")
        missing = [k for k in ("threshold", "quantile") if k not in entry]
        if not isinstance(stages, list) or not stages:
            missing.append("stages")
        else:
            missing += [f"stages.{k}" for s in stages for k in ("name", "scale", *needed) if k not in s]
        if missing:
            raise DataError(f"{where}: its 'ood' entry lacks {', '.join(sorted(set(missing)))}. {FIX}")
        parsed = tuple(
            StageStats(str(s["name"]), float(s["scale"]), **{k: s[k].double().numpy() for k in needed}) for s in stages
        )
        return cls(
            score=str(entry["score"]),
            features=str(entry["features"]),
            stages=parsed,
            threshold=float(entry["threshold"]),
            quantile=float(entry["quantile"]),
            val_flag_rate=float(entry.get("val_flag_rate", float("nan"))),
            n_train=int(entry.get("n_train", 0)),
            n_val=int(entry.get("n_val", 0)),
        )


def fit_ood_detector(
    score: OodScore,
    train_features: dict[str, np.ndarray],
    train_labels: np.ndarray,
    val_features: dict[str, np.ndarray],
    quantile: float,
    kind: str = "stages",
) -> tuple[OodDetector, np.ndarray]:
    """The detector of ``score`` from the members' features of the real training images (name ->
    (K, M, D), labels (M,)); each stage scaled by, and the threshold the ``quantile`` of, the val
    images' distances (name -> (K, V, D)). Also returns the val images' ``ood_distance``."""
    if score not in OOD_SCORES:
        raise ValueError(f"unknown OOD score {score!r}; choose one of {', '.join(OOD_SCORES)}")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"the OOD quantile must be in [0.5, 1), got {quantile}")
    labels = np.asarray(train_labels, dtype=np.int64)
    if score == "mahalanobis" and len(np.unique(labels)) != int(labels.max()) + 1:
        raise DataError(
            f"the OOD statistics need real training images of every label; only labels {sorted(set(labels.tolist()))} "
            "have some. Check the training split (data/prepared/manifest.csv)."
        )
    stages = []
    for name, features in train_features.items():
        stage = StageStats.fit(name, score, features, labels)
        val_raw = stage.raw(val_features[name])
        scale = float(np.median(val_raw)) if len(val_raw) and np.median(val_raw) > 0 else 1.0
        stages.append(StageStats(name, scale, stage.means, stage.precision, stage.reference))
    draft = OodDetector(score, kind, tuple(stages), np.inf, quantile, 0.0, len(labels), 0)
    val_distances = draft.distances(val_features)
    threshold = float(np.quantile(val_distances, quantile)) if len(val_distances) else float("inf")
    flagged = float(np.mean(val_distances > threshold)) if len(val_distances) else 0.0
    detector = OodDetector(score, kind, tuple(stages), threshold, quantile, flagged, len(labels), len(val_distances))
    return detector, val_distances


def ood_detector(config, trained, images: np.ndarray, dataset, val, test, metrics: dict) -> OodDetector:
    """The evaluate stage's detector (``evaluate.ood_score``, ``ood_features``, ``ood_quantile``) from
    the real training images of ``dataset`` (data/dataset.csv) and the ``val`` manifest rows; adds
    ``metrics['evaluate']['ood']`` (threshold, the share of val and test images flagged) and prints it."""
    real_train = dataset[dataset["is_syn"] == 0].sort_values("id")
    ids = real_train["id"].to_numpy(dtype=np.int64)

    def features(rows: np.ndarray) -> dict[str, np.ndarray]:
        return model_features(trained, images[rows], config.ood_features)

    train_features = features(ids)
    kind = "penultimate" if list(train_features) == ["penultimate"] else "stages"
    if kind != config.ood_features:
        print(f"entromix evaluate: {trained.checkpoint['model_name']} has no stages entromix knows; OOD on penultimate")
    val_features = features(val["id"].to_numpy(dtype=np.int64))
    labels = real_train["label"].to_numpy(dtype=np.int64)
    detector, _ = fit_ood_detector(config.ood_score, train_features, labels, val_features, config.ood_quantile, kind)
    test_flagged = detector.flags(detector.distances(features(test["id"].to_numpy(dtype=np.int64))))
    summary = {
        "score": detector.score,
        "features": detector.features,
        "threshold": round(detector.threshold, 4),
        "quantile": detector.quantile,
        "n_train": detector.n_train,
        "val_flag_rate": round(detector.val_flag_rate, 4),
        "test_flag_rate": round(float(test_flagged.mean()) if len(test_flagged) else 0.0, 4),
    }
    metrics["evaluate"]["ood"] = summary
    print(
        f"entromix evaluate: OOD flag ({detector.describe()}, from {detector.n_train} real training images): "
        f"threshold {summary['threshold']} (val quantile {detector.quantile}) flags {summary['val_flag_rate']:.1%} "
        f"of val and {summary['test_flag_rate']:.1%} of test"
    )
    return detector
