"""The MLNT meta step: fast weights from synthetic noisy labels and the consistency (meta) loss.

Notation: a batch ``x`` of N samples, K classes, M synthetic label sets ``y~_m``, network ``f(x; theta)``,
``p = softmax(f(x; theta))``. For each set, the fast weights are
``theta'_m = theta - alpha * grad CE(f(x; theta), y~_m)`` and the meta loss is
``J = mean_m KL(teacher || softmax(f(x; theta'_m)))``.

Scale (the reference codes' units): each KL term is the mean over all N x K entries of
``teacher * (log teacher - log q)``, the default reduction of ``nn.KLDivLoss()`` that both reference codes use
(LiJunnan1992/MLNT and the CIFAR-10 re-implementation). It is 1/K of the per-sample ("batchmean") KL, so the
published ``meta_weight`` values (0.4 on CIFAR-10, 1 on Clothing1M) mean here what they mean there.

Why this is cheaper than the reference implementation (M independent second-order backward passes):

* The forward pass on the batch is the same for every label set, so it runs once (the authors' code shares it
  too).
* The CE gradient is linear in its cotangent ``(p - Y)/N``. With a base label vector ``b`` (the given
  labels in ``mlnt_loss``) ``grad CE_m = grad CE_b + J_f^T (onehot(b) - onehot(y~_m)) / N``. The first
  term is computed once and doubles as the CE gradient of the main loss; the second has a cotangent that
  is zero wherever ``y~_m`` equals ``b`` (about two thirds of the rows with the paper's settings).
* When no module couples the samples of a batch (``couples_samples``: no batch norm using the batch's statistics,
  no dropout in training mode), that sparse term is a gradient over the changed rows alone, so it is computed on
  the sub-batch ``x[changed]``.
* In the weight-space modes the gradient is computed here, one label set at a time: the set's fast-weight
  pass is differentiated (a first-order backward pass at the fast weights) and, in ``exact`` mode, so is its
  own part of the inner gradient, then its graphs are freed. Peak memory therefore does not grow with M.
  What every set shares, the path through ``grad CE_b``, is summed over the sets as a cotangent and
  differentiated once at the end (one Hessian-vector product, not M). The returned scalar carries that
  gradient for the trainable parameters of ``net`` that its forward pass reaches (it is not differentiable with
  respect to anything else: a parameter the pass never uses keeps no gradient, as after a CE step).
* Passes besides the step's forward pass (fast weights, changed rows) run on copies of the buffers, so running
  statistics (batch norm, an instance norm that tracks them) move once per step.

Data parallelism: with ``batch_mean`` (``model.distributed.Group.mean``) each process passes its rows of the
global batch, and the inner gradients (or, in ``head`` mode, the head's update) are averaged over the
processes before the fast-weight passes, so the fast weights are those of the global batch. The returned
loss is this process's share; averaging the outer gradients over the processes completes the global step.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from model._checks import check_float, check_labels, check_tensor

Mode = Literal["exact", "first_order", "head"]
MODES = typing.get_args(Mode)
BatchMean = Callable[[Tensor], Tensor]  # a differentiable mean over data-parallel processes


def meta_loss(net: nn.Module, inputs: Tensor, synthetic_labels: Tensor, teacher_probs: Tensor, *,
              inner_lr: float, mode: str = "exact", batch_mean: BatchMean | None = None) -> Tensor:
    """The consistency loss J(theta) of MLNT (see the module docstring) as a differentiable scalar.

    ``exact`` differentiates through the inner gradient (second order); ``first_order`` treats the inner
    gradient as a constant; ``head`` applies the fast update to ``net.head`` only, in closed form.
    ``teacher_probs`` ``[N, K]`` is a fixed target (it is detached).
    """
    logits, features = _forward(net, inputs, mode)
    _check_meta_args(logits, synthetic_labels, teacher_probs, inner_lr)
    base = synthetic_labels.mode(dim=0).values  # the most common label per row keeps the sparse term small
    meta, _ = _meta(net, inputs, logits, features, base, synthetic_labels, teacher_probs.detach(),
                    inner_lr=inner_lr, mode=mode, batch_mean=batch_mean)
    return meta


def mlnt_loss(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic_labels: Tensor, teacher_probs: Tensor,
              *, inner_lr: float, meta_weight: float, mode: str = "exact",
              batch_mean: BatchMean | None = None) -> Tensor:
    """``CE(f(x; theta), labels) + meta_weight * meta_loss(...)``: the objective whose gradient is the MLNT
    update. The forward pass and the CE gradient with ``labels`` are computed once and shared by both terms.
    """
    return mlnt_loss_with_logits(net, inputs, labels, synthetic_labels, teacher_probs, inner_lr=inner_lr,
                                 meta_weight=meta_weight, mode=mode, batch_mean=batch_mean)[0]


def mlnt_loss_with_logits(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic_labels: Tensor,
                          teacher_probs: Tensor, *, inner_lr: float, meta_weight: float,
                          mode: str = "exact", batch_mean: BatchMean | None = None) -> tuple[Tensor, Tensor]:
    """``mlnt_loss`` and the student's logits on ``inputs`` (for progress reporting), from one forward pass."""
    logits, features = _forward(net, inputs, mode)
    _check_meta_args(logits, synthetic_labels, teacher_probs, inner_lr)
    check_tensor("labels", labels, ndim=1, dtype=torch.int64)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"labels: expected {logits.shape[0]} entries (one per input), found {labels.shape[0]}")
    check_labels("labels", labels, logits.shape[1])
    meta_weight = check_float("meta_weight", meta_weight, low=0.0)
    ce = F.cross_entropy(logits, labels)
    if meta_weight == 0.0:
        return ce, logits
    meta, ce_grads = _meta(net, inputs, logits, features, labels, synthetic_labels, teacher_probs.detach(),
                           inner_lr=inner_lr, mode=mode, batch_mean=batch_mean)
    if ce_grads is not None:
        ce = _with_gradient(ce, *ce_grads)
    return ce + meta_weight * meta, logits


