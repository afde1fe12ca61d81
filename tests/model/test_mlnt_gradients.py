"""The meta-gradient of every mode, and the gradient of mlnt_loss, against an independent autograd reference.

The reference follows the definition literally: for each label set it recomputes the forward pass, takes the
full inner gradient with autograd, builds the fast weights and evaluates the KL divergence. It uses nothing
from ``model.mlnt``.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from model.mlnt import meta_loss, mlnt_loss

TOL = 1e-8


@pytest.fixture(autouse=True)
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class TinyMLP(nn.Module):
    def __init__(self, k=4):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.Tanh())
        self.head = nn.Linear(5, k)

    def features(self, x):
        return self.body(x.flatten(1))

    def forward(self, x):
        return self.head(self.features(x))


class TinyCNN(nn.Module):
    def __init__(self, k=4, batch_norm=False, running_stats=True, instance_norm=False):
        super().__init__()
        norm = nn.BatchNorm2d(3, track_running_stats=running_stats) if batch_norm else nn.Identity()
        if instance_norm:
            norm = nn.InstanceNorm2d(3, track_running_stats=running_stats)
        self.body = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), norm, nn.Softplus(), nn.AvgPool2d(2),
                                  nn.Flatten(), nn.Linear(3 * 2 * 2, 5), nn.Softplus())
        self.head = nn.Linear(5, k)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def reference_meta(net, x, synth, teacher, lr, mode):
    params = {n: p for n, p in net.named_parameters() if p.requires_grad}
    if mode == "head":
        params = {n: p for n, p in params.items() if n.startswith("head.")}
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    total = 0.0
    for labels in synth:
        logits = functional_call(net, ({**params, **buffers}), (x,))
        ce = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(ce, list(params.values()), create_graph=mode != "first_order")
        if mode == "first_order":
            grads = [g.detach() for g in grads]
        fast = {n: p - lr * g for (n, p), g in zip(params.items(), grads, strict=True)}
        out = functional_call(net, ({**fast, **{n: b.clone() for n, b in net.named_buffers()}}), (x,))
        log_q = torch.log_softmax(out, dim=1)
        total = total + (teacher * (teacher.log() - log_q)).sum() / teacher.numel()  # mean over N x K
    return total / synth.shape[0]


def make_problem(net_cls, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = net_cls(**kw)
    n, k, m = 7, 4, 3
    x = torch.randn(n, 6, generator=g) if issubclass(net_cls, TinyMLP) else torch.randn(n, 1, 4, 4, generator=g)
    labels = torch.randint(k, (n,), generator=g)
    synth = labels.repeat(m, 1)
    flip = torch.rand(m, n, generator=g) < 0.4
    synth[flip] = torch.randint(k, (int(flip.sum()),), generator=g)
    teacher = torch.softmax(torch.randn(n, k, generator=g), dim=1)
    return net, x, labels, synth, teacher


def grads_of(loss, net):
    return torch.autograd.grad(loss, [p for p in net.parameters()], allow_unused=True, materialize_grads=True)


NETS = [(TinyMLP, {}), (TinyCNN, {}), (TinyCNN, {"batch_norm": True})]
IDS = ["mlp", "cnn", "cnn-batchnorm"]


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
@pytest.mark.parametrize(("net_cls", "kw"), NETS, ids=IDS)
def test_meta_gradient_matches_reference(net_cls, kw, mode):
    net, x, _, synth, teacher = make_problem(net_cls, 0, **kw)
    ours = meta_loss(net, x, synth, teacher, inner_lr=0.3, mode=mode)
    ref = reference_meta(net, x, synth, teacher, 0.3, mode)
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(ours, net), grads_of(ref, net), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
@pytest.mark.parametrize(("net_cls", "kw"), NETS, ids=IDS)
def test_mlnt_loss_gradient_matches_reference(net_cls, kw, mode):
    net, x, labels, synth, teacher = make_problem(net_cls, 1, **kw)
    ours = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode)
    ref_ce = F.cross_entropy(functional_call(net, {n: b.clone() for n, b in net.named_buffers()}, (x,)), labels)
    ref = ref_ce + 0.7 * reference_meta(net, x, synth, teacher, 0.2, mode)
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(ours, net), grads_of(ref, net), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
def test_a_batch_norm_without_running_statistics_couples_samples_in_eval_mode_too(mode):
    net, x, labels, synth, teacher = make_problem(TinyCNN, 2, batch_norm=True, running_stats=False)
    net.eval()  # it still normalises with the batch's statistics: no gradient over the changed rows alone
    ours = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode)
    ref = F.cross_entropy(net(x), labels) + 0.7 * reference_meta(net, x, synth, teacher, 0.2, mode)
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(ours, net), grads_of(ref, net), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")  # that reduction is the point
@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
def test_meta_loss_is_on_the_reference_codes_scale(mode):
    """The documented scale: nn.KLDivLoss() with its default reduction (the mean over all N x K entries), as
    in the authors' code, so that meta_weight is in the reference codes' units. With inner_lr 0 the fast weights are the
    weights, and J is that loss of the network's own output: 1/K of the per-sample ("batchmean") KL."""
    net, x, labels, synth, teacher = make_problem(TinyMLP, 4)
    log_p = torch.log_softmax(net(x), dim=1)
    reference = nn.KLDivLoss()(log_p, teacher)
    ours = meta_loss(net, x, synth, teacher, inner_lr=0.0, mode=mode)
    assert abs(ours.item() - reference.item()) <= TOL
    per_sample = F.kl_div(log_p, teacher, reduction="batchmean")
    assert abs(ours.item() - per_sample.item() / teacher.shape[1]) <= TOL
    total = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.0, meta_weight=0.4, mode=mode)
    assert abs(total.item() - (F.cross_entropy(net(x), labels) + 0.4 * reference).item()) <= TOL


