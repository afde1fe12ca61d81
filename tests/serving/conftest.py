"""A tiny real release (an untrained SmallCNN exported by components.export) and the predictor serving it, started
as ``python -m serving`` on free ports: REST (``server``, its URL) and gRPC (``grpc_target``, host:port)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from components.export import to_onnx
from model.networks import SmallCNN
from monitoring import local

CLASSES = ["ant", "bee", "cat", "dog"]
MEAN, STD = [0.3], [0.35]
TRAIN_SHARES = [0.4, 0.3, 0.2, 0.1]  # the noisy training labels'
PREDICTED_SHARES = [0.3, 0.3, 0.2, 0.2]  # the model's on the test set: the drift gauge's reference
VERSION = "v20260101T000000Z-test"
ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"max_batch": 16, "max_body_bytes": 65536, "drift_window": 32, "max_decode_pixels": 4096 * 4096}
CLIENT_SHARE = 0.1  # the predictor's default --drift-client-share: one client holds at most 3 of the 32 slots


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: its length, type, data and CRC (a valid one)."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def corrupt_pngs() -> dict[str, bytes]:
    """PNGs that Pillow starts to read and fails on with neither of its own errors: a 24-byte PNG whose IHDR chunk
    is 4 bytes long (a ValueError when opened), and an 8 x 8 one whose IDAT is cut in half and followed by a chunk of
    a junk type (its header reads well; a SyntaxError when decoded)."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 128).save(buffer, "PNG")
    good = buffer.getvalue()
    at = good.index(b"IDAT") - 4
    idat = good[at + 8:at + 8 + struct.unpack(">I", good[at:at + 4])[0]]
    return {"IHDR of 4 bytes": good[:8] + png_chunk(b"IHDR", b"\0\0\0\x1c"),
            "IDAT cut, junk chunk": good[:at] + png_chunk(b"IDAT", idat[:len(idat) // 2])
            + b"\0\0\0\0\x01\x02\x03\x04\0\0\0\0"}


CORRUPT_PNGS = corrupt_pngs()


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
            "train_class_distribution": TRAIN_SHARES, "predicted_class_distribution": PREDICTED_SHARES,
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "decision.json").write_text(json.dumps({"passed": True, "version": VERSION}))
    return folder, net


@pytest.fixture(scope="session")
def release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("releases") / VERSION)


def predictor(folder: Path, log: Path, *, timeout: float = 40.0, **options):
    """``python -m serving`` on a free loopback port with one onnxruntime thread (``monitoring.local``); yields
    its base URL once ready; it must exit 0 on SIGTERM."""
    return local.predictor(folder, log, timeout=timeout, threads=1, **options)


@pytest.fixture(scope="session")
def grpc_port() -> int:
    return local.free_port()


@pytest.fixture(scope="session")
def server_log(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs") / "predictor.log"


def logged_since(log: Path, offset: int) -> list[str]:
    """The lines ``log`` gained after its first ``offset`` bytes (its size, read before a request)."""
    with log.open("rb") as found:
        found.seek(offset)
        return found.read().decode(errors="replace").splitlines()


@pytest.fixture(scope="session")
def server(release, grpc_port, server_log):
    with predictor(release[0], server_log, grpc_port=grpc_port, **LIMITS) as url:
        yield url


@pytest.fixture(scope="session")
def grpc_target(server, grpc_port) -> str:
    """The gRPC address of ``server`` (the same process, started with --grpc_port)."""
    return f"127.0.0.1:{grpc_port}"


@pytest.fixture
def client():
    with httpx.Client(timeout=30) as c:
        yield c
