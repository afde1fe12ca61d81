"""Optimisations of the exact meta step, measured against what they replace, on one batch (the small CNN;
per-set accumulation also on PreAct ResNet-32).

* ``one_graph``: the previous exact mode, kept here to measure against: every label set's fast-weight pass
  in one autograd graph, differentiated by one backward pass at the end. Now each set is differentiated and
  freed in turn (``model.mlnt``): the expectation was the same time and a peak memory that no longer grows
  with M.
* ``channels_last``: the network and its input in the channels-last layout, for the CE step and the exact
  step alike, against both in the default (contiguous NCHW) layout. The expectation: both faster (max pooling in
  the default layout is slow on the CPU), the ratio barely changed. (The pipeline's own input, its NHWC array
  permuted, already has channels-last strides; ``make_batch`` keeps them, so the other sections measure that.)
* ``big_batch``: batching the M fast-weight passes (``torch.func.vmap`` or grouped convolution) makes one pass
  over M x N samples. Its premise is that a bigger batch costs less per sample; this measures a CE step at M x N
  against one at N, paired as every ratio is, per sample.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from benchmarks.speed.measure import peak_memory, time_ratios
from benchmarks.speed.meta_step import INNER_LR, META_WEIGHT, steps, training_step
from benchmarks.speed.workload import Batch, Workload, make_batch, network_for
from model.mlnt import _grad_fn, _inner_deltas


def one_graph_loss(net: nn.Module, batch: Batch) -> torch.Tensor:
    """The exact MLNT loss as the previous ``model.mlnt`` built it: one graph over all M label sets."""
    names, params = zip(*[(n, p) for n, p in net.named_parameters() if p.requires_grad], strict=True)
    x, y, synth = batch.images, batch.labels, batch.synthetic
    logits = net(x)
    grad = _grad_fn(params, create_graph=True)
    base_grads = grad(F.cross_entropy(logits, y), retain_graph=True)
    meta = logits.new_zeros(())
    for extra in _inner_deltas(net, list(net.named_buffers()), x, logits, y, synth, grad):
        grads = base_grads if extra is None else [b + e for b, e in zip(base_grads, extra, strict=True)]
        state = {name: p - INNER_LR * g for name, p, g in zip(names, params, grads, strict=True)}
        state.update({name: b.clone() for name, b in net.named_buffers()})
        log_q = functional_call(net, state, (x,)).log_softmax(-1)
        meta = meta + F.kl_div(log_q, batch.teacher, reduction="sum") / batch.teacher.numel()
        # (nn.KLDivLoss(): the reference codes' units)
    return F.cross_entropy(logits, y) + META_WEIGHT * meta / synth.shape[0]


def run(workload: Workload, *, batch_size: int, sets: int, repeats: int, device: torch.device,
        coupled_batch: int) -> dict:
    """The three experiments; per-set accumulation also on PreAct ResNet-32 (batch ``coupled_batch``), whose batch
    norm makes every set's graphs share the forward pass."""
    batch = make_batch(workload, "small_cnn", size=batch_size, sets=sets, device=device)
    net = network_for("small_cnn", workload, device)
    fns = steps(net, _laid_out(batch, torch.contiguous_format))
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    last_fns = steps(last, _laid_out(batch, torch.channels_last))
    timing = time_ratios({"exact": fns["exact"], "ce_channels_last": last_fns["ce"],
                          "exact_channels_last": last_fns["exact"]}, fns["ce"], repeats=repeats, device=device)
    return {"network": "small_cnn", "batch": batch_size, "sets": sets,
            "time_ratio": {k: v["ratio"] for k, v in timing.items() if k != "baseline_s"},
            "per_set": [per_set(workload, "small_cnn", batch_size=batch_size, sets=sets, repeats=repeats,
                                device=device),
                        per_set(workload, "preact_resnet32", batch_size=coupled_batch, sets=sets, repeats=repeats,
                                device=device)],
            "big_batch": _per_sample(workload, batch_size, sets, repeats, device)}


def _laid_out(batch: Batch, layout: torch.memory_format) -> Batch:
    """``batch`` with its images in ``layout`` (a copy where they are not)."""
    return Batch(batch.images.contiguous(memory_format=layout), batch.labels, batch.synthetic, batch.teacher)


def per_set(workload: Workload, network: str, *, batch_size: int, sets: int, repeats: int,
            device: torch.device) -> dict:
    """Time and peak memory of the exact step against the previous one-graph implementation."""
    batch = make_batch(workload, network, size=batch_size, sets=sets, device=device)
    net = network_for(network, workload, device)
    fns = {**steps(net, batch), "one_graph": training_step(net, lambda: one_graph_loss(net, batch))}
    memory = {name: peak_memory(fns[name], device, net=net) for name in ("ce", "exact", "one_graph")}
    timing = time_ratios({name: fns[name] for name in ("exact", "one_graph")}, fns["ce"], repeats=repeats,
                         device=device, warm_up=False)
    return {"network": network, "batch": batch_size,
            "time_ratio": {name: timing[name]["ratio"] for name in ("exact", "one_graph")},
            "time_ratios": {name: timing[name]["ratios"] for name in ("exact", "one_graph")},
            "memory_ratio": {name: memory[name] / memory["ce"] for name in ("exact", "one_graph")}}


def _per_sample(workload: Workload, batch_size: int, sets: int, repeats: int, device: torch.device) -> dict:
    """A CE step's time per sample (microseconds) at ``batch_size`` (the median of the paired runs) and at ``sets``
    times it (that, times the median paired ratio per sample), with every repetition's ratio per sample."""
    net = network_for("small_cnn", workload, device)
    small, big = (steps(net, make_batch(workload, "small_cnn", size=size, sets=1, device=device))["ce"]
                  for size in (batch_size, sets * batch_size))
    timing = time_ratios({"big": big}, small, repeats=repeats, device=device)
    per_sample = 1e6 * timing["baseline_s"] / batch_size
    return {str(batch_size): per_sample, str(sets * batch_size): per_sample * timing["big"]["ratio"] / sets,
            "ratios": [r / sets for r in timing["big"]["ratios"]]}
