import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model import mlnt
from model.mlnt import couples_samples, meta_loss, mlnt_loss
from model.networks import SmallCNN
from tests.model.test_mlnt_gradients import TOL, grads_of, reference_meta


@pytest.fixture
def problem():
    torch.manual_seed(0)
    net = SmallCNN(3, image_size=8, width=4, hidden=8)
    x = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    return net, x, labels, labels.repeat(2, 1), torch.full((6, 3), 1 / 3)


def call(problem, **changes):
    net, x, _, synth, teacher = problem
    args = {"net": net, "inputs": x, "synthetic_labels": synth, "teacher_probs": teacher, "inner_lr": 0.1,
            "mode": "exact", **changes}
    return meta_loss(**args)


@pytest.mark.parametrize(("changes", "error", "message"), [
    ({"mode": "second"}, ValueError, r"Unknown mode 'second'. Valid: exact, first_order, head"),
    ({"inner_lr": -0.1}, ValueError, r"inner_lr: expected a finite number in \[0.0, inf\], found -0.1"),
    ({"inner_lr": float("nan")}, ValueError, r"inner_lr: expected a finite number"),
    ({"synthetic_labels": torch.zeros(2, 5, dtype=torch.int64)}, ValueError,
     r"synthetic_labels: expected shape \[M >= 1, 6\], found \(2, 5\)"),
    ({"synthetic_labels": torch.zeros(0, 6, dtype=torch.int64)}, ValueError,
     r"synthetic_labels: expected shape \[M >= 1, 6\], found \(0, 6\)"),
    ({"synthetic_labels": torch.zeros(6, dtype=torch.int64)}, ValueError,
     r"synthetic_labels: expected 2 dimensions, found shape \(6,\)"),
    ({"synthetic_labels": torch.full((2, 6), 3)}, ValueError,
     r"synthetic_labels: expected class indices in \[0, 2\], found values from 3 to 3"),
    ({"synthetic_labels": torch.full((2, 6), -1)}, ValueError,
     r"synthetic_labels: expected class indices in \[0, 2\], found values from -1 to -1"),
    ({"teacher_probs": torch.ones(6, 4) / 4}, ValueError,
     r"teacher_probs: expected shape \[6, 3\] \(inputs x classes\), found \(6, 4\)"),
    ({"teacher_probs": torch.ones(1, 3) / 3}, ValueError,
     r"teacher_probs: expected shape \[6, 3\] \(inputs x classes\), found \(1, 3\)"),
    ({"inputs": torch.zeros(6, 1, 8, 8, dtype=torch.int64)}, TypeError,
     r"inputs: expected a floating-point tensor, found torch.int64"),
])
def test_meta_loss_errors_name_the_argument(problem, changes, error, message):
    with pytest.raises(error, match=message):
        call(problem, **changes)


def test_head_mode_needs_features_and_a_linear_head(problem):
    _, x, _, synth, teacher = problem
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(TypeError, match=r"net: mode 'head' expects a network with .features\(x\) and a .head"):
        meta_loss(net, x, synth, teacher, inner_lr=0.1, mode="head")


def test_mlnt_loss_errors(problem):
    net, x, labels, synth, teacher = problem
    with pytest.raises(ValueError, match=r"labels: expected 6 entries \(one per input\), found 5"):
        mlnt_loss(net, x, labels[:5], synth, teacher, inner_lr=0.1, meta_weight=1.0)
    with pytest.raises(ValueError, match=r"meta_weight: expected a finite number in \[0.0, inf\], found -1.0"):
        mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.1, meta_weight=-1.0)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 2\], found values from 0 to 3"):
        mlnt_loss(net, x, torch.tensor([0, 1, 2, 0, 1, 3]), synth, teacher, inner_lr=0.1, meta_weight=1.0)
    with pytest.raises(TypeError, match=r"labels: expected dtype torch.int64, found torch.int32"):
        mlnt_loss(net, x, labels.int(), synth, teacher, inner_lr=0.1, meta_weight=1.0)


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
def test_the_teacher_is_a_fixed_target(problem, mode):
    """``teacher_probs`` is detached: no gradient reaches whatever computed it, in any mode, from either loss."""
    net, x, labels, synth, _ = problem
    synth = synth.clone()
    synth[0, 1] = 0
    for loss in (meta_loss, mlnt_loss):
        scores = torch.randn(6, 3, requires_grad=True)
        extra = {"labels": labels, "meta_weight": 1.0} if loss is mlnt_loss else {}
        loss(net=net, inputs=x, synthetic_labels=synth, teacher_probs=scores.softmax(1), inner_lr=0.1, mode=mode,
             **extra).backward()
        assert scores.grad is None, loss.__name__


def test_zero_meta_weight_is_plain_cross_entropy(problem):
    net, x, labels, synth, teacher = problem
    loss = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.1, meta_weight=0.0)
    torch.testing.assert_close(loss, nn.functional.cross_entropy(net(x), labels))


def test_identical_label_sets_give_zero_extra_gradient_work(problem, monkeypatch):
    """Label sets equal to the given labels need no sparse term: the only gradient taken before the fast-weight
    passes is the CE gradient with the given labels (a set that changes one row adds one, over that row), and the
    loss and its gradient are still those of the definition (the float64 reference of test_mlnt_gradients)."""
    net, x, labels, _, teacher = problem
    net, x, teacher = net.double(), x.double(), teacher.double()
    taken, real_grad_fn = [], mlnt._grad_fn

    def grad_fn(params, *, create_graph):
        grad = real_grad_fn(params, create_graph=create_graph)

        def counted(output, **kwargs):
            taken.append(tuple(output.shape))
            return grad(output, **kwargs)
        return counted

    monkeypatch.setattr(mlnt, "_grad_fn", grad_fn)
    same = mlnt_loss(net, x, labels, labels.repeat(3, 1), teacher, inner_lr=0.1, meta_weight=1.0)
    assert taken == [()], taken  # grad CE(labels) alone: no per-set gradient for the identical sets
    ref = F.cross_entropy(net(x), labels) + reference_meta(net, x, labels.repeat(3, 1), teacher, 0.1, "exact")
    assert abs(same.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(same, net), grads_of(ref, net), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)
    changed = labels.repeat(3, 1)
    changed[1, 4] = 0
    taken.clear()
    mlnt_loss(net, x, labels, changed, teacher, inner_lr=0.1, meta_weight=1.0)
    assert taken == [(), (1, 3)], taken  # the changed set's sparse term, over its one changed row


def test_couples_samples():
    assert not couples_samples(SmallCNN(3))
    bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert couples_samples(bn)
    assert not couples_samples(bn.eval())
    batch_stats = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False))
    assert couples_samples(batch_stats) and couples_samples(batch_stats.eval())  # the batch's statistics in eval
    dropout = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    assert couples_samples(dropout)  # a second pass would draw another mask
    assert not couples_samples(dropout.eval())
    assert not couples_samples(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0)))
    declared = SmallCNN(3)
    declared.couples_samples = True
    assert couples_samples(declared)
