"""The training loop: it learns, it resumes bit for bit, it stops on NaN naming the step and checkpoint."""

import copy
import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import model.trainer as trainer_module
from components.common.checkpoints import FileCheckpointStore
from model.networks import SmallCNN
from model.trainer import Data, MlntConfig, NonFiniteLossError, TrainConfig, accuracy, augment, train

QUIET = {"progress": False, "batch_size": 32, "lr": 0.05, "seed": 3, "augment": False}


def noisy_problem(n=640, k=4, size=8, noise=0.3, seed=0, *, spread=0.5, signal=2.0, data=Data):
    """Images whose class is a bright pixel block (``signal`` over N(0, ``spread``²) pixels); ``noise`` of the
    training labels flipped uniformly. The training set is a ``data`` (a subclass records what the trainer does)."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(k, (n,), generator=g)
    x = spread * torch.randn(n, 1, size, size, generator=g)
    for c in range(k):
        x[clean == c, 0, 2 * c:2 * c + 2, 2:6] += signal
    noisy = clean.clone()
    flip = torch.rand(n, generator=g) < noise
    noisy[flip] = torch.randint(k, (int(flip.sum()),), generator=g)
    split = n * 3 // 4
    return data(x[:split], noisy[:split]), Data(x[split:], clean[split:])


def net(seed=0, batch_norm=False):
    torch.manual_seed(seed)
    model = SmallCNN(4, image_size=8, width=8, hidden=16)
    if batch_norm:
        model.body.insert(1, nn.BatchNorm2d(8))
    return model


@pytest.mark.parametrize("config", [TrainConfig(epochs=6, **QUIET),
                                    MlntConfig(epochs=6, mode="head", ramp_end=2, ema_during_ramp=0.9,
                                               ema_after_ramp=0.95, **QUIET),
                                    MlntConfig(epochs=4, mode="exact", num_sets=3, ramp_end=1,
                                               ema_during_ramp=0.9, ema_after_ramp=0.95, **QUIET)],
                         ids=["ce", "mlnt-head", "mlnt-exact"])
def test_training_learns_a_noisy_problem(config):
    train_data, val = noisy_problem()
    model = net()
    before = accuracy(model, val)
    result = train(config, model, train_data, val_data=val)
    chosen = result.teacher if result.best_model == "teacher" else result.student
    chosen.load_state_dict(result.best_state)
    after = accuracy(chosen, val)
    assert before < 0.4 and after > 0.85, (before, after)
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == config.epochs and result.steps == config.epochs * (480 // 32)
    assert losses[-1] < 0.8 * losses[0], losses


class CrashError(Exception):
    pass


class CrashingStore(FileCheckpointStore):
    """Writes checkpoints like the real store, then 'kills' the run after the n-th one."""

    def __init__(self, directory, crash_after):
        super().__init__(directory)
        self.saves, self.crash_after = 0, crash_after

    def save(self, key, state):
        super().save(key, state)
        self.saves += 1
        if self.saves == self.crash_after:
            raise CrashError


@pytest.mark.parametrize(("config", "batch_norm", "crash_after"), [
    (MlntConfig(epochs=3, mode="exact", num_sets=2, ramp_end=1, checkpoint_every=4, **{**QUIET, "augment": True}),
     False, 3),
    (MlntConfig(epochs=2, mode="first_order", num_sets=2, checkpoint_every=5, **QUIET), True, 2),
    (MlntConfig(epochs=2, mode="head", rounds=2, checkpoint_every=7, **QUIET), False, 7),  # in round 2
    (TrainConfig(epochs=3, checkpoint_every=6, **QUIET), False, 4),
    (MlntConfig(epochs=3, mode="head", ramp_start=1, ramp_end=2, eval_every=4, checkpoint_every=5, **QUIET),
     False, 3),  # crashes in the warm-up; the teacher is copied after the resume
], ids=["exact", "first-order-batchnorm", "head-two-rounds", "ce", "head-published-schedule"])
def test_resumed_run_ends_with_identical_weights(tmp_path, config, batch_norm, crash_after):
    train_data, val = noisy_problem(n=400)
    straight = train(config, net(batch_norm=batch_norm), train_data, val_data=val,
                     store=FileCheckpointStore(tmp_path / "straight"))
    with pytest.raises(CrashError):
        train(config, net(batch_norm=batch_norm), train_data, val_data=val,
              store=CrashingStore(tmp_path / "crashed", crash_after))
    # A new process would build a fresh network with other weights: resuming must overwrite them all.
    resumed = train(config, net(seed=99, batch_norm=batch_norm), train_data, val_data=val,
                    store=FileCheckpointStore(tmp_path / "crashed"))
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if straight.teacher is not None:
        for a, b in zip(straight.teacher.state_dict().values(), resumed.teacher.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    def untimed(history):
        return [{k: v for k, v in record.items() if k != "samples_per_s"} for record in history]

    assert untimed(straight.history) == untimed(resumed.history) and straight.steps == resumed.steps
    assert straight.evaluations == resumed.evaluations and straight.best_step == resumed.best_step


def test_resume_refuses_a_checkpoint_from_another_config(tmp_path):
    train_data, _ = noisy_problem(n=200)
    config = MlntConfig(epochs=1, **QUIET)
    train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    with pytest.raises(ValueError, match=r"expected the same training config to resume, found differences: "
                                         r"inner_lr: checkpoint 0.2, now 0.5"):
        train(dataclasses.replace(config, inner_lr=0.5), net(), train_data, store=FileCheckpointStore(tmp_path))
    # More epochs is a legitimate change: the run continues where it stopped.
    longer = train(dataclasses.replace(config, epochs=2), net(), train_data, store=FileCheckpointStore(tmp_path))
    assert [h["epoch"] for h in longer.history] == [1, 2]
    with pytest.raises(ValueError, match=r"expected a checkpoint within the 1 epochs asked for, found one at step 8 "
                                         r"\(epoch 2\): a run continues but cannot be shortened"):
        train(config, net(), train_data, store=FileCheckpointStore(tmp_path))


def test_resume_refuses_a_checkpoint_of_another_method_or_with_settings_it_lacks(tmp_path):
    """Only the current config's fields were compared: a CE run given an MLNT run's store resumed it and returned
    MLNT's student as its own, and a run without a setting resumed one trained with it."""
    train_data, _ = noisy_problem(n=200)
    train(MlntConfig(epochs=1, **QUIET), net(), train_data, store=FileCheckpointStore(tmp_path / "mlnt"))
    with pytest.raises(ValueError, match=r"\(round0\): expected a checkpoint of a ce run to resume, found one of mlnt: "
                                         r"give each training its own checkpoint store"):
        train(TrainConfig(epochs=1, **QUIET), net(), train_data, store=FileCheckpointStore(tmp_path / "mlnt"))
    from model.trainer import resume_policy  # noqa: PLC0415
    saved = {**dataclasses.asdict(MlntConfig(epochs=1, **QUIET)), "warm_start": True}  # a subclass's extra field
    with pytest.raises(ValueError, match=r"found differences: warm_start: checkpoint True, now 'no such setting'"):
        resume_policy(saved, MlntConfig(epochs=1, **QUIET), step=4, steps_per_epoch=4)


