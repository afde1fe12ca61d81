"""Tiny datasets written in exactly their published formats (Clothing1M's writer ships with the benchmarks)."""

import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from benchmarks.fixtures import write_clothing1m, write_image
from components.formats.cifar import BATCHES

__all__ = ["CIFAR100_SUPERCLASSES", "STORED_BLOCK", "cifar_batch", "cifar_meta", "gzip_stored", "refuse_resizes_over",
           "stored_offset", "write_cifar10", "write_cifar10n", "write_cifar100", "write_cifar100n", "write_clothing1m",
           "write_distinct_image", "write_image"]

STORED_BLOCK = 65535  # bytes of data in each of gzip_stored's deflate blocks


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


def refuse_resizes_over(limit: int, monkeypatch) -> list[tuple[int, int]]:
    """The sizes every ``Image.resize`` is asked for, in order; one of more than ``limit`` pixels is recorded and
    refused (an AssertionError), never made: the test would need gigabytes."""
    from PIL import Image  # noqa: PLC0415

    sizes, resize = [], Image.Image.resize

    def recorded(img, size, *args, **kwargs):
        sizes.append(tuple(size))
        assert size[0] * size[1] <= limit, f"resize to {size}: over {limit} pixels"
        return resize(img, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recorded)
    return sizes


def gzip_stored(data: bytes) -> bytes:
    """``data`` as a gzip file of stored (uncompressed) deflate blocks of ``STORED_BLOCK`` bytes, each after a
    5-byte header (final flag, length, its complement), written here byte by byte: the same bytes under every zlib,
    so that damage at a chosen offset (a block's length, a tar header, a pixel) fails the same way everywhere.
    ``stored_offset`` gives where a byte of ``data`` lies in it."""
    blocks = [data[i:i + STORED_BLOCK] for i in range(0, len(data), STORED_BLOCK)] or [b""]
    header = b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\xff"  # deflate, no name, mtime 0, unknown system
    body = b"".join(bytes([k == len(blocks) - 1]) + struct.pack("<HH", len(b), len(b) ^ 0xFFFF) + b
                    for k, b in enumerate(blocks))
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def stored_offset(offset: int) -> int:
    """Where byte ``offset`` of the data lies in ``gzip_stored``'s file: after the 10-byte gzip header and the
    5-byte header of its block and of each block before it."""
    return 10 + 5 * (offset // STORED_BLOCK + 1) + offset


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
    return _write_cifar(root, "cifar-10-batches-py", files, tarball=tarball)


def _write_cifar(root: Path, folder: str, files: dict[str, bytes], *, tarball: bool) -> Path:
    """``files`` in ``root/folder/``, returning ``root``; or in ``folder/`` inside the tarball that the folder's
    dataset is published as (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``), returning its path."""
    root.mkdir(parents=True, exist_ok=True)
    if tarball:
        path = root / ("cifar-10-python.tar.gz" if folder == "cifar-10-batches-py" else f"{folder}.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return path
    (root / folder).mkdir(exist_ok=True)
    for name, data in files.items():
        (root / folder / name).write_bytes(data)
    return root


# CIFAR-100's 20 coarse classes (meta's coarse_label_names, in index order) with their fine classes
CIFAR100_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


def write_cifar100(root: Path, *, per_class: int = 2, test_per_class: int = 1, tarball: bool = False,
                   seed: int = 0) -> Path:
    """``cifar-100-python/`` (or its ``cifar-100-python.tar.gz``) as published: pickled dicts ``train`` and ``test``
    (``data`` uint8 [N, 3072], ``fine_labels``, ``coarse_labels``, ``filenames``, ``batch_label``) and ``meta``
    (``fine_label_names``, alphabetical, and ``coarse_label_names``); ``per_class`` training images a fine class,
    in a shuffled order."""
    rng = np.random.default_rng(seed)
    fine_names = sorted(name for fine in CIFAR100_SUPERCLASSES.values() for name in fine)
    coarse_of = {name: c for c, fine in enumerate(CIFAR100_SUPERCLASSES.values()) for name in fine}

    def split(n_per_class: int, label: bytes) -> dict:
        fine = rng.permutation(np.repeat(np.arange(100), n_per_class)).tolist()
        return {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))], b"batch_label": label,
                b"fine_labels": fine, b"coarse_labels": [coarse_of[fine_names[f]] for f in fine],
                b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}

    files = {"train": split(per_class, b"training batch 1 of 1"),
             "test": split(test_per_class, b"testing batch 1 of 1"),
             "meta": {b"fine_label_names": [n.encode() for n in fine_names],
                      b"coarse_label_names": [n.encode() for n in CIFAR100_SUPERCLASSES]}}
    return _write_cifar(root, "cifar-100-python", {name: pickle.dumps(d, protocol=2) for name, d in files.items()},
                        tarball=tarball)


def write_cifar100n(path: Path, clean: np.ndarray, coarse: np.ndarray, seed: int = 0) -> Path:
    """``CIFAR-100_human.pt`` as torch.save writes it: ``clean_label`` (``clean``), ``noisy_label`` (40 % of them
    moved to a random class), ``clean_coarse_label`` (``coarse``) and ``noisy_coarse_label``."""
    rng = np.random.default_rng(seed)
    noisy = np.where(rng.random(clean.size) < 0.4, rng.integers(0, 100, clean.size), clean)
    torch.save({"clean_label": clean.copy(), "noisy_label": noisy, "clean_coarse_label": coarse.copy(),
                "noisy_coarse_label": coarse.copy()}, path)
    return path


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
