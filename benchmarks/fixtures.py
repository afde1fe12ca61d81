"""Tiny datasets written in their published layouts: the benchmarks ingest them (``benchmarks/speed/data_loading.py``,
so this module ships in the image) and the format tests (``tests/components/formats_fixtures.py``) reuse them."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int], colour, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


def write_clothing1m(root: Path, *, per_split: int = 5, train: int | None = None, noise_rate: float = 0.0,
                     seed: int = 0, classes: int = 14) -> Path:
    """The official layout: ``images/<a>/<bb>/<id>.jpg`` (real JPEGs of varied sizes: a colour per class over a
    random texture, so a small network can learn them), ``noisy_label_kv.txt`` (the training keys' labels, a
    ``noise_rate`` share of them wrong), ``clean_label_kv.txt`` (every other training key, and the validation and
    test keys) and the three key lists. ``per_split`` images in val and test, ``train`` (default ``per_split``)
    in training."""
    rng = np.random.default_rng(seed)
    counts = {"train": per_split if train is None else train, "val": per_split, "test": per_split}
    noisy, clean, lists = [], [], {}
    for split, count in counts.items():
        lists[split] = []
        for i in range(count):
            key = f"images/{i % 2}/{i % 100:02d}/{split}{i}.jpg"
            label = i % classes
            _write_texture(root / key, label, classes, rng)
            lists[split].append(key)
            if split == "train":
                wrong = rng.random() < noise_rate
                noisy.append(f"{key} {(label + rng.integers(1, classes)) % classes if wrong else label}")
                if i % 2 == 0:
                    clean.append(f"{key} {label}")
            else:
                clean.append(f"{key} {label}")
    (root / "noisy_label_kv.txt").write_text("\n".join(noisy) + "\n")
    (root / "clean_label_kv.txt").write_text("\n".join(clean) + "\n")
    for split, name in (("train", "noisy_train_key_list.txt"), ("val", "clean_val_key_list.txt"),
                        ("test", "clean_test_key_list.txt")):
        (root / name).write_text("\n".join(lists[split]) + "\n")
    return root


def _write_texture(path: Path, label: int, classes: int, rng: np.random.Generator) -> None:
    """A JPEG of a random size whose hue says its class, under random texture."""
    width, height = int(rng.integers(40, 90)), int(rng.integers(36, 80))
    hue = np.array(colorsys.hsv_to_rgb(label / classes, 0.8, 0.7)) * 255
    blotches = np.kron(rng.normal(0.0, 50.0, (height // 8 + 1, width // 8 + 1, 1)), np.ones((8, 8, 1)))
    pixels = hue + blotches[:height, :width] + rng.normal(0.0, 15.0, (height, width, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(path, quality=90)
