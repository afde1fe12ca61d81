"""CIFAR-10 and CIFAR-100 in the official python format, and the CIFAR-10N and CIFAR-100N human labels.

CIFAR-10: ``cifar-10-python.tar.gz`` (or the same tar archive gunzipped, as a browser may leave it, under that
name or ``cifar-10-python.tar``) or its extracted folder ``cifar-10-batches-py/`` holding the pickled batches
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` (dicts with ``data``: uint8 ``[10000, 3072]``, the red, green
and blue planes of a 32x32 image in row-major order, and ``labels``) and ``batches.meta`` (``label_names``). The
binary version (``cifar-10-binary.tar.gz``, ``data_batch_1.bin`` ...) is refused, saying so. A batch whose rows
look written pixel by pixel (an ``[N, 32, 32, 3]`` array flattened as it was) is refused too (``_check_planar``).

CIFAR-100: ``cifar-100-python.tar.gz`` or ``cifar-100-python/``, found the same way, holding ``train`` and ``test``
(``data`` as CIFAR-10's, ``fine_labels`` and ``coarse_labels``) and ``meta`` (``fine_label_names``,
``coarse_label_names``). The labels are the fine ones; the coarse ones give each superclass its fine classes.

CIFAR-10N: ``CIFAR-10_human.pt``, a torch-saved dict of numpy arrays with one entry per training image:
``clean_label``, ``aggre_label``, ``worse_label``, ``random_label1``, ``random_label2``, ``random_label3``. It is a
zip archive whose ``<name>/data.pkl`` is a pickle of that dict (numpy arrays pickle themselves, so torch stores no
tensor data beside it); ``data.pkl`` is read like the CIFAR-10 batches, never by ``torch.load``. A file in torch's
legacy serialization (no zip archive: ``torch.save(..., _use_new_zipfile_serialization=False)``, or torch before
1.6) is refused, saying to save it again with a current ``torch.save``.

CIFAR-100N: ``CIFAR-100_human.pt``, the same kind of file with ``clean_label`` and ``noisy_label`` (fine labels,
read) and ``clean_coarse_label`` and ``noisy_coarse_label`` (not read).

The pickles are read by an unpickler that admits only plain containers and numpy arrays, so a crafted file can
neither run code nor reach numpy's C reconstructors: ``numpy.ndarray``, ``numpy.dtype`` and ``_reconstruct`` are
replaced by pure-Python stand-ins that record what the pickle says, and an array is then built by
``np.frombuffer`` only if its dtype is a plain integer type (what CIFAR-10 and CIFAR-10N use) and its bytes are
exactly ``prod(shape) * itemsize``. Anything else is a ``DataError`` naming the file.

Every file read lies inside the dataset folder: a batch or tarball that is a symbolic link leading out of it is
refused. A tarball is read to its end, where gzip (bzip2, xz) checks the data's CRC: a damaged download (cut
short, or bytes changed) is a ``DataError`` saying so and to download it again, never batches reported missing, a
``zlib.error``, or pixels read wrong without a word.
"""

from __future__ import annotations

import copyreg
import io
import lzma
import math
import pickle
import pickletools
import re
import tarfile
import typing
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from components.common.errors import DataError
from components.formats import Dataset, check_split, inside, require_file

BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
HumanLabels = Literal["aggre_label", "worse_label", "random_label1", "random_label2", "random_label3", "noisy_label"]
HUMAN_LABELS = typing.get_args(HumanLabels)
CIFAR10N_LABELS = HUMAN_LABELS[:5]  # CIFAR-10_human.pt's label sets
CIFAR100N_LABELS = ("noisy_label",)  # CIFAR-100_human.pt's fine label set (its coarse ones are not read)
# The dtypes an array may have: CIFAR-10's data is uint8 ('|u1'), CIFAR-10N's labels int64 ('<i8'); the other
# integer types are as plain (a re-saved file may hold int32 labels). Each with the byte orders numpy pickles.
_INTEGER_TYPES = {"u1": "|", "i1": "|", "u2": "<>", "i2": "<>", "u4": "<>", "i4": "<>", "u8": "<>", "i8": "<>"}
_MAX_DIMS = 32
_BUFFER_OPCODES = {"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"}
_MAX_BATCH = 1 << 27  # bytes of a CIFAR-10 batch file read at most (the published ones: about 31 MB)
_MAX_BATCH_100 = 1 << 28  # the same for CIFAR-100 (its train file: about 155 MB)
_MAX_PT_PICKLE = 1 << 28  # bytes of CIFAR-10_human.pt's data.pkl read at most (the published one: about 2.4 MB)
# A row holds three 32x32 planes. Read plane by plane, offset 32 is the next image row and offset 96 three rows down,
# which differ more in any image with spatial structure; a row written pixel by pixel (height, width, channel) turns
# that round: offset 96 is then the next image row and offset 32 some ten pixels away, in another channel. Rows
# whose offset-96 differences fall below this share of their offset-32 ones are refused as interleaved. The margin,
# measured by ``python -m benchmarks.cifar_layout`` on scikit-image's sample photos, is in that module's docstring.
_INTERLEAVED_BELOW = 0.75
_LAYOUT_ROWS = 1024  # rows of a batch the layout check reads


