"""A user's own images: class sub-folders, or image files plus a CSV of labels.

Layouts, looked for in this order under ``path``:
1. ``labels.csv`` (UTF-8) with a header ``filename,label`` and optionally ``split`` (``train``, ``val`` or
   ``test``, read as the split folders' names of layout 2 are: ``Valid`` is ``val``); file names are relative to
   ``path`` and labels are class names.
2. ``train/<class>/*`` and, optionally, ``val/<class>/*`` and ``test/<class>/*``. The split folders are found by
   name in any letter case, under the names ``SPLIT_FOLDERS`` gives: ``train/`` or ``training/``, ``val/``,
   ``valid/`` or ``validation/`` (as torchvision, Kaggle and Hugging Face name it), ``test/`` or ``testing/``; so
   Fruits-360's ``Training/`` and ``Test/`` are read, and Kaggle's ``Train/``, ``Valid/`` and ``Test/``. Two folders
   naming one split (``train/`` and ``Training/``) are refused, naming both. Another folder beside the train folder
   holding folders named like its classes is refused (a split under a name not read would be dropped unsaid).
3. ``<class>/*``; a top-level folder named like a split (as in layout 2: ``val/``, ``Test/`` ...) holding folders,
   or any folder holding folders named like the classes, is refused (it belongs beside ``train/``: read as layout
   3 it would become a class named ``val``, its clean images trained on).
In the folder layouts, a class is a folder whose name is not hidden (starting with ``.``, or one of
``SYSTEM_FOLDERS``: ``__MACOSX`` ...); its images are the files under it (at any depth, hidden names aside) whose
extension is in ``EXTENSIONS``, and other files are skipped (listed in ``skipped``, for ingest to report); a class
folder with no image is a ``DataError`` naming it and what it holds, and so is an image in a split folder itself
(``train/x.jpg``, or ``test/x.jpg`` where ``test/`` has no class folder), or beside the class folders of layout 3,
in no class. Class names are read in Unicode's composed form (``class_name``); file and folder names that are not
UTF-8 are a ``DataError`` listing them. Every image that cannot be read is named in one ``DataError`` after one
pass (``components.formats.images.Unreadable``); a folder under a class folder that cannot be listed (no permission,
an I/O error) is a ``DataError`` naming it, never skipped with its images.
The ``val`` and ``test`` splits are taken as clean-labelled (checked by hand): ``val`` is the set every selection,
calibration and gate decision uses, ``test`` the one the gate judges. Where no test split is given,
``test_fraction`` of each class's training images (chosen with ``seed``; at least one of a class with two or more,
never a class's last) become the test set, labelled as the rest, each group of near-duplicates whole and counted
as one image (``held_out_whole``; a group holding two classes, one photo in two class folders, gives a class a test
image where that leaves each of its classes a training image).

Every file read lies inside ``path``: a ``labels.csv`` name that is absolute or climbs out (``..``), or a file
(``labels.csv``, an image, anything under a class folder, a folder there too) that is a symbolic link leading out
of ``path``, is a ``DataError`` naming the line or the file, never read. Links that stay inside ``path`` are
followed, folder links too (each real folder read once per class, so a link back up cannot loop). Images are
checked against ``max_pixels`` from their header before they are decoded. A file that ``labels.csv`` lists twice
(in two splits, a leak, or twice in one split, with one label or two) is a ``DataError`` naming both lines, and
so is a byte of ``labels.csv`` that is not UTF-8 (naming its line), or a record ``csv`` cannot read (a quote never
closed: naming the line it opened on). A line of ``labels.csv`` is the file's, blank lines counted; a record quoted
over several lines is named by its last.
"""

from __future__ import annotations

import csv
import os
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np

from components.common.errors import DataError
from components.common.thumbnails import near_duplicate_groups
from components.formats import Dataset, inside, not_utf8
from components.formats.images import MAX_PIXELS, Unreadable, load_image

