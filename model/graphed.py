"""The ``exact`` meta step with the label sets batched, and on CUDA captured in a CUDA graph (``MlntConfig.graph``).

The eager step (``model.mlnt``) runs the M label sets one after another, so that its peak memory does not grow
with M; on a GPU its many small kernels leave the device waiting for the host (a launch-bound step). This step
computes the same gradient, ``grad CE(f(x; theta), y) + w * grad J(theta)`` with J the consistency loss of
``model.mlnt``, with static shapes and no host synchronisation, so that the whole step can be replayed as one CUDA
graph:

* the inner gradients of all sets at once: ``grad CE_m = grad CE_y + J_f^T (onehot(y) - onehot(y~_m)) / N``, the
  second term for every m in one batched vector-Jacobian product through the step's forward pass
  (``torch.autograd.grad(..., is_grads_batched=True)``), over the whole batch: the cotangent is zero on the rows
  whose label did not change, so the result is the same as over the changed rows alone, at a static shape;
* the M fast-weight passes as one pass batched over the sets (``torch.func.vmap`` over the fast weights and over
  M throw-away copies of the buffers, so running statistics move once per step, as in the eager step);
* one backward pass through all of it (second order through the inner gradients).

Peak memory grows with M here (the M fast-weight passes are alive at once); the eager step's does not. On CUDA the
step runs in float32 with TF32 matrix products (no autocast inside the graph) and is captured at its first call and
again whenever the shapes change; warm-up passes before the capture leave the running statistics as they found
them. Single process only: with data parallelism the inner gradients are averaged over the processes between the
two halves of the step, which the eager step does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

WARM_UP = 3  # eager passes on a side stream before the capture, as torch.cuda.make_graphed_callables runs


def batched_exact_step(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor,
                       weight: Tensor | float, *, inner_lr: float) -> tuple[Tensor, Tensor, list[Tensor]]:
    """``(loss, logits, grads)``: the value of ``CE + weight * J`` (detached), the step's logits (detached) and the
    gradient for ``trainable(net)``, all computed with static shapes (see the module docstring)."""
    names, params = trainable(net)
    logits = net(inputs)  # the step's forward pass: the only one that moves the running statistics
    n, k = logits.shape
    ce = F.cross_entropy(logits, labels)
    base = torch.autograd.grad(ce, params, create_graph=True)
    delta = (_one_hot(labels, k, logits.dtype).unsqueeze(0) - _one_hot(synthetic, k, logits.dtype)) / n
    extra = torch.autograd.grad(logits, params, grad_outputs=delta, is_grads_batched=True, create_graph=True)
    fast = {name: p - inner_lr * (g + e) for name, p, g, e in zip(names, params, base, extra, strict=True)}
    sets = synthetic.shape[0]
    buffers = {name: b.expand(sets, *b.shape).clone() for name, b in net.named_buffers()}

    def fast_log_probs(weights: dict[str, Tensor], copies: dict[str, Tensor]) -> Tensor:
        return functional_call(net, {**weights, **copies}, (inputs,)).log_softmax(-1)

    log_q = torch.vmap(fast_log_probs)(fast, buffers)  # [M, N, K]
    # KL(teacher || q) as nn.KLDivLoss() reduces it (the mean over N x K), averaged over the sets
    meta = (torch.xlogy(teacher, teacher).sum() - (teacher * log_q).sum() / sets) / teacher.numel()
    loss = ce + weight * meta
    grads = list(torch.autograd.grad(loss, params))
    return loss.detach(), logits.detach(), grads


def trainable(net: nn.Module) -> tuple[list[str], list[Tensor]]:
    """The names and tensors of ``net``'s trainable parameters, each once."""
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    return [name for name, _ in named], [p for _, p in named]