def _short(value: object) -> str:
    """``repr(value)`` cut to one short line, for what a pickle held."""
    try:
        text = repr(value)
    except Exception:  # e.g. nested too deep to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: object) -> str | None:
    """A name as a Python 2 pickle (bytes) or a Python 3 one (str) writes it; None for anything else."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class _NDArray:
    """Stands in for ``numpy.ndarray``, which a pickle names only as ``_reconstruct``'s first argument."""


class _DType:
    """Stands in for ``numpy.dtype``: records the type code and the pickled state (numpy's C ``__setstate__`` would
    trust it) and keeps ``dtype`` only where they describe a plain integer type."""

    def __init__(self, *args: object) -> None:
        self.args = args

    def __setstate__(self, state: object) -> None:
        args = getattr(self, "args", ())
        code = _text(args[0]) if args else None
        order = _text(state[1]) if isinstance(state, tuple) and len(state) == 8 else None
        if (code not in _INTEGER_TYPES or order is None or len(order) != 1 or order not in _INTEGER_TYPES[code]
                or state[0] != 3 or state[2:5] != (None, None, None)):
            raise pickle.UnpicklingError(f"numpy dtype {_short(args)} with state {_short(state)}: expected a plain "
                                         f"integer type ({', '.join(_INTEGER_TYPES)})")
        self.dtype = np.dtype(order + code)


