"""Readers for the published dataset formats. Each reader checks its input and raises ``DataError`` naming the
file, what was expected and what was found; nothing here writes files."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components.common.errors import DataError

OWN_TEST_SPLIT = "the dataset's test split"  # a test split its owner labelled (clean); otherwise held out as given


@dataclass
class Dataset:
    """A dataset small enough for memory: uint8 images ``[N, H, W, C]`` and int64 labels per split.

    ``labels`` says what the labels are: ``curated`` (a benchmark's clean labels, the truth that synthetic noise
    is measured against) or ``as given`` (a user's own labels, as noisy as they came). A ``val`` split, where the
    dataset has one, is clean-labelled by its owner's word and is the set every selection, calibration and gate
    decision uses; ``test_source`` says where the test split came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    inputs: list[Path]  # every file read, for the manifest's sha256
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. CIFAR-10N human labels of the train split
    val_images: np.ndarray | None = None
    val_labels: np.ndarray | None = None
    labels: str = "curated"  # curated | as given
    train_keys: list[str] | None = None  # each training image's file, relative to the dataset folder
    val_keys: list[str] | None = None  # the same for the val and test splits (validate names duplicates by them)
    test_keys: list[str] | None = None
    test_source: str = OWN_TEST_SPLIT
    superclasses: dict[str, list[str]] | None = None  # CIFAR-100: each coarse class's fine classes


def check_split(name: str, images: np.ndarray, labels: np.ndarray, num_classes: int, source: Path) -> None:
    """A ``DataError`` naming ``source`` unless split ``name`` has as many ``images`` as ``labels`` and every label
    lies in ``[0, num_classes - 1]``."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{source}: expected as many {name} images as labels ({labels.shape[0]}), "
                        f"found {images.shape[0]}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{source}: expected {name} labels in [0, {num_classes - 1}], "
                        f"found values from {int(labels.min())} to {int(labels.max())}")


def inside(root: Path, name: str | Path, *, where: str, real_root: Path | None = None) -> Path:
    """``root / name``, after proving that a reader may open it: ``name`` is relative, does not climb out of
    ``root`` (``..``), and once every symbolic link on the way is followed the file still lies inside ``root``
    (``root`` itself may be a link, e.g. to a larger disk). Otherwise a ``DataError`` naming ``where`` (the file, or
    the list and line the name came from). ``real_root``: ``root`` already resolved, to spare a million lookups."""
    text = str(name)
    relative = os.path.normpath(text) if text else ""
    if relative in ("", ".") or os.path.isabs(text) or relative == ".." or relative.startswith(f"..{os.sep}"):
        raise DataError(f"{where}: expected a file name relative to {root} that stays inside it, found {text!r}")
    path = root / relative
    base = real_root if real_root is not None else Path(os.path.realpath(root))
    target = Path(os.path.realpath(path))
    if target == base or not (target.is_relative_to(base) or _in_dvc_cache(target, root)):
        raise DataError(f"{where}: expected a file inside {root}, found a symbolic link to {target}, outside it")
    return path


def _in_dvc_cache(target: Path, root: Path) -> bool:
    """Whether ``target`` lies in the DVC cache (``.dvc/cache``) of the repository holding ``root``: where a data
    folder checked out with ``cache.type: symlink`` points, content DVC itself verified."""
    for folder in Path(os.path.abspath(root)).parents:
        if (folder / ".dvc").is_dir():
            return target.is_relative_to(Path(os.path.realpath(folder / ".dvc" / "cache")))
    return False


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file; else a ``DataError`` saying that ``what`` was expected there."""
    if not path.is_file():
        raise DataError(f"{path}: expected {what}, found no such file")
    return path


def not_utf8(path: Path, err: UnicodeDecodeError) -> DataError:
    """The ``DataError`` for a text file ``path`` that ``err`` found not to be UTF-8, naming the line and the byte
    (a decoder reading in chunks knows only its place in the chunk: the file is read again to find it)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        start = -1  # the file changed since: name no line
    except UnicodeDecodeError as again:
        start = again.start
    if start < 0:
        return DataError(f"{path}: expected UTF-8 text, found bytes that are not ({err.reason})")
    line = raw.count(b"\n", 0, start) + 1
    return DataError(f"{path} line {line}: expected UTF-8 text, found byte 0x{raw[start]:02x} (byte {start} of the "
                     f"file); save the file as UTF-8")
