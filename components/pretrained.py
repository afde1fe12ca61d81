"""ImageNet weights for the networks that have them (ResNet-50), fetched through torchvision's cache.

Where the weights cannot be had (no network, no cached copy), training goes on from a random initialisation
and says so, with the file to place in the cache to use them offline.
"""

from __future__ import annotations

import logging
import socket
import urllib.error
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import ResNet50_Weights

log = logging.getLogger(__name__)
TIMEOUT_S = 20.0


def imagenet_weights(network: str) -> Mapping[str, Tensor] | None:
    """The ImageNet state dict of ``network``, or None (with a warning) where it has none or none can be had."""
    if network != "resnet50":
        return None
    weights = ResNet50_Weights.IMAGENET1K_V2
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_S)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        log.warning("ImageNet weights for resnet50 are not available (%s); training starts from a random "
                    "initialisation. To use them offline, place %s at %s.", err, Path(weights.url).name, cached)
        return None
    finally:
        socket.setdefaulttimeout(previous)
