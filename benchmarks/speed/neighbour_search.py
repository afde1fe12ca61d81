"""What making the synthetic label sets costs the trainer per batch, as a ratio to the CE step.

``search`` is ``model.neighbours.nearest_neighbours`` on the batch's features; ``label_sets`` is all the trainer
does before the meta step: the frozen network's features (no gradient), the search and the M resampled sets.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.speed.measure import time_ratios
from benchmarks.speed.meta_step import steps
from benchmarks.speed.workload import FRACTION, NEIGHBOURS, Workload, make_batch, network_for
from model.neighbours import nearest_neighbours, synthetic_labels


def run(workload: Workload, *, batch_size: int, sets: int, repeats: int, device: torch.device) -> dict:
    batch = make_batch(workload, "small_cnn", size=batch_size, sets=sets, device=device)
    # a copy: Module.to moves in place, and the workload's network must stay on the CPU for the other sections'
    # make_batch
    feature_net = copy.deepcopy(workload.feature_net).to(device)
    k = min(NEIGHBOURS, batch_size - 1)
    with torch.no_grad():
        features = feature_net.features(batch.images)
    generator = torch.Generator(device=device).manual_seed(0)

    def label_sets():
        with torch.no_grad():
            synthetic_labels(feature_net.features(batch.images), batch.labels, num_sets=sets, fraction=FRACTION,
                             neighbours=k, generator=generator)

    ce = steps(network_for("small_cnn", workload, device), batch)["ce"]
    timing = time_ratios({"search": lambda: nearest_neighbours(features, k), "label_sets": label_sets}, ce,
                         repeats=repeats, device=device)
    return {"network": "small_cnn", "batch": batch_size, "sets": sets, "features": int(features.shape[1]),
            "ce_ms": 1000 * timing["baseline_s"],
            **{name: {"ms": 1000 * timing[name]["seconds"], "ratio": timing[name]["ratio"]}
               for name in ("search", "label_sets")}}
