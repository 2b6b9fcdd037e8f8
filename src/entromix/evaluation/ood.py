"""Out-of-distribution flag: how far an image's features lie from the real training images'.

A classifier gives every input a probability, an image from another microscope, stain or cell
type included (one such image got P(malignant) 0.97 with a TTA spread of 0.006). This flag looks
at *where* the image lands in the trained model's feature space (the input of its final linear
layer, ``entromix.modeling.fit.predict_logits_and_member_features``) instead of at its output.

``mahalanobis`` (Lee et al. 2018, "A simple unified framework for detecting out-of-distribution
samples"): with the class means ``mu_c`` and the shared Ledoit-Wolf covariance ``S`` of the
features of the real training images (``entromix.scoring.feature_space.ClassGaussians``, the
score stage's code)::

    distance(x) = min_c (x - mu_c)^T S^-1 (x - mu_c)

the squared distance to the nearest class. ``knn`` (Sun et al. 2022, "Out-of-distribution detection
with deep nearest neighbors"): features L2-normalised, ``distance(x) = 1 - cos`` to the
:data:`KNN_K`-th nearest real training image. Either way larger means less like the training
data. An ensemble's distance is the mean of its members' (each member has its own feature space).

The threshold is the ``quantile`` (default 0.975) of the real val images' distances: about
2.5% of in-distribution images are flagged, by construction, and an image above it is flagged
``ood``. The detector travels inside ``models/deploy/model.pt`` as tensors and numbers only
(read back with ``torch.load(weights_only=True)``, like the rest of the checkpoint).

Caveats: the statistics come from the training images, so a flag says "unlike the images this
model learnt from", not "wrong"; an out-of-distribution image that happens to land near a class
mean is not flagged (the AUROC in docs/using-the-model.md says how often that happens on one
foreign source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from entromix.common.errors import DataError
from entromix.scoring.feature_space import ClassGaussians, l2_normalise

OodScore = Literal["mahalanobis", "knn"]
OOD_SCORES = ("mahalanobis", "knn")
#: knn: the neighbour whose distance counts. Sun et al. take k = 50 of 50,000 training images; with a
#: hundred or so here, the 5th nearest is far enough to ignore one odd training image.
KNN_K = 5


@dataclass(frozen=True)
class OodDetector:
    """Per-member statistics of the training features and the threshold on their mean distance.

    ``means`` (K, C, D) and ``precision`` (K, D, D) for ``mahalanobis``; ``reference`` (K, M, D)
    L2-normalised training features for ``knn``; ``threshold``: distances above it are flagged."""

    score: str
    threshold: float
    quantile: float
    val_flag_rate: float
    n_train: int
    n_val: int
    means: np.ndarray | None = None
    precision: np.ndarray | None = None
    reference: np.ndarray | None = None

    def distances(self, features: np.ndarray) -> np.ndarray:
        """float64 (N,) distance of each image from its members' features (K, N, D)."""
        features = np.asarray(features, dtype=np.float64)
        members = self.means.shape[0] if self.score == "mahalanobis" else self.reference.shape[0]
        if features.ndim != 3 or features.shape[0] != members:
            raise DataError(
                f"the checkpoint's OOD statistics are for {members} ensemble member(s) but the model gave "
                f"features of shape {features.shape}; rerun the evaluate stage (dvc repro -f evaluate)."
            )
        per_member = [self._member_distances(k, features[k]) for k in range(members)]
        return np.mean(per_member, axis=0)

    def _member_distances(self, k: int, f: np.ndarray) -> np.ndarray:
        if self.score == "knn":
            cosine = 1.0 - l2_normalise(f) @ np.asarray(self.reference[k], dtype=np.float64).T  # (N, M)
            nearest = np.sort(cosine, axis=1)[:, min(KNN_K, cosine.shape[1]) - 1]
            return np.maximum(nearest, 0.0)
        classes = np.arange(self.means.shape[1])
        gaussians = ClassGaussians(
            classes, np.asarray(self.means[k], np.float64), np.asarray(self.precision[k], np.float64)
        )
        return gaussians.distances(f).min(axis=1)

    def flags(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.threshold

    def to_checkpoint(self) -> dict:
        """Numbers, strings and tensors only (``torch.load(weights_only=True)`` reads it back)."""
        out = {
            "score": self.score,
            "threshold": float(self.threshold),
            "quantile": float(self.quantile),
            "val_flag_rate": float(self.val_flag_rate),
            "n_train": int(self.n_train),
            "n_val": int(self.n_val),
        }
        for name in ("means", "precision", "reference"):
            value = getattr(self, name)
            if value is not None:
                out[name] = torch.from_numpy(np.asarray(value, dtype=np.float32))
        return out

    @classmethod
    def from_checkpoint(cls, entry: object, where: str = "the checkpoint") -> OodDetector:
        """The detector stored by :meth:`to_checkpoint`; anything malformed is a DataError."""
        fix = "Rerun the evaluate stage (dvc repro -f evaluate) to write it again."
        needed = {"mahalanobis": ("means", "precision"), "knn": ("reference",)}
        if not isinstance(entry, dict) or entry.get("score") not in needed:
            raise DataError(f"{where}: its 'ood' entry is not an entromix OOD detector. {fix}")
        missing = [k for k in ("threshold", "quantile", *needed[entry["score"]]) if k not in entry]
        if missing:
            raise DataError(f"{where}: its 'ood' entry lacks {', '.join(missing)}. {fix}")
        arrays = {k: entry[k].double().numpy() for k in ("means", "precision", "reference") if k in entry}
        return cls(
            score=str(entry["score"]),
            threshold=float(entry["threshold"]),
            quantile=float(entry["quantile"]),
            val_flag_rate=float(entry.get("val_flag_rate", float("nan"))),
            n_train=int(entry.get("n_train", 0)),
            n_val=int(entry.get("n_val", 0)),
            **arrays,
        )


def fit_ood_detector(
    score: OodScore,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    quantile: float,
) -> tuple[OodDetector, np.ndarray]:
    """The detector of ``score`` from the members' training features (K, M, D) with their labels
    (M,), its threshold the ``quantile`` of the val images' distances (K, V, D); and those distances."""
    if score not in OOD_SCORES:
        raise ValueError(f"unknown OOD score {score!r}; choose one of {', '.join(OOD_SCORES)}")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"the OOD quantile must be in [0.5, 1), got {quantile}")
    train_features = np.asarray(train_features, dtype=np.float64)
    labels = np.asarray(train_labels, dtype=np.int64)
    if score == "mahalanobis":
        if len(np.unique(labels)) != int(labels.max()) + 1:
            raise DataError(
                f"the OOD statistics need real training images of every label; labels {sorted(set(labels.tolist()))} "
                "have some. Check the training split (data/prepared/manifest.csv)."
            )
        fitted = [ClassGaussians.fit(f, labels) for f in train_features]
        stats = {"means": np.stack([g.means for g in fitted]), "precision": np.stack([g.precision for g in fitted])}
    else:
        stats = {"reference": np.stack([l2_normalise(f) for f in train_features])}
    # the threshold is computed from the float32 statistics the checkpoint keeps, as predict reads them
    stats = {k: v.astype(np.float32).astype(np.float64) for k, v in stats.items()}
    draft = OodDetector(score, np.inf, quantile, 0.0, len(labels), 0, **stats)
    val_distances = draft.distances(val_features)
    threshold = float(np.quantile(val_distances, quantile)) if len(val_distances) else np.inf
    flagged = float(np.mean(val_distances > threshold)) if len(val_distances) else 0.0
    detector = OodDetector(score, threshold, quantile, flagged, len(labels), len(val_distances), **stats)
    return detector, val_distances


