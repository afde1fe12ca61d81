"""Data-loading throughput (samples/s) from the ingested artifacts, set against what training consumes.

In-memory datasets (Fashion-MNIST, CIFAR-10): ``components.common.splits.load_split`` reads ``train.npz`` and the
noise step's ``labels.npz`` once; each step then indexes a batch and, with augmentation on, crops and flips
it (``model.trainer.augment``), as the trainer's loop does. What training consumes is timed in the same section, right
after: a CE step of the small CNN on a batch of the same size (``ce_samples_per_s``), so the ratio of the two never
spans two runs (``benchmarks.run --sections``) or minutes of a changing load.

Clothing1M is streamed: the ingest step copies the original JPEG bytes into WebDataset tar shards, and
``components.common.streaming`` decodes, resizes and crops each image in ``DataLoader`` worker processes. ``streamed``
writes synthetic photo-like JPEGs of web-photo sizes in Clothing1M's official layout, ingests them with the ingest
step and times: the ingest; one worker's work (``ShardImages`` items in this process, with Pillow's JPEG ``draft``
as the loader decodes and without it); whole epochs of ``ShardSource`` batches with 1, 2, ... workers; the shards'
bytes against the JPEGs'; and a ResNet-50 CE step on this machine, the one consumer that can be measured here.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, JpegImagePlugin

from benchmarks.fixtures import write_clothing1m
from benchmarks.speed.measure import elapsed
from benchmarks.speed.meta_step import training_step
from benchmarks.speed.workload import Workload, network_for, reshape_for
from components import ingest
from components.common.streaming import open_split
from model.networks import build_network
from model.trainer import augment

# Web product photos (width, height) that the synthetic JPEGs cycle through: an assumption, stated in the report.
WEB_PHOTO_SIZES = ((500, 500), (600, 600), (640, 480), (800, 600), (600, 800))
NOISE_SIGMA = 4.0  # grey levels of pixel noise over the smooth blobs: about 1.5 bits per pixel at quality 90


def in_memory(workload: Workload, *, batch_size: int, device: torch.device, padding: int = 2,
              ce_repeats: int = 5) -> dict:
    """One epoch of batches as the trainer's loop fetches them, with and without augmentation, and beside it what
    training consumes: a CE step of the small CNN on ``device`` on the first batch (the median of ``ce_repeats``
    steps after one to warm up)."""
    data, cpu = workload.train, torch.device("cpu")
    steps = len(data) // batch_size
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)

    def epoch(with_augment: bool):
        def run():
            for b in range(steps):
                idx = order[b * batch_size:(b + 1) * batch_size]
                x, _ = data.images[idx], data.labels[idx]
                if with_augment:
                    augment(x, generator, padding=padding)
        return run

    samples = steps * batch_size
    fetched = {"fetch_samples_per_s": samples / elapsed(epoch(False), cpu),
               "fetch_augment_samples_per_s": samples / elapsed(epoch(True), cpu)}
    net, first = network_for("small_cnn", workload, device), order[:batch_size]
    x, y = reshape_for(data.images[first], "small_cnn").to(device), data.labels[first].to(device)
    ce = training_step(net, lambda: F.cross_entropy(net(x), y))  # meta_step's CE step (meta_step.steps)
    ce()
    took = statistics.median(elapsed(ce, device) for _ in range(ce_repeats))
    return {"samples": len(data), "batch": batch_size, "load_split_s": workload.load_s,
            "load_split_samples_per_s": len(data) / workload.load_s, **fetched,
            "ce_step_s": took, "ce_samples_per_s": batch_size / took}


def streamed(work: Path, *, images: int, sizes: tuple[tuple[int, int], ...], quality: int, resize: int,
             crop: int, shard_size: int, batch_size: int, workers: tuple[int, ...], passes: int, repeats: int,
             consumer: str, consumer_batch: int, device: torch.device, gpu_images_per_s: tuple[int, ...],
             epoch_images: int, node_workers: tuple[int, ...]) -> dict:
    """The Clothing1M loader on ``images`` synthetic web photos: ingest, one worker, whole epochs, disk space, and
    a CE step of ``consumer``. ``gpu_images_per_s``, ``epoch_images`` and ``node_workers`` are not measured: they
    are the inputs of the report's arithmetic for a GPU node, kept with the figures they are applied to."""
    root = write_web_photos(Path(work) / "clothing1m-photos", images=images, sizes=sizes, quality=quality)
    out = Path(work) / "clothing1m-photos-ingest"
    photos = sorted((root / "images").rglob("*.jpg"))
    started = time.perf_counter()
    manifest = ingest.run(ingest.IngestConfig(dataset="clothing1m", path=str(root), image_size=crop, resize=resize,
                                              shard_size=shard_size), out=out)
    ingest_s = time.perf_counter() - started
    ingested = sum(manifest["counts"].values())
    pixels = [_size(p) for p in photos]
    index_bytes = sum(p.stat().st_size for p in (out / "shards").iterdir() if not p.name.endswith(".tar"))
    return {"images": images, "sizes": [list(s) for s in sizes], "quality": quality, "noise_sigma": NOISE_SIGMA,
            "resize": resize, "crop": crop, "shard_size": shard_size, "batch": batch_size,
            "cpus": len(os.sched_getaffinity(0)),
            "source_mean_pixels": statistics.fmean(w * h for w, h in pixels),
            "draft_decodes": {f"{w}x{h}": list(_draft_size(path, resize))
                              for path, (w, h) in zip(photos, pixels, strict=True)},
            "ingest": {"images": ingested, "seconds": ingest_s, "images_per_s": ingested / ingest_s},
            "disk": {"images": ingested, "jpeg_bytes": sum(p.stat().st_size for p in photos),
                     "shard_bytes": manifest["shard_bytes"], "index_bytes": index_bytes,
                     "shards": sum(1 for p in (out / "shards").glob("*.tar")),
                     "decoded_bytes_per_image": crop * crop * 3},
            "worker": one_worker(out, repeats=repeats),
            "epochs": [epoch(out, workers=w, batch_size=batch_size, passes=passes, repeats=repeats)
                       for w in workers],
            **_consumption(consumer, image_size=crop, batch_size=consumer_batch, device=device),
            "assumed": {"gpu_images_per_s": list(gpu_images_per_s), "epoch_images": epoch_images,
                        "workers": list(node_workers)}}


