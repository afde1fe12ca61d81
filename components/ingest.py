"""ingest: raw dataset files -> ``artifacts/ingest/``.

Datasets that fit in memory become ``train.npz`` and ``test.npz`` (``images`` uint8 ``[N, H, W, C]``, ``labels``
int64 ``[N]``; an ``imagefolder``'s npz files also ``keys``, each image's file relative to ``path``), and
``val.npz`` where the dataset has a clean validation split (``imagefolder``); ``cifar10n`` adds
``human_labels.npz`` (one array per CIFAR-10N label set), and ``cifar100n`` too (CIFAR-100N's ``noisy_label``);
``cifar100``'s labels are its 100 fine classes.
``clothing1m`` is copied, one image at a time, into WebDataset shards ``shards/<split>-<n>.tar`` of the original JPEG
bytes (each image proven to decode first) with ``shards/<split>.index.npz`` and ``shards/index.json`` (per-shard
counts, sizes and sha256; see ``components.formats.webdataset``); the training samples are written in a random order
(``seed``), so every shard is a random sample. The shard folder is replaced as a whole, only once every image is in.
Every dataset gets ``manifest.json``: the source, the sha256 of every input file, the counts, the image shape, the
class names, ``labels`` (``curated``, or ``as given`` for a user's own labels) and ``test_source``; for CIFAR-100
``superclasses`` (each of its 20 coarse classes with its fine classes, which asymmetric noise flips within); for an
image folder whose class folders hold files that are not images, ``skipped_files`` (their count, extensions and
first ``SKIPPED_NAMED`` files, also printed as a warning); for shards also ``transform`` (the resize, the crop and
ImageNet's mean and std that every step applies when it decodes).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from components.common.artifacts import sha256_file
from components.common.atomic import UMASK, atomic_set, prepare_output, stage_folder, write_atomic, write_json
from components.common.config import as_record, cli
from components.common.errors import DataError
from components.common.steps import FOLDERS
from components.common.streaming import IMAGENET_MEAN, IMAGENET_STD
from components.formats import Dataset
from components.formats import clothing1m as c1m
from components.formats.cifar import read_cifar10, read_cifar10n, read_cifar100, read_cifar100n
from components.formats.idx import read_fashion_mnist
from components.formats.imagefolder import ACCEPTED, describe_skipped, read_imagefolder
from components.formats.images import Unreadable
from components.formats.webdataset import ShardWriter
from model.progress import progress

DatasetName = Literal["fashion-mnist", "cifar10", "cifar10n", "cifar100", "cifar100n", "clothing1m", "imagefolder"]
DATASETS = typing.get_args(DatasetName)
HUMAN_FILES = {"cifar10n": "CIFAR-10_human.pt", "cifar100n": "CIFAR-100_human.pt"}  # the human labels' files
OUT = FOLDERS["ingest"]


@dataclass(frozen=True)
class IngestConfig:
    """The ``ingest`` section of params.yaml: ``dataset`` (one of ``DATASETS``) at ``path``; ``human_labels``
    (cifar10n's file, inside ``path``); ``image_size``, ``channels``, ``test_fraction`` and ``seed`` (imagefolder;
    ``image_size`` is also clothing1m's crop and ``seed`` the order of its training samples); ``shard_size`` and
    ``resize`` (clothing1m's shards)."""

    dataset: DatasetName = "fashion-mnist"
    path: str = "data/fashion-mnist"  # where the dataset's files are
    human_labels: str = "CIFAR-10_human.pt"  # cifar10n, cifar100n: the human labels' file, relative to path
    image_size: int = 0  # imagefolder, clothing1m: the (centre-)crop size models see; imagefolder: 0 keeps it
    channels: Literal[1, 3] = 3  # imagefolder: 1 (grayscale) or 3 (RGB)
    test_fraction: float = 0.2  # imagefolder without a test split: the share held out as the test set
    seed: int = 0  # imagefolder: the seed of that split; clothing1m: of the order of the training samples
    shard_size: int = 10000  # clothing1m: images per shard
    resize: int = 0  # clothing1m: the short side is resized to this before the crop (0: image_size)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}. Valid: {', '.join(DATASETS)}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ValueError(f"channels: expected 1 or 3, found {self.channels!r}")
        if not self.path.strip():
            raise ValueError(f"path: expected the folder (or file) of the dataset, found {self.path!r}")
        if self.image_size < 0 or self.shard_size < 1 or self.resize < 0:
            raise ValueError(f"image_size, shard_size, resize: expected >= 0, >= 1, >= 0, found {self.image_size}, "
                             f"{self.shard_size}, {self.resize}")
        if self.resize and self.resize < self.image_size:
            raise ValueError(f"resize: expected 0 or at least image_size ({self.image_size}), found {self.resize}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), found {self.test_fraction}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected an integer >= 0, found {self.seed!r}")
        others = [f for d, f in HUMAN_FILES.items() if d != self.dataset]  # the other dataset's file: a slip
        if self.dataset in HUMAN_FILES and (not self.human_labels or Path(self.human_labels).name in others):
            raise ValueError(f"human_labels: expected the path of {HUMAN_FILES[self.dataset]} for dataset "
                             f"{self.dataset}, found {self.human_labels!r}")
        if self.dataset == "clothing1m" and not self.image_size:
            raise ValueError("image_size: expected a size (e.g. 224) for clothing1m, whose images differ in size, "
                             "found 0")


def run(config: IngestConfig, *, out: Path = OUT) -> dict:
    """Read the dataset at ``config.path`` and write the ingest artifacts to ``out``: ``train.npz``, ``test.npz``
    (``val.npz``, ``human_labels.npz`` where the dataset has them) or, for clothing1m, ``shards/``; and
    ``manifest.json``, which it returns."""
    root, out = Path(config.path), Path(out)
    if not root.exists():
        raise DataError(f"{root}: expected the {config.dataset} files, found no such file or folder "
                        f"(set ingest.path; `make data` fetches the default dataset)")
    prepare_output(out, step="ingest")  # a folder that cannot take the outputs fails now, before the reading
    if config.dataset == "clothing1m":
        return _ingest_clothing1m(config, root, out)
    skipped: list[Path] = []  # imagefolder: files under the class folders that are not images
    dataset = read(config, root, skipped=skipped)
    extensions = Counter(p.suffix.lower() for p in skipped)
    _check_classes(dataset.class_names, root)
    splits = {"train": (dataset.train_images, dataset.train_labels), "test": (dataset.test_images, dataset.test_labels)}
    if dataset.val_labels is not None:
        splits["val"] = (dataset.val_images, dataset.val_labels)
    counts = {split: int(labels.size) for split, (_, labels) in splits.items()}
    with atomic_set():  # the arrays and the manifest as a set: a failure in any leaves the previous files
        for split, (images, labels) in splits.items():
            arrays = {"images": images, "labels": labels}
            keys = {"train": dataset.train_keys, "val": dataset.val_keys, "test": dataset.test_keys}[split]
            if keys is not None:  # an image folder's file names
                arrays["keys"] = np.array(keys)
            write_atomic(out / f"{split}.npz", lambda fh, a=arrays: np.savez(fh, **a))
        if dataset.extra:
            write_atomic(out / "human_labels.npz", lambda fh: np.savez(fh, **dataset.extra))
        manifest = _write_manifest(config, out, dataset.inputs, counts, list(dataset.train_images.shape[1:]),
                                   dataset.class_names, format_="arrays",
                                   extra={"labels": dataset.labels, "test_source": dataset.test_source,
                                          **({"superclasses": dataset.superclasses} if dataset.superclasses else {}),
                                          **({"skipped_files": {"count": len(skipped),
                                                                "extensions": dict(sorted(extensions.items())),
                                                                "files": _named(skipped, root, SKIPPED_NAMED)}}
                                             if skipped else {})})
    if skipped:
        print(f"WARNING: ingest: skipped {describe_skipped(extensions)} under the class folders of {root} (accepted: "
              f"{ACCEPTED}), e.g. {', '.join(_named(skipped, root, 3))}; see skipped_files in "
              f"{out / 'manifest.json'}", file=sys.stderr)
    for twins in case_twins(dataset.class_names):
        print(f"WARNING: ingest: classes whose names differ only in letter case, {' and '.join(map(repr, twins))}, "
              f"are {len(twins)} classes: if they are one, merge their folders (or labels) and ingest again",
              file=sys.stderr)
    _remove_stale(out, {f"{split}.npz" for split in splits} | ({"human_labels.npz"} if dataset.extra else set()))
    return manifest


def case_twins(names: list[str]) -> list[list[str]]:
    """The groups of class ``names`` that are equal but for letter case (``T-shirt``, ``t-shirt``), each sorted:
    most likely one class spelt two ways, which training would keep apart."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.casefold(), []).append(name)
    return [sorted(group) for group in groups.values() if len(group) > 1]


SKIPPED_NAMED = 20  # skipped files named in the manifest; the count and extensions cover them all


def _named(files: list[Path], root: Path, count: int) -> list[str]:
    """The first ``count`` of ``files`` (in the order read), relative to ``root``."""
    return [p.relative_to(root).as_posix() for p in files[:count]]


def read(config: IngestConfig, root: Path, *, skipped: list[Path] | None = None) -> Dataset:
    """The in-memory ``Dataset`` of ``config.dataset`` from ``root``; reads only, and raises the reader's
    ``DataError``. Not for clothing1m, which ``run`` streams into shards (any dataset not named here is read as an
    image folder; ``skipped`` then receives the files under its class folders that are not images)."""
    if config.dataset == "fashion-mnist":
        return read_fashion_mnist(root)
    if config.dataset == "cifar10":
        return read_cifar10(root)
    if config.dataset == "cifar10n":
        return read_cifar10n(root, human_labels_path(config))
    if config.dataset == "cifar100":
        return read_cifar100(root)
    if config.dataset == "cifar100n":
        return read_cifar100n(root, human_labels_path(config))
    return read_imagefolder(root, channels=config.channels, size=config.image_size,
                            test_fraction=config.test_fraction, seed=config.seed, skipped=skipped)


def human_labels_path(config: IngestConfig) -> Path:
    """CIFAR-10N's ``CIFAR-10_human.pt`` or CIFAR-100N's ``CIFAR-100_human.pt``: ``human_labels`` relative to
    ``path``, which must hold it, so that the DVC stage, which depends on ``path``, reruns when the file changes.
    Proven as every reader's file is (``components.formats.inside``): a name that is absolute or climbs out, or a
    link leading out of ``path``, is refused; a link into the repository's DVC cache (a checkout with
    ``cache.type: symlink``) is followed."""
    from components.formats import inside  # noqa: PLC0415 - used here only

    folder, file = Path(config.path), HUMAN_FILES[config.dataset]
    base = file.removesuffix("_human.pt")
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder holding the {base} files and {file} for dataset "
                        f"{config.dataset} (so DVC, which tracks ingest.path, sees both), found a file")
    try:
        return inside(folder, config.human_labels, where="ingest.human_labels")
    except DataError as err:
        name = Path(config.human_labels)
        link = "" if name.is_absolute() or ".." in name.parts else f", a symbolic link to {(folder / name).resolve()}"
        raise DataError(f"ingest.human_labels: expected a file inside {folder} (ingest.path, which DVC tracks), found "
                        f"{config.human_labels!r}{link}; put {file} beside the {base} files") from err


def _check_classes(names: list[str], root: Path) -> None:
    """A ``DataError`` unless the dataset has two classes or more: with one, every model is right on every image,
    and the gate would release one that has learnt nothing."""
    if len(names) < 2:
        raise DataError(f"{root}: expected at least 2 classes to tell apart, found {len(names)}"
                        f"{': ' + repr(names[0]) if names else ''}")


def _ingest_clothing1m(config: IngestConfig, root: Path, out: Path) -> dict:
    names = c1m.class_names(root)
    _check_classes(names, root)
    inputs = c1m.input_files(root)
    noisy, noisy_conflicts = c1m.read_label_kv(root / "noisy_label_kv.txt", len(names))
    clean, clean_conflicts = c1m.read_label_kv(root / "clean_label_kv.txt", len(names))
    conflicts = {name: _conflict_summary(found) for name, found in (("noisy_label_kv.txt", noisy_conflicts),
                                                                      ("clean_label_kv.txt", clean_conflicts)) if found}
    samples = c1m.read_splits(root, noisy=noisy, clean=clean)  # a key in two lists (a leak) or twice is refused
    flat = c1m.flat_layout(root)  # the authors' layout: the image folders 0..9 at the top, no images/
    order = np.random.default_rng(config.seed).permutation(len(samples["train"]))
    samples["train"] = [samples["train"][i] for i in order]  # every shard a random sample of the training set
    resize = config.resize or config.image_size
    for leftover in out.iterdir():  # the staging folder of a killed run (no cleanup clause ran): often gigabytes
        if STAGING.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".shards.", dir=out))
    staging.chmod(0o777 & ~UMASK)  # mkdtemp makes 0700: give the folder the permissions mkdir would
    digest = hashlib.sha256()
    try:
        index, unreadable = {}, Unreadable("remove its key from the key lists")
        for split, rows in samples.items():
            writer = ShardWriter(staging, split, config.shard_size)
            for key, label, clean_label in progress(rows, desc=f"ingest {split}", unit="images"):
                try:
                    payload = c1m.read_image(root, key, size=resize, flat=flat)
                except DataError as err:  # go on: one pass over a million images names every bad one
                    unreadable.add(key, err)
                    continue
                digest.update(f"{key} {hashlib.sha256(payload).hexdigest()}\n".encode())
                writer.add(key, payload, label=label, clean_label=clean_label,
                           extension=Path(key).suffix.lstrip(".").lower() or "jpg")
            index[split] = writer.close()
        unreadable.check()
        write_json(staging / "index.json", {"splits": index})
        counts = {split: entry["count"] for split, entry in index.items()}
        transform = {"resize": resize, "crop": config.image_size, "mean": list(IMAGENET_MEAN),
                     "std": list(IMAGENET_STD)}
        with atomic_set():  # the shards and the manifest that describes them, in one burst of renames
            stage_folder(staging, out / "shards")
            manifest = _write_manifest(
                config, out, inputs, counts, [config.image_size, config.image_size, 3], names, format_="shards",
                extra={"labels": "as given", "test_source": "the dataset's test split",
                       **({"label_conflicts": conflicts} if conflicts else {}), "images_sha256": digest.hexdigest(),
                       "transform": transform, "shard_bytes": sum(s["bytes"] for e in index.values()
                                                                  for s in e["shards"])})
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _remove_stale(out, {"shards"})
    return manifest


STAGING = re.compile(r"\.shards\.[a-z0-9_]{8}")  # mkdtemp's name for the shards being written
CONFLICT_EXAMPLES = 5  # keys with conflicting labels named in the manifest and the warning


def _conflict_summary(conflicts: dict[str, list[int]]) -> dict:
    """How many keys a label file lists with different labels, and the first few with their labels in file order."""
    return {"keys": len(conflicts), "kept": "the last label",
            "examples": {key: labels for key, labels in list(conflicts.items())[:CONFLICT_EXAMPLES]}}


# What ingest may have written into its folder, for any dataset (index.json: the layout before the shards).
OUTPUTS = ("train.npz", "val.npz", "test.npz", "human_labels.npz", "shards", "index.json")


def _remove_stale(out: Path, written: set[str]) -> None:
    """Remove what an earlier ingest of another dataset left beside this one's outputs (``written``), e.g. a
    ``human_labels.npz`` that noise kind ``human`` would otherwise read for a dataset that has none. DVC clears the
    folder before the stage runs; a step run by hand relies on this."""
    for name in set(OUTPUTS) - written:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _write_manifest(config, out, inputs, counts, image_shape, class_names, *, format_, extra=None) -> dict:
    root = Path(config.path)
    manifest = {"dataset": config.dataset, "source": str(root), "format": format_,
                "inputs_sha256": {_relative(p, root): sha256_file(p) for p in inputs},
                "counts": counts, "image_shape": image_shape, "class_names": class_names, **(extra or {}),
                "config": as_record(config)}
    write_json(out / "manifest.json", manifest)
    return manifest


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) if root.is_dir() else path.name
    except ValueError:
        return str(path)


def _main(configs: dict) -> None:
    manifest = run(configs["ingest"])
    print(f"ingest: {manifest['dataset']} {manifest['counts']} -> {OUT}")
    for name, found in manifest.get("label_conflicts", {}).items():
        examples = ", ".join(f"{key} {labels}" for key, labels in found["examples"].items())
        keys = f"{found['keys']} image key{'' if found['keys'] == 1 else 's'}"
        print(f"WARNING: {name}: {keys} listed with different labels; each keeps its last label (e.g. {examples}); "
              f"see label_conflicts in {OUT / 'manifest.json'}", file=sys.stderr)


main = cli("ingest", {"ingest": IngestConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