class Dropped(nn.Module):
    """A network whose training passes draw from torch's global generator (dropout), as a user's network may."""

    def __init__(self, seed):
        super().__init__()
        self.inner = net(seed)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        return self.inner.head(self.drop(self.inner.features(x)))


def test_a_run_killed_before_its_first_checkpoint_restarts_with_the_same_global_draws(tmp_path):
    """torch's global generator (dropout masks) entered the checkpoint only at a round's first save, and was the
    caller's until then: a run killed after saving its start weights restarted with other masks, and two fresh runs
    of one config differed with the caller's generator. Each round now seeds it from the config's seed, and the
    caller's generator is left as it was."""
    class KilledAfterStart(FileCheckpointStore):
        def save(self, key, state):
            super().save(key, state)
            if key == "start":
                raise CrashError

    train_data, _ = noisy_problem(n=300)
    config = TrainConfig(epochs=2, checkpoint_every=5, **QUIET)
    straight = train(config, Dropped(0), train_data, store=FileCheckpointStore(tmp_path / "straight"))
    with pytest.raises(CrashError):
        train(config, Dropped(0), train_data, store=KilledAfterStart(tmp_path / "killed"))
    fresh = Dropped(99)  # a new process: other weights, another global state
    caller = torch.get_rng_state()
    resumed = train(config, fresh, train_data, store=FileCheckpointStore(tmp_path / "killed"))
    assert torch.equal(torch.get_rng_state(), caller)
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]


def gpu_host(monkeypatch, count):
    """Emulates a host whose torch sees ``count`` GPUs (there is none here): CPU generators stand in for the CUDA ones,
    which torch's own CUDA RNG functions (``get_rng_state``, ``set_rng_state``, ``manual_seed_all``) then index."""
    generators = tuple(torch.Generator().manual_seed(i) for i in range(count))
    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "is_initialized", lambda: True)  # CUDA calls run at once, not queued
        monkeypatch.setattr(module, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "default_generators", generators)
    return generators


def test_a_checkpoint_from_a_host_with_more_gpus_resumes_on_one_with_fewer(tmp_path, monkeypatch):
    """Checkpoints held one CUDA generator state per GPU the writing process saw, and a resume set them all: an 8-GPU
    torchrun checkpoint resumed on a 1-GPU box (or with CUDA_VISIBLE_DEVICES=0) raised an IndexError."""
    train_data, _ = noisy_problem(n=200)
    config = TrainConfig(epochs=2, device="cpu", checkpoint_every=3, **QUIET)
    gpu_host(monkeypatch, 1)
    straight = train(config, net(), train_data)
    gpu_host(monkeypatch, 2)
    with pytest.raises(CrashError):
        train(config, net(), train_data, store=CrashingStore(tmp_path, 2))  # "start", then round0 at step 3
    gpu_host(monkeypatch, 1)
    resumed = train(config, net(seed=99), train_data, store=FileCheckpointStore(tmp_path))
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_train_leaves_every_gpus_generator_as_it_found_it(monkeypatch):
    """``train`` forks the training device's generators only, but seeding each round (``torch.manual_seed``) and a
    resume rewrote every visible GPU's: the caller's generators on the other GPUs (all of them, training on the CPU)
    changed."""
    model = net()  # seeds torch's generators itself
    generators = gpu_host(monkeypatch, 2)
    caller = [g.get_state() for g in generators]
    train(TrainConfig(epochs=1, device="cpu", **QUIET), model, noisy_problem(n=200)[0])
    assert all(torch.equal(g.get_state(), state) for g, state in zip(generators, caller, strict=True))


def test_the_training_gpus_generator_alone_is_seeded_saved_and_restored(monkeypatch):
    """On CUDA the run seeds, checkpoints and restores the generator of its own device and no other; an older
    checkpoint's list of one state per GPU gives the training device's entry, or nothing where the list is shorter;
    on the CPU there is no CUDA state to save or restore."""
    generators = gpu_host(monkeypatch, 2)
    other, device = generators[0].get_state(), torch.device("cuda", 1)
    trainer_module._seed_global(5, device)
    assert torch.equal(generators[1].get_state(), torch.Generator().manual_seed(5).get_state())
    assert torch.equal(torch.get_rng_state(), torch.Generator().manual_seed(5).get_state())
    saved = trainer_module._cuda_rng_state(device)
    assert torch.equal(saved, generators[1].get_state())
    older = [torch.Generator().manual_seed(s).get_state() for s in (7, 8)]
    for checkpoint, expected in [(saved, saved), (older, older[1]), (older[:1], older[1]), (None, older[1]),
                                 ([], older[1])]:
        trainer_module._restore_cuda_rng(checkpoint, device)
        assert torch.equal(generators[1].get_state(), expected)
        assert torch.equal(generators[0].get_state(), other)
    assert trainer_module._cuda_rng_state(torch.device("cpu")) is None
    trainer_module._restore_cuda_rng(older, torch.device("cpu"))
    assert torch.equal(generators[0].get_state(), other) and torch.equal(generators[1].get_state(), older[1])


@pytest.mark.parametrize("config", [TrainConfig(epochs=1, **QUIET),
                                    *(MlntConfig(epochs=1, mode=mode, num_sets=2, **QUIET)
                                      for mode in ("head", "first_order", "exact"))],
                         ids=["ce", "mlnt-head", "mlnt-first-order", "mlnt-exact"])
def test_weight_decay_and_momentum_leave_a_layer_the_loss_does_not_reach_alone(config):
    """Such a layer (an auxiliary head of another code path) keeps no gradient, so the optimiser does not move it;
    exact and first_order mode gave it a zero gradient, and weight decay shrank it."""
    model = net()
    model.spare = nn.Linear(16, 4)
    before = {name: value.clone() for name, value in model.spare.state_dict().items()}
    result = train(config, model, noisy_problem(n=200)[0])
    for name, value in result.student.spare.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_a_mentor_top_k_above_the_classes_is_refused_before_the_first_round():
    """It failed after round 1 had trained, naming the internal ``top_k``."""
    train_data, _ = noisy_problem(n=200)
    with pytest.raises(ValueError, match=r"mentor_top_k: expected at most the network's 4 classes \(later rounds keep "
                                         r"a sample whose label is among the mentor's top k\), found 5"):
        train(MlntConfig(epochs=1, rounds=2, mentor_top_k=5, **QUIET), net(), train_data,
              on_epoch_end=lambda record: pytest.fail("a round trained"))


@pytest.mark.parametrize("config", [TrainConfig(epochs=2, lr_milestones=(1.5,), **QUIET),
                                    MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=2.5, **QUIET)],
                         ids=["ce", "mlnt"])
