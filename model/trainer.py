"""One training loop for plain cross-entropy (the baseline) and MLNT.

The loop reads top to bottom in phases: fetch batch -> augment -> loss -> guard -> backward -> step ->
teacher (copied at the end of the warm-up, then EMA) -> log -> validate -> checkpoint. The data order of an epoch
is a pure function of ``(seed, epoch)``, a batch's augmentation of ``(seed, epoch, batch)``, and the meta step's
synthetic labels draw from one ``torch.Generator`` whose state is in the checkpoint, so a run resumed from a
checkpoint ends with the same weights as one that never stopped: bit for bit on the CPU with the same torch build,
the same ``torch.get_num_threads()`` and the same CPU kernels (CPU kernels split their sums by thread, and torch
picks them by the CPU's instruction set, so another thread count or CPU changes the last bits; the checkpoint
records both and a resume with another logs a warning). Nothing is promised bit
for bit on CUDA; a checkpoint written on CUDA and resumed on the CPU continues in float32 (``amp`` is CUDA only), the
same run in other arithmetic.

This module does no file I/O: checkpoints go through a ``CheckpointStore`` the caller passes in
(``components.common.checkpoints.FileCheckpointStore`` writes them atomically to disk).

Data parallelism (``torchrun``): pass a ``model.distributed.Group``. ``batch_size`` is then the global batch;
every process builds the same global batch and trains on its share of the rows (see ``model.distributed``); the
batch-norm running statistics and the mentor's keep mask are the main process's, broadcast to the others; only the
main process writes checkpoints and progress.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import numbers
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from model.distributed import Group, local_device
from model.ema import ema_update, has_running_statistics, make_teacher, teacher_probs
from model.graphed import GraphedExactStep
from model.mentor import consistency_target, mentor_keep_mask
from model.mlnt import MODES, Mode, mlnt_loss_with_logits
from model.neighbours import synthetic_labels
from model.progress import progress
from model.schedules import ema_decay, lr_factor, rampup_weight, teacher_start_share

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: the teacher starts at ramp_start; validations every eval_every steps
# The resume policy, one for the library and the pipeline steps (components.common.checkpoints names a run's checkpoint
# folder by every other field): a checkpoint resumes a run whose config differs from its own only in
# - RESULT_NEUTRAL fields, which cannot change the result, and
# - a larger ``epochs`` (single-round runs only: in iterative training a later round's mentor came from the shorter
#   round before it, so ``epochs`` is part of the run's identity in every round, round 0 included): every
#   schedule counts absolute epochs (milestones, ramp, EMA decay) and the data order is a function of the epoch,
#   so continuing a finished run is exactly the longer run. A run cannot be shortened past its checkpoint.
# ``device`` is neutral in what the run trains, not in its bits: ``amp`` autocasts to bfloat16 on CUDA only, so a CUDA
# checkpoint resumed on the CPU continues in float32 (and the reverse in bfloat16); such a resume is not bit-identical.
# Nor in its method under ``mode: auto``, which the checkpoint pins: a resumed run keeps the mode it started in.
RESULT_NEUTRAL = frozenset({"checkpoint_every", "device", "progress", "workers"})
RESUMABLE_CHANGES = RESULT_NEUTRAL | {"epochs"}
MODELS = ("student", "teacher")


@dataclass(frozen=True)
class TrainConfig:
    """Plain cross-entropy training (the baseline). ``epochs`` is a whole number; the other durations
    (``lr_milestones``, and MLNT's ``ramp_start`` and ``ramp_end``) are in epochs, fractions allowed."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_milestones: tuple[float, ...] = ()  # epochs at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1
    augment: bool = True  # random crop (zero padding) and horizontal flip
    crop_padding: int = 2
    grad_clip: float = 0.0  # max gradient norm; 0 turns clipping off
    seed: int = 0
    checkpoint_every: int = 100  # steps between checkpoints (and one at each epoch end); 0: epoch ends only
    eval_every: int = 0  # steps between validations (as well as at each epoch end); 0: epoch ends only
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA; ignored on the CPU
    progress: bool = True
    workers: int = 2  # DataLoader processes decoding a streamed (sharded) dataset; in-memory data ignores it

    method: ClassVar[str] = "ce"

    @property
    def round_count(self) -> int:
        """Rounds of training (``MlntConfig.rounds``; plain CE trains once)."""
        return 1

    def __post_init__(self) -> None:
        for setting in dataclasses.fields(self):  # a checkpoint holds the config, and must load without numpy's types
            object.__setattr__(self, setting.name, _plain(getattr(self, setting.name)))
        _one_of("device", self.device, ("auto", "cpu", "cuda"))
        for name in ("augment", "amp", "progress"):
            _flag(name, getattr(self, name))
        for name in ("epochs", "batch_size"):
            _whole(name, getattr(self, name), 1)
        for name in ("crop_padding", "checkpoint_every", "eval_every", "seed", "workers"):
            _whole(name, getattr(self, name), 0)
        for name in ("lr", "momentum", "weight_decay", "lr_gamma", "grad_clip"):
            _at_least(name, getattr(self, name), 0.0)
        for name, stops in (("lr", "never move"), ("lr_gamma", "stop moving at the first of lr_milestones")):
            if getattr(self, name) == 0:  # a run that trains for hours and learns nothing, without a word
                raise ValueError(f"{name}: expected a number above 0, found {getattr(self, name)!r}: the weights "
                                 f"would {stops}")
        if self.momentum >= 1.0:  # SGD's velocity would never decay: the run diverges
            raise ValueError(f"momentum: expected a number in [0, 1), found {self.momentum!r}")
        # torch seeds a generator with at most 2**64 - 1; in-memory data shuffles epoch e with seed * 100_003 + e
        seed_max = (2**64 - self.epochs) // 100_003  # well below 2**63 - 1
        if self.seed > seed_max:
            raise ValueError(f"seed: expected an integer in [0, {seed_max}] (torch seeds the epochs' shuffles with "
                             f"seed * 100003 + epoch, below 2**64), found {self.seed}")
        for i, epoch in enumerate(self.lr_milestones):
            _at_least(f"lr_milestones[{i}]", epoch, 0.0)
            if epoch >= self.epochs:
                raise ValueError(f"lr_milestones[{i}]: expected an epoch below epochs ({self.epochs}), found {epoch} "
                                 f"(the learning rate would never change there)")


@dataclass(frozen=True)
class MlntConfig(TrainConfig):
    """MLNT training: CE + w(t) * meta loss, with an EMA teacher; see ``model.mlnt`` for the modes.

    The published schedule: no meta loss and no teacher before ``ramp_start`` (the warm-up); at that step the
    teacher is copied from the student, and from then on the meta loss ramps up to ``meta_weight`` at
    ``ramp_end`` while the teacher follows the student with EMA decay ``ema_during_ramp``, then
    ``ema_after_ramp``. The ramp's u counts from ``ramp_start`` (``ramp_from: start``, the Clothing1M code) or from
    epoch 0 (``ramp_from: zero``, the CIFAR-10 re-implementation: "during the first 20 epochs", u = epoch / 20 in
    its 1-based epochs). The Clothing1M
    code's first meta step is one iteration later (``batch_idx > start_iter``): at ``ramp_start`` itself it takes
    a plain CE step where this takes the meta loss at ``meta_weight * exp(-5)``; later steps agree. ``meta_weight``
    is in the reference codes' units (``model.mlnt``). The model kept is the better of student and teacher on the
    validation set, at any validation (every ``eval_every`` steps and each epoch end). ``meta_weight = 0`` trains
    the same EMA teacher on plain CE: the control that isolates meta-learning.
    """

    mode: Literal["auto", "exact", "first_order", "head"] = "auto"  # auto: exact on CUDA, head on the CPU
    graph: bool = False  # exact mode: the step a CUDA graph on CUDA, in float32 (model.graphed)
    amp_meta: bool = False  # amp's bfloat16 autocast over the exact and first-order meta steps too (see _loss)
    num_sets: int = 10  # M synthetic label sets per batch
    fraction: float = 0.5  # rho: share of each batch resampled from neighbours
    neighbours: int = 10  # k nearest neighbours in feature space
    inner_lr: float = 0.2  # alpha of the fast-weight update
    meta_weight: float = 0.4  # w_max, in the reference codes' units (CIFAR-10 0.4, Clothing1M 1)
    ramp_start: float = 0.0  # epochs of warm-up: meta loss and teacher start here
    ramp_end: float = 7.0  # epochs
    ramp_from: Literal["start", "zero"] = "start"  # where the ramp's u counts from: ramp_start or epoch 0
    ema_during_ramp: float = 0.99
    ema_after_ramp: float = 0.999
    rounds: int = 1  # iterative training: each round after the first has the previous best teacher as mentor
    mentor_top_k: int = 1  # keep a sample if its label is among the mentor's top-k predictions
    mentor_blend: float = 0.5  # weight of the mentor in the consistency target
    method: ClassVar[str] = "mlnt"

    @property
    def round_count(self) -> int:
        return self.rounds

    def _check_graph(self) -> None:
        for name in ("graph", "amp_meta"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"{name}: expected true or false, found {value!r}")
        if self.graph and self.mode not in ("auto", "exact"):
            raise ValueError(f"graph: expected mode exact or auto with graph: true (the graphed step is the exact "
                             f"step), found mode {self.mode}")

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("mode", self.mode, ("auto", *MODES))
        self._check_graph()
        _one_of("ramp_from", self.ramp_from, ("start", "zero"))
        for name in ("num_sets", "neighbours", "rounds", "mentor_top_k"):
            _whole(name, getattr(self, name), 1)
        for name in ("inner_lr", "meta_weight", "ramp_start", "ramp_end"):
            _at_least(name, getattr(self, name), 0.0)
        for name in ("fraction", "ema_during_ramp", "ema_after_ramp", "mentor_blend"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], found {value!r}")
        if int(self.fraction * self.batch_size) < 1:  # as ``synthetic_labels`` counts the labels it resamples
            raise ValueError(f"fraction: expected at least 1/batch_size ({1 / self.batch_size:.6g}), so that each "
                             f"synthetic set resamples int(fraction * batch_size) >= 1 labels, found {self.fraction}: "
                             f"no synthetic label would differ from the given ones")
        if self.ramp_end < self.ramp_start:
            raise ValueError(f"ramp_end: expected >= ramp_start ({self.ramp_start}), found {self.ramp_end}")
        if self.ramp_start >= self.epochs:
            raise ValueError(f"ramp_start: expected an epoch below epochs ({self.epochs}), found {self.ramp_start}: "
                             f"the meta loss and the EMA teacher start there, so the run would train plain CE")
        if self.neighbours >= self.batch_size:
            raise ValueError(f"neighbours: expected fewer than batch_size ({self.batch_size}), found {self.neighbours}")
        if self.rounds > 1:  # a later round's epoch may be one step (the mentor keeps batch_size samples at least)
            for name, epoch in [("ramp_start", self.ramp_start), *((f"lr_milestones[{i}]", e)
                                                                  for i, e in enumerate(self.lr_milestones))]:
                if epoch >= self.epochs - 0.5:
                    raise ValueError(f"{name}: expected an epoch below epochs - 0.5 ({self.epochs - 0.5}) with rounds "
                                     f"> 1, found {epoch}: a later round, on the samples its mentor keeps, may have "
                                     f"one step an epoch, and would round it to the end of the run")


@dataclass
class Data:
    """Training or evaluation data in memory: normalised float images ``[N, C, H, W]``, int64 labels ``[N]``.

    One of the two kinds of ``Source`` (``components.common.streaming.ShardSource`` streams the other from shards)."""

    images: Tensor
    labels: Tensor
    loads_rows: ClassVar[bool] = False  # every process builds the whole global batch
    augments: ClassVar[bool] = False  # the loop augments (``augment``) when the config asks for it

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or not self.images.is_floating_point():
            raise ValueError(f"images: expected a float tensor [N, C, H, W], found {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != torch.int64:
            raise ValueError(f"labels: expected int64 [{self.images.shape[0]}] (one per image), found "
                             f"{self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, keep: Tensor) -> Data:
        return Data(self.images[keep], self.labels[keep])

    def batches(self, epoch: int, *, first: int, batch_size: int, seed: int, rows: slice | None = None,
                generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
        """The global batches ``first, first + 1, ...`` of ``epoch``: a permutation drawn from ``(seed, epoch)``
        cut into ``len // batch_size`` batches (the rest of the epoch is dropped)."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        for b in range(first, len(self) // batch_size):
            idx = order[b * batch_size:(b + 1) * batch_size]
            yield self.images[idx], self.labels[idx]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        for i in range(0, len(self), batch_size):
            yield self.images[i:i + batch_size], self.labels[i:i + batch_size]

    def epoch_stats(self) -> dict[str, float]:
        return {}


class Source(Protocol):
    """What the loop trains on and validates with: ``Data`` in memory, or batches streamed from storage.

    ``batches`` yields the global batches of an epoch from batch ``first`` on, the same in every process and on
    every rerun; a source with ``loads_rows`` yields only this process's ``rows`` of each, and the loop gathers
    the rest from the other processes. A source that ``augments`` does its own augmentation.
    ``eval_batches`` yields every sample once, in order, without augmentation."""

    labels: Tensor
    loads_rows: bool
    augments: bool

    def __len__(self) -> int: ...

    def subset(self, keep: Tensor) -> Source: ...

    def batches(self, epoch: int, *, first: int, batch_size: int, seed: int, rows: slice,
                generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]: ...

    def eval_batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]: ...

    def epoch_stats(self) -> dict[str, float]: ...


class CheckpointStore(Protocol):
    """Where checkpoints live. ``load`` returns None when there is none under ``key``."""

    location: str

    def save(self, key: str, state: dict[str, Any]) -> None: ...

    def load(self, key: str) -> dict[str, Any] | None: ...


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    student: nn.Module
    teacher: nn.Module | None
    best_model: str  # "student" or "teacher": which one ``best_state`` holds
    best_state: dict[str, Tensor]
    best_epoch: int  # the epoch (1-based) during or at the end of which ``best_state`` was validated
    history: list[dict[str, float]] = field(default_factory=list)  # of the last round, one record per epoch
    best_step: int = 0
    best_score: float = float("nan")  # its validation accuracy (nan without validation data)
    evaluations: list[dict[str, float]] = field(default_factory=list)  # every validation of the last round
    steps: int = 0
    earlier_rounds: list[TrainResult] = field(default_factory=list)  # iterative training: rounds before the last
    mode: str | None = None  # MLNT's meta step as run (``mode: auto`` resolved on the device); None for CE


def resolve_mode(requested: str, device: torch.device) -> Mode:
    """The meta step's mode on ``device``: ``auto`` is ``exact`` (the published second-order step) on CUDA and
    ``head`` (the closed-form step on the classifier head, about a CE step's cost) on the CPU."""
    if requested != "auto":
        return typing.cast(Mode, requested)
    return "exact" if device.type == "cuda" else "head"


def pick_device(requested: str) -> torch.device:
    """The device ``requested`` names: ``auto`` is CUDA where torch sees a GPU, else the CPU; ``cuda`` without
    one is a ``RuntimeError`` saying why torch may not see it (the CUDA it was built for needs a recent driver)."""
    if requested == "cuda" and not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise RuntimeError(f"device: expected a CUDA device for 'cuda', found none (torch {torch.__version__}, "
                           f"{built}: on a GPU node, check that nvidia-smi lists the GPU and that its driver "
                           f"supports that CUDA, docs/deploy.md step 1); on a machine without a GPU, use 'auto' "
                           f"or 'cpu'")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def train(config: TrainConfig, net: nn.Module, train_data: Source, *, val_data: Source | None = None,
          feature_net: nn.Module | None = None, store: CheckpointStore | None = None,
          on_epoch_end: Callable[[dict[str, float]], None] | None = None,
          group: Group | None = None,
          on_validation: Callable[[list[dict[str, float]], list[dict[str, float]]], None] | None = None,
          ) -> TrainResult:
    """Train ``net`` in place: plain CE for a ``TrainConfig``, MLNT for an ``MlntConfig`` (iteratively when
    ``config.rounds > 1``).

    ``feature_net`` gives the features for the neighbour search (MLNT); by default a frozen copy of ``net``
    as it is at the start (the CE-trained warm start in the pipeline). ``val_data`` picks the best epoch.
    Each round resumes from ``store`` when it holds that round's checkpoint. ``group``: the data-parallel
    processes this one trains with (default: this process alone). ``on_validation(history, evaluations)`` is
    called in the main process after every validation with the round's epoch records and validations so far
    (those a resumed run restored from its checkpoint included), for curves that follow the run live.
    """
    group = group or Group()
    group.rows(config.batch_size)  # fails early unless the global batch splits evenly over the processes
    if val_data is not None and len(val_data) == 0:
        raise ValueError("val_data: expected at least one sample (the best model is picked on it), found 0")
    device = local_device(pick_device(config.device)) if group.active else pick_device(config.device)
    initial = _initial_state(net, store if group.is_main else None, store)
    net.load_state_dict(initial)
    net.to(device)
    group.broadcast_state(net)
    if group.active:  # later rounds restart every process from the main process's weights, as the first did
        initial = _cpu_state(net)
    feature_net = _frozen(feature_net if feature_net is not None else net, device)
    _check_mentor_top_k(config, net, train_data, device)
    with torch.random.fork_rng(devices=_cuda_indices(device)):
        return _train_rounds(config, net, train_data, initial, val_data=val_data, feature_net=feature_net, store=store,
                             device=device, group=group, on_epoch_end=on_epoch_end, on_validation=on_validation)


def _train_rounds(config: TrainConfig, net: nn.Module, train_data: Source, initial: dict[str, Tensor], *,
                  device: torch.device, group: Group, **loop_args: Any) -> TrainResult:
    """``train``'s rounds, each from ``initial``, a later one on the samples the previous round's best model keeps.
    torch's global random generator (dropout, a user's network) starts each round from the round's own seed
    (``global_seed``), or the state its checkpoint saved: a run killed before its first checkpoint restarts with the
    same draws, whatever the caller's generator; ``train`` restores the caller's afterwards."""
    mentor = None
    rounds = config.round_count
    earlier: list[TrainResult] = []
    for round_ in range(rounds):
        data = train_data
        if mentor is not None:
            net.load_state_dict(initial)
            keep = mentor_keep_mask(predict(mentor, train_data, device=device), train_data.labels,
                                    top_k=config.mentor_top_k)
            keep = group.from_main(keep, device)  # every process trains on the same samples, and fails together
            if int(keep.sum()) < config.batch_size:
                raise ValueError(f"round {round_ + 1}: the mentor kept {int(keep.sum())} of {len(train_data)} "
                                 f"samples, expected at least batch_size ({config.batch_size}); train the first "
                                 "round longer or raise mentor_top_k")
            data = train_data.subset(keep.cpu())
        _seed_global(global_seed(config.seed, round_), device)  # replaced by a checkpoint's state on resume
        result = _Loop(config, net, data, mentor=mentor, key=f"round{round_}", device=device, group=group,
                       **loop_args).run()
        if round_ + 1 < rounds:  # the next round retrains ``net``: keep this round's weights apart
            earlier.append(dataclasses.replace(result, student=copy.deepcopy(result.student)))
            mentor = _frozen(result.student, device)
            mentor.load_state_dict(result.best_state)
    result.earlier_rounds = earlier
    return result


def _cuda_indices(device: torch.device) -> list[int]:
    """The CUDA device whose generator the run uses besides the CPU's (``fork_rng`` forks it, each round seeds it, a
    checkpoint keeps it): ``device``'s, if it is one."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed torch's global generators that ``train`` forks: the CPU's and ``device``'s CUDA one. Not
    ``torch.manual_seed``, which reseeds every visible GPU's: the caller's on GPUs this process does not train on."""
    torch.default_generator.manual_seed(seed)
    for index in _cuda_indices(device):  # CUDA is initialised: the network was moved to ``device``
        torch.cuda.default_generators[index].manual_seed(seed)


def _cuda_rng_state(device: torch.device) -> Tensor | None:
    """The CUDA generator state a checkpoint keeps: ``device``'s alone (None on the CPU), so that it resumes on a
    host that sees another number of GPUs."""
    indices = _cuda_indices(device)
    return torch.cuda.get_rng_state(indices[0]) if indices else None


def _restore_cuda_rng(saved: Tensor | list[Tensor] | None, device: torch.device) -> None:
    """Give ``device``'s CUDA generator the state a checkpoint saved (``_cuda_rng_state``); nothing on the CPU or when
    the checkpoint has none. An older checkpoint holds a list, one state per GPU its writer saw: the training device's
    entry is taken, and none where the list is shorter (its writer saw fewer GPUs)."""
    indices = _cuda_indices(device)
    if isinstance(saved, list | tuple):
        saved = saved[indices[0]] if indices and indices[0] < len(saved) else None
    if indices and saved is not None:
        torch.cuda.set_rng_state(saved, indices[0])


def global_seed(seed: int, round_: int) -> int:
    """The seed of torch's global generator in round ``round_`` (0-based) of a run of ``seed``."""
    return int(np.random.SeedSequence([seed, round_, 1]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _check_mentor_top_k(config: TrainConfig, net: nn.Module, data: Source, device: torch.device) -> None:
    """Before round 1 trains, a ``ValueError`` when later rounds' ``mentor_top_k`` exceeds the network's classes
    (counted by one eval-mode pass over the first sample), rather than after it."""
    if config.round_count == 1:
        return
    images, _ = next(iter(data.eval_batches(1)))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            classes = net(images.to(device)).shape[1]
    finally:
        net.train(was_training)
    if config.mentor_top_k > classes:
        raise ValueError(f"mentor_top_k: expected at most the network's {classes} classes (later rounds keep a sample "
                         f"whose label is among the mentor's top k), found {config.mentor_top_k}")


@torch.no_grad()
def predict(net: nn.Module, data: Tensor | Source, *, batch_size: int = 512,
            device: torch.device | None = None, desc: str | None = None) -> Tensor:
    """Softmax probabilities ``[N, K]`` of ``net`` in eval mode (restored afterwards), on the CPU, for images
    ``[N, C, H, W]`` or every sample of a ``Source`` in order; ``desc`` shows the progress under that name."""
    device = device or next(net.parameters()).device
    n = data.shape[0] if isinstance(data, Tensor) else len(data)
    batches = ((data[i:i + batch_size], None) for i in range(0, n, batch_size)) \
        if isinstance(data, Tensor) else data.eval_batches(batch_size)
    batches = progress(batches, desc=desc or "", total=-(-n // batch_size), unit="batches", disable=desc is None)
    was_training = net.training
    net.eval()
    try:
        out = [torch.softmax(net(x.to(device)).float(), dim=1).cpu() for x, _ in batches]
    finally:
        net.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def accuracy(net: nn.Module, data: Source, *, device: torch.device | None = None) -> float:
    return (predict(net, data, device=device).argmax(1) == data.labels).float().mean().item()


def augment_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    """The random crops and flips of one global batch come from ``(seed, epoch, batch)`` alone, never from the
    generator the meta step's synthetic labels draw from: MLNT and its control (``meta_weight 0``) see the same
    augmented images, and a resumed run the same as one that never stopped."""
    state = np.random.SeedSequence([seed, epoch, batch]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


def augment(x: Tensor, generator: torch.Generator, *, padding: int) -> Tensor:
    """Random crop after zero padding by ``padding`` pixels, and a random horizontal flip, per sample."""
    n, _, h, w = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    padded = F.pad(x, (padding,) * 4)
    rows = (offsets[0][:, None] + torch.arange(h))[:, :, None].to(x.device)
    cols = offsets[1][:, None] + torch.arange(w)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, :].to(x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()


@dataclass
class Best:
    """The best model validated so far in a round: which one, when, its validation accuracy and its weights."""

    model: str  # "student" or "teacher"
    epoch: int  # 1-based: the epoch during or at the end of which it was validated
    step: int
    score: float
    state: dict[str, Tensor]


@dataclass
class LoopState:
    """A round's progress besides the weights, the optimiser and the random state; a checkpoint holds it (in the
    checkpoint's flat layout: ``as_checkpoint`` and ``from_checkpoint`` are the one mapping)."""

    step: int = 0  # optimiser steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # one record per finished epoch
    evaluations: list[dict[str, float]] = field(default_factory=list)  # every validation
    best: Best | None = None
    loss_sum: float = 0.0  # the batch losses of the current epoch so far, for its mean
    loss_count: int = 0

    def as_checkpoint(self) -> dict[str, Any]:
        best = None if self.best is None else {"model": self.best.model, "epoch": self.best.epoch,
                                                "step": self.best.step, "score": self.best.score,
                                                "state": self.best.state}
        return {"step": self.step, "history": self.history, "best": best,
                "epoch_loss": [self.loss_sum, self.loss_count], "evaluations": self.evaluations}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> LoopState:
        best = state["best"]
        loss_sum, loss_count = state["epoch_loss"]
        return cls(step=state["step"], history=state["history"], evaluations=state["evaluations"],
                   best=None if best is None else Best(**best), loss_sum=loss_sum, loss_count=loss_count)


class _Loop:
    """One round of training: its state (``LoopState``, the weights, the optimiser and the random generators,
    all in its checkpoint) and the loop over it."""

    def __init__(self, config: TrainConfig, net: nn.Module, data: Source, *, val_data: Source | None,
                 feature_net: nn.Module, mentor: nn.Module | None, store: CheckpointStore | None, key: str,
                 device: torch.device, group: Group,
                 on_epoch_end: Callable[[dict[str, float]], None] | None = None,
                 on_validation: Callable[[list[dict[str, float]], list[dict[str, float]]], None] | None = None):
        self.cfg, self.net, self.data, self.val = config, net, data, val_data
        self.feature_net, self.mentor, self.store, self.key = feature_net, mentor, store, key
        self.device, self.on_epoch_end, self.group = device, on_epoch_end, group
        self.on_validation = on_validation
        self.rows = group.rows(config.batch_size)  # this process's share of each global batch
        self.verbose = config.progress and group.is_main
        self.steps_per_epoch = len(data) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(f"batch_size: expected at most the number of training samples ({len(data)}), "
                             f"found {config.batch_size}")
        self.method = config.method
        self.teacher = make_teacher(net) if self.method == "mlnt" else None
        self.mode = resolve_mode(config.mode, device) if self.method == "mlnt" else None
        self.graphed = self._graphed_step(config, net, group)
        if self.method == "mlnt" and config.mode == "auto" and group.is_main and mentor is None:
            log.info("mode auto: %s on %s%s", self.mode, device.type, " (graphed)" if self.graphed else "")
        # a teacher with batch norm updates its own running statistics by a training-mode forward pass at every step
        # once it has started, as in the reference code (where the target's forward pass does it)
        self.teacher_statistics = self.teacher is not None and has_running_statistics(self.teacher)
        self.optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        milestones = [round(e * self.steps_per_epoch) for e in config.lr_milestones]
        self._within_the_run("lr_milestones", config.lr_milestones, milestones, "the learning rate would never change")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, milestones=milestones, gamma=config.lr_gamma))
        if self.method == "mlnt":
            self.ramp = (round(config.ramp_start * self.steps_per_epoch), round(config.ramp_end * self.steps_per_epoch))
            self._within_the_run("ramp_start", [config.ramp_start], self.ramp[:1],
                                 "the meta loss and the EMA teacher would never start: plain CE")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.state = LoopState()
        self.autocast = config.amp and device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.last_checkpoint: str | None = None

    # --- the loop -------------------------------------------------------------------------------------------

    def _within_the_run(self, name: str, epochs: list[float], steps: list[int], otherwise: str) -> None:
        """A ``ValueError`` unless each of ``epochs`` (a setting's epochs, at ``steps`` once rounded to this round's
        steps) falls on a step of the run: the settings' check that they are below ``epochs`` passes a value a
        fraction of a step short of the end, which rounds to the end."""
        total = self.cfg.epochs * self.steps_per_epoch
        for epoch, step in zip(epochs, steps, strict=True):
            if step >= total:
                raise ValueError(f"{name}: expected an epoch that rounds to a step before the end of the run (at "
                                 f"most step {total - 1} of {self.cfg.epochs} epochs of {self.steps_per_epoch} "
                                 f"steps), found {epoch}, step {step}: {otherwise}")

    def run(self) -> TrainResult:
        self._resume()
        self._start_teacher()
        self.net.train()
        total = self.cfg.epochs * self.steps_per_epoch
        state = self.state
        while state.step < total:
            epoch, first = divmod(state.step, self.steps_per_epoch)
            bar = progress(self._batches(epoch, first), total=self.steps_per_epoch - first, unit="steps",
                           desc=f"{self.method} {self.key} epoch {epoch + 1}/{self.cfg.epochs}",
                           disable=not self.verbose)
            started, seen = time.perf_counter(), 0
            if first == 0:
                state.loss_sum, state.loss_count = 0.0, 0
            for b, (x, y) in enumerate(bar, start=first):
                # loss
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    loss, logits = self._loss(x, y)
                # guard: stop before a NaN/Inf reaches the weights (every process at once)
                value = self.group.mean_item(loss)
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"loss is {value} at step {state.step + 1} (epoch {epoch + 1}); "
                                             f"last good checkpoint: {self._checkpoint_name()}")
                # backward and step
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.group.average_gradients(list(self.net.parameters()))
                if self.cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
                lr = self.optimizer.param_groups[0]["lr"]  # this step's, before the schedule moves it on
                self.optimizer.step()
                self.scheduler.step()
                # teacher
                if self._teacher_started():
                    ema_update(self.teacher, self.net, ema_decay(state.step, ramp_end=self.ramp[1],
                                                                 during_ramp=self.cfg.ema_during_ramp,
                                                                 after_ramp=self.cfg.ema_after_ramp))
                state.step += 1
                self._start_teacher()
                # log
                seen += y.shape[0]
                state.loss_sum, state.loss_count = state.loss_sum + value, state.loss_count + 1
                bar.set_postfix(loss=f"{value:.3f}", acc=f"{(logits.argmax(1) == y[self.rows]).float().mean():.3f}",
                                samples_s=f"{seen / (time.perf_counter() - started):.0f}")
                del loss, logits  # no autograd graph outlives its step: a CUDA graph's capture (model.graphed)
                # validate and checkpoint (both also at the epoch end, by _end_epoch)
                at_epoch_end = b + 1 == self.steps_per_epoch
                if self.cfg.eval_every and state.step % self.cfg.eval_every == 0 and not at_epoch_end:
                    self._evaluate(epoch)
                    self._report()
                if self.cfg.checkpoint_every and state.step % self.cfg.checkpoint_every == 0 and not at_epoch_end:
                    self._save()
            bar.close()
            self._end_epoch(epoch, seen / max(time.perf_counter() - started, 1e-9), lr)
        return self._result()

    def _batches(self, epoch: int, first: int) -> Iterator[tuple[Tensor, Tensor]]:
        """fetch batch: the global batches of ``epoch`` from ``first`` on, on the device, augmented (every process
        draws the same augmentation)."""
        batches = self.data.batches(epoch, first=first, batch_size=self.cfg.batch_size, seed=self.cfg.seed,
                                    rows=self.rows, generator=self.generator)
        for b, (images, labels) in enumerate(batches, start=first):
            x, y = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            if self.data.loads_rows:
                x, y = self.group.gather_rows(x), self.group.gather_rows(y)
            if self.cfg.augment and not self.data.augments:
                x = augment(x, augment_generator(self.cfg.seed, epoch, b), padding=self.cfg.crop_padding)
            yield x, y

    def _meta_weight(self) -> float:
        """w(t) of this step. ``ramp_from: zero`` counts u as the CIFAR-10 re-implementation does, in its 1-based
        epochs (u = epoch / 20 through epoch 1-based ``epoch``): one epoch ahead of the 0-based step count, so that
        the weight at each epoch's first step is the code's for that epoch and reaches ``meta_weight`` in the same
        epoch (counted from step 0, it lagged a whole epoch behind the code's at every step)."""
        if self.teacher is None:
            return 0.0
        if self.cfg.ramp_from == "start":
            return rampup_weight(self.state.step, start=self.ramp[0], end=self.ramp[1], max_weight=self.cfg.meta_weight)
        ahead, (start, end) = self.steps_per_epoch, self.ramp
        return rampup_weight(self.state.step + ahead, start=start + ahead, end=max(end, start + ahead),
                             max_weight=self.cfg.meta_weight, origin=0)

    def _loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The loss on this process's rows of the global batch ``x, y``, and their logits."""
        rows = self.rows
        weight = self._meta_weight()
        if weight == 0.0:
            if self._teacher_started() and self.teacher_statistics:  # the control: the same teacher statistics
                teacher_probs(self.teacher, x[rows])
            logits = self.net(x[rows])
            return F.cross_entropy(logits, y[rows]), logits
        with torch.no_grad():  # the neighbour search runs over the global batch
            features = self.feature_net.features(x).float()
            synth = synthetic_labels(features, y, num_sets=self.cfg.num_sets, fraction=self.cfg.fraction,
                                     neighbours=self.cfg.neighbours, generator=self.generator)[:, rows]
            target = teacher_probs(self.teacher, x[rows])
            mentor = _eval_probs(self.mentor, x[rows]) if self.mentor is not None else None
            target = consistency_target(target, mentor, blend=self.cfg.mentor_blend)
        if self.graphed is not None:
            return self.graphed(x[rows], y[rows], synth, target.float(), weight)
        # bfloat16 autocast stops at the weight-space meta steps (exact, first_order) unless amp_meta: gpu-check
        # measured exact's gradient under it far from float32's (docs/benchmarks.md, GPU), so both run in float32
        # (TF32 as torch's settings allow); the head step, the warm-up's CE steps, the teacher and the neighbour
        # search keep it
        full = self.autocast and self.mode != "head" and not self.cfg.amp_meta
        with torch.autocast(self.device.type, enabled=False) if full else contextlib.nullcontext():
            return mlnt_loss_with_logits(self.net, x[rows], y[rows], synth, target.float() if full else target,
                                         inner_lr=self.cfg.inner_lr, meta_weight=weight, mode=self.mode,
                                         batch_mean=self.group.mean if self.group.active else None)

    def _graphed_step(self, config: TrainConfig, net: nn.Module, group: Group) -> GraphedExactStep | None:
        """The graphed exact step where ``graph: true`` and the mode is exact (``model.graphed``), else None."""
        if not getattr(config, "graph", False) or self.mode != "exact":
            return None
        if group.active:
            raise ValueError(f"graph: expected a single process (the graphed step averages no inner gradients over "
                             f"processes), found {group.world_size} processes: set graph: false")
        return GraphedExactStep(net, inner_lr=config.inner_lr)

    def _start_teacher(self) -> None:
        """At the end of the warm-up (``ramp_start``), the teacher becomes a copy of the student (its batch-norm
        running statistics too, a starting point its own forward passes soon replace)."""
        if self.teacher is not None and self.state.step == self.ramp[0]:
            self.teacher.load_state_dict(self.net.state_dict())

    def _teacher_started(self) -> bool:
        """Whether the teacher exists yet: from the end of the warm-up (``ramp_start``) on."""
        return self.teacher is not None and self.state.step >= self.ramp[0]

    def _teacher_start_share(self) -> float:
        """The share of the teacher's weights still on those it was copied from (the product of the EMA decays
        applied since)."""
        return teacher_start_share(self.state.step, start=self.ramp[0], ramp_end=self.ramp[1],
                                   during_ramp=self.cfg.ema_during_ramp, after_ramp=self.cfg.ema_after_ramp)

    def _evaluate(self, epoch: int) -> dict[str, float]:
        """Validate student and (once started) teacher; keep the better model if it beats the best so far.
        As in the reference code, the student is compared first and a later model must be strictly better."""
        # every process validates (and keeps as best) the main process's batch-norm running statistics, as under DDP
        self.group.broadcast_buffers(*(m for m in (self.net, self.teacher) if m is not None))
        candidates = {"student": self.net}
        if self._teacher_started():
            candidates["teacher"] = self.teacher
        state = self.state
        record: dict[str, float] = {"step": state.step, "epoch": round(state.step / self.steps_per_epoch, 4)}
        if self.teacher is not None:
            record["teacher_start_share"] = self._teacher_start_share() if self._teacher_started() else 1.0
        for name, model in candidates.items():
            score = (accuracy(model, self.val, device=self.device) if self.val is not None
                     else float(state.step) + MODELS.index(name) / 2)  # without validation data: the latest
            if self.val is not None:
                record[f"val_accuracy_{name}"] = score
            if state.best is None or score > state.best.score:
                state.best = Best(model=name, epoch=epoch + 1, step=state.step, score=score, state=_cpu_state(model))
        state.evaluations.append(record)
        return record

    def _end_epoch(self, epoch: int, samples_per_s: float, lr: float) -> None:
        """Record the epoch (``lr``: the learning rate its last step used), validate, report and checkpoint."""
        record: dict[str, float] = {"epoch": epoch + 1, "step": self.state.step, "lr": lr,
                                    "train_loss": self.state.loss_sum / max(self.state.loss_count, 1),
                                    "samples_per_s": samples_per_s}
        record.update(self.data.epoch_stats())
        record.update({k: v for k, v in self._evaluate(epoch).items() if k not in record})
        self.state.history.append(record)
        if self.verbose:
            shown = ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
            tqdm.write(f"[{self.method} {self.key}] {shown}")
        if self.on_epoch_end is not None:
            self.on_epoch_end(dict(record))
        self._report()
        self._save()

    def _report(self) -> None:
        if self.on_validation is not None and self.group.is_main:
            self.on_validation([dict(r) for r in self.state.history], [dict(e) for e in self.state.evaluations])

    def _result(self) -> TrainResult:
        state, best = self.state, self.state.best
        return TrainResult(student=self.net, teacher=self.teacher, best_model=best.model, best_state=best.state,
                           best_epoch=best.epoch, history=state.history, steps=state.step, best_step=best.step,
                           best_score=best.score if self.val is not None else float("nan"),
                           evaluations=state.evaluations, mode=self.mode)

    # --- checkpoints ----------------------------------------------------------------------------------------

    def _checkpoint(self) -> dict[str, Any]:
        """Everything ``_resume`` restores: the config it was trained with, the weights, the optimiser and its
        schedule, every random state, and the ``LoopState``; and the main process's torch thread count (``threads``)
        and CPU kernels (``cpu_capability``, e.g. AVX2): CPU results depend on both, so ``_resume`` warns when one
        changed; and the number of processes (``world_size``), which ``_resume`` holds a resume to with batch norm
        and warns of without it."""
        return {
            "format": CHECKPOINT_FORMAT, "key": self.key, "method": self.method, "config": dataclasses.asdict(self.cfg),
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "world_size": self.group.world_size, "mode": self.mode,
            "model": _cpu_state(self.net), "teacher": None if self.teacher is None else _cpu_state(self.teacher),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "cuda": _cuda_rng_state(self.device)},
            **self.state.as_checkpoint(),
        }

    def _save(self) -> None:
        """Checkpoint (the main process) and remember it (every process: any one's NaN message may be the one shown)."""
        if self.store is not None:
            if self.group.is_main:
                self.store.save(self.key, self._checkpoint())
            self.last_checkpoint = f"{self.store.location} ({self.key}, step {self.state.step})"

    def _checkpoint_name(self) -> str:
        if self.store is None:
            return "none (no checkpoint store was given)"
        return self.last_checkpoint or f"none written yet in {self.store.location}"

    def _resume(self) -> None:
        """Restore everything ``_checkpoint`` saved, if the store holds this round's checkpoint and the resume
        policy (``RESUMABLE_CHANGES``) accepts the config, and every process resumes at the same step."""
        state = self.store.load(self.key) if self.store is not None else None
        self._check_same_step(state)
        if state is None:
            return
        where = f"checkpoint {self.store.location} ({self.key})"
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{where}: expected format {CHECKPOINT_FORMAT}, found {state.get('format')!r}; it was "
                             "written by another version: delete it to start afresh")
        if state.get("method", self.method) != self.method:
            raise ValueError(f"{where}: expected a checkpoint of a {self.method} run to resume, found one of "
                             f"{state['method']}: give each training its own checkpoint store")
        resume_policy(state.get("config", {}), self.cfg, step=state["step"], steps_per_epoch=self.steps_per_epoch,
                      where=where)
        self._check_world_size(state.get("world_size"), where)
        self._keep_mode(state.get("mode"), where)
        self.net.load_state_dict(state["model"])
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch"])
        _restore_cuda_rng(state["rng"].get("cuda"), self.device)
        self.state = LoopState.from_checkpoint(state)
        self.last_checkpoint = f"{self.store.location} ({self.key}, step {self.state.step})"
        if self.group.is_main:
            tqdm.write(f"[{self.method} {self.key}] resumed from {self.last_checkpoint}")  # always: it matters
            threads = state.get("threads")  # None in checkpoints written before it was recorded
            if threads is not None and threads != torch.get_num_threads():
                log.warning("%s: written with %d torch threads, resumed with %d: the run continues, but CPU results "
                            "depend on the thread count, so its weights may differ in the last bits from a run that "
                            "never stopped; resume with torch.set_num_threads(%d) (OMP_NUM_THREADS) for the same bits",
                            where, threads, torch.get_num_threads(), threads)
            kernels = state.get("cpu_capability")  # None in checkpoints written before it was recorded
            if kernels is not None and kernels != torch.backends.cpu.get_cpu_capability():
                log.warning("%s: written with %s CPU kernels, resumed with %s (another CPU): the run continues, but "
                            "its weights may differ in the last bits from a run that never stopped", where, kernels,
                            torch.backends.cpu.get_cpu_capability())

    def _keep_mode(self, saved: str | None, where: str) -> None:
        """A run started with ``mode: auto`` continues in the mode it started in (the checkpoint's), wherever it
        resumes: a CUDA run (exact) resumed on the CPU stays exact, rather than turn into another method mid-run."""
        if saved is None or saved == self.mode:  # None: a CE run, or a checkpoint from before it was recorded
            return
        if self.group.is_main:
            log.warning("%s: written in mode %s (mode auto on its device), resumed on %s, where auto is %s: the run "
                        "continues in mode %s", where, saved, self.device.type, self.mode, saved)
        self.mode = typing.cast(Mode, saved)
        self.graphed = self._graphed_step(self.cfg, self.net, self.group)

    def _check_same_step(self, state: dict[str, Any] | None) -> None:
        """Under data parallelism, a ``ValueError`` in every process unless all resume at the same step (or none
        does), before any trains: a process that did not see the checkpoint the others resume from (a folder not
        shared by the nodes) would pair its collectives with their later steps, and the main process would return
        weights trained on that mismatch as if all were well."""
        if not self.group.active:
            return
        step = -1 if state is None else int(state.get("step", -1))  # -1: no checkpoint
        steps = self.group.gather_rows(torch.tensor([step], dtype=torch.int64, device=self.device)).tolist()
        if len(set(steps)) == 1:
            return
        found = "; ".join(_resumed_at(s, [rank for rank, t in enumerate(steps) if t == s]) for s in sorted(set(steps)))
        where = f"checkpoint {self.store.location} ({self.key})" if self.store is not None else \
            f"{self.key} (no checkpoint store)"
        raise ValueError(f"{where}: expected every one of the {self.group.world_size} processes to resume at the same "
                         f"step, found {found}: every process must read the same checkpoint folder (one all of them "
                         f"mount)")

    def _check_world_size(self, saved: int | None, where: str) -> None:
        """A checkpoint written by ``saved`` processes (None: before the number was recorded) resumed by another
        number: with batch norm a ``ValueError`` (each process normalises its own rows of a global batch, so another
        number trains another run); without it a warning, as for another thread count (the processes train the
        weights one process would, up to the order of the sums)."""
        now = self.group.world_size
        if saved is None or saved == now:
            return
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.net.modules()):
            raise ValueError(f"{where}: expected to resume with the {saved} processes that wrote it, found {now}: with "
                             f"batch norm each process normalises its own rows of a batch, so another number trains "
                             f"another run; resume with {saved} processes, or delete the checkpoint folder to train "
                             f"afresh")
        if self.group.is_main:
            log.warning("%s: written by %d processes, resumed by %d: the run continues, the same run up to the order "
                        "of its sums, so its weights may differ in the last bits from a run that never stopped; "
                        "resume with %d processes for the same bits", where, saved, now, saved)


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """The config fields that a checkpoint of every round of ``config``'s run must match (the resume policy over a
    whole run): everything but ``RESUMABLE_CHANGES``, or ``RESULT_NEUTRAL`` when later rounds pin ``epochs``."""
    free = RESUMABLE_CHANGES if config.round_count == 1 else RESULT_NEUTRAL
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in free}


def resume_policy(saved: dict[str, Any], config: TrainConfig, *, step: int, steps_per_epoch: int,
                  where: str = "checkpoint") -> None:
    """Raise ``ValueError`` unless a checkpoint saved with config ``saved`` at ``step`` may resume a run of
    ``config``: the fields of ``run_identity`` equal (``epochs`` too in iterative training, in every round, so that
    a longer run is refused before round 0 trains on and overwrites its checkpoint), and the checkpoint no later
    than the run's end."""
    current = dataclasses.asdict(config)
    free = RESUMABLE_CHANGES if config.round_count == 1 else RESULT_NEUTRAL
    changed = sorted(k for k in (current.keys() | saved.keys()) - free
                     if k not in current or k not in saved or _normalise(saved[k]) != _normalise(current[k]))
    if changed:
        details = "; ".join(f"{k}: checkpoint {saved.get(k, 'no such setting')!r}, now "
                            f"{current.get(k, 'no such setting')!r}" for k in changed)
        raise ValueError(f"{where}: expected the same training config to resume, found differences: {details}")
    if step > config.epochs * steps_per_epoch:
        raise ValueError(f"{where}: expected a checkpoint within the {config.epochs} epochs asked for, found one at "
                         f"step {step} (epoch {step / steps_per_epoch:g}): a run continues but cannot be shortened; "
                         f"raise epochs or delete the checkpoint to start afresh")


def _initial_state(net: nn.Module, writer: CheckpointStore | None,
                   reader: CheckpointStore | None) -> dict[str, Tensor]:
    """The weights training started from: saved once (to ``writer``: the main process's store), so that a
    resumed run restarts later rounds (and builds its default feature network) from the same weights as the
    run it continues."""
    saved = reader.load("start") if reader is not None else None
    if saved is not None:
        return saved["model"]
    state = _cpu_state(net)
    if writer is not None:
        writer.save("start", {"format": CHECKPOINT_FORMAT, "model": state})
    return state


def _eval_probs(net: nn.Module, x: Tensor) -> Tensor:
    was_training = net.training
    net.eval()
    probs = torch.softmax(net(x).float(), dim=1)
    net.train(was_training)
    return probs


def _frozen(net: nn.Module, device: torch.device) -> nn.Module:
    frozen = make_teacher(net).to(device)
    frozen.eval()
    return frozen


def _cpu_state(net: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _one_of(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}. Valid: {', '.join(valid)}")


def _resumed_at(step: int, ranks: list[int]) -> str:
    """Where ``ranks`` resume (``_check_same_step``): ``no checkpoint in process 1``, ``step 6 in processes 0, 2``."""
    where = "no checkpoint" if step < 0 else f"step {step}"
    return f"{where} in process{'es' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def _plain(value: Any) -> Any:
    """``value`` as the Python type it stands for: a numpy (or other) integer as an ``int``, a real number as a
    ``float``, a string as a ``str``, a numpy bool as a ``bool``, an array as a list, a list's or tuple's items
    alike; so that the weights-only loader reads a checkpoint holding the config. Python's own values stay as they
    are (an int where a float is expected too: a step names its checkpoint folder by the config's values), and
    anything else is left to the checks to refuse."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return type(value)(map(_plain, value))
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return str(value) if isinstance(value, str) else value


def _flag(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, found {value!r}")


def _at_least(name: str, value: float, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < low:
        raise ValueError(f"{name}: expected a finite number >= {low}, found {value!r}")


def _whole(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
