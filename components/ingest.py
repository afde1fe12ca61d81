"""ingest: raw dataset files -> ``artifacts/ingest/{train,test}.npz`` and ``manifest.json``.

Images are stored as uint8 ``[N, H, W, C]`` and labels as int64 ``[N]``. The manifest records the source,
the sha256 of every input file, the counts and the class names.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import write_atomic, write_json
from components.config import cli

DATASETS = ("fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                       "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801


class DataError(ValueError):
    """An input file does not hold what its format promises."""


@dataclass(frozen=True)
class IngestConfig:
    dataset: str = "fashion-mnist"  # one of DATASETS
    path: str = "data/fashion-mnist"  # where the dataset's files are

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}. Valid: {', '.join(DATASETS)}")


OUT = Path("artifacts/ingest")


def run(config: IngestConfig, *, out: Path = OUT) -> dict:
    """Read the dataset and write the ingest artifacts to ``out``; returns the manifest."""
    root = Path(config.path)
    splits, inputs = {}, {}
    for split, (images_name, labels_name) in FASHION_MNIST_FILES.items():
        images_path, labels_path = root / images_name, root / labels_name
        images = read_idx(images_path, IDX_IMAGES)[..., None]
        labels = read_idx(labels_path, IDX_LABELS).astype(np.int64)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{images_path}: expected as many images as {labels_path.name} has labels "
                            f"({labels.shape[0]}), found {images.shape[0]}")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{labels_path}: expected labels in [0, {len(FASHION_MNIST_CLASSES) - 1}], "
                            f"found {int(labels.max())}")
        splits[split] = (images, labels)
        inputs.update({p.name: sha256_file(p) for p in (images_path, labels_path)})
    out = Path(out)
    for split, (images, labels) in splits.items():
        write_atomic(out / f"{split}.npz", lambda fh, i=images, la=labels: np.savez(fh, images=i, labels=la))
    manifest = {"dataset": config.dataset, "source": str(root), "inputs_sha256": inputs,
                "counts": {split: int(v[1].shape[0]) for split, v in splits.items()},
                "image_shape": list(splits["train"][0].shape[1:]), "class_names": list(FASHION_MNIST_CLASSES)}
    write_json(out / "manifest.json", manifest)
    return manifest


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST family's format) and check its magic number and size."""
    if not path.is_file():
        raise DataError(f"{path}: expected an IDX file, found no such file")
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _main(configs: dict) -> None:
    manifest = run(configs["ingest"])
    print(f"ingest: {manifest['dataset']} {manifest['counts']} -> {OUT}")


main = cli("ingest", {"ingest": IngestConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
