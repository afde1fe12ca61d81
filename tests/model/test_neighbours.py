import pytest
import torch

from model.neighbours import nearest_neighbours, synthetic_labels


def batch(n=40, d=5, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(k, (n,), generator=g)


def brute_force_neighbours(features, k):
    n = features.shape[0]
    out = []
    for i in range(n):
        dist = [((features[i] - features[j]) ** 2).sum().item() if j != i else float("inf") for j in range(n)]
        out.append(sorted(range(n), key=lambda j: dist[j])[:k])
    return out


def test_nearest_neighbours_match_brute_force_and_exclude_self():
    features, _ = batch(n=25)
    got = nearest_neighbours(features.double(), 6)
    assert [set(r) for r in got.tolist()] == [set(r) for r in brute_force_neighbours(features.double(), 6)]
    assert not (got == torch.arange(25)[:, None]).any()


@pytest.mark.parametrize(("fraction", "n", "expected"), [(0.5, 40, 20), (0.3, 33, 9), (0.0, 10, 0),
                                                          (1.0, 12, 12), (0.25, 10, 2), (0.5, 7, 3)])
def test_exact_count_of_resampled_positions(fraction, n, expected):
    features, labels = batch(n=n, k=1000)  # many classes: a resampled label almost never equals the old one
    labels = torch.randperm(n, generator=torch.Generator().manual_seed(1))  # all labels distinct
    out = synthetic_labels(features, labels, num_sets=7, fraction=fraction, neighbours=3,
                           generator=torch.Generator().manual_seed(0))
    assert out.shape == (7, n) and out.dtype == torch.int64
    assert (out != labels).sum(dim=1).tolist() == [expected] * 7


def test_every_new_label_is_a_neighbours_label():
    features, _ = batch(n=30)
    labels = torch.randperm(30)  # distinct labels identify the donor sample
    k = 5
    near = brute_force_neighbours(features, k)
    out = synthetic_labels(features, labels, num_sets=10, fraction=0.5, neighbours=k,
                           generator=torch.Generator().manual_seed(3))
    donor_of = {int(label): i for i, label in enumerate(labels)}
    for row in out:
        for i in (row != labels).nonzero().flatten().tolist():
            assert donor_of[int(row[i])] in near[i]


def test_donors_cover_the_k_neighbours_uniformly():
    features, _ = batch(n=20)
    labels = torch.randperm(20)
    out = synthetic_labels(features, labels, num_sets=4000, fraction=0.05, neighbours=4,
                           generator=torch.Generator().manual_seed(5))
    near = nearest_neighbours(features, 4)
    rank_counts = torch.zeros(4)
    for row in out:
        for i in (row != labels).nonzero().flatten().tolist():
            rank_counts[(labels[near[i]] == row[i]).nonzero().item()] += 1
    share = rank_counts / rank_counts.sum()
    assert (share - 0.25).abs().max() < 0.03  # 4000 draws: a binomial std of ~0.007 per rank


def test_deterministic_under_a_fixed_generator():
    features, labels = batch()
    a = synthetic_labels(features, labels, num_sets=5, fraction=0.5, neighbours=4,
                         generator=torch.Generator().manual_seed(11))
    b = synthetic_labels(features, labels, num_sets=5, fraction=0.5, neighbours=4,
                         generator=torch.Generator().manual_seed(11))
    c = synthetic_labels(features, labels, num_sets=5, fraction=0.5, neighbours=4,
                         generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fraction": 1.5}, r"fraction: expected a finite number in \[0.0, 1.0\], found 1.5"),
    ({"fraction": -0.1}, r"fraction: expected a finite number in \[0.0, 1.0\], found -0.1"),
    ({"neighbours": 40}, r"neighbours: expected fewer than the batch size N=40, found 40"),
    ({"neighbours": 0}, r"neighbours: expected an integer >= 1, found 0"),
    ({"num_sets": 0}, r"num_sets: expected an integer >= 1, found 0"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    features, labels = batch()
    args = {"num_sets": 2, "fraction": 0.5, "neighbours": 3, "generator": torch.Generator(), **kwargs}
    with pytest.raises(ValueError, match=message):
        synthetic_labels(features, labels, **args)


def test_nearest_neighbours_checks_its_arguments():
    features, _ = batch(n=5)
    with pytest.raises(ValueError, match=r"k: expected fewer than the batch size N=5, found 5"):
        nearest_neighbours(features, 5)  # a row's own index would be among its "other" rows
    with pytest.raises(ValueError, match=r"k: expected an integer >= 1, found 0"):
        nearest_neighbours(features, 0)
    with pytest.raises(TypeError, match=r"features: expected a floating-point tensor, found torch.int64"):
        nearest_neighbours(features.long(), 2)


def test_bad_shapes_and_types():
    features, labels = batch()
    with pytest.raises(ValueError, match=r"features: expected 40 rows \(one per label\), found 39"):
        synthetic_labels(features[:39], labels, num_sets=1, fraction=0.5, neighbours=3, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"labels: expected dtype torch.int64, found torch.int32"):
        synthetic_labels(features, labels.int(), num_sets=1, fraction=0.5, neighbours=3, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"generator: expected a torch.Generator, found int"):
        synthetic_labels(features, labels, num_sets=1, fraction=0.5, neighbours=3, generator=0)
    with pytest.raises(TypeError, match=r"num_sets: expected an integer, found True \(bool\)"):
        synthetic_labels(features, labels, num_sets=True, fraction=0.5, neighbours=3, generator=torch.Generator())
    with pytest.raises(TypeError, match=r"fraction: expected a number, found True \(bool\)"):
        synthetic_labels(features, labels, num_sets=1, fraction=True, neighbours=3, generator=torch.Generator())


def _true_neighbours(features, k):
    """Each row's k nearest other rows, in float64 with the distances taken directly."""
    dist = torch.cdist(features.double(), features.double()).fill_diagonal_(float("inf"))
    return dist.topk(k, dim=1, largest=False).indices


def _share_found(got, want):
    return sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), want.tolist(), strict=True)) / want.numel()


def test_neighbours_inside_bfloat16_autocast_are_the_float32_ones():
    # the trainer searches inside its bfloat16 autocast on CUDA; CPU autocast casts matmuls the same way. Features
    # far from the origin, as a ReLU network's are, made the bfloat16 product lose about a third of the neighbours.
    g = torch.Generator().manual_seed(0)
    features = 5.0 + torch.rand(128, 64, generator=g)
    want = _true_neighbours(features, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = nearest_neighbours(features, 10)
        assert (features @ features.T).dtype == torch.bfloat16  # the region does cast the product
    assert _share_found(got, want) == 1.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_features_never_pick_a_row_itself(dtype):
    # squared norms above float16's 65504 overflowed to inf, and inf - inf = NaN ranked nearest
    g = torch.Generator().manual_seed(1)
    features = (30.0 + 20.0 * torch.rand(8, 100, generator=g)).to(dtype)
    got = nearest_neighbours(features, 3)
    assert not (got == torch.arange(8)[:, None]).any()
    assert _share_found(got, _true_neighbours(features.float(), 3)) == 1.0
