"""CIFAR-10 in the official python format, and the CIFAR-10N human labels.

CIFAR-10: ``cifar-10-python.tar.gz`` or its extracted folder ``cifar-10-batches-py/`` holding the pickled
batches ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (dicts with ``data``: uint8 ``[10000, 3072]``, the
red, green and blue planes of a 32x32 image in row-major order, and ``labels``) and ``batches.meta``
(``label_names``). The pickles are read by an unpickler that admits only plain containers and numpy arrays, so
a crafted file cannot run code.

CIFAR-10N: ``CIFAR-10_human.pt``, a torch-saved dict of numpy arrays with one entry per training image:
``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1``, ``random_label2``, ``random_label3``.

Every file read lies inside the dataset folder: a batch or tarball that is a symbolic link leading out of it is
refused.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from components.common.errors import DataError, torch_load_error
from components.formats import Dataset, check_split, inside, require_file

BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
HumanLabels = Literal["aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"]
HUMAN_LABELS = typing.get_args(HumanLabels)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
            ("__builtin__", "object"), ("builtins", "object"),
            ("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2; a pure function


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_cifar10(path: Path) -> Dataset:
    """CIFAR-10 from ``path``: the tarball, a folder holding it, a folder holding ``cifar-10-batches-py/``, or that
    folder itself. Returns the five training batches and the test batch as uint8 ``[N, 32, 32, 3]`` with their
    labels, and ``batches.meta``'s class names; reads only, a ``DataError`` for a missing, corrupt or malformed file."""
    files, inputs = _cifar_files(path)
    meta = _unpickle(files, "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _field(meta, "label_names", "batches.meta")]
    splits = {}
    for split, members in (("train", BATCHES), ("test", ("test_batch",))):
        images, labels = [], []
        for member in members:
            batch = _unpickle(files, member)
            data = np.asarray(_field(batch, "data", member))
            if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
                raise DataError(f"{path} ({member}): expected data of uint8 [N, 3072], found {data.dtype} "
                                f"{list(data.shape)}")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(np.asarray(_field(batch, "labels", member), dtype=np.int64))
        images, labels = np.concatenate(images), np.concatenate(labels)
        check_split(split, images, labels, len(names), path)
        splits[split] = (images, labels)
    return Dataset(*splits["train"], *splits["test"], class_names=names, inputs=inputs)


def read_cifar10n(path: Path, human_labels: Path) -> Dataset:
    """CIFAR-10 with the CIFAR-10N human labels of its training images in ``extra``."""
    dataset = read_cifar10(path)
    require_file(human_labels, "the CIFAR-10N file CIFAR-10_human.pt")
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            table = torch.load(human_labels, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a malformed file
        raise DataError(f"{human_labels}: expected a torch-saved dict of label arrays, found unreadable data "
                        f"({torch_load_error(err)})") from err
    if not isinstance(table, dict):
        raise DataError(f"{human_labels}: expected a dict of label arrays, found {type(table).__name__}")
    n = dataset.train_labels.shape[0]
    for key in HUMAN_LABELS:
        if key not in table:
            raise DataError(f"{human_labels}: expected the key {key!r}, found keys {sorted(table)}")
        labels = np.asarray(table[key], dtype=np.int64)
        if labels.shape != (n,):
            raise DataError(f"{human_labels}: expected {key} with one label per CIFAR-10 training image "
                            f"({n}), found {labels.shape[0] if labels.ndim else labels.shape}")
        check_split(key, np.empty((n, 0)), labels, len(dataset.class_names), human_labels)
        dataset.extra[key] = labels
    if "clean_label" in table and not np.array_equal(np.asarray(table["clean_label"]), dataset.train_labels):
        raise DataError(f"{human_labels}: expected clean_label to equal the CIFAR-10 training labels in order, "
                        f"found {int((np.asarray(table['clean_label']) != dataset.train_labels).sum())} differences")
    dataset.inputs.append(human_labels)
    return dataset


def _numpy_globals():
    """The numpy globals a torch-saved dict of numpy arrays names, for the weights-only loader. A pickle names
    ``numpy.ndarray`` and ``numpy.dtype`` under every numpy, but ``_reconstruct`` by the module it lived in when the
    file was written: ``numpy.core.multiarray`` under numpy 1.x (the published CIFAR-10_human.pt), and
    ``numpy._core.multiarray`` under numpy 2; both names are admitted, each for the one function."""
    out = [np.ndarray, np.dtype, type(np.dtype(np.int64)), type(np.dtype(np.int32)), type(np.dtype(np.uint8))]
    try:
        from numpy._core.multiarray import _reconstruct  # noqa: PLC0415 - numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # noqa: PLC0415
    return [*out, *((_reconstruct, f"{module}._reconstruct") for module in ("numpy._core.multiarray",
                                                                             "numpy.core.multiarray"))]


TARBALL = "cifar-10-python.tar.gz"


def _cifar_files(path: Path) -> tuple[dict[str, bytes], list[Path]]:
    """The batch files by name, from the tarball or the extracted folder."""
    names = (*BATCHES, "test_batch", "batches.meta")
    if path.is_dir() and (path / TARBALL).is_file() and not (path / "cifar-10-batches-py").is_dir():
        # a folder holding the tarball (and, for CIFAR-10N, CIFAR-10_human.pt beside it)
        path = inside(path, TARBALL, where=str(path / TARBALL))
    if path.is_file():
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
                missing = [n for n in names if n not in members]
                if missing:
                    raise DataError(f"{path}: expected the CIFAR-10 batches {', '.join(missing)}, found none")
                return {n: tar.extractfile(members[n]).read() for n in names}, [path]
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataError(f"{path}: expected cifar-10-python.tar.gz, found a corrupt archive ({err})") from err
    folder = "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else ""
    files = [require_file(inside(path, Path(folder, n), where=str(path / folder / n)), "a CIFAR-10 python batch")
             for n in names]
    return {f.name: f.read_bytes() for f in files}, files


def _unpickle(files: dict[str, bytes], name: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(files[name]), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DataError(f"{name}: expected a pickled CIFAR-10 batch, found unreadable data ({err})") from err
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, name: str):
    if key not in batch:
        raise DataError(f"{name}: expected the key {key!r}, found keys {sorted(batch)}")
    return batch[key]
