"""EntroMixLoss: class-weighted cross-entropy in which synthetic images count only through a gate.

For a batch of ``n`` images with logits ``z_i``, labels ``y_i``, synthetic flags ``s_i`` and JSD
scores ``j_i`` (bits), at threshold ``tau``:

    CE_i   = -w_{y_i} log softmax(z_i)[y_i]                        (per image, class-weighted)
    g_i    = 1                                    if image i is real
           = 1[j_i <= tau]                         synthetic, hard gate (the reference)
           = sigmoid((tau - j_i) / T)              synthetic, soft gate
           = 0                                    synthetic, tau is None (warmup)
    loss   = sum_i g_i CE_i / sum_i g_i

so the loss is a mean over the admitted images (the soft gate's weights count fractionally).
When nothing is admitted the loss is 0 and still carries a graph (``backward`` gives zero
gradients, never NaN).

Class weights ``w_c = n_total / (n_classes * n_c)`` (``entromix.modeling.fit.class_weights``), never the
reference's constants (which do not follow from its counts). ``train.class_weights`` says which
counts: ``real`` (the real training images), ``mix`` (the images the loss sees in the current
epoch, admitted synthetic ones included, so that a malignant-only synthetic pool lowers the
malignant weight instead of multiplying it; :meth:`EntroMixLoss.set_class_weights` per epoch) or
``none`` (all 1). Note the mean divides by the number of admitted images, not by
``sum w_{y_i}`` as ``nn.CrossEntropyLoss(weight=...)`` does with ``reduction='mean'``: that is the
reference's form. With ``label_smoothing`` ``e`` the target of image ``i`` is
``(1 - e) onehot(y_i) + e / C`` (``F.cross_entropy``'s definition); the gate is unchanged.

Focal loss (``train.loss: focal``, Lin et al. 2017) replaces ``CE_i`` by
``FL_i = (1 - p_i)^gamma CE_i`` with ``p_i = softmax(z_i)[y_i]`` (``train.focal_gamma``; gamma 0 is
CE): confidently right images count less, so the rare, hard ones count more. The class weights
``w_c`` play the role of the focal loss's alpha. The gate is unchanged: it decides which images
count, the focal term how much.

Across processes (torchrun, ``entromix.common.distributed``) each rank holds a shard of the global
batch. The mean stays the global one: each rank's numerator ``sum_i g_i CE_i`` over its shard is
divided by ``sum g_i`` over the *whole* batch (an all-reduce of the count), times the number of
ranks, because DistributedDataParallel averages the ranks' gradients. The gradient is then the one
of the single-process loss on the whole batch, however the admitted images fall across ranks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from entromix.common.distributed import SINGLE, World, all_reduce_sum
from entromix.training.gate import Gate, gate_weights


class EntroMixLoss(nn.Module):
    """``sum g_i CE_i / sum g_i`` (see the module docstring).

    Args:
        class_weights: (C,) float weights ``w_c``.
        gate: ``hard`` (reference) or ``soft``.
        temperature: soft gate width in bits.
        loss: ``ce`` (cross-entropy) or ``focal`` (``(1 - p_true)^focal_gamma`` times it).
        world: the processes sharing each batch (one by default): the count of admitted images is
            summed over all of them.
    """

    def __init__(
        self,
        class_weights: torch.Tensor,
        gate: Gate = "hard",
        temperature: float = 0.02,
        label_smoothing: float = 0.0,
        world: World = SINGLE,
        loss: Literal["ce", "focal"] = "ce",
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.world = world
        self.loss = loss
        self.focal_gamma = focal_gamma
        self.register_buffer("class_weights", class_weights.float())
        self.gate = gate
        self.temperature = temperature
        self.label_smoothing = label_smoothing

    def set_class_weights(self, class_weights: torch.Tensor) -> None:
        """Replace ``w`` in place (``train.class_weights: mix`` does so every epoch)."""
        self.class_weights.copy_(class_weights.to(self.class_weights))

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, is_syn: torch.Tensor, jsd: torch.Tensor, tau: float | None
    ) -> torch.Tensor:
        """logits (B, C), targets (B,) int64, is_syn (B,) bool, jsd (B,) bits -> scalar loss."""
        per_image = F.cross_entropy(
            logits.float(), targets, weight=self.class_weights, reduction="none", label_smoothing=self.label_smoothing
        )  # (B,)
        if self.loss == "focal":
            p_true = torch.softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
            per_image = (1.0 - p_true).clamp_min(0.0) ** self.focal_gamma * per_image
        g = gate_weights(is_syn, jsd, tau, self.gate, self.temperature)  # (B,)
        admitted = all_reduce_sum(g.sum(), self.world)  # the whole batch's count, on every rank
        # clamp: with nothing admitted the numerator is an exact 0 with a graph, so 0 / eps = 0
        return (per_image * g).sum() * self.world.size / admitted.clamp_min(1e-12)
