"""Temperature scaling (Guo et al., 2017): one scalar ``T`` so that ``softmax(logits / T)`` is calibrated.

``T`` minimises the negative log-likelihood of the true labels over held-out logits (here the
out-of-fold predictions, which no model trained on). ``T > 1`` softens over-confident outputs;
the ranking of images by ``p_true`` never changes, but the JSD values, and so which images pass
a fixed threshold ``tau``, do.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


#: The search range of the temperature. A fit at the upper bound means the logits carry almost no
#: information about the labels (the score stage warns).
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The NLL-minimising temperature in ``bounds`` (searched in log space)."""
    labels = np.asarray(labels, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: nll(logits, labels, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def calibrated_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
