"""A faithful re-implementation of the reference MLNT meta step, kept as the baseline to measure against.

As in the authors' code (LiJunnan1992/MLNT ``main.py`` and the CIFAR-10 re-implementation ckghosted/MLNT-CIFAR10
``main.py``, ``train()``), the student's forward pass runs once, ``outputs = net(inputs)``, and is shared by the
main CE and every label set's inner loss. Each set then gets its own pass: the inner gradient is taken from that
shared forward graph with ``create_graph=True``, the fast weights are evaluated on the batch, and the M KL terms are
summed into one graph, so every set's inner-gradient graph and fast-weight graph stay alive until the backward
pass. Nothing else is shared: no CE gradient, no changed-rows shortcut. The authors back-propagate the CE and the
meta loss separately (``class_loss.backward(retain_graph=True)``, then ``meta_loss.backward()``); here they are
summed into one loss and one backward pass, as in every other step the benchmarks time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def reference_mlnt_loss(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic_labels: Tensor,
                        teacher_probs: Tensor, *, inner_lr: float, meta_weight: float) -> Tensor:
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    outputs = net(inputs)  # once, for the main CE and every set's inner loss
    meta = inputs.new_zeros(())
    for labels_m in synthetic_labels:
        grads = torch.autograd.grad(F.cross_entropy(outputs, labels_m), list(params.values()), create_graph=True,
                                    retain_graph=True)
        fast = {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
        log_q = functional_call(net, fast, (inputs,)).log_softmax(-1)
        meta = meta + F.kl_div(log_q, teacher_probs, reduction="sum") / teacher_probs.numel()
        # (nn.KLDivLoss(): the reference codes' units)
    return F.cross_entropy(outputs, labels) + meta_weight * meta / synthetic_labels.shape[0]