def write_web_photos(root: Path, *, images: int, sizes: tuple[tuple[int, int], ...], quality: int,
                     seed: int = 0) -> Path:
    """Clothing1M's official layout (``benchmarks.fixtures.write_clothing1m``: ``images`` training keys, one
    validation and one test key) with every image replaced by a synthetic photo: the sizes in turn, smooth random
    colour blobs at two scales plus Gaussian pixel noise (``NOISE_SIGMA``), saved as a JPEG at ``quality``."""
    root = write_clothing1m(Path(root), per_split=1, train=images, seed=seed)
    rng = np.random.default_rng(seed)
    for i, path in enumerate(sorted((root / "images").rglob("*.jpg"))):
        width, height = sizes[i % len(sizes)]
        _photo(width, height, rng).save(path, quality=quality)
    return root


def _photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    def smooth(cells: int, spread: float) -> np.ndarray:
        grid = rng.normal(0.0, spread, (cells, cells, 3)).astype(np.float32)
        return np.stack([np.asarray(Image.fromarray(grid[..., c], "F").resize((width, height),
                                                                              Image.Resampling.BICUBIC))
                         for c in range(3)], axis=-1)

    base = rng.uniform(60.0, 200.0, 3).astype(np.float32)
    noise = rng.standard_normal((height, width, 3), dtype=np.float32) * NOISE_SIGMA
    pixels = base + smooth(4, 50.0) + smooth(16, 30.0) + noise
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _draft_size(path: Path, resize: int) -> tuple[int, int]:
    """The size at which the loader's ``draft`` decodes the JPEG at ``path`` (a reduced scale no smaller than
    ``resize`` on either side, where the image allows one)."""
    with Image.open(path) as img:
        img.draft("RGB", (resize, resize))
        return img.size


@contextmanager
def full_size_decodes() -> Iterator[None]:
    """Pillow's JPEG ``draft`` made a no-op (that of ``Image.Image``), so the loader decodes at full size."""
    with mock.patch.object(JpegImagePlugin.JpegImageFile, "draft", Image.Image.draft):
        yield


def one_worker(ingest_dir: Path, *, repeats: int) -> dict:
    """Images/s of ``ShardImages`` items (read, decode, resize, centre crop: what one ``DataLoader`` worker does
    per image) in this process, with the JPEG ``draft`` the loader uses and with Pillow's ``draft`` made a no-op
    (full-size decode). Each repetition times a pass over the split in both ways; medians."""
    dataset = open_split(ingest_dir, "train", workers=0).images
    items = [(row, -1) for row in range(len(dataset))]

    def full_decode():
        with full_size_decodes():
            walk()

    def walk():
        for item in items:
            dataset[item]

    cpu = torch.device("cpu")
    walk()  # warm: the shards in the page cache, Pillow's decoder loaded
    times = {"draft": [], "full": []}
    for _ in range(repeats):
        times["draft"].append(elapsed(walk, cpu))
        times["full"].append(elapsed(full_decode, cpu))
    return {"images": len(items), "repeats": repeats,
            **{f"{k}_images_per_s": len(items) / statistics.median(v) for k, v in times.items()}}


def epoch(ingest_dir: Path, *, workers: int, batch_size: int, passes: int, repeats: int) -> dict:
    """A ``ShardSource`` epoch (batches of ``batch_size``, centre crops, normalised) over the training split
    ``passes`` times over, with ``workers`` worker processes: images/s of the whole epoch, worker start-up
    included, and the loader's own per-worker figure (``epoch_stats``). Medians of ``repeats`` epochs."""
    source = open_split(ingest_dir, "train", workers=workers)
    source = replace(source, positions=np.tile(source.positions, passes), labels=source.labels.repeat(passes))
    rates, per_worker = [], []
    for number in range(repeats):
        count = 0
        started = time.perf_counter()
        for x, _ in source.batches(number, first=0, batch_size=batch_size, seed=0, rows=slice(0, batch_size)):
            count += x.shape[0]
        rates.append(count / (time.perf_counter() - started))
        per_worker.append(source.epoch_stats()["loader_images_per_s_per_worker"])
    return {"workers": workers, "passes": passes, "images": count, "images_per_s": statistics.median(rates),
            "loader_images_per_s_per_worker": statistics.median(per_worker)}


def _consumption(network: str, *, image_size: int, batch_size: int, device: torch.device) -> dict:
    """Samples/s of a CE training step of ``network`` on random images of the crop's size."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network(network, 14, in_channels=3, image_size=image_size).to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(14, (batch_size,), device=device)

    def step():
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()

    step()
    took = statistics.median(elapsed(step, device) for _ in range(2))
    return {"consumer": network, "consumer_batch": batch_size, "consumer_step_s": took,
            "consumer_samples_per_s": batch_size / took}
