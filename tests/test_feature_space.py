"""Feature-space quality scores (entromix.scoring.feature_space): known answers on constructed features."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from entromix.scoring.feature_space import (
    ClassGaussians,
    feature_scores,
    knn_scores,
    l2_normalise,
    mahalanobis_scores,
    match_quantiles,
    percentile_ranks,
    rank_mean,
)


def two_clusters(rng, n0=40, n1=12, dim=8, gap=6.0):
    """Class 0 around -gap/2 e_1, class 1 around +gap/2 e_1, unit noise; 3:1-ish imbalance."""
    centre = np.zeros(dim)
    centre[0] = gap / 2
    x0 = rng.normal(size=(n0, dim)) - centre
    x1 = rng.normal(size=(n1, dim)) + centre
    return np.vstack([x0, x1]), np.r_[np.zeros(n0, int), np.ones(n1, int)], centre


def test_knn_known_answer_by_hand():
    """Unit vectors in the plane: class 0 at angle 0, class 1 at 90 degrees. A query at angle 0
    labelled 1 has cosine distance 1 to its class and 0 to the other: score 1. Labelled 0: 0."""
    reference = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    labels = np.array([0, 0, 1, 1])
    query = np.array([[5.0, 0.0], [5.0, 0.0], [1.0, 1.0]])
    scores = knn_scores(reference, labels, query, np.array([1, 0, 1]), k=2)
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(0.0)
    assert scores[2] == pytest.approx(0.5)  # at 45 degrees: as close to both classes


def test_knn_inside_its_cluster_scores_better_than_outside():
    rng = np.random.default_rng(0)
    reference, labels, centre = two_clusters(rng)
    inside = centre + 0.1 * rng.normal(size=(5, len(centre)))  # in class 1's cluster
    outside = -centre + 0.1 * rng.normal(size=(5, len(centre)))  # in class 0's, labelled 1
    s = knn_scores(reference, labels, np.vstack([inside, outside]), np.ones(10, int), k=5)
    assert (s[:5] < 0.5).all() and (s[5:] > 0.5).all() and s[:5].max() < s[5:].min()


def test_knn_is_not_outvoted_by_the_common_class():
    """200 benign against 5 malignant: a malignant-looking image labelled malignant scores on its
    class's side (< 0.5) although half of its 10 nearest images overall are benign (a plain
    10-NN vote would call its label doubtful)."""
    rng = np.random.default_rng(1)
    reference, labels, centre = two_clusters(rng, n0=200, n1=5, gap=3.0)
    query = centre[None, :] * 1.2
    nearest = np.argsort(1 - l2_normalise(query) @ l2_normalise(reference).T, axis=1)[0, :10]
    assert (labels[nearest] == 0).sum() >= 5
    assert knn_scores(reference, labels, query, np.array([1]), k=10)[0] < 0.5


def test_identical_features_give_equal_scores():
    rng = np.random.default_rng(2)
    reference, labels, centre = two_clusters(rng)
    query = np.repeat(rng.normal(size=(1, len(centre))), 4, axis=0)
    q_labels = np.ones(4, int)
    for name in ("knn", "mahalanobis"):
        s = feature_scores(name, reference, labels, query, q_labels, knn_k=5)
        assert np.ptp(s) == pytest.approx(0.0, abs=1e-9), name


def test_knn_is_scale_free_and_bounded():
    rng = np.random.default_rng(3)
    reference, labels, _ = two_clusters(rng)
    query = rng.normal(size=(20, reference.shape[1]))
    q_labels = rng.integers(0, 2, size=20)
    a = knn_scores(reference, labels, query, q_labels, k=3)
    b = knn_scores(reference * 7.0, labels, query * 0.1, q_labels, k=3)  # cosine: lengths do not matter
    np.testing.assert_allclose(a, b, atol=1e-12)
    assert ((a >= 0) & (a <= 1)).all()


def test_knn_rejects_a_label_without_reference_images():
    reference, labels = np.eye(3), np.array([0, 0, 1])
    with pytest.raises(ValueError, match="every query label"):
        knn_scores(reference, labels, np.eye(3)[:1], np.array([2]), k=1)
    with pytest.raises(ValueError, match="k must be"):
        knn_scores(reference, labels, np.eye(3)[:1], np.array([0]), k=0)


def test_scores_in_blocks_match_the_whole_matrix_and_bound_memory(monkeypatch):
    """Issue 36: the kNN distances and the Mahalanobis differences go through the query rows in
    blocks (``KNN_BLOCK`` values at a time), not as one (queries x references) matrix that grows
    with the square of N. Blocks of 1 to 7 rows give the one-matrix answer."""
    import entromix.scoring.feature_space as fs

    rng = np.random.default_rng(5)
    reference, labels, _ = two_clusters(rng, n0=30, n1=9, dim=6)
    query = rng.normal(size=(23, 6))
    q_labels = rng.integers(0, 2, 23)
    # the one-matrix formulas (before issue 36)
    distance = 1.0 - l2_normalise(query) @ l2_normalise(reference).T
    per_class = np.stack([np.sort(distance[:, labels == c], axis=1)[:, :4].mean(axis=1) for c in (0, 1)], axis=1).clip(
        0
    )
    own = per_class[np.arange(23), q_labels]
    expected_knn = own / (own + per_class[np.arange(23), 1 - q_labels])
    gaussians = ClassGaussians.fit(reference, labels)
    diff = query[:, None, :] - gaussians.means[None]
    expected_maha = np.einsum("ncd,de,nce->nc", diff, gaussians.precision, diff)[np.arange(23), q_labels]
    for block in (len(reference), 6 * len(reference), 7 * len(reference), 1):  # 1, 6, 7 and 1 row(s)
        monkeypatch.setattr(fs, "KNN_BLOCK", block)
        np.testing.assert_allclose(knn_scores(reference, labels, query, q_labels, k=4), expected_knn, rtol=1e-12)
        np.testing.assert_allclose(mahalanobis_scores(reference, labels, query, q_labels), expected_maha, rtol=1e-12)


def test_mahalanobis_matches_the_formula_with_ledoit_wolf():
    rng = np.random.default_rng(4)
    reference, labels, centre = two_clusters(rng, dim=5)
    query = rng.normal(size=(7, 5))
    q_labels = rng.integers(0, 2, size=7)
    means = np.stack([reference[labels == c].mean(0) for c in (0, 1)])
    precision = LedoitWolf(assume_centered=True).fit(reference - means[labels]).precision_
    expected = [(q - means[y]) @ precision @ (q - means[y]) for q, y in zip(query, q_labels, strict=True)]
    np.testing.assert_allclose(mahalanobis_scores(reference, labels, query, q_labels), expected, rtol=1e-10)
    g = ClassGaussians.fit(reference, labels)
    assert g.distances(means[:1])[0, 0] == pytest.approx(0.0, abs=1e-12)  # a class mean is at distance 0


def test_mahalanobis_sees_an_off_manifold_image_that_its_class_still_explains_best():
    """An image far out along a direction no real image varies in (blur, noise): it is still nearer
    its own class than the other (a classifier would call it right, so the JSD says 'good'), yet
    its distance to its class is far larger than a typical member's."""
    rng = np.random.default_rng(5)
    dim = 6
    reference, labels, centre = two_clusters(rng, dim=dim)
    reference[:, -1] *= 0.05  # the last direction barely varies in the real images
    typical = centre + rng.normal(size=(20, dim)) * np.r_[np.ones(dim - 1), 0.05]
    odd = centre.copy()
    odd[-1] = 3.0
    s = mahalanobis_scores(reference, labels, np.vstack([typical, odd]), np.ones(21, int))
    g = ClassGaussians.fit(reference, labels).distances(odd[None, :])[0]
    assert g[1] < g[0]  # its own class explains it better than the other
    assert s[-1] > s[:-1].max() and s[-1] > 3 * np.median(s[:-1])


