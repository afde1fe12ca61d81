"""Temperature scaling (Guo et al., 2017): one scalar T > 0 that divides the logits so that the softmax's
confidence matches accuracy on held-out data. It leaves every prediction (the argmax) unchanged.

MLNT's teacher is under-confident (its consistency target is a flat ensemble average): without this, its top-1
probability averages about 0.47 at 0.86 accuracy, which misleads users and the predictor's confidence alert.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

LOG_T_RANGE = (-4.0, 4.0)  # T in [e^-4, e^4]


def fit_temperature(logits: Tensor, labels: Tensor, *, steps: int = 60) -> float:
    """The T minimising the mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    The NLL is convex in 1 / T, so a golden-section search over log T finds the optimum; deterministic."""
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or logits.shape[0] == 0:
        raise ValueError(f"fit_temperature: expected logits [N, K] and labels [N] with N >= 1, found "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    logits, labels = logits.double(), labels.long()

    def nll(log_t: float) -> float:
        return F.cross_entropy(logits / math.exp(log_t), labels).item()

    low, high = LOG_T_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(steps):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) <= nll(b):
            high = b
        else:
            low = a
    return math.exp((low + high) / 2)
