"""What the trainer does for an MLNT step besides the meta step, and the whole `head` step, as ratios to a CE step.

For every MLNT step, and for no CE step, ``model/trainer.py`` makes the M synthetic label sets (``label_sets``: the
frozen network's features, the neighbour search, the resampling; ``search`` is ``model.neighbours.nearest_neighbours``
alone, on features computed beforehand), runs the teacher's forward pass (``teacher``: ``model.ema.teacher_probs``, in
training mode, on a teacher of the student's architecture) and, after the optimiser's update, moves the teacher
towards the student (``ema``: ``model.ema.ema_update``). ``head_step`` is the whole step in `head` mode: zero the
gradients, the label sets, the teacher's forward pass, ``mlnt_loss(mode="head")``, backward, the EMA update.

Every figure is a ratio to the CE step of the same student on the same batch (zero the gradients, loss, backward),
timed beside it (``time_ratios``). The optimiser's update is on neither side, as in ``benchmarks.speed.meta_step``;
a later round's mentor forward pass (``rounds`` > 1) is not timed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from benchmarks.speed.measure import Step, time_ratios
from benchmarks.speed.meta_step import INNER_LR, META_WEIGHT, steps
from benchmarks.speed.targets import NEIGHBOUR_WORK
from benchmarks.speed.workload import FRACTION, NEIGHBOURS, Batch, Workload, make_batch, network_for
from model.ema import ema_update, make_teacher, teacher_probs
from model.mlnt import mlnt_loss
from model.neighbours import nearest_neighbours, synthetic_labels

WORK = NEIGHBOUR_WORK
EMA_DECAY = 0.999  # params.yaml mlnt.ema_after_ramp; the update costs the same for any decay


def run(workload: Workload, *, batch_size: int, sets: int, repeats: int, device: torch.device) -> dict:
    batch = make_batch(workload, "small_cnn", size=batch_size, sets=sets, device=device)
    # a copy: Module.to moves in place, and the workload's network must stay on the CPU for the other sections'
    # make_batch
    feature_net = copy.deepcopy(workload.feature_net).to(device)
    ce, work = mlnt_work(network_for("small_cnn", workload, device), feature_net, batch, sets=sets, device=device)
    timing = time_ratios(work, ce, repeats=repeats, device=device)
    with torch.no_grad():
        features = feature_net.features(batch.images[:1]).shape[1]
    return {"network": "small_cnn", "batch": batch_size, "sets": sets, "features": int(features),
            "ce_ms": 1000 * timing["baseline_s"],
            **{name: {"ms": 1000 * timing[name]["seconds"], "ratio": timing[name]["ratio"],
                      "ratios": timing[name]["ratios"]} for name in WORK}}


def mlnt_work(student: nn.Module, feature_net: nn.Module, batch: Batch, *, sets: int,
              device: torch.device) -> tuple[Step, dict[str, Step]]:
    """The CE step of ``student`` on ``batch``, and each piece of ``WORK``, done as ``model/trainer.py`` does it."""
    x, y = batch.images, batch.labels
    k, teacher = min(NEIGHBOURS, y.shape[0] - 1), make_teacher(student)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        features = feature_net.features(x).float()

    def label_sets():
        with torch.no_grad():
            return synthetic_labels(feature_net.features(x).float(), y, num_sets=sets, fraction=FRACTION,
                                    neighbours=k, generator=generator)

    def head_step():
        student.zero_grad(set_to_none=True)
        synthetic, target = label_sets(), teacher_probs(teacher, x)
        mlnt_loss(student, x, y, synthetic, target, inner_lr=INNER_LR, meta_weight=META_WEIGHT, mode="head").backward()
        ema_update(teacher, student, EMA_DECAY)

    return steps(student, batch)["ce"], {
        "search": lambda: nearest_neighbours(features, k), "label_sets": label_sets,
        "teacher": lambda: teacher_probs(teacher, x), "ema": lambda: ema_update(teacher, student, EMA_DECAY),
        "head_step": head_step}
