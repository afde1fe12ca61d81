"""Tiny datasets written in their published layouts: the benchmarks ingest them (``benchmarks/data_loading.py``,
so this module ships in the image) and the format tests (``tests/components/formats_fixtures.py``) reuse them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


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