def test_continuing_a_finished_run_is_exactly_the_longer_run(tmp_path, config):
    """The resume policy lets epochs grow because every schedule counts absolute epochs: 2 epochs, then 3,
    end bit for bit where 3 epochs straight end (the learning-rate step and the ramp cross the join)."""
    train_data, val = noisy_problem(n=400)
    longer = dataclasses.replace(config, epochs=3)
    straight = train(longer, net(), train_data, val_data=val)
    train(config, net(), train_data, val_data=val, store=FileCheckpointStore(tmp_path))
    continued = train(longer, net(seed=7), train_data, val_data=val, store=FileCheckpointStore(tmp_path))
    for (name, a), b in zip(straight.student.state_dict().items(), continued.student.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert straight.evaluations == continued.evaluations and straight.best_step == continued.best_step


def test_iterative_training_refuses_other_epochs_before_training_on(tmp_path):
    """Round 2's mentor came from round 1 as long as it then was, so epochs is part of an iterative run's identity
    in every round: a longer run is refused at round 1's checkpoint, which it leaves as it was (before, round 1
    trained on and overwrote it, and then neither config could resume)."""
    train_data, _ = noisy_problem(n=200)
    config = MlntConfig(epochs=1, rounds=2, **QUIET)
    train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"\(round0\): expected the same training config to resume, found "
                                         r"differences: epochs: checkpoint 1, now 2"):
        train(dataclasses.replace(config, epochs=2), net(), train_data, store=FileCheckpointStore(tmp_path))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    resumed = train(config, net(), train_data, store=FileCheckpointStore(tmp_path))  # the first config still resumes
    assert resumed.earlier_rounds[0].steps == 150 // 32



def test_only_settings_that_cannot_change_the_result_may_change_on_resume():
    """``RESULT_NEUTRAL`` (and, in a one-round run, ``epochs``) may change between a checkpoint and its resume;
    anything that changes the result, ``eval_every`` (which validations pick the released model) included, is
    refused. ``run_identity`` (the checkpoint folder's id) leaves out the same fields."""
    from model.trainer import resume_policy, run_identity  # noqa: PLC0415

    config = MlntConfig(epochs=2, lr_milestones=(1.0,), **QUIET)
    saved = {**dataclasses.asdict(config), "lr_milestones": [1.0]}  # a list, as a config read from YAML holds
    for name, value in (("checkpoint_every", 7), ("workers", 2), ("progress", True), ("device", "cpu"),
                        ("epochs", 3)):
        resume_policy(saved, dataclasses.replace(config, **{name: value}), step=4, steps_per_epoch=4)
    for name, value in (("eval_every", 7), ("seed", 4), ("lr_milestones", (1.5,))):
        with pytest.raises(ValueError, match=f"found differences: {name}: checkpoint"):
            resume_policy(saved, dataclasses.replace(config, **{name: value}), step=4, steps_per_epoch=4)
    assert "epochs" not in run_identity(config) and "eval_every" in run_identity(config)
    assert "epochs" in run_identity(dataclasses.replace(config, rounds=2))  # later rounds pin epochs
    assert "checkpoint_every" not in run_identity(dataclasses.replace(config, rounds=2))


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    train_data, _ = noisy_problem(n=200)
    config = TrainConfig(epochs=1, **QUIET)
    train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    store = FileCheckpointStore(tmp_path)
    good = store.load("round0")
    store.save("round0", {**good, "format": 1})
    with pytest.raises(ValueError, match=r"\(round0\): expected format 2, found 1; it was written by another "
                                         r"version: delete it to start afresh"):
        train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    store.save("round0", {k: v for k, v in good.items() if k != "format"})  # older than the format number
    with pytest.raises(ValueError, match=r"expected format 2, found None"):
        train(config, net(), train_data, store=FileCheckpointStore(tmp_path))


def test_a_resume_with_another_thread_count_warns_once(tmp_path, caplog):
    """CPU results depend on torch's thread count, so a run resumed with another one is not bit-identical to one that
    never stopped: the checkpoint records the count and the resume names both in one warning (not an error). A
    checkpoint without the count (written before it was recorded) resumes without a warning."""
    train_data, _ = noisy_problem(n=200)
    config = TrainConfig(epochs=1, **QUIET)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
        assert FileCheckpointStore(tmp_path).load("round0")["threads"] == 1
        torch.set_num_threads(2)
        with caplog.at_level(logging.WARNING, logger="model.trainer"):
            train(dataclasses.replace(config, epochs=2), net(), train_data, store=FileCheckpointStore(tmp_path))
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "written with 1 torch threads, resumed with 2" in warnings[0], warnings
        store = FileCheckpointStore(tmp_path)
        old = store.load("round0")
        del old["threads"]
        store.save("round0", old)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="model.trainer"):
            train(dataclasses.replace(config, epochs=3), net(), train_data, store=FileCheckpointStore(tmp_path))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        torch.set_num_threads(threads)


def test_a_resume_on_other_cpu_kernels_warns_once(tmp_path, caplog, monkeypatch):
    """torch picks CPU kernels by the instruction set (AVX2, AVX512...), whose sums differ in the last bits: the
    checkpoint records them and a resume on another CPU names both in one warning; a checkpoint without them (older)
    resumes without one."""
    train_data, _ = noisy_problem(n=200)
    config = TrainConfig(epochs=1, **QUIET)
    here = torch.backends.cpu.get_cpu_capability()
    train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    store = FileCheckpointStore(tmp_path)
    assert store.load("round0")["cpu_capability"] == here
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "ANOTHER")
    with caplog.at_level(logging.WARNING, logger="model.trainer"):
        train(dataclasses.replace(config, epochs=2), net(), train_data, store=FileCheckpointStore(tmp_path))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"written with {here} CPU kernels, resumed with ANOTHER (another CPU)" in warnings[0]
    old = store.load("round0")
    assert old["cpu_capability"] == "ANOTHER"
    del old["cpu_capability"]
    store.save("round0", old)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="model.trainer"):
        train(dataclasses.replace(config, epochs=3), net(), train_data, store=FileCheckpointStore(tmp_path))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class PoisonedNet(nn.Module):
    """Outputs NaN once ``poisoned`` is set: a stand-in for a diverging run."""

    def __init__(self):
        super().__init__()
        self.inner, self.poisoned = net(), False

    def forward(self, x):
        out = self.inner(x)
        return out * float("nan") if self.poisoned else out


def test_nan_loss_stops_with_the_step_and_last_good_checkpoint(tmp_path):
    train_data, _ = noisy_problem(n=200)
    model = PoisonedNet()
    store = FileCheckpointStore(tmp_path)

    def poison(record):
        model.poisoned = True

    with pytest.raises(NonFiniteLossError,
                       match=rf"loss is nan at step 5 \(epoch 2\); last good checkpoint: {tmp_path} "
                             r"\(round0, step 4\)"):
        train(TrainConfig(epochs=3, **QUIET), model, train_data, store=store, on_epoch_end=poison)
    assert store.load("round0")["step"] == 4


def test_nan_before_any_checkpoint_says_so():
    train_data, _ = noisy_problem(n=200)
    model = PoisonedNet()
    model.poisoned = True
    with pytest.raises(NonFiniteLossError, match=r"step 1 \(epoch 1\); last good checkpoint: none \(no checkpoint"):
        train(TrainConfig(epochs=1, **QUIET), model, train_data)


def test_augment_crops_and_flips_deterministically():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    a = augment(x, torch.Generator().manual_seed(0), padding=1)
    b = augment(x, torch.Generator().manual_seed(0), padding=1)
    assert a.shape == x.shape and torch.equal(a, b)
    same = augment(x, torch.Generator().manual_seed(0), padding=0)
    for i in range(2):  # without padding each image is itself or its mirror
        assert torch.equal(same[i], x[i]) or torch.equal(same[i], x[i].flip(-1))


