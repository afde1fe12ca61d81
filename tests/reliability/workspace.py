"""A tiny, complete pipeline workspace (data in every supported format, each step's outputs, a released
champion), built once and copied for each fault so that every fault starts from the same good state."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.components.conftest import make_fashion_mnist
from tests.components.formats_fixtures import write_cifar10, write_cifar10n, write_clothing1m, write_image

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("ingest", "noise", "baseline", "mlnt", "evaluate", "export", "gate")


def tiny_params() -> dict:
    """``params.yaml`` with every default, shrunk so that the whole pipeline trains in seconds."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["noise"].update(train_size=0, rate=0.3)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=2, batch_size=32, progress=False, checkpoint_every=3)
    params["mlnt"].update(ramp_start=0.5, ramp_end=1.0, neighbours=5, num_sets=4)
    params["export"].update(parity_images=32)
    params["gate"].update(min_accuracy=0.0)
    return params


def write_data(data: Path) -> None:
    """One small dataset in each published format the ingest step reads."""
    make_fashion_mnist(data / "fashion-mnist", train=400, test=60)
    write_cifar10(data / "cifar10")
    write_cifar10(data / "cifar10-tarball", tarball=True)
    import numpy as np  # noqa: PLC0415

    write_cifar10n(data / "cifar10" / "CIFAR-10_human.pt", np.array([i % 10 for i in range(20)]))
    write_clothing1m(data / "clothing1m")
    for colour, rgb in (("red", (255, 0, 0)), ("blue", (0, 0, 105))):
        for n in range(3):  # greys 10 levels apart or more: no two near-duplicates, which go to one split together
            write_image(data / "imagefolder" / colour / f"{n}.png", (8, 8), tuple(v - 30 * n * (v > 0) for v in rgb))


def build(root: Path) -> Path:
    """Write the data and params into ``root`` and run every step there, in order, as a user would; then release
    another model as the champion, so that gating the workspace's own model promotes it (a model that is the
    champion already passes without a new version, and a promotion would never start)."""
    import importlib  # noqa: PLC0415

    from components import gate  # noqa: PLC0415

    write_data(root / "data")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    with chdir(root):
        for step in STEPS:
            code = importlib.import_module(f"components.{step}").main([])
            assert code == 0, f"the good workspace failed at the {step} step"
    previous = root.parent / "previous-champion"
    card = json.loads((root / "artifacts" / "export" / "model_card.json").read_text())
    export, evaluate = another_model(root / "artifacts", previous, accuracy=card["metrics"]["accuracy"])
    config = gate.GateConfig(min_accuracy=0.0, max_below_baseline=1.0, registry=str(root / "releases"))
    assert gate.run(config, export=export, evaluate=evaluate, out=previous / "gate")["released"]
    shutil.rmtree(previous)
    return root


def another_model(artifacts: Path, folder: Path, *, accuracy: float) -> tuple[Path, Path]:
    """The exported model of ``artifacts`` made into another one (its own ONNX bytes, a card that vouches for them,
    ``accuracy`` on the clean test set): ``(export, evaluate)`` folders under ``folder`` for the gate."""
    import onnx  # noqa: PLC0415

    export, evaluate = folder / "export", folder / "evaluate"
    shutil.copytree(artifacts / "export", export)
    evaluate.mkdir()
    model = onnx.load(export / "model.onnx")
    model.metadata_props.add(key="candidate", value=folder.name)
    onnx.save(model, export / "model.onnx")
    card = json.loads((export / "model_card.json").read_text())
    card.update(onnx_sha256=hashlib.sha256((export / "model.onnx").read_bytes()).hexdigest())
    card["metrics"]["accuracy"] = accuracy
    (export / "model_card.json").write_text(json.dumps(card))
    metrics = json.loads((artifacts / "evaluate" / "metrics.json").read_text())
    metrics[card["model"]]["accuracy"] = accuracy
    (evaluate / "metrics.json").write_text(json.dumps(metrics))
    return export, evaluate


def copy(source: Path, target: Path) -> Path:
    """A copy of a workspace; symbolic links (``releases/latest``) stay links."""
    shutil.copytree(source, target, symlinks=True)
    return target


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    cwd = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(cwd)


def snapshot(root: Path, *, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``root``, links by their target, folders by name; not under ``ignore``."""
    state = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if any(name == i or name.startswith(i + "/") for i in ignore):
            continue
        if path.is_symlink():
            state[name] = "-> " + os.readlink(path)
        elif path.is_file():
            state[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            state[name] = "folder"
    return state
