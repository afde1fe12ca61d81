"""How time and peak memory of the meta step grow with the number of label sets M and with the batch size,
each as a ratio to the CE step on the same batch."""

from __future__ import annotations

import torch

from benchmarks.speed.meta_step import measure
from benchmarks.speed.workload import Batch, Workload, make_batch, network_for

VARIANTS = ("first_order", "exact", "reference")


def over_sets(workload: Workload, network: str, *, batch_size: int, sets: tuple[int, ...], repeats: int,
              device: torch.device) -> list[dict]:
    """The same batch with the first M of max(sets) label sets, for each M in ``sets``."""
    full = make_batch(workload, network, size=batch_size, sets=max(sets), device=device)
    net = network_for(network, workload, device)
    return [measure(net, Batch(full.images, full.labels, full.synthetic[:m], full.teacher), VARIANTS,
                    repeats=repeats, device=device) for m in sets]


def over_batch(workload: Workload, network: str, *, sizes: tuple[int, ...], sets: int, repeats: int,
               device: torch.device) -> list[dict]:
    net = network_for(network, workload, device)
    return [measure(net, make_batch(workload, network, size=size, sets=sets, device=device), VARIANTS,
                    repeats=repeats, device=device) for size in sizes]