class _Array:
    """What ``_reconstruct`` returns: an empty record that the pickle's BUILD step fills; ``array`` is the numpy
    array, built from the recorded bytes only after they are proven to describe one."""

    def __setstate__(self, state: object) -> None:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]  # version 1; numpy also reads the 4 fields of older pickles
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError(f"numpy array state {_short(state)}: expected (version, shape, dtype, "
                                         f"fortran order, data)")
        shape, dtype, fortran, data = state
        if not (isinstance(shape, tuple) and len(shape) <= _MAX_DIMS
                and all(type(n) is int and 0 <= n < 1 << 62 for n in shape)):
            raise pickle.UnpicklingError(f"numpy array shape {_short(shape)}: expected up to {_MAX_DIMS} sizes")
        if not isinstance(getattr(dtype, "dtype", None), np.dtype) or not isinstance(dtype, _DType):
            raise pickle.UnpicklingError(f"numpy array dtype {_short(dtype)}: expected a plain integer type")
        if type(fortran) not in (bool, int) or fortran not in (0, 1):
            raise pickle.UnpicklingError(f"numpy array order {_short(fortran)}: expected a flag")
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError(f"numpy array data of type {type(data).__name__}: expected bytes")
        size = math.prod(shape) * dtype.dtype.itemsize
        if len(data) != size:
            raise pickle.UnpicklingError(f"numpy array {dtype.dtype} {list(shape)}: expected {size} bytes of data, "
                                         f"found {len(data)}")
        try:
            array = np.frombuffer(data, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")
        except ValueError as err:  # e.g. a zero-size shape whose sizes overflow numpy's index type
            raise pickle.UnpicklingError(f"numpy array {dtype.dtype} {list(shape)}: {err}") from err
        self.array = np.array(array, dtype=array.dtype.newbyteorder("="), order="C")  # a copy, in native order


def _reconstruct(subtype: object, *_: object) -> _Array:
    """Stands in for numpy's ``_reconstruct(ndarray, (0,), b'b')``: the empty array that BUILD then fills."""
    if subtype is not _NDArray:
        raise pickle.UnpicklingError(f"_reconstruct of {_short(subtype)}: expected numpy.ndarray")
    return _Array()


def _encode(text: object, encoding: object = "utf-8", *_: object) -> bytes:
    """Stands in for ``_codecs.encode``, which Python 3 pickles call as ``encode(str, 'latin1')`` to write bytes
    at protocol 2; only that call."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {_short(encoding)}: expected latin1")
    return text.encode("latin-1")


def _bytes(*args: object) -> bytes:
    """Stands in for ``bytes``, which Python 3 pickles call without arguments to write ``b''`` at protocol 2 (an
    array of no rows); only that call (``bytes(n)`` would allocate whatever ``n`` says)."""
    if args:
        raise pickle.UnpicklingError(f"bytes{_short(args)}: expected bytes()")
    return b""


# Every global a pickle may name, and what it gets: stand-ins for numpy (its C code never sees the pickle's data),
# copyreg's pure-Python reconstructor and object (how Python 2 pickles a plain object), and the two calls by which
# Python 3 writes bytes at protocol 2: latin1 encoding and bytes() for b''.
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"):
            _reconstruct, ("numpy", "ndarray"): _NDArray, ("numpy", "dtype"): _DType,
            ("copy_reg", "_reconstructor"): copyreg._reconstructor, ("copyreg", "_reconstructor"):
            copyreg._reconstructor, ("__builtin__", "object"): object, ("builtins", "object"): object,
            ("_codecs", "encode"): _encode, ("__builtin__", "bytes"): _bytes, ("builtins", "bytes"): _bytes}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {_global(module)}.{_global(name)} is not allowed")
        return _ALLOWED[module, name]

    def persistent_load(self, pid: object):
        raise pickle.UnpicklingError("a persistent id (torch's reference to a tensor's storage) is not allowed: "
                                     "expected plain containers and numpy arrays")


def _global(name: object) -> str:
    return name if isinstance(name, str) and name.isprintable() and len(name) <= 100 else _short(name)


def _load_pickle(data: bytes, where: str, what: str) -> object:
    """The object pickled in ``data``, by ``_SafeUnpickler``; else a ``DataError`` naming ``where``. The opcodes are
    parsed first by ``pickletools``, so that the C unpickler never sees a length (of bytes, a string, a bytearray)
    that the data does not hold, nor protocol 5's bytearrays and out-of-band buffers, which no CIFAR file has."""
    try:
        for opcode, _, _ in pickletools.genops(data):  # pure Python: every length fits in the data, before C reads it
            if opcode.name in _BUFFER_OPCODES:
                raise pickle.UnpicklingError(f"opcode {opcode.name} is not allowed")
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as err:  # a crafted pickle raises many types, all of them a refusal
        raise DataError(f"{where}: expected {what}, found unreadable data ({_reason(err)})") from err


def _reason(err: BaseException) -> str:
    """Why a file was refused, on one short line (a parser's message may quote much of the file)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _keys(table: dict) -> str:
    """A dict's keys for a message: the names (and the type of anything else), the first ten."""
    keys = sorted(k if isinstance(k, str) else f"<{type(k).__name__}>" for k in table)
    return str(keys) if len(keys) <= 10 else f"{str(keys[:10])[:-1]}, ... ({len(keys)} keys)]"


def _array(value: object, where: str, what: str) -> np.ndarray:
    """The numpy array that ``value`` (a ``_SafeUnpickler`` record) holds; else a ``DataError``."""
    array = getattr(value, "array", None) if isinstance(value, _Array) else None
    if array is None:
        raise DataError(f"{where}: expected {what} as a numpy array, found {type(value).__name__}")
    return array


def _labels(value: object, where: str, what: str) -> np.ndarray:
    """Labels as int64 ``[N]``: a list of integers (CIFAR-10) or a 1-D integer array (CIFAR-10N)."""
    if isinstance(value, list | tuple):
        if not all(type(x) is int for x in value):
            raise DataError(f"{where}: expected {what} as a list of integers, found "
                            f"{next(type(x).__name__ for x in value if type(x) is not int)}")
        try:
            return np.array(value, dtype=np.int64).reshape(-1)
        except OverflowError as err:
            raise DataError(f"{where}: expected {what} as a list of integers, found one out of range") from err
    labels = _array(value, where, what)
    if labels.ndim != 1:
        raise DataError(f"{where}: expected {what} as a 1-D array, found shape {list(labels.shape)}")
    return labels.astype(np.int64)


def read_cifar10(path: Path) -> Dataset:
    """CIFAR-10 from ``path``: the tarball, a folder holding it, a folder holding ``cifar-10-batches-py/``, or that
    folder itself. Returns the five training batches and the test batch as uint8 ``[N, 32, 32, 3]`` with their
    labels, and ``batches.meta``'s class names; reads only, a ``DataError`` for a missing, corrupt or malformed file."""
    return _read(CIFAR10, path)


def read_cifar100(path: Path) -> Dataset:
    """CIFAR-100 from ``path``, found as ``read_cifar10`` finds CIFAR-10 (``cifar-100-python.tar.gz`` or
    ``cifar-100-python/``): the ``train`` and ``test`` files with their 100 fine labels, ``meta``'s fine class
    names, and ``superclasses``, each of the 20 coarse classes with its fine classes (from the images' coarse
    labels, which must give every fine class one coarse class)."""
    return _read(CIFAR100, path)


def _read(version: Version, path: Path) -> Dataset:
    """``version`` from ``path``: every split's batches, checked and stacked; a ``DataError`` naming the file."""
    files, where, inputs = _cifar_files(version, path)
    meta = _unpickle(files[version.meta], where[version.meta], version)
    names = _names(meta, version.names_key, where[version.meta])
    coarse_names = _names(meta, "coarse_label_names", where[version.meta]) if version.coarse_key else []
    splits, coarse = {}, []
    for split, members in version.splits:
        images, labels = [], []
        for member in members:
            batch = _unpickle(files[member], where[member], version)
            source = f"{path} ({member})"
            data = _data(_field(batch, "data", where[member]), source)
            labels.append(_batch_labels(batch, version.labels_key, where[member], source, data.shape[0], len(names)))
            if version.coarse_key and split == "train":
                coarse.append(_batch_labels(batch, version.coarse_key, where[member], source, data.shape[0],
                                            len(coarse_names)))
            _check_planar(data, source)
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        images, labels = np.concatenate(images), np.concatenate(labels)
        check_split(split, images, labels, len(names), path)
        splits[split] = (images, labels)
    dataset = Dataset(*splits["train"], *splits["test"], class_names=names, inputs=inputs)
    if version.coarse_key:
        dataset.superclasses = _superclasses(names, splits["train"][1], np.concatenate(coarse), coarse_names, path)
    return dataset


def _names(meta: dict, key: str, where: str) -> list[str]:
    """The class names that ``meta`` holds under ``key``."""
    found = _field(meta, key, where)
    if not isinstance(found, list | tuple) or not all(_text(n) is not None for n in found):
        raise DataError(f"{where}: expected {key} as a list of class names, found {_short(found)}")
    return [_text(n) for n in found]


def _data(value: object, source: str) -> np.ndarray:
    """A batch's ``data``: uint8 ``[N, 3072]``."""
    if not isinstance(value, _Array):
        raise DataError(f"{source}: expected data of uint8 [N, 3072], found {type(value).__name__}")
    data = _array(value, source, "data")
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"{source}: expected data of uint8 [N, 3072], found {data.dtype} {list(data.shape)}")
    return data


