"""The label space: K class names (``ingest.labels``) and the clinical binary view over them.

entromix trains a K-class classifier (K >= 2). The clinical question stays binary: is the image
malignant? ``ingest.positive_labels`` names the labels that count as positive (for example
``[early, pre, pro]`` when ``labels`` is ``[benign, early, pre, pro]``), and

* an image's binary target is 1 when its label is one of them;
* its positive probability is the sum of the softmax over them, so sensitivity, specificity,
  ROC-AUC and the tuned threshold read one number per image, for any K.

With two labels and ``positive_labels: [malignant]`` (the default) the positive probability is
``softmax[:, 1]``, as it always was. A checkpoint records its positive labels; one written before
they existed is read as ``labels[1:]`` (its second label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from entromix.common.errors import ParamsError

if TYPE_CHECKING:  # torch is imported where it is used: the ingest stage reads labels and never needs it
    import torch


@dataclass(frozen=True)
class LabelSpace:
    """Class names by index and the indices of the positive (malignant) ones."""

    names: tuple[str, ...]
    positive: tuple[int, ...]

    @classmethod
    def from_names(cls, names: Sequence[str], positive_names: Sequence[str] | None, key: str = "ingest") -> LabelSpace:
        """``positive_names`` None means every label but the first (``labels[1:]``)."""
        names = tuple(str(n) for n in names)
        if len(names) < 2 or len(set(names)) != len(names):
            raise ParamsError(f"{key}.labels must list at least two distinct names, got {list(names)}.")
        chosen = list(names[1:]) if positive_names is None else [str(n) for n in positive_names]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise ParamsError(
                f"{key}.positive_labels names {', '.join(map(repr, unknown))}, which is not in {key}.labels "
                f"({', '.join(names)}). List the labels that count as malignant."
            )
        if not chosen or len(set(chosen)) == len(names):
            raise ParamsError(
                f"{key}.positive_labels must name at least one label and leave at least one out (the benign "
                f"side of the binary view), got {chosen}."
            )
        return cls(names, tuple(sorted({names.index(n) for n in chosen})))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def positive_names(self) -> list[str]:
        return [self.names[i] for i in self.positive]

    @property
    def negative(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.num_classes) if i not in self.positive)

    @property
    def is_plain_binary(self) -> bool:
        """Two classes with label 1 positive: the binary view is the classifier itself."""
        return self.num_classes == 2 and self.positive == (1,)

    @property
    def positive_title(self) -> str:
        """How reports name the positive side: ``malignant``, or ``early+pre+pro``."""
        return "+".join(self.positive_names)

    @property
    def binary_names(self) -> list[str]:
        """Names of the binary view's two sides, for tables and figures: the labels themselves for
        a plain binary model, else ``benign`` and ``early+pre+pro`` (each side's labels joined)."""
        if self.is_plain_binary:
            return list(self.names)
        return ["+".join(self.names[i] for i in self.negative), self.positive_title]

    def binary_targets(self, labels: np.ndarray) -> np.ndarray:
        """int64 (N,): 1 where the label is a positive one."""
        return np.isin(np.asarray(labels, dtype=np.int64), self.positive).astype(np.int64)

    def positive_probability(self, probs: np.ndarray) -> np.ndarray:
        """(N,) the summed probability of the positive labels from (N, K) probabilities."""
        return np.asarray(probs)[:, list(self.positive)].sum(1)

    def positive_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool (K,): True at the positive labels (index it with targets or argmaxes)."""
        import torch

        mask = torch.zeros(self.num_classes, dtype=torch.bool)
        mask[list(self.positive)] = True
        return mask.to(device)


def label_space_of_checkpoint(ckpt: dict) -> LabelSpace:
    """A checkpoint's label space; one written before ``positive_labels`` existed: ``labels[1:]``."""
    return LabelSpace.from_names(ckpt["labels"], ckpt.get("positive_labels"), "checkpoint")