def couples_samples(net: nn.Module) -> bool:
    """Whether a sample's output can depend on the rest of its batch, or on a second forward pass: then the inner
    gradient's changed-rows term is taken through the batch's own forward pass, never a pass over the changed rows.

    True when a batch-norm layer normalises with the batch's statistics (in training mode, or in any mode when it
    keeps no running statistics), or when a dropout layer is in training mode (a second pass would draw another
    mask, and the inner gradient would be that of no single network). A custom module that couples samples in
    another way must say so with an attribute ``couples_samples = True`` on the network.
    """
    declared = getattr(net, "couples_samples", None)
    if declared is not None:
        return bool(declared)
    return any((isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None))
               or (isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0)
               for m in net.modules())


# --- internals ---------------------------------------------------------------------------------------------


def _forward(net: nn.Module, inputs: Tensor, mode: str) -> tuple[Tensor, Tensor | None]:
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}. Valid: {', '.join(MODES)}")
    check_tensor("inputs", inputs, floating=True)
    if mode != "head":
        return net(inputs), None
    head = getattr(net, "head", None)
    if not isinstance(head, nn.Linear) or not callable(getattr(net, "features", None)):
        raise TypeError(f"net: mode 'head' expects a network with .features(x) and a .head nn.Linear, "
                        f"found {type(net).__name__} with head {type(head).__name__}")
    features = net.features(inputs)
    return head(features), features


def _check_meta_args(logits: Tensor, synthetic: Tensor, teacher_probs: Tensor, inner_lr: float) -> None:
    n, k = logits.shape
    check_tensor("synthetic_labels", synthetic, ndim=2, dtype=torch.int64)
    if synthetic.shape[1] != n or synthetic.shape[0] < 1:
        raise ValueError(f"synthetic_labels: expected shape [M >= 1, {n}], found {tuple(synthetic.shape)}")
    check_labels("synthetic_labels", synthetic, k)
    check_tensor("teacher_probs", teacher_probs, ndim=2, floating=True)
    if tuple(teacher_probs.shape) != (n, k):
        raise ValueError(f"teacher_probs: expected shape [{n}, {k}] (inputs x classes), "
                         f"found {tuple(teacher_probs.shape)}")
    check_float("inner_lr", inner_lr, low=0.0)


