"""mlnt: MLNT training on the noisy labels, warm-started from the baseline, whose frozen features drive
the neighbour search for synthetic label noise.

Writes ``artifacts/mlnt/student.pt`` (final student), ``teacher.pt`` (the best EMA teacher on the
validation set: the model to export), with ``rounds > 1`` also ``teacher_round<r>.pt`` for each earlier round,
``metrics.json``, ``history.json`` and resumable ``checkpoints/``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from components.allocator import retain_freed_memory
from components.atomic import write_json
from components.baseline import OUT as BASELINE_OUT
from components.config import cli
from components.ingest import OUT as INGEST_OUT
from components.noise import OUT as NOISE_OUT
from components.telemetry import reports
from components.training import (
    checkpoint_store,
    data_parallel,
    drop_stale_checkpoints,
    load_model,
    load_split,
    save_model,
    seeded_network,
    write_history,
)
from model.trainer import MlntConfig, train

OUT = Path("artifacts/mlnt")


@dataclass(frozen=True)
class MlntStepConfig(MlntConfig):
    warm_start: bool = True  # start from the baseline's weights (else from a random initialisation)


@reports("mlnt", lambda m: {"accuracy": {"val": {"teacher": m["val_accuracy_teacher"],
                                                  "student": m["final_val_accuracy_student"]}}})
def run(config: MlntStepConfig, *, ingest: Path = INGEST_OUT, noise: Path = NOISE_OUT,
        baseline: Path = BASELINE_OUT, out: Path = OUT, checkpoints: Path | None = None) -> dict:
    """Train; ``checkpoints``: a folder shared across runs for the resumable checkpoints (default
    ``out/checkpoints``)."""
    retain_freed_memory()  # a training process: reuse freed memory rather than fault in fresh pages
    train_data, val_data, meta = load_split(ingest, noise)
    inputs = [Path(ingest) / "train.npz", Path(noise) / "labels.npz", Path(baseline) / "model.pt"]
    store = checkpoint_store(out, config, inputs, root=checkpoints)
    baseline_net, saved = load_model(Path(baseline) / "model.pt")
    net = copy.deepcopy(baseline_net) if config.warm_start else seeded_network(saved["network"], meta, config.seed)
    with data_parallel(config) as group:
        result = train(config, net, train_data, val_data=val_data, feature_net=baseline_net,
                       store=store, group=group)
    metrics = _metrics(config, result)
    if group.is_main:
        _write(Path(out), result, metrics, network=saved["network"], meta=meta)
        drop_stale_checkpoints(store, shared=checkpoints is not None)
    return metrics


def _write(out: Path, result, metrics: dict, *, network: str, meta: dict) -> None:
    save_model(out / "student.pt", result.student.state_dict(), network=network, meta=meta)
    save_model(out / "teacher.pt", result.best_state, network=network, meta=meta,
               extra={"best_epoch": result.best_epoch})
    for number, earlier in enumerate(result.earlier_rounds, start=1):
        save_model(out / f"teacher_round{number}.pt", earlier.best_state, network=network, meta=meta,
                   extra={"best_epoch": earlier.best_epoch})
    write_history(out, result)
    write_json(out / "metrics.json", metrics)


def _metrics(config: MlntStepConfig, result) -> dict:
    last = result.history[-1]
    return {"best_epoch": result.best_epoch, "epochs": len(result.history), "mode": config.mode,
               "rounds": config.rounds,
               "val_accuracy_teacher": _best_teacher(result.history),
               "final_val_accuracy_teacher": last["val_accuracy_teacher"],
               "final_val_accuracy_student": last["val_accuracy_student"],
               "val_accuracy_teacher_by_round": [_best_teacher(r.history)
                                                 for r in [*result.earlier_rounds, result]]}


def _best_teacher(history: list[dict]) -> float:
    return max(h["val_accuracy_teacher"] for h in history)


def _main(configs: dict) -> None:
    m = run(configs["mlnt"])
    print(f"mlnt ({m['mode']}): best teacher validation accuracy {m['val_accuracy_teacher']:.4f} at epoch "
          f"{m['best_epoch']}; final student {m['final_val_accuracy_student']:.4f} -> {OUT}")


main = cli("mlnt", {"mlnt": MlntStepConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
