"""A faithful re-implementation of the reference MLNT meta step, kept as the baseline to measure against.

As in the authors' code, each synthetic label set gets its own pass: the student's forward pass is
recomputed, the inner gradient is taken with ``create_graph=True``, the fast weights are evaluated, and the
M losses are summed into one graph. Nothing is shared between label sets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def reference_mlnt_loss(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic_labels: Tensor,
                        teacher_probs: Tensor, *, inner_lr: float, meta_weight: float) -> Tensor:
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    meta = inputs.new_zeros(())
    for labels_m in synthetic_labels:
        ce_m = F.cross_entropy(net(inputs), labels_m)
        grads = torch.autograd.grad(ce_m, list(params.values()), create_graph=True)
        fast = {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
        log_q = functional_call(net, fast, (inputs,)).log_softmax(-1)
        meta = meta + F.kl_div(log_q, teacher_probs, reduction="sum") / teacher_probs.numel()
        # (nn.KLDivLoss(): the reference codes' units)
    return F.cross_entropy(net(inputs), labels) + meta_weight * meta / synthetic_labels.shape[0]
