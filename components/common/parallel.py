"""The processes a training step runs in: those ``torchrun`` started, or this one alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch.distributed as dist

from model.distributed import Group, from_environment, world_size
from model.trainer import TrainConfig, pick_device


@contextmanager
def data_parallel(config: TrainConfig) -> Iterator[Group]:
    """The processes this training step runs in: those ``torchrun`` started (``WORLD_SIZE`` > 1; ``gloo``
    on the CPU, ``nccl`` on CUDA), else this one alone. Only the group's main process writes outputs. A global
    ``batch_size`` the processes cannot share is refused before they connect."""
    # checked before the process group starts: every process fails alike, none left waiting on a dead peer
    Group(world_size=max(world_size(), 1)).rows(config.batch_size)
    group = from_environment(pick_device(config.device).type)
    try:
        yield group
    finally:
        if group.active and dist.is_initialized():
            dist.destroy_process_group()
