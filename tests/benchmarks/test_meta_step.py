import pytest
import torch

from benchmarks.speed.reference import reference_mlnt_loss
from model.mlnt import mlnt_loss
from model.networks import PreActResNet32, SmallCNN


@pytest.mark.parametrize("make_net", [lambda: SmallCNN(5, image_size=8, width=4, hidden=8),
                                      lambda: PreActResNet32(5, blocks_per_stage=1)], ids=["small-cnn", "preact"])
def test_reference_loop_gives_our_exact_gradients(make_net):
    """The baseline we measure against computes the same thing as mlnt_loss(mode='exact')."""
    torch.manual_seed(0)
    net = make_net().double()
    channels = net.body[0].in_channels
    x = torch.randn(12, channels, 8, 8, dtype=torch.float64)
    y = torch.randint(5, (12,))
    synth = y.repeat(3, 1)
    synth[:, :4] = torch.randint(5, (3, 4))
    teacher = torch.softmax(torch.randn(12, 5, dtype=torch.float64), 1)
    ref_state = {k: v.clone() for k, v in net.state_dict().items()}
    ref = reference_mlnt_loss(net, x, y, synth, teacher, inner_lr=0.3, meta_weight=0.5)
    ref_grads = torch.autograd.grad(ref, list(net.parameters()))
    net.load_state_dict(ref_state)  # the reference moves batch-norm statistics M + 1 times; start again
    ours = mlnt_loss(net, x, y, synth, teacher, inner_lr=0.3, meta_weight=0.5, mode="exact")
    for a, b in zip(torch.autograd.grad(ours, list(net.parameters())), ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_reference_loop_runs_the_forward_pass_once_as_the_authors_code_does():
    """Both published codes compute ``outputs = net(inputs)`` once, for the main CE and every set's inner loss, then
    one pass at each set's fast weights: 1 + M calls of the network (``functional_call`` goes through the module's
    hooks too), where recomputing the forward pass for every set and for the main CE would make 2M + 1."""
    torch.manual_seed(0)
    net = SmallCNN(5, image_size=8, width=4, hidden=8)
    x, y = torch.randn(12, 1, 8, 8), torch.randint(5, (12,))
    sets = 3
    synth = torch.randint(5, (sets, 12))
    teacher = torch.softmax(torch.randn(12, 5), 1)
    calls = []
    handle = net.register_forward_hook(lambda *_: calls.append(1))
    try:
        reference_mlnt_loss(net, x, y, synth, teacher, inner_lr=0.3, meta_weight=0.5)
    finally:
        handle.remove()
    assert len(calls) == 1 + sets
