"""mlnt: MLNT training on the noisy labels.

The baseline's frozen features drive the neighbour search for synthetic label noise.

As in the authors' code, training starts from the network's initialisation (``warm_start: false``; seeded, or
ImageNet weights where the network has them) and the baseline supplies only the features; ``warm_start: true``
starts from the baseline's weights instead. Writes ``artifacts/mlnt/student.pt`` (final student),
``teacher.pt`` (the released model: the better of student and EMA teacher on the validation set, at any
validation; ``metrics.json``'s ``released`` says which), with ``rounds > 1`` also ``teacher_round<r>.pt`` for
each earlier round, ``metrics.json``, ``history.json``, ``evaluations.json`` and resumable ``checkpoints/``.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from pathlib import Path

from components.common.allocator import retain_freed_memory
from components.common.artifacts import read_manifest
from components.common.atomic import atomic_set, prepare_output, write_json
from components.common.checkpoints import checkpoint_store, drop_stale_checkpoints
from components.common.config import CONFIG_FILE, as_record, cli
from components.common.curves import publish_curves, write_curves, write_history
from components.common.model_file import (
    TRAINED_ON,
    check_fits,
    check_trained_on,
    load_model,
    save_model,
    seeded_network,
)
from components.common.parallel import data_parallel
from components.common.pretrained import imagenet_weights
from components.common.splits import load_split, training_digest
from components.common.steps import FOLDERS
from components.common.telemetry import reports
from model.schedules import rampup_weight
from model.trainer import MlntConfig, train

BASELINE_OUT = FOLDERS["baseline"]
INGEST_OUT = FOLDERS["ingest"]
NOISE_OUT = FOLDERS["noise"]

OUT = FOLDERS["mlnt"]


@dataclass(frozen=True)
class MlntStepConfig(MlntConfig):
    """The mlnt step's config: ``MlntConfig`` with the defaults of the pipeline's run (params.yaml, the CIFAR-10
    code's schedule on the baseline's 15 epochs; a test keeps the two equal), and where training starts."""

    epochs: int = 15  # the baseline's schedule
    augment: bool = False
    eval_every: int = 50  # steps between validations (the CIFAR-10 code: 50)
    ramp_start: float = 2.0  # epochs of warm-up: meta loss and EMA teacher start here (the CIFAR-10 code: 2)
    ramp_end: float = 10.0  # the ramp-up ends, the EMA decay goes from 0.99 to 0.999
    warm_start: bool = False  # start from the baseline's weights (the paper: from the initialisation)
    pretrained: bool = True  # the initialisation: ImageNet weights where the network has them (resnet50)


def _pushed(metrics: dict) -> dict:
    """What the step pushes: each network's best validation accuracy, of those validated (``val_accuracy`` is the
    released one's, the student's where it won; the student's last one is not its best)."""
    best = {name: metrics[f"val_accuracy_{name}"] for name in ("teacher", "student")}
    return {"accuracy": {"val": {name: value for name, value in best.items() if value is not None}}}


@reports("mlnt", _pushed)
def run(config: MlntStepConfig, *, ingest: Path = INGEST_OUT, noise: Path = NOISE_OUT,
        baseline: Path = BASELINE_OUT, out: Path = OUT, checkpoints: Path | None = None) -> dict:
    """Reads ``ingest``'s training images, ``noise``'s ``labels.npz`` and ``baseline``'s ``model.pt`` (the features;
    the start too with ``warm_start``; refused when it was trained on other inputs); writes ``student.pt``,
    ``teacher.pt`` (and ``teacher_round<r>.pt`` for earlier rounds), ``metrics.json``, ``history.json``,
    ``evaluations.json`` and the ``live/`` curves to ``out`` (the main process); returns the metrics.
    ``checkpoints``: a folder shared across runs for the resumable checkpoints (default ``out/checkpoints``)."""
    retain_freed_memory()  # a training process: reuse freed memory rather than fault in fresh pages
    prepare_output(out, step="mlnt")  # a folder that cannot take the outputs fails now, not after training
    train_data, val_data, meta = load_split(ingest, noise, workers=config.workers, augment=config.augment,
                                            crop_padding=config.crop_padding)
    trained_on, model_file = training_digest(ingest, noise), Path(baseline) / "model.pt"
    baseline_net, saved = load_model(model_file)  # checked before the checkpoint folder is taken
    check_fits(model_file, saved, read_manifest(ingest), Path(ingest) / "manifest.json")
    check_trained_on(model_file, saved, trained_on, inputs=f"the inputs in {ingest} and {noise}")
    store = checkpoint_store(out, config, [trained_on, model_file], code="components.mlnt", root=checkpoints)
    if config.warm_start:
        net = copy.deepcopy(baseline_net)
    else:
        weights = imagenet_weights(saved["network"]) if config.pretrained else None
        net = seeded_network(saved["network"], meta, config.seed, pretrained=weights)
    with data_parallel(config) as group:
        warning = ramp_warning(config)
        if warning and group.is_main:
            print(f"WARNING: mlnt: {warning}", file=sys.stderr, flush=True)
        result = train(config, net, train_data, val_data=val_data, feature_net=baseline_net,
                       store=store, group=group,
                       on_validation=lambda history, evaluations: write_curves(out, history, evaluations))
    metrics = _metrics(config, result)
    if warning:
        metrics["warning"] = warning
    if group.is_main:
        _write(Path(out), result, metrics, network=saved["network"], meta={**meta, TRAINED_ON: trained_on},
               config=config)
        drop_stale_checkpoints(store, shared=checkpoints is not None)
    return metrics


