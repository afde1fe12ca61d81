"""ImageNet weights for the networks that have them (ResNet-50), read from torchvision's cache (downloaded into
it where the network allows).

The weights are torchvision's original ``IMAGENET1K_V1`` (the ``pretrained=True`` of the authors' Clothing1M
code). Asking for them and not getting them is an error that names the file and where to put it: a run that
silently trained from random weights instead would look like a worse method.
"""

from __future__ import annotations

import socket
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import ResNet50_Weights

from components.common.artifacts import sha256_file

TIMEOUT_S = 20.0
WEIGHTS = {"resnet50": ResNet50_Weights.IMAGENET1K_V1}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for and could not be had."""


def weights_file(network: str) -> Path:
    """Where torchvision looks for ``network``'s ImageNet weights (the torch hub cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(WEIGHTS[network].url).name


def imagenet_weights(network: str) -> Mapping[str, Tensor] | None:
    """The ImageNet state dict of ``network``; None for networks that have none. Raises
    ``PretrainedWeightsError`` when the weights are neither cached nor downloadable."""
    if network not in WEIGHTS:
        return None
    weights = WEIGHTS[network]
    if weights_file(network).is_file():  # torchvision checks the hash only of a file it downloads
        check_named_hash(weights_file(network), url=weights.url)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        raise PretrainedWeightsError(
            f"pretrained: expected the ImageNet weights of {network} at {weights_file(network)}, found none "
            f"and the download from {weights.url} failed ({' '.join(str(err).split())}); put the file there "
            f"(it is the same on every machine), or set pretrained: false to train from random weights") from err
    finally:
        socket.setdefaulttimeout(previous)


def check_named_hash(path: Path, *, url: str) -> None:
    """The file at ``path`` has the sha256 whose first hex digits its name holds (torchvision's convention,
    ``name-<prefix>.pth``); a ``PretrainedWeightsError`` naming the file, the prefix and the digest found otherwise:
    a file put there by hand (``url`` is where the right one is) may be another network's, or random weights."""
    match = torch.hub.HASH_REGEX.search(path.name)
    prefix = match.group(1) if match else ""
    found = sha256_file(path)
    if len(prefix) < 8 or not found.startswith(prefix):
        raise PretrainedWeightsError(
            f"{path}: expected ImageNet weights whose sha256 starts with {prefix or 'the 8+ hex digits'} (the prefix "
            f"in the file's name), found sha256 {found}; delete the file to download it again, or put the file "
            f"from {url} there")
