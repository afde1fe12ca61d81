"""Tiny datasets written in exactly their published formats (Clothing1M's writer ships with the benchmarks)."""

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.fixtures import write_clothing1m, write_image
from components.formats.cifar import BATCHES

__all__ = ["cifar_batch", "cifar_meta", "write_cifar10", "write_cifar10n", "write_clothing1m", "write_distinct_image",
           "write_image"]


def write_distinct_image(path: Path, i: int) -> None:
    """The ``i``-th (0 to 63) of a set of 12x12 grey PNGs no two of which are near-duplicates by validate's
    thumbnails (an image folder's reader holds near-duplicates out together): three blocks whose grey levels spell
    ``i`` in base 4, and the pixel at (0, 0) ``i * 10 % 256``, a marker a test can read back."""
    from PIL import Image  # noqa: PLC0415

    pixels = np.zeros((12, 12), np.uint8)
    pixels[:6, :6], pixels[:6, 6:], pixels[6:] = (i % 4) * 64 + 16, (i // 4 % 4) * 64 + 40, (i // 16) * 64 + 90
    pixels[0, 0] = i * 10 % 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def cifar_batch(n: int, rng: np.random.Generator, label_offset: int = 0) -> dict:
    labels = [(i + label_offset) % 10 for i in range(n)]
    return {b"batch_label": b"training batch", b"labels": labels,
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(n)]}


def cifar_meta() -> dict:
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    return {b"num_cases_per_batch": 4, b"label_names": names, b"num_vis": 3072}


def write_cifar10(root: Path, *, per_batch: int = 4, tarball: bool = False, seed: int = 0) -> Path:
    """``cifar-10-batches-py/`` (or its ``cifar-10-python.tar.gz``) with 5 x ``per_batch`` training images."""
    rng = np.random.default_rng(seed)
    files = {name: pickle.dumps(cifar_batch(per_batch, rng, i), protocol=2) for i, name in enumerate(BATCHES)}
    files["test_batch"] = pickle.dumps(cifar_batch(per_batch, rng, 7), protocol=2)
    files["batches.meta"] = pickle.dumps(cifar_meta(), protocol=2)
    root.mkdir(parents=True, exist_ok=True)
    if tarball:
        path = root / "cifar-10-python.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    folder = root / "cifar-10-batches-py"
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return root


def write_cifar10n(path: Path, clean: np.ndarray, seed: int = 0, *, numpy1: bool = False) -> Path:
    """``CIFAR-10_human.pt``: ``aggre_label``, ``random_label2`` and ``random_label3`` equal to ``clean``.
    ``numpy1``: the pickle exactly as torch.save writes it under numpy 1.x, as the published file was: the same
    bytes but for ``_reconstruct``'s module, ``numpy.core.multiarray`` (numpy 2 moved it to ``numpy._core``)."""
    rng = np.random.default_rng(seed)
    table = {"clean_label": clean.copy(), "aggre_label": clean.copy(), "worse_label": rng.integers(0, 10, clean.size),
             "random_label1": rng.integers(0, 10, clean.size), "random_label2": clean.copy(),
             "random_label3": clean.copy()}
    if not numpy1:
        torch.save(table, path)
        return path
    buffer = io.BytesIO()
    torch.save(table, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            data = source.read(name)
            if name.endswith("/data.pkl"):  # a GLOBAL opcode ends at a newline: no length to fix
                data = data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct")
            target.writestr(name, data)
    return path