def test_augment_flips_some_images_and_each_batch_draws_its_own():
    """A random horizontal flip per sample (about half of them), and the crops and flips of a global batch drawn
    from ``(seed, epoch, batch)``: another batch of the same epoch draws others."""
    x = torch.arange(64 * 4 * 4, dtype=torch.float32).reshape(64, 1, 4, 4)
    out = augment(x, torch.Generator().manual_seed(0), padding=0)
    flipped = sum(torch.equal(out[i], x[i].flip(-1)) for i in range(64))
    assert 10 < flipped < 54, flipped
    draws = [augment(x, trainer_module.augment_generator(3, 1, b), padding=2) for b in (0, 0, 1)]
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])


def test_each_epochs_train_loss_is_the_mean_of_its_own_steps(monkeypatch):
    """``train_loss`` in an epoch's record is the mean loss of that epoch's steps, not of every step so far."""
    losses, real = [], trainer_module.Group.mean_item
    monkeypatch.setattr(trainer_module.Group, "mean_item",
                        lambda self, value: losses.append(real(self, value)) or losses[-1])
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch
    result = train(TrainConfig(epochs=3, **QUIET), net(), train_data)
    assert len(losses) == 27
    for e, record in enumerate(result.history):
        assert record["train_loss"] == pytest.approx(sum(losses[9 * e:9 * e + 9]) / 9)


