"""Training checkpoints on disk: written atomically, loaded without executing code, verified on load; and which
folder holds a run's checkpoints (``checkpoint_store``) and when older runs' are removed.

A store is a folder; each key (``round0``, ``round1``, ...) is a file ``<key>.pt``. The previous good
checkpoint is kept as ``<key>.prev.pt``, so a checkpoint that turns out corrupt (a torn disk, a truncated
copy) falls back to the one before it, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from components.common.artifacts import sha256_file
from components.common.atomic import write_atomic
from components.common.errors import torch_load_error
from model.trainer import run_identity

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


class FileCheckpointStore:
    """The checkpoints of one run in the folder ``directory`` (``location``: the same, as text): ``<key>.pt`` each,
    the previous good one kept as ``<key>.prev.pt`` (see the module docstring)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.location = str(self.directory)

    def path(self, key: str) -> Path:
        """The file of checkpoint ``key``: ``<directory>/<key>.pt``."""
        return self.directory / f"{key}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
        """Write ``state`` as checkpoint ``key``: torch-saved with a sha256 trailer, written atomically. An intact
        ``<key>.pt`` already there first becomes ``<key>.prev.pt`` (through a hard link, so ``<key>.pt`` exists
        throughout); a torn one is overwritten and the old ``.prev`` kept."""
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


def checkpoint_store(out: Path, config: Any, inputs: list[Path], *, root: Path | None = None) -> FileCheckpointStore:
    """The checkpoint folder of this run: ``<root>/<id>`` (``root`` defaults to ``out/checkpoints``), the id a hash
    of the input files and of ``model.trainer.run_identity(config)``, the fields the trainer's resume policy does
    not let change (all but those that cannot change the result and, in a one-round run, ``epochs``). A rerun with
    the same config and inputs resumes, one with more epochs continues where the last one stopped (exactly the
    longer run), one with fewer is refused by the trainer; any other change starts afresh in another folder. A
    ``root`` outside ``out`` outlives the step's output folder: a Kubeflow retry, whose outputs start empty,
    resumes from it."""
    fields = run_identity(config)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for path in inputs:
        digest.update(sha256_file(Path(path)).encode())
    return FileCheckpointStore(Path(root or Path(out) / "checkpoints") / digest.hexdigest()[:16])


def drop_stale_checkpoints(store: FileCheckpointStore, *, shared: bool = False) -> None:
    """Once this run's outputs are written: remove the checkpoints of other (older) runs beside ``store``, or,
    in a ``shared`` root that other runs use at the same time, this run's own."""
    if shared:
        shutil.rmtree(store.directory, ignore_errors=True)
        return
    for sibling in store.directory.parent.iterdir():
        if sibling != store.directory and sibling.is_dir():
            shutil.rmtree(sibling)
