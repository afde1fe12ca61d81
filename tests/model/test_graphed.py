"""The batched (graphed on CUDA) exact step against the eager exact step of ``model.mlnt``."""

import copy

import pytest
import torch
from torch import nn

from model.graphed import GraphedExactStep, batched_exact_step, check_graphable
from model.mlnt import mlnt_loss, static_exact_step
from model.networks import PreActResNet32, SmallCNN

INNER_LR, WEIGHT = 0.2, 0.4


def problem(net, shape, *, sets=4, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    n = shape[0]
    x = torch.randn(*shape, generator=g, dtype=dtype)
    y = torch.randint(10, (n,), generator=g)
    synthetic = y.repeat(sets, 1)
    synthetic[:, : n // 2] = torch.randint(10, (sets, n // 2), generator=g)
    teacher = torch.randn(n, 10, generator=g, dtype=dtype).softmax(-1)
    return net.to(device, dtype).train(), *(t.to(device) for t in (x, y, synthetic, teacher))


def eager(net, x, y, synthetic, teacher):
    net.zero_grad(set_to_none=True)
    loss = mlnt_loss(net, x, y, synthetic, teacher, inner_lr=INNER_LR, meta_weight=WEIGHT, mode="exact")
    loss.backward()
    return loss.detach(), [p.grad for p in net.parameters() if p.requires_grad]


NETWORKS = {"small_cnn": (lambda: SmallCNN(10, in_channels=1, image_size=28), (12, 1, 28, 28)),
            "preact_resnet": (lambda: PreActResNet32(10, in_channels=3, blocks_per_stage=1), (12, 3, 32, 32))}


ARITHMETICS = {"static": static_exact_step, "batched": batched_exact_step}


@pytest.mark.parametrize("arithmetic", ARITHMETICS)
@pytest.mark.parametrize("name", NETWORKS)
def test_the_graphable_steps_are_the_eager_exact_step(name, arithmetic):
    """The same loss, the same gradient to float64 rounding, and the running statistics moved once, as eagerly
    (PreAct ResNet's batch norm couples the samples; the small CNN's rows are independent)."""
    build, shape = NETWORKS[name]
    torch.manual_seed(0)
    net, x, y, synthetic, teacher = problem(build(), shape)
    reference = copy.deepcopy(net)
    loss, logits, params, grads = ARITHMETICS[arithmetic](net, x, y, synthetic, teacher, WEIGHT, inner_lr=INNER_LR)
    expected_loss, expected = eager(reference, x, y, synthetic, teacher)
    assert torch.allclose(loss, expected_loss, rtol=1e-12, atol=0)
    assert list(params) == [p for p in net.parameters() if p.requires_grad]
    for got, want in zip(grads, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * want.abs().max())
    for got, want in zip(net.buffers(), reference.buffers(), strict=True):
        assert torch.equal(got, want)
    assert torch.allclose(logits, reference.eval()(x), rtol=1e-12) or name == "preact_resnet"  # batch statistics


@pytest.mark.parametrize("batched", [False, True], ids=["static", "batched"])
def test_the_step_object_gives_its_gradient_to_backward(batched):
    build, shape = NETWORKS["small_cnn"]
    torch.manual_seed(1)
    net, x, y, synthetic, teacher = problem(build(), shape)
    reference = copy.deepcopy(net)
    loss, logits = GraphedExactStep(net, inner_lr=INNER_LR, batched=batched)(x, y, synthetic, teacher, WEIGHT)
    net.zero_grad(set_to_none=True)
    (2 * loss).backward()  # the cotangent scales the precomputed gradient
    expected_loss, expected = eager(reference, x, y, synthetic, teacher)
    assert torch.allclose(loss, expected_loss, rtol=1e-12, atol=0)
    assert logits.shape == (12, 10) and not logits.requires_grad
    for p, want in zip(net.parameters(), expected, strict=True):
        assert torch.allclose(p.grad, 2 * want, rtol=1e-9, atol=1e-12 * want.abs().max())


def test_frozen_parameters_keep_no_gradient():
    build, shape = NETWORKS["small_cnn"]
    torch.manual_seed(2)
    net, x, y, synthetic, teacher = problem(build(), shape)
    net.body[0].requires_grad_(False)
    reference = copy.deepcopy(net)
    loss, _ = GraphedExactStep(net, inner_lr=INNER_LR)(x, y, synthetic, teacher, WEIGHT)
    loss.backward()
    _, expected = eager(reference, x, y, synthetic, teacher)
    assert net.body[0].weight.grad is None
    trained = [p.grad for p in net.parameters() if p.requires_grad]
    for got, want in zip(trained, expected, strict=True):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12 * want.abs().max())


def test_a_network_with_dropout_in_training_mode_is_refused():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"graph: expected a network without dropout in training mode .* found "
                                         r"dropout at 1: set graph: false"):
        check_graphable(net)
    check_graphable(net.eval())


# --- on a GPU (make gpu-check) --------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("batched", [False, True], ids=["static", "batched"])
@pytest.mark.parametrize("name", NETWORKS)
def test_the_cuda_graph_replays_the_exact_step(ieee_float32, name, batched):
    """The replayed graph (float32 without TF32) against the float64 eager step on the CPU, captured once for a run
    of steps of one shape and again for another shape, with the running statistics as two eager steps leave them
    (the warm-up passes before the capture leave no trace)."""
    build, shape = NETWORKS[name]
    torch.manual_seed(3)
    net, x, y, synthetic, teacher = problem(build(), shape, dtype=torch.float32, device="cuda")
    reference = copy.deepcopy(net).cpu().double()
    step = GraphedExactStep(net, inner_lr=INNER_LR, batched=batched)
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        loss, _ = step(x, y, synthetic, teacher, WEIGHT)
        loss.backward()
        value = float(loss.detach())
        del loss  # as the trainer: no earlier step's graph alive at a capture
    assert step.captures == 1
    cpu = (x.cpu().double(), y.cpu(), synthetic.cpu(), teacher.cpu().double())
    eager(reference, *cpu)
    expected_loss, expected = eager(reference, *cpu)  # the second step, as the graph's last replay
    assert abs(value - float(expected_loss)) < 1e-5 * abs(float(expected_loss))
    for p, want in zip(net.parameters(), expected, strict=True):
        error = float((p.grad.double().cpu() - want).norm() / want.norm())
        assert error < 1e-3, error
    for got, want in zip(net.buffers(), reference.buffers(), strict=True):
        assert torch.allclose(got.double().cpu(), want.double(), rtol=1e-3, atol=1e-4)
    step(x[:8], y[:8], synthetic[:, :8], teacher[:8], WEIGHT)
    assert step.captures == 2
