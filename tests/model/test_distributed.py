"""Data-parallel training (torch.distributed, 2 gloo processes on the CPU) equals one process on the global batch.

Each spawned process trains the same network on its half of every global batch; the parent trains on whole
batches alone. The meta gradients are also checked one step at a time: with the inner gradients averaged
over the processes they match the single-process gradient; without that average (each process building fast
weights from its own rows, as a plain DDP wrapper would) they do not.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from components.common.checkpoints import FileCheckpointStore
from model.distributed import Group
from model.mlnt import mlnt_loss
from model.trainer import Data, MlntConfig, TrainConfig, train
from tests.model.test_trainer import net, noisy_problem

WORLD = 2
QUIET = {"progress": False, "batch_size": 32, "lr": 0.05, "seed": 3, "epochs": 2, "checkpoint_every": 2}
CONFIGS = {
    "ce": TrainConfig(**QUIET),
    **{mode: MlntConfig(mode=mode, num_sets=3, neighbours=4, ramp_end=0.5, ema_during_ramp=0.9,
                        ema_after_ramp=0.95, **QUIET) for mode in ("exact", "first_order", "head")},
}


class CountingStore:
    """Checkpoints in memory, counting the saves of this process."""

    location = "memory"

    def __init__(self):
        self.states, self.saves = {}, 0

    def save(self, key, state):
        self.states[key], self.saves = state, self.saves + 1

    def load(self, key):
        return self.states.get(key)


def _train_all(group: Group) -> dict:
    """Final weights and teacher of each config, and how many checkpoints and reports this process wrote."""
    train_data, _ = noisy_problem(n=256)
    out = {}
    for name, config in CONFIGS.items():
        store, reports = CountingStore(), []
        result = train(config, net(seed=1), train_data, store=store, group=group,
                       on_validation=lambda history, _, reports=reports: reports.append(len(history)))
        out[name] = {"student": {k: v.clone() for k, v in result.student.state_dict().items()},
                     "losses": [h["train_loss"] for h in result.history], "saves": store.saves,
                     "reports": reports}
    return out


def _meta_gradients(group: Group, *, average_inner: bool, spare: bool = False) -> list[torch.Tensor | None]:
    """The gradient of one exact-mode MLNT loss on a fixed global batch, averaged over the processes (None for a
    parameter without one); with ``spare``, of a network holding a layer its forward pass never uses."""
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(4, (16,), generator=g)
    synth = torch.randint(4, (3, 16), generator=g)
    teacher = torch.softmax(torch.randn(16, 4, generator=g), dim=1)
    model = net(seed=2)
    if spare:
        model.spare = nn.Linear(16, 4)
    rows = group.rows(16)
    loss = mlnt_loss(model, x[rows], y[rows], synth[:, rows], teacher[rows], inner_lr=0.5, meta_weight=1.0,
                     mode="exact", batch_mean=group.mean if average_inner and group.active else None)
    loss.backward()
    group.average_gradients(list(model.parameters()))
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def _frozen_layer_moves(group: Group) -> float:
    """How far one SGD step (momentum, weight decay) moves a frozen layer, after averaging the gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    before = model[0].weight.detach().clone()
    model(torch.randn(4, 3)).sum().backward()
    group.average_gradients(list(model.parameters()))
    optimizer.step()
    return (model[0].weight - before).abs().max().item()


def _worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        group = Group(rank=rank, world_size=WORLD)
        results[rank] = {"train": _train_all(group),
                         "grads": _meta_gradients(group, average_inner=True),
                         "grads_local_inner": _meta_gradients(group, average_inner=False),
                         "grads_spare": _meta_gradients(group, average_inner=True, spare=True),
                         "frozen_moved": _frozen_layer_moves(group)}
    finally:
        dist.destroy_process_group()


def spawned(worker, tmp_path_factory) -> list[dict]:
    """Run ``worker(rank, init_file, results)`` in WORLD processes (gloo through a file); each rank's result."""
    manager = mp.get_context("spawn").Manager()
    results = manager.dict()
    init_file = tmp_path_factory.mktemp("dist") / "init"
    mp.spawn(worker, args=(str(init_file), results), nprocs=WORLD, join=True)
    return [results[rank] for rank in range(WORLD)]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    return dict(enumerate(spawned(_worker, tmp_path_factory)))