def _write(out: Path, result, metrics: dict, *, network: str, meta: dict, config: MlntStepConfig) -> None:
    """The step's files as one ``atomic_set``: a failure while writing any of them leaves the previous ones."""
    with atomic_set():
        save_model(out / "student.pt", result.student.state_dict(), network=network, meta=meta)
        save_model(out / "teacher.pt", result.best_state, network=network, meta=meta,
                   extra={"best_epoch": result.best_epoch, "released": result.best_model})
        for number, earlier in enumerate(result.earlier_rounds, start=1):
            save_model(out / f"teacher_round{number}.pt", earlier.best_state, network=network, meta=meta,
                       extra={"best_epoch": earlier.best_epoch})
        write_history(out, result)
        write_json(out / "evaluations.json", result.evaluations)
        write_json(out / CONFIG_FILE, as_record(config))
        write_json(out / "metrics.json", metrics)
        publish_curves(out)  # live/ in the same burst of renames as metrics.json
    _remove_stale_rounds(out, len(result.earlier_rounds))


def ramp_warning(config: MlntStepConfig) -> str | None:
    """What a run that ends before the meta loss's ramp does (``ramp_end`` past ``epochs``: a schedule shortened
    without its ramp) should be told, with the share of ``meta_weight`` its last step reaches; None otherwise."""
    if config.meta_weight == 0 or config.ramp_end <= config.epochs:
        return None
    per_epoch = 1000  # rampup_weight counts whole steps: here, thousandths of an epoch
    reached = rampup_weight(round(config.epochs * per_epoch), start=round(config.ramp_start * per_epoch),
                            end=round(config.ramp_end * per_epoch), max_weight=1.0,
                            origin=None if config.ramp_from == "start" else 0)
    mostly = ", so this run is mostly the EMA teacher on plain CE" if reached < 0.5 else ""
    return (f"ramp_end {config.ramp_end:g} is past the last epoch ({config.epochs}): the meta loss's weight ends at "
            f"{reached:.0%} of meta_weight {config.meta_weight:g}{mostly} (set ramp_end to at most epochs, or train "
            "longer)")


def _remove_stale_rounds(out: Path, rounds: int) -> None:
    """Remove the ``teacher_round<r>.pt`` that an earlier run with more rounds left beside this run's outputs (DVC
    does not declare them, so nothing else does); only once this run's outputs are written, so a failed run keeps
    them."""
    kept = {f"teacher_round{number}.pt" for number in range(1, rounds + 1)}
    for path in out.glob("teacher_round*.pt"):
        if path.name not in kept:
            path.unlink(missing_ok=True)


def _metrics(config: MlntStepConfig, result) -> dict:
    last, evaluations = result.history[-1], result.evaluations
    at_best = next(e for e in evaluations if e["step"] == result.best_step)
    return {"released": result.best_model, "val_accuracy": result.best_score, "best_epoch": result.best_epoch,
            "best_step": result.best_step, "epochs": len(result.history), "steps": result.steps,
            "mode": result.mode, "mode_requested": config.mode, "graph": result.mode == "exact" and config.graph,
            "rounds": config.rounds, "warm_start": config.warm_start,
            "meta_weight": config.meta_weight,
            "val_accuracy_teacher": _best(evaluations, "teacher"),
            "val_accuracy_student": _best(evaluations, "student"),
            "final_val_accuracy_teacher": last.get("val_accuracy_teacher"),
            "final_val_accuracy_student": last["val_accuracy_student"],
            # what is left in the teacher of the weights it was copied from, when released and at the end
            "teacher_start_share_released": at_best.get("teacher_start_share") if result.best_model == "teacher"
            else None,
            "teacher_start_share_final": last.get("teacher_start_share"),
            "val_accuracy_by_round": [r.best_score for r in [*result.earlier_rounds, result]]}


def _best(evaluations: list[dict], model: str) -> float | None:
    """The best validation accuracy of ``model`` over every validation (None if it was never validated)."""
    scores = [e[f"val_accuracy_{model}"] for e in evaluations if f"val_accuracy_{model}" in e]
    return max(scores) if scores else None


def _main(configs: dict) -> None:
    m = run(configs["mlnt"])
    print(f"mlnt ({m['mode']}): released the {m['released']} as teacher.pt (validation accuracy "
          f"{m['val_accuracy']:.4f}, step {m['best_step']}, epoch {m['best_epoch']}); final student "
          f"{m['final_val_accuracy_student']:.4f} -> {OUT}")


main = cli("mlnt", {"mlnt": MlntStepConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
