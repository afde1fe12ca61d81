"""The EMA teacher of MLNT: an exponential moving average of the student's weights.

As in both reference codes (LiJunnan1992/MLNT, the CIFAR-10 re-implementation) and the mean teacher, only the
parameters are averaged; the teacher's buffers (batch-norm running statistics) are its own, updated by its own
forward passes in training mode (``teacher_probs``), so that they describe the activations of its own weights.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from model._checks import check_float


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` to be updated only by ``ema_update``."""
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """theta_teacher <- decay * theta_teacher + (1 - decay) * theta_student, in place, for the parameters.

    The teacher's buffers (batch-norm running statistics) are left alone: ``teacher_probs`` updates them.
    """
    decay = check_float("decay", decay, low=0.0, high=1.0)
    t_params, s_params = dict(teacher.named_parameters()), dict(student.named_parameters())
    t_buffers, s_buffers = dict(teacher.named_buffers()), dict(student.named_buffers())
    if t_params.keys() != s_params.keys() or t_buffers.keys() != s_buffers.keys():
        missing = sorted((s_params.keys() | s_buffers.keys()) ^ (t_params.keys() | t_buffers.keys()))
        raise ValueError(f"teacher: expected the student's parameters and buffers, found differences in {missing[:5]}")
    for name, t in t_params.items():
        t.lerp_(s_params[name].detach(), 1.0 - decay)


@torch.no_grad()
def teacher_probs(teacher: nn.Module, x: Tensor) -> Tensor:
    """The teacher's softmax probabilities ``[N, K]`` on ``x`` (float32), computed in training mode as both
    reference codes do (``tch_net.train()``): batch-norm layers normalise with the batch's statistics and update the
    teacher's own running statistics. The teacher's mode is restored afterwards. Without batch norm or dropout
    this is the eval-mode output."""
    was_training = teacher.training
    teacher.train()
    try:
        return torch.softmax(teacher(x).float(), dim=1)
    finally:
        teacher.train(was_training)


def has_running_statistics(net: nn.Module) -> bool:
    """Whether ``net`` holds buffers that its training-mode forward passes update (batch-norm running
    statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in net.modules())
