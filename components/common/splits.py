"""The data a training or evaluation step reads: the noisy training split and the validation set (in memory, or
streamed from a sharded dataset's shards), the clean test set, and the files a run's result depends on."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.common.artifacts import (
    MADE_FROM,
    check_labels,
    labels_digest,
    read_arrays,
    read_json,
    read_manifest,
    sha256_file,
)
from components.common.errors import DataError
from components.common.streaming import open_split
from components.formats.webdataset import read_index, verify_shards
from model.trainer import Data, Source


def load_split(ingest: Path, noise: Path, *, workers: int = 2, augment: bool = False, crop_padding: int = 0,
               ) -> tuple[Source, Source, dict[str, Any]]:
    """The training and validation sets, and what a model file must record. In memory (normalised float tensors)
    for datasets ingested as arrays; streamed from the shards (``components.common.streaming``, ``workers`` decoding
    processes, ``augment``: random crops and flips, where a ``crop_padding`` is refused) for a sharded dataset. A
    dataset's own clean validation split (Clothing1M's, an image folder's ``val``) is the validation set; otherwise
    the noise step's held-out rows."""
    ingest, noise = Path(ingest), Path(noise)
    manifest = read_manifest(ingest)
    labels = read_noise_labels(ingest, noise)
    index, given, is_val = labels["index"], labels["label"], labels["is_val"]
    if manifest["format"] == "shards":
        return _shard_split(ingest, noise, index, given, workers=workers, augment=augment, crop_padding=crop_padding)
    (images,) = read_arrays(ingest / "train.npz", "ingest", "images")
    pixels = images[index[~is_val]].astype(np.float32) / 255.0
    mean = pixels.mean(axis=(0, 1, 2)).tolist()
    std = (pixels.std(axis=(0, 1, 2)) + 1e-6).tolist()
    x = normalise(images[index], mean, std)
    y = torch.from_numpy(given.astype(np.int64))
    mask = torch.from_numpy(is_val)
    meta = {"num_classes": len(manifest["class_names"]),
            "in_channels": int(images.shape[3]), "image_size": int(images.shape[1]),
            "normalisation": {"mean": mean, "std": std}}
    if "val" in manifest["counts"]:  # the dataset's own clean validation split (an image folder's val)
        val_images, val_labels = read_arrays(ingest / "val.npz", "ingest", "images", "labels")
        val = Data(normalise(val_images, mean, std), torch.from_numpy(val_labels.astype(np.int64)))
    else:
        val = Data(x[mask], y[mask])
    return Data(x[~mask], y[~mask]), val, meta


def _shard_split(ingest: Path, noise: Path, index: np.ndarray, given: np.ndarray, *, workers: int,
                 augment: bool, crop_padding: int) -> tuple[Source, Source, dict[str, Any]]:
    manifest = read_json(ingest / "manifest.json", "ingest", "transform", "class_names", "counts")
    if "val" not in manifest["counts"]:
        raise DataError(f"{ingest / 'manifest.json'}: expected a sharded dataset with its own val split, found "
                        f"the splits {sorted(manifest['counts'])}")
    verify_shards(ingest, ("train", "val"))
    train = open_split(ingest, "train", positions=index, labels=torch.from_numpy(given.astype(np.int64)),
                       workers=workers, augment=augment, crop_padding=crop_padding)
    transform = manifest["transform"]
    meta = {"num_classes": len(manifest["class_names"]), "in_channels": 3, "image_size": transform["crop"],
            "normalisation": {"mean": transform["mean"], "std": transform["std"]}}
    return train, open_split(ingest, "val", workers=workers), meta


RERUN = "(re-run the noise step)"


def ingested_train_labels(ingest: Path, manifest: dict[str, Any]) -> np.ndarray:
    """The training labels the ingest step wrote: ``train.npz``'s, or the shard index's."""
    if manifest["format"] == "shards":
        return read_index(ingest, "train").label
    return read_arrays(Path(ingest) / "train.npz", "ingest", "labels")[0]