def _batch_labels(batch: dict, key: str, where: str, source: str, rows: int, classes: int) -> np.ndarray:
    """A batch's labels under ``key``: one per row of its data, each in ``[0, classes - 1]``."""
    found = _labels(_field(batch, key, where), source, key)
    what = "labels" if key in ("labels", "fine_labels") else key  # CIFAR-10's messages name them labels
    if found.shape[0] != rows:
        raise DataError(f"{source}: expected {rows} {what} (one per row of data), found {found.shape[0]}")
    if found.size and (found.min() < 0 or found.max() >= classes):
        raise DataError(f"{source}: expected {what} in [0, {classes - 1}], found values from {int(found.min())} to "
                        f"{int(found.max())}")
    return found


def _superclasses(fine_names: list[str], fine: np.ndarray, coarse: np.ndarray, coarse_names: list[str],
                  path: Path) -> dict[str, list[str]]:
    """Each coarse class's name with its fine classes' names, both in index order, from the training images' labels
    (one of each per image, checked); a ``DataError`` where a fine class has images under two coarse classes."""
    pairs = np.unique(np.stack([fine, coarse], axis=1), axis=0)
    split = [int(f) for f, n in zip(*np.unique(pairs[:, 0], return_counts=True), strict=True) if n > 1]
    if split:
        under = [coarse_names[c] for c in pairs[pairs[:, 0] == split[0], 1]]
        raise DataError(f"{path} (train): expected each fine class under one coarse class, found "
                        f"{fine_names[split[0]]} under {' and '.join(under)}"
                        f"{f' ({len(split)} fine classes so split)' if len(split) > 1 else ''}")
    return {coarse_names[c]: [fine_names[f] for f in pairs[pairs[:, 1] == c, 0]] for c in np.unique(pairs[:, 1])}


