"""A release folder (``model.onnx``, ``model_card.json``, ``decision.json``) read and verified for serving."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger(__name__)


class ReleaseError(Exception):
    """The release folder cannot be served; the message names the file, the expected and the found value."""


SHORT_SIDE = "short side, then centre crop"  # the methods of a card's input.transform (components.export)
STRETCH = "resize to the input size"
METHODS = (SHORT_SIDE, STRETCH)
FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")  # Pillow's, by its names
OFFSETS = ("round", "floor")  # the crop's corner: round((side - crop) / 2), halves to even; (side - crop) // 2


@dataclass(frozen=True)
class Transform:
    """How an encoded image becomes the network's input size, from the card's ``input.transform``: ``STRETCH``
    (resized to the input size, the aspect ratio not kept: a card without a transform, or a dataset stored at its
    final size) or ``SHORT_SIDE`` (a JPEG decoded at Pillow's draft scale no smaller than ``resize`` if
    ``jpeg_draft``, the short side resized to ``resize``, then the centre ``crop`` square with its corner at
    ``offset``), resampled with Pillow's ``filter``: exactly what training and evaluate did to the images."""

    method: str = STRETCH
    filter: str = "bilinear"
    resize: int = 0  # SHORT_SIDE: the short side's length before the crop
    crop: int = 0  # SHORT_SIDE: the side of the centre square (the input's height and width)
    offset: str = "floor"
    jpeg_draft: bool = False


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
    transform: Transform = Transform()  # how an encoded image is resized (and cropped) to the input size

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
    reference_distribution: tuple[float, ...]  # the class shares the drift gauge compares predictions with


def load_release(folder: str | Path) -> Release:
    """Read ``folder``; a ``ReleaseError`` if a file is missing, the card is incomplete or a hash differs. A link
    (``releases/latest``) is resolved once, first: every file is read from the version folder it named then, which
    the ``Release`` names, however the gate re-points the link meanwhile."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReleaseError(f"{folder}: expected a release folder with model.onnx and model_card.json, found "
                           f"{'a file' if folder.exists() else 'nothing'}")
    folder = folder.resolve()
    card = _read_json(folder / "model_card.json")
    onnx = _read_bytes(folder / "model.onnx")
    found = hashlib.sha256(onnx).hexdigest()
    if card.get("onnx_sha256") != found:
        raise ReleaseError(f"{folder / 'model.onnx'}: sha256 does not match the model card: expected "
                           f"{card.get('onnx_sha256')}, found {found}")
    spec = spec_from_card(card, folder / "model_card.json")
    return Release(folder=folder, onnx=onnx, card=card, spec=spec, version=_version(folder, card),
                   reference_distribution=_reference_distribution(card, len(spec.class_names)))


def spec_from_card(card: dict, where: Path) -> InputSpec:
    """The ``InputSpec`` in ``card`` (``input.name``, ``input.shape``, ``input.normalisation``, ``output.name``,
    ``class_names``, and ``input.transform`` where the card has one: an older card without it has its images resized
    to the input size); a ``ReleaseError`` naming ``where`` when one is missing or malformed, or the normalisation has
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
    return replace(spec, transform=transform_from_card(card["input"].get("transform"), spec, where))


def transform_from_card(found: object, spec: InputSpec, where: Path) -> Transform:
    """The ``Transform`` of a card's ``input.transform`` (``found``; None: absent, images resized to the input size
    as before cards recorded it); a ``ReleaseError`` naming ``where`` for a method, filter or offset the predictor
    does not know, or a crop that is not the input's height and width: serving such a model would feed it images
    unlike the ones it was trained on."""
    if found is None:
        return Transform()
    if not isinstance(found, dict):
        raise ReleaseError(f"{where}: expected input.transform to be an object, found {type(found).__name__}")
    method, resample = found.get("method"), found.get("filter", "bilinear")
    if method not in METHODS or resample not in FILTERS:
        raise ReleaseError(f"{where}: expected input.transform with a method in {list(METHODS)} and a filter in "
                           f"{list(FILTERS)}, found method {method!r}, filter {resample!r}")
    if method == STRETCH:
        return Transform(STRETCH, resample)
    resize, crop, offset, draft = (found.get(k) for k in ("resize", "crop", "offset", "jpeg_draft"))
    if not (_whole(resize) and _whole(crop) and offset in OFFSETS and isinstance(draft, bool)) or resize < crop \
            or not crop == spec.height == spec.width:
        raise ReleaseError(f"{where}: expected input.transform '{SHORT_SIDE}' with integers resize >= crop = the "
                           f"input's height and width ({spec.height}x{spec.width}), an offset in {list(OFFSETS)} and "
                           f"jpeg_draft true or false, found resize {resize!r}, crop {crop!r}, offset {offset!r}, "
                           f"jpeg_draft {draft!r}")
    return Transform(SHORT_SIDE, resample, resize, crop, offset, draft)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _reference_distribution(card: dict, classes: int) -> tuple[float, ...]:
    """What the drift gauge compares the served predictions with: the card's ``predicted_class_distribution`` (the
    model's own predictions on the test set); in a card exported before it, ``train_class_distribution`` (the
    training labels' shares, noisy: under class-dependent noise they differ from what the model predicts on
    unchanged data, so the gauge starts above 0), with a warning; else the uniform distribution, with a warning."""
    for key in ("predicted_class_distribution", "train_class_distribution"):
        shares = card.get(key)
        if isinstance(shares, list) and len(shares) == classes:
            if key != "predicted_class_distribution":
                log.warning("model card has no predicted_class_distribution (exported before it was recorded); the "
                            "drift gauge compares predictions with the training labels' shares, which class-dependent "
                            "noise skews: export the model again for the model's own")
            return tuple(float(s) for s in shares)
    log.warning("model card has no predicted_class_distribution or train_class_distribution with %d entries; the "
                "drift gauge compares predictions with the uniform distribution", classes)
    return (1.0 / classes,) * classes


def _version(folder: Path, card: dict) -> str:
    """``decision.json``'s version (where its ``onnx_sha256``, if any, is the card's: a ``ReleaseError`` if not),
    else the card's, else ``sha256-`` and the hash's first 8 hex digits."""
    decision = folder / "decision.json"
    if decision.is_file():
        found = _read_json(decision)
        if found.get("onnx_sha256") not in (None, card["onnx_sha256"]):
            raise ReleaseError(f"{decision}: expected onnx_sha256 {card['onnx_sha256']} (the model.onnx read), found "
                               f"{found['onnx_sha256']}")
        if found.get("version"):
            return str(found["version"])
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
