"""Clothing1M in its official layout, streamed into shards (never held in memory whole).

Layout: ``images/`` (the JPEGs, e.g. ``images/0/00/123.jpg``), ``noisy_label_kv.txt`` and ``clean_label_kv.txt``
(one ``<image key> <label>`` per line), ``noisy_train_key_list.txt``, ``clean_val_key_list.txt`` and
``clean_test_key_list.txt`` (one image key per line), and optionally ``category_names_eng.txt``.

Splits: ``train`` = the noisy training keys with their noisy labels (and the clean label where
``clean_label_kv.txt`` has one, else -1); ``val`` and ``test`` = the clean keys with their clean labels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from components.formats import DataError, require_file
from components.formats.images import load_image

CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Down Coat",
           "Suit", "Shawl", "Dress", "Vest", "Underwear")
SPLITS = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt", "test": "clean_test_key_list.txt"}


def read_label_kv(path: Path, num_classes: int) -> dict[str, int]:
    require_file(path, "a Clothing1M label file (<image key> <label> per line)")
    table = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{path} line {number}: expected '<image key> <label>', found {line.strip()!r}")
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise DataError(f"{path} line {number}: expected a label in [0, {num_classes - 1}], found {label}")
            table[parts[0]] = label
    return table


def class_names(root: Path) -> list[str]:
    path = root / "category_names_eng.txt"
    names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()] if path.is_file() else []
    return names or list(CLASSES)


def input_files(root: Path) -> list[Path]:
    names = ["noisy_label_kv.txt", "clean_label_kv.txt", *SPLITS.values()]
    return [require_file(root / n, "a Clothing1M list file") for n in names]


def iter_split(root: Path, split: str, *, noisy: dict[str, int], clean: dict[str, int], size: int,
               digest: hashlib._Hash) -> Iterator[tuple[str, np.ndarray, int, int]]:
    """Yield ``(key, image, label, clean_label)`` for each key of ``split``, one image in memory at a time;
    ``digest`` absorbs each key and its file's sha256, so the manifest can vouch for the images too."""
    keys_file = root / SPLITS[split]
    table = noisy if split == "train" else clean
    with open(keys_file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            key = line.strip()
            if not key:
                continue
            if key not in table:
                which = "noisy_label_kv.txt" if split == "train" else "clean_label_kv.txt"
                raise DataError(f"{keys_file} line {number}: expected a label for {key} in {which}, found none")
            image_path = root / key
            if not image_path.is_file():
                raise DataError(f"{keys_file} line {number}: expected the image {key}, found no such file")
            digest.update(f"{key} {hashlib.sha256(image_path.read_bytes()).hexdigest()}\n".encode())
            yield key, load_image(image_path, channels=3, size=size), table[key], clean.get(key, -1)
