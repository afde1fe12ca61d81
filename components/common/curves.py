"""A training step's records: ``history.json`` (one record per epoch) and the dvclive curves under ``live/``."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common.atomic import write_json
from model.trainer import TrainResult


def write_history(out: Path, result: TrainResult) -> None:
    """``history.json``, and the final curves (``write_curves``)."""
    write_json(Path(out) / "history.json", result.history)
    write_curves(out, result.history, result.evaluations)


def write_curves(out: Path, history: list[dict], evaluations: list[dict]) -> None:
    """The training curves through dvclive under ``out/live/`` (``dvc plots``, the VS Code extension), by
    training step: every validation's accuracies (``val_accuracy_*``, the teacher's start share) and each
    epoch's loss, learning rate and throughput. Rewritten whole from the run's records at every validation
    (``train``'s ``on_validation``), so the curves follow a run live and a resumed run shows each step once."""
    from dvclive import Live  # noqa: PLC0415 - only the training steps log curves

    rows: dict[int, dict[str, float]] = {}
    for record in evaluations:
        rows.setdefault(int(record["step"]), {}).update({k: v for k, v in record.items() if k not in ("step", "epoch")})
    for record in history:
        rows.setdefault(int(record["step"]), {}).update(
            {k: v for k, v in record.items() if k not in ("step", "epoch") and k not in rows[int(record["step"])]})
    live_dir = Path(out) / "live"
    shutil.rmtree(live_dir, ignore_errors=True)
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for step in sorted(rows):
            live.step = step
            for key, value in rows[step].items():
                live.log_metric(key, value)
            live.next_step()
