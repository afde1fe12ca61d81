"""Data parallelism for the trainer over ``torch.distributed`` (one process per device, as ``torchrun`` starts).

Every process holds the same model and draws the same random numbers, so every process sees the same global
batch: the same data order, the same augmentation and the same synthetic label sets (the neighbour search
runs over the whole global batch). Each process then computes the losses on its own rows of that batch.

What makes MLNT exact under data parallelism is the inner step: the fast weights of label set m use the CE
gradient of the *global* batch, so the per-process inner gradients are averaged by a differentiable
all-reduce before the fast-weight passes (``Group.mean``, passed to ``model.mlnt`` as ``batch_mean``). Its
backward pass sums the incoming directions of every process, so the second-order term of each process
reaches every other one. The outer gradients are then averaged (``Group.average_gradients``), as DDP does.
With networks whose samples do not interact (no batch norm in training mode) the result equals one process
training on the global batch, up to floating-point summation order.

Batch norm, as under DDP with its default ``broadcast_buffers``: a training-mode pass normalises with the
statistics of this process's rows, and every process holds the main process's running statistics (student and
teacher). No training step's result depends on them; only eval-mode passes read them (validation, and the
mentor, a validated best model), so the trainer broadcasts them from the main process before each validation (the
last one ends the round) with ``Group.broadcast_buffers`` rather than after every step: the main process's
statistics, the ones it checkpoints, are the same either way, and the other processes' copies are overwritten
before anything reads them. In iterative training the mentor's keep mask is the main process's too
(``Group.from_main``), so every process trains the next round on the same samples and fails together when too few
are kept.

The module's ``DistributedDataParallel`` wrapper is not used: its gradient hooks do not support the
``torch.autograd.grad`` calls of the meta step, and the trainer needs one explicit average per step anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn


@dataclass(frozen=True)
class Group:
    """The data-parallel processes this one belongs to; ``Group()`` is a single process."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, artifacts and progress."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This process's rows of a global batch of ``batch_size`` samples."""
        if batch_size % self.world_size:
            raise ValueError(f"batch_size: expected a multiple of the {self.world_size} processes, "
                             f"found {batch_size}")
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def mean(self, value: Tensor) -> Tensor:
        """The mean of ``value`` over the processes, differentiable (its backward sums every process's
        incoming gradient). The identity for one process."""
        if not self.active:
            return value
        return dist_fn.all_reduce(value, op=dist.ReduceOp.SUM) / self.world_size

    def mean_item(self, value: Tensor) -> float:
        """The mean over the processes of a scalar, as a Python float (for logs and the NaN guard, so that
        every process stops together)."""
        value = value.detach().float().reshape(1).clone()
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value.item()

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Replace each ``.grad`` by its mean over the processes, in one all-reduce. A parameter without a
        gradient (frozen, or unused by the loss) keeps none, as in one process, so that the optimiser's weight
        decay and momentum leave it alone; every process runs the same graph, so all agree on which those are."""
        if not self.active:
            return
        params = [p for p in params if p.grad is not None]
        if not params:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        for p, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = chunk.view_as(p).clone()

    def gather_rows(self, value: Tensor) -> Tensor:
        """The global batch from every process's rows of it (``value`` holds this process's), in rank order;
        the identity for one process. For sources that load only their own rows (streamed shards)."""
        if not self.active:
            return value
        parts = [torch.empty_like(value) for _ in range(self.world_size)]
        dist.all_gather(parts, value.contiguous())
        return torch.cat(parts)

    def broadcast_state(self, net: nn.Module) -> None:
        """Make every process start from the main process's weights and buffers."""
        if self.active:
            for tensor in net.state_dict().values():
                dist.broadcast(tensor, src=0)

    @torch.no_grad()
    def broadcast_buffers(self, *nets: nn.Module) -> None:
        """Overwrite the buffers of ``nets`` (batch-norm running statistics and counters) with the main process's,
        one broadcast per dtype and device: what DDP's ``broadcast_buffers`` does before every forward pass. Nothing
        for one process."""
        if not self.active:
            return
        kinds: dict[tuple[torch.dtype, torch.device], list[Tensor]] = {}
        for net in nets:
            for buffer in net.buffers():
                kinds.setdefault((buffer.dtype, buffer.device), []).append(buffer)
        for buffers in kinds.values():  # the same order in every process: the same networks
            flat = torch.cat([b.reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            for b, chunk in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
                b.copy_(chunk.view_as(b))

    def from_main(self, value: Tensor, device: torch.device) -> Tensor:
        """The main process's ``value`` (same shape in every process), on ``value``'s device and dtype; sent
        through ``device`` (a CUDA device for ``nccl``), a bool tensor as uint8. ``value`` itself for one process."""
        if not self.active:
            return value
        sent = value.to(device=device, dtype=torch.uint8 if value.dtype == torch.bool else value.dtype, copy=True)
        dist.broadcast(sent, src=0)
        return sent.to(device=value.device, dtype=value.dtype)


def world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``), 1 without it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def from_environment(device_type: str = "cpu") -> Group:
    """The group ``torchrun`` (started by a Kubeflow TrainJob or PyTorchJob in a cluster) describes in
    ``WORLD_SIZE`` and ``RANK``, with the process group initialised (``nccl`` on CUDA, ``gloo`` on the CPU); one process
    when ``WORLD_SIZE`` is unset or 1."""
    processes = world_size()
    if processes <= 1:
        return Group()
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise RuntimeError(f"WORLD_SIZE={processes}: expected torchrun's environment, found no "
                               f"{', '.join(missing)}; start the step with torchrun")
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Group(rank=dist.get_rank(), world_size=dist.get_world_size())


def local_device(device: torch.device) -> torch.device:
    """The CUDA device of this process (``LOCAL_RANK``), or ``device`` unchanged."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device