def _meta(net, inputs, logits, features, base, synthetic, teacher, *, inner_lr, mode, batch_mean):
    """Returns the meta loss and, for the weight-space modes, ``(params, grads)``: the CE gradient with
    ``base`` labels (of this process's rows)."""
    if mode == "head":
        return _head_meta(net.head, features, logits, base, synthetic, teacher, inner_lr, batch_mean), None
    return _weight_meta(net, inputs, logits, base, synthetic, teacher, inner_lr, second_order=mode == "exact",
                        batch_mean=batch_mean)


def static_exact_step(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor,
                      weight: Tensor | float, *, inner_lr: float,
                      ) -> tuple[Tensor, Tensor, tuple[Tensor, ...], list[Tensor]]:
    """``(loss, logits, params, grads)`` of ``mlnt_loss`` in ``exact`` mode with static shapes and no host
    synchronisation, for a CUDA graph (``model.graphed``): the value (detached), the logits (detached), the trainable
    parameters the forward pass reaches and their gradient. Each set's changed-rows term goes through the step's
    forward pass with a dense cotangent, zero on the rows whose label did not change (the same term, at a static
    shape), and no set is skipped. Single process; no argument checks (they would synchronise): the caller checks."""
    logits = net(inputs)
    ce = F.cross_entropy(logits, labels)
    meta, params, meta_grads, base_grads = _meta_gradient(net, inputs, logits, labels, synthetic, teacher, inner_lr,
                                                          second_order=True, batch_mean=None, static=True)
    grads = torch._foreach_add([g.detach() for g in base_grads], torch._foreach_mul(meta_grads, weight))
    return (ce + weight * meta).detach(), logits.detach(), params, grads


def _weight_meta(net, inputs, logits, base, synthetic, teacher, inner_lr, *, second_order, batch_mean):
    """The meta loss, its gradient computed here one label set at a time (see the module docstring), returned
    as a scalar that carries that gradient."""
    value, params, total, base_grads = _meta_gradient(net, inputs, logits, base, synthetic, teacher, inner_lr,
                                                      second_order=second_order, batch_mean=batch_mean)
    return _with_gradient(value, params, total), (params, base_grads)


def _meta_gradient(net, inputs, logits, base, synthetic, teacher, inner_lr, *, second_order, batch_mean,
                   static=False):
    """``(value, params, dJ/dparams, grad CE_base)``, one label set at a time; ``static``: see
    ``static_exact_step``."""
    trainable = tuple(p for p in net.parameters() if p.requires_grad)
    base_grads = _grad_fn(trainable, create_graph=second_order)(F.cross_entropy(logits, base), retain_graph=True,
                                                                materialize=False)
    params, base_grads = _reached(trainable, base_grads)
    slots = _slots(net, params)
    grad = _grad_fn(params, create_graph=second_order)
    retain = static or couples_samples(net)  # sets' terms through the step's own forward pass
    gradient, scale = _MetaGradient(params, retain_graph=retain), 1.0 / synthetic.shape[0]
    value = logits.new_zeros(())
    for extra in _inner_deltas(net, slots[1], inputs, logits, base, synthetic, grad, static=static):
        leaves, inner = _inner_grads(base_grads, extra, batch_mean, second_order=second_order)
        kl, fast_grads = _fast_pass(net, slots, params, inputs, inner, teacher, inner_lr)
        value = value + kl * scale
        gradient.add_fast(fast_grads, scale)
        if second_order:  # chain dKL/dtheta' through theta' = theta - alpha * grad CE_m
            gradient.add_inner(inner, leaves, torch._foreach_mul(fast_grads, -inner_lr * scale))
    if second_order:
        gradient.add_shared(base_grads)
    return value, params, gradient.total, base_grads


def _reached(params, grads) -> tuple[tuple[Tensor, ...], list[Tensor]]:
    """The parameters the forward pass reaches (those with a gradient, None for the others) and their gradients. The
    meta step leaves the others out, so that they keep no gradient, as after a CE step: a zero gradient would let the
    optimiser's weight decay and momentum move a layer the loss never uses."""
    reached = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
    return tuple(p for p, _ in reached), [g for _, g in reached]


