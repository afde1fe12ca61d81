"""benchmarks.speed.inference: eager PyTorch is compared with the ONNX graph at the temperature the graph was
exported with (the model card's), so the difference it reports is the runtimes', not the calibration's."""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from benchmarks.speed import inference
from components.common.model_file import save_model
from components.export import to_onnx
from model.networks import build_network

TEMPERATURE = 0.36  # about the current release's (artifacts/export/model_card.json)
SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Exported:
    net: torch.nn.Module
    onnx: bytes
    model_file: Path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_network("small_cnn", 10, in_channels=SHAPE[0], image_size=SHAPE[1]).eval()
    with torch.no_grad():
        net.head.weight.mul_(20)  # confident logits, as a trained network's: the temperature moves probabilities
    model_file = tmp_path_factory.mktemp("inference") / "teacher.pt"
    save_model(model_file, net.state_dict(), network="small_cnn",
               meta={"num_classes": 10, "in_channels": SHAPE[0], "image_size": SHAPE[1],
                     "normalisation": {"mean": [0.5], "std": [0.5]}})
    return Exported(net, to_onnx(net, torch.randn(2, *SHAPE), {}, temperature=TEMPERATURE), model_file)


def largest_diff(report: dict) -> float:
    return max(row["max_abs_diff"] for row in report["results"])


def test_at_the_exported_temperature_the_runtimes_agree(exported):
    same = inference.compare_runtimes(exported.net, exported.onnx, SHAPE, batches=(1, 8), repeats=1,
                                      temperature=TEMPERATURE)
    assert same["temperature"] == TEMPERATURE and largest_diff(same) < 1e-5
    # what the command compared before: the plain network against the calibrated graph
    plain = inference.compare_runtimes(exported.net, exported.onnx, SHAPE, batches=(1, 8), repeats=1)
    assert largest_diff(plain) > 0.05


def card(path: Path, onnx: bytes, temperature: object = TEMPERATURE) -> Path:
    path.write_text(json.dumps({"model": "teacher", "calibration": {"temperature": temperature},
                                "onnx_sha256": hashlib.sha256(onnx).hexdigest()}))
    return path


def test_the_command_uses_the_model_cards_temperature(exported, tmp_path, monkeypatch, capsys):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(exported.onnx)
    monkeypatch.setattr(inference, "choose", lambda baseline, mlnt: ("teacher", exported.model_file, 0.9))
    args = ["--onnx", str(onnx), "--card", str(card(tmp_path / "model_card.json", exported.onnx)), "--batch", "4",
            "--repeats", "1"]
    assert inference.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["temperature"] == TEMPERATURE and largest_diff(printed) < 1e-5


@pytest.mark.parametrize(("written", "message"), [
    (None, "expected the output of the export step, found no such file (run python -m components.export first)"),
    ({"temperature": None}, "expected a positive calibration.temperature, found None"),
    ({"onnx": b"another graph"}, "describes the ONNX file with sha256 "),
])
def test_the_command_refuses_a_card_without_this_graphs_temperature(exported, tmp_path, capsys, written, message):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(exported.onnx)
    path = tmp_path / "model_card.json"
    if written is not None:
        card(path, written.get("onnx", exported.onnx), written.get("temperature", TEMPERATURE))
    with pytest.raises(SystemExit) as stopped:
        inference.main(["--onnx", str(onnx), "--card", str(path)])
    assert stopped.value.code == 2 and message in capsys.readouterr().err