def row_differences(data: np.ndarray) -> tuple[float, float]:
    """Mean absolute difference between values 32 and 96 apart in the rows of ``data`` (uint8 ``[N, 3072]``, its
    first ``_LAYOUT_ROWS`` rows): read as CIFAR-10's planes, one image row apart and three."""
    rows = data[:_LAYOUT_ROWS].astype(np.int16)
    return float(np.abs(rows[:, 32:] - rows[:, :-32]).mean()), float(np.abs(rows[:, 96:] - rows[:, :-96]).mean())


def _check_planar(data: np.ndarray, source: str) -> None:
    """A ``DataError`` where ``data`` (uint8 ``[N, 3072]``) looks written pixel by pixel, an ``[N, 32, 32, 3]``
    array flattened as it was, rather than CIFAR-10's red, green and blue planes: read as planes its images would be
    scrambled and train a model on noise without a word. Rows without spatial structure (noise, one grey level) pass."""
    next_row, three_rows = row_differences(data)
    if three_rows < _INTERLEAVED_BELOW * next_row:
        raise DataError(f"{source}: expected each row of data to hold the red, green and blue 32x32 planes one "
                        f"after the other (CIFAR-10's layout), found rows that look written pixel by pixel (an "
                        f"[N, 32, 32, 3] array flattened as it was: values 96 apart differ {three_rows:.1f} on "
                        f"average, 32 apart {next_row:.1f}); write each image as "
                        f"image.transpose(2, 0, 1).reshape(3072)")


def read_cifar10n(path: Path, human_labels: Path) -> Dataset:
    """CIFAR-10 with the CIFAR-10N human labels of its training images in ``extra``."""
    return _with_human_labels(read_cifar10(path), human_labels, "CIFAR-10", CIFAR10N_LABELS)


def read_cifar100n(path: Path, human_labels: Path) -> Dataset:
    """CIFAR-100 with the CIFAR-100N human labels (``noisy_label``, fine) of its training images in ``extra``."""
    return _with_human_labels(read_cifar100(path), human_labels, "CIFAR-100", CIFAR100N_LABELS)


def _with_human_labels(dataset: Dataset, human_labels: Path, name: str, keys: tuple[str, ...]) -> Dataset:
    """``dataset`` (``name``: CIFAR-10 or CIFAR-100) with the label sets ``keys`` of its ``{name}N`` file
    ``human_labels`` in ``extra``, each one label per training image in range; the file's ``clean_label``, where it
    has one, must equal the training labels in order (the file is for this copy of the dataset)."""
    require_file(human_labels, f"the {name}N file {name}_human.pt")
    table = _load_pt(human_labels)
    n = dataset.train_labels.shape[0]
    for key in keys:
        if key not in table:
            raise DataError(f"{human_labels}: expected the key {key!r}, found keys {_keys(table)}")
        labels = _labels(table[key], str(human_labels), key)
        if labels.shape != (n,):
            raise DataError(f"{human_labels}: expected {key} with one label per {name} training image "
                            f"({n}), found {labels.shape[0]}")
        check_split(key, np.empty((n, 0)), labels, len(dataset.class_names), human_labels)
        dataset.extra[key] = labels
    if "clean_label" in table:
        clean = _labels(table["clean_label"], str(human_labels), "clean_label")
        if clean.shape != (n,):
            raise DataError(f"{human_labels}: expected clean_label with one label per {name} training image "
                            f"({n}), found {clean.shape[0]}")
        if not np.array_equal(clean, dataset.train_labels):
            raise DataError(f"{human_labels}: expected clean_label to equal the {name} training labels in order, "
                            f"found {int((clean != dataset.train_labels).sum())} differences")
    dataset.inputs.append(human_labels)
    return dataset


