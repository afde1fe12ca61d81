"""Schedules as pure functions of the optimisation step (MLNT steps 4 and 5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from model._checks import check_float, check_int


def rampup_weight(step: int, *, start: int, end: int, max_weight: float, origin: int | None = None) -> float:
    """The meta-loss weight w(t) = max_weight * exp(-5 (1 - u)^2), u = (step - origin) / (end - origin).

    0 before ``start``; ``max_weight`` from ``end`` on. ``origin`` (default ``start``) is where u counts from: the
    Clothing1M code ramps over iterations 500 -> 2000 from u = 0 at 500 (``origin = start``); the CIFAR-10
    re-implementation counts u from epoch 0 to epoch 20 and starts the meta loss after epoch 2 (``origin = 0``).
    With ``end == origin`` the weight jumps to ``max_weight`` at ``start``.
    """
    check_int("step", step, low=0)
    check_int("start", start, low=0)
    check_int("end", end, low=start)
    origin = start if origin is None else check_int("origin", origin, low=0, high=start)
    check_float("max_weight", max_weight, low=0.0)
    if step < start:
        return 0.0
    if step >= end:
        return float(max_weight)
    u = (step - origin) / (end - origin)
    return float(max_weight) * math.exp(-5.0 * (1.0 - u) ** 2)


def ema_decay(step: int, *, ramp_end: int, during_ramp: float = 0.99, after_ramp: float = 0.999) -> float:
    """The teacher's EMA decay gamma: ``during_ramp`` before ``ramp_end``, ``after_ramp`` from then on."""
    check_int("step", step, low=0)
    check_int("ramp_end", ramp_end, low=0)
    check_float("during_ramp", during_ramp, low=0.0, high=1.0)
    check_float("after_ramp", after_ramp, low=0.0, high=1.0)
    return float(during_ramp if step < ramp_end else after_ramp)


def teacher_start_share(step: int, *, start: int, ramp_end: int, during_ramp: float = 0.99,
                        after_ramp: float = 0.999) -> float:
    """The weight the EMA teacher still puts on the weights it was copied from at ``start``, after the updates
    of steps ``start .. step - 1`` (``ema_decay``'s schedule): ``during_ramp ** a * after_ramp ** b``.

    1 at ``start``; what is left of a warm start (or of the student at the end of the warm-up) in the teacher.
    """
    check_int("step", step, low=0)
    check_int("start", start, low=0)
    check_int("ramp_end", ramp_end, low=0)
    during = max(0, min(step, ramp_end) - start)
    after = max(0, step - max(ramp_end, start))
    return float(during_ramp) ** during * float(after_ramp) ** after


def lr_factor(step: int, *, milestones: Sequence[int] = (), gamma: float = 0.1) -> float:
    """The learning-rate multiplier: ``gamma ** (number of milestones <= step)`` (step decay)."""
    check_int("step", step, low=0)
    check_float("gamma", gamma, low=0.0)
    for i, m in enumerate(milestones):
        check_int(f"milestones[{i}]", m, low=0)
    return float(gamma) ** sum(step >= m for m in milestones)
