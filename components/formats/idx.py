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
    ``[N, H, W, 1]`` (square: H = W) and int64 labels per split, with ``FASHION_MNIST_CLASSES``. Reads only; a
    ``DataError`` for a missing file, one outside ``root``, a wrong magic number or size, images that are not
    square (or not the training images' size), or counts that disagree."""
    arrays, inputs = {}, []
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        labels = read_idx(inside(root, labels_name, where=str(root / labels_name)), IDX_LABELS).astype(np.int64)
        images = read_idx(inside(root, images_name, where=str(root / images_name)), IDX_IMAGES,
                          count=(labels.shape[0], f"as many images as {labels_name} has labels"))[..., None]
        _check_square(root / images_name, images)
        check_split(split, images, labels, len(FASHION_MNIST_CLASSES), root / labels_name)
        arrays[split] = (images, labels)
        inputs += [root / images_name, root / labels_name]
    (train_name, _), (test_name, _) = FASHION_MNIST_FILES.values()
    (h0, w0), (height, width) = arrays["train"][0].shape[1:3], arrays["test"][0].shape[1:3]
    if (height, width) != (h0, w0):
        raise DataError(f"{root / test_name}: expected {w0}x{h0} images (width x height) like {train_name}, found "
                        f"{width}x{height}")
    return Dataset(*arrays["train"], *arrays["test"], class_names=list(FASHION_MNIST_CLASSES), inputs=inputs)


def _check_square(path: Path, images: np.ndarray) -> None:
    """Every step downstream (the networks, the model card's input shape) takes square images: refuse others here,
    where the file can still be named, as the image folder reader does."""
    height, width = images.shape[1:3]
    if height != width:
        raise DataError(f"{path}: expected square images (width = height), found {width}x{height} images (width x "
                        f"height)")


def read_idx(path: Path, magic: int, *, count: tuple[int, str] | None = None) -> np.ndarray:
    """Read a gzipped IDX file and check its magic number and size. ``count``: the number of items expected (the
    first dimension) and what it is, checked from the header before any data is read; the data read is at most what
    the header promises, so a file holding more (or a header promising a huge array) never fills the memory."""
    require_file(path, "an IDX file")
    try:
        with gzip.open(path, "rb") as fh:
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
        raise DataError(f"{path}: expected a gzip file, found a truncated or corrupt one ({err})") from err
    if len(raw) + extra != size:
        raise DataError(f"{path}: expected {size} data bytes for shape {dims}, found {len(raw) + extra}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)
