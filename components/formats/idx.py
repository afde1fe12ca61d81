"""Fashion-MNIST (and the MNIST family): four gzipped IDX files, each inside the dataset folder (a symbolic link
leading out of it is refused)."""

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
    """Fashion-MNIST from the four gzipped IDX files of ``FASHION_MNIST_FILES`` in ``root``: uint8 images
    ``[N, H, W, 1]`` and int64 labels per split, with ``FASHION_MNIST_CLASSES``. Reads only; a ``DataError`` for a
    missing file, one outside ``root``, a wrong magic number or size, or counts that disagree."""
    arrays, inputs = {}, []
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images = read_idx(inside(root, images_name, where=str(root / images_name)), IDX_IMAGES)[..., None]
        labels = read_idx(inside(root, labels_name, where=str(root / labels_name)), IDX_LABELS).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{root / images_name}: expected as many images as {labels_name} has labels "
                            f"({labels.shape[0]}), found {images.shape[0]}")
        check_split(split, images, labels, len(FASHION_MNIST_CLASSES), root / labels_name)
        arrays[split] = (images, labels)
        inputs += [root / images_name, root / labels_name]
    return Dataset(*arrays["train"], *arrays["test"], class_names=list(FASHION_MNIST_CLASSES), inputs=inputs)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file and check its magic number and size."""
    require_file(path, "an IDX file")
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{path}: expected a gzip file, found a truncated or corrupt one ({err})") from err
    if len(raw) < 4 or int.from_bytes(raw[:4], "big") != magic:
        found = f"0x{int.from_bytes(raw[:4], 'big'):08x}" if len(raw) >= 4 else f"{len(raw)} bytes"
        raise DataError(f"{path}: expected IDX magic number 0x{magic:08x}, found {found}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(f"{path}: expected {int(np.prod(dims))} data bytes for shape {dims}, "
                        f"found {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