def member_features(trained, images: np.ndarray) -> np.ndarray:
    """float32 (K, N, D) penultimate features of uint8 images (N, H, W, 3), prepared as predict does."""
    from entromix.modeling.fit import predict_logits_and_member_features

    model, device = trained.model, trained.device
    return predict_logits_and_member_features(model, images, device, trained.image_size, 256, trained.channels_last)[1]


def fit_for_model(
    trained,
    images: np.ndarray,
    train_ids: np.ndarray,
    train_labels: np.ndarray,
    val_ids: np.ndarray,
    score: OodScore,
    quantile: float,
) -> tuple[OodDetector, np.ndarray]:
    """:func:`fit_ood_detector` on the trained model's features of the prepared images ``train_ids``
    (the real training images, labels ``train_labels``) and ``val_ids`` (the real val images)."""
    train = member_features(trained, images[np.sort(train_ids)])
    order = np.argsort(train_ids, kind="stable")
    labels = np.asarray(train_labels)[order]
    return fit_ood_detector(score, train, labels, member_features(trained, images[np.asarray(val_ids)]), quantile)


def ood_detector(config, trained, images: np.ndarray, dataset, val, test, metrics: dict) -> OodDetector:
    """The evaluate stage's detector (``evaluate.ood_score``, ``ood_quantile``) from the real training
    images of ``dataset`` (data/dataset.csv) and the ``val`` manifest rows; adds ``metrics['evaluate']['ood']``
    (threshold, the share of val and test images flagged) and prints it."""
    real_train = dataset[dataset["is_syn"] == 0]
    detector, val_distances = fit_for_model(
        trained,
        images,
        real_train["id"].to_numpy(dtype=np.int64),
        real_train["label"].to_numpy(dtype=np.int64),
        val["id"].to_numpy(dtype=np.int64),
        config.ood_score,
        config.ood_quantile,
    )
    test_flagged = detector.flags(detector.distances(member_features(trained, images[test["id"].to_numpy()])))
    summary = {
        "score": detector.score,
        "threshold": round(detector.threshold, 4),
        "quantile": detector.quantile,
        "n_train": detector.n_train,
        "val_flag_rate": round(detector.val_flag_rate, 4),
        "test_flag_rate": round(float(test_flagged.mean()) if len(test_flagged) else 0.0, 4),
    }
    metrics["evaluate"]["ood"] = summary
    print(
        f"entromix evaluate: OOD flag ({detector.score} on the penultimate features of {detector.n_train} real "
        f"training images): threshold {summary['threshold']} (val quantile {detector.quantile}) flags "
        f"{summary['val_flag_rate']:.1%} of val and {summary['test_flag_rate']:.1%} of test"
    )
    return detector