SPLITS = ("train", "val", "test")
VAL_FOLDERS = ("val", "valid", "validation")  # the val split's names: torchvision's, Kaggle's, Hugging Face's
# each split's folder names, matched in any letter case: Fruits-360 publishes Training/ and Test/, Kaggle's copies
# have Train/, Valid/ and Test/
SPLIT_FOLDERS = {"train": ("train", "training"), "val": VAL_FOLDERS, "test": ("test", "testing")}
SHOWN_VAL = "val/, valid/ or validation/"
SHOWN_SPLIT = {"train": "train/ or training/", "val": SHOWN_VAL, "test": "test/ or testing/"}
EXTENSIONS = {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
ACCEPTED = ", ".join(sorted(EXTENSIONS))
# folders that systems leave beside the images, never a class: a Mac zip's resource forks (__MACOSX/), a Synology
# NAS's thumbnails (@eaDir/), Windows' recycle bin and volume information
SYSTEM_FOLDERS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information"})
NAMES_SHOWN = 5  # of the files whose names are not UTF-8 (or of the folders that cannot be read), those named


def read_imagefolder(root: Path, *, channels: int, size: int, test_fraction: float, seed: int,
                     max_pixels: int = MAX_PIXELS, skipped: list[Path] | None = None) -> Dataset:
    """A user's own images under ``root`` (the layouts of the module docstring), each decoded to ``channels`` and
    resized to ``size`` (0: as it is, and every image must then share one square size); classes sorted by name; the
    test split as given, else ``test_fraction`` of the training images drawn with ``seed``. Reads only; a
    ``DataError`` names the file or line at fault. ``skipped``, where given, receives the non-hidden files under the
    class folders that are not images by their extension, and so were not read."""
    if not root.is_dir():
        raise DataError(f"{root}: expected a folder of images, found no such folder")
    items, inputs = _listing(root, [] if skipped is None else skipped)
    if not items:
        raise DataError(f"{root}: expected images in class sub-folders or a labels.csv, found none")
    _check_names(items, root)
    _check_split_classes(items, root)
    names = sorted({label for _, label, _ in items})
    index = {name: i for i, name in enumerate(names)}
    images = _load_all(items, root, channels=channels, size=size, max_pixels=max_pixels)
    other = [(p, img.shape) for (p, _, _), img in zip(items, images, strict=True) if img.shape != images[0].shape]
    if other:
        (first, (height, width, _)), (h0, w0) = other[0], images[0].shape[:2]
        many = f"{len(other)} images have other sizes" if len(other) > 1 else "1 image has another size"
        raise DataError(f"{first}: expected {w0}x{h0} (width x height) like {items[0][0].name}, found "
                        f"{width}x{height}; {many}; set ingest.image_size to resize")
    _check_square(items[0][0], images[0])
    x = np.stack(images)
    y = np.array([index[label] for _, label, _ in items], dtype=np.int64)
    split = np.array([s for _, _, s in items], dtype=object)
    test_given = bool((split == "test").any())
    if not test_given:
        train_rows = np.flatnonzero(split == "train")
        groups = near_duplicate_groups(x[train_rows])
        split[held_out_whole(y, train_rows, test_fraction, np.random.default_rng(seed), groups=groups)] = "test"
        _check_drawn(y[train_rows], y[split == "test"], groups, names, root, test_fraction)
    train, val, test = (split == name for name in SPLITS)
    if not train.any():
        raise DataError(f"{root}: expected training images, found only the splits {sorted(set(split))}")
    return Dataset(x[train], y[train], x[test], y[test], class_names=names, inputs=inputs + [p for p, _, _ in items],
                   val_images=x[val] if val.any() else None, val_labels=y[val] if val.any() else None,
                   train_keys=_keys(items, train, root), val_keys=_keys(items, val, root) if val.any() else None,
                   test_keys=_keys(items, test, root),
                   labels="as given", test_source="the dataset's test split" if test_given else
                   f"held out of the training images (test_fraction {test_fraction}), labelled as given")


def _load_all(items: list[tuple[Path, str, str]], root: Path, **options) -> list[np.ndarray]:
    """Every image of ``items`` decoded (``load_image`` with ``options``); a ``DataError`` naming every one that
    could not be read, after one pass (a web scrape holds many: empty files, cut-off downloads, HTML saved as .jpg)."""
    images, unreadable = [], Unreadable("remove the file (or its line of labels.csv)")
    for path, _, _ in items:
        try:
            images.append(load_image(path, **options))
        except DataError as err:
            unreadable.add(str(path.relative_to(root)), err)
    unreadable.check()
    return images


def _check_names(items: list[tuple[Path, str, str]], root: Path) -> None:
    """A ``DataError`` for file or class names that are not UTF-8 (a zip made on Windows, unpacked on Linux, gives
    ``caf\\xe9.jpg``): the manifest, the label-issue list and the model card are UTF-8 text, and a step after
    training failed on them naming no file."""
    bad = []
    for path, _, _ in items:
        try:
            str(path.relative_to(root)).encode("utf-8")
        except UnicodeEncodeError:
            bad.append(os.fsencode(path.relative_to(root)))
    if bad:
        shown = ", ".join(repr(name) for name in bad[:NAMES_SHOWN]) + (", ..." if len(bad) > NAMES_SHOWN else "")
        many = "1 name that is not" if len(bad) == 1 else f"{len(bad)} names that are not"
        raise DataError(f"{root}: expected file and folder names in UTF-8, found {many} ({shown}): rename them in "
                        f"UTF-8 (convmv -f <their encoding, e.g. cp1252> -t utf8 -r --notest {root}), or unzip with "
                        f"the archive's encoding (unzip -O cp437)")


def _check_drawn(labels: np.ndarray, tested: np.ndarray, groups: np.ndarray, names: list[str], root: Path,
                 fraction: float) -> None:
    """A ``DataError`` where the drawn test split left out a class of two or more training images (``labels``;
    ``tested``, the drawn test images' labels): its images sit in a group of near-duplicates held out whole or not
    at all (``groups``), which validate would refuse as a test split without the class, naming no cause."""
    k = len(names)
    trained, held = np.bincount(labels, minlength=k), np.bincount(tested, minlength=k)
    missing = [names[c] for c in range(k) if trained[c] >= 2 and not held[c]]
    if missing and k >= 2:  # one class: ingest refuses the dataset itself, saying so
        largest = int(np.bincount(groups).max())
        raise DataError(f"{root}: expected a test image of every class drawn from the training images "
                        f"(ingest.test_fraction {fraction}), found none of {', '.join(missing)}: near-duplicates go "
                        f"to one split together, and {largest} of the {labels.size} training images are one group of "
                        f"them (images a few grey levels apart, joined one to the next); give a test/ folder, or "
                        f"remove the near-duplicates")


def _check_split_classes(items: list[tuple[Path, str, str]], root: Path) -> None:
    """A ``DataError`` unless each split given beside train (val, test) has exactly train's classes: a class
    renamed in one split only would become a class with no training images, or none to validate or test on (which
    validate would report only as counts of 0, class by class)."""
    classes: dict[str, set[str]] = {split: set() for split in SPLITS}
    for _, label, split in items:
        classes[split].add(label)
    for split in ("val", "test"):
        if not classes[split] or not classes["train"] or classes[split] == classes["train"]:
            continue
        found = [f"{_quoted(classes[split] - classes['train'])} in {split} only",
                 f"{_quoted(classes['train'] - classes[split])} in train only"]
        raise DataError(f"{root}: expected the same classes in train and {split}, found "
                        f"{' and '.join(f for f in found if not f.startswith('none'))}: name each class the same in "
                        f"every split")


def _quoted(names: set[str]) -> str:
    return ", ".join(repr(n) for n in sorted(names)) or "none"


def held_out_per_class(y: np.ndarray, rows: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """The rows of ``rows`` to hold out, drawn with ``rng`` class by class: ``round(fraction * len(rows))`` of them
    in all, shared in proportion to the classes' sizes (each class its share rounded down, the rest one by one to
    the classes furthest below their share), with at least one of every class of two or more and never a class's
    last row (validate needs every class in the test split and in training: a draw over all rows left a small class
    out at random, and validation failed by the seed)."""
    labels, sizes = np.unique(y[rows], return_counts=True)
    share = fraction * sizes
    count = np.clip(np.floor(share).astype(int), np.where(sizes >= 2, 1, 0), sizes - 1)
    for _ in range(labels.size):  # the rest: to the class furthest below its share, while one has room
        room = count < sizes - 1
        if count.sum() >= round(fraction * rows.size) or not room.any():
            break
        count[np.flatnonzero(room)[np.argmax((share - count)[room])]] += 1
    chosen = [own[rng.permutation(own.size)[:k]] for own, k in
              ((rows[y[rows] == label], k) for label, k in zip(labels, count, strict=True))]
    return np.sort(np.concatenate(chosen)) if chosen else rows[:0]


def held_out_whole(y: np.ndarray, rows: np.ndarray, fraction: float, rng: np.random.Generator, *,
                   groups: np.ndarray) -> np.ndarray:
    """``held_out_per_class`` over groups of near-duplicates, each held out whole (``groups``: for each row of
    ``rows``, the position in ``rows`` of its group's first row, ``near_duplicate_groups``), so that no test image
    has a near-duplicate left in training, which validate would refuse: a folder scraped from the web holds copies
    (``3.jpg``, ``3 (1).jpg``). A group counts once in the share, under its first row's class; without
    near-duplicates the draw is ``held_out_per_class``'s over ``rows``. Where a group spans two classes (one photo
    in two class folders), ``_keep_every_class`` corrects the draw: no class loses its last training image, and
    every class with a group of its own and one more gets a test image."""
    held = np.isin(rows[groups], held_out_per_class(y, rows[np.unique(groups)], fraction, rng))
    labels = y[rows]
    spanning = np.unique(groups[labels != labels[groups]])
    if spanning.size:  # else the draw stands as it is, bit for bit: recorded results depend on it
        _keep_every_class(labels, groups, held, spanning, rng)
    return rows[held]


def _keep_every_class(labels: np.ndarray, groups: np.ndarray, held: np.ndarray, spanning: np.ndarray,
                      rng: np.random.Generator) -> None:
    """Correct ``held`` (a mask over ``labels``) for the groups in ``spanning``, which hold two classes or more:
    drawn under its first row's class alone, such a group took another class's last training image, or left that
    class none in the test split (validate then failed by the seed). A drawn one stays held only where each of its
    classes keeps a training image; then each class without a held image gets one group holding it, drawn with
    ``rng`` among those that leave each of their classes a training image (for a class with a group of its own and
    one more, its own group is one)."""
    order = np.argsort(groups, kind="stable")
    ids, starts = np.unique(groups[order], return_index=True)
    members = dict(zip(ids.tolist(), np.split(order, starts[1:]), strict=True))
    drawn = sorted(set(groups[held].tolist()) & set(spanning.tolist()))
    held[np.isin(groups, spanning)] = False
    training = np.bincount(labels[~held], minlength=labels.max() + 1)
    for group in drawn:
        if _leaves_each_class_one(labels[members[group]], training):
            _hold(labels, members[group], held, training)
    for label in np.unique(labels):
        if not held[labels == label].any():
            free = [g for g in np.unique(groups[(labels == label) & ~held]).tolist()
                    if _leaves_each_class_one(labels[members[g]], training)]
            if free:
                _hold(labels, members[free[rng.integers(len(free))]], held, training)


def _leaves_each_class_one(group_labels: np.ndarray, training: np.ndarray) -> bool:
    """Whether holding out a group of ``group_labels`` leaves each of its classes a training image (``training``:
    each class's training images now)."""
    inside = np.bincount(group_labels, minlength=training.size)
    return bool((training[inside > 0] > inside[inside > 0]).all())


def _hold(labels: np.ndarray, members: np.ndarray, held: np.ndarray, training: np.ndarray) -> None:
    """Hold out the rows ``members`` (in ``held``), taking them from ``training``'s counts."""
    held[members] = True
    training -= np.bincount(labels[members], minlength=training.size)


def _keys(items: list, rows: np.ndarray, root: Path) -> list[str]:
    """The files of ``items`` in ``rows``, relative to the dataset folder: what the label-issue list and
    validate's duplicate report name."""
    return [str(p.relative_to(root)) for (p, _, _), keep in zip(items, rows, strict=True) if keep]


def _check_square(path: Path, image: np.ndarray) -> None:
    """Every step downstream (the networks, the model card's input shape) takes square images: refuse others here,
    where the file can still be named."""
    height, width = image.shape[:2]
    if height != width:
        raise DataError(f"{path}: expected square images (width = height), found {width}x{height} images (width x "
                        f"height); set ingest.image_size to resize and centre-crop each image to a square")


def _listing(root: Path, skipped: list[Path]) -> tuple[list[tuple[Path, str, str]], list[Path]]:
    csv_path = root / "labels.csv"
    if csv_path.is_file() or csv_path.is_symlink():
        return _from_csv(inside(root, csv_path.name, where=str(csv_path)), root), [csv_path]
    folders = _split_folders(root)
    if "train" in folders:
        _refuse_other_splits(root, folders)
        return [item for split, sub in folders.items() for item in _from_folders(root, sub, split, skipped)], []
    _refuse_splits_without_train(root)
    return _from_folders(root, "", "train", skipped), []


def _split_of(name: str) -> str | None:
    """The split a folder of this name holds (``SPLIT_FOLDERS``, in any letter case: ``Training/`` is train), or
    None: matched exactly, ``Train/`` and ``Test/`` were read as two classes of the ``<class>/*`` layout."""
    folded = name.casefold()
    return next((split for split, names in SPLIT_FOLDERS.items() if folded in names), None)


def _split_folders(root: Path) -> dict[str, str]:
    """Each split's folder under ``root`` by its split (``_split_of``), in ``SPLITS`` order: ``train/``, ``val/``,
    ``valid/``, ``validation/`` and ``test/`` always, another name (``Training/``, ``Test/``) where it holds folders
    or a train split is found, so that a class of the ``<class>/*`` layout named ``Training`` stays one. A
    ``DataError`` for two
    folders naming one split (``train/`` and ``Training/``, ``val/`` and ``valid/``): which one is meant is not
    for the reader to guess."""
    named = {folder.name: split for folder in _class_folders(root) if (split := _split_of(folder.name))}
    sure = {name: split for name, split in named.items()
            if name in SPLITS + VAL_FOLDERS or any(_class_folders(root / name))}
    found: dict[str, list[str]] = {}
    for name, split in (named if "train" in sure.values() else sure).items():
        found.setdefault(split, []).append(name)
    for split, names in found.items():
        if len(names) > 1:
            shown = " and ".join(f"{n}/" for n in names)
            raise DataError(f"{root}: expected one {split} split folder ({SHOWN_SPLIT[split]}), found {shown}: merge "
                            f"them into one")
    return {split: found[split][0] for split in SPLITS if split in found}


def _refuse_other_splits(root: Path, folders: dict[str, str]) -> None:
    """A ``DataError`` for a folder beside the train folder, other than the splits, holding folders named like
    its classes: a split read under no name would be dropped unsaid."""
    classes = {d.name for d in _class_folders(root / folders["train"])}
    for folder in _class_folders(root):
        if not _split_of(folder.name) and _holds_classes(folder, classes):
            train, shown = folders["train"], _shown(folder, classes)
            raise DataError(f"{folder}: expected beside {train}/ only the splits {SHOWN_VAL} and test/, found "
                            f"{folder.name}/ holding folders named like {train}/'s classes ({shown}): rename it to "
                            f"the split it is, or move it out of {root}")


def _refuse_splits_without_train(root: Path) -> None:
    """Refuse, in the ``<class>/*`` layout, a top-level folder named like a split (``_split_of``) holding folders,
    or one holding folders named like the classes: read as layout 3 it would become a class (``val``), its clean
    images trained on."""
    tops = _class_folders(root)
    names = {d.name for d in tops}
    for folder in tops:
        classes = [d.name for d in tops if d != folder]
        shown = ", ".join(f"{c}/" for c in classes[:3]) + (", ..." if len(classes) > 3 else "")
        move = f"move the class folders{f' ({shown})' if shown else ''} into train/"
        if _split_of(folder.name) and any(_class_folders(folder)):
            name = folder.name
            raise DataError(f"{folder}: expected {name}/ beside train/ (train/<class>/*, {name}/<class>/*), found "
                            f"{name}/ with class folders without train/: {move}")
        if _holds_classes(folder, names - {folder.name}):
            raise DataError(f"{folder}: expected a class folder, found {folder.name}/ holding folders named like the "
                            f"classes ({_shown(folder, names)}), a split: {move}, and {folder.name}/ beside it as "
                            f"val/ or test/")


def _holds_classes(folder: Path, classes: set[str]) -> bool:
    """Whether ``folder`` looks like a split of ``classes``: its sub-folders are all class names, or two are."""
    subs = {d.name for d in _class_folders(folder)}
    return bool(subs & classes) and (subs <= classes or len(subs & classes) >= 2)


def _shown(folder: Path, classes: set[str]) -> str:
    """Up to three of ``folder``'s sub-folders named like ``classes``: ``a/, b/, c/, ...``."""
    named = sorted({d.name for d in _class_folders(folder)} & classes)
    return ", ".join(f"{c}/" for c in named[:3]) + (", ..." if len(named) > 3 else "")


def class_name(name: str) -> str:
    """A class's name in Unicode's composed form (NFC): macOS writes folder names decomposed (NFD), so ``Schuhé/``
    copied from a Mac beside a ``Schuhé/`` typed elsewhere looks the same and is, to the bytes, another name; both
    are one class."""
    return unicodedata.normalize("NFC", name)


def _hidden(name: str) -> bool:
    """Whether a file or folder of this name is never read: its name starts with ``.``, or it is one of
    ``SYSTEM_FOLDERS``."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def _class_folders(folder: Path) -> list[Path]:
    """The class folders of ``folder``: its sub-folders whose names are not hidden (``_hidden``), sorted."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not _hidden(d.name))


def _from_folders(root: Path, sub: str, split: str, skipped: list[Path]) -> list[tuple[Path, str, str]]:
    """``(file, class, split)`` for the images under ``root / sub``, each proved inside ``root``; the other
    non-hidden files are added to ``skipped``. A ``DataError`` for a class folder with no image, or for an image in
    ``root / sub`` itself, in no class folder (it would be dropped unsaid: a ``test/`` of loose images, the user's
    hand-checked test set, vanished and a test split was drawn from training instead)."""
    folder = root / sub
    if not folder.is_dir():
        return []
    classes = _class_folders(folder)
    if classes or sub:  # at the top without class folders, the reader's "found none" says more
        _refuse_loose_images(folder, sub)
    real_root = Path(os.path.realpath(root))
    items = []
    for cls in classes:
        images, others = [], []
        for p in _files_under(cls, root, real_root):
            (images if p.suffix.lower() in EXTENSIONS else others).append(p)
        other = Counter(p.suffix.lower() for p in others)
        if not images:
            held = f", {describe_skipped(other)}" if other else " (an empty folder)"
            raise DataError(f"{cls}: expected images in class folder {cls.name!r}, found 0 images{held}; accepted: "
                            f"{ACCEPTED}")
        skipped += others
        items += [(inside(root, p.relative_to(root), where=str(p), real_root=real_root), class_name(cls.name), split)
                  for p in images]
    return items


def _refuse_loose_images(folder: Path, sub: str) -> None:
    """A ``DataError`` for image files directly in ``folder`` (the one holding the class folders): no class names
    them."""
    loose = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
                   and not p.is_dir())
    if loose:
        where = f"{sub}/<class>/*" if sub else "<class>/*"
        many = f"{len(loose)} images" if len(loose) > 1 else "1 image"
        raise DataError(f"{loose[0]}: expected images in class folders ({where}), found {many} in {folder} itself, "
                        f"in no class folder: move each into its class's folder")


def _files_under(cls: Path, root: Path, real_root: Path) -> list[Path]:
    """The non-hidden files under ``cls`` at any depth, sorted. Folder links are followed where they stay inside
    ``root`` (one leading out is a ``DataError``); each real folder is read once, so a link back up cannot loop.
    Hidden files and folders (``.DS_Store``, ``._x.jpg``, ``.ipynb_checkpoints``, ``__MACOSX``) are never read. A
    folder that cannot be listed is a ``DataError`` (``_unreadable_folders``), never skipped."""
    files, seen, unreadable = [], set(), []
    for top, dirs, names in os.walk(cls, followlinks=True, onerror=unreadable.append):
        real = os.path.realpath(top)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for d in dirs:
            if os.path.islink(os.path.join(top, d)):
                inside(root, Path(top, d).relative_to(root), where=str(Path(top, d)), real_root=real_root)
        files += [Path(top, name) for name in names if not name.startswith(".")]
    if unreadable:
        raise _unreadable_folders(cls, root, unreadable)
    return sorted(files)


def _unreadable_folders(cls: Path, root: Path, errors: list[OSError]) -> DataError:
    """The error for the folders under the class folder ``cls`` (or ``cls`` itself) that ``os.walk`` could not list
    (``errors``: no permission, an I/O error on a network mount), which it skips: their images vanished unsaid."""
    first, others = errors[0], [str(err.filename) for err in errors[1:]]
    shown = ", ".join(others[:NAMES_SHOWN]) + (", ..." if len(others) > NAMES_SHOWN else "")
    more = f"; and {len(others)} more folders could not be read either: {shown}" if others else ""
    return DataError(f"{first.filename}: expected a folder this user can read (in class folder {cls.name!r}), found "
                     f"{first.strerror or first}{more}. Make each readable, or move it out of {root}")


def describe_skipped(other: Counter[str]) -> str:
    """``25 files with other extensions (.jfif 20, .txt 5)``: the files of ``other`` by extension, most first."""
    total = sum(other.values())
    kinds = ", ".join(f"{ext or '(no extension)'} {n}" for ext, n in other.most_common(5))
    more = ", ..." if len(other) > 5 else ""
    return f"{total} file{'' if total == 1 else 's'} with other extensions ({kinds}{more})"


def _from_csv(path: Path, root: Path) -> list[tuple[Path, str, str]]:
    """``(file, class, split)`` for each record of the CSV ``path``, each file proved inside ``root`` and listed
    once; a ``DataError`` naming the line of a byte that is not UTF-8, or of a record ``csv`` cannot read."""
    try:
        return _read_csv(path, root)
    except UnicodeDecodeError as err:
        raise not_utf8(path, err) from err


def _read_csv(path: Path, root: Path) -> list[tuple[Path, str, str]]:
    """The records of ``path`` as ``_from_csv`` returns them. A record's line is ``reader.line_num``, the line
    where it ends: counting records named the wrong line after a blank line or a field quoted over two lines."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected a header with filename and label, found {reader.fieldnames}")
        real_root = Path(os.path.realpath(root))
        listed: dict[Path, tuple[int, str, str]] = {}  # each file's line, label and split, in the CSV's order
        ended = reader.reader.line_num  # the line the last record read ended on (DictReader's lags: 0 here)
        try:
            for row in reader:
                number = ended = reader.line_num
                label, split = _record(row, f"{path} line {number}")
                image = inside(root, row["filename"], where=f"{path} line {number}", real_root=real_root)
                if image in listed:
                    raise _listed_twice(path, image.relative_to(root), listed[image], (number, label, split))
                listed[image] = (number, label, split)
        except csv.Error as err:
            raise _unreadable_record(path, ended, reader.reader.line_num, err) from err
    return [(image, label, split) for image, (_, label, split) in listed.items()]


def _record(row: dict, where: str) -> tuple[str, str]:
    """A labels.csv record's label and split, its name read as a split folder's (``_split_of``: ``Valid`` is val,
    ``training`` train); a ``DataError`` naming ``where`` for an unknown split, or a missing filename or label."""
    given = (row.get("split") or "train").strip()
    split = _split_of(given)
    if split is None:
        raise DataError(f"{where}: expected split train, val or test (in any letter case; also training, valid, "
                        f"validation, testing), found {given!r}")
    label = class_name((row["label"] or "").strip())  # a label of spaces is no label, not a class ''
    if not (row["filename"] or "").strip() or not label:
        raise DataError(f"{where}: expected a filename and a label, found {row}")
    return label, split


def _unreadable_record(path: Path, ended: int, line: int, err: csv.Error) -> DataError:
    """The error for the record of ``path`` after line ``ended`` that ``csv`` refused on line ``line``: a quote
    (``"``) opened and never closed makes one field of every line after it, until the field limit."""
    if "field limit" not in str(err):
        return DataError(f"{path} line {line}: expected CSV records, found one csv cannot read ({err})")
    with open(path, newline="", encoding="utf-8-sig") as fh:  # lines as csv counts them; blank ones hold no record
        start = next((n for n, text in enumerate(fh, 1) if n > ended and text.strip("\r\n")), ended + 1)
    return DataError(f"{path} line {line}: expected one record a line, found a field of more than "
                     f"{csv.field_size_limit()} characters running from line {start} ({err}): likely a quote (\") "
                     f"opened on line {start} and never closed; close or remove it")


def _listed_twice(path: Path, name: Path, before: tuple[int, str, str], now: tuple[int, str, str]) -> DataError:
    """The error for a file listed on two lines of ``path``: in two splits (one leaks into the other: an image
    trained on and then judged, or selected on), or twice in one split (with one label, or two that conflict)."""
    (line, label, split), (again, new_label, new_split) = before, now
    if split != new_split:
        found = f"{name} listed in {split} and in {new_split} (a file in two splits leaks one into the other)"
    elif label != new_label:
        found = f"{name} listed twice in {split} with different labels ({label!r} and {new_label!r})"
    else:
        found = f"{name} listed twice in {split} (label {label!r} both times)"
    return DataError(f"{path} lines {line} and {again}: expected each file listed once, found {found}")
