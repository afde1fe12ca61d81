"""Clothing1M in its official layout, read one image at a time (never held in memory whole).

Layout: ``images/`` (the JPEGs, e.g. ``images/0/00/123.jpg``), ``noisy_label_kv.txt`` and ``clean_label_kv.txt``
(one ``<image key> <label>`` per line), ``noisy_train_key_list.txt``, ``clean_val_key_list.txt`` and
``clean_test_key_list.txt`` (one image key per line), and optionally ``category_names_eng.txt``.

Splits: ``train`` = the noisy training keys with their noisy labels (and the clean label where
``clean_label_kv.txt`` has one, else -1); ``val`` and ``test`` = the clean keys with their clean labels.

Every file read lies inside the dataset folder: a key that is absolute or climbs out (``..``), or a list file or
image that is a symbolic link leading out of the folder, is a ``DataError`` naming the list and line (or the file),
never read. The text files are UTF-8: a byte that is not is a ``DataError`` naming the file and line. Images are
checked against a pixel limit from their header before they are decoded
(``components.formats.images.MAX_PIXELS``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.common.errors import DataError
from components.formats import inside, not_utf8, require_file
from components.formats.images import MAX_PIXELS, check_encoded

CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Down Coat",
           "Suit", "Shawl", "Dress", "Vest", "Underwear")
LABEL = re.compile(r"-?[0-9]+")  # what int() reads as a label here (ASCII digits: not '1²', not '--3')
SPLITS = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt", "test": "clean_test_key_list.txt"}


def read_label_kv(path: Path, num_classes: int) -> tuple[dict[str, int], dict[str, list[int]]]:
    """The ``<image key> <label>`` lines of ``path``: a dict of key to label (blank lines skipped), and the keys
    listed more than once with different labels, each with its labels in the order they first appear. Such a key
    keeps its last label, as the authors' loader does (a dict filled line by line); the caller reports them. A
    ``DataError`` when the file is missing, or naming the line of a malformed entry, a label outside
    ``[0, num_classes - 1]`` or a byte that is not UTF-8."""
    require_file(path, "a Clothing1M label file (<image key> <label> per line)")
    table: dict[str, int] = {}
    conflicts: dict[str, list[int]] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip():
                    _add_label(table, conflicts, line, where=f"{path} line {number}", num_classes=num_classes)
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    return table, conflicts


def _add_label(table: dict[str, int], conflicts: dict[str, list[int]], line: str, *, where: str,
               num_classes: int) -> None:
    """Enter the ``<image key> <label>`` ``line`` into ``table`` (and a key's labels into ``conflicts`` when they
    differ); a ``DataError`` naming ``where`` for a malformed line or a label out of range."""
    parts = line.split()
    if len(parts) != 2 or not LABEL.fullmatch(parts[1]):
        raise DataError(f"{where}: expected '<image key> <label>', found {line.strip()!r}")
    key, label = parts[0], int(parts[1])
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: expected a label in [0, {num_classes - 1}], found {label}")
    if table.get(key, label) != label or key in conflicts:
        labels = conflicts.setdefault(key, [table[key]])
        if label not in labels:
            labels.append(label)
    table[key] = label


def class_names(root: Path) -> list[str]:
    """The class names in ``root``'s ``category_names_eng.txt`` (one per non-blank line), or ``CLASSES`` when the
    file is absent or empty; a ``DataError`` when it is a symbolic link leading out of ``root``."""
    path = root / "category_names_eng.txt"
    if path.is_file() or path.is_symlink():
        inside(root, path.name, where=str(path))
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    return [n.strip() for n in text.splitlines() if n.strip()] or list(CLASSES)


def input_files(root: Path) -> list[Path]:
    """The files the manifest hashes: the two label files and the three key lists in ``root``; a ``DataError`` when
    one is missing or leads out of ``root``."""
    names = ["noisy_label_kv.txt", "clean_label_kv.txt", *SPLITS.values()]
    return [require_file(inside(root, n, where=str(root / n)), "a Clothing1M list file") for n in names]


def split_keys(root: Path, split: str, *, noisy: dict[str, int], clean: dict[str, int]) -> list[tuple[str, int, int]]:
    """``(key, label, clean_label)`` for each key of ``split``: the noisy label for ``train`` (with the clean one
    where ``clean_label_kv.txt`` has it, else -1), the clean label for ``val`` and ``test``."""
    keys_file = inside(root, SPLITS[split], where=str(root / SPLITS[split]))
    table = noisy if split == "train" else clean
    real_root = Path(os.path.realpath(root))
    rows = []
    try:
        with open(keys_file, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                key = line.strip()
                if not key:
                    continue
                if key not in table:
                    which = "noisy_label_kv.txt" if split == "train" else "clean_label_kv.txt"
                    raise DataError(f"{keys_file} line {number}: expected a label for {key} in {which}, found none")
                if not inside(root, key, where=f"{keys_file} line {number}", real_root=real_root).is_file():
                    raise DataError(f"{keys_file} line {number}: expected the image {key}, found no such file")
                rows.append((key, table[key], clean.get(key, -1)))
    except UnicodeDecodeError as err:
        raise not_utf8(keys_file, err) from err
    return rows


def read_image(root: Path, key: str, *, size: int = 0, max_pixels: int = MAX_PIXELS,
               real_root: Path | None = None) -> bytes:
    """The encoded bytes of the image ``key`` (inside ``root``), after proving they decode (``check_encoded``,
    which refuses an image over ``max_pixels`` from its header)."""
    path = inside(root, key, where=f"{root / key} (key {key})", real_root=real_root)
    if not path.is_file():
        raise DataError(f"{path}: expected the image {key} (listed in the key lists), found no such file")
    payload = path.read_bytes()
    check_encoded(payload, where=f"{path} (key {key})", size=size, max_pixels=max_pixels)
    return payload