def _load_pt(path: Path) -> dict:
    """The dict that ``torch.save`` wrote to ``path``: its archive's ``<name>/data.pkl``, unpickled by
    ``_SafeUnpickler``. torch writes numpy arrays into the pickle itself; a tensor, which this file does not hold,
    would name torch's rebuild functions and a storage by persistent id, both refused."""
    what = "a torch-saved dict of label arrays"
    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [info for info in archive.infolist() if re.fullmatch(r"[^/]+/data\.pkl", info.filename)]
            if len(pickles) != 1:
                raise DataError(f"{path}: expected {what}, a zip archive holding one <name>/data.pkl, found "
                                f"{len(pickles)}")
            member = pickles[0]
            if member.file_size > _MAX_PT_PICKLE:
                raise DataError(f"{path} ({member.filename}): expected {what}, found {member.file_size} bytes")
            with archive.open(member) as handle:
                data = handle.read(_MAX_PT_PICKLE + 1)
    except DataError:
        raise
    except Exception as err:  # zipfile raises several types for a corrupt archive
        raise DataError(f"{path}: expected {what}, found unreadable data ({_reason(err)}){_legacy(path)}") from err
    where = f"{path} ({member.filename})"
    table = _load_pickle(data, where, what)
    if not isinstance(table, dict):
        raise DataError(f"{where}: expected {what}, found {type(table).__name__}")
    return {_text(k) if isinstance(k, bytes) else k: v for k, v in table.items()}


