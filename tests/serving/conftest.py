"""A tiny real release (an untrained SmallCNN exported by components.export) and the predictor serving it, started
as ``python -m serving`` on a free loopback port."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from components.export import to_onnx
from model.networks import SmallCNN

CLASSES = ["ant", "bee", "cat", "dog"]
MEAN, STD = [0.3], [0.35]
TRAIN_SHARES = [0.4, 0.3, 0.2, 0.1]
VERSION = "v20260101T000000Z-test"
ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"max_batch": 16, "max_body_bytes": 65536, "drift_window": 32}


def write_release(folder: Path, *, size: int = 8, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """``model.onnx``, ``model_card.json`` (the fields export writes that serving reads) and ``decision.json``."""
    torch.manual_seed(seed)
    net = SmallCNN(len(CLASSES), image_size=size, width=4, hidden=8).eval()
    onnx_bytes = to_onnx(net, torch.randn(2, 1, size, size), {"class_names": json.dumps(CLASSES)})
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx_bytes)
    card = {"model": "teacher", "network": "small_cnn", "class_names": CLASSES,
            "input": {"name": "images", "shape": ["batch", 1, size, size], "dtype": "float32",
                      "normalisation": {"mean": MEAN, "std": STD}},
            "output": {"name": "probabilities", "shape": ["batch", len(CLASSES)]},
            "train_class_distribution": TRAIN_SHARES, "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "decision.json").write_text(json.dumps({"passed": True, "version": VERSION}))
    return folder, net


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("releases") / VERSION)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def predictor(folder: Path, log: Path, *, timeout: float = 40.0, **options):
    """``python -m serving`` on a free port; yields its base URL once /v2/health/ready answers; it must exit 0 on
    SIGTERM."""
    port = free_port()
    argv = [sys.executable, "-m", "serving", "--model", str(folder), "--http-port", str(port), "--threads", "1"]
    argv += [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log, timeout)
        yield url
    finally:
        process.terminate()
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            code = f"killed after {process.wait()}"
    assert code == 0, f"the predictor did not shut down cleanly on SIGTERM ({code}):\n{log.read_text()[-3000:]}"


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the predictor exited with {process.returncode}:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    pytest.fail(f"the predictor was not ready after {timeout} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def server(release, tmp_path_factory):
    with predictor(release[0], tmp_path_factory.mktemp("logs") / "predictor.log", **LIMITS) as url:
        yield url


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as c:
        yield c