@pytest.fixture(scope="module")
def one_process():
    return {"train": _train_all(Group()), "grads": _meta_gradients(Group(), average_inner=True),
            "grads_spare": _meta_gradients(Group(), average_inner=True, spare=True)}


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_processes_train_the_same_weights_as_one(two_processes, one_process, name):
    single = one_process["train"][name]
    for rank in range(WORLD):
        got = two_processes[rank]["train"][name]
        for key, value in single["student"].items():
            close(got["student"][key], value)
        assert got["losses"] == pytest.approx(single["losses"], rel=1e-5)


def test_only_the_main_process_writes_checkpoints_and_reports_the_curves(two_processes, one_process):
    """The curves (``on_validation``: ``live/`` in the steps) are written by the main process alone, as are the
    checkpoints."""
    for name in CONFIGS:
        assert two_processes[0]["train"][name]["saves"] == one_process["train"][name]["saves"] > 0
        assert two_processes[1]["train"][name]["saves"] == 0
        assert two_processes[0]["train"][name]["reports"] == one_process["train"][name]["reports"] == [1, 2]
        assert two_processes[1]["train"][name]["reports"] == []


def test_meta_gradient_needs_the_inner_gradients_averaged(two_processes, one_process):
    for got, want in zip(two_processes[0]["grads"], one_process["grads"], strict=True):
        close(got, want)
    biggest = max((g - w).abs().max().item()
                  for g, w in zip(two_processes[0]["grads_local_inner"], one_process["grads"], strict=True))
    assert biggest > 1e-3, "fast weights from each process's own rows should give a different gradient"


def test_a_frozen_parameter_stays_frozen_under_data_parallelism(two_processes):
    """A parameter without a gradient keeps none after the average (before: a zero gradient, which weight decay
    and momentum then moved), as in one process."""
    assert _frozen_layer_moves(Group()) == 0.0
    assert [two_processes[rank]["frozen_moved"] for rank in range(WORLD)] == [0.0] * WORLD


def test_a_layer_the_loss_does_not_reach_keeps_no_gradient_under_data_parallelism(two_processes, one_process):
    """Exact mode gave such a layer a zero gradient, which weight decay and momentum moved; it now has none in every
    process, which all agree on (``Group.average_gradients`` skips it), and the others are averaged as before."""
    single = one_process["grads_spare"]
    assert single[-2:] == [None, None]
    for rank in range(WORLD):
        got = two_processes[rank]["grads_spare"]
        assert got[-2:] == [None, None], rank
        for a, b in zip(got[:-2], single[:-2], strict=True):
            close(a, b)


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="batch_size: expected a multiple of the 3 processes, found 32"):
        Group(rank=0, world_size=3).rows(32)
    with pytest.raises(ValueError, match="batch_size: expected a multiple"):
        train(CONFIGS["ce"], net(), noisy_problem(n=256)[0], group=Group(0, 3))


# --- batch norm: every process keeps rank 0's running statistics ------------------------------------------------

BATCH_NORM_CONFIG = MlntConfig(mode="head", rounds=2, num_sets=3, neighbours=4, ramp_end=1, ema_during_ramp=0.9,
                               ema_after_ramp=0.95, eval_every=10, **{**QUIET, "seed": 1, "augment": False})


class RecordingData(Data):
    """In-memory data that records every mentor keep mask it is filtered with."""

    kept: list[torch.Tensor]

    def subset(self, keep):
        self.kept.append(keep.clone())
        return super().subset(keep)


def _hard_problem():
    """A faint signal under label noise, so that the mentor is unsure of many samples (its keep mask then
    depends on small differences of its batch-norm statistics)."""
    return noisy_problem(1200, noise=0.4, spread=1.0, signal=0.6, data=RecordingData)


def _buffers(model):
    return {name: b.clone() for name, b in model.named_buffers()}


def _batch_norm_worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    try:
        train_data, val = _hard_problem()
        train_data.kept = []
        result = train(BATCH_NORM_CONFIG, net(seed=1, batch_norm=True), train_data, val_data=val,
                       group=Group(rank=rank, world_size=WORLD))
        rounds = [*result.earlier_rounds, result]
        results[rank] = {
            "kept": train_data.kept,
            "buffers": [{"student": _buffers(r.student), "teacher": _buffers(r.teacher)} for r in rounds],
            "best": [(r.best_model, r.best_step, r.best_score) for r in rounds],
            "best_state": [r.best_state for r in rounds],
            "evaluations": [r.evaluations for r in rounds]}
    except Exception as error:  # reported by the test, with the other process's result
        results[rank] = {"error": f"{type(error).__name__}: {error}"}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def batch_norm_two_processes(tmp_path_factory):
    return spawned(_batch_norm_worker, tmp_path_factory)


