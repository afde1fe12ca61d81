"""Clothing1M in its official layout, read one image at a time (never held in memory whole).

Layout: ``images/`` (the JPEGs, e.g. ``images/0/00/123.jpg``), ``noisy_label_kv.txt`` and ``clean_label_kv.txt``
(one ``<image key> <label>`` per line), ``noisy_train_key_list.txt``, ``clean_val_key_list.txt`` and
``clean_test_key_list.txt`` (one image key per line), and optionally ``category_names_eng.txt``. The authors'
layout (MLNT's loader opens ``root + key[7:]``), with the image folders ``0`` .. ``9`` at the top and no
``images/``, is read too: every key's file is then the key without its ``images/``.

Splits: ``train`` = the noisy training keys with their noisy labels (and the clean label where
``clean_label_kv.txt`` has one, else -1); ``val`` and ``test`` = the clean keys with their clean labels. A key in
two of these lists (a test image trained on, say) or twice in one is a ``DataError`` naming both lines;
``clean_train_key_list.txt``, which the paper does not use, is not read.

Every file read lies inside the dataset folder: a key that is absolute or climbs out (``..``), or a list file or
image that is a symbolic link leading out of the folder, is a ``DataError`` naming the list and line (or the file),
never read. The text files are UTF-8 (a byte-order mark at the start is skipped): a byte that is not is a
``DataError`` naming the file and line. Images are checked against a pixel limit from their header before they are
decoded (``components.formats.images.MAX_PIXELS``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.common.errors import DataError
from components.formats import inside, not_utf8, require_file
from components.formats.images import MAX_PIXELS, Unreadable, check_encoded

CLASSES = ("T-Shirt", "Shirt", "Knitwear", "Chiffon", "Sweater", "Hoodie", "Windbreaker", "Jacket", "Down Coat",
           "Suit", "Shawl", "Dress", "Vest", "Underwear")
LABEL = re.compile(r"-?[0-9]+")  # what int() reads as a label here (ASCII digits: not '1²', not '--3')
SPLITS = {"train": "noisy_train_key_list.txt", "val": "clean_val_key_list.txt", "test": "clean_test_key_list.txt"}
PREFIX = "images/"  # every published key starts with it
WHITESPACE = re.compile(r"\s")


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
        with open(path, encoding="utf-8-sig") as fh:
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
        text = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err
    return [n.strip() for n in text.splitlines() if n.strip()] or list(CLASSES)


def input_files(root: Path) -> list[Path]:
    """The files the manifest hashes: the two label files and the three key lists in ``root``; a ``DataError`` when
    one is missing or leads out of ``root``."""
    names = ["noisy_label_kv.txt", "clean_label_kv.txt", *SPLITS.values()]
    return [require_file(inside(root, n, where=str(root / n)), "a Clothing1M list file") for n in names]


def split_keys(root: Path, split: str, *, noisy: dict[str, int], clean: dict[str, int],
               listed: dict[str, dict[str, int]] | None = None, flat: bool | None = None,
               missing: Unreadable | None = None) -> list[tuple[str, int, int]]:
    """``(key, label, clean_label)`` for each key of ``split``: the noisy label for ``train`` (with the clean one
    where ``clean_label_kv.txt`` has it, else -1), the clean label for ``val`` and ``test``. ``listed``: the keys of
    the lists read before, by split, each with its line (this one's are added): a key in two lists, or twice in one,
    is a ``DataError`` naming both lines. ``flat``: the authors' layout (``flat_layout``). A key whose image is not
    there is a ``DataError``, or noted in ``missing`` where given (one pass then names every one)."""
    keys_file = inside(root, SPLITS[split], where=str(root / SPLITS[split]))
    listed = {} if listed is None else listed
    seen = listed.setdefault(split, {})
    table = noisy if split == "train" else clean
    flat = flat_layout(root) if flat is None else flat
    real_root = Path(os.path.realpath(root))
    rows = []
    try:
        with open(keys_file, encoding="utf-8-sig") as fh:
            for number, line in enumerate(fh, 1):
                key = line.strip()
                if key:
                    where = f"{keys_file} line {number}"
                    _check_key(key, split, listed, where=where)
                    seen[key] = number
                    rows.append((key, _label(key, table, split, where), clean.get(key, -1)))
                    try:
                        _check_image(root, key, flat, where=where, real_root=real_root)
                    except DataError as err:
                        if missing is None:
                            raise
                        missing.add(key, err)
    except UnicodeDecodeError as err:
        raise not_utf8(keys_file, err) from err
    return rows


def read_splits(root: Path, *, noisy: dict[str, int], clean: dict[str, int]) -> dict[str, list[tuple[str, int, int]]]:
    """``split_keys`` of every split in ``SPLITS``, in one pass over the lists: a key in two of them (a leak between
    training, selection and test) or twice in one is a ``DataError`` naming both lines; keys whose image is missing
    (an archive of image folders never unpacked) are one ``DataError`` naming the first and counting the rest."""
    listed: dict[str, dict[str, int]] = {}
    flat, missing = flat_layout(root), Unreadable("remove its key from the key lists")
    splits = {split: split_keys(root, split, noisy=noisy, clean=clean, listed=listed, flat=flat, missing=missing)
              for split in SPLITS}
    missing.check()
    return splits


# Why a key may be in one of the lists used only, by (the list read later, the list read first), and which list to
# take it out of. clean_train_key_list.txt (the clean training keys) is not read: the paper does not use it.
_OVERLAP = {
    ("val", "train"): ("a validation image must not be trained on (it would flatter the model selection)", "train"),
    ("test", "train"): ("a test image must not be trained on (the gate would judge the model on images it learnt)",
                        "train"),
    ("test", "val"): ("a test image must not select the model (the test accuracy would no longer be of unseen "
                      "images)", "val"),
}


def _check_key(key: str, split: str, listed: dict[str, dict[str, int]], *, where: str) -> None:
    """A ``DataError`` naming ``where`` when the line ``key`` is more than one word, or when ``key`` has a line in
    ``listed``: in a list read before, or in its own."""
    if WHITESPACE.search(key):
        raise DataError(f"{where}: expected one image key per line, found {key!r}; {SPLITS[split]} holds keys only "
                        f"(is it a copy of a label file, '<image key> <label>'?): put the published key list there")
    for other, lines in listed.items():
        if key in lines and other == split:
            raise DataError(f"{where}: expected each image key once, found {key} also on line {lines[key]}: it "
                            f"would be read twice (trained on twice, or counted twice in an accuracy); remove the "
                            f"repeated line")
        if key in lines:
            why, fix = _OVERLAP[split, other]
            raise DataError(f"{where}: expected a key in one key list only, found {key} also in {SPLITS[other]} line "
                            f"{lines[key]}: {why}; remove it from {SPLITS[fix]}")


def _label(key: str, table: dict[str, int], split: str, where: str) -> int:
    """The label of ``key`` in the label file of ``split``; a ``DataError`` naming ``where`` when it has none."""
    if key not in table:
        which = "noisy_label_kv.txt" if split == "train" else "clean_label_kv.txt"
        raise DataError(f"{where}: expected a label for {key} in {which}, found none")
    return table[key]


def flat_layout(root: Path) -> bool:
    """Whether ``root`` has the authors' layout: no ``images/``, the image folders ``0`` .. ``9`` at the top (their
    loader opens ``root + key[7:]``). Then every key's file is the key without its ``images/``."""
    return not os.path.lexists(root / "images")


