"""Feature-space quality scores for synthetic images, from the scorer's penultimate features.

The reference JSD is a function of ``p_true`` alone: a blurred or noisy malignant image that the
scorer still calls malignant looks as good as a clean one. These scores look at *where* an image
lands in the fold model's feature space (the input of its final linear layer), relative to the
real images that model was trained on. Every score is oriented like the JSD: **larger is worse**.

For a fold model with reference features ``R`` (its own real training images, labels ``r``) and a
query image with features ``x`` and label ``y``:

``knn`` (class-balanced deep k-nearest neighbours; Bahri et al. 2020, "Deep k-NN for noisy
labels", in the distance-ratio form of Jiang et al. 2018's trust score). Features are L2-normalised
and ``d_c(x)`` is the mean cosine distance ``1 - <x, f>`` from ``x`` to its ``k`` nearest reference
images of class ``c`` (``k`` capped at that class's count)::

    knn(x, y) = d_y(x) / (d_y(x) + min_{c != y} d_c(x))          in [0, 1]

0 deep inside its own class, 0.5 as close to another class as to its own, towards 1 closer to
another class. Measuring each class by its own k nearest (not the k nearest overall) keeps a
3:1 or 10:1 class imbalance from outvoting the rare class.

``mahalanobis`` (class-conditional Gaussian, tied covariance; Lee et al. 2018). With the class
means ``mu_c`` and the shared covariance ``S`` of the reference features (Ledoit-Wolf shrinkage,
since a few hundred images give a singular 512 x 512 estimate)::

    mahalanobis(x, y) = (x - mu_y)^T S^-1 (x - mu_y)

the squared distance to the image's own class: large for an image the label's class does not
explain, whether it looks like another class (a wrong label) or like no real image at all (blur,
noise, a stain shift), which is the case the JSD misses.

``rank_mean``: the mean of several scores' percentile ranks within the synthetic pool
(:func:`percentile_ranks`), so one number still orders the images; ties share their mean rank.

Each fold model ``k`` scores every synthetic image (none of which it trained on) against the real
images it trained on, from the forward pass that also gives the synthetic logits; a synthetic
image's score is the mean over the ``K`` models. Real images keep their out-of-fold JSD.

The gate compares ``jsd_score`` with ``tau`` in bits. A feature score is put on that scale by
:func:`match_quantiles`: within each label, the synthetic image ranked ``i``-th by the score gets
the ``i``-th smallest reference JSD of that label's synthetic images. So at every ``tau`` the gate
admits as many images of each label as the reference JSD would, and only *which* ones changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.covariance import LedoitWolf

#: the scores of this module, by their ``score.synthetic_score`` names
FEATURE_SCORES = ("knn", "mahalanobis")


def l2_normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    f = np.asarray(features, dtype=np.float64)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norm > 0, norm, 1.0)


def knn_scores(
    reference: np.ndarray, reference_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray, k: int
) -> np.ndarray:
    """The class-balanced deep kNN score (module docstring) of each query row, in [0, 1].

    Args:
        reference: (M, D) features of the real images the model trained on; reference_labels (M,).
        query: (N, D) features to score; query_labels (N,) their labels.
        k: neighbours per class (each class uses min(k, its count)).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    query_labels = np.asarray(query_labels, dtype=np.int64)
    reference_labels = np.asarray(reference_labels, dtype=np.int64)
    if len(query) == 0:
        return np.zeros(0)
    classes = np.unique(reference_labels)
    if len(classes) < 2 or not np.isin(query_labels, classes).all():
        raise ValueError("the kNN score needs reference images of every query label and of at least one other")
    per_class = _class_knn_distances(l2_normalise(query), l2_normalise(reference), reference_labels, classes, k)
    per_class = np.maximum(per_class, 0.0)  # rounding can make a self-distance -1e-16
    own_col = np.searchsorted(classes, query_labels)
    own = per_class[np.arange(len(query)), own_col]
    others = per_class.copy()
    others[np.arange(len(query)), own_col] = np.inf
    nearest_other = others.min(axis=1)
    total = own + nearest_other
    return np.where(total > 0, own / np.where(total > 0, total, 1.0), 0.5)


#: float64 values of one block of query-by-reference distances (32 MiB): the query rows go through in
#: blocks of ``KNN_BLOCK // M`` so that memory does not grow with the number of query x reference pairs
KNN_BLOCK = 1 << 22


