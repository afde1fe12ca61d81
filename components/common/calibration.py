"""Temperature scaling (Guo et al., 2017): one scalar T > 0 that divides the logits so that the softmax's
confidence matches accuracy on held-out data. It leaves every prediction (the argmax) unchanged.

MLNT's teacher is under-confident (its consistency target is a flat ensemble average): without this, its top-1
probability averages about 0.47 at 0.86 accuracy, which misleads users and the predictor's confidence alert.

Held-out labels as noisy as training's would teach T the noise: the likeliest T for labels that are wrong 45 % of
the time is one whose confidence is that low. On such a set the labels' noise matrix is first estimated from the
network's own probabilities (anchor points), and T maximises the likelihood of the given labels under the
network's probabilities pushed through it (forward correction; both from Patrini et al., CVPR 2017): the calibrated
probabilities are then of the true class (``fit_temperature_on_noisy_labels``). docs/quality/calibration.md measures
it against the plain fit on noisy labels, Confident Learning's estimate of the matrix and the true matrix. The
estimate needs anchors sure of their class: with too few (``MIN_ANCHORS``) it is a guess, and where the network is
unsure even of its anchors their doubt reads as noise, so ``estimated_noise_rate`` is an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

LOG_T_RANGE = (-4.0, 4.0)  # T in [e^-4, e^4]
ANCHOR_PERCENTILE = 97.0  # estimate_noise_matrix's anchors: the top 3 % of each class's probability
MIN_ANCHORS = 10  # anchors a class needs for its row of the noise matrix (one image is a guess: 71 % for 19 %)


def fit_temperature(logits: Tensor, labels: Tensor, *, noise_matrix: np.ndarray | None = None,
                    steps: int = 60) -> float:
    """The T minimising the mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``, or, given
    ``noise_matrix`` (``[K, K]``, row j: how a sample of true class j is labelled), under
    ``softmax(logits / T) @ noise_matrix``: the T of the true classes' probabilities, fitted on noisy labels.

    The plain NLL is convex in 1 / T, so a golden-section search over log T finds the optimum; the corrected one
    need not be, so the search starts from the best of a grid over log T (every quarter) and refines between its
    neighbours. Deterministic."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(f"fit_temperature: expected logits [N, K] and labels [N] with N >= 1, found "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    logits, labels = logits.double(), labels.long()
    if noise_matrix is None:
        def nll(log_t: float) -> float:
            return F.cross_entropy(logits / math.exp(log_t), labels).item()

        return _golden(nll, *LOG_T_RANGE, steps)
    matrix = torch.as_tensor(_checked_matrix(noise_matrix, logits.shape[1]), dtype=torch.float64)

    def nll(log_t: float) -> float:
        given = torch.softmax(logits / math.exp(log_t), dim=1) @ matrix
        return -given.gather(1, labels[:, None]).clamp_min(1e-300).log().mean().item()

    grid = np.arange(LOG_T_RANGE[0], LOG_T_RANGE[1] + 1e-9, 0.25)
    best = int(np.argmin([nll(float(g)) for g in grid]))
    return _golden(nll, float(grid[max(best - 1, 0)]), float(grid[min(best + 1, len(grid) - 1)]), steps)


def anchors_per_class(n: int) -> int:
    """How many of ``n`` samples ``estimate_noise_matrix`` takes as a class's anchors: those at or above the
    ``ANCHOR_PERCENTILE``-th percentile (numpy's, interpolated between ranks), where no two probabilities tie."""
    return n - math.ceil(ANCHOR_PERCENTILE / 100.0 * (n - 1)) if n else 0


def fewest_for_anchors(anchors: int = MIN_ANCHORS) -> int:
    """The fewest samples that give ``anchors`` anchors a class."""
    return next(n for n in range(1, 100 * anchors) if anchors_per_class(n) >= anchors)


def at_bound(temperature: float) -> bool:
    """Whether ``temperature`` is (within 1 %) at an edge of the range the fit searches: no optimum inside it, as
    where every validation image is right (the likelihood grows as T falls to 0: near one-hot probabilities)."""
    return any(abs(math.log(temperature) - edge) < 0.01 for edge in LOG_T_RANGE)