class _MetaGradient:
    """dJ/dtheta summed over the label sets. The share that goes through grad CE_base, which every set has,
    is summed as a cotangent first and differentiated once, by ``add_shared``."""

    def __init__(self, params, *, retain_graph: bool):
        self.params, self.retain_graph = params, retain_graph  # retained: sets' graphs share the forward pass
        self.total = [torch.zeros_like(p) for p in params]
        self.base_cotangent = [torch.zeros_like(p) for p in params]  # dJ/d(grad CE_base)

    def add_fast(self, grads, scale: float) -> None:
        """dKL_m/dtheta' at the fast weights: the direct share of dKL_m/dtheta."""
        torch._foreach_add_(self.total, grads, alpha=scale)

    def add_inner(self, inner, leaves, cotangent) -> None:
        """``cotangent`` = dJ/d(grad CE_m): through this set's own graph now, through grad CE_base later."""
        if inner is leaves:
            torch._foreach_add_(self.base_cotangent, cotangent)
            return
        back = torch.autograd.grad(inner, [*self.params, *leaves], grad_outputs=cotangent,
                                   retain_graph=self.retain_graph, allow_unused=True, materialize_grads=True)
        torch._foreach_add_(self.total, back[:len(self.params)])
        torch._foreach_add_(self.base_cotangent, back[len(self.params):])

    def add_shared(self, base_grads) -> None:
        """The Hessian-vector product through grad CE_base, once for all sets."""
        torch._foreach_add_(self.total, torch.autograd.grad(base_grads, self.params, grad_outputs=self.base_cotangent,
                                                            allow_unused=True, materialize_grads=True))


def _inner_deltas(net, buffers, inputs, logits, base, synthetic, grad, *,
                  static=False) -> Iterator[list[Tensor] | None]:
    """grad CE_m - grad CE_base for each label set m, lazily (one set's graph alive at a time); None where
    the set equals ``base``. A pass over the changed rows runs on copies of ``buffers``. ``static``: every set's
    term through the step's forward pass, with a dense cotangent (no set skipped, no host synchronisation)."""
    n, k = logits.shape
    coupled = couples_samples(net)
    for labels_m in synthetic:
        if static:
            delta = (dense_one_hot(base, k, logits.dtype) - dense_one_hot(labels_m, k, logits.dtype)) / n
            yield grad(logits, grad_outputs=delta, retain_graph=True)
            continue
        rows = (labels_m != base).nonzero().squeeze(1)
        if not rows.numel():
            yield None
            continue
        # Its cotangent is zero outside ``rows``: without coupling, a gradient over those rows alone.
        delta = (F.one_hot(base[rows], k) - F.one_hot(labels_m[rows], k)).to(logits.dtype) / n
        if coupled:
            yield grad(logits, grad_outputs=logits.new_zeros(n, k).index_copy(0, rows, delta), retain_graph=True)
        else:
            logits_m = functional_call(net, _buffer_copies(buffers), (inputs[rows],), tie_weights=False)
            yield grad(logits_m, grad_outputs=delta)


def _inner_grads(base_grads, extra, batch_mean, *, second_order) -> tuple[list[Tensor], list[Tensor]]:
    """``(leaves, grads)``: grad CE_m (averaged over the processes with ``batch_mean``) as a function of
    ``leaves``, detached copies of grad CE_base whose gradient is the cotangent of the shared term."""
    leaves = [g.detach().requires_grad_(second_order) for g in base_grads]
    inner = leaves if extra is None else [b + e for b, e in zip(leaves, extra, strict=True)]
    if batch_mean is not None:  # every process calls it once per set, in the same order
        inner = _mean_of_set(inner, batch_mean)
    return leaves, inner


def _slots(net: nn.Module, params: tuple[Tensor, ...]) -> tuple[list[tuple[str, int]], list[tuple[str, Tensor]]]:
    """Where the fast pass puts its tensors: ``(name, index in params)`` for each attribute of each module object
    holding one of ``params`` (a module registered under two names, ``self.classifier = self.head``, counted once,
    a parameter held by two modules under each), and ``(name, buffer)`` for the buffers. ``functional_call`` swaps
    each slot once and puts it back: given a module's two names, or left to its ``tie_weights``, it put the last
    set's fast tensor back in the student's place."""
    index = {id(p): i for i, p in enumerate(params)}
    weights, buffers = [], []
    for prefix, module in net.named_modules():  # each module object once
        name = f"{prefix}." if prefix else ""
        weights += [(name + attr, index[id(p)]) for attr, p in module.named_parameters(recurse=False,
                                                                                       remove_duplicate=False)
                    if id(p) in index]
        buffers += [(name + attr, b) for attr, b in module.named_buffers(recurse=False) if b is not None]
    return weights, buffers


