"""Fashion-MNIST (and the MNIST family): four IDX files, gzipped as published or uncompressed (as Kaggle and
torchvision's ``raw/`` folder hold them), each inside the dataset folder (a symbolic link leading out of it is
refused)."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from components.common.errors import DataError
from components.formats import Dataset, check_split, inside, require_file

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801


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
    """Read an IDX file, gzipped if its name ends in ``.gz`` (else uncompressed), and check its magic number and
    size. ``count``: the number of items expected (the first dimension) and what it is, checked from the header
    before any data is read; the data read is at most what the header promises, so a file holding more (or a header
    promising a huge array) never fills the memory."""
    require_file(path, "an IDX file")
    gzipped = path.name.endswith(".gz")
    try:
        with gzip.open(path, "rb") if gzipped else open(path, "rb") as fh:
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
            size = int(np.prod(dims))
            raw = fh.read(size)
            extra = sum(len(chunk) for chunk in iter(lambda: fh.read(1 << 20), b""))  # counted, never kept
    except (OSError, EOFError, zlib.error) as err:
        what = "a gzip file" if gzipped else "an IDX file"
        raise DataError(f"{path}: expected {what}, found a truncated or corrupt one ({err})") from err
    if len(raw) + extra != size:
        raise DataError(f"{path}: expected {size} data bytes for shape {dims}, found {len(raw) + extra}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)
