"""The registry is never left half-written: a promotion that fails or is killed at any point leaves every visible
version complete and ``releases/latest`` on a complete release (the old one until the switch, the new one after).
The gate's refusals (parity, metrics, card hash, thresholds, a broken champion) are cases of the catalogue."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from components import gate
from tests.reliability.crash import KILLED, PROMOTION_KILLS, run_step
from tests.reliability.workspace import snapshot

RELEASE_FILES = {"model.onnx", "model_card.json", "parity.json", "decision.json"}


def registry_problems(registry: Path) -> list[str]:
    """What is wrong with a registry: an incomplete visible version, a card that does not vouch for its model, a
    ``latest`` that does not lead to a complete version. Hidden entries (``.incoming.*``) are never served."""
    problems = [f"{name}: {p}" for name in visible(registry) - {"latest"} for p in version_problems(registry / name)]
    target = os.readlink(registry / "latest") if (registry / "latest").is_symlink() else None
    if target not in visible(registry) or version_problems(registry / target):
        problems.append(f"latest: expected a link to a complete version, found {target!r}")
    return problems


def version_problems(version: Path) -> list[str]:
    files = {p.name for p in version.iterdir()} if version.is_dir() else set()
    if files != RELEASE_FILES:
        return [f"holds {sorted(files)}"]
    card = json.loads((version / "model_card.json").read_text())
    problems = [] if card["onnx_sha256"] == hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest() \
        else ["the card does not vouch for model.onnx"]
    if json.loads((version / "decision.json").read_text()).get("version") != version.name:
        problems.append("decision.json names another version")
    return problems


def visible(registry: Path) -> set[str]:
    return {p.name for p in registry.iterdir() if not p.name.startswith(".")}


def next_second() -> None:
    """Versions are named by the second: a rerun in the same second as the killed run would meet its folder."""
    time.sleep(1.05 - time.time() % 1)


def test_a_promotion_that_fails_midway_leaves_no_trace(work, monkeypatch, capsys):
    registry = work / "releases"
    before = snapshot(registry)

    def copy_half_then_fail(source, target, **_):
        Path(target).write_bytes(Path(source).read_bytes()[:10])
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(shutil, "copy2", copy_half_then_fail)
    next_second()  # the champion may have been released this very second
    assert gate.main([]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert snapshot(registry) == before  # no version, no staging folder, latest where it was


@pytest.mark.parametrize("point", PROMOTION_KILLS)
def test_a_killed_promotion_never_shows_half_a_release(point, work):
    registry = work / "releases"
    champion = os.readlink(registry / "latest")
    next_second()
    code, log = run_step(work, "gate", kill=point)
    assert code == KILLED, log
    assert not registry_problems(registry)
    assert os.readlink(registry / "latest") == champion  # the switch is the last thing a promotion does
    next_second()
    code, log = run_step(work, "gate", argv=("--enforce",))
    assert code == 0, log
    assert not registry_problems(registry)
    assert os.readlink(registry / "latest") != champion and os.readlink(registry / "latest") in visible(registry)