def _golden(f, low: float, high: float, steps: int) -> float:
    """exp of the minimiser of ``f`` over [low, high] (log T), by golden-section search."""
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(steps):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if f(a) <= f(b):
            high = b
        else:
            low = a
    return math.exp((low + high) / 2)


@dataclass(frozen=True)
class NoisyFit:
    """Temperature scaling on noisy labels: the corrected ``temperature``, the estimated ``noise_matrix`` (row j:
    how a sample of true class j is labelled), the share of wrong labels that matrix implies (``noise_rate``,
    ``wrong_label_share``) and the temperature the labels alone give (``uncorrected``)."""

    temperature: float
    noise_matrix: np.ndarray
    noise_rate: float
    uncorrected: float


def fit_temperature_on_noisy_labels(logits: Tensor, labels: Tensor) -> NoisyFit:
    """The temperature of the true classes' probabilities, from ``labels`` with noise: fitted through their noise
    matrix, itself estimated from the network's probabilities at the temperature the labels alone give (those
    probabilities are the network's best fit of the noisy labels, which ``estimate_noise_matrix`` needs)."""
    uncorrected = fit_temperature(logits, labels)
    matrix = estimate_noise_matrix(torch.softmax(logits.double() / uncorrected, dim=1).numpy())
    shares = np.bincount(labels.long().numpy(), minlength=matrix.shape[0]) / labels.shape[0]
    return NoisyFit(fit_temperature(logits, labels, noise_matrix=matrix), matrix, wrong_label_share(matrix, shares),
                    uncorrected)


def wrong_label_share(noise_matrix: np.ndarray, label_shares: np.ndarray) -> float:
    """The share of wrong labels in a set whose labels have the class shares ``label_shares`` (q) and the noise
    matrix ``noise_matrix`` (M, row j: how a sample of true class j is labelled): ``sum_j p_j (1 - M_jj)``, with the
    true classes' shares p solving ``q = p M`` (least squares, clipped at 0 and normalised; q itself where no share
    is left). Weighting by q instead holds only where M keeps the class shares (symmetric noise): with two
    equal classes, the first labelled as the second 4 times in 10, it gives 0.12 for the true 0.20."""
    true, *_ = np.linalg.lstsq(noise_matrix.T, label_shares, rcond=None)
    true = np.clip(true, 0.0, None)
    true = true / true.sum() if true.sum() > 0 else label_shares
    return float(true @ (1.0 - np.diag(noise_matrix)))


def estimate_noise_matrix(noisy_probs: np.ndarray, *, percentile: float = ANCHOR_PERCENTILE) -> np.ndarray:
    """The noise matrix of a set's labels (row j, column i: the share of true-class-j samples labelled i), from a
    network's probabilities of those labels (``noisy_probs``, ``[N, K]``: fitted to the noisy labels), by anchor
    points (Patrini et al., CVPR 2017, section 4.1): a sample surely of class j is labelled as the noise matrix's
    row j says, so row j is the mean of ``noisy_probs`` over the samples likeliest to be of class j, those whose
    probability of j is at or above its ``percentile``-th percentile (the paper takes the one sample at the 97th;
    the mean over them all varies less on a few hundred images)."""
    if noisy_probs.ndim != 2 or noisy_probs.shape[0] == 0 or not 0 <= percentile <= 100:
        raise ValueError(f"estimate_noise_matrix: expected probabilities [N, K] with N >= 1 and a percentile in "
                         f"[0, 100], found {noisy_probs.shape} and {percentile}")
    k = noisy_probs.shape[1]
    rows = []
    for j in range(k):
        anchors = noisy_probs[:, j] >= np.percentile(noisy_probs[:, j], percentile)
        rows.append(noisy_probs[anchors].mean(0))
    matrix = np.array(rows, dtype=np.float64)
    return matrix / matrix.sum(1, keepdims=True)


def _checked_matrix(matrix: np.ndarray, k: int) -> np.ndarray:
    """``matrix`` if it is a [K, K] row-stochastic matrix, else a ValueError naming what was found."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (k, k) or (matrix < 0).any() or not np.allclose(matrix.sum(1), 1.0):
        raise ValueError(f"fit_temperature: expected a noise matrix [{k}, {k}] of non-negative rows summing to 1, "
                         f"found shape {matrix.shape} with row sums {np.round(matrix.sum(-1), 3).tolist()}")
    return matrix
