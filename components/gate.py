"""gate: release the exported model only if it is good enough, and say why either way.

    python -m components.gate [--params FILE] [--set gate.key=value ...] [--enforce]
    python -m components.gate --check [FOLDER] [--export DIR] [--evaluate DIR]
    python -m components.gate --prune KEEP [--registry DIR]

Passes only if the clean-test accuracy of the exported model is at least ``gate.min_accuracy`` (an absolute floor;
0: none), at most ``gate.max_below_baseline`` below the same run's CE baseline at its best epoch (the control
trained on the same data; 1: no comparison), no worse than the current champion's (``releases/latest``) by more than
``gate.max_regression``, the ONNX parity check held, and the model card describes the ONNX file beside it (its
sha256) and carries evaluate's figures for its model (its accuracy; the test set's and the model file's sha256 where
both record them), every accuracy a finite number in [0, 1]. A champion of another task (other class names, input or
output shape) fails the gate: a registry holds one task's releases, and serving would otherwise switch to the other
task's model. So does a champion scored on another test set (the cards' ``test.sha256``), whose accuracy does not
compare, unless ``max_regression`` is 1 (no comparison). A run whose validation labels are noisy passes with a
warning in ``reasons``. Writes ``artifacts/gate/decision.json`` (a public contract: ``passed``, ``reasons``,
``accuracy``, and more). A pass promotes the model into the registry: ``releases/<version>/`` (``model.onnx``,
``model_card.json``, ``parity.json``, ``decision.json``), never overwriting a version, written to a temporary folder
and renamed, then ``releases/latest`` is pointed at it; a model that is the champion already (the same ONNX bytes:
an unchanged pipeline run again) passes without a new version, ``released`` false and ``version`` the champion's.
``--enforce`` exits 1 on a fail. ``--check`` (for CI, after ``dvc repro``) runs nothing: it reads the decision a
gate already wrote (``artifacts/gate/decision.json``, or ``FOLDER/decision.json``), prints its verdict and reasons
and exits 1 unless it passed, or when the file is missing or unreadable, or when a pass is stale: its
``onnx_sha256`` and ``accuracy`` are not those of the export and evaluate outputs now (``artifacts/export``,
``artifacts/evaluate``, or ``--export``, ``--evaluate``), as after a ``dvc repro`` that failed before the gate
stage. It writes nothing, so it neither releases a second time nor touches the DVC output. ``--prune KEEP`` removes
every release but the ``KEEP`` newest and the champion (``prune``): nothing else ever removes one. Each bound is
compared with a tolerance of ``TOLERANCE``: a model exactly ``max_regression`` below the champion passes, whatever
the float rounding.

In a DVC experiment (``dvc exp run``: DVC sets ``DVC_EXP_NAME`` for its stages) the gate judges the model against
the champion and releases nothing (``released`` false, ``experiment`` its name, a reason saying how to release it):
an experiment's params are not committed, and a workspace experiment would otherwise replace the champion others
serve. A relative registry is then read from the repository the experiment was started in (``DVC_ROOT``), since a
queued or ``--temp`` experiment runs in a copy without the git-ignored registry and would judge against none.

Gates may run at once (two pipelines finishing together): a decision that passes is taken again under the
registry's exclusive lock (``flock`` on ``releases/.lock``), on the copy that will be released and against the
champion as it is then, so a candidate judged against a champion that has since been replaced is refused, not
promoted over a better one. The files are copied into the hidden staging folder first and judged there: the bytes
whose sha256 the gate checked are the bytes released, whatever happens to ``artifacts/export`` meanwhile.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from components.common.artifacts import fraction, sha256_file, wrong_type
from components.common.atomic import fsync_dir, fsync_file, prepare_output, write_json
from components.common.config import ConfigError, build, cli, load_params, printable
from components.common.steps import FOLDERS
from components.common.telemetry import EXPERIMENT_ENV, reports

EVALUATE_OUT = FOLDERS["evaluate"]
EXPORT_OUT = FOLDERS["export"]

OUT = FOLDERS["gate"]
LOCK = ".lock"  # in the registry: held by the gate that reads the champion, decides and promotes
RELEASED = ("model.onnx", "model_card.json", "parity.json")  # from the export step into a release
LOCK_TIMEOUT = 600.0  # seconds a gate waits for another one's promotion (milliseconds, unless it hangs)
ROOT_ENV = "DVC_ROOT"  # the repository a DVC stage belongs to, also for an experiment run in a copy
TOLERANCE = 1e-9  # a bound computed by subtraction (0.8 - 0.1 = 0.7000000000000001) passes the accuracy it names


@dataclass(frozen=True)
class GateConfig:
    """The ``gate`` section of params.yaml: ``min_accuracy`` (the clean-test accuracy floor; 0: none),
    ``max_below_baseline`` (how far below this run's CE baseline at its best epoch the model may be; 1: no check),
    ``max_regression`` (how far below the champion's accuracy) and ``registry`` (the registry folder; the KFP
    component sets it to the mounted registry)."""

    min_accuracy: float = 0.80  # clean-test accuracy the released model must reach (0: no floor)
    max_below_baseline: float = 0.0  # how far below this run's CE baseline (best epoch) it may be (1: no check)
    max_regression: float = 0.01  # how far below the champion's accuracy a new model may be
    registry: str = "releases"  # the local registry folder

    def __post_init__(self) -> None:
        if not self.registry.strip():  # Path("") is the working folder: releases would land in the project root
            raise ValueError(f"registry: expected the registry folder, found {self.registry!r}")
        for name in ("min_accuracy", "max_below_baseline", "max_regression"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], found {getattr(self, name)}")


CARD_SHAPES = {"model": str, "metrics": dict, "input": dict, "output": dict, "test": dict}  # what the gate reads
METRICS_SHAPES = {"test": dict, "validation": dict, "baseline": dict, "baseline_best_epoch": dict}


def decide(config: GateConfig, *, export: Path, evaluate: Path, registry: Path) -> dict:
    """The decision, with one reason per check, pass or fail; reads everything it judges itself. An input missing,
    unreadable or holding a record of another JSON type (``CARD_SHAPES``, ``METRICS_SHAPES``, the model's scores) is a
    fail reason naming the file, the key, the expected and the found, never an exception."""
    read = {path: _read(path) for path in (export / "model_card.json", export / "parity.json",
                                           evaluate / "metrics.json")}
    card, parity, metrics = read.values()
    onnx_file = export / "model.onnx"
    onnx = _read_bytes(onnx_file)  # read once: the bytes hashed are the bytes judged
    missing = [str(p) for p, value in read.items() if value is None] + ([] if onnx is not None else
                                                                        [str(onnx_file)])
    checks = ([(False, f"inputs missing or unreadable: {', '.join(missing)}")] if missing else
              [(False, problem) for problem in _malformed(export, evaluate, card, metrics)])
    accuracy, base = None, baseline_accuracy(metrics) if metrics else None
    warnings = []
    if not checks:
        accuracy = _field(metrics, card.get("model"), "accuracy")
        checks = _model_checks(config, export, evaluate, (card, parity, metrics), onnx, accuracy)
        warnings = label_warnings(metrics)
    champion_checks, champion = _champion_checks(config, registry, card, accuracy if fraction(accuracy) else None)
    return {"passed": all(ok for ok, _ in (*checks, *champion_checks)),
            "reasons": [*_reasons(checks), *warnings, *_reasons(champion_checks)], "accuracy": accuracy,
            "champion_accuracy": champion.accuracy if champion else None,
            "champion_version": champion.version if champion else None,
            "champion_onnx_sha256": champion.card.get("onnx_sha256") if champion else None,
            "baseline_accuracy": base,
            "min_accuracy": config.min_accuracy, "max_below_baseline": config.max_below_baseline,
            "max_regression": config.max_regression,
            "model": card.get("model") if card else None, "onnx_sha256": card.get("onnx_sha256") if card else None}


Check = tuple[bool, str]  # a check's outcome and its reason, without the "pass: " or "fail: " the decision gives it


def _reasons(checks: list[Check]) -> list[str]:
    return [("pass: " if ok else "fail: ") + reason for ok, reason in checks]


def _malformed(export: Path, evaluate: Path, card: dict, metrics: dict) -> list[str]:
    """A reason for the card and one for evaluate's metrics where a record the gate reads has another JSON type."""
    model = card.get("model")
    shapes = {**METRICS_SHAPES, model: dict} if isinstance(model, str) else METRICS_SHAPES  # and the model's scores
    problems = [wrong_type(export / "model_card.json", card, CARD_SHAPES, "export"),
                wrong_type(evaluate / "metrics.json", metrics, shapes, "evaluate")]
    return [problem for problem in problems if problem]


def _model_checks(config: GateConfig, export: Path, evaluate: Path, inputs: tuple[dict, dict, dict], onnx: bytes,
                  accuracy) -> list[Check]:
    """The checks of the exported model itself: its accuracy (``accuracy``, evaluate's) a fraction, its card
    carrying evaluate's figures and the ONNX file's sha256, parity, ``min_accuracy`` and the baseline."""
    card, parity, metrics = inputs
    valid = fraction(accuracy)
    checks = [(valid, f"{accuracy_kind(metrics)} of the exported model ({card.get('model')}) is {accuracy!r} in "
                      f"{evaluate / 'metrics.json'}{'' if valid else ': expected a finite number in [0, 1]'}")]
    digest = hashlib.sha256(onnx).hexdigest()
    checks.append((card.get("onnx_sha256") == digest, f"model card sha256 {card.get('onnx_sha256')} vs model.onnx "
                                                      f"{digest}"))
    checks.append((parity.get("passed") is True, f"ONNX parity: max |diff| {parity.get('max_abs_diff')} (allowed "
                                                 f"{parity.get('max_abs_diff_allowed')}), argmax agreement "
                                                 f"{parity.get('argmax_agreement')}, passed {parity.get('passed')!r}"))
    if valid:
        checks.append(_card_check(export, evaluate, card, metrics))
        ok = accuracy >= config.min_accuracy
        checks.append((ok, f"accuracy {accuracy:.4f}, required at least min_accuracy {config.min_accuracy}"
                           f"{'' if ok else _resolution(metrics)}"))
    return checks + _baseline_checks(config, evaluate, metrics, accuracy if valid else None)


def _card_check(export: Path, evaluate: Path, card: dict, metrics: dict) -> Check:
    """Whether the card carries the figures evaluate recorded for its model (``card_difference``): the gate judges
    evaluate's, and the next gate takes the released card's accuracy as the champion's."""
    difference = card_difference(card, metrics)
    if not difference:
        return True, f"the model card's figures are evaluate's ({evaluate / 'metrics.json'})"
    return False, (f"{export / 'model_card.json'}: expected the figures evaluate recorded for {card.get('model')} in "
                   f"{evaluate / 'metrics.json'}, found {difference} (the card and the metrics come from different "
                   f"runs: re-run python -m components.export)")


def card_difference(card: dict, metrics: dict) -> str:
    """How the card's figures differ from what evaluate recorded for its model, as text; "" when they agree. The
    accuracy is always compared; the test set's digest (``test.sha256``) and the model file's (``model_sha256``) where
    both record them (older cards and metrics do not, as ``test_difference`` treats older cards)."""
    model = card.get("model")
    pairs = (("metrics.accuracy", _field(card, "metrics", "accuracy"), _field(metrics, model, "accuracy"), True),
             ("test.sha256", _field(card, "test", "sha256"), _field(metrics, "test", "sha256"), False),
             ("model_sha256", card.get("model_sha256"), _field(metrics, model, "model_sha256"), False))
    return "; ".join(f"{what} {ours!r} where evaluate has {theirs!r}" for what, ours, theirs, always in pairs
                     if ours != theirs and (always or (ours is not None and theirs is not None)))


def _baseline_checks(config: GateConfig, evaluate: Path, metrics: dict, accuracy: float | None) -> list[Check]:
    """The comparison with the run's CE baseline at its best epoch, unless ``max_below_baseline`` is 1 (none)."""
    margin, base = config.max_below_baseline, baseline_accuracy(metrics)
    if margin >= 1.0:
        return []
    if base is None:
        raw = _baseline_value(metrics)
        found = "none" if raw is None else f"{raw!r}, not a finite number in [0, 1]"
        return [(False, f"the CE baseline's best-epoch accuracy: expected it in {evaluate / 'metrics.json'} "
                        f"(baseline_best_epoch) to compare with (gate.max_below_baseline {margin}; 1 turns the "
                        f"comparison off), found {found}")]
    if accuracy is None:
        return []
    above = at_least(accuracy, base - margin)
    return [(above, f"accuracy {accuracy:.4f}, required at least the CE baseline's best epoch {base:.4f} minus "
                    f"max_below_baseline {margin}{'' if above else _resolution(metrics)}")]


def _champion_checks(config: GateConfig, registry: Path, card: dict | None,
                     accuracy: float | None) -> tuple[list[Check], Champion | None]:
    """The checks against the champion of ``registry`` (none, one of another task or test set, or its accuracy
    minus ``max_regression``), and the champion; a broken registry fails, never skips the comparison."""
    try:
        champion = read_champion(registry)
    except ValueError as err:
        return [(False, str(err))], None
    if champion is None:
        return [(True, f"no champion yet in {registry}")], None
    where = f"the champion ({registry / 'latest'} -> {champion.version})"
    other_task = task_difference(card, champion.card) if card else ""
    other_test = test_difference(card, champion.card) if card else ""
    if other_task:  # its accuracy is on another test set, and serving the new model would change the task
        return [(False, f"{where} is a model of another task: {other_task}; a registry holds one task's releases: "
                        f"set gate.registry to this task's own")], champion
    if other_test and config.max_regression < 1.0:
        return [(False, f"{where} was scored on another test set ({other_test}), so the accuracies do not compare: "
                        f"score both on one test set, or set gate.max_regression to 1 to release without comparing "
                        f"with the champion")], champion
    if accuracy is None:
        return [], champion
    return [(at_least(accuracy, champion.accuracy - config.max_regression),
             f"accuracy {accuracy:.4f}, required at least the champion's {champion.accuracy:.4f} minus max_regression "
             f"{config.max_regression} (the champion: {registry / 'latest'} -> {champion.version})")], champion


def accuracy_kind(metrics: dict) -> str:
    """What evaluate's accuracy is: clean-test accuracy, unless its test labels are a user's as given."""
    test = metrics.get("test")
    clean = not (isinstance(test, dict) and test.get("clean") is False)
    return "clean-test accuracy" if clean else "test accuracy (labels as given, not clean)"


def label_warnings(metrics: dict) -> list[str]:
    """The reasons that warn without deciding: validation or test labels (evaluate's records) that are not clean."""
    warnings = []
    for name in ("validation", "test"):
        record = metrics.get(name)
        if isinstance(record, dict) and record.get("clean") is False:
            warnings.append(f"warning: {record.get('warning', f'the {name} labels are noisy')}")
    return warnings


def task_difference(card: dict, champion_card: dict | None) -> str:
    """What makes the model of ``card`` one of another task than the champion's (its class names, the input it
    takes, the output it gives), as text; "" when they are the same task (or the champion's card says nothing)."""
    if not isinstance(champion_card, dict):
        return ""
    found = []
    for what, keys in (("class names", ("class_names",)), ("input shape", ("input", "shape")),
                       ("output shape", ("output", "shape"))):
        ours, theirs = _field(card, *keys), _field(champion_card, *keys)
        if ours != theirs:
            found.append(f"{what} {_short(ours)} here, {_short(theirs)} in the champion")
    return "; ".join(found)


def test_difference(card: dict | None, champion_card: dict | None) -> str:
    """How the test set ``card``'s accuracy was measured on differs from the champion's (the ``test.sha256`` evaluate
    records), as text; "" when they are the same, or when either card predates the record."""
    ours, theirs = (_field(c, "test", "sha256") for c in (card, champion_card))
    if not (isinstance(ours, str) and isinstance(theirs, str) and ours and theirs) or ours == theirs:
        return ""
    return f"test sha256 {ours[:12]}... here, {theirs[:12]}... in the champion"


def _field(record, *keys: str):
    """``record[key][key]...``: None where a key is missing or a level is no JSON object (a damaged file)."""
    for key in keys:
        record = record.get(key) if isinstance(record, dict) else None
    return record


def _short(value, count: int = 4) -> str:
    """A list as its first ``count`` items and how many there are in all."""
    if isinstance(value, list) and len(value) > count:
        return f"[{', '.join(map(repr, value[:count]))}, ... ({len(value)} in all)]"
    return repr(value)


def at_least(accuracy: float, bound: float) -> bool:
    """Whether ``accuracy`` reaches ``bound`` (a bound computed by subtraction), up to ``TOLERANCE``."""
    return accuracy >= bound - TOLERANCE


def baseline_accuracy(metrics: dict) -> float | None:
    """The clean-test accuracy of the run's CE baseline at the epoch its validation picked (evaluate's
    ``baseline_best_epoch``; older metrics: ``baseline.best_epoch_accuracy``); None where it is no finite number in
    [0, 1]."""
    value = _baseline_value(metrics)
    return value if fraction(value) else None


def _baseline_value(metrics: dict):
    """The CE baseline's best-epoch accuracy as evaluate's metrics hold it, whatever it is; None where they do not."""
    value = _field(metrics, "baseline_best_epoch", "accuracy")
    return _field(metrics, "baseline", "best_epoch_accuracy") if value is None else value


class Champion(NamedTuple):
    """The release ``registry/latest`` points at: its version, clean-test accuracy and model card (read once)."""

    version: str
    accuracy: float
    card: dict


def _resolution(metrics: dict) -> str:
    """For a failed comparison: how much one test image weighs, where evaluate recorded the test set's size."""
    images = _field(metrics, "test", "images")
    if not isinstance(images, int) or images < 1:
        return ""
    return (f" (one of the {images} test images is {1 / images:.4f} of accuracy: a larger test split, more "
            "training, or a margin in params.yaml's gate section changes the verdict; docs/data.md)")


def read_champion(registry: Path) -> Champion | None:
    """The champion of ``registry`` (``registry/latest``, a link to a version folder), its ``version`` the name of the
    folder the link leads to, however the link names it (``vX``, ``./vX``, an absolute path); None before the first
    release. A ``latest`` whose card holds no accuracy, a finite number in [0, 1] (a dangling link, a damaged card),
    is a ``ValueError``, never "no champion", and so is a real folder with anything in it: no release could replace
    it with its link."""
    latest = registry / "latest"
    if (not latest.is_symlink() and not latest.exists()) or placeholder(latest):
        return None
    if not latest.is_symlink():
        raise ValueError(f"{latest}: expected a link to the champion's version folder, found a {_kind(latest)} "
                         f"(move it to a version folder, v<UTC time>Z-<8 hex digits>, and `ln -sfn <version> "
                         f"{latest}`)")
    card = _read(latest / "model_card.json")
    accuracy = _field(card, "metrics", "accuracy")
    if not fraction(accuracy):
        found = "none" if card is None else repr(accuracy)
        what = ", not a finite number in [0, 1]" if accuracy is not None else ""
        raise ValueError(f"champion {latest / 'model_card.json'}: expected a released model card with "
                         f"metrics.accuracy, found {found}{what} (point {latest} at a good release)")
    return Champion(latest.resolve().name, accuracy, card)


def _kind(path: Path) -> str:
    return "folder" if path.is_dir() else "file" if path.is_file() else "special file"


def placeholder(latest: Path) -> bool:
    """Whether ``latest`` is an empty real folder, no link: what the kubelet makes of a missing ``subPath`` when an
    InferenceService mounts ``pvc://<registry volume>/latest`` before the first release (docs/deploy.md). It holds
    no champion, and the first release replaces it with its link."""
    return latest.is_dir() and not latest.is_symlink() and not any(latest.iterdir())


@contextlib.contextmanager
def registry_lock(registry: Path, *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the registry's exclusive lock (``flock`` on ``registry/.lock``, created with the registry if need be):
    one gate at a time reads the champion, decides and promotes. The kernel drops the lock when its holder exits,
    killed or not, so a crash never leaves the registry locked."""
    if registry.exists() and not registry.is_dir():
        raise NotADirectoryError(f"{registry}: expected a registry folder, found a file")
    registry.mkdir(parents=True, exist_ok=True)
    with open(registry / LOCK, "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{registry / LOCK}: expected to take the registry's lock within {timeout:g} "
                                       f"s, found another gate holding it all that time") from None
                time.sleep(0.05)
        yield  # closing the file releases the lock


def promote(export: Path, decision: dict, registry: Path, *, evaluate: Path,
            now: dt.datetime | None = None) -> str:
    """Copy the model into ``registry/<version>/`` atomically and point ``registry/latest`` at it, under the
    registry's lock. The version is the UTC time and the model's hash: ``v20261126T145519Z-7fcff30e``.

    Only a ``decision`` that passed, and as a compare-and-swap on ``latest``: the champion must still be the one
    ``decision`` was judged against (its ``champion_version``), the copy the model it judged (its ``onnx_sha256``),
    and the copy, with ``evaluate``'s metrics, must pass again under the bounds ``decision`` records (as ``run``
    judges its staged copy: a card swapped since is judged, not released unseen); otherwise a ``ValueError`` and
    nothing is released. The release's ``decision.json`` is that last decision."""
    if decision.get("passed") is not True:
        raise ValueError(f"decision: expected a decision that passed, found passed {decision.get('passed')!r} "
                         f"({_failed(decision)}); nothing released")
    config = _judged_with(decision, registry)
    with registry_lock(registry):
        current = read_champion(registry)
        if (current and current.version) != decision.get("champion_version"):
            raise ValueError(f"{registry / 'latest'}: expected the champion the decision was judged against "
                             f"({decision.get('champion_version') or 'none'}), found "
                             f"{current.version if current else 'none'} (another gate promoted since): decide again; "
                             f"nothing released")
        with _staged(export, registry) as staging:
            digest = sha256_file(staging / "model.onnx")
            if digest != decision.get("onnx_sha256"):
                raise ValueError(f"{export / 'model.onnx'}: expected the model the gate judged (sha256 "
                                 f"{decision.get('onnx_sha256')}), found sha256 {digest}; nothing released")
            judged = decide(config, export=staging, evaluate=Path(evaluate), registry=registry)
            if not judged["passed"]:  # the reasons name the files copied from, not the staged copy that goes now
                raise ValueError(f"{export}: expected the release's files to pass the gate again under the registry's "
                                 f"lock, found: {_failed(judged).replace(str(staging), str(export))}; nothing "
                                 f"released")
            return _release(staging, judged, registry, now)


def _failed(decision: dict) -> str:
    """The fail reasons of ``decision``, as one line."""
    reasons = decision.get("reasons")
    fails = [r for r in reasons if isinstance(r, str) and r.startswith("fail: ")] if isinstance(reasons, list) else []
    return "; ".join(fails) or "no fail reason"


BOUNDS = ("min_accuracy", "max_below_baseline", "max_regression")  # what a decision records of its GateConfig


def _judged_with(decision: dict, registry: Path) -> GateConfig:
    """The gate's settings ``decision`` was judged with (its ``BOUNDS``), for ``registry``."""
    try:
        return GateConfig(**{name: decision[name] for name in BOUNDS}, registry=str(registry))
    except (KeyError, TypeError, ValueError) as err:
        found = {name: decision.get(name) for name in BOUNDS}
        raise ValueError(f"decision: expected the bounds it was judged with ({', '.join(BOUNDS)}: numbers in [0, 1]), "
                         f"found {found}; nothing released") from err


@contextlib.contextmanager
def _staged(export: Path, registry: Path) -> Iterator[Path]:
    """A copy of the release's files from ``export`` in the registry's staging folder (``_stage``), what a dead gate
    or prune left removed first; the caller holds the lock. The folder goes when the block ends, unless it became a
    version."""
    _drop_leftovers(registry)
    staging = _stage(export, registry)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once it became the version


def _judge_and_promote(config: GateConfig, export: Path, evaluate: Path, registry: Path) -> dict:
    """Under the registry's lock: copy the release's files into the staging folder, decide on that copy against
    the champion as it is now, and release the copy only if it passes and is not the champion already (the same
    ONNX bytes: a rerun of an unchanged pipeline, which ``dvc repro`` runs since the gate is always changed). The
    decision returned is this one, with ``version`` (the release serving the model) and ``released`` (whether this
    gate made it)."""
    with _staged(export, registry) as staging:
        decision = decide(config, export=staging, evaluate=evaluate, registry=registry)
        if decision["passed"]:  # decide read the champion under this lock: it is the champion now
            if decision["champion_onnx_sha256"] == decision["onnx_sha256"]:
                decision["reasons"].append(f"pass: the model is the champion already ({registry / 'latest'} -> "
                                           f"{decision['champion_version']}, the same ONNX sha256): nothing "
                                           f"released again")
                decision.update(version=decision["champion_version"], released=False)
            else:
                decision.update(version=_release(staging, decision, registry, None), released=True)
        return decision


def _drop_leftovers(registry: Path) -> None:
    """Remove what a gate or prune killed while it held the lock left in the registry: its staging folder
    (``.incoming.*``), a version it was removing (``.removing.*``) and its half-made ``latest`` link
    (``.latest.<pid>``). Only the lock's holder makes any of them, and the caller holds it now, so every one found
    is a dead gate's or prune's."""
    for leftover in (*registry.glob(".incoming.*"), *registry.glob(".removing.*")):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in registry.glob(".latest.*"):
        if leftover.is_symlink() or leftover.is_file():
            leftover.unlink(missing_ok=True)


VERSION = re.compile(r"v\d{8}T\d{6}Z-[0-9a-f]{8}")  # a release's folder name (``_version``)


def prune(registry: Path, keep: int) -> list[str]:
    """Remove every version of ``registry`` but the ``keep`` newest and the champion (``latest``'s), under the
    registry's lock; returns the versions removed, oldest first. Only folders named as versions (``VERSION``) are
    touched. Each is renamed to a hidden ``.removing.<version>`` before it is deleted, so a version half removed
    never looks like a release (the next gate or prune removes what a killed one left). A ``latest`` that does not
    lead to a release (``read_champion``'s ``ValueError``) removes nothing."""
    if keep < 1:
        raise ValueError(f"keep: expected at least 1 version kept, found {keep}")
    if not registry.is_dir():
        raise ValueError(f"{registry}: expected a registry folder, found {'a file' if registry.exists() else 'none'}")
    with registry_lock(registry):
        _drop_leftovers(registry)
        champion = read_champion(registry)  # the folder latest leads to, however the link names it (./v..., /abs)
        serving = {(registry / "latest").resolve().name} if champion else set()
        versions = sorted(p.name for p in registry.iterdir()
                          if VERSION.fullmatch(p.name) and p.is_dir() and not p.is_symlink())
        kept = set(versions[-keep:]) | serving
        removed = [v for v in versions if v not in kept]
        for version in removed:
            doomed = registry / f".removing.{version}"
            (registry / version).rename(doomed)
            shutil.rmtree(doomed)
    return removed


def _stage(export: Path, registry: Path) -> Path:
    """A hidden folder in the registry holding a copy of the release's files (``RELEASED``) from ``export``."""
    staging = Path(tempfile.mkdtemp(prefix=".incoming.", dir=registry))
    staging.chmod(0o755)
    try:
        for name in RELEASED:
            shutil.copy2(export / name, staging / name)
            fsync_file(staging / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _release(staging: Path, decision: dict, registry: Path, now: dt.datetime | None) -> str:
    """Make the staged copy the next version and point ``latest`` at it, each rename synced to disk; the caller
    holds the lock. Versions are named by the second and the model's hash, and sort in the order they were released
    (``prune`` keeps the newest by name): a release within the second of an earlier one (A, then B, then A again; or
    ``promote`` called twice) waits for the next second, whatever the hashes."""
    version = _version(now, decision["onnx_sha256"])
    while now is None and _same_second(registry, version):  # only the lock's holder makes versions: at most a second
        time.sleep(0.05)
        version = _version(None, decision["onnx_sha256"])
    if (registry / version).exists():
        raise FileExistsError(f"{registry / version}: expected a new version, found it exists (never overwritten)")
    write_json(staging / "decision.json", {**decision, "version": version, "released": True})
    staging.rename(registry / version)
    fsync_dir(registry)
    link = registry / f".latest.{os.getpid()}"
    link.unlink(missing_ok=True)
    link.symlink_to(version)
    if placeholder(registry / "latest"):
        (registry / "latest").rmdir()  # a link cannot replace a folder
    link.replace(registry / "latest")
    fsync_dir(registry)
    return version


def _same_second(registry: Path, version: str) -> bool:
    """Whether ``registry`` holds a version of ``version``'s second (whatever its hash)."""
    return any(VERSION.fullmatch(p.name) for p in registry.glob(f"{version.partition('-')[0]}-*"))


def _version(now: dt.datetime | None, onnx_sha256: str) -> str:
    """``v<UTC second>-<the first 8 hex digits of the model's sha256>``: ``v20261126T145519Z-7fcff30e``."""
    return f"v{(now or dt.datetime.now(dt.UTC)).strftime('%Y%m%dT%H%M%SZ')}-{onnx_sha256[:8]}"


@reports("gate", lambda decision: {} if decision.get("experiment") else {"gate_passed": decision["passed"]})
def run(config: GateConfig, *, export: Path = EXPORT_OUT, evaluate: Path = EVALUATE_OUT, out: Path = OUT) -> dict:
    """Reads ``model.onnx``, ``model_card.json`` and ``parity.json`` from ``export``, ``metrics.json`` from
    ``evaluate`` and the champion of ``config.registry``; decides (``decide``), and judges a pass again under the
    registry's lock on a staged copy, which alone is promoted (``<registry>/<version>/``, ``latest``), unless it is
    the champion already. Writes ``decision.json`` to ``out``, removing the previous one before it decides (a gate
    stopped before deciding leaves no old verdict for ``--check``); returns the decision (on a pass, with
    ``version``, the release serving the model, and ``released``, whether this gate made that version)."""
    registry, export, evaluate, experiment = _registry(config), Path(export), Path(evaluate), _experiment()
    prepare_output(out, step="gate")  # a folder that cannot take the decision fails now, before anything is released
    (Path(out) / "decision.json").unlink(missing_ok=True)  # a gate stopped before deciding leaves no old verdict
    decision = decide(config, export=export, evaluate=evaluate, registry=registry)
    if experiment:
        note = (f"warning: not released: DVC experiment {experiment} is judged, never released (`dvc exp apply "
                f"{experiment}`, then `dvc repro`, releases it)")
        decision = {**decision, "released": False, "experiment": experiment, "reasons": [*decision["reasons"], note]}
    elif decision["passed"]:  # judged again under the lock: another gate may have promoted since
        with registry_lock(registry):
            decision = _judge_and_promote(config, export, evaluate, registry)
    write_json(Path(out) / "decision.json", decision)
    return decision


def _experiment() -> str | None:
    """The name of the DVC experiment this gate runs in (``dvc exp run``), or None."""
    return os.environ.get(EXPERIMENT_ENV) or None


def _registry(config: GateConfig) -> Path:
    """``config.registry``; in a DVC experiment, a relative one is under the repository the experiment was started
    in (``DVC_ROOT``), where the champion is: a queued or ``--temp`` experiment runs in a copy without it."""
    registry, root = Path(config.registry), os.environ.get(ROOT_ENV)
    return Path(root) / registry if _experiment() and root and not registry.is_absolute() else registry


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _read(path: Path) -> dict | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_decision(folder: Path = OUT) -> dict:
    """The decision a gate wrote into ``folder`` (its ``decision.json``); a ``ValueError`` naming the file when it is
    missing, unreadable, or not a decision (a JSON object with a boolean ``passed`` and a list of ``reasons``)."""
    path = Path(folder) / "decision.json"
    decision = _read(path)
    if decision is not None and isinstance(decision.get("passed"), bool) and isinstance(decision.get("reasons"), list):
        return decision
    if decision is not None:
        found = f"passed {decision.get('passed')!r} and reasons {decision.get('reasons')!r}"
    else:
        found = "no such file" if not path.exists() else "a file that is unreadable or not a JSON object"
    raise ValueError(f"{path}: expected the gate's decision (a JSON object with a boolean passed and its reasons, "
                     f"written by `python -m components.gate`), found {found}")


def report(decision: dict) -> None:
    """Print the verdict of ``decision`` and every reason, one per line."""
    if not decision["passed"]:
        verdict = "not released"
    elif decision.get("experiment"):
        verdict = f"not released: DVC experiment {decision['experiment']}"
    elif decision.get("released") is False:
        verdict = f"the champion already ({decision.get('version')}): nothing released again"
    else:
        verdict = f"released as {decision.get('version')}"
    print(f"gate: {'PASS' if decision['passed'] else 'FAIL'}: {verdict}")
    for reason in decision["reasons"]:
        print(f"  {reason}")


def check_main(argv: list[str]) -> int:
    """``python -m components.gate --check [FOLDER] [--export DIR] [--evaluate DIR]``: print the decision already in
    ``FOLDER`` (default ``artifacts/gate``) and return 0 if it passed and is the current outputs' (``stale``: the
    export and evaluate folders the gate read, by default the step's), 1 if it failed, is stale or cannot be read;
    runs and writes nothing."""
    parser = argparse.ArgumentParser(prog="python -m components.gate",
                                     description="Print the decision a gate already wrote and exit 1 unless it "
                                                 "passed on the current export and evaluate outputs; runs no gate "
                                                 "and writes nothing.")
    parser.add_argument("--check", dest="folder", nargs="?", const=str(OUT), default=str(OUT), metavar="FOLDER",
                        help="the folder holding decision.json (default: %(const)s)")
    parser.add_argument("--export", default=str(EXPORT_OUT), metavar="DIR",
                        help="the export folder the gate read (default: %(default)s)")
    parser.add_argument("--evaluate", default=str(EVALUATE_OUT), metavar="DIR",
                        help="the evaluate folder the gate read (default: %(default)s)")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    try:
        decision = read_decision(folder)
        problems = stale(decision, export=Path(args.export), evaluate=Path(args.evaluate)) if decision["passed"] else []
        if problems:  # a failed decision fails anyway, and its reasons say more than how stale it is
            raise ValueError(f"{folder / 'decision.json'}: expected the decision of the current export and evaluate "
                             f"outputs, found a stale one (judged on other outputs: run the gate again, dvc repro): "
                             f"{'; '.join(problems)}")
    except ValueError as err:
        print(f"error: gate: {printable(err)}", file=sys.stderr)
        return 1
    report(decision)
    return 0 if decision["passed"] else 1


def stale(decision: dict, *, export: Path, evaluate: Path) -> list[str]:
    """How the outputs a gate read differ now from what ``decision`` records of them, one line each naming the file,
    the expected and the found: the sha256 of ``export``'s model.onnx (its ``onnx_sha256``) and evaluate's accuracy
    of its model (its ``accuracy``); empty when they agree. A ``dvc repro`` that failed before the gate stage leaves
    the previous run's decision beside outputs that have changed (export's removed, evaluate's re-run)."""
    problems, onnx_file, metrics_file = [], export / "model.onnx", evaluate / "metrics.json"
    onnx = _read_bytes(onnx_file)
    digest = hashlib.sha256(onnx).hexdigest() if onnx is not None else None
    if digest is None or digest != decision.get("onnx_sha256"):
        found = f"sha256 {digest}" if digest else "no such file" if not onnx_file.exists() else "an unreadable file"
        problems.append(f"{onnx_file}: expected sha256 {decision.get('onnx_sha256')} (the decision's onnx_sha256), "
                        f"found {found}")
    metrics, model = _read(metrics_file), decision.get("model")
    accuracy = _field(metrics, model, "accuracy") if isinstance(model, str) else None
    if accuracy is None or accuracy != decision.get("accuracy"):
        if metrics is None:
            found = "no such file" if not metrics_file.exists() else "a file that is unreadable or not a JSON object"
        else:
            found = "none" if accuracy is None else repr(accuracy)
        problems.append(f"{metrics_file}: expected {model}'s accuracy {decision.get('accuracy')!r} (the decision's "
                        f"accuracy), found {found}")
    return problems


def prune_main(argv: list[str]) -> int:
    """``python -m components.gate --prune KEEP [--registry DIR]``: ``prune``, printing each version removed;
    returns 0, 2 with one error line when the params file the registry comes from is not valid (as the step), or 1
    with one when the registry cannot be pruned."""
    parser = argparse.ArgumentParser(prog="python -m components.gate",
                                     description="Remove every release but the KEEP newest and the champion "
                                                 "(latest's) from the registry; trains and judges nothing.")
    parser.add_argument("--prune", dest="keep", type=int, required=True, metavar="KEEP",
                        help="how many of the newest versions to keep (at least 1; the champion is always kept)")
    parser.add_argument("--registry", default=None, metavar="DIR",
                        help="the registry folder (default: gate.registry of params.yaml; releases without one)")
    args = parser.parse_args(argv)
    try:
        registry = Path(args.registry or params_registry())
        removed = prune(registry, args.keep)
    except ConfigError as err:  # as the step's: 2 for the params file
        print(f"error: gate: {printable(err)}; or name the registry: --registry DIR", file=sys.stderr)
        return 2
    except (ValueError, OSError) as err:
        print(f"error: gate: {printable(err)}", file=sys.stderr)
        return 1
    for version in removed:
        print(f"gate: removed {registry / version}")
    print(f"gate: {len(removed)} version(s) removed from {registry}, the {args.keep} newest and the champion kept")
    return 0


def params_registry() -> str:
    """``gate.registry`` of ``params.yaml`` in the working folder, ``GateConfig``'s default where there is no such
    file: the registry the gate step releases into (``--prune``'s default; the release workflow restores the champion
    there and publishes from there). A params file that cannot be read, or whose ``gate`` section the gate step
    refuses (``registy: mine``, ``registry: ''``, ``registry: 5``), is the step's ``ConfigError``, never the default:
    it may name another registry, whose versions prune would remove."""
    if not Path("params.yaml").is_file():
        return GateConfig().registry
    return build(GateConfig, load_params("params.yaml").get("gate", {}), where="params.yaml: gate").registry


def main(argv: list[str] | None = None) -> int:
    """``python -m components.gate [--enforce]``: ``run`` with the ``gate`` section, printing the verdict and every
    reason; returns the step's exit code, or 1 for a fail when ``--enforce`` is given. ``--check [FOLDER]``:
    ``check_main`` (reads the decision, runs nothing). ``--prune KEEP``: ``prune_main`` (removes old releases)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg == "--check" or arg.startswith("--check=") for arg in args):
        return check_main(args)
    if any(arg == "--prune" or arg.startswith("--prune=") for arg in args):
        return prune_main(args)
    enforce = "--enforce" in args
    if enforce:
        args.remove("--enforce")
    outcome = {}

    def body(configs: dict) -> None:
        outcome.update(run(configs["gate"]))
        report(outcome)

    description = (__doc__.splitlines()[0] + " (--enforce: exit 1 on a fail; --check [FOLDER]: only read the "
                   "decision already written, exit 1 unless it passed on the current export and evaluate outputs; "
                   "--prune KEEP: remove all releases but the KEEP newest and the champion)")
    code = cli("gate", {"gate": GateConfig}, description, body)(args)
    if code == 0 and enforce and not outcome.get("passed"):
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
