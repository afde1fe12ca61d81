"""The training curves follow a run live through dvclive, and a crashed and resumed run shows each step once."""

import csv
from pathlib import Path

import pytest

from components.common.curves import publish_curves, write_curves, write_history
from model.trainer import MlntConfig, train
from tests.model.test_trainer import QUIET, CrashError, CrashingStore, net, noisy_problem


def curve(live: Path, name: str) -> list[tuple[int, float]]:
    with open(live / "plots" / "metrics" / f"{name}.tsv") as fh:
        return [(int(row["step"]), float(row[name])) for row in csv.DictReader(fh, delimiter="\t")]


def test_curves_are_written_at_every_validation_and_survive_a_resume(tmp_path):
    config = MlntConfig(epochs=3, mode="head", ramp_start=1, ramp_end=2, eval_every=5, checkpoint_every=4, **QUIET)
    train_data, val = noisy_problem()
    seen = []

    def live(history, evaluations):
        write_curves(tmp_path / "out", history, evaluations)
        seen.append(curve(tmp_path / "out" / "live.partial", "val_accuracy_student"))

    with pytest.raises(CrashError):  # the 4th checkpoint (after "start") is at step 12, in the first epoch
        train(config, net(), train_data, val_data=val, store=CrashingStore(tmp_path / "ck", 4), on_validation=live)
    assert [s for s, _ in seen[-1]] == [5, 10]  # written during the run, before any end
    result = train(config, net(), train_data, val_data=val, store=CrashingStore(tmp_path / "ck", 0),
                   on_validation=live)
    steps = [e["step"] for e in result.evaluations]
    final = curve(tmp_path / "out" / "live.partial", "val_accuracy_student")
    assert [s for s, _ in final] == steps == sorted(set(steps))  # every validation once, in order
    assert [v for _, v in final] == pytest.approx([e["val_accuracy_student"] for e in result.evaluations])
    assert [s for s, _ in curve(tmp_path / "out" / "live.partial", "train_loss")] == [h["step"] for h in result.history]
    teacher = curve(tmp_path / "out" / "live.partial", "val_accuracy_teacher")
    assert teacher[0][0] >= 15  # the teacher exists from the end of the warm-up (epoch 1 = 15 steps) on


def test_a_failed_run_leaves_the_published_curves_of_the_last_good_run(tmp_path):
    """Curves during training go to ``live.partial/``; ``live/`` (dvc.yaml's plots, beside ``metrics.json``) is
    replaced only when the step has written its outputs (``publish_curves``)."""
    config = MlntConfig(epochs=1, mode="head", ramp_start=0.5, ramp_end=1, eval_every=5, checkpoint_every=4, **QUIET)
    train_data, val = noisy_problem()
    out = tmp_path / "out"
    good = train(config, net(), train_data, val_data=val)
    write_history(out, good)
    publish_curves(out)
    published = {p.relative_to(out): p.read_bytes() for p in (out / "live").rglob("*") if p.is_file()}
    assert curve(out / "live", "val_accuracy_student") and not (out / "live.partial").exists()

    def dies(history, evaluations):
        write_curves(out, history, evaluations)
        raise CrashError("NaN loss")

    with pytest.raises(CrashError):  # the next run fails at its first validation
        train(config, net(), train_data, val_data=val, on_validation=dies)
    assert {p.relative_to(out): p.read_bytes() for p in (out / "live").rglob("*") if p.is_file()} == published
    assert [s for s, _ in curve(out / "live.partial", "val_accuracy_student")] == [5]  # its own, kept aside
    write_history(out, good)  # a run that succeeds publishes its curves
    publish_curves(out)
    assert [s for s, _ in curve(out / "live", "val_accuracy_student")] == [e["step"] for e in good.evaluations]
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "live"]
