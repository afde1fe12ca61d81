"""One short run of the project's pipeline whose pushes fill the dashboard's Training row.

Reads the project's ``params.yaml`` and Fashion-MNIST (``data``: a random subset of it, or synthetic images in its
file layout without it). Writes, in a folder of its own: ``data/fashion-mnist/``, a ``params.yaml`` for a short run
(``pipeline_params``), the steps' ``artifacts/`` and ``releases/``, and ``pipeline.log``. The steps (``PIPELINE``,
``ingest`` .. ``gate``) run one after another in one Python process with ``MLNT_PUSHGATEWAY`` pointing at a
Pushgateway, which ``PUSHING_STEPS`` push to (``components.common.telemetry``).
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from components.common.config import load_params
from components.common.steps import STEPS
from components.common.telemetry import PUSHGATEWAY_ENV
from components.formats.idx import FASHION_MNIST_FILES, IDX_IMAGES, IDX_LABELS, read_idx
from monitoring import ROOT
from monitoring.metrics import PUSHGATEWAY_JOB

# the pipeline run whose pushes fill the Training row: its steps, what it trains on, and how long it may take
PIPELINE = tuple(step for step in STEPS if step != "validate")  # Great Expectations adds minutes, nothing pushed
PUSHING_STEPS = ("baseline", "mlnt", "evaluate", "gate")  # the steps that push (components.common.telemetry.reports)
PIPELINE_IMAGES, PIPELINE_EPOCHS = 1500, 3  # and a quarter as many test images, at least 100
PIPELINE_MIN_ACCURACY = 0.5  # the gate's bar for so short a run (params.yaml's is for the full one)
PIPELINE_TIMEOUT = 300.0


class PipelineError(Exception):
    """The pipeline run failed or took too long; the message ends with the tail of its log."""


def idx_gz(array: np.ndarray, magic: int) -> bytes:
    """The IDX format, gzipped: a big-endian magic number, one big-endian uint32 per dimension, the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), compresslevel=1)


def tiny_fashion_mnist(folder: Path, data: Path, *, train: int = PIPELINE_IMAGES, test: int = 100,
                       seed: int = 0) -> str:
    """A tiny Fashion-MNIST in the published file layout in ``folder``: a random subset of the one in ``data`` if
    it is there, else synthetic images (class c a bright band at rows 2c+4..2c+7); says which."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    real = all((data / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair)
    for split, count in (("train", train), ("test", test)):
        images_name, labels_name = FASHION_MNIST_FILES[split]
        if real:
            images, labels = read_idx(data / images_name, IDX_IMAGES), read_idx(data / labels_name, IDX_LABELS)
            keep = np.sort(rng.permutation(len(labels))[:count])
            images, labels = images[keep], labels[keep]
        else:
            labels = rng.integers(0, 10, count)
            images = rng.integers(0, 60, (count, 28, 28))
            for i, c in enumerate(labels):
                images[i, 2 * c + 4:2 * c + 7, 4:24] = 250
        (folder / images_name).write_bytes(idx_gz(images, IDX_IMAGES))
        (folder / labels_name).write_bytes(idx_gz(labels, IDX_LABELS))
    shown = data.relative_to(ROOT) if data.is_relative_to(ROOT) else data
    return (f"{train} training and {test} test images of {shown}" if real
            else f"{train} training and {test} test synthetic images (no Fashion-MNIST at {shown})")


def pipeline_params(epochs: int) -> dict:
    """``params.yaml`` for a short run: the whole tiny training set, ``epochs`` epochs for the baseline and MLNT
    (the meta-learning ramp within them), no progress bars, and the gate's bar at ``PIPELINE_MIN_ACCURACY``."""
    params = load_params(ROOT / "params.yaml")
    params["ingest"].update(dataset="fashion-mnist", path="data/fashion-mnist")
    params["noise"].update(train_size=0)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=epochs, batch_size=64, progress=False, checkpoint_every=1000)
    params["mlnt"].update(ramp_start=0.25 * epochs, ramp_end=0.5 * epochs)
    params["gate"].update(min_accuracy=PIPELINE_MIN_ACCURACY, registry="releases")
    return params


_RUN_STEPS = """
import sys
from importlib import import_module
for name in sys.argv[1:]:
    print(f"--- python -m components.{name}", flush=True)
    code = import_module(f"components.{name}").main([])
    if code:
        sys.exit(f"components.{name} exited with {code}")
"""


def run_pipeline(folder: Path, gateway: str, *, data: Path, images: int = PIPELINE_IMAGES,
                 epochs: int = PIPELINE_EPOCHS, timeout: float = PIPELINE_TIMEOUT) -> dict:
    """The pipeline's steps (``PIPELINE``), one after another in one Python process in ``folder`` (its own
    ``params.yaml``, ``data/`` drawn from ``data``, ``artifacts/`` and ``releases/``), pushing to ``gateway``; its
    log is ``folder/pipeline.log``. What ran, for the snapshot; a ``PipelineError`` if it failed or timed out."""
    source = tiny_fashion_mnist(folder / "data" / "fashion-mnist", data, train=images,
                                test=max(100, images // 4))
    params = pipeline_params(epochs)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = folder / "pipeline.log"
    env = {**os.environ, PUSHGATEWAY_ENV: gateway, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RANK", None)
    began = time.monotonic()
    with log.open("wb") as out:
        try:
            done = subprocess.run([sys.executable, "-c", _RUN_STEPS, *PIPELINE], cwd=folder, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PipelineError(f"the pipeline run took over {timeout:.0f} s:\n{log.read_text()[-3000:]}") from None
    if done.returncode != 0:
        raise PipelineError(f"the pipeline run failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return {"steps": list(PIPELINE), "pushing": list(PUSHING_STEPS), "data": source, "epochs": epochs,
            "network": params["baseline"]["network"], "noise": {"kind": params["noise"]["kind"],
                                                                  "rate": params["noise"]["rate"]},
            "gate_min_accuracy": PIPELINE_MIN_ACCURACY, "seconds": round(time.monotonic() - began, 1),
            "pushgateway_job": PUSHGATEWAY_JOB}
