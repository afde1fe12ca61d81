"""The data every benchmark runs on, made as the pipeline makes it.

The ingest and noise steps run on the dataset (Fashion-MNIST by default) with ``params.yaml``'s settings (its
``noise`` section: kind, rate and the training subset); ``components.common.splits.load_split`` then gives the noisy
training split exactly as the trainer sees it. A small CNN trained with cross-entropy for ``FEATURE_EPOCHS`` on
that split stands in for the pipeline's frozen baseline: MLNT's synthetic label sets come from nearest neighbours
in its feature space (``model.neighbours.synthetic_labels`` with ``FRACTION`` and ``NEIGHBOURS``, as the trainer
calls it), and its softmax is the consistency target; ``describe`` records these in ``results.json``. Neighbours
in a trained network's feature space mostly share the true class, so a resampled label often equals the old one;
pixels would make more labels change and overstate the meta step's cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components import ingest, noise
from components.common.config import build, load_params
from components.common.splits import load_split
from model.neighbours import synthetic_labels
from model.networks import build_network
from model.trainer import Data, TrainConfig, train

FRACTION, NEIGHBOURS = 0.5, 10  # params.yaml mlnt.fraction and mlnt.neighbours
FEATURE_EPOCHS = 1  # CE epochs of the feature network
# The networks benchmarked, with their input shape (channels, size): PreAct ResNet-32 gets CIFAR-shaped
# inputs (the Fashion-MNIST images resized to 32 x 32 and repeated over 3 channels).
SHAPES = {"small_cnn": (1, 28), "preact_resnet32": (3, 32)}


@dataclass
class Workload:
    train: Data  # the noisy training split, normalised, as the trainer holds it
    feature_net: nn.Module  # the CE-trained network whose features drive the neighbour search
    ingest: Path
    noise: Path
    load_s: float  # seconds that load_split took
    source: str
    meta: dict  # load_split's: classes, image shape, normalisation
    noise_setting: dict  # the noise step's kind and rate


@dataclass
class Batch:
    """One training batch for a network: images, given labels, M synthetic label sets and the target."""

    images: Tensor
    labels: Tensor
    synthetic: Tensor  # [M, N]
    teacher: Tensor  # [N, K] probabilities

    @property
    def changed(self) -> float:
        """The share of synthetic labels that differ from the given ones."""
        return float((self.synthetic != self.labels).float().mean())


def prepare(data: Path, work: Path, *, params_file: Path, train_size: int | None = None) -> Workload:
    """Ingest and add noise to ``data`` under ``work``, load the training split, train the feature network."""
    params = load_params(params_file)
    ingested, noisy = Path(work) / "ingest", Path(work) / "noise"
    ingest.run(build(ingest.IngestConfig, {**params["ingest"], "path": str(data)}, where="ingest"), out=ingested)
    noise_params = {**params["noise"], **({"train_size": train_size} if train_size is not None else {})}
    noise_config = build(noise.NoiseConfig, noise_params, where="noise")
    noise.run(noise_config, ingest=ingested, out=noisy)
    start = time.perf_counter()
    train_data, _, meta = load_split(ingested, noisy)
    load_s = time.perf_counter() - start
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("small_cnn", meta["num_classes"], in_channels=meta["in_channels"],
                            image_size=meta["image_size"])
    config = TrainConfig(epochs=FEATURE_EPOCHS, batch_size=min(128, len(train_data)), augment=False,
                         checkpoint_every=0, device="cpu", progress=False)
    train(config, net, train_data)
    return Workload(train_data, net.eval(), ingested, noisy, load_s, f"{params['ingest']['dataset']} ({data})",
                    meta, {"kind": noise_config.kind, "rate": noise_config.rate})


def describe(workload: Workload) -> dict:
    """What ``results.json`` records of the workload: its data and noise, and how its label sets are made."""
    return {"source": workload.source, "train_samples": len(workload.train), "noise": workload.noise_setting,
            "feature_epochs": FEATURE_EPOCHS, "neighbours": NEIGHBOURS, "fraction": FRACTION}


def make_batch(workload: Workload, network: str, *, size: int, sets: int, seed: int = 0,
               device: torch.device | None = None) -> Batch:
    """``size`` random training samples shaped for ``network``, with ``sets`` synthetic label sets."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(workload.train), generator=g)[:size]
    x, y = workload.train.images[pick], workload.train.labels[pick]
    with torch.no_grad():
        synth = synthetic_labels(workload.feature_net.features(x), y, num_sets=sets, fraction=FRACTION,
                                 neighbours=min(NEIGHBOURS, size - 1), generator=g)
        teacher = workload.feature_net(x).softmax(dim=1)
    x = reshape_for(x, network)
    device = device or torch.device("cpu")
    return Batch(x.to(device), y.to(device), synth.to(device), teacher.to(device))


def reshape_for(x: Tensor, network: str) -> Tensor:
    channels, size = SHAPES[network]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.expand(-1, channels, -1, -1).contiguous() if x.shape[1] != channels else x


def network_for(network: str, workload: Workload, device: torch.device, *, seed: int = 0) -> nn.Module:
    """A freshly initialised ``network`` (the same weights for the same seed) for the workload's classes."""
    return fresh_network(network, workload.feature_net.head.out_features, device, seed=seed)


def fresh_network(network: str, classes: int, device: torch.device, *, seed: int = 0) -> nn.Module:
    """A freshly initialised ``network`` for ``classes`` classes, shaped as ``SHAPES`` says."""
    channels, size = SHAPES[network]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_network(network, classes, in_channels=channels, image_size=size)
    return net.to(device)