def _class_knn_distances(
    query: np.ndarray, reference: np.ndarray, reference_labels: np.ndarray, classes: np.ndarray, k: int
) -> np.ndarray:
    """(N, C): the mean cosine distance from each (unit-length) query row to its ``k`` nearest
    reference rows of each class (``k`` capped at the class's count), in blocks of query rows."""
    per_class = np.empty((len(query), len(classes)))
    by_class = [reference[reference_labels == c] for c in classes]
    rows = max(1, KNN_BLOCK // max(1, len(reference)))
    for start in range(0, len(query), rows):
        block = query[start : start + rows]
        for j, members in enumerate(by_class):
            d = 1.0 - block @ members.T  # (rows, M_c) cosine distances
            kc = min(k, d.shape[1])
            nearest = np.sort(np.partition(d, kc - 1, axis=1)[:, :kc], axis=1)  # the kc smallest, ascending
            per_class[start : start + rows, j] = nearest.mean(axis=1)
    return per_class


@dataclass(frozen=True)
class ClassGaussians:
    """Class means and the shared (tied) precision matrix of reference features."""

    classes: np.ndarray  # (C,) the labels
    means: np.ndarray  # (C, D)
    precision: np.ndarray  # (D, D): the inverse of the shrunk shared covariance

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> ClassGaussians:
        """Means per class and the Ledoit-Wolf shrunk covariance of the class-centred features."""
        f = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        classes = np.unique(labels)
        means = np.stack([f[labels == c].mean(axis=0) for c in classes])
        centred = f - means[np.searchsorted(classes, labels)]
        estimator = LedoitWolf(assume_centered=True).fit(centred)
        return cls(classes, means, estimator.precision_)

    def distances(self, features: np.ndarray) -> np.ndarray:
        """(N, C) squared Mahalanobis distances of each row to each class mean."""
        f = np.asarray(features, dtype=np.float64)
        out = np.empty((len(f), len(self.means)))
        rows = max(1, KNN_BLOCK // max(1, len(self.means) * f.shape[1]))  # (rows, C, D) at a time
        for start in range(0, len(f), rows):
            diff = f[start : start + rows, None, :] - self.means[None, :, :]  # (rows, C, D)
            out[start : start + rows] = np.einsum("ncd,de,nce->nc", diff, self.precision, diff)
        return out


def mahalanobis_scores(
    reference: np.ndarray, reference_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray
) -> np.ndarray:
    """Squared Mahalanobis distance of each query row to its own label's class (module docstring)."""
    if len(query) == 0:
        return np.zeros(0)
    gaussians = ClassGaussians.fit(reference, reference_labels)
    query_labels = np.asarray(query_labels, dtype=np.int64)
    if not np.isin(query_labels, gaussians.classes).all():
        raise ValueError("the Mahalanobis score needs reference images of every query label")
    own_col = np.searchsorted(gaussians.classes, query_labels)
    return gaussians.distances(query)[np.arange(len(query)), own_col]


def feature_scores(
    name: str,
    reference: np.ndarray,
    reference_labels: np.ndarray,
    query: np.ndarray,
    query_labels: np.ndarray,
    knn_k: int,
) -> np.ndarray:
    """The feature score ``name`` (one of :data:`FEATURE_SCORES`) of each query row."""
    if name == "knn":
        return knn_scores(reference, reference_labels, query, query_labels, knn_k)
    if name == "mahalanobis":
        return mahalanobis_scores(reference, reference_labels, query, query_labels)
    raise ValueError(f"unknown feature score {name!r}; choose one of {', '.join(FEATURE_SCORES)}")


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1]: the largest value gets 1, ties share their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(0)
    return rankdata(values, method="average") / len(values)


def rank_mean(scores: list[np.ndarray]) -> np.ndarray:
    """The mean percentile rank of several scores of the same images (larger is worse in each)."""
    if not scores:
        raise ValueError("rank_mean needs at least one score")
    return np.mean([percentile_ranks(s) for s in scores], axis=0)


def match_quantiles(score: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``score`` put on ``reference``'s scale, label by label: the image ranked ``i``-th by ``score``
    (ties broken by ``reference``, then by position) gets the ``i``-th smallest ``reference`` value of
    its label. The result has the same values per label as ``reference``, in ``score``'s order."""
    score = np.asarray(score, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    labels = np.asarray(labels)
    out = np.empty(len(score))
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        order = np.lexsort((idx, reference[idx], score[idx]))  # by score, then reference, then position
        out[idx[order]] = np.sort(reference[idx])
    return out
