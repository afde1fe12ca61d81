"""A release folder (``model.onnx``, ``model_card.json``, ``decision.json``) read and verified for serving."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ReleaseError(Exception):
    """The release folder cannot be served; the message names the file, the expected and the found value."""


@dataclass(frozen=True)
class InputSpec:
    """What the network takes and gives, from the model card."""

    name: str  # the ONNX input, float32 [batch, channels, height, width]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    output: str  # the ONNX output, probabilities [batch, classes]
    class_names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``: one input image's shape, without the batch axis."""
        return self.channels, self.height, self.width


@dataclass(frozen=True)
class Release:
    """A release folder as ``load_release`` read and verified it: the ONNX bytes, the card, the input spec, the
    version (``decision.json``'s, else the card's, else ``sha256-`` and the hash's first 8 hex digits) and the
    training class shares (uniform when the card has none)."""

    folder: Path
    onnx: bytes
    card: dict
    spec: InputSpec
    version: str
    train_distribution: tuple[float, ...]  # the class shares the drift gauge compares predictions with


def load_release(folder: str | Path) -> Release:
    """Read ``folder``; a ``ReleaseError`` if a file is missing, the card is incomplete or the hash differs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: expected a release folder with model.onnx and model_card.json, found "
                           f"{'a file' if folder.exists() else 'nothing'}")
    card = _read_json(folder / "model_card.json")
    onnx = _read_bytes(folder / "model.onnx")
    found = hashlib.sha256(onnx).hexdigest()
    if card.get("onnx_sha256") != found:
        raise ReleaseError(f"{folder / 'model.onnx'}: sha256 does not match the model card: expected "
                           f"{card.get('onnx_sha256')}, found {found}")
    spec = spec_from_card(card, folder / "model_card.json")
    return Release(folder=folder, onnx=onnx, card=card, spec=spec, version=_version(folder, card),
                   train_distribution=_train_distribution(card, len(spec.class_names)))


def spec_from_card(card: dict, where: Path) -> InputSpec:
    """The ``InputSpec`` in ``card`` (``input.name``, ``input.shape``, ``input.normalisation``, ``output.name``,
    ``class_names``); a ``ReleaseError`` naming ``where`` when one is missing or malformed, or the normalisation has
    not one mean and std per channel."""
    try:
        _, channels, height, width = card["input"]["shape"]
        norm = card["input"]["normalisation"]
        spec = InputSpec(name=card["input"]["name"], channels=int(channels), height=int(height), width=int(width),
                         mean=tuple(map(float, norm["mean"])), std=tuple(map(float, norm["std"])),
                         output=card["output"]["name"], class_names=tuple(card["class_names"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ReleaseError(f"{where}: expected input.name, input.shape [batch, C, H, W], input.normalisation "
                           f"(mean, std), output.name and class_names, found a card without them ({exc!r})") from None
    if not len(spec.mean) == len(spec.std) == spec.channels:
        raise ReleaseError(f"{where}: expected {spec.channels} normalisation means and stds (one per channel), "
                           f"found {len(spec.mean)} and {len(spec.std)}")
    return spec


def _train_distribution(card: dict, classes: int) -> tuple[float, ...]:
    shares = card.get("train_class_distribution")
    if isinstance(shares, list) and len(shares) == classes:
        return tuple(float(s) for s in shares)
    log.warning("model card has no train_class_distribution with %d entries; the drift gauge compares "
                "predictions with the uniform distribution", classes)
    return (1.0 / classes,) * classes


def _version(folder: Path, card: dict) -> str:
    decision = folder / "decision.json"
    if decision.is_file():
        version = _read_json(decision).get("version")
        if version:
            return str(version)
    return str(card.get("version") or f"sha256-{card['onnx_sha256'][:8]}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{path}: expected a readable file, found {exc.strerror.lower()}") from None


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(_read_bytes(path))
    except ValueError as exc:
        raise ReleaseError(f"{path}: expected a JSON object, found invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ReleaseError(f"{path}: expected a JSON object, found {type(value).__name__}")
    return value
