"""Training checkpoints on disk: written atomically, loaded without executing code, verified on load; and which
folder holds a run's checkpoints (``checkpoint_store``), who may train into it, and when older runs' are removed.

A store is a folder; each key (``round0``, ``round1``, ...) is a file ``<key>.pt``. The previous good
checkpoint is kept as ``<key>.prev.pt``, so a checkpoint that turns out corrupt (a torn disk, a truncated
copy) falls back to the one before it, with a warning.

One run at a time trains into a folder: ``checkpoint_store`` takes an exclusive ``flock`` on ``<folder>/.lock``
(the main process only) and holds it until ``drop_stale_checkpoints``; a second run of the same config, inputs and
code fails at once, naming the holder (written into the lock file at its first save). The kernel releases the lock when
its process dies, and processes it forks (a data loader's workers) close their copies of it at once, so a crashed run
never blocks its rerun. A run that finished writes ``<folder>/finished.json``; a folder is removed only when it is not
locked (and, in a shared root, only once it has been finished for ``SHARED_RETENTION_S``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from components.common.artifacts import sha256_file
from components.common.atomic import write_atomic, write_json
from components.common.code import code_digest
from components.common.errors import torch_load_error
from model.trainer import run_identity

log = logging.getLogger(__name__)


LOCK = ".lock"  # in the run's folder: flock-ed by the run training into it; holds who that is
FINISHED = "finished.json"  # in the run's folder: written when the run's outputs are written
SHARED_RETENTION_S = 24 * 3600  # a finished run's folder in a shared root stays this long for a retry to resume
_REMOVING = ".removing-"  # a folder being removed is first renamed to this prefix, so no run can take it up again
_HELD: dict[str, int] = {}  # folder -> the lock's file descriptor, for the folders this process holds


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


class CheckpointInUseError(CheckpointError):
    """Another run holds the lock of the checkpoint folder."""


class FileCheckpointStore:
    """The checkpoints of one run in the folder ``directory`` (``location``: the same, as text): ``<key>.pt`` each,
    the previous good one kept as ``<key>.prev.pt`` (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.location = str(self.directory)
        self._holder: bytes | None = None  # what ``claim`` writes into the lock file at the first save

    def path(self, key: str) -> Path:
        """The file of checkpoint ``key``: ``<directory>/<key>.pt``."""
        return self.directory / f"{key}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
        """Write ``state`` as checkpoint ``key``: torch-saved with a sha256 trailer, written atomically. An intact
        ``<key>.pt`` already there first becomes ``<key>.prev.pt`` (through a hard link, so ``<key>.pt`` exists
        throughout); a torn one is overwritten and the old ``.prev`` kept."""
        self._training()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        payload = buffer.getvalue()
        digest = hashlib.sha256(payload).hexdigest().encode()
        current, previous = self.path(key), self.directory / f"{key}.prev.pt"
        if current.exists() and _intact(current):  # keep the last good one as .prev; `current` exists throughout
            link = previous.with_name(f".{previous.name}.link")
            link.unlink(missing_ok=True)
            os.link(current, link)
            os.replace(link, previous)
        write_atomic(current, lambda fh: (fh.write(payload), fh.write(b"\nsha256:" + digest)))

    def load(self, key: str) -> dict[str, Any] | None:
        """Checkpoint ``key``: ``<key>.pt``, or ``<key>.prev.pt`` (with a warning) when the first is unusable;
        ``None`` when neither file exists. A ``CheckpointError`` when every file there fails its check; writes
        nothing."""
        candidates = [p for p in (self.path(key), self.directory / f"{key}.prev.pt") if p.exists()]
        errors = []
        for path in candidates:
            try:
                return read_checkpoint(path)
            except CheckpointError as err:
                errors.append(str(err))
                log.warning("%s; trying the previous checkpoint", err)
        if errors:
            raise CheckpointError(f"no usable checkpoint: {'; '.join(errors)}; delete {self.directory} to train "
                                  "afresh")
        return None

    def claim(self) -> None:
        """Take this folder for a run's training: an exclusive, non-blocking ``flock`` on ``<directory>/.lock``,
        held until ``release`` (or this process's end: the kernel releases it with the process, so a crashed run
        never blocks its rerun). Then remove what a killed run left (``.*.tmp`` files of an interrupted write,
        ``.*.link`` of an interrupted rotation; only this folder's own). Who holds the lock (pid, host, start) is
        written into the lock file at the first ``save`` (so a run that fails before saving changes nothing), with
        the ``finished.json`` of an earlier run removed (a folder being trained into is no longer finished).
        ``CheckpointInUseError`` when another run holds it."""
        key = os.path.abspath(self.directory)
        if key in _HELD:  # this process trained here before (a failed run, then a retry in the same process)
            _unlock(_HELD.pop(key))
        for _ in range(100):  # retried only when a finishing run removed the folder as we opened its lock
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = self.directory / LOCK
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            if not _try_flock(fd):
                holder = _holder(fd)
                os.close(fd)
                raise CheckpointInUseError(
                    f"another run ({holder}) is training into {self.directory}; wait for it to finish, or stop that "
                    f"process (a run that died holds no lock) and run again")
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            _unlock(fd)
        else:
            raise CheckpointInUseError(f"{self.directory}: expected to lock it, found it removed each time")
        _HELD[key] = fd
        self._holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "started": datetime.now(UTC).isoformat(timespec="seconds")}).encode() + b"\n"
        for leftover in self.directory.iterdir():
            name = leftover.name
            if name.startswith(".") and (name.endswith(".tmp") or name.endswith(".link")) and leftover.is_file():
                log.info("removing %s, left by an interrupted write", leftover)
                leftover.unlink(missing_ok=True)

    def release(self) -> None:
        """Give up the lock ``claim`` took, emptying the lock file (nothing when this process does not hold it)."""
        fd = _HELD.pop(os.path.abspath(self.directory), None)
        if fd is not None:
            os.ftruncate(fd, 0)
            _unlock(fd)
        self._holder = None

    def _training(self) -> None:
        """At the first save of a claimed folder: say who holds it, and that it is no longer finished."""
        fd = _HELD.get(os.path.abspath(self.directory))
        if self._holder is not None and fd is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._holder, 0)
            self._holder = None
            (self.directory / FINISHED).unlink(missing_ok=True)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _drop_inherited_locks() -> None:
    """In a process forked from a run (a data loader's worker): close its copies of the run's lock descriptors,
    keeping the lock. A ``flock`` lasts while any copy is open, so a worker that outlives a killed run (until it
    notices, seconds later) would otherwise keep the run's rerun out."""
    for fd in _HELD.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    """Who holds the lock, as its lock file says: ``pid N on HOST, started T``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "pid unknown: it has not saved its first checkpoint yet"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``FileCheckpointStore.save``, checking its sha256 trailer."""
    payload = _payload(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a malformed archive
        raise CheckpointError(f"{path}: expected a torch checkpoint, found unreadable data "
                              f"({torch_load_error(err)})") from err


def _payload(path: str | Path) -> bytes:
    """The checkpoint's bytes, once its sha256 trailer vouches for them."""
    raw = Path(path).read_bytes()
    payload, sep, trailer = raw.rpartition(b"\nsha256:")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != trailer:
        raise CheckpointError(f"{path}: expected a checkpoint with a matching sha256 trailer, "
                              f"found a corrupt or truncated file ({len(raw)} bytes)")
    return payload


def _intact(path: Path) -> bool:
    """Whether the file is whole: a torn one must never push the good ``.prev`` out."""
    try:
        _payload(path)
    except CheckpointError:
        return False
    return True


def checkpoint_store(out: Path, config: Any, inputs: list[Path | str], *, code: str,
                     root: Path | None = None) -> FileCheckpointStore:
    """The checkpoint folder of this run: ``<root>/<id>`` (``root`` defaults to ``out/checkpoints``), the id a hash
    of the ``inputs`` (files, by their sha256, or digests already made, such as ``splits.training_digest``), of the
    code the step ``code`` runs (``components.common.code.code_digest``: every project file it imports), of the
    torch build (``torch.__version__``: another one changes the arithmetic) and of
    ``model.trainer.run_identity(config)``, the fields the trainer's resume policy does not
    let change (all but those that cannot change the result and, in a one-round run, ``epochs``). A rerun with the
    same config, inputs, code and torch resumes, one with more epochs continues where the last one stopped (exactly
    the longer run), one with fewer is refused by the trainer; any other change, an edit of the code or another
    torch included, starts afresh in another folder. A
    ``root`` outside ``out`` outlives the step's output folder: a Kubeflow retry, whose outputs start empty,
    resumes from it. The main process (``RANK`` 0 or unset) takes the folder (``FileCheckpointStore.claim``): a
    ``CheckpointInUseError`` when another run is training into it."""
    fields = run_identity(config)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for item in inputs:
        digest.update((item if isinstance(item, str) else sha256_file(Path(item))).encode())
    digest.update(code_digest(code).encode())
    digest.update(torch.__version__.encode())
    store = FileCheckpointStore(Path(root or Path(out) / "checkpoints") / digest.hexdigest()[:16])
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun's other processes train with the main one, into its folder
        store.claim()
    return store


def drop_stale_checkpoints(store: FileCheckpointStore, *, shared: bool = False,
                           retention_s: float = SHARED_RETENTION_S) -> None:
    """Once this run's outputs are written: mark this run's folder finished (``finished.json``; it stays, so a
    retry or rerun of the same config, inputs, code and torch resumes at the end, trains nothing and rewrites the
    outputs),
    remove the other runs' folders beside it, and give up its lock. In a ``shared`` root, which other runs use at
    the same time, only folders finished more than ``retention_s`` ago are removed; in a step's own root, every
    other one. A folder another run holds locked is never removed."""
    write_json(store.directory / FINISHED, {"finished": datetime.now(UTC).isoformat(timespec="seconds"),
                                            "pid": os.getpid(), "host": socket.gethostname()})
    now = time.time()
    for sibling in sorted(store.directory.parent.iterdir()):
        if sibling.name.startswith(_REMOVING) and sibling.is_dir():
            shutil.rmtree(sibling, ignore_errors=True)  # an interrupted removal: nothing can take it up again
        elif sibling != store.directory and sibling.is_dir() and not sibling.name.startswith("."):
            finished = sibling / FINISHED
            if shared and not (finished.exists() and now - finished.stat().st_mtime > retention_s):
                continue
            _remove_unless_locked(sibling)
    store.release()


def _remove_unless_locked(folder: Path) -> None:
    """Remove ``folder`` unless a run holds its lock: renamed while this process holds the lock (a run that
    opened the lock file meanwhile finds it gone and starts a fresh folder), then deleted."""
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except FileNotFoundError:
        return  # removed meanwhile
    try:
        if not _try_flock(fd):
            log.info("keeping %s: a run is training into it", folder)
            return
        trash = folder.with_name(f"{_REMOVING}{folder.name}-{os.getpid()}")
        try:
            os.rename(folder, trash)
        except FileNotFoundError:
            return
    finally:
        os.close(fd)  # releases the lock
    shutil.rmtree(trash, ignore_errors=True)