def test_grad_clip_bounds_each_steps_gradient_norm(monkeypatch):
    """``grad_clip`` > 0: the gradient's total norm is clipped to it before each step; 0 turns clipping off."""
    norms, real = [], torch.optim.SGD.step

    def step(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    train_data, _ = noisy_problem(n=400)
    train(TrainConfig(epochs=1, **QUIET), net(), train_data)
    assert min(norms) > 0.1  # unclipped, every step's gradient is larger than the bound below
    norms.clear()
    train(TrainConfig(epochs=1, grad_clip=0.05, **QUIET), net(), train_data)
    assert norms == pytest.approx([0.05] * 9, rel=1e-4)


class Preaugmented(Data):
    """A source that does its own augmentation (as the streamed shards do)."""

    augments = True


def test_validations_at_an_epoch_end_run_once():
    """Validations every ``eval_every`` steps and at each epoch end: a step that is both is validated once."""
    train_data, val = noisy_problem(n=400)  # 9 steps an epoch
    result = train(TrainConfig(epochs=2, eval_every=3, **QUIET), net(), train_data, val_data=val)
    assert [e["step"] for e in result.evaluations] == [3, 6, 9, 12, 15, 18]


class RecordingStore(FileCheckpointStore):
    """Writes checkpoints like the real store, recording the step of each."""

    def __init__(self, directory):
        super().__init__(directory)
        self.steps = []

    def save(self, key, state):
        super().save(key, state)
        self.steps.append(state.get("step"))


@pytest.mark.parametrize(("every", "steps"), [(0, [9, 18]), (4, [4, 8, 9, 12, 16, 18])])
def test_checkpoints_every_n_steps_and_at_each_epoch_end(tmp_path, every, steps):
    """``checkpoint_every`` steps between checkpoints and one at each epoch end; 0: epoch ends only."""
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch
    store = RecordingStore(tmp_path)
    train(TrainConfig(epochs=2, checkpoint_every=every, **QUIET), net(), train_data, store=store)
    assert store.steps == [None, *steps]  # the first is the starting weights (key "start")


def test_a_source_that_augments_is_not_augmented_again(monkeypatch):
    calls = []
    monkeypatch.setattr(trainer_module, "augment", lambda x, g, *, padding: calls.append(1) or x)
    train_data, _ = noisy_problem(n=400, data=Preaugmented)
    train(TrainConfig(epochs=1, **{**QUIET, "augment": True}), net(), train_data)
    assert calls == []
    train(TrainConfig(epochs=1, **{**QUIET, "augment": True}), net(), noisy_problem(n=400)[0])
    assert len(calls) == 9  # an in-memory source is augmented by the loop, batch by batch


def test_mlnt_and_its_control_see_the_same_augmented_images(monkeypatch):
    """The control differs from MLNT in the meta loss only: the meta step's synthetic labels must not move the
    random crops and flips of the batches that follow it."""
    real, train_data, seen = trainer_module.augment, noisy_problem(n=320)[0], {}
    for name, weight in (("mlnt", 0.4), ("control", 0.0)):
        batches = seen[name] = []
        monkeypatch.setattr(trainer_module, "augment",
                            lambda x, g, *, padding, out=batches: out.append(real(x, g, padding=padding)) or out[-1])
        train(MlntConfig(epochs=2, mode="head", num_sets=2, ramp_start=0.5, ramp_end=1, meta_weight=weight,
                         **{**QUIET, "augment": True}), net(), train_data)
    assert len(seen["mlnt"]) == len(seen["control"]) == 2 * (240 // 32)
    assert all(torch.equal(a, b) for a, b in zip(seen["mlnt"], seen["control"], strict=True))


@pytest.mark.parametrize(("make", "message"), [
    (lambda: MlntConfig(mode="second"), r"Unknown mode 'second'. Valid: auto, exact, first_order, head"),
    (lambda: MlntConfig(fraction=1.5), r"fraction: expected a number in \[0, 1\], found 1.5"),
    (lambda: MlntConfig(neighbours=200), r"neighbours: expected fewer than batch_size \(128\), found 200"),
    (lambda: TrainConfig(epochs=0), r"epochs: expected an integer >= 1, found 0"),
    (lambda: TrainConfig(epochs=1.5), r"epochs: expected an integer >= 1, found 1.5"),
    (lambda: MlntConfig(num_sets=2.5), r"num_sets: expected an integer >= 1, found 2.5"),
    (lambda: TrainConfig(seed=True), r"seed: expected an integer >= 0, found True"),
    (lambda: TrainConfig(lr=float("inf")), r"lr: expected a finite number >= 0.0, found inf"),
    (lambda: MlntConfig(inner_lr=float("nan")), r"inner_lr: expected a finite number >= 0.0, found nan"),
    (lambda: MlntConfig(meta_weight=float("inf")), r"meta_weight: expected a finite number >= 0.0, found inf"),
    (lambda: TrainConfig(device="tpu"), r"Unknown device 'tpu'. Valid: auto, cpu, cuda"),
    (lambda: MlntConfig(ramp_start=5, ramp_end=2), r"ramp_end: expected >= ramp_start \(5\), found 2"),
    (lambda: MlntConfig(ramp_from="one"), r"Unknown ramp_from 'one'. Valid: start, zero"),
    (lambda: MlntConfig(epochs=2, ramp_start=2, ramp_end=10),
     r"ramp_start: expected an epoch below epochs \(2\), found 2: the meta loss and the EMA teacher start there, so "
     r"the run would train plain CE"),
    (lambda: TrainConfig(epochs=15, lr_milestones=(20,)), r"lr_milestones\[0\]: expected an epoch below epochs "
                                                          r"\(15\), found 20 \(the learning rate would never change"),
    # the boundaries: a milestone at the last epoch's end never changes the rate; k neighbours need k + 1 samples
    (lambda: TrainConfig(epochs=15, lr_milestones=(15,)), r"lr_milestones\[0\]: expected an epoch below epochs "
                                                          r"\(15\), found 15"),
    (lambda: MlntConfig(neighbours=128), r"neighbours: expected fewer than batch_size \(128\), found 128"),
    (lambda: MlntConfig(epochs=2, rounds=2, ramp_start=1.5, ramp_end=1.5),
     r"ramp_start: expected an epoch below epochs - 0.5 \(1.5\) with rounds > 1, found 1.5: a later round"),
    # values that turn training or the method off: no update, no label ever resampled
    (lambda: TrainConfig(lr=0.0), r"lr: expected a number above 0, found 0.0: the weights would never move"),
    (lambda: TrainConfig(lr_gamma=0), r"lr_gamma: expected a number above 0, found 0: the weights would stop moving "
                                      r"at the first of lr_milestones"),
    (lambda: MlntConfig(fraction=0.0), r"fraction: expected at least 1/batch_size \(0.0078125\), so that each "
                                       r"synthetic set resamples int\(fraction \* batch_size\) >= 1 labels, found 0.0"),
    (lambda: MlntConfig(fraction=0.005), r"fraction: expected at least 1/batch_size \(0.0078125\).* found 0.005"),
    (lambda: MlntConfig(batch_size=64, fraction=0.0156),
     r"fraction: expected at least 1/batch_size \(0.015625\).* found 0.0156"),  # 0.0156 * 64 = 0.998
    (lambda: TrainConfig(augment="no"), r"augment: expected True or False, found 'no'"),
    (lambda: TrainConfig(lr="0.1"), r"lr: expected a finite number >= 0.0, found '0.1'"),
    (lambda: MlntConfig(epochs=2, rounds=2, lr_milestones=(1.6,)), r"lr_milestones\[0\]: expected an epoch below "
                                                                    r"epochs - 0.5 \(1.5\) with rounds > 1, found 1.6"),
])
def test_bad_config_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_smallest_fraction_that_resamples_a_label_is_taken():
    """int(fraction * batch_size) labels are resampled in each synthetic set: 1/batch_size resamples one."""
    assert MlntConfig(batch_size=64, fraction=1 / 64).fraction == 1 / 64
    assert MlntConfig(batch_size=64, fraction=0.016).fraction == 0.016


def test_numpy_numbers_in_a_config_become_python_ones_and_its_checkpoints_resume(tmp_path):
    """A sweep over ``np.logspace`` gave numpy floats, which pass every check (a float subclass) but made every
    checkpoint unreadable (the weights-only loader refuses numpy scalars): a crash lost the whole run. The config
    now holds Python numbers, so its checkpoints load and the run continues."""
    train_data, _ = noisy_problem(n=200)
    config = MlntConfig(epochs=np.int64(1), lr=np.logspace(-2, -1, 3)[1], fraction=np.float32(0.5),
                        lr_milestones=np.array([0.5]), augment=np.bool_(False), device=np.str_("cpu"),
                        **{k: v for k, v in QUIET.items() if k not in ("lr", "augment")})
    fields = dataclasses.asdict(config)
    assert {k: type(v) for k, v in fields.items() if type(v) not in (int, float, bool, str, tuple, list)} == {}
    assert (type(config.epochs), type(config.lr), type(config.fraction), type(config.augment)) == (int, float, float,
                                                                                                   bool)
    assert list(config.lr_milestones) == [0.5] and type(config.lr_milestones[0]) is float
    train(config, net(), train_data, store=FileCheckpointStore(tmp_path))
    assert FileCheckpointStore(tmp_path).load("round0")["config"]["lr"] == config.lr
    longer = train(dataclasses.replace(config, epochs=2), net(), train_data, store=FileCheckpointStore(tmp_path))
    assert [h["epoch"] for h in longer.history] == [1, 2]  # resumed after epoch 1


def test_a_config_keeps_python_numbers_as_they_are():
    """Only other number types are converted: an int given for a float setting stays the int the user wrote, so that
    the checkpoint folder a step names by its config (``components.common.checkpoints``) stays the one it wrote."""
    config = MlntConfig(ramp_start=1, ramp_end=2.5, lr_milestones=[1])
    assert (config.ramp_start, type(config.ramp_start), config.ramp_end) == (1, int, 2.5)
    assert config.lr_milestones == [1]


def test_an_empty_validation_set_is_refused_before_training():
    """It passed, then failed after the first epoch inside torch (``argmax(): Expected reduction dim 1 to have
    non-zero size``), naming no input."""
    train_data, val = noisy_problem(n=200)
    with pytest.raises(ValueError, match=r"val_data: expected at least one sample \(the best model is picked on "
                                         r"it\), found 0"):
        train(TrainConfig(epochs=1, **QUIET), net(), train_data, val_data=Data(val.images[:0], val.labels[:0]))


def test_each_epoch_draws_its_own_order_of_the_data():
    """The data order of an epoch is a permutation drawn from ``(seed, epoch)``: the same on every rerun, another
    in the next epoch or with another seed."""
    train_data, _ = noisy_problem(n=200)

    def order(epoch, seed=0):
        return torch.cat([y for _, y in train_data.batches(epoch, first=0, batch_size=30, seed=seed)])

    assert torch.equal(order(0), order(0)) and order(0).shape == (150,)
    assert not torch.equal(order(0), order(1)) and not torch.equal(order(0), order(0, seed=1))


@pytest.mark.parametrize(("settings", "message"), [
    ({"ramp_start": 0.95, "ramp_end": 0.95}, r"ramp_start: expected an epoch that rounds to a step before the end "
                                             r"of the run \(at most step 8 of 1 epochs of 9 steps\), found 0.95, "
                                             r"step 9: the meta loss"),
    ({"lr_milestones": (0.95,)}, r"lr_milestones: .* found 0.95, step 9: the learning rate would never change"),
])
def test_a_setting_a_fraction_of_a_step_short_of_the_end_is_refused(settings, message):
    """ramp_start 0.95 of one 9-step epoch passes the settings' check (below epochs) but rounds to step 9, the end:
    the run trained plain CE with no meta step; a milestone there never lowered the learning rate."""
    train_data, _ = noisy_problem(n=400)  # 300 training samples: 9 steps of 32
    with pytest.raises(ValueError, match=message):
        train(MlntConfig(epochs=1, mode="head", **{**QUIET, **settings}), net(), train_data)
    config = MlntConfig(epochs=1, mode="head", ramp_start=0.85, ramp_end=0.85, lr_milestones=(0.85,), **QUIET)
    assert len(train(config, net(), train_data).history) == 1  # step 8 of 9 (round(7.65)): the run takes it


def test_batch_larger_than_the_data():
    train_data, _ = noisy_problem(n=40)
    with pytest.raises(ValueError, match=r"batch_size: expected at most the number of training samples \(30\), "
                                         r"found 32"):
        train(TrainConfig(**QUIET), net(), train_data)


def test_iterative_training_reports_every_round():
    train_data, val_data = noisy_problem()
    config = MlntConfig(epochs=2, mode="head", rounds=3, ramp_end=1, **QUIET)
    result = train(config, net(), train_data, val_data=val_data)
    rounds = [*result.earlier_rounds, result]
    assert len(rounds) == 3 and all(len(r.history) == 2 for r in rounds)
    assert result.earlier_rounds[0].student is not result.student  # each round keeps its own weights
    assert not torch.equal(rounds[0].best_state["head.weight"], rounds[1].best_state["head.weight"])


def test_a_later_rounds_target_blends_in_the_mentor_that_is_the_previous_rounds_best_model(monkeypatch):
    """Round 1 has no mentor; in round 2 every meta step's consistency target is ``consistency_target(teacher,
    mentor, blend=mentor_blend)`` with the mentor's probabilities in eval mode from round 1's best weights."""
    train_data, val_data = noisy_problem()
    config = MlntConfig(epochs=2, mode="head", rounds=2, ramp_end=1, mentor_blend=0.3, **QUIET)
    looked, targets = [], []
    real_probs, real_target = trainer_module._eval_probs, trainer_module.consistency_target

    def eval_probs(net, x):
        probs = real_probs(net, x)
        looked.append((copy.deepcopy(net.state_dict()), x.clone(), probs))
        return probs

    def target(teacher, mentor, *, blend):
        targets.append((mentor, blend))
        return real_target(teacher, mentor, blend=blend)

    monkeypatch.setattr(trainer_module, "_eval_probs", eval_probs)
    monkeypatch.setattr(trainer_module, "consistency_target", target)
    # every validation scores alike, so each round's best is its first epoch's student, not the weights it ends on
    monkeypatch.setattr(trainer_module, "accuracy", lambda *_, **__: 0.5)
    result = train(config, net(), train_data, val_data=val_data)
    assert (result.earlier_rounds[0].best_model, result.earlier_rounds[0].best_epoch) == ("student", 1)
    split = next(i for i, (mentor, _) in enumerate(targets) if mentor is not None)  # round 2's first meta step
    first, second = targets[:split], targets[split:]
    assert len(first) == result.earlier_rounds[0].steps - config.ramp_start * (480 // 32)  # every meta step of round 1
    assert len(second) == len(looked) > 0 and all(blend == 0.3 for _, blend in second)
    best = net()
    best.load_state_dict(result.earlier_rounds[0].best_state)
    best.eval()
    for (mentor, _), (state, x, probs) in zip(second, looked, strict=True):
        assert mentor is probs and state_equal(state, result.earlier_rounds[0].best_state)
        torch.testing.assert_close(probs, torch.softmax(best(x), dim=1), rtol=0, atol=0)


def two_rounds(monkeypatch, keep=None, **settings):
    """Two rounds of head-mode MLNT on ``noisy_problem``, recording what the mentor filter saw (its probabilities and
    top_k) and each round's starting weights and training-set size; ``keep`` replaces the filter's mask."""
    train_data, val_data = noisy_problem()
    config = MlntConfig(epochs=2, mode="head", rounds=2, ramp_end=1, **{**QUIET, **settings})
    filtered, starts = [], []
    real_mask, real_loop = trainer_module.mentor_keep_mask, trainer_module._Loop

    def mask(probs, labels, *, top_k):
        filtered.append((probs.clone(), top_k))
        return real_mask(probs, labels, top_k=top_k) if keep is None else keep(labels)

    class Loop(real_loop):
        def __init__(self, config, net, data, **kwargs):
            starts.append((copy.deepcopy(net.state_dict()), len(data)))
            super().__init__(config, net, data, **kwargs)

    monkeypatch.setattr(trainer_module, "mentor_keep_mask", mask)
    monkeypatch.setattr(trainer_module, "_Loop", Loop)
    result = train(config, net(), train_data, val_data=val_data)
    return train_data, result, filtered, starts


def test_a_later_round_restarts_from_the_initial_weights_on_what_the_mentor_keeps(monkeypatch):
    """Round 2 trains from the same initial weights as round 1 (not round 1's), on the samples whose label is among
    the top ``mentor_top_k`` predictions of the mentor, round 1's best model (not the reset network)."""
    train_data, result, filtered, starts = two_rounds(monkeypatch)
    assert len(filtered) == 1 and filtered[0][1] == 1 and state_equal(starts[0][0], starts[1][0])
    mentor = net()
    mentor.load_state_dict(result.earlier_rounds[0].best_state)
    torch.testing.assert_close(filtered[0][0], trainer_module.predict(mentor, train_data), rtol=0, atol=0)
    assert starts[1][1] < len(train_data)  # top-1 drops some of the 30 % flipped labels
    _, _, filtered, starts = two_rounds(monkeypatch, mentor_top_k=4)
    assert filtered[0][1] == 4 and starts[1][1] == len(train_data)  # every label is among 4 of 4 classes


def test_a_third_rounds_mentor_is_the_second_rounds_best_model_filtering_every_sample(monkeypatch):
    """With three rounds each later round's mentor is the round before's best model (round 3: round 2's, not round
    1's), and it filters the whole training set (not what the previous mentor kept)."""
    train_data, val_data = noisy_problem()
    config = MlntConfig(epochs=2, mode="head", rounds=3, ramp_end=1, **QUIET)
    filtered, sizes = [], []
    real_mask, real_loop = trainer_module.mentor_keep_mask, trainer_module._Loop

    def mask(probs, labels, *, top_k):
        keep = real_mask(probs, labels, top_k=top_k)
        filtered.append((probs.clone(), labels.clone(), int(keep.sum())))
        return keep

    class Loop(real_loop):
        def __init__(self, config, net, data, **kwargs):
            sizes.append(len(data))
            super().__init__(config, net, data, **kwargs)

    monkeypatch.setattr(trainer_module, "mentor_keep_mask", mask)
    monkeypatch.setattr(trainer_module, "_Loop", Loop)
    result = train(config, net(), train_data, val_data=val_data)
    assert len(filtered) == 2 and len(result.earlier_rounds) == 2
    for (probs, labels, _), earlier in zip(filtered, result.earlier_rounds, strict=True):
        mentor = net()
        mentor.load_state_dict(earlier.best_state)
        assert torch.equal(labels, train_data.labels)  # every sample
        torch.testing.assert_close(probs, trainer_module.predict(mentor, train_data), rtol=0, atol=0)
    assert sizes == [len(train_data), filtered[0][2], filtered[1][2]]


def test_a_mentor_that_keeps_exactly_a_batch_trains_the_round(monkeypatch):
    def one_batch(labels):
        keep = torch.zeros(labels.shape[0], dtype=torch.bool)
        keep[:QUIET["batch_size"]] = True
        return keep

    _, result, _, starts = two_rounds(monkeypatch, keep=one_batch)
    assert starts[1][1] == QUIET["batch_size"] and result.steps == 2  # one step an epoch


def test_a_mentor_that_keeps_less_than_a_batch_is_named():
    train_data, val_data = noisy_problem()  # 480 training samples, 30 % of them flipped
    config = MlntConfig(epochs=1, mode="head", rounds=2, ramp_end=0, **{**QUIET, "batch_size": 450})
    with pytest.raises(ValueError, match=r"round 2: the mentor kept \d+ of 480 samples, expected at least "
                                         r"batch_size \(450\)"):
        train(config, net(), train_data, val_data=val_data)


def state_equal(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.values(), b.values(), strict=True)) and a.keys() == b.keys()


def test_the_warm_up_is_plain_ce_and_the_teacher_starts_as_a_copy_of_the_student():
    """The published schedule: before ramp_start no meta loss and no teacher; at ramp_start the teacher is the
    student's weights (with decay 1 it stays exactly that)."""
    train_data, val = noisy_problem(n=400)  # 300 training samples: 9 steps an epoch
    ce = train(TrainConfig(epochs=1, **QUIET), net(), train_data, val_data=val)
    frozen = MlntConfig(epochs=2, mode="head", ramp_start=1, ramp_end=2, ema_during_ramp=1.0, ema_after_ramp=1.0,
                        **QUIET)
    result = train(frozen, net(), train_data, val_data=val)
    assert state_equal(result.teacher.state_dict(), ce.student.state_dict())
    first, second = result.history  # the first epoch ends at the copy: teacher and student are one
    assert first["val_accuracy_teacher"] == first["val_accuracy_student"] and second["teacher_start_share"] == 1.0
    assert not state_equal(result.student.state_dict(), result.teacher.state_dict())


def test_validation_every_n_steps_and_release_of_the_better_model():
    train_data, val = noisy_problem(n=400)  # 9 steps an epoch
    config = MlntConfig(epochs=2, mode="head", ramp_start=0.6, ramp_end=1, eval_every=4, ema_during_ramp=0.9,
                        ema_after_ramp=0.95, **QUIET)
    result = train(config, net(), train_data, val_data=val)
    assert [e["step"] for e in result.evaluations] == [4, 8, 9, 12, 16, 18]
    assert "val_accuracy_teacher" not in result.evaluations[0]  # the teacher starts at step 5 (0.6 epochs)
    scores = [(e[f"val_accuracy_{m}"], m, e["step"]) for e in result.evaluations for m in ("student", "teacher")
              if f"val_accuracy_{m}" in e]
    best = max(s for s, _, _ in scores)
    first = next((m, step) for s, m, step in scores if s == best)  # ties: the earlier, the student first
    assert (result.best_score, result.best_model, result.best_step) == (best, *first)
    chosen = result.teacher if result.best_model == "teacher" else result.student
    chosen.load_state_dict(result.best_state)
    assert accuracy(chosen, val) == best
    share = result.evaluations[-1]["teacher_start_share"]
    assert share == pytest.approx(0.9 ** 4 * 0.95 ** 9)  # 4 updates during the ramp (steps 5-8), 9 after


@pytest.mark.parametrize("config", [TrainConfig(epochs=2, eval_every=4, **QUIET),
                                    MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=1, eval_every=4,
                                               **QUIET)], ids=["ce", "mlnt"])
def test_without_validation_data_the_latest_model_is_kept(config):
    """Nothing to compare on: the model kept is the latest validated (the teacher, once it exists), at the last
    step, and its score is nan."""
    train_data, _ = noisy_problem(n=400)
    result = train(config, net(), train_data)
    latest = result.teacher if config.method == "mlnt" else result.student
    assert (result.best_model, result.best_step, result.best_epoch) == (
        "teacher" if config.method == "mlnt" else "student", result.steps, config.epochs)
    assert state_equal(result.best_state, latest.state_dict()) and math.isnan(result.best_score)


@pytest.mark.parametrize("meta_weight", [0.4, 0.0], ids=["mlnt", "control"])
def test_a_batch_norm_teacher_keeps_running_statistics_of_its_own_weights(meta_weight):
    """As in the reference code, the teacher's batch-norm statistics come from its own training-mode forward passes
    at every step once it has started, in MLNT and in its control (meta_weight 0) alike; they are not the
    student's. Its validation accuracy is measured with them."""
    train_data, val = noisy_problem(n=400)
    config = MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=1, meta_weight=meta_weight,
                        ema_during_ramp=0.9, ema_after_ramp=0.95, **QUIET)
    result = train(config, net(batch_norm=True), train_data, val_data=val)
    student, teacher = dict(result.student.named_buffers()), dict(result.teacher.named_buffers())
    assert student.keys() == teacher.keys() and "body.1.running_mean" in teacher
    assert not torch.equal(student["body.1.running_mean"], teacher["body.1.running_mean"])
    # one training-mode forward pass a step each: the student's from step 1, the teacher's (after copying the
    # student's count at its start) from then on; a control teacher that never ran would have stopped at 4
    assert int(teacher["body.1.num_batches_tracked"]) == int(student["body.1.num_batches_tracked"]) == 18


