"""Tiny datasets written in exactly their published formats."""

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components.formats.cifar import BATCHES


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


def write_cifar10n(path: Path, clean: np.ndarray, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    table = {"clean_label": clean.copy(), "aggre_label": clean.copy(), "worse_label": rng.integers(0, 10, clean.size),
             "random_label1": rng.integers(0, 10, clean.size), "random_label2": clean.copy(),
             "random_label3": clean.copy()}
    torch.save(table, path)
    return path


def write_image(path: Path, size: tuple[int, int], colour, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def write_clothing1m(root: Path, *, per_split: int = 5) -> Path:
    """The official layout: images/<a>/<bb>/<id>.jpg, label kv files and the three key lists."""
    keys = {split: [f"images/{i % 2}/{i:02d}/{split}{i}.jpg" for i in range(per_split)]
            for split in ("train", "val", "test")}
    noisy, clean = [], []
    for split, split_keys in keys.items():
        for i, key in enumerate(split_keys):
            write_image(root / key, (40 + 7 * i, 30 + 3 * i), (20 * i, 100, 200), "RGB")
            if split == "train":
                noisy.append(f"{key} {i % 14}")
                if i % 2 == 0:
                    clean.append(f"{key} {(i + 1) % 14}")
            else:
                clean.append(f"{key} {i % 14}")
    (root / "noisy_label_kv.txt").write_text("\n".join(noisy) + "\n")
    (root / "clean_label_kv.txt").write_text("\n".join(clean) + "\n")
    for split, name in (("train", "noisy_train_key_list.txt"), ("val", "clean_val_key_list.txt"),
                        ("test", "clean_test_key_list.txt")):
        (root / name).write_text("\n".join(keys[split]) + "\n")
    return root