def test_batch_norm_processes_agree_on_statistics_mentor_and_validation(batch_norm_two_processes):
    """With batch norm, each process's training-mode passes see only its own rows; its running statistics (student
    and teacher) must still be rank 0's, so that every process validates alike, picks the same best model, and the
    second round's mentor keeps the same samples everywhere (otherwise the processes train on different sets, and
    with different step counts one of them hangs up on the other)."""
    main, other = batch_norm_two_processes
    assert "error" not in main and "error" not in other, (main.get("error"), other.get("error"))
    assert len(main["kept"]) == 1 and torch.equal(main["kept"][0], other["kept"][0]), \
        [int(k.sum()) for r in (main, other) for k in r["kept"]]
    for round_ in range(BATCH_NORM_CONFIG.rounds):
        for model in ("student", "teacher"):
            for name, value in main["buffers"][round_][model].items():
                assert torch.equal(value, other["buffers"][round_][model][name]), (round_, model, name)
        for name, value in main["best_state"][round_].items():
            assert torch.equal(value, other["best_state"][round_][name]), (round_, name)
    assert main["best"] == other["best"]
    assert main["evaluations"] == other["evaluations"]


def test_a_batch_the_processes_cannot_share_is_refused_before_they_connect(monkeypatch):
    """Refused after ``init_process_group``, the first process to fail took down the rendezvous it hosted, and the
    other was killed before it could say why (tests/test_trainjob.py failed one run in nine); now neither connects."""
    from components.common.parallel import data_parallel  # noqa: PLC0415

    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):  # connecting would fail on these first
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"batch_size: expected a multiple of the 2 processes, found 33"), \
            data_parallel(TrainConfig(batch_size=33)):
        pass
    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: any batch, no process group
    with data_parallel(TrainConfig(batch_size=33)) as group:
        assert (group.rank, group.world_size) == (0, 1) and not dist.is_initialized()


def test_a_step_started_without_torchrun_is_told_to_use_it(monkeypatch):
    """``WORLD_SIZE`` > 1 without the rest of torchrun's environment: a RuntimeError naming what is missing, before
    any connection is tried."""
    from model.distributed import from_environment  # noqa: PLC0415

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match=r"WORLD_SIZE=2: expected torchrun's environment, found no MASTER_ADDR, "
                                           r"MASTER_PORT; start the step with torchrun"):
        from_environment()
    assert not dist.is_initialized()


# --- later rounds restart from the main process's starting weights ----------------------------------------------

def _unseeded_worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        config = MlntConfig(mode="head", rounds=2, mentor_top_k=4, num_sets=2, neighbours=4, ramp_end=0.5,
                            **{**QUIET, "epochs": 1})
        # each process builds its network with other weights; training broadcasts the main process's
        result = train(config, net(seed=10 + rank), noisy_problem(n=256)[0], group=Group(rank=rank, world_size=WORLD))
        results[rank] = [{k: v.clone() for k, v in r.student.state_dict().items()}
                         for r in (*result.earlier_rounds, result)]
    finally:
        dist.destroy_process_group()


def test_every_round_starts_every_process_from_the_main_processs_weights(tmp_path_factory):
    """``Group.broadcast_state`` makes every process start from the main process's weights; a later round
    restarts from the weights training started from, which must be those broadcast ones in every process."""
    main, other = spawned(_unseeded_worker, tmp_path_factory)
    for round_, (a, b) in enumerate(zip(main, other, strict=True)):
        for name, value in a.items():
            assert torch.equal(value, b[name]), (round_, name)


# --- resuming: every process from the same checkpoint, with the processes that wrote it --------------------------

RESUME_CONFIG = TrainConfig(**{**QUIET, "epochs": 1, "augment": False, "checkpoint_every": 3})


class NaNData(Data):
    """Training data whose images turn NaN at the 4th batch of the 2nd epoch (step 10 of 6-step epochs)."""

    def batches(self, epoch, *, first, batch_size, seed, rows=None, generator=None):
        for b, (x, y) in enumerate(super().batches(epoch, first=first, batch_size=batch_size, seed=seed), start=first):
            yield (x * float("nan"), y) if (epoch, b) == (1, 3) else (x, y)


def _outcome(run) -> str:
    """What ``run()`` ended with: the epochs of its history, or its error."""
    try:
        return f"epochs {[h['epoch'] for h in run().history]}"
    except Exception as error:  # the test compares every process's outcome
        return f"{type(error).__name__}: {error}"