def test_second_order_term_matters():
    """The exact and first-order meta-gradients differ: the test above would catch a mode mix-up."""
    net, x, _, synth, teacher = make_problem(TinyMLP, 2)
    exact = grads_of(meta_loss(net, x, synth, teacher, inner_lr=0.5, mode="exact"), net)
    first = grads_of(meta_loss(net, x, synth, teacher, inner_lr=0.5, mode="first_order"), net)
    assert max((a - b).abs().max().item() for a, b in zip(exact, first, strict=True)) > 1e-4


def test_meta_step_leaves_batchnorm_running_stats_alone():
    net, x, labels, synth, teacher = make_problem(TinyCNN, 3, batch_norm=True)
    plain = TinyCNN(batch_norm=True)
    plain.load_state_dict(net.state_dict())
    mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=1.0, mode="exact")
    plain(x)  # one ordinary forward pass: the running statistics move exactly once
    for a, b in zip(net.buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["exact", "first_order"])
def test_meta_step_leaves_instance_norm_running_stats_alone(mode):
    """An instance norm that keeps running statistics does not couple samples, so each label set's changed-rows term
    is a pass over those rows alone: that pass moved the statistics too, once per set. Now they move once per step,
    and the gradient is still the reference's."""
    net, x, labels, synth, teacher = make_problem(TinyCNN, 3, instance_norm=True)
    plain = TinyCNN(instance_norm=True)
    plain.load_state_dict(net.state_dict())
    ours = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode)
    plain(x)  # one ordinary forward pass: the running statistics move exactly once
    for (name, a), b in zip(net.named_buffers(), plain.buffers(), strict=True):
        assert torch.equal(a, b), name
    ref_ce = F.cross_entropy(functional_call(plain, {n: b.clone() for n, b in plain.named_buffers()}, (x,)), labels)
    ref = ref_ce + 0.7 * reference_meta(plain, x, synth, teacher, 0.2, mode)
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(ours, net), grads_of(ref, plain), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("frozen", ["bias", "weight"])
@pytest.mark.parametrize(("net_cls", "kw"), NETS[:2], ids=IDS[:2])
def test_head_mode_leaves_a_frozen_head_parameter_where_it_is(net_cls, kw, frozen):
    """A head parameter with requires_grad False (a frozen bias, a fixed classifier) is a constant: the fast step
    of head mode must not move it. Value and gradients over the trainable parameters match the reference, which
    takes the fast step over the trainable head parameters only."""
    net, x, _, synth, teacher = make_problem(net_cls, 5, **kw)
    getattr(net.head, frozen).requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    ours = meta_loss(net, x, synth, teacher, inner_lr=0.3, mode="head")
    ref = reference_meta(net, x, synth, teacher, 0.3, "head")
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(torch.autograd.grad(ours, trainable, allow_unused=True, materialize_grads=True),
                    torch.autograd.grad(ref, trainable, allow_unused=True, materialize_grads=True), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize(("net_cls", "kw"), NETS[:2], ids=IDS[:2])
def test_head_mode_with_a_frozen_head_is_the_consistency_loss_of_the_logits(net_cls, kw):
    """A head with no trainable parameter does not move: every fast output is the network's output, J is the KL of
    its logits, and that J's gradient still reaches the trainable body."""
    net, x, _, synth, teacher = make_problem(net_cls, 6, **kw)
    net.head.requires_grad_(False)
    body = [p for p in net.parameters() if p.requires_grad]
    ours = meta_loss(net, x, synth, teacher, inner_lr=0.3, mode="head")
    log_q = torch.log_softmax(functional_call(net, {n: b.clone() for n, b in net.named_buffers()}, (x,)), dim=1)
    ref = (teacher * (teacher.log() - log_q)).sum() / teacher.numel()
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(torch.autograd.grad(ours, body), torch.autograd.grad(ref, body), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


class AliasedHead(TinyMLP):
    """TinyMLP holding its head under a second name too (a checkpoint's old key name, say): torch.func's
    functional_call, given the module under one name and left to tie the other, put the last label set's fast
    tensor back in the student's place."""

    def __init__(self):
        super().__init__()
        self.classifier = self.head


@pytest.mark.parametrize("mode", ["exact", "first_order"])
def test_a_module_under_two_names_stays_the_students_and_has_its_gradient(mode):
    net, x, labels, synth, teacher = make_problem(AliasedHead, 2)
    plain = TinyMLP()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("classifier.")})
    before = dict(net.named_parameters())
    ours = mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode)
    assert dict(net.named_parameters()) == before and net.classifier.weight is net.head.weight
    ref = mlnt_loss(plain, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode)
    assert abs(ours.item() - ref.item()) <= TOL
    for a, b in zip(grads_of(ours, net), grads_of(ref, plain), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=TOL)


class WithSpare(TinyMLP):
    """TinyMLP with a trainable layer its forward pass never uses (an auxiliary head of another code path)."""

    def __init__(self):
        super().__init__()
        self.spare = nn.Linear(5, 4)


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
def test_a_parameter_the_forward_pass_does_not_reach_keeps_no_gradient(mode):
    """As after a CE step: the weight-space modes gave it a zero gradient, which SGD's weight decay and momentum then
    moved. The other parameters' gradients are those of the network without it, bit for bit."""
    net, x, labels, synth, teacher = make_problem(WithSpare, 2)
    plain = TinyMLP()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("spare.")})
    mlnt_loss(net, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode).backward()
    mlnt_loss(plain, x, labels, synth, teacher, inner_lr=0.2, meta_weight=0.7, mode=mode).backward()
    assert net.spare.weight.grad is None and net.spare.bias.grad is None
    reached = [(name, p) for name, p in net.named_parameters() if not name.startswith("spare.")]
    for (name, a), b in zip(reached, plain.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name