def test_each_epoch_records_the_learning_rate_it_trained_with():
    """Before, the record read the rate after the schedule's last step of the epoch: the epoch before a milestone
    showed the decayed rate it never used."""
    train_data, _ = noisy_problem(n=400)
    result = train(TrainConfig(epochs=3, lr_milestones=(1, 2), **QUIET), net(), train_data)
    assert [h["lr"] for h in result.history] == pytest.approx([0.05, 0.005, 0.0005])


def test_the_learning_rate_drops_at_the_first_step_of_a_milestone_epoch(monkeypatch):
    """``lr_milestones`` are the epochs at which the rate is multiplied by ``lr_gamma``: every step of epoch 2 on
    (milestone 1) trains with the decayed rate, none before it."""
    rates, real = [], torch.optim.SGD.step
    monkeypatch.setattr(torch.optim.SGD, "step", lambda self, *a, **k: rates.append(self.param_groups[0]["lr"])
                        or real(self, *a, **k))
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch
    train(TrainConfig(epochs=2, lr_milestones=(1,), lr_gamma=0.5, **QUIET), net(), train_data)
    assert rates == pytest.approx([0.05] * 9 + [0.025] * 9)


def _meta_weights(monkeypatch, config, train_data) -> list[float]:
    """The meta weight of every meta step of a run of ``config``."""
    real, weights = trainer_module.mlnt_loss_with_logits, []
    monkeypatch.setattr(trainer_module, "mlnt_loss_with_logits",
                        lambda *a, meta_weight, **k: weights.append(meta_weight) or real(*a, meta_weight=meta_weight,
                                                                                          **k))
    train(config, net(), train_data)
    return weights


