"""Reading what an earlier step wrote, with one clear error when it is not there; and the sha256 of a file, which
names inputs in manifests, model cards and checkpoint folders."""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from components.common.errors import DataError


def require(path: Path, producer: str) -> Path:
    """``path`` if it exists; else a ``DataError`` naming the step that writes it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected the output of the {producer} step, found no such file "
                        f"(run python -m components.{producer} first)")
    return path


def read_json(path: Path, producer: str, *keys: str) -> Any:
    """The JSON value of a file written by ``producer``; an object with ``keys``, where any are named."""
    path = require(path, producer)
    try:
        value = json.loads(path.read_text())
    except ValueError as err:  # UnicodeDecodeError is one too
        raise DataError(f"{path}: expected JSON written by the {producer} step, found invalid JSON ({err})") from err
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        found = f"keys {sorted(value)}" if isinstance(value, dict) else type(value).__name__
        raise DataError(f"{path}: expected the key {missing[0]!r} written by the {producer} step, found {found}")
    return value


MANIFEST_SHAPES = {"dataset": str, "format": str, "class_names": list, "counts": dict, "image_shape": list}


def read_manifest(ingest: Path) -> dict[str, Any]:
    """The ingest step's ``manifest.json`` in the folder ``ingest``: an object with the keys and JSON types of
    ``MANIFEST_SHAPES`` at least; a ``DataError`` naming the first key that is missing or of another type."""
    path = Path(ingest) / "manifest.json"
    manifest = read_json(path, "ingest", *MANIFEST_SHAPES)
    problem = wrong_type(path, manifest, MANIFEST_SHAPES, "ingest")
    if problem:
        raise DataError(problem)
    return manifest


_JSON_NAMES = {list: "array", dict: "object", str: "string", int: "integer"}


def wrong_type(path: Path, record: dict, shapes: dict[str, type], producer: str) -> str | None:
    """What is wrong with the first key of ``shapes`` that ``record`` (the JSON object of ``path``, written by
    ``producer``) holds with another JSON type, as an error naming the file, the key, the expected and the found; None
    when every key present has its type (a key absent is the caller's to judge)."""
    for key, kind in shapes.items():
        value = record.get(key)
        if key in record and (not isinstance(value, kind) or isinstance(value, bool)):
            return (f"{path}: expected {key} as a JSON {_JSON_NAMES[kind]} written by the {producer} step, found "
                    f"{type(value).__name__} {value!r:.60}")
    return None


def fraction(value: Any) -> bool:
    """Whether ``value`` (read from JSON) is a finite number in [0, 1], as every accuracy is: no bool, string,
    NaN or infinity."""
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0.0 <= value <= 1.0)


def read_arrays(path: Path, producer: str, *keys: str) -> tuple[np.ndarray, ...]:
    """The arrays ``keys`` of an ``.npz`` file written by ``producer``."""
    path = require(path, producer)
    try:
        data = np.load(path)
        single = not isinstance(data, np.lib.npyio.NpzFile)  # an .npy file loads as its bare array
        if not single:
            with data:
                found = sorted(data.files)
                arrays = {k: data[k] for k in keys if k in found}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: expected an .npz file written by the {producer} step, found unreadable data "
                        f"({err})") from err
    if single:
        raise DataError(f"{path}: expected an .npz file written by the {producer} step, found a single .npy array")
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise DataError(f"{path}: expected the array {missing[0]!r} written by the {producer} step, found {found}")
    return tuple(arrays[k] for k in keys)


MADE_FROM = "ingest_labels_sha256"  # in the noise step's labels.npz: ``labels_digest`` of what it drew from


def labels_digest(labels: np.ndarray) -> str:
    """sha256 of the ingested training labels (int64, in order): the noise step records it in ``labels.npz``
    (``MADE_FROM``), and every reader of that file checks that the training set ingested now has the same
    (``components.common.splits.read_noise_labels``)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()


def check_labels(path: Path, labels: np.ndarray, count: int, *, what: str, name: str = "labels") -> None:
    """``labels`` are one integer class index per ``what`` (``count`` of them); checked before anything casts them
    to int64, where 0.7 would become class 0 and NaN a huge negative number. A ``DataError`` names ``path``, the
    expected and the found."""
    if labels.ndim != 1:
        raise DataError(f"{path}: expected {name} of shape [N] (one class index per {what}), found shape "
                        f"{list(labels.shape)}")
    if labels.shape[0] != count:
        raise DataError(f"{path}: expected one label per {what} ({count} {name}), found {labels.shape[0]} {name}")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected integer class indices as {name}, found {labels.dtype} {name} with "
                        f"values like {_label_examples(labels)}")


def _label_examples(labels: np.ndarray, count: int = 3) -> str:
    """A few labels, those that are no class index first (a fraction, NaN, infinity)."""
    shown = labels
    if labels.dtype.kind == "f":
        odd = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        shown = odd if odd.size else labels
    texts = [str(v) for v in shown[:100]] if shown.dtype.kind == "f" else [repr(v) for v in shown[:100].tolist()]
    return ", ".join(list(dict.fromkeys(texts))[:count]) or "none (no labels)"  # distinct, in order


def sha256_file(path: Path) -> str:
    """The hex sha256 of the file at ``path``, read in blocks of 1 MiB (never whole into memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
