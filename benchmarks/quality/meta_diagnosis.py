"""Why the meta loss does, or does not, change what MLNT learns: the size of its gradient next to cross-entropy's.

For one trained MLNT run of the quality study (its student at the last step, its released model as the
consistency target, CE's features for the neighbours), on fixed batches of its training set with MLNT's own
synthetic labels, for each mode and inner learning rate α:

* ``grad_ratio``: ‖∇(w · J)‖ / ‖∇CE‖, the meta loss's share of the update at the run's ``meta_weight`` w;
* ``cosine``: the cosine between ∇J and ∇CE (negative: the meta loss pulls against the noisy labels);
* ``shift``: how far one inner step moves the predictions, the mean per-sample KL(p_θ ‖ p_θ′ₘ) over the sets;
* ``meta``: J itself, in the reference codes' units, next to ``ce``.

The gradients are those of ``model.mlnt`` (the tested ones); nothing here trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from components.common.model_file import load_model
from components.common.splits import load_split
from model.mlnt import MODES, meta_loss
from model.neighbours import synthetic_labels

INNER_LRS = (0.2, 2.0, 20.0)
BATCHES = 6


def diagnose(cell: Path, *, run: str, ingest: Path, config, inner_lrs: tuple[float, ...] = INNER_LRS,
             batches: int = BATCHES) -> dict:
    """The measurements above for the run in ``cell / run``; ``config`` is its ``MlntStepConfig``."""
    train_data, _, _ = load_split(ingest, cell / "noise")
    student, _ = load_model(cell / run / "student.pt")
    target_net, _ = load_model(cell / run / "teacher.pt")
    features_net, _ = load_model(cell / "ce" / "model.pt")
    for net in (target_net, features_net):
        net.eval()
    student.train()
    generator = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(train_data), generator=generator)
    rows: dict[str, dict[str, list[float]]] = {}
    for b in range(batches):
        idx = order[b * config.batch_size:(b + 1) * config.batch_size]
        x, y = train_data.images[idx], train_data.labels[idx]
        with torch.no_grad():
            synth = synthetic_labels(features_net.features(x).float(), y, num_sets=config.num_sets,
                                     fraction=config.fraction, neighbours=config.neighbours, generator=generator)
            target = torch.softmax(target_net(x), dim=1)
        ce = F.cross_entropy(student(x), y)
        ce_grad = _flat(torch.autograd.grad(ce, list(student.parameters())))
        shifts = {(alpha, head): _prediction_shift(student, x, synth, alpha, head_only=head)
                  for alpha in inner_lrs for head in (False, True)}
        for mode in MODES:
            for alpha in inner_lrs:
                meta = meta_loss(student, x, synth, target, inner_lr=alpha, mode=mode)
                meta_grad = _flat(torch.autograd.grad(meta, list(student.parameters()), allow_unused=True,
                                                      materialize_grads=True))
                row = rows.setdefault(f"{mode}@{alpha:g}", {k: [] for k in
                                                            ("grad_ratio", "cosine", "shift", "meta", "ce")})
                row["grad_ratio"].append(float(config.meta_weight * meta_grad.norm() / ce_grad.norm()))
                row["cosine"].append(float(F.cosine_similarity(meta_grad, ce_grad, dim=0)))
                row["shift"].append(shifts[alpha, mode == "head"])
                row["meta"].append(float(meta.detach()))
                row["ce"].append(float(ce.detach()))
    return {"run": run, "meta_weight": config.meta_weight, "batches": batches,
            "rows": {key: {k: sum(v) / len(v) for k, v in row.items()} for key, row in rows.items()}}


def _prediction_shift(net: nn.Module, x: Tensor, synth: Tensor, alpha: float, *, head_only: bool) -> float:
    """Mean over the label sets of the per-sample KL(p_θ ‖ p_θ′ₘ) after one inner SGD step of size ``alpha``."""
    params = {n: p for n, p in net.named_parameters() if not head_only or n.startswith("head.")}
    log_p = torch.log_softmax(net(x), dim=1).detach()
    total = 0.0
    for labels in synth:
        grads = torch.autograd.grad(F.cross_entropy(net(x), labels), list(params.values()))
        fast = {n: (p - alpha * g).detach() for (n, p), g in zip(params.items(), grads, strict=True)}
        with torch.no_grad():
            log_q = torch.log_softmax(functional_call(net, fast, (x,), strict=False), dim=1)
        total += float(F.kl_div(log_q, log_p, log_target=True, reduction="batchmean"))
    return total / synth.shape[0]


def _flat(grads) -> Tensor:
    return torch.cat([g.reshape(-1) for g in grads])