def _fast_pass(net, slots, params, inputs, inner, teacher, inner_lr) -> tuple[Tensor, list[Tensor]]:
    """KL(teacher || f(x; theta')) at the fast weights theta' = theta - alpha * inner, and its gradient with
    respect to theta' (a first-order backward pass)."""
    fast = [(p - inner_lr * g).detach().requires_grad_() for p, g in zip(params, inner, strict=True)]
    weights, buffers = slots
    state = {name: fast[i] for name, i in weights}
    state.update(_buffer_copies(buffers))
    log_q = functional_call(net, state, (inputs,), tie_weights=False).log_softmax(-1)
    kl = F.kl_div(log_q, teacher, reduction="sum") / teacher.numel()  # nn.KLDivLoss()'s mean over N x K
    return kl.detach(), list(torch.autograd.grad(kl, fast, allow_unused=True, materialize_grads=True))


def dense_one_hot(labels: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows by a scatter, with no check of the labels' range (a check would synchronise with the host)."""
    return torch.zeros(*labels.shape, classes, dtype=dtype, device=labels.device).scatter_(
        -1, labels.unsqueeze(-1), 1.0)


def _buffer_copies(buffers: list[tuple[str, Tensor]]) -> dict[str, Tensor]:
    """Throw-away copies of the buffers for a pass besides the step's forward pass (a fast-weight pass, a pass over
    changed rows), which must not move running statistics (batch norm, an instance norm that tracks them): they move
    once per step."""
    return {name: b.clone() for name, b in buffers}


def _mean_of_set(grads: list[Tensor], batch_mean: BatchMean) -> list[Tensor]:
    """One set's gradients averaged over the processes, through one call of ``batch_mean``."""
    flat = batch_mean(torch.cat([g.reshape(-1) for g in grads]))
    return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]


def _head_meta(head: nn.Linear, features, logits, base, synthetic, teacher, inner_lr, batch_mean):
    """Closed form: for a linear head z = h W^T + b, one SGD step on CE_m changes [W | b] by
    -alpha * (p - Y_m)^T [h | 1] / N, so the fast logits are z - alpha * [h | 1] (that change)^T. Only
    trainable head parameters move. The update is a [K, D + 1] matrix per set: averaged over processes, it
    is the update of the global batch."""
    n, k = logits.shape
    columns = []
    if head.weight.requires_grad:
        columns.append(features)
    if head.bias is not None and head.bias.requires_grad:
        columns.append(features.new_ones(n, 1))
    if not columns:  # a frozen head: the fast logits are the logits
        fast_logits = logits.expand(synthetic.shape[0], n, k)
    else:
        design = torch.cat(columns, dim=1)  # [N, D'] rows [h | 1]
        base_hot = F.one_hot(base, k).to(logits.dtype)
        residual = (logits.softmax(-1) - base_hot) / n + (base_hot - F.one_hot(synthetic, k).to(logits.dtype)) / n
        update = torch.einsum("mnk,nd->mkd", residual, design)  # [M, K, D']: (p - Y_m)^T [h | 1] / N
        if batch_mean is not None:
            update = batch_mean(update)
        fast_logits = logits - inner_lr * torch.einsum("nd,mkd->mnk", design, update)
    log_q = fast_logits.log_softmax(-1)
    return F.kl_div(log_q, teacher.expand_as(log_q), reduction="sum") / (n * k * synthetic.shape[0])


def _grad_fn(params, *, create_graph):
    def grad(output, *, grad_outputs=None, retain_graph=False, materialize=True):
        """``materialize``: zeros, not None, for a parameter ``output`` does not depend on."""
        return torch.autograd.grad(output, params, grad_outputs=grad_outputs, create_graph=create_graph,
                                   retain_graph=retain_graph or create_graph, allow_unused=True,
                                   materialize_grads=materialize)
    return grad


def _with_gradient(value: Tensor, params, grads) -> Tensor:
    """``value`` whose gradient with respect to ``params`` is the precomputed ``grads``: the main CE
    gradient is already known from the meta step, so the backward pass need not compute it again."""
    linear = sum((p * g.detach()).sum() for p, g in zip(params, grads, strict=True))
    return value.detach() + (linear - linear.detach())
