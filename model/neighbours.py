"""Synthetic label noise from nearest neighbours in feature space (MLNT step 1)."""

from __future__ import annotations

import torch
from torch import Tensor

from model._checks import check_float, check_int, check_tensor


def synthetic_labels(features: Tensor, labels: Tensor, *, num_sets: int, fraction: float, neighbours: int,
                     generator: torch.Generator) -> Tensor:
    """Make ``num_sets`` noisy copies of ``labels``, each as MLNT's meta step expects.

    For each set, ``int(fraction * N)`` samples (rounded down, as both reference codes do) are chosen
    uniformly without replacement; each takes the label of one sample drawn uniformly among its ``neighbours`` nearest
    *other* samples of the batch, by squared Euclidean distance between rows of ``features``. All other
    labels are kept. A new label may equal the old one when the neighbour shares the class.

    Args:
        features: ``[N, D]`` floating point, e.g. the penultimate features of a frozen CE-trained network.
        labels: ``[N]`` int64, the given (noisy) labels of the batch.
        num_sets: M >= 1, the number of label sets.
        fraction: rho in [0, 1], the share of samples resampled in each set; below 1/N it resamples none, so every
            set equals ``labels`` (``model.trainer.MlntConfig`` refuses such a fraction for its batch size).
        neighbours: k in [1, N - 1].
        generator: the only source of randomness; same state, same result.

    Returns:
        ``LongTensor[num_sets, N]`` on ``labels.device``.
    """
    check_tensor("features", features, ndim=2, floating=True)
    check_tensor("labels", labels, ndim=1, dtype=torch.int64)
    n = labels.shape[0]
    if features.shape[0] != n:
        raise ValueError(f"features: expected {n} rows (one per label), found {features.shape[0]}")
    check_int("num_sets", num_sets, low=1)
    check_float("fraction", fraction, low=0.0, high=1.0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, found {type(generator).__name__}")

    nearest = nearest_neighbours(features.detach(), neighbours, name="neighbours").to(generator.device)
    picks = int(fraction * n)
    rand_device = generator.device
    chosen = torch.rand(num_sets, n, generator=generator, device=rand_device).argsort(dim=1)[:, :picks]
    which = torch.randint(neighbours, (num_sets, picks), generator=generator, device=rand_device)
    donors = nearest[chosen, which]  # [M, picks] indices of the neighbours whose labels are copied
    out = labels.to(rand_device).repeat(num_sets, 1)
    out.scatter_(1, chosen, labels.to(rand_device)[donors])
    return out.to(labels.device)


def nearest_neighbours(features: Tensor, k: int, *, name: str = "k") -> Tensor:
    """Indices ``[N, k]`` of each row's k nearest other rows (squared Euclidean), nearest first.
    ``features``: ``[N, D]`` floating point; k in [1, N - 1] (``name``: the argument's name in errors).

    The distances are ``|a|^2 + |b|^2 - 2 a.b``, a difference of nearly equal terms, so they are computed in at least
    float32 and outside any autocast region: the trainer searches inside its bfloat16 autocast on CUDA, where the
    product would otherwise run in bfloat16 and lose about a third of the true neighbours, and float16 features
    overflow (then ``inf - inf`` is NaN, which ``topk`` would rank nearest, picking a row as its own neighbour)."""
    check_tensor("features", features, ndim=2, floating=True)
    n = features.shape[0]
    check_int(name, k, low=1)
    if k >= n:
        raise ValueError(f"{name}: expected fewer than the batch size N={n}, found {k}")
    if features.dtype in (torch.float16, torch.bfloat16):
        features = features.float()
    with torch.autocast(features.device.type, enabled=False):
        sq = features.pow(2).sum(dim=1)
        dist = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
    dist.fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).indices
