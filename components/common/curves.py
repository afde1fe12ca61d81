"""A training step's records: ``history.json`` (one record per epoch) and the dvclive curves under ``live/``.

While a step trains, its curves go to ``live.partial/`` beside ``live/`` (``dvc plots show
<out>/live.partial/plots/metrics`` follows the run); ``live/``, the DVC plots output, is replaced by them only
in the same burst of renames as the step's other outputs (``publish_curves`` inside the step's ``atomic_set``), so
a failed run never leaves its curves next to the previous good run's ``metrics.json``. A rerun that resumes rewrites
``live.partial/`` whole from the records its checkpoint restored, so its curves continue where the failed run's
stopped."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common.atomic import stage_folder, write_json
from model.trainer import TrainResult

LIVE = "live"  # the published curves (dvc.yaml's plots)
PARTIAL = "live.partial"  # the curves of the run in progress


def write_history(out: Path, result: TrainResult) -> None:
    """``history.json``, and the final curves in ``live.partial/`` (``write_curves``); the step publishes them
    (``publish_curves``) with its other outputs."""
    write_json(Path(out) / "history.json", result.history)
    write_curves(out, result.history, result.evaluations)


def publish_curves(out: Path) -> None:
    """Replace ``out/live/`` by ``out/live.partial/`` (``stage_folder``): inside the step's ``atomic_set``, in the
    burst of renames that writes its other files; if the step fails before, the curves stay in ``live.partial/``."""
    stage_folder(Path(out) / PARTIAL, Path(out) / LIVE)


def write_curves(out: Path, history: list[dict], evaluations: list[dict]) -> None:
    """The training curves through dvclive under ``out/live.partial/`` (published to ``out/live/`` when the step
    succeeds: ``publish_curves``), by training step: every validation's accuracies (``val_accuracy_*``, the
    teacher's start share) and each epoch's loss, learning rate and throughput. Rewritten whole from the run's
    records at every validation (``train``'s ``on_validation``), so the curves follow a run live and a resumed run
    shows each step once."""
    from dvclive import Live  # noqa: PLC0415 - only the training steps log curves

    rows: dict[int, dict[str, float]] = {}
    for record in evaluations:
        rows.setdefault(int(record["step"]), {}).update({k: v for k, v in record.items() if k not in ("step", "epoch")})
    for record in history:
        rows.setdefault(int(record["step"]), {}).update(
            {k: v for k, v in record.items() if k not in ("step", "epoch") and k not in rows[int(record["step"])]})
    live_dir = Path(out) / PARTIAL
    shutil.rmtree(live_dir, ignore_errors=True)
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for step in sorted(rows):
            live.step = step
            for key, value in rows[step].items():
                live.log_metric(key, value)
            live.next_step()
