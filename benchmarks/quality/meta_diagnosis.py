"""Why the meta loss does, or does not, change what MLNT learns: the size of its gradient next to cross-entropy's.

For one trained MLNT run of the quality study (its student at the last step, its released model as the
consistency target, CE's features for the neighbours), on fixed batches of its training set with MLNT's own
synthetic labels, for each mode and inner learning rate α:

* ``grad_ratio``: ‖∇(w · J)‖ / ‖∇CE‖, the meta loss's share of the update at the run's ``meta_weight`` w;
* ``cosine``: the cosine between ∇J and ∇CE (negative: the meta loss pulls against the noisy labels);
* ``shift``: how far one inner step moves the predictions, the mean per-sample KL(p_θ ‖ p_θ′ₘ) over the sets;
* ``meta``: J itself, in the reference codes' units, next to ``ce``.

The gradients are those of ``model.mlnt`` (the tested ones); nothing here trains.

The quality study measures it on its cells; on the pipeline's own run (``dvc repro``'s ``artifacts/``, or a
recipe's), ``python -m benchmarks.quality.meta_diagnosis [--artifacts DIR]`` prints the table, so a team can see
whether the meta loss moves its model at all before paying for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from components.common.artifacts import read_json
from components.common.atomic import write_json
from components.common.config import CONFIG_FILE, build, printable
from components.common.errors import DataError
from components.common.model_file import load_model
from components.common.splits import load_split
from components.mlnt import MlntStepConfig
from model.mlnt import MODES, meta_loss
from model.neighbours import synthetic_labels
from model.trainer import Data, resolve_mode

INNER_LRS = (0.2, 2.0, 20.0)
BATCHES = 6


def diagnose(run: Path, *, ingest: Path, noise: Path, features: Path, config,
             inner_lrs: tuple[float, ...] = INNER_LRS, batches: int = BATCHES) -> dict:
    """The measurements above for the MLNT run in the folder ``run`` (its ``student.pt`` and ``teacher.pt``), trained
    on ``ingest``'s images with ``noise``'s labels and ``features``' (a CE model file's) neighbours; ``config`` is its
    ``MlntStepConfig``."""
    train_data, _, _ = load_split(ingest, noise)
    if not isinstance(train_data, Data):
        raise DataError(f"{ingest}: expected a dataset ingested as arrays (train.npz), found shards: the diagnosis "
                        "draws its batches in memory")
    student, _ = load_model(run / "student.pt")
    target_net, _ = load_model(run / "teacher.pt")
    features_net, _ = load_model(features)
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
    return {"run": run.name, "meta_weight": config.meta_weight, "batches": batches,
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


# --- the command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.quality.meta_diagnosis``: the table for the pipeline's MLNT run; 0, or 1 with one
    error line when the run's files cannot be read."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.meta_diagnosis",
                                     description="How large the meta loss's gradient is next to cross-entropy's in a "
                                                 "finished MLNT run, for each mode and inner learning rate; trains "
                                                 "nothing.")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), metavar="DIR",
                        help="the pipeline's outputs: DIR/ingest, DIR/noise, DIR/baseline/model.pt (the neighbours' "
                             "features), DIR/mlnt (the run: student.pt, teacher.pt, config.json); default artifacts")
    parser.add_argument("--batches", type=int, default=BATCHES, help=f"training batches averaged (default {BATCHES})")
    parser.add_argument("--inner-lr", type=float, nargs="+", default=list(INNER_LRS), metavar="ALPHA",
                        help="the inner learning rates (default: %(default)s); the run's own is always measured, "
                             "and marked")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the measurements to FILE")
    args = parser.parse_args(argv)
    if args.batches < 1 or min(args.inner_lr) <= 0:
        parser.error(f"expected --batches >= 1 and every --inner-lr > 0, found {args.batches} and {args.inner_lr}")
    root = args.artifacts
    try:
        record = read_json(root / "mlnt" / CONFIG_FILE, "mlnt", "mode")  # the config the run trained with
        config = build(MlntStepConfig, record, where=f"{root / 'mlnt' / CONFIG_FILE}")
        inner_lrs = tuple(sorted({*args.inner_lr, config.inner_lr}))
        print(f"meta_diagnosis: {len(MODES)} modes x {len(inner_lrs)} inner learning rates on {args.batches} "
              f"training batches of {root}; trains nothing, but exact mode's second-order gradients take minutes on "
              "a CPU", file=sys.stderr, flush=True)
        found = diagnose(root / "mlnt", ingest=root / "ingest", noise=root / "noise",
                         features=root / "baseline" / "model.pt", config=config,
                         inner_lrs=inner_lrs, batches=args.batches)
    except (ValueError, OSError) as err:  # DataError and ConfigError are ValueErrors
        print(f"error: meta_diagnosis: {printable(err)}", file=sys.stderr)
        return 1
    print(table(found, config, where=root / "mlnt"))
    if args.json:
        write_json(args.json, found)
        print(f"meta_diagnosis: the measurements -> {args.json}")
    return 0


def _mode_run(config, where: Path) -> str:
    """The mode the run in ``where`` trained in: its metrics.json's (``mode: auto`` resolved on its device), else
    the config's as it resolves on the CPU."""
    metrics = where / "metrics.json"
    ran = json.loads(metrics.read_text()).get("mode") if metrics.is_file() else None
    return ran or resolve_mode(config.mode, torch.device("cpu"))


def table(found: dict, config, *, where: Path) -> str:
    """``found`` (a ``diagnose`` result for the run in ``where``) as a text table, the run's own mode and inner
    learning rate marked ``*``."""
    own = f"{_mode_run(config, where)}@{config.inner_lr:g}"
    lines = [f"meta_diagnosis: the run in {where}, meta_weight {found['meta_weight']:g}, "
             f"{found['batches']} batches; * the run's own mode and inner learning rate",
             f"  {'mode@alpha':<20} {'grad_ratio':>10} {'cosine':>8} {'shift':>10} {'meta':>10} {'ce':>8}"]
    for key, row in found["rows"].items():
        mark = "*" if key == own else " "
        lines.append(f"{mark} {key:<20} {row['grad_ratio']:>10.4f} {row['cosine']:>8.3f} {row['shift']:>10.2e} "
                     f"{row['meta']:>10.4f} {row['ce']:>8.4f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
