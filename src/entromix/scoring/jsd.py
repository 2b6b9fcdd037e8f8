"""Jensen-Shannon divergence between a classifier's softmax and an image's one-hot label, in bits.

General form, for distributions ``P`` and ``Q`` over the same classes (log base 2)::

    JSD(P || Q) = 0.5 * KL(P || M) + 0.5 * KL(Q || M),   M = (P + Q) / 2,   KL(A || B) = sum a log2(a / b)

It is symmetric, 0 for identical distributions and at most 1 bit; ``0 * log 0 = 0``. It equals
``scipy.spatial.distance.jensenshannon(P, Q, base=2) ** 2`` (scipy returns the square root).

With a one-hot ``Q`` at the label ``y`` it depends only on ``p = P[y]`` (``p_true``), whatever
the number of classes, because every other class contributes ``p_j log2(p_j / (p_j / 2)) = p_j``::

    JSD(p) = 0.5 * [ log2(2 / (1 + p)) + p * log2(2p / (1 + p)) + (1 - p) ]

``JSD`` falls monotonically from 1 bit at ``p = 0`` to 0 at ``p = 1``. So the curriculum's gate
``jsd <= tau`` is a confidence threshold in disguise: ``p_true >= p*(tau)``. In particular
``tau = 0.311`` bits is ``p_true = 0.5`` (:data:`TAU_AT_P_HALF`): above it the gate admits images
that the scorer assigns to another class than their label.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

#: JSD in bits at p_true = 0.5: the largest threshold that admits only images the reference
#: classifier agrees with (0.3113 bits).
TAU_AT_P_HALF: float


def _xlog2x_over(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise ``a * log2(a / b)`` with ``0 * log 0 = 0``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.zeros(np.broadcast(a, b).shape)
    mask = np.broadcast_to(a > 0, out.shape)
    a_b, b_b = np.broadcast_to(a, out.shape), np.broadcast_to(b, out.shape)
    out[mask] = a_b[mask] * np.log2(a_b[mask] / b_b[mask])
    return out


def jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """JSD in bits between distributions along the last axis; shapes (..., C) -> (...)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)
    return 0.5 * _xlog2x_over(p, m).sum(-1) + 0.5 * _xlog2x_over(q, m).sum(-1)


def jsd_from_p_true(p_true: np.ndarray) -> np.ndarray:
    """Closed form of ``JSD(softmax || onehot(label))`` in bits from ``p_true`` (see module doc)."""
    p = np.clip(np.asarray(p_true, dtype=np.float64), 0.0, 1.0)
    return np.clip(0.5 * (np.log2(2.0 / (1.0 + p)) + _xlog2x_over(p, (1.0 + p) / 2.0) + (1.0 - p)), 0.0, 1.0)


def jsd_to_onehot(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image ``(jsd in bits, p_true)`` for softmax rows ``probs`` (N, C) and ``labels`` (N,)."""
    probs = np.asarray(probs, dtype=np.float64)
    p_true = probs[np.arange(len(probs)), np.asarray(labels, dtype=np.int64)]
    return jsd_from_p_true(p_true), p_true


def p_true_at_jsd(tau: float) -> float:
    """Inverse of :func:`jsd_from_p_true`: the ``p_true`` whose JSD is ``tau`` bits.

    ``jsd <= tau`` is the same as ``p_true >= p_true_at_jsd(tau)``. ``tau >= 1`` gives 0 (every
    image passes) and ``tau <= 0`` gives 1.
    """
    if tau >= 1.0:
        return 0.0
    if tau <= 0.0:
        return 1.0
    return float(brentq(lambda p: float(jsd_from_p_true(p)) - tau, 0.0, 1.0, xtol=1e-12))


TAU_AT_P_HALF = float(jsd_from_p_true(0.5))
