"""Killing a step for real, at a chosen point: a child process runs the step's CLI (``main``) and sends itself
SIGKILL when a named call happens for the n-th time, e.g. halfway through writing its 3rd checkpoint. Nothing in
the production code knows about it: the child wraps the real functions before it runs the step.

Children are forked from a forkserver that has imported the steps once (torch takes seconds to import), so a
kill-and-resume costs what the training costs. A child is a separate process all the same: SIGKILL ends it
without a chance to clean up, exactly as the OOM killer or a pre-empted node would.
"""

from __future__ import annotations

import functools
import importlib
import io
import itertools
import multiprocessing
import os
import pathlib
import random
import shutil
import signal
import sys
from pathlib import Path

import torch

import components.common.checkpoints
import components.common.model_file
from components.common.atomic import atomic_path
from components.common.checkpoints import FileCheckpointStore

KILLED = -signal.SIGKILL
# name: (owner, attribute, when the n-th call dies: before it, after it or halfway through what it writes; the
# state that leaves, for the catalogue)
POINTS = {
    "checkpoint-saved": (FileCheckpointStore, "save", "after", "just after the n-th checkpoint was saved"),
    "checkpoint-rotated": (components.common.checkpoints, "write_atomic", "before",
                           "in the n-th save: the last checkpoint linked as `.prev`, the new one not begun"),
    "checkpoint-write": (components.common.checkpoints, "write_atomic", "halfway",
                         "halfway through writing the n-th checkpoint's temporary file"),
    "optimizer-step": (torch.optim.SGD, "step", "before", "as the n-th optimizer step begins (between checkpoints)"),
    "model-write": (components.common.model_file, "write_atomic", "halfway",
                    "halfway through writing the n-th output file (`model.pt`), after training ended"),
    "release-copy": (shutil, "copy2", "halfway", "halfway through copying the n-th file into the staging folder"),
    "release-renamed": (pathlib.Path, "rename", "after",
                        "just after the staging folder became the version, before `latest` moved"),
    "release-linked": (pathlib.Path, "symlink_to", "after",
                       "just after the new `latest` link was made, before it replaced the old one"),
}
TEAR = "torn-checkpoint"  # not a kill: a truncated round0.pt, as a power cut after its rename could leave it
PROMOTION_KILLS = ("release-copy:2", "release-renamed:1", "release-linked:1")


def kill_plan(step: str) -> list[str]:
    """The kill points of one training run, in order, drawn from a seeded RNG. Each child resumes from what the one
    before it left, so every point comes before the end of training: n counts the calls in that child only."""
    rng = random.Random(f"reliability-{step}")
    if step == "mlnt":
        return [f"checkpoint-saved:{rng.randint(2, 3)}", f"checkpoint-write:{rng.randint(1, 2)}",
                f"optimizer-step:{rng.randint(2, 8)}"]
    return ["checkpoint-write:1",  # halfway through the very first checkpoint (the start weights)
            f"checkpoint-saved:{rng.randint(3, 4)}", TEAR, f"optimizer-step:{rng.randint(1, 5)}",
            f"checkpoint-write:{rng.randint(1, 2)}", f"checkpoint-rotated:{rng.randint(1, 2)}", "model-write:1"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["components.baseline", "components.mlnt", "components.gate", __name__])


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _write_half_atomically(path, write) -> None:
    """``write_atomic``'s temporary file, half written: the state a kill during the write leaves."""
    buffer = io.BytesIO()
    write(buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        fh.flush()
        die()


def _copy_half(source, target, **_) -> None:
    data = Path(source).read_bytes()
    with open(target, "wb") as fh:
        fh.write(data[:len(data) // 2])
        fh.flush()
        die()


HALFWAY = {"write_atomic": _write_half_atomically, "copy2": _copy_half}


def arm(point: str) -> None:
    """Make the n-th call of ``POINTS[name]`` kill this process; ``point`` is ``name:n``."""
    name, _, n = point.partition(":")
    owner, attribute, when, _ = POINTS[name]
    original, calls = getattr(owner, attribute), itertools.count(1)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        hit = next(calls) == int(n)
        if hit and when == "before":
            die()
        if hit and when == "halfway":
            return HALFWAY[attribute](*args, **kwargs)
        result = original(*args, **kwargs)
        if hit:
            die()
        return result

    setattr(owner, attribute, wrapper)


def _child(workdir: str, step: str, argv: list[str], point: str | None, threads: int, log: str) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.chdir(workdir)
    torch.set_num_threads(threads)
    # as under `python -m components.<step>` on Linux, a data loader's workers are forked from the step, so they end
    # with it: the forkserver's default would start them from the server, outliving a killed step for good
    multiprocessing.set_start_method("fork", force=True)
    if point:
        arm(point)
    code = importlib.import_module(f"components.{step}").main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    raise SystemExit(code)


def run_step(workdir: Path, step: str, *, kill: str | None = None, argv: tuple[str, ...] = (),
             timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m components.<step>`` in ``workdir`` (killed at ``kill``, if given): its exit code (``KILLED``
    when the kill happened) and what it printed. Threads as in this process, so results compare bit for bit."""
    log = workdir.parent / f"{workdir.name}.{step}.log"
    log.unlink(missing_ok=True)
    process = _CONTEXT.Process(target=_child, args=(str(workdir), step, list(argv), kill, torch.get_num_threads(),
                                                    str(log)))
    process.start()
    process.join(timeout)
    if process.exitcode is None:
        process.kill()
        process.join()
        raise AssertionError(f"components.{step} ran past {timeout} s:\n{log.read_text()}")
    return process.exitcode, log.read_text()