def test_rank_mean_and_percentile_ranks():
    np.testing.assert_allclose(percentile_ranks(np.array([3.0, 1.0, 2.0, 2.0])), [1.0, 0.25, 0.625, 0.625])
    a = np.array([0.1, 0.5, 0.9])
    b = np.array([30.0, 10.0, 20.0])
    np.testing.assert_allclose(rank_mean([a, b]), [(1 / 3 + 1) / 2, (2 / 3 + 1 / 3) / 2, (1 + 2 / 3) / 2])
    np.testing.assert_allclose(rank_mean([a]), percentile_ranks(a))
    with pytest.raises(ValueError):
        rank_mean([])


def test_match_quantiles_keeps_values_per_label_in_the_new_order():
    reference = np.array([0.9, 0.1, 0.5, 0.3, 0.7, 0.2])
    labels = np.array([1, 1, 1, 0, 0, 0])
    score = np.array([1.0, 3.0, 2.0, 5.0, 4.0, 6.0])  # label 1: order 0, 2, 1; label 0: 4, 3, 5
    out = match_quantiles(score, reference, labels)
    np.testing.assert_allclose(out, [0.1, 0.9, 0.5, 0.3, 0.2, 0.7])
    for label in (0, 1):  # the same multiset of values per label: the gate admits as many at every tau
        np.testing.assert_allclose(np.sort(out[labels == label]), np.sort(reference[labels == label]))
    np.testing.assert_allclose(match_quantiles(reference, reference, labels), reference)  # JSD onto itself
    # ties in the score keep the reference order between them
    np.testing.assert_allclose(match_quantiles(np.zeros(3), np.array([0.4, 0.2, 0.6]), np.ones(3)), [0.4, 0.2, 0.6])