def image_file(key: str, flat: bool) -> str:
    """The file of ``key``, relative to the dataset folder: the key, or in the authors' layout the key without its
    leading ``images/``."""
    return key[len(PREFIX):] if flat and key.startswith(PREFIX) else key


def _check_image(root: Path, key: str, flat: bool, *, where: str, real_root: Path) -> None:
    """A ``DataError`` naming ``where`` unless the image of ``key`` is a file inside ``root``; it says where a
    misplaced one is (the authors' layout beside an ``images/`` folder), or the error that hid it (a folder on its
    way this user may not enter: is_file raises)."""
    name = image_file(key, flat)
    path = inside(root, name, where=where, real_root=real_root)
    try:
        if path.is_file():
            return
    except OSError as err:
        raise DataError(f"{where}: expected the image {key}, found {path} unreadable ({err.strerror or err})") from err
    if flat and name != key:
        raise DataError(f"{where}: expected the image {name} (key {key}; with no images/ folder, the image folders "
                        f"0..9 are read from {root} itself, as in the authors' loader), found no such file; put them "
                        f"in {root / 'images'} (the published layout) or in {root}")
    raise DataError(f"{where}: expected the image {key}, found no such file{_moved(root, key, real_root)}")


def _moved(root: Path, key: str, real_root: Path) -> str:
    """For a missing image in the published layout: where the authors' layout has it, if it is there."""
    moved = image_file(key, flat=True)
    try:
        found = moved != key and inside(root, moved, where=moved, real_root=real_root).is_file()
    except DataError:  # a name leading out of the folder: no hint
        found = False
    return (f", but {moved} outside images/ (the authors' layout): move the image folders 0..9 into "
            f"{root / 'images'}" if found else "")


def read_image(root: Path, key: str, *, size: int = 0, max_pixels: int = MAX_PIXELS,
               real_root: Path | None = None, flat: bool | None = None) -> bytes:
    """The encoded bytes of the image ``key`` (inside ``root``; in the authors' layout, ``flat``, without its
    ``images/``), after proving they decode (``check_encoded``, which refuses an image over ``max_pixels`` from its
    header)."""
    name = image_file(key, flat_layout(root) if flat is None else flat)
    path = inside(root, name, where=f"{root / name} (key {key})", real_root=real_root)
    try:  # no permission (on the file, or a folder above it: is_file raises), an I/O error: collected by ingest
        if not path.is_file():
            raise DataError(f"{path}: expected the image {key} (listed in the key lists), found no such file")
        payload = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path} (key {key}): expected a readable image file, found {err.strerror or err}") from err
    check_encoded(payload, where=f"{path} (key {key})", size=size, max_pixels=max_pixels)
    return payload
