"""ingest: raw dataset files -> ``artifacts/ingest/``.

Datasets that fit in memory become ``train.npz`` and ``test.npz`` (``images`` uint8 ``[N, H, W, C]``, ``labels``
int64 ``[N]``); ``cifar10n`` adds ``human_labels.npz`` (one array per CIFAR-10N label set). ``clothing1m`` is
streamed into ``shards/<split>-<n>.npz`` (``images``, ``labels``, ``clean_labels`` with -1 where unknown) with
``index.json``, never holding the dataset in memory. Every dataset gets ``manifest.json``: the source, the
sha256 of every input file, the counts, the image shape and the class names.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import write_atomic, write_json
from components.config import cli
from components.formats import DataError, Dataset, sha256_file
from components.formats import clothing1m as c1m
from components.formats.cifar import read_cifar10, read_cifar10n
from components.formats.idx import read_fashion_mnist
from components.formats.imagefolder import read_imagefolder

DATASETS = ("fashion-mnist", "cifar10", "cifar10n", "clothing1m", "imagefolder")
OUT = Path("artifacts/ingest")


@dataclass(frozen=True)
class IngestConfig:
    dataset: str = "fashion-mnist"  # one of DATASETS
    path: str = "data/fashion-mnist"  # where the dataset's files are
    human_labels: str = ""  # cifar10n: the path of CIFAR-10_human.pt
    image_size: int = 0  # imagefolder, clothing1m: resize (short side) and centre-crop to this size; 0 keeps it
    channels: int = 3  # imagefolder: 1 (grayscale) or 3 (RGB)
    test_fraction: float = 0.2  # imagefolder without a test split: the share held out as the test set
    seed: int = 0  # imagefolder: the seed of that split
    shard_size: int = 10000  # clothing1m: images per shard

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {self.dataset!r}. Valid: {', '.join(DATASETS)}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, found {self.channels}")
        if self.image_size < 0 or self.shard_size < 1:
            raise ValueError(f"image_size, shard_size: expected >= 0 and >= 1, found {self.image_size}, "
                             f"{self.shard_size}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected a number in (0, 1), found {self.test_fraction}")
        if self.dataset == "cifar10n" and not self.human_labels:
            raise ValueError("human_labels: expected the path of CIFAR-10_human.pt for dataset cifar10n, found ''")
        if self.dataset == "clothing1m" and not self.image_size:
            raise ValueError("image_size: expected a size (e.g. 224) for clothing1m, whose images differ in size, "
                             "found 0")


def run(config: IngestConfig, *, out: Path = OUT) -> dict:
    """Read the dataset and write the ingest artifacts to ``out``; returns the manifest."""
    root, out = Path(config.path), Path(out)
    if not root.exists():
        raise DataError(f"{root}: expected the {config.dataset} files, found no such file or folder "
                        f"(set ingest.path; `make data` fetches the default dataset)")
    if config.dataset == "clothing1m":
        return _ingest_clothing1m(config, root, out)
    dataset = read(config, root)
    for split, images, labels in (("train", dataset.train_images, dataset.train_labels),
                                  ("test", dataset.test_images, dataset.test_labels)):
        write_atomic(out / f"{split}.npz", lambda fh, i=images, la=labels: np.savez(fh, images=i, labels=la))
    if dataset.extra:
        write_atomic(out / "human_labels.npz", lambda fh: np.savez(fh, **dataset.extra))
    counts = {"train": int(dataset.train_labels.size), "test": int(dataset.test_labels.size)}
    return _write_manifest(config, out, dataset.inputs, counts, list(dataset.train_images.shape[1:]),
                           dataset.class_names, format_="arrays")


def read(config: IngestConfig, root: Path) -> Dataset:
    if config.dataset == "fashion-mnist":
        return read_fashion_mnist(root)
    if config.dataset == "cifar10":
        return read_cifar10(root)
    if config.dataset == "cifar10n":
        return read_cifar10n(root, Path(config.human_labels))
    return read_imagefolder(root, channels=config.channels, size=config.image_size,
                            test_fraction=config.test_fraction, seed=config.seed)


def _ingest_clothing1m(config: IngestConfig, root: Path, out: Path) -> dict:
    names = c1m.class_names(root)
    inputs = c1m.input_files(root)
    noisy = c1m.read_label_kv(root / "noisy_label_kv.txt", len(names))
    clean = c1m.read_label_kv(root / "clean_label_kv.txt", len(names))
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".shards.", dir=out))
    digest = hashlib.sha256()
    try:
        index = {split: _write_shards(staging, split, c1m.iter_split(root, split, noisy=noisy, clean=clean,
                                                                     size=config.image_size, digest=digest),
                                      config.shard_size)
                 for split in c1m.SPLITS}
        _replace_dir(staging, out / "shards")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_json(out / "index.json", {"image_size": config.image_size, "splits": index})
    counts = {split: entry["count"] for split, entry in index.items()}
    return _write_manifest(config, out, inputs, counts, [config.image_size, config.image_size, 3], names,
                           format_="shards", extra={"images_sha256": digest.hexdigest()})


def _write_shards(folder: Path, split: str, samples, shard_size: int) -> dict:
    shards, buffer, count = [], [], 0

    def flush():
        name = f"{split}-{len(shards):05d}.npz"
        images, labels, clean = zip(*[(img, la, cl) for _, img, la, cl in buffer], strict=True)
        write_atomic(folder / name, lambda fh: np.savez(fh, images=np.stack(images), labels=np.array(labels),
                                                        clean_labels=np.array(clean)))
        shards.append({"file": name, "count": len(buffer)})
        buffer.clear()

    for sample in samples:
        buffer.append(sample)
        count += 1
        if len(buffer) == shard_size:
            flush()
    if buffer:
        flush()
    return {"count": count, "shards": shards}


def _replace_dir(new: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _write_manifest(config, out, inputs, counts, image_shape, class_names, *, format_, extra=None) -> dict:
    root = Path(config.path)
    manifest = {"dataset": config.dataset, "source": str(root), "format": format_,
                "inputs_sha256": {_relative(p, root): sha256_file(p) for p in inputs},
                "counts": counts, "image_shape": image_shape, "class_names": class_names, **(extra or {})}
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


main = cli("ingest", {"ingest": IngestConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
