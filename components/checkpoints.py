"""Training checkpoints on disk: written atomically, loaded without executing code, verified on load.

A store is a folder; each key (``round0``, ``round1``, ...) is a file ``<key>.pt``. The previous good
checkpoint is kept as ``<key>.prev.pt``, so a checkpoint that turns out corrupt (a torn disk, a truncated
copy) falls back to the one before it, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import torch

from components.atomic import write_atomic
from components.formats import torch_load_error

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read."""


class FileCheckpointStore:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.location = str(self.directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.pt"

    def save(self, key: str, state: dict[str, Any]) -> None:
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
