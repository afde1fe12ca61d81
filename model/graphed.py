"""The ``exact`` meta step as one CUDA graph (``MlntConfig.graph``): the same gradient, without the host in the way.

On a GPU the eager step (``model.mlnt``) is launch-bound: its many small kernels leave the device waiting for the
host. ``GraphedExactStep`` captures the whole step, ``grad CE(f(x; theta), y) + w * grad J(theta)`` with J the
consistency loss of ``model.mlnt``, once, and replays it on static copies of each batch. Capture needs static shapes
and no host synchronisation, so the captured arithmetic differs from the eager step's in one way: each label set's
changed-rows term goes through the step's forward pass with a dense cotangent, zero on the rows whose label did not
change (the same term; the eager step takes it over the changed rows alone where no module couples the samples).
Two captured arithmetics:

* ``static_exact_step`` (``model.mlnt``, the default): the eager step's own loop over the label sets, one set's
  graphs alive at a time, so peak memory stays flat in M;
* ``batched_exact_step`` (``batched=True``): the inner gradients of all sets in one batched vector-Jacobian product
  (``torch.autograd.grad(..., is_grads_batched=True)``) and the M fast-weight passes as one pass batched over the
  sets (``torch.func.vmap`` over the fast weights and M throw-away copies of the buffers); peak memory grows with M.

Both run without autocast, in float32 with torch's own TF32 settings (``torch.backends.cuda.matmul.fp32_precision``
and ``torch.backends.cudnn.conv.fp32_precision``) as they are at the capture. Running statistics move once per step,
as in the eager step: the warm-up passes before the capture leave them as they found them. The step is captured at
its first call and again when the shapes change; at a capture the caller must hold no autograd graph of an earlier
step (its parameters' gradient accumulators would tie the capture to another stream). Single process only: with
data parallelism the inner gradients are averaged over the processes between the two halves of the step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from model.mlnt import dense_one_hot, static_exact_step

WARM_UP = 3  # eager passes on a side stream before the capture, as torch.cuda.make_graphed_callables runs


def batched_exact_step(net: nn.Module, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor,
                       weight: Tensor | float, *, inner_lr: float,
                       ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
    """``(loss, logits, params, grads)``: the value of ``CE + weight * J`` (detached), the step's logits (detached),
    ``net``'s trainable parameters and their gradient, all computed with static shapes (see the module docstring)."""
    names, params = trainable(net)
    logits = net(inputs)  # the step's forward pass: the only one that moves the running statistics
    n, k = logits.shape
    ce = F.cross_entropy(logits, labels)
    base = torch.autograd.grad(ce, params, create_graph=True)
    delta = (dense_one_hot(labels, k, logits.dtype).unsqueeze(0) - dense_one_hot(synthetic, k, logits.dtype)) / n
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
    return loss.detach(), logits.detach(), params, grads


def trainable(net: nn.Module) -> tuple[list[str], list[Tensor]]:
    """The names and tensors of ``net``'s trainable parameters, each once."""
    named = [(name, p) for name, p in net.named_parameters() if p.requires_grad]
    return [name for name, _ in named], [p for _, p in named]


class GraphedExactStep:
    """The exact step of ``net`` as the trainer calls it: ``step(x, y, synthetic, teacher, weight)`` returns
    ``(loss, logits)``, a loss whose backward pass gives the step's gradient. On CUDA the step is a CUDA graph
    replayed on static copies of its inputs; elsewhere it runs as it is (the same arithmetic, checked on the CPU)."""

    def __init__(self, net: nn.Module, *, inner_lr: float, batched: bool = False):
        check_graphable(net)
        self.net, self.inner_lr = net, inner_lr
        self.arithmetic = batched_exact_step if batched else static_exact_step
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shapes: tuple | None = None
        self.captures = 0  # how many times the step was captured (once per set of shapes)

    def __call__(self, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor,
                 weight: float) -> tuple[Tensor, Tensor]:
        if inputs.device.type != "cuda":
            loss, logits, params, grads = self.arithmetic(self.net, inputs, labels, synthetic, teacher, weight,
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
        loss, logits, params, grads = self.outputs
        return with_gradient(loss.clone(), params, grads), logits.clone()

    def _capture(self, inputs: Tensor, labels: Tensor, synthetic: Tensor, teacher: Tensor) -> None:
        self.graph = self.outputs = None  # the previous graph's memory goes back before the new one is captured
        self.inputs = [t.detach().clone() for t in (inputs, labels, synthetic, teacher)]
        self.weight = torch.zeros((), device=inputs.device, dtype=torch.float32)
        saved = [b.detach().clone() for b in self.net.buffers()]
        side = torch.cuda.Stream(device=inputs.device)
        side.wait_stream(torch.cuda.current_stream(inputs.device))
        with torch.cuda.stream(side), torch.autocast("cuda", enabled=False):
            for _ in range(WARM_UP):
                self._run()
        torch.cuda.current_stream(inputs.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.autocast("cuda", enabled=False), torch.cuda.graph(graph):
            self.outputs = self._run()
        with torch.no_grad():  # the warm-up passes moved the running statistics; the capture ran nothing
            for buffer, before in zip(self.net.buffers(), saved, strict=True):
                buffer.copy_(before)
        self.graph, self.captures = graph, self.captures + 1

    def _run(self) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        return self.arithmetic(self.net, *self.inputs, self.weight, inner_lr=self.inner_lr)


@contextmanager
def float32_precision(precision: str) -> Iterator[None]:
    """torch's precision for float32 matrix products and convolutions set to ``precision`` (``"ieee"``: no TF32;
    ``"tf32"``), restored afterwards."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = matmul.fp32_precision, conv.fp32_precision
    matmul.fp32_precision = conv.fp32_precision = precision
    try:
        yield
    finally:
        matmul.fp32_precision, conv.fp32_precision = before


def check_graphable(net: nn.Module) -> None:
    """A ``ValueError`` for a network the graphed step cannot run exactly: a dropout layer in training mode would
    draw its masks outside the graph's random state."""
    dropout = [name for name, m in net.named_modules()
               if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0]
    if dropout:
        raise ValueError(f"graph: expected a network without dropout in training mode (the graphed exact step "
                         f"replays fixed kernels), found dropout at {', '.join(dropout)}: set graph: false")


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
