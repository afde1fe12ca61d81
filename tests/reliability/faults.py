"""Small, named ways to break a file in a workspace. Each takes paths relative to the current folder (the
workspace copy a fault runs in)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from components.common.checkpoints import FileCheckpointStore

MARKER = "pwned"  # the folder a malicious pickle would create if it ever ran


class RunsCode:
    """Unpickling this calls ``os.mkdir(MARKER)``: proof, if the folder appears, that a loader ran code."""

    def __reduce__(self):
        return (os.mkdir, (MARKER,))


def truncate(path: str, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * keep)])


def garbage(path: str, data: bytes = b"\x00not what you think\xff" * 8) -> None:
    Path(path).write_bytes(data)


def delete(path: str) -> None:
    Path(path).unlink()


def edit_json(path: str, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file after ``change`` edited its value in place (what ``change`` returns is ignored)."""
    value = json.loads(Path(path).read_text())
    change(value)
    Path(path).write_text(json.dumps(value))


def wrap_json(path: str) -> None:
    """The JSON value of a file, wrapped in a list: valid JSON of the wrong shape."""
    Path(path).write_text(json.dumps([json.loads(Path(path).read_text())]))


def edit_params(change: Callable[[dict], Any]) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    change(params)
    Path("params.yaml").write_text(yaml.safe_dump(params))


def edit_npz(path: str, change: Callable[[dict[str, np.ndarray]], Any]) -> None:
    with np.load(path) as data:
        arrays = dict(data)
    change(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def as_npy(path: str) -> None:
    """Replace an ``.npz`` archive by a single array in ``.npy`` format, under the archive's name."""
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))


def edit_model(path: str, change: Callable[[dict], Any]) -> None:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)


def with_classes(count: int) -> Callable[[dict], None]:
    """A change to a model file: a head of ``count`` classes, its weights resized to fit (a model of another
    dataset that loads)."""
    def change(payload: dict) -> None:
        state = payload["state_dict"]
        state["head.weight"] = state["head.weight"][:1].repeat(count, 1)
        state["head.bias"] = state["head.bias"][:1].repeat(count)
        payload["num_classes"] = count
    return change


def torch_pickle_with_code(path: str) -> None:
    torch.save({"format": 1, "state_dict": RunsCode()}, path)


def checkpoint_with_code(path: str) -> None:
    """A checkpoint whose sha256 trailer is right but whose payload would run code when unpickled."""
    buffer = io.BytesIO()
    torch.save({"model": RunsCode()}, buffer)
    payload = buffer.getvalue()
    Path(path).write_bytes(payload + b"\nsha256:" + hashlib.sha256(payload).hexdigest().encode())


def run_folder(step: str, root: Path = Path()) -> Path:
    """The (only) checkpoint folder of a training step's run."""
    (folder,) = (root / "artifacts" / step / "checkpoints").iterdir()
    return folder


def resave_checkpoint(step: str, change: Callable[[dict], Any]) -> None:
    """Rewrite the run's ``round0`` checkpoint through the store, so its trailer is valid."""
    store = FileCheckpointStore(run_folder(step))
    state = store.load("round0")
    change(state)
    store.save("round0", state)


def cifar_batch(name: str, batch: object) -> None:
    Path(f"data/cifar10/cifar-10-batches-py/{name}").write_bytes(pickle.dumps(batch, protocol=2))


def match_card_to_onnx(folder: str) -> None:
    """Make a release's model card, and its gate decision where it has one, vouch for whatever model.onnx now holds."""
    digest = hashlib.sha256(Path(folder, "model.onnx").read_bytes()).hexdigest()
    for name in ("model_card.json", "decision.json"):
        if Path(folder, name).is_file():
            edit_json(f"{folder}/{name}", lambda record: record.update(onnx_sha256=digest))


def relink(link: str, target: str) -> None:
    Path(link).unlink()
    Path(link).symlink_to(target)
