import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.formats.idx import FASHION_MNIST_FILES, IDX_IMAGES, IDX_LABELS


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """The IDX format: a big-endian magic number (0x0000 08 <ndim>), one big-endian uint32 per dimension,
    then the unsigned bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.write_bytes(gzip.compress(idx_bytes(array, magic)))


def make_fashion_mnist(root: Path, *, train: int = 300, test: int = 60, seed: int = 0,
                       mislabelled_test: float = 0.0) -> Path:
    """A tiny Fashion-MNIST in the published file layout: class c is a bright band at rows 2c..2c+2.
    ``mislabelled_test`` of the test labels name the next class, capping any model's test accuracy below 1."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 60, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 * c + 4:2 * c + 7, 4:24] = 250
        if split == "test":
            wrong = rng.permutation(n)[:round(mislabelled_test * n)]
            labels[wrong] = (labels[wrong] + 1) % 10
        images_name, labels_name = FASHION_MNIST_FILES[split]
        write_idx(root / images_name, images, IDX_IMAGES)
        write_idx(root / labels_name, labels, IDX_LABELS)
    return root


def write_manifest(ingest: Path, class_names: list[str], counts: dict[str, int], *, image_shape=(8, 8, 1),
                   **extra) -> None:
    """``ingest/manifest.json`` with the keys every step reads (``read_manifest``): an array dataset's by default."""
    manifest = {"dataset": "imagefolder", "format": "arrays", "class_names": list(class_names), "counts": counts,
                "image_shape": list(image_shape), **extra}
    (ingest / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def fashion_dir(tmp_path):
    return make_fashion_mnist(tmp_path / "fashion-mnist")


@pytest.fixture
def workdir(tmp_path):
    """A tiny Fashion-MNIST and a params.yaml for short training, as the current directory."""
    make_fashion_mnist(tmp_path / "data" / "fashion-mnist", train=400)
    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["noise"].update(train_size=0, rate=0.3)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=2, batch_size=32, progress=False, checkpoint_every=5)
    params["mlnt"].update(ramp_start=0.5, ramp_end=1.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)
