"""What the training steps (baseline, mlnt) share: loading the noisy split (in memory or streamed from shards), and
the model file format."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from components.artifacts import read_arrays, read_json
from components.atomic import write_atomic, write_json
from components.checkpoints import FileCheckpointStore
from components.formats import DataError, sha256_file, torch_load_error
from components.formats.webdataset import verify_shards
from components.streaming import open_split
from model.distributed import Group, from_environment
from model.networks import build_network
from model.trainer import Data, Source, TrainConfig, TrainResult, pick_device, run_identity

MODEL_FORMAT = 1


def load_split(ingest: Path, noise: Path, *, workers: int = 2, augment: bool = False,
               ) -> tuple[Source, Source, dict[str, Any]]:
    """The training and validation sets, and what a model file must record. In memory (normalised float tensors)
    for datasets ingested as arrays; streamed from the shards (``components.streaming``, ``workers`` decoding
    processes, ``augment``: random crops and flips) for a sharded dataset. A dataset's own clean validation split
    (Clothing1M's, an image folder's ``val``) is the validation set; otherwise the noise step's held-out rows."""
    ingest, noise = Path(ingest), Path(noise)
    manifest = read_json(ingest / "manifest.json", "ingest")
    index, given, is_val = read_arrays(noise / "labels.npz", "noise", "index", "label", "is_val")
    if manifest.get("format") == "shards":
        return _shard_split(ingest, noise, index, given, workers=workers, augment=augment)
    (images,) = read_arrays(ingest / "train.npz", "ingest", "images")
    _check_rows(noise / "labels.npz", index, images.shape[0])
    pixels = images[index[~is_val]].astype(np.float32) / 255.0
    mean = pixels.mean(axis=(0, 1, 2)).tolist()
    std = (pixels.std(axis=(0, 1, 2)) + 1e-6).tolist()
    x = normalise(images[index], mean, std)
    y = torch.from_numpy(given.astype(np.int64))
    mask = torch.from_numpy(is_val)
    meta = {"num_classes": len(manifest["class_names"]) if "class_names" in manifest else int(given.max()) + 1,
            "in_channels": int(images.shape[3]), "image_size": int(images.shape[1]),
            "normalisation": {"mean": mean, "std": std}}
    if "val" in manifest.get("counts", {}):  # the dataset's own clean validation split (an image folder's val)
        val_images, val_labels = read_arrays(ingest / "val.npz", "ingest", "images", "labels")
        val = Data(normalise(val_images, mean, std), torch.from_numpy(val_labels.astype(np.int64)))
    else:
        val = Data(x[mask], y[mask])
    return Data(x[~mask], y[~mask]), val, meta


def _shard_split(ingest: Path, noise: Path, index: np.ndarray, given: np.ndarray, *, workers: int,
                 augment: bool) -> tuple[Source, Source, dict[str, Any]]:
    manifest = read_json(ingest / "manifest.json", "ingest", "transform", "class_names", "counts")
    if "val" not in manifest["counts"]:
        raise DataError(f"{ingest / 'manifest.json'}: expected a sharded dataset with its own val split, found "
                        f"the splits {sorted(manifest['counts'])}")
    _check_rows(noise / "labels.npz", index, manifest["counts"]["train"])
    verify_shards(ingest, ("train", "val"))
    train = open_split(ingest, "train", positions=index, labels=torch.from_numpy(given.astype(np.int64)),
                       workers=workers, augment=augment)
    transform = manifest["transform"]
    meta = {"num_classes": len(manifest["class_names"]), "in_channels": 3, "image_size": transform["crop"],
            "normalisation": {"mean": transform["mean"], "std": transform["std"]}}
    return train, open_split(ingest, "val", workers=workers), meta


def _check_rows(labels: Path, index: np.ndarray, count: int) -> None:
    if index.size and index.max() >= count:
        raise DataError(f"{labels}: expected indices below the {count} ingested images, found {int(index.max())} "
                        f"(re-run the noise step)")


def split_inputs(ingest: Path, noise: Path) -> list[Path]:
    """The files a training run's result depends on (they name its checkpoint folder): the ingested training
    images (or the shard index, which holds every shard's sha256) and the noise step's labels."""
    ingest = Path(ingest)
    images = ingest / "shards" / "index.json" if (ingest / "shards" / "index.json").is_file() else ingest / "train.npz"
    return [images, Path(noise) / "labels.npz"]


def test_set(ingest: Path, normalisation: dict[str, list[float]], *, workers: int = 2) -> Source:
    """The clean test set: in memory, normalised with a model file's ``normalisation``, or streamed from the test
    shards (with the manifest's transform, which is the one every model of a sharded dataset was trained with)."""
    ingest = Path(ingest)
    if read_json(ingest / "manifest.json", "ingest").get("format") == "shards":
        verify_shards(ingest, ("test",))
        return open_split(ingest, "test", workers=workers)
    images, labels = read_arrays(ingest / "test.npz", "ingest", "images", "labels")
    x = normalise(images, normalisation["mean"], normalisation["std"])
    return Data(x, torch.from_numpy(labels.astype(np.int64)))