# How torch's legacy serialization (not a zip archive) starts: its magic number, pickled as a LONG1.
_LEGACY_MAGIC = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _legacy(path: Path) -> str:
    """What to do, for a file in torch's legacy serialization (which ``zipfile`` finds no zip archive); else ''."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)  # protocol 4 and up put a frame header before it
    except OSError:
        return ""
    if head[:1] != b"\x80" or _LEGACY_MAGIC not in head:
        return ""
    return ("; it is in torch's legacy serialization (torch before 1.6, or _use_new_zipfile_serialization=False): "
            "save it again with a current torch.save, whose zip format the published file has (github.com/UCSC-REAL/"
            "cifar-10-100n, data/CIFAR-10_human.pt)")


@dataclass(frozen=True)
class Version:
    """One of the published python versions, CIFAR-10 or CIFAR-100: its names, files and keys."""

    name: str  # as messages name it
    tarball: str  # the published tarball; the same name without .gz is a browser's gunzipped copy
    folder: str  # the tarball's one folder
    splits: tuple[tuple[str, tuple[str, ...]], ...]  # each split's batch files, in order
    meta: str  # the file of class names
    names_key: str  # meta's key of the class names the labels index
    labels_key: str  # each batch's key of those labels
    coarse_key: str  # CIFAR-100's superclass labels (each batch), "" where there are none
    binary: tuple[str, ...]  # the binary version's tarball, folder and first batch: refused by name
    max_batch: int  # bytes of a batch file read at most

    @property
    def tarballs(self) -> tuple[str, str]:
        return self.tarball, self.tarball.removesuffix(".gz")

    @property
    def members(self) -> tuple[str, ...]:
        return (*(m for _, batches in self.splits for m in batches), self.meta)


CIFAR10 = Version(name="CIFAR-10", tarball="cifar-10-python.tar.gz", folder="cifar-10-batches-py",
                  splits=(("train", BATCHES), ("test", ("test_batch",))), meta="batches.meta",
                  names_key="label_names", labels_key="labels", coarse_key="",
                  binary=("cifar-10-binary.tar.gz", "cifar-10-batches-bin", "data_batch_1.bin"), max_batch=_MAX_BATCH)
CIFAR100 = Version(name="CIFAR-100", tarball="cifar-100-python.tar.gz", folder="cifar-100-python",
                   splits=(("train", ("train",)), ("test", ("test",))), meta="meta",
                   names_key="fine_label_names", labels_key="fine_labels", coarse_key="coarse_labels",
                   binary=("cifar-100-binary.tar.gz", "cifar-100-binary", "train.bin"), max_batch=_MAX_BATCH_100)


def _cifar_files(version: Version, path: Path) -> tuple[dict[str, bytes], dict[str, str], list[Path]]:
    """The batch files by name, from the tarball or the extracted folder; how a message names each (its file, or
    the tarball and its member); the files read."""
    names = version.members
    tarball = next((n for n in version.tarballs if (path / n).is_file()), None) if path.is_dir() else None
    if tarball and not (path / version.folder).is_dir():
        # a folder holding the tarball (and, for CIFAR-10N, CIFAR-10_human.pt beside it)
        path = inside(path, tarball, where=str(path / tarball))
    if path.is_file():
        return _tar_files(version, path)
    folder = version.folder if (path / version.folder).is_dir() else ""
    if not (path / folder / names[0]).exists():
        _refuse_binary(version, path, [n for n in version.binary if (path / n).exists()])
    files = [require_file(inside(path, Path(folder, n), where=str(path / folder / n)),
                          f"a {version.name} python batch") for n in names]
    for f in files:
        _check_size(version, str(f), f.stat().st_size)
    return {f.name: f.read_bytes() for f in files}, {f.name: str(f) for f in files}, files


def _tar_files(version: Version, path: Path) -> tuple[dict[str, bytes], dict[str, str], list[Path]]:
    """``_cifar_files`` from the tarball ``path``, gzipped or not (``r:*``: a browser may have gunzipped it), read
    to its end (``_read_to_end``): a damaged download is refused as one, never read as batches."""
    names = version.members
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in names if n not in members]
            if missing:
                _refuse_binary(version, path, [f"{path.name} holding {n}" for n in version.binary[2:] if n in members])
                _read_to_end(tar)  # a damaged header ends the archive early: say so, not that batches are missing
                raise DataError(f"{path}: expected the {version.name} batches {', '.join(missing)}, found none")
            where = {n: f"{path} ({members[n].name})" for n in names}
            for n in names:
                _check_size(version, where[n], members[n].size)
            files = {n: tar.extractfile(members[n]).read() for n in names}
            _read_to_end(tar)
            return files, where, [path]
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise _corrupt(version, path, err) from err


def _read_to_end(tar: tarfile.TarFile) -> None:
    """Read the rest of ``tar``'s stream, to where gzip (bzip2, xz) checks its CRC: damaged compressed data can
    decompress to other bytes without an error before it, which ended the archive at a header read wrong (the
    batches after it reported missing) or passed as pixels. Raises what the decompressor raises."""
    while tar.fileobj.read(1 << 20):
        pass


def _corrupt(version: Version, path: Path, err: BaseException) -> DataError:
    """The error for a tarball that ``err`` found unreadable: no archive at all, a file the system could not read
    (``err.errno``), or a damaged one (cut short, or bytes changed: the data's CRC fails), to download again."""
    reason = _reason(err)
    if reason.startswith("file could not be opened successfully"):  # r:* tried every format
        return DataError(f"{path}: expected {version.tarball}, found a corrupt archive (neither a tar archive nor a "
                         f"gzip, bzip2 or xz compressed one)")
    damaged = not (isinstance(err, OSError) and err.errno)
    advice = ": the download was cut short or damaged; download it again" if damaged else ""
    return DataError(f"{path}: expected {version.tarball}, found a corrupt archive ({reason}){advice}")


def _refuse_binary(version: Version, path: Path, found: list[str]) -> None:
    """A ``DataError`` when ``found`` names files of the binary version (``data_batch_1.bin`` ...), which this
    reader does not read: the python version holds the same images."""
    if found:
        raise DataError(f"{path}: expected the python version of {version.name} ({version.tarball} or "
                        f"{version.folder}/), found the binary version ({', '.join(found)}); use the python "
                        f"version {version.tarball} (https://www.cs.toronto.edu/~kriz/cifar.html)")


def _check_size(version: Version, where: str, size: int) -> None:
    """A batch file is at most a few times the published one's size: one far larger (a small tarball can unpack to
    gigabytes) is refused before it is read."""
    if size > version.max_batch:
        raise DataError(f"{where}: expected a {version.name} python batch of at most {version.max_batch} bytes, found "
                        f"{size} bytes")


def _unpickle(data: bytes, where: str, version: Version) -> dict:
    """A batch (or the class names' file): the dict pickled in ``data``, its keys as text."""
    obj = _load_pickle(data, where, f"a pickled {version.name} batch")
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a dict, found {type(obj).__name__}")
    return {_text(k) if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, where: str):
    if key not in batch:
        raise DataError(f"{where}: expected the key {key!r}, found keys {_keys(batch)}")
    return batch[key]
