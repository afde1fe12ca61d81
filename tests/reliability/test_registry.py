"""The registry is never left half-written: a promotion that fails or is killed at any point leaves every visible
version complete and ``releases/latest`` on a complete release (the old one until the switch, the new one after).
Two gates at once cannot undo the regression rule: the second to promote is judged against the first's model, and
a model swapped after it was judged is never released under the judged hash. The gate's refusals (parity, metrics,
card hash, thresholds, a broken champion) are cases of the catalogue."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import pytest

from components import gate
from tests.reliability.crash import KILLED, PROMOTION_KILLS, run_step
from tests.reliability.workspace import another_model, snapshot

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


def candidate(work: Path, folder: Path, accuracy: float) -> tuple[Path, Path]:
    """The workspace's exported model made into another candidate (its own ONNX bytes, a card that vouches for
    them, ``accuracy`` on the clean test set): ``(export, evaluate)`` folders for the gate."""
    return another_model(work / "artifacts", folder, accuracy=accuracy)


def _gate_child(config, export, evaluate, out, barrier, first_done, wait_for_first, is_first) -> None:
    """One gate in its own process. Its first look at the champion waits at ``barrier`` until the other gate has
    looked too (both judge the old champion); then, if told, it waits until the other gate has finished."""
    real = gate.read_champion
    looks = []

    def look(registry):
        champion = real(registry)
        looks.append(champion)
        if len(looks) == 1:
            barrier.wait()
            if wait_for_first:
                first_done.wait(60)
        return champion

    gate.read_champion = look
    try:
        gate.run(config, export=export, evaluate=evaluate, out=out)
    finally:
        if is_first:
            first_done.set()


@pytest.mark.parametrize("order", ["better-first", "worse-first", "together"])
def test_two_gates_at_once_leave_the_better_model_as_latest(order, work, tmp_path):
    """Two candidates, each better than the old champion and each judged against it before either promotes (two
    processes held at a barrier). Whatever the order of their promotions, ``latest`` ends on the better one; the
    worse one, promoting second, is refused with a reason naming the better one, the new champion."""
    registry = work / "releases"
    latest_card = registry / "latest" / "model_card.json"
    champion = json.loads(latest_card.read_text())
    champion["metrics"]["accuracy"] = 0.80
    latest_card.write_text(json.dumps(champion))
    versions = visible(registry)
    config = gate.GateConfig(min_accuracy=0.0, max_below_baseline=1.0, max_regression=0.0, registry=str(registry))
    better, worse = candidate(work, tmp_path / "better", 0.90), candidate(work, tmp_path / "worse", 0.85)
    context = multiprocessing.get_context("fork")
    barrier, first_done = context.Barrier(2, timeout=60), context.Event()
    first, second = (better, worse) if order != "worse-first" else (worse, better)
    gates = {name: context.Process(target=_gate_child, args=(config, *pair, tmp_path / f"{name}-gate", barrier,
                                                              first_done, name == "second" and order != "together",
                                                              name == "first"))
             for name, pair in (("first", first), ("second", second))}
    for process in gates.values():
        process.start()
    for process in gates.values():
        process.join(120)
        assert process.exitcode == 0
    decisions = {pair: json.loads((tmp_path / f"{name}-gate" / "decision.json").read_text())
                 for name, pair in (("first", first), ("second", second))}
    won, lost = decisions[better], decisions[worse]
    assert won["passed"] and os.readlink(registry / "latest") == won["version"]
    assert not registry_problems(registry)
    if order == "better-first":
        assert not lost["passed"]
    if not lost["passed"]:  # the worse one promoted second: judged against the better one, the new champion
        assert "version" not in lost and visible(registry) == versions | {won["version"]}
        assert (f"fail: accuracy 0.8500, required at least the champion's 0.9000 minus max_regression 0.0 (the "
                f"champion: {registry / 'latest'} -> {won['version']})") in lost["reasons"]


def test_a_model_swapped_after_it_was_judged_is_not_released_under_its_hash(work, tmp_path, monkeypatch):
    """``model.onnx`` replaced by another model between the gate's first look and the copy into the registry: the
    copy is judged again and its hash no longer matches the card, so nothing is released and the registry is as it
    was; replaced after the copy, the release holds the bytes that were judged."""
    registry = work / "releases"
    before = snapshot(registry)
    judged = (work / "artifacts" / "export" / "model.onnx").read_bytes()
    other, _ = candidate(work, tmp_path / "other", 0.5)
    real_decide, real_stage = gate.decide, gate._stage

    def swap(*args, **kwargs):
        result = real_decide(*args, **kwargs)
        shutil.copyfile(other / "model.onnx", work / "artifacts" / "export" / "model.onnx")
        return result

    monkeypatch.setattr(gate, "decide", swap)
    next_second()
    assert gate.main(["--enforce"]) == 1
    decision = json.loads((work / "artifacts" / "gate" / "decision.json").read_text())
    assert any(r.startswith("fail: model card sha256") for r in decision["reasons"])
    assert snapshot(registry) == before

    (work / "artifacts" / "export" / "model.onnx").write_bytes(judged)
    monkeypatch.setattr(gate, "decide", real_decide)

    def swap_after_the_copy(*args):
        staged = real_stage(*args)
        shutil.copyfile(other / "model.onnx", work / "artifacts" / "export" / "model.onnx")
        return staged

    monkeypatch.setattr(gate, "_stage", swap_after_the_copy)
    assert gate.main(["--enforce"]) == 0
    assert (registry / "latest" / "model.onnx").read_bytes() == judged and not registry_problems(registry)
