"""The cost of one MLNT training step, as multiples of one plain cross-entropy step on the same batch.

Every variant is a whole training step (zero the gradients, loss, backward): CE, ``mlnt_loss`` in each mode,
and the reference loop (``benchmarks/speed/reference.py``: the authors' loop, one forward pass shared by the main
CE and the M inner losses, then M second-order passes kept in one graph until the backward pass). Time and peak
memory are measured separately (the memory measurement slows the step down); ``top_ops`` is the ``torch.profiler``
table behind the figures. An MLNT variant here is the meta step alone: the trainer's other per-step MLNT work
(label sets, the teacher's forward pass, the EMA update) and the whole `head` step are timed in
``benchmarks.speed.neighbour_search``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.speed.measure import CONTROL, Step, peak_memory, time_ratios
from benchmarks.speed.reference import reference_mlnt_loss
from benchmarks.speed.workload import Batch, Workload, make_batch, network_for
from model.mlnt import mlnt_loss

VARIANTS = ("head", "first_order", "exact", "reference")
INNER_LR, META_WEIGHT = 0.2, 0.4  # params.yaml mlnt.inner_lr and mlnt.meta_weight
NODE = "autograd::engine::evaluate_function: "


def training_step(net: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Step:
    """Zero the gradients, compute the loss, backward: what one training step costs, less the update."""
    def run():
        net.zero_grad(set_to_none=True)
        loss_fn().backward()
    return run


def steps(net: nn.Module, batch: Batch) -> dict[str, Step]:
    """One training step of each variant (and ``ce``) on ``batch``."""
    x, y, synth, teacher = batch.images, batch.labels, batch.synthetic, batch.teacher
    step = partial(training_step, net)

    def mode(name):
        return step(lambda: mlnt_loss(net, x, y, synth, teacher, inner_lr=INNER_LR, meta_weight=META_WEIGHT,
                                      mode=name))

    return {"ce": step(lambda: F.cross_entropy(net(x), y)),
            **{name: mode(name) for name in ("head", "first_order", "exact")},
            "reference": step(lambda: reference_mlnt_loss(net, x, y, synth, teacher, inner_lr=INNER_LR,
                                                          meta_weight=META_WEIGHT))}


def measure(net: nn.Module, batch: Batch, variants: tuple[str, ...], *, repeats: int,
            device: torch.device, extra: dict[str, Step] | None = None,
            memory_of: dict[str, Step] | None = None) -> dict:
    """Time and peak memory of ``variants`` as ratios to the CE step, with the CE step's own figures, every
    repetition's time ratio (``time_ratios``) and the control: the CE step timed against itself the same way. The
    memory measurement runs each step once first, which is also the timing's warm-up. ``extra``: steps besides
    ``steps``'s; ``memory_of``: a step whose peak memory stands for a variant's (a CUDA graph's replay allocates
    nothing: its memory is that of its arithmetic run eagerly)."""
    fns = {**steps(net, batch), **(extra or {})}
    memory = {v: peak_memory((memory_of or {}).get(v, fns[v]), device, net=net) for v in ("ce", *variants)}
    for v in memory_of or {}:  # the warm-up of a step measured through another
        fns[v]()
    timing = time_ratios({v: fns[v] for v in variants}, fns["ce"], repeats=repeats, device=device, warm_up=False,
                         control=True)
    return {"batch": int(batch.labels.shape[0]), "sets": int(batch.synthetic.shape[0]),
            "changed_fraction": round(batch.changed, 4),
            "ce_ms": 1000 * timing["baseline_s"], "ce_memory_mb": memory["ce"] / 2**20,
            "time_ratio": {v: timing[v]["ratio"] for v in variants},
            "time_ratios": {v: timing[v]["ratios"] for v in variants},
            "control": {"ratio": timing[CONTROL]["ratio"], "ratios": timing[CONTROL]["ratios"]},
            "seconds": {v: timing[v]["seconds"] for v in variants},
            "memory_mb": {v: memory[v] / 2**20 for v in variants},
            "memory_ratio": {v: memory[v] / memory["ce"] for v in variants}}


def run(workload: Workload, network: str, *, batch_size: int, sets: int, repeats: int,
        device: torch.device) -> dict:
    """Every variant on one batch of ``batch_size`` with ``sets`` label sets."""
    batch = make_batch(workload, network, size=batch_size, sets=sets, device=device)
    net = network_for(network, workload, device)
    return {"network": network, **measure(net, batch, VARIANTS, repeats=repeats, device=device)}


def top_ops(workload: Workload, network: str, variant: str, *, batch_size: int, sets: int,
            device: torch.device, rows: int = 8) -> dict:
    """The operators that take most of one ``variant`` step's time, from ``torch.profiler``."""
    batch = make_batch(workload, network, size=batch_size, sets=sets, device=device)
    fn = steps(network_for(network, workload, device), batch)[variant]
    fn()  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        fn()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = prof.key_averages()
    total = sum(getattr(e, key) for e in averages)
    ops = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:rows]
    # Autograd nodes by inclusive time: which derivative formulas the operators above run for.
    inclusive = key.replace("self_", "")
    nodes = sorted((e for e in averages if e.key.startswith(NODE)), key=lambda e: getattr(e, inclusive),
                   reverse=True)[:rows]
    return {"network": network, "variant": variant, "batch": batch_size, "sets": sets, "total_ms": total / 1000,
            "ops": [{"op": e.key, "share": getattr(e, key) / total, "calls": e.count} for e in ops],
            "nodes": [{"node": e.key.removeprefix(NODE), "share": getattr(e, inclusive) / total, "calls": e.count}
                      for e in nodes]}