def read_noise_labels(ingest: Path, noise: Path, *keys: str) -> dict[str, np.ndarray]:
    """The arrays ``index``, ``label``, ``is_val`` and ``keys`` of the noise step's ``labels.npz``, checked against
    the training set ingested now: one label and one flag per row, every index a row of that set, every label one of
    its classes, and drawn from that set (the digest the noise step recorded; a file from before it recorded one is
    not checked for this). A ``DataError`` saying to re-run the noise step otherwise: labels drawn from another
    ingest would train on other images' labels without a word."""
    ingest, path = Path(ingest), Path(noise) / "labels.npz"
    manifest = read_manifest(ingest)
    names = list(dict.fromkeys(("index", "label", "is_val", *keys)))
    arrays = dict(zip(names, read_arrays(path, "noise", *names), strict=True))
    index, label = arrays["index"], arrays["label"]
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise DataError(f"{path}: expected index as one integer row number per row, found {index.dtype} of shape "
                        f"{list(index.shape)} {RERUN}")
    check_labels(path, label, index.shape[0], what="row of index", name="label")
    if arrays["is_val"].shape != index.shape or arrays["is_val"].dtype != bool:
        raise DataError(f"{path}: expected is_val as one bool per row of index ({index.shape[0]}), found "
                        f"{arrays['is_val'].dtype} of shape {list(arrays['is_val'].shape)} {RERUN}")
    ingested = ingested_train_labels(ingest, manifest)
    _check_rows(path, index, ingested.shape[0])
    classes = len(manifest["class_names"])
    wrong = label[(label < 0) | (label >= classes)]
    if wrong.size:
        raise DataError(f"{path}: expected labels of the {classes} classes of {ingest / 'manifest.json'}, 0 to "
                        f"{classes - 1}, found {int(wrong[0])} {RERUN}")
    with np.load(path) as data:
        recorded = str(data[MADE_FROM]) if MADE_FROM in data.files else None
    if recorded is not None and recorded != labels_digest(ingested):
        raise DataError(f"{path}: expected labels drawn from the training set ingested now in {ingest}, found labels "
                        f"the noise step drew from another ingest {RERUN}")
    return arrays


def _check_rows(labels: Path, index: np.ndarray, count: int) -> None:
    wrong = index[(index < 0) | (index >= count)]
    if wrong.size:
        raise DataError(f"{labels}: expected indices of the {count} ingested images, 0 to {count - 1}, found "
                        f"{int(wrong[0])} {RERUN}")


TRAINING_KEYS = ("format", "class_names", "image_shape", "transform")  # what training reads of the manifest


def split_inputs(ingest: Path, noise: Path) -> list[Path]:
    """The files a training run reads besides the manifest: the ingested training images (or a sharded set's train
    and val indexes), an image folder's own ``val.npz`` where there is one, and the noise step's labels."""
    ingest = Path(ingest)
    if (ingest / "shards" / "index.json").is_file():
        images = [p for p in (ingest / "shards" / f"{s}.index.npz" for s in ("train", "val")) if p.is_file()]
    else:
        images = [ingest / "train.npz", *([ingest / "val.npz"] if (ingest / "val.npz").is_file() else [])]
    return [*images, Path(noise) / "labels.npz"]


def training_digest(ingest: Path, noise: Path) -> str:
    """The sha256 of what a training run reads: the manifest's ``TRAINING_KEYS`` (a sharded set's transform, its
    resize and crop, leaves the shards unchanged) and whether it has its own val split, a sharded set's train and val
    shards (their sha256 in ``index.json``) and the files of ``split_inputs``. Not the data's path, the ingest
    settings that leave these unchanged or the test split: a moved folder still resumes. It names the checkpoint
    folder, and the baseline's ``model.pt`` records it (``model_file.TRAINED_ON``) for mlnt to check."""
    ingest = Path(ingest)
    manifest = read_json(ingest / "manifest.json", "ingest")
    record = {key: manifest.get(key) for key in TRAINING_KEYS} | {"val": "val" in manifest.get("counts", {})}
    if (ingest / "shards" / "index.json").is_file():
        splits = read_json(ingest / "shards" / "index.json", "ingest", "splits")["splits"]
        record["shards"] = {split: splits.get(split) for split in ("train", "val")}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode())
    for path in split_inputs(ingest, noise):
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def test_set(ingest: Path, normalisation: dict[str, list[float]], *, workers: int = 2) -> Source:
    """The clean test set: in memory, normalised with a model file's ``normalisation``, or streamed from the test
    shards (with the manifest's transform, which is the one every model of a sharded dataset was trained with)."""
    ingest = Path(ingest)
    if read_manifest(ingest)["format"] == "shards":
        verify_shards(ingest, ("test",))
        return open_split(ingest, "test", workers=workers)
    images, labels = read_arrays(ingest / "test.npz", "ingest", "images", "labels")
    x = normalise(images, normalisation["mean"], normalisation["std"])
    return Data(x, torch.from_numpy(labels.astype(np.int64)))


def test_digest(ingest: Path) -> str:
    """The sha256 of the clean test set's content: its images (uint8, as ingested) and labels, or for a sharded set
    each test shard's sha256 (``index.json``) and the index's keys and labels. Two models' test accuracies compare
    only when their test sets have the same digest (the gate's champion check)."""
    ingest, digest = Path(ingest), hashlib.sha256()
    if read_manifest(ingest)["format"] == "shards":
        entry = read_json(ingest / "shards" / "index.json", "ingest", "splits")["splits"].get("test", {})
        digest.update("".join(shard["sha256"] for shard in entry.get("shards", [])).encode())
        content, labels = read_arrays(ingest / "shards" / "test.index.npz", "ingest", "key", "label")
    else:
        content, labels = read_arrays(ingest / "test.npz", "ingest", "images", "labels")
    for array in (content, labels.astype(np.int64)):
        digest.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def normalise(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]``, standardised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
