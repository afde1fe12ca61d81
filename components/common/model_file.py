"""The model file format of the training steps (``model.pt``, ``final.pt``, ``teacher.pt``, ``student.pt``): the
network's name, its weights and what the data needs (classes, channels, image size, normalisation), saved
atomically and loaded without executing code; and the seeded initial network."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from components.common.atomic import write_atomic
from components.common.errors import DataError, torch_load_error
from model.networks import build_network

MODEL_FORMAT = 1
TRAINED_ON = "inputs_sha256"  # in the training steps' model files: ``splits.training_digest`` of what it trained on


def seeded_network(name: str, meta: dict[str, Any], seed: int, *,
                   pretrained: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """The network for ``meta`` (a ``load_split`` result), initialised from ``seed``: the same weights on every rerun
    and in every process, so a run killed before its first checkpoint restarts from the weights it began with.
    torch's global generator is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return build_network(name, meta["num_classes"], in_channels=meta["in_channels"],
                                 image_size=meta["image_size"], pretrained=pretrained)
        except ValueError as err:  # the network's own words name its argument, not the setting that sets it
            if not str(err).startswith("image_size: "):
                raise
            side = meta["image_size"]
            raise ValueError(f"ingest.image_size: {str(err).removeprefix('image_size: ')}: {name} takes only images "
                             f"of such a side, and the ingested images are {side}x{side}; set ingest.image_size to "
                             f"one (ingest resizes and centre-crops) and run ingest again") from err


def save_model(path: Path, state: dict[str, torch.Tensor], *, network: str, meta: dict[str, Any],
               extra: dict[str, Any] | None = None) -> None:
    """Write a model file to ``path`` atomically: format ``MODEL_FORMAT``, the ``network`` name, ``state`` (detached,
    on the CPU) as ``state_dict``, the keys of ``meta`` (``num_classes``, ``in_channels``, ``image_size``,
    ``normalisation``: a ``load_split`` result) and of ``extra``. ``load_model`` reads it back."""
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
        state, _ = payload["state_dict"], payload["normalisation"]
    except KeyError as err:
        raise DataError(f"{path}: expected a model file with network, num_classes, in_channels, image_size, "
                        f"normalisation and state_dict, found one without {err}") from err
    expected = f"{path}: expected weights that fit a {payload['network']} with {payload['num_classes']} classes"
    if not isinstance(state, dict):
        raise DataError(f"{expected}, found a state_dict of type {type(state).__name__}")
    ours = net.state_dict()
    missing, unexpected = [k for k in ours if k not in state], [k for k in state if k not in ours]
    if missing or unexpected:  # another network's weights: counted, a few named (PyTorch lists them all)
        found = [_keys(what, keys) for what, keys in (("missing", missing), ("unexpected", unexpected))
                 if keys]
        raise DataError(f"{expected}, found others ({'; '.join(found)}): the file holds another network")
    try:
        net.load_state_dict(state)
    except RuntimeError as err:  # PyTorch lists every size mismatch, one per line: the first says enough
        first = next(line.strip() for line in [*str(err).splitlines()[1:], str(err)] if line.strip())
        raise DataError(f"{expected}, found others ({first})") from err
    return net, payload


def _keys(what: str, keys: list[str], shown: int = 3) -> str:
    count = len(keys)
    return f"{count} {what} key{'s' if count != 1 else ''}: {', '.join(keys[:shown])}{', ...' if count > shown else ''}"


def check_fits(path: Path, saved: dict[str, Any], manifest: dict[str, Any], manifest_path: Path) -> None:
    """The model file at ``path`` (``load_model``'s metadata ``saved``) is one for the ingested dataset of
    ``manifest``: as many classes, the same channels and image size. A ``DataError`` naming both files otherwise."""
    size, _, channels = manifest["image_shape"]
    pairs = {"classes": (len(manifest["class_names"]), saved["num_classes"]),
             "channels": (channels, saved["in_channels"]), "image size": (size, saved["image_size"])}
    wrong = [_of(what, have) for what, (want, have) in pairs.items() if want != have]
    if wrong:
        expected = ", ".join(_of(what, want) for what, (want, _) in pairs.items())
        raise DataError(f"{path}: expected a model for the dataset of {manifest_path} ({expected}), found one "
                        f"with {', '.join(wrong)} (re-run the training steps on this dataset)")


def _of(what: str, value: int) -> str:
    return f"image size {value}" if what == "image size" else f"{value} {what[:-1] if value == 1 else what}"


def check_trained_on(path: Path, saved: dict[str, Any], digest: str, *, inputs: str, step: str = "baseline") -> None:
    """The model file at ``path`` (``load_model``'s metadata ``saved``), written by ``step``, was trained on the
    ``inputs`` whose ``splits.training_digest`` is ``digest`` (a file from before it recorded one is not checked for
    this, as ``labels.npz`` from before its digest). A ``DataError`` naming both digests otherwise: a model trained on
    other labels has seen the rows now held out for validation."""
    recorded = saved.get(TRAINED_ON)
    if recorded is not None and recorded != digest:
        raise DataError(f"{path}: expected a model trained on {inputs} (sha256 {digest[:16]}), found one trained on "
                        f"others (sha256 {recorded[:16]}) (re-run the {step} step)")
