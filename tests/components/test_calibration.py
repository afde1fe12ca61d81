"""Temperature scaling: it recovers a known temperature, leaves predictions alone, and the export bakes it in."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from components import baseline, evaluate, export, ingest, mlnt, noise
from components.common.calibration import fit_temperature


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    g = torch.Generator().manual_seed(0)
    scores = 3 * torch.randn(20_000, 5, generator=g)
    labels = torch.multinomial(torch.softmax(scores, dim=1), 1, generator=g).squeeze(1)
    for true_t in (0.25, 1.0, 4.0):  # logits that are 1/T too sharp (or flat) for the labels
        assert fit_temperature(scores / true_t, labels) == pytest.approx(1 / true_t, rel=0.05)


def test_fit_temperature_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"expected logits \[N, K\] and labels \[N\] with N >= 1, found \(3, 2\)"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(4))


def test_fit_temperature_finds_the_minimum_anywhere_in_its_range():
    """The search finds the T of least NLL to well under a percent, from e^-4 to e^4 (LOG_T_RANGE): checked against
    a grid over log T, refined around its best point."""
    g = torch.Generator().manual_seed(1)
    scores = 3 * torch.randn(1_000, 5, generator=g)
    labels = torch.multinomial(torch.softmax(scores, dim=1), 1, generator=g).squeeze(1)

    def best_on(grid, logits):
        scaled = logits[None] / grid.exp()[:, None, None]
        nll = -torch.log_softmax(scaled, dim=2)[:, torch.arange(len(labels)), labels].mean(1)
        return grid[nll.argmin()]

    for scale in (0.03, 0.7, 30.0):  # optimal temperatures near 30, 1.4 and 0.03
        logits = (scores / scale).double()
        coarse = best_on(torch.linspace(-4.0, 4.0, 2_001, dtype=torch.float64), logits)
        best = float(best_on(torch.linspace(coarse - 0.004, coarse + 0.004, 401, dtype=torch.float64), logits).exp())
        assert 0.02 < best < 50
        assert fit_temperature(scores / scale, labels) == pytest.approx(best, rel=1e-3)


@pytest.mark.parametrize(("logits", "labels"), [(torch.zeros(0, 3), torch.zeros(0)), (torch.zeros(4), torch.zeros(4))])
def test_fit_temperature_rejects_no_rows_and_one_dimensional_logits(logits, labels):
    with pytest.raises(ValueError, match=r"expected logits \[N, K\] and labels \[N\] with N >= 1"):
        fit_temperature(logits, labels)


def test_export_bakes_the_temperature_into_the_graph_and_reports_it(workdir):
    for step in (ingest, noise, baseline, mlnt, evaluate, export):
        assert step.main([]) == 0
    out = workdir / "artifacts" / "export"
    card = json.loads((out / "model_card.json").read_text())
    calibration = card["calibration"]
    assert calibration["temperature"] > 0 and calibration["val_ece_after"] <= calibration["val_ece_before"] + 1e-9
    assert card["parity"]["passed"]
    images = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    calibrated = ort.InferenceSession(str(out / "model.onnx")).run(None, {"images": images})[0]
    assert export.main(["--set", "export.calibrate=false"]) == 0
    assert json.loads((out / "model_card.json").read_text())["calibration"] == {"temperature": 1.0}
    raw = ort.InferenceSession(str(out / "model.onnx")).run(None, {"images": images})[0]
    # the calibrated graph is softmax(logits / T) of the same logits: the confidence moves, the argmax does not
    expected = torch.softmax(torch.log(torch.from_numpy(raw).double()) / calibration["temperature"], dim=1).numpy()
    np.testing.assert_allclose(calibrated, expected, atol=1e-5)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()
