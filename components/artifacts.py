"""Reading what an earlier step wrote, with one clear error when it is not there."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from components.formats import DataError


def require(path: Path, producer: str) -> Path:
    """``path`` if it exists; else a ``DataError`` naming the step that writes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected the output of the {producer} step, found no such file "
                        f"(run python -m components.{producer} first)")
    return path


def read_json(path: Path, producer: str) -> Any:
    return json.loads(require(path, producer).read_text())


def read_arrays(path: Path, producer: str, *keys: str) -> tuple[np.ndarray, ...]:
    """The arrays ``keys`` of an ``.npz`` file written by ``producer``."""
    with np.load(require(path, producer)) as data:
        return tuple(data[k] for k in keys)