def normalise(images: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]``, standardised per channel."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def seeded_network(name: str, meta: dict[str, Any], seed: int, *,
                   pretrained: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The network for ``meta`` (a ``load_split`` result), initialised from ``seed``: the same weights on every rerun
    and in every process, so a run killed before its first checkpoint restarts from the weights it began with.
    torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(name, meta["num_classes"], in_channels=meta["in_channels"],
                             image_size=meta["image_size"], pretrained=pretrained)


def save_model(path: Path, state: dict[str, torch.Tensor], *, network: str, meta: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    state = {k: v.detach().cpu() for k, v in state.items()}
    payload = {"format": MODEL_FORMAT, "network": network, "state_dict": state, **meta, **(extra or {})}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, lambda fh: fh.write(buffer.getvalue()))


def load_model(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A network and its metadata from a model file, loaded without executing code (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: expected a model file, found no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a malformed archive
        raise DataError(f"{path}: expected a model file written by this project, found unreadable data "
                        f"({torch_load_error(err)})") from err
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DataError(f"{path}: expected model format {MODEL_FORMAT}, found {found!r}")
    try:
        net = build_network(payload["network"], payload["num_classes"], in_channels=payload["in_channels"],
                            image_size=payload["image_size"])
        state = payload["state_dict"]
    except KeyError as err:
        raise DataError(f"{path}: expected a model file with network, num_classes, in_channels, image_size and "
                        f"state_dict, found one without {err}") from err
    try:
        net.load_state_dict(state)
    except RuntimeError as err:  # PyTorch lists every mismatch, one per line: the first says enough
        first = next(line.strip() for line in [*str(err).splitlines()[1:], str(err)] if line.strip())
        raise DataError(f"{path}: expected weights that fit a {payload['network']} with {payload['num_classes']} "
                        f"classes, found others ({first})") from err
    return net, payload


def checkpoint_store(out: Path, config: Any, inputs: list[Path], *, root: Path | None = None) -> FileCheckpointStore:
    """The checkpoint folder of this run: ``<root>/<id>`` (``root`` defaults to ``out/checkpoints``), the id a hash
    of the input files and of ``model.trainer.run_identity(config)``, the fields the trainer's resume policy does
    not let change (all but those that cannot change the result and, in a one-round run, ``epochs``). A rerun with
    the same config and inputs resumes, one with more epochs continues where the last one stopped (exactly the
    longer run), one with fewer is refused by the trainer; any other change starts afresh in another folder. A
    ``root`` outside ``out`` outlives the step's output folder: a Kubeflow retry, whose outputs start empty,
    resumes from it."""
    fields = run_identity(config)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for path in inputs:
        digest.update(sha256_file(Path(path)).encode())
    return FileCheckpointStore(Path(root or Path(out) / "checkpoints") / digest.hexdigest()[:16])


def drop_stale_checkpoints(store: FileCheckpointStore, *, shared: bool = False) -> None:
    """Once this run's outputs are written: remove the checkpoints of other (older) runs beside ``store``, or,
    in a ``shared`` root that other runs use at the same time, this run's own."""
    if shared:
        shutil.rmtree(store.directory, ignore_errors=True)
        return
    for sibling in store.directory.parent.iterdir():
        if sibling != store.directory and sibling.is_dir():
            shutil.rmtree(sibling)


@contextmanager
def data_parallel(config: TrainConfig) -> Iterator[Group]:
    """The processes this training step runs in: those ``torchrun`` started (``WORLD_SIZE`` > 1; ``gloo``
    on the CPU, ``nccl`` on CUDA), else this one alone. Only the group's main process writes outputs."""
    group = from_environment(pick_device(config.device).type)
    try:
        yield group
    finally:
        if group.active and dist.is_initialized():
            dist.destroy_process_group()


def write_history(out: Path, result: TrainResult) -> None:
    """``history.json``, and the final curves (``write_curves``)."""
    write_json(Path(out) / "history.json", result.history)
    write_curves(out, result.history, result.evaluations)


def write_curves(out: Path, history: list[dict], evaluations: list[dict]) -> None:
    """The training curves through dvclive under ``out/live/`` (``dvc plots``, the VS Code extension), by
    training step: every validation's accuracies (``val_accuracy_*``, the teacher's start share) and each
    epoch's loss, learning rate and throughput. Rewritten whole from the run's records at every validation
    (``train``'s ``on_validation``), so the curves follow a run live and a resumed run shows each step once."""
    from dvclive import Live  # noqa: PLC0415 - only the training steps log curves

    rows: dict[int, dict[str, float]] = {}
    for record in evaluations:
        rows.setdefault(int(record["step"]), {}).update({k: v for k, v in record.items() if k not in ("step", "epoch")})
    for record in history:
        rows.setdefault(int(record["step"]), {}).update(
            {k: v for k, v in record.items() if k not in ("step", "epoch") and k not in rows[int(record["step"])]})
    live_dir = Path(out) / "live"
    shutil.rmtree(live_dir, ignore_errors=True)
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) as live:
        for step in sorted(rows):
            live.step = step
            for key, value in rows[step].items():
                live.log_metric(key, value)
            live.next_step()


