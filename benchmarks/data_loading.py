"""Data-loading throughput (samples/s) from the ingested artifacts, set against what training consumes.

In-memory datasets (Fashion-MNIST, CIFAR-10): ``components.training.load_split`` reads ``train.npz`` and the
noise step's ``labels.npz`` once; each step then indexes a batch and, with augmentation on, crops and flips
it (``model.trainer.augment``), as the trainer's loop does. Large datasets (Clothing1M) are ingested into
shards (``shards/<split>-<n>.npz``); they are read here one shard at a time with the validate step's reader
(``components.validate.iter_images``) and normalised, from a small dataset written in Clothing1M's official
layout (``benchmarks.fixtures``) and ingested by the ingest step.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.fixtures import write_clothing1m
from benchmarks.measure import elapsed
from benchmarks.workload import Workload
from components import ingest
from components.training import normalise
from components.validate import iter_images
from model.networks import build_network
from model.trainer import augment

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def in_memory(workload: Workload, *, batch_size: int, padding: int = 2) -> dict:
    """One epoch of batches as the trainer's loop fetches them, with and without augmentation."""
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
    return {"samples": len(data), "batch": batch_size, "load_split_s": workload.load_s,
            "load_split_samples_per_s": len(data) / workload.load_s,
            "fetch_samples_per_s": samples / elapsed(epoch(False), cpu),
            "fetch_augment_samples_per_s": samples / elapsed(epoch(True), cpu)}


def sharded(work: Path, *, images: int, image_size: int, shard_size: int, batch_size: int, consumer: str,
            consumer_batch: int, device: torch.device) -> dict:
    """Read a Clothing1M-style sharded ingest back in batches; time a CE step of ``consumer`` on such a batch."""
    root = write_clothing1m(Path(work) / "clothing1m", per_split=images)
    out = Path(work) / "clothing1m-ingest"
    ingest.run(ingest.IngestConfig(dataset="clothing1m", path=str(root), image_size=image_size,
                                   shard_size=shard_size), out=out)
    count = 0

    def read():
        nonlocal count
        count = 0
        for split, pixels, _ in iter_images(out):
            if split == "train":
                x = normalise(pixels, IMAGENET_MEAN, IMAGENET_STD)
                count += sum(chunk.shape[0] for chunk in x.split(batch_size))

    read_s = min(elapsed(read, torch.device("cpu")) for _ in range(3))
    return {"images": count, "image_size": image_size, "shard_size": shard_size,
            "read_samples_per_s": count / read_s,
            **_consumption(consumer, image_size=image_size, batch_size=consumer_batch, device=device)}


def _consumption(network: str, *, image_size: int, batch_size: int, device: torch.device) -> dict:
    """Samples/s of a CE training step of ``network`` on random images of the shards' size."""
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