def test_the_variant_search_script_scores_every_variant(tmp_path, capsys):
    """scripts/feature_score_variants.py (RESULTS.md section 7's search): every variant gives one
    finite score per synthetic image, and the report prints them with the per-damage table."""
    import pickle
    import sys
    from pathlib import Path

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import feature_score_variants as fsv

    rng = np.random.default_rng(0)
    n_real, n_syn, folds = 24, 12, 2
    real_labels = np.r_[np.zeros(16, int), np.ones(8, int)]
    fold = np.tile([0, 1], n_real // 2)

    def features(n):
        out = {f"{s}_{p}": rng.random((n, 4)) for s in fsv.STAGES for p in ("mean", "std")}
        return {"logits": rng.normal(size=(n, 2)), "pen": rng.random((n, 6)), **out}

    calls = []
    for k in range(folds):
        calls += [features(int((fold == k).sum())), features(n_syn), features(int((fold != k).sum()))]
    ids = np.arange(100, 100 + n_syn)
    table = pd.DataFrame({"id": ids, "filename": "x", "label": 1})
    for name in ("ensemble", "knn", "mahalanobis", "rank_mean"):
        table[name] = rng.random(n_syn)
    tiers = pd.DataFrame({"id": ids, "tier": ["good"] * 6 + ["degraded"] * 3 + ["hallucinated"] * 3})
    tiers["detail"] = ["augment"] * 6 + ["blur"] * 3 + ["benign-source"] * 3
    payload = {
        "calls": calls,
        "fold": fold,
        "real_labels": real_labels,
        "syn_labels": np.ones(n_syn, int),
        "scores": table,
        "tiers": tiers,
    }
    scores = fsv.variant_scores(payload)
    assert len(scores) > 20 and all(v.shape == (n_syn,) and np.isfinite(v).all() for v in scores.values())
    np.testing.assert_allclose(scores["stage: mahalanobis"], table["mahalanobis"])
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps(payload))
    fsv.report([path])
    fsv.report_by_detail([path])
    out = capsys.readouterr().out
    assert "| stage: ensemble |" in out and "| blur |" in out and "over 1 dumps (d)" in out