def _resume_worker(rank: int, init_file: str, results: dict) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    folder = Path(init_file).parent
    group = Group(rank=rank, world_size=WORLD)
    train_data, _ = noisy_problem(n=256)  # 192 training samples: 6 steps of 32 an epoch

    def run(config, where, *, data=train_data, batch_norm=False):
        return lambda: train(config, net(seed=1, batch_norm=batch_norm), data, store=FileCheckpointStore(where),
                             group=group)

    try:
        longer = dataclasses.replace(RESUME_CONFIG, epochs=2)
        results[rank] = {
            "first": _outcome(run(RESUME_CONFIG, folder / "shared")),
            # the second process does not see the first one's checkpoint folder
            "unshared": _outcome(run(longer, folder / ("shared" if rank == 0 else "own"))),
            "nan": _outcome(run(longer, folder / "nan", data=noisy_problem(n=256, data=NaNData)[0])),
            "batch_norm": _outcome(run(RESUME_CONFIG, folder / "bn", batch_norm=True)),
            "batch_norm_resumed": _outcome(run(longer, folder / "bn", batch_norm=True)),
            "folder": str(folder)}
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def resumed_in_two_processes(tmp_path_factory):
    return spawned(_resume_worker, tmp_path_factory)


def test_processes_that_would_resume_at_different_steps_all_stop_naming_both(resumed_in_two_processes):
    """A checkpoint folder one process does not see (not shared across nodes): the main process resumed at step 6
    and trained on, pairing its collectives with the other's first steps, and returned wrong weights as if all were
    well; only the other process failed afterwards, with a lost connection. Now both stop before training."""
    main, other = resumed_in_two_processes
    folder = main["folder"]
    assert main["first"] == other["first"] == "epochs [1]"
    for result, where in ((main, f"{folder}/shared"), (other, f"{folder}/own")):
        assert result["unshared"] == (
            f"ValueError: checkpoint {where} (round0): expected every one of the 2 processes to resume at the same "
            f"step, found no checkpoint in process 1; step 6 in process 0: every process must read the same checkpoint "
            f"folder (one all of them mount)"), result["unshared"]


def test_every_process_names_the_last_good_checkpoint_when_the_loss_turns_nan(resumed_in_two_processes):
    """Only the main process writes checkpoints; the others said 'none written yet', and torchrun may report any
    process's error as the cause."""
    main, other = resumed_in_two_processes
    expected = (f"NonFiniteLossError: loss is nan at step 10 (epoch 2); last good checkpoint: {main['folder']}/nan "
                f"(round0, step 9)")
    assert main["nan"] == other["nan"] == expected


def test_a_checkpoint_resumes_with_the_number_of_processes_that_wrote_it(resumed_in_two_processes, caplog):
    """The checkpoint records the number of processes. With batch norm another number trains another run (each
    process normalises its own rows of a batch), so such a resume is refused; without it the processes train the same
    weights as one up to summation order, so it continues with a warning, as for another thread count. A checkpoint
    without the number (written before it was recorded) resumes without either."""
    main, other = resumed_in_two_processes
    assert main["batch_norm"] == other["batch_norm"] == "epochs [1]"
    assert main["batch_norm_resumed"] == other["batch_norm_resumed"] == "epochs [1, 2]"
    folder, train_data = Path(main["folder"]), noisy_problem(n=256)[0]
    longest = dataclasses.replace(RESUME_CONFIG, epochs=3)
    store = FileCheckpointStore(folder / "bn")
    assert store.load("round0")["world_size"] == WORLD
    with pytest.raises(ValueError, match=rf"checkpoint {folder}/bn \(round0\): expected to resume with the 2 "
                                         r"processes that wrote it, found 1: with batch norm each process normalises "
                                         r"its own rows of a batch, so another number trains another run; resume "
                                         r"with 2 processes, or delete the checkpoint folder to train afresh"):
        train(longest, net(seed=1, batch_norm=True), train_data, store=store)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the processes' count: no warning of another one
    try:
        with caplog.at_level(logging.WARNING, logger="model.trainer"):
            resumed = train(dataclasses.replace(RESUME_CONFIG, epochs=2), net(seed=1), train_data,
                            store=FileCheckpointStore(folder / "shared"))
        assert [h["epoch"] for h in resumed.history] == [1, 2]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "written by 2 processes, resumed by 1:" in warnings[0], warnings
        old = store.load("round0")
        del old["world_size"]
        store.save("round0", old)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="model.trainer"):
            assert [h["epoch"] for h in train(longest, net(seed=1, batch_norm=True), train_data,
                                              store=store).history] == [1, 2, 3]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        torch.set_num_threads(threads)