def test_the_meta_weight_of_each_step_follows_the_ramp_from_its_origin(monkeypatch):
    """w(t) of every meta step is ``rampup_weight`` with u counted from ramp_start (``ramp_from: start``) or from
    epoch 0 in the CIFAR-10 code's 1-based epochs (``zero``: a larger weight early in the ramp)."""
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch: the meta loss from step 4 (0.5 epochs), ramp to 18
    for origin, u in (("start", lambda step: (step - 4) / (18 - 4)), ("zero", lambda step: (step + 9) / 18)):
        config = MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=2, ramp_from=origin, **QUIET)
        expected = [0.4 * math.exp(-5 * (1 - min(u(step), 1.0)) ** 2) for step in range(4, 18)]
        assert _meta_weights(monkeypatch, config, train_data) == pytest.approx(expected), origin


def test_the_ramp_from_epoch_zero_gives_the_cifar10_codes_weight_at_each_epochs_first_step(monkeypatch):
    """The CIFAR-10 re-implementation numbers its epochs from 1, takes the meta loss when ``epoch > 2`` and sets
    w = 0.4 exp(-5 (1 - epoch / 20)^2) for the whole epoch, 0.4 after epoch 20. Scaled down (the meta loss after
    1-based epoch 1, ramped to epoch 4), the weight of each epoch's first step is the code's; counted from step 0
    it was the code's of the epoch before, and reached 0.4 an epoch late."""
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch
    config = MlntConfig(epochs=6, mode="head", ramp_start=1, ramp_end=4, ramp_from="zero", **QUIET)
    weights = _meta_weights(monkeypatch, config, train_data)  # the meta steps: 9 to 53
    for epoch in range(2, 7):  # 1-based, as the code counts
        code = 0.4 * math.exp(-5 * (1 - epoch / 4) ** 2) if epoch <= 4 else 0.4
        assert weights[(epoch - 2) * 9] == pytest.approx(code), epoch


