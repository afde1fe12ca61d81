"""The EMA teacher of MLNT: an exponential moving average of the student's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from model._checks import check_float


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` to be updated only by ``ema_update``."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """theta_teacher <- decay * theta_teacher + (1 - decay) * theta_student, in place.

    Buffers (batch-norm running statistics) are copied from the student, not averaged.
    """
    decay = check_float("decay", decay, low=0.0, high=1.0)
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_buffers, s_buffers = dict(teacher.named_buffers()), dict(student.named_buffers())
    if t_params.keys() != s_params.keys() or t_buffers.keys() != s_buffers.keys():
        missing = sorted((s_params.keys() | s_buffers.keys()) ^ (t_params.keys() | t_buffers.keys()))
        raise ValueError(f"teacher: expected the student's parameters and buffers, found differences in {missing[:5]}")
    for name, t in t_params.items():
        t.lerp_(s_params[name].detach(), 1.0 - decay)
    for name, t in t_buffers.items():
        t.copy_(s_buffers[name])