class GraphedExactStep:
    """The batched ``exact`` step of ``net`` as the trainer calls it: ``step(x, y, synthetic, teacher, weight)``
    returns ``(loss, logits)``, a loss whose backward pass gives the step's gradient. On CUDA the step is a CUDA graph
    replayed on static copies of its inputs; elsewhere it runs as it is (the same arithmetic, checked on the CPU)."""

    def __init__(self, net: nn.Module, *, inner_lr: float):
        check_graphable(net)
        self.net, self.inner_lr = net, inner_lr
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shapes: tuple | None = None
        self.captures = 0  # how many times the step was captured (once per set of shapes)

    def __call__(self, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor,
                 weight: float) -> tuple[Tensor, Tensor]:
        _, params = trainable(self.net)
        if inputs.device.type != "cuda":
            loss, logits, grads = batched_exact_step(self.net, inputs, labels, synthetic, teacher, weight,
                                                     inner_lr=self.inner_lr)
            return with_gradient(loss, params, grads), logits
        shapes = tuple((t.shape, t.dtype) for t in (inputs, labels, synthetic, teacher))
        if shapes != self.shapes:
            self._capture(inputs, labels, synthetic, teacher)
            self.shapes = shapes
        for static, value in zip(self.inputs, (inputs, labels, synthetic, teacher), strict=True):
            static.copy_(value)
        self.weight.fill_(weight)
        self.graph.replay()
        loss, logits, grads = self.outputs
        return with_gradient(loss.clone(), params, grads), logits.clone()

    def _capture(self, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor) -> None:
        self.graph = self.outputs = None  # the previous graph's memory goes back before the new one is captured
        self.inputs = [t.detach().clone() for t in (inputs, labels, synthetic, teacher)]
        self.weight = torch.zeros((), device=inputs.device, dtype=torch.float32)
        saved = [b.detach().clone() for b in self.net.buffers()]
        side = torch.cuda.Stream(device=inputs.device)
        side.wait_stream(torch.cuda.current_stream(inputs.device))
        with torch.cuda.stream(side), float32_with_tf32():
            for _ in range(WARM_UP):
                self._run()
        torch.cuda.current_stream(inputs.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with float32_with_tf32(), torch.cuda.graph(graph):
            self.outputs = self._run()
        with torch.no_grad():  # the warm-up passes moved the running statistics; the capture ran nothing
            for buffer, before in zip(self.net.buffers(), saved, strict=True):
                buffer.copy_(before)
        self.graph, self.captures = graph, self.captures + 1

    def _run(self) -> tuple[Tensor, Tensor, list[Tensor]]:
        return batched_exact_step(self.net, *self.inputs, self.weight, inner_lr=self.inner_lr)


def check_graphable(net: nn.Module) -> None:
    """A ``ValueError`` for a network the graphed step cannot run exactly: a dropout layer in training mode would
    draw its masks outside the graph's random state."""
    dropout = [name for name, m in net.named_modules()
               if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0]
    if dropout:
        raise ValueError(f"graph: expected a network without dropout in training mode (the graphed exact step "
                         f"replays fixed kernels), found dropout at {', '.join(dropout)}: set graph: false")


@contextmanager
def float32_with_tf32() -> Iterator[None]:
    """No autocast, and TF32 for float32 matrix products and convolutions, restored afterwards."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = "tf32"
    try:
        with torch.autocast("cuda", enabled=False) if torch.cuda.is_available() else nullcontext():
            yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def with_gradient(value: Tensor, params: list[Tensor], grads: list[Tensor]) -> Tensor:
    """``value`` whose gradient with respect to ``params`` is ``grads``, already computed: one autograd node whose
    backward pass is one fused multiplication, not a few kernels a parameter."""
    return _Precomputed.apply(value.detach(), grads, *params)


class _Precomputed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, value: Tensor, grads: list[Tensor], *params: Tensor) -> Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, cotangent: Tensor) -> tuple[Tensor | None, ...]:
        return None, None, *torch._foreach_mul(ctx.grads, cotangent)


def _one_hot(labels: Tensor, classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot rows by a scatter, with no check of the labels' range (a check would synchronise with the host)."""
    return torch.zeros(*labels.shape, classes, dtype=dtype, device=labels.device).scatter_(
        -1, labels.unsqueeze(-1), 1.0)
