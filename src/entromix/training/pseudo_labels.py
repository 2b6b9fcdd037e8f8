"""Self-training: unlabelled real images labelled by the model being trained (``curriculum.pseudo_labels``).

An optional pool of real images without labels (``ingest.unlabelled_dir``, or the real training
images ``ingest.scarce_unlabelled`` hides) joins the synthetic pool behind the same gate:

1. Before epoch ``W`` (the end of warmup) and every ``pseudo_every`` epochs after, the current
   model predicts every unlabelled image: softmax at the temperature fitted on that epoch's
   validation logits (as re-scoring does, so confidences mean the same thing from epoch to epoch).
   Its pseudo-label is the argmax, its confidence the largest probability.
2. Per-class thresholds that adapt to how sure the model is of each class (FlexMatch, Zhang et
   al. 2021; FreeMatch, Wang et al. 2023): with ``m_c`` the mean confidence of the images whose
   pseudo-label is ``c`` and ``T`` = ``pseudo_threshold``,

       threshold_c = T * m_c / max_k m_k

   so the class the model is surest of keeps the full threshold and classes it is still learning
   get lower ones, in proportion (a class no image is labelled as keeps ``T``). An image passes
   when its confidence reaches its class's threshold.
3. An image that passes is scored like a synthetic image with its pseudo-label as the target,
   ``JSD(softmax || onehot(pseudo-label))`` in bits (``entromix.scoring.jsd``), and enters batches
   and EntroMixLoss through the curriculum's gate, ``jsd <= tau(t)``, sharing the synthetic slots
   (``curriculum.max_synthetic_fraction``). One that does not pass gets a score above any ``tau``.

Pseudo-labels are recomputed at every labelling, so an image can change label or drop out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from entromix.scoring.jsd import jsd_to_onehot

#: the score of an unlabelled image that has no accepted pseudo-label: above any tau (at most 1 bit)
NOT_ACCEPTED = 2.0


@dataclass(frozen=True)
class PseudoLabels:
    """One labelling of the unlabelled pool."""

    labels: np.ndarray  # (U,) int64: the argmax label of each image
    confidence: np.ndarray  # (U,) float: its probability
    thresholds: np.ndarray  # (K,) the per-class confidence thresholds
    accepted: np.ndarray  # (U,) bool: confidence >= thresholds[label]
    scores: np.ndarray  # (U,) float32 JSD in bits against the pseudo-label; NOT_ACCEPTED where not accepted


def class_thresholds(labels: np.ndarray, confidence: np.ndarray, num_classes: int, base: float) -> np.ndarray:
    """``base * m_c / max_k m_k`` per class ``c`` (``m_c``: the mean confidence of the images labelled
    ``c``); ``base`` for a class no image is labelled as."""
    means = np.array(
        [confidence[labels == c].mean() if (labels == c).any() else np.nan for c in range(num_classes)], np.float64
    )
    top = np.nanmax(means) if np.isfinite(means).any() else 1.0
    return np.where(np.isfinite(means), base * means / top, base)


def pseudo_label(probs: np.ndarray, base_threshold: float) -> PseudoLabels:
    """Pseudo-labels, adaptive thresholds and gate scores from calibrated (U, K) probabilities."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = probs.argmax(1).astype(np.int64)
    confidence = probs.max(1)
    thresholds = class_thresholds(labels, confidence, probs.shape[1], base_threshold)
    accepted = confidence >= thresholds[labels] - 1e-12
    jsd, _ = jsd_to_onehot(probs, labels)
    scores = np.where(accepted, jsd, NOT_ACCEPTED).astype(np.float32)
    return PseudoLabels(labels, confidence, thresholds, accepted, scores)


def pseudo_label_summary(
    labels: np.ndarray, accepted: np.ndarray, used: np.ndarray, hidden: np.ndarray | None, names: list[str]
) -> dict:
    """``metrics/train.json``'s ``pseudo_labels``: the pool, the images accepted at the last
    labelling (per label), those ever placed in a batch and, where the true labels are known (the
    images ``ingest.scarce_unlabelled`` hid; -1 elsewhere), how many of those were right."""
    out: dict = {
        "pool": int(len(labels)),
        "accepted_final": int(accepted.sum()),
        "accepted_final_by_label": {name: int((accepted & (labels == c)).sum()) for c, name in enumerate(names)},
        "used": int(used.sum()),
    }
    if hidden is not None:
        known = hidden >= 0
        for key, rows in (("accepted_final", accepted & known), ("used", used & known)):
            out[f"{key}_with_known_label"] = int(rows.sum())
            out[f"{key}_correct"] = int((rows & (labels == hidden)).sum())
    return out
