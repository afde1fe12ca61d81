"""Fashion-MNIST (and the MNIST family): four IDX files, gzipped as published or uncompressed (as Kaggle and
torchvision's ``raw/`` folder hold them, or a browser that gunzips on download under the ``.gz`` name), each inside
the dataset folder (a symbolic link leading out of it is refused)."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from components.common.errors import DataError
from components.formats import Dataset, check_split, inside, require_file

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801
IDX_UBYTE = b"\x00\x00\x08"  # the start of every IDX file of unsigned bytes (its 4th byte: the dimensions)
CHUNK = 1 << 20  # bytes read at a time


def read_fashion_mnist(root: Path) -> Dataset:
    """Fashion-MNIST from the four IDX files of ``FASHION_MNIST_FILES`` in ``root`` (each gzipped, or uncompressed
    where the gzipped one is absent: ``idx_file``): uint8 images ``[N, H, W, 1]`` (square: H = W) and int64 labels
    per split, with ``FASHION_MNIST_CLASSES``. Reads only; a ``DataError`` for a missing file, one outside ``root``,
    a wrong magic number or size, images that are not square (or not the training images' size), or counts that
    disagree."""
    arrays, inputs = {}, []
    for split, names in FASHION_MNIST_FILES.items():
        images_path, labels_path = (idx_file(root, name) for name in names)
        labels = read_idx(labels_path, IDX_LABELS).astype(np.int64)
        images = read_idx(images_path, IDX_IMAGES,
                          count=(labels.shape[0], f"as many images as {labels_path.name} has labels"))[..., None]
        _check_square(images_path, images)
        check_split(split, images, labels, len(FASHION_MNIST_CLASSES), labels_path)
        arrays[split] = (images, labels)
        inputs += [images_path, labels_path]
    (h0, w0), (height, width) = arrays["train"][0].shape[1:3], arrays["test"][0].shape[1:3]
    if (height, width) != (h0, w0):
        raise DataError(f"{inputs[2]}: expected {w0}x{h0} images (width x height) like {inputs[0].name}, found "
                        f"{width}x{height}")
    return Dataset(*arrays["train"], *arrays["test"], class_names=list(FASHION_MNIST_CLASSES), inputs=inputs)


def idx_file(root: Path, name: str) -> Path:
    """The IDX file ``name`` in ``root`` (proven inside it), or the same file uncompressed (``name`` without
    ``.gz``, as Kaggle and torchvision's ``raw/`` folder hold it) where the gzipped one is absent; a ``DataError``
    naming both when neither is there."""
    plain = name.removesuffix(".gz")
    for candidate in (name, plain):
        if (root / candidate).is_file() or (root / candidate).is_symlink():
            return inside(root, candidate, where=str(root / candidate))
    raise DataError(f"{root / name}: expected an IDX file, found no such file (nor {plain}, the file uncompressed)")


def _check_square(path: Path, images: np.ndarray) -> None:
    """Every step downstream (the networks, the model card's input shape) takes square images: refuse others here,
    where the file can still be named, as the image folder reader does."""
    height, width = images.shape[1:3]
    if height != width:
        raise DataError(f"{path}: expected square images (width = height), found {width}x{height} images (width x "
                        f"height)")


def read_idx(path: Path, magic: int, *, count: tuple[int, str] | None = None) -> np.ndarray:
    """Read an IDX file, gzipped if its name ends in ``.gz`` unless it starts as an uncompressed one (``_gzipped``),
    and check its magic number and size. ``count``: the number of items expected (the first dimension) and what it
    is, checked from the header before any data is read; the data is read a MiB at a time up to what the header
    promises, so a file holding more, or a header promising a huge array (one bit flipped in a dimension: 141 GB),
    never fills the memory: only the data actually there is held."""
    require_file(path, "an IDX file")
    gzipped = path.name.endswith(".gz")
    try:
        gzipped = gzipped and _gzipped(path)
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
            dims = _read_header(fh, path, magic, count)
            size = math.prod(dims)  # Python's integers: numpy's int64 product of a crafted header wrapped around
            raw, extra = _read_data(fh, size)
    except (OSError, EOFError, zlib.error) as err:
        what = "a gzip file" if gzipped else "an IDX file"
        raise DataError(f"{path}: expected {what}, found a truncated or corrupt one ({err})") from err
    if len(raw) + extra != size:
        raise DataError(f"{path}: expected {size} data bytes for shape {dims}, found {len(raw) + extra}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def _gzipped(path: Path) -> bool:
    """Whether the ``.gz`` file ``path`` is to be read through gzip: not where it starts as an uncompressed IDX file
    of bytes does (``IDX_UBYTE``), as a browser that gunzips on download leaves it under its ``.gz`` name (CIFAR-10's
    tarball too). Anything else is read as gzip, and reported as such if it is not."""
    with open(path, "rb") as fh:
        return fh.read(len(IDX_UBYTE)) != IDX_UBYTE


def _read_header(fh: BinaryIO, path: Path, magic: int, count: tuple[int, str] | None) -> list[int]:
    """The dimensions of the IDX file open in ``fh``, after checking its magic number and ``count``."""
    head = fh.read(4)
    if len(head) < 4 or int.from_bytes(head, "big") != magic:
        found = f"0x{int.from_bytes(head, 'big'):08x}" if len(head) == 4 else f"{len(head)} bytes"
        raise DataError(f"{path}: expected IDX magic number 0x{magic:08x}, found {found}")
    header = fh.read(4 * (magic & 0xFF))
    dims = [int.from_bytes(header[i:i + 4], "big") for i in range(0, len(header) - 3, 4)]
    if len(dims) != magic & 0xFF:
        raise DataError(f"{path}: expected {magic & 0xFF} dimensions in the IDX header, found {len(dims)}")
    if count is not None and dims[0] != count[0]:
        raise DataError(f"{path}: expected {count[1]} ({count[0]}), found {dims[0]}")
    return dims


def _read_data(fh: BinaryIO, size: int) -> tuple[bytes, int]:
    """Up to ``size`` bytes of ``fh``, read ``CHUNK`` bytes at a time (one read of ``size`` allocates it all first),
    and how many bytes follow them (counted, never kept)."""
    chunks, held = [], 0
    while held < size and (chunk := fh.read(min(CHUNK, size - held))):
        chunks.append(chunk)
        held += len(chunk)
    extra = sum(len(chunk) for chunk in iter(lambda: fh.read(CHUNK), b""))
    return b"".join(chunks), extra