def test_the_teacher_follows_the_ema_decay_of_its_schedule(monkeypatch):
    """The teacher's update at step t (0-based) uses ``ema_during_ramp`` before ``ramp_end`` and ``ema_after_ramp``
    from then on; the product of the decays applied is the ``teacher_start_share`` every validation records."""
    decays, real = [], trainer_module.ema_update
    monkeypatch.setattr(trainer_module, "ema_update",
                        lambda teacher, student, decay: decays.append(decay) or real(teacher, student, decay))
    train_data, _ = noisy_problem(n=400)  # 9 steps an epoch: the teacher from step 4, the ramp ends at step 9
    result = train(MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=1, ema_during_ramp=0.9,
                              ema_after_ramp=0.95, **QUIET), net(), train_data)
    assert decays == [0.9] * 5 + [0.95] * 9
    assert result.evaluations[-1]["teacher_start_share"] == pytest.approx(math.prod(decays))


def test_the_ramp_from_epoch_zero_trains_with_a_larger_early_weight():
    """ramp_from zero (the CIFAR-10 code) changes the run; the default (start) is the Clothing1M code's ramp."""
    train_data, _ = noisy_problem(n=400)
    config = MlntConfig(epochs=2, mode="head", ramp_start=0.5, ramp_end=2, **QUIET)
    runs = [train(dataclasses.replace(config, ramp_from=origin), net(), train_data).student.state_dict()
            for origin in ("start", "zero")]
    assert not all(torch.equal(a, b) for a, b in zip(runs[0].values(), runs[1].values(), strict=True))


@pytest.mark.parametrize(("values", "message"), [
    ({"seed": 2**64}, r"seed: expected an integer in \[0, 184461906879889\] \(torch seeds the epochs' shuffles with "
                      r"seed \* 100003 \+ epoch, below 2\*\*64\), found 18446744073709551616"),
    ({"seed": 2**63 - 1}, r"seed: expected an integer in \[0, 184461906879889\] .*found 9223372036854775807"),
    ({"seed": 184461906879890}, r"seed: expected an integer in \[0, 184461906879889\] .*found 184461906879890"),
    ({"momentum": 1.0}, r"momentum: expected a number in \[0, 1\), found 1.0"),
    ({"momentum": 1.5}, r"momentum: expected a number in \[0, 1\), found 1.5"),
])
@pytest.mark.parametrize("cls", [TrainConfig, MlntConfig])
def test_bad_config_seed_and_momentum_out_of_range(cls, values, message):
    """A seed of 2**64 passed the config and overflowed torch.manual_seed once the data was loaded, naming no field;
    a momentum of 1 or more (SGD's velocity never decays: the run diverges) passed as well. The largest seed is
    (2**64 - epochs) // 100003: the in-memory data seeds epoch e's shuffle with seed * 100003 + e."""
    with pytest.raises(ValueError, match=message):
        cls(**values)


def test_config_seed_at_its_bound_trains():
    """The largest seed the config takes seeds every generator the run makes (the epochs' shuffles included)."""
    epochs = 2
    largest = (2**64 - 1 - (epochs - 1)) // 100_003  # the largest s with s * 100003 + the last epoch < 2**64
    config = TrainConfig(epochs=epochs, **{**QUIET, "seed": largest, "momentum": 0.0})
    with pytest.raises(ValueError, match="seed: expected an integer in"):
        dataclasses.replace(config, seed=largest + 1)
    train(config, net(), noisy_problem(n=64)[0])


def test_mode_auto_is_head_on_the_cpu_and_exact_on_cuda(caplog):
    assert trainer_module.resolve_mode("auto", torch.device("cpu")) == "head"
    assert trainer_module.resolve_mode("auto", torch.device("cuda")) == "exact"
    assert trainer_module.resolve_mode("first_order", torch.device("cuda")) == "first_order"
    train_data, val = noisy_problem(n=128)
    config = MlntConfig(epochs=2, ramp_end=1, device="cpu", **{**QUIET, "batch_size": 32})
    assert config.mode == "auto"
    with caplog.at_level(logging.INFO, logger="model.trainer"):
        result = train(config, net(), train_data, val_data=val)
    assert result.mode == "head"
    assert "mode auto: head on cpu" in caplog.messages


def test_the_graphed_exact_step_trains_as_the_eager_one_on_the_cpu():
    """``graph: true`` batches the label sets (on the CPU without a CUDA graph): the same run up to float32
    rounding, and the mode recorded is exact."""
    train_data, val = noisy_problem(n=256)
    config = MlntConfig(epochs=2, mode="exact", num_sets=3, ramp_end=1, device="cpu", **QUIET)
    eager = train(config, net(), train_data, val_data=val)
    graphed = train(dataclasses.replace(config, graph=True), net(), train_data, val_data=val)
    assert graphed.mode == eager.mode == "exact" and graphed.steps == eager.steps
    for (name, a), b in zip(eager.student.state_dict().items(), graphed.student.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize(("changes", "message"), [
    ({"graph": True, "mode": "head"}, r"graph: expected mode exact or auto with graph: true .* found mode head"),
    ({"graph": 1}, r"graph: expected true or false, found 1"),
])
def test_graph_and_mode_settings_are_checked(changes, message):
    with pytest.raises(ValueError, match=message):
        MlntConfig(**changes)


def test_a_run_started_in_mode_auto_resumes_in_the_mode_it_started_in(tmp_path, monkeypatch, caplog):
    """A checkpoint written where auto is exact (a CUDA node), resumed where auto is head (the CPU), continues in
    exact mode: the same run as one that never stopped, not another method from the resumed step on."""
    train_data, val = noisy_problem(n=400)
    config = MlntConfig(epochs=2, num_sets=2, ramp_end=1, checkpoint_every=4, device="cpu", **QUIET)
    resolve = trainer_module.resolve_mode
    monkeypatch.setattr(trainer_module, "resolve_mode", lambda requested, device: "exact")  # as on CUDA
    straight = train(config, net(), train_data, val_data=val, store=FileCheckpointStore(tmp_path / "straight"))
    with pytest.raises(CrashError):
        train(config, net(), train_data, val_data=val, store=CrashingStore(tmp_path / "crashed", 2))
    monkeypatch.setattr(trainer_module, "resolve_mode", resolve)  # the CPU: auto is head
    with caplog.at_level(logging.WARNING, logger="model.trainer"):
        resumed = train(config, net(seed=99), train_data, val_data=val, store=FileCheckpointStore(tmp_path / "crashed"))
    assert straight.mode == resumed.mode == "exact"
    assert any("written in mode exact (mode auto on its device), resumed on cpu, where auto is head: the run "
               "continues in mode exact" in m for m in caplog.messages)
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
