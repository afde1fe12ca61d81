"""Classifiers that expose their penultimate features and their classifier head.

Every network here satisfies one contract, used by the meta step and by the neighbour search:
``net.features(x) -> [N, D]``, ``net.head`` is an ``nn.Linear(D, K)`` and ``net(x) == net.head(net.features(x))``.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import resnet50

Network = Literal["small_cnn", "preact_resnet32", "resnet50"]
NETWORKS = typing.get_args(Network)


class Classifier(nn.Module):
    """Base class: subclasses define ``features`` and set ``self.head``."""

    head: nn.Linear

    def features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class SmallCNN(Classifier):
    """Two conv blocks and a hidden layer: the CPU default for 28x28 and 32x32 images.

    It has no batch normalisation on purpose: every sample's output depends on that sample alone, which
    lets the exact meta step differentiate only the rows whose synthetic label changed (see ``mlnt.py``).
    """

    def __init__(self, num_classes: int, *, in_channels: int = 1, image_size: int = 28, width: int = 32,
                 hidden: int = 128):
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, width=width, hidden=hidden)
        if image_size % 4:
            raise ValueError(f"image_size: expected a multiple of 4 (e.g. 28 or 32), found {image_size}")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (image_size // 4) ** 2, hidden), nn.ReLU(),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return self.conv2(torch.relu(self.bn2(out))) + skip


class PreActResNet32(Classifier):
    """Pre-activation ResNet-32 (3 stages of 5 blocks, He et al.'s CIFAR widths 16/32/64): the network of MLNT's
    CIFAR-10 experiments. The public CIFAR-10 re-implementation's is wider (32/64/128 channels)."""

    def __init__(self, num_classes: int, *, in_channels: int = 3, blocks_per_stage: int = 5):
        super().__init__()
        _check_positive(num_classes=num_classes, in_channels=in_channels, blocks_per_stage=blocks_per_stage)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)]
        cin = 16
        for stage, cout in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                layers.append(_PreActBlock(cin, cout, 2 if stage and not block else 1))
                cin = cout
        layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


class ResNet50(Classifier):
    """torchvision's ResNet-50 with its ``fc`` as the head: the Clothing1M setup.

    ``pretrained`` is an ImageNet state dict (fetched by the caller; this module does no I/O). Its ``fc``
    entries are dropped because the head is sized for ``num_classes``.
    """

    def __init__(self, num_classes: int, *, pretrained: Mapping[str, Tensor] | None = None):
        super().__init__()
        _check_positive(num_classes=num_classes)
        trunk = resnet50(weights=None)
        if pretrained is not None:
            state = {k: v for k, v in pretrained.items() if not k.startswith("fc.")}
            missing, unexpected = trunk.load_state_dict(state, strict=False)
            if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
                raise ValueError(f"pretrained: expected a torchvision ResNet-50 state dict, found "
                                 f"missing keys {sorted(missing)[:5]} and unexpected keys {sorted(unexpected)[:5]}")
        self.head = nn.Linear(trunk.fc.in_features, num_classes)
        trunk.fc = nn.Identity()
        self.body = trunk

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)


def build_network(name: str, num_classes: int, *, in_channels: int = 3, image_size: int = 32,
                  pretrained: Mapping[str, Tensor] | None = None) -> Classifier:
    """Build a network by name. ``pretrained`` applies to ``resnet50`` only."""
    if name == "small_cnn":
        return SmallCNN(num_classes, in_channels=in_channels, image_size=image_size)
    if name == "preact_resnet32":
        return PreActResNet32(num_classes, in_channels=in_channels)
    if name == "resnet50":
        if in_channels != 3:
            raise ValueError(f"in_channels: resnet50 expects 3 (RGB), found {in_channels}")
        return ResNet50(num_classes, pretrained=pretrained)
    raise ValueError(f"Unknown network {name!r}. Valid: {', '.join(NETWORKS)}")


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, found {value!r}")
