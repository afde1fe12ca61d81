"""Temperature scaling: it recovers a known temperature, leaves predictions alone, and the export bakes it in."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from components import baseline, evaluate, export, ingest, mlnt, noise
from components.common.calibration import (
    estimate_noise_matrix,
    fit_temperature,
    fit_temperature_on_noisy_labels,
    wrong_label_share,
)


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


def _noisy_set(matrix: np.ndarray, *, n: int = 40_000, scale: float = 4.0, seed: int = 0):
    """Logits whose softmax is the true classes' distribution, the true classes drawn from it, and labels given
    through ``matrix`` (row: true class)."""
    g, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    scores = scale * torch.randn(n, matrix.shape[0], generator=g)
    true = torch.multinomial(torch.softmax(scores, dim=1), 1, generator=g).squeeze(1).numpy()
    given = np.array([rng.choice(matrix.shape[0], p=matrix[t]) for t in true])
    return scores, true, torch.from_numpy(given)


def _symmetric(k: int, rate: float) -> np.ndarray:
    return (1 - rate) * np.eye(k) + rate / k


def test_the_noise_matrix_turns_noisy_labels_back_into_the_true_classes_temperature():
    """Labels that are wrong half the time teach plain temperature scaling a T far too high (the noise looks like
    under-confidence); through their noise matrix, the fit finds the temperature of the true classes."""
    matrix = _symmetric(5, 0.5)
    scores, _, given = _noisy_set(matrix)
    for true_t in (0.5, 1.0, 2.0):
        assert fit_temperature(scores / true_t, given) > 1.5 / true_t  # plain: fooled by the noise
        assert fit_temperature(scores / true_t, given, noise_matrix=matrix) == pytest.approx(1 / true_t, rel=0.05)


def test_anchor_points_recover_how_the_labels_were_given():
    """Given probabilities of the noisy labels (the true classes' pushed through the matrix), the estimate is the
    matrix the labels were drawn through: symmetric, and a class flipped one way only."""
    k = 5
    flips = np.eye(k)
    flips[1] = 0.6 * np.eye(k)[1] + 0.4 * np.eye(k)[3]  # class 1 labelled 3 40 % of the time, not the reverse
    scores = 6.0 * torch.randn(20_000, k, generator=torch.Generator().manual_seed(0))
    for matrix in (_symmetric(k, 0.4), flips):
        noisy_probs = torch.softmax(scores, dim=1).double().numpy() @ matrix
        estimated = estimate_noise_matrix(noisy_probs)
        assert np.abs(estimated - matrix).max() < 0.01
        np.testing.assert_allclose(estimated.sum(1), 1.0)


def test_on_noisy_labels_the_fit_finds_the_true_classes_temperature():
    """From the logits and noisy labels alone (no matrix given), the corrected temperature is within a few percent
    of the true classes' and the noise rate near the realised one, where the plain fit is far off."""
    matrix = _symmetric(5, 0.5)
    scores, true, given = _noisy_set(matrix, scale=6.0)
    for true_t in (0.5, 2.0):
        fit = fit_temperature_on_noisy_labels(scores / true_t, given)
        assert fit.uncorrected > 1.5 / true_t
        assert fit.temperature == pytest.approx(1 / true_t, rel=0.05)
        assert fit.noise_rate == pytest.approx(float((given.numpy() != true).mean()), abs=0.02)


def test_wrong_label_share_weights_by_the_true_classes():
    """Two equal classes, the first labelled as the second 4 times in 10: the given labels' shares are 0.3 and 0.7,
    and 0.5 x 0.4 = 0.2 of the labels are wrong (the given shares would weigh the first row by 0.3: 0.12)."""
    matrix = np.array([[0.6, 0.4], [0.0, 1.0]])
    assert wrong_label_share(matrix, np.array([0.5, 0.5]) @ matrix) == pytest.approx(0.2)
    symmetric = _symmetric(4, 0.5)
    assert wrong_label_share(symmetric, np.full(4, 0.25)) == pytest.approx(1 - symmetric[0, 0])
    assert wrong_label_share(np.eye(3), np.array([0.2, 0.3, 0.5])) == 0.0


@pytest.mark.parametrize(("probs", "percentile", "found"), [
    (np.ones(3) / 3, 97.0, r"found \(3,\) and 97.0"), (np.ones((0, 2)), 97.0, r"found \(0, 2\) and 97.0"),
    (np.ones((2, 2)) / 2, 101.0, r"found \(2, 2\) and 101.0")])
def test_the_estimate_refuses_what_it_cannot_read(probs, percentile, found):
    with pytest.raises(ValueError, match=r"expected probabilities \[N, K\] with N >= 1 and a percentile in "
                                         r"\[0, 100\], " + found):
        estimate_noise_matrix(probs, percentile=percentile)


def test_a_noise_matrix_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match=r"expected a noise matrix \[3, 3\] of non-negative rows summing to 1, "
                                         r"found shape \(3, 3\) with row sums \[1.0, 1.0, 0.5\]"):
        fit_temperature(torch.zeros(4, 3), torch.zeros(4), noise_matrix=np.diag([1.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match=r"found shape \(2, 2\)"):
        fit_temperature(torch.zeros(4, 3), torch.zeros(4), noise_matrix=np.eye(2))


def test_export_bakes_the_temperature_into_the_graph_and_reports_it(workdir):
    for step in (ingest, noise, baseline, mlnt, evaluate, export):
        assert step.main([]) == 0
    out = workdir / "artifacts" / "export"
    card = json.loads((out / "model_card.json").read_text())
    calibration = card["calibration"]
    assert calibration["temperature"] > 0 and calibration["val_ece_after"] <= calibration["val_ece_before"] + 1e-9
    assert calibration["method"] == "temperature scaling" and "noise_matrix" not in calibration  # clean labels
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
