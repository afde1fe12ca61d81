"""Crash and restart: a training step killed with SIGKILL again and again, at points drawn from a seeded RNG (one of
them halfway through a checkpoint write, one while the model file is being written), with a torn checkpoint on
the way, ends with weights bitwise identical to the uninterrupted run of the good workspace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.reliability import faults as f
from tests.reliability.crash import KILLED, TEAR, kill_plan, run_step
from tests.reliability.workspace import copy

OUTPUTS = {"baseline": ("model.pt", "final.pt"), "mlnt": ("student.pt", "teacher.pt")}


def tear(step: str, workdir: Path) -> None:
    """A new, truncated ``round0.pt`` (a new inode: its ``.prev`` keeps the good bytes)."""
    latest = f.run_folder(step, workdir) / "round0.pt"
    data = latest.read_bytes()
    latest.unlink()
    latest.write_bytes(data[:len(data) // 2])


def differences(a: Path, b: Path) -> list[str]:
    """The names of the tensors (and fields) that differ between two model files."""
    left, right = (torch.load(p, weights_only=True) for p in (a, b))
    diff = [k for k in left["state_dict"] if not torch.equal(left["state_dict"][k], right["state_dict"][k])]
    return diff + [k for k in left if k != "state_dict" and left[k] != right[k]]


@pytest.mark.parametrize("step", ["baseline", "mlnt"])
def test_killed_and_resumed_training_is_bitwise_identical(step, good_workspace, tmp_path):
    work = copy(good_workspace, tmp_path / "ws")
    shutil.rmtree(work / "artifacts" / step)
    torn = False
    for point in kill_plan(step):
        if point == TEAR:
            tear(step, work)
            torn = True
            continue
        code, log = run_step(work, step, kill=point)
        assert code == KILLED, f"{point}: the step was not killed (exit {code}):\n{log}"
        assert not torn or "round0.pt: expected a checkpoint with a matching sha256 trailer" in log, log
        torn = False
    code, log = run_step(work, step)
    assert code == 0 and "resumed from" in log, log
    for name in OUTPUTS[step]:
        assert not differences(work / "artifacts" / step / name, good_workspace / "artifacts" / step / name), name
    metrics = [json.loads((root / "artifacts" / step / "metrics.json").read_text()) for root in (work, good_workspace)]
    assert metrics[0] == metrics[1]
