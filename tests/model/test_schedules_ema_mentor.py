import math

import pytest
import torch
from torch import nn

from model.ema import ema_update, has_running_statistics, make_teacher, teacher_probs
from model.mentor import consistency_target, mentor_keep_mask
from model.schedules import ema_decay, lr_factor, rampup_weight, teacher_start_share


def test_rampup_weight_shape():
    kw = {"start": 500, "end": 2000, "max_weight": 1.0}
    assert rampup_weight(0, **kw) == 0.0
    assert rampup_weight(499, **kw) == 0.0
    assert rampup_weight(500, **kw) == pytest.approx(math.exp(-5))
    assert rampup_weight(1250, **kw) == pytest.approx(math.exp(-5 * 0.25))
    assert rampup_weight(2000, **kw) == 1.0 and rampup_weight(10**6, **kw) == 1.0
    values = [rampup_weight(s, **kw) for s in range(500, 2001, 50)]
    assert values == sorted(values)
    assert rampup_weight(3, start=3, end=3, max_weight=0.4) == 0.4


def test_ema_decay_switches_at_the_end_of_the_ramp():
    assert ema_decay(0, ramp_end=10) == 0.99
    assert ema_decay(9, ramp_end=10) == 0.99
    assert ema_decay(10, ramp_end=10) == 0.999
    assert ema_decay(5, ramp_end=3, during_ramp=0.9, after_ramp=0.5) == 0.5


def test_teacher_start_share_is_the_product_of_the_decays_since_the_copy():
    assert teacher_start_share(5, start=5, ramp_end=10) == 1.0
    assert teacher_start_share(3, start=5, ramp_end=10) == 1.0  # before the copy: nothing has moved it
    assert teacher_start_share(8, start=5, ramp_end=10) == pytest.approx(0.99 ** 3)
    assert teacher_start_share(20, start=5, ramp_end=10) == pytest.approx(0.99 ** 5 * 0.999 ** 10)
    assert teacher_start_share(20, start=12, ramp_end=10, during_ramp=0.5, after_ramp=0.9) == pytest.approx(0.9 ** 8)
    # The figure for the old warm start (28 steps an epoch, ramp over 3 epochs, 8 epochs): about 37 %
    assert teacher_start_share(8 * 28, start=0, ramp_end=3 * 28) == pytest.approx(0.99 ** 84 * 0.999 ** 140)


def test_lr_factor_steps_down_at_milestones():
    assert [lr_factor(s, milestones=(3, 6), gamma=0.1) for s in (0, 2, 3, 5, 6, 100)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])


def test_rampup_weight_counted_from_an_origin_before_its_start():
    """u counted from ``origin`` (here step 0), the meta loss from ``start`` on; the trainer's ``ramp_from: zero``
    uses it with the step one epoch ahead, as the CIFAR-10 re-implementation counts its epochs from 1."""
    kw = {"start": 200, "end": 2000, "max_weight": 0.4, "origin": 0}  # 100 steps an epoch
    assert rampup_weight(199, **kw) == 0.0
    assert rampup_weight(300, **kw) == pytest.approx(0.4 * math.exp(-5 * (1 - 3 / 20) ** 2))
    assert rampup_weight(2000, **kw) == 0.4
    assert rampup_weight(200, start=200, end=2000, max_weight=0.4) == pytest.approx(0.4 * math.exp(-5))
    with pytest.raises(ValueError, match=r"origin: expected an integer in \[0, 200\], found 300"):
        rampup_weight(300, **{**kw, "origin": 300})


@pytest.mark.parametrize(("call", "message"), [
    (lambda: rampup_weight(5, start=10, end=2, max_weight=1.0), r"end: expected an integer >= 10, found 2"),
    (lambda: rampup_weight(-1, start=0, end=2, max_weight=1.0), r"step: expected an integer >= 0, found -1"),
    (lambda: ema_decay(0, ramp_end=1, during_ramp=1.5), r"during_ramp: expected a finite number in \[0.0, 1.0\]"),
    (lambda: lr_factor(1.5), r"step: expected an integer, found 1.5"),
    (lambda: rampup_weight(5, start=0, end=2, max_weight=-1.0),
     r"max_weight: expected a finite number in \[0.0, inf\]"),
])
def test_schedule_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_ema_update_averages_parameters_and_leaves_the_teachers_buffers():
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student(torch.randn(8, 3))  # moves the student's running statistics
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for name, p in student.named_parameters():
        expected = 0.9 * before[name] + 0.1 * p.detach()
        torch.testing.assert_close(dict(teacher.named_parameters())[name], expected)
    for name, b in teacher.named_buffers():  # the teacher's own, as in the reference code: not the student's
        assert torch.equal(b, before[name])


def test_teacher_probs_run_in_training_mode_and_update_the_teachers_own_statistics():
    """Both reference codes call tch_net.train(): the target uses the batch's statistics, and the forward pass
    moves the teacher's running statistics, not the student's."""
    torch.manual_seed(0)
    teacher = make_teacher(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
    teacher.eval()
    x = 3.0 * torch.randn(16, 3) + 1.0
    reference = make_teacher(teacher)
    reference.train()
    expected = torch.softmax(reference(x), dim=1)  # and reference's statistics moved by the same batch
    probs = teacher_probs(teacher, x)
    torch.testing.assert_close(probs, expected, rtol=0, atol=0)
    assert not teacher.training  # its mode is restored
    for (name, b), r in zip(teacher.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(b, r), name
    assert not torch.equal(teacher[1].running_mean, torch.zeros(4))
    assert has_running_statistics(teacher) and not has_running_statistics(nn.Linear(3, 4))


def test_ema_update_rejects_a_different_network():
    with pytest.raises(ValueError, match=r"teacher: expected the student's parameters and buffers"):
        ema_update(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.9)
    with_statistics = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, affine=False))  # the same parameters
    with pytest.raises(ValueError, match=r"teacher: expected the student's parameters and buffers, found differences "
                                         r"in \['1.num_batches_tracked', '1.running_mean', '1.running_var'\]"):
        ema_update(nn.Sequential(nn.Linear(2, 2)), with_statistics, 0.9)
    with pytest.raises(ValueError, match=r"decay: expected a finite number in \[0.0, 1.0\], found 1.5"):
        ema_update(nn.Linear(2, 2), nn.Linear(2, 2), 1.5)


def test_mentor_filter_and_blend():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.4, 0.5, 0.1]])
    labels = torch.tensor([0, 1, 0])
    assert mentor_keep_mask(probs, labels).tolist() == [True, False, False]
    assert mentor_keep_mask(probs, labels, top_k=2).tolist() == [True, True, True]
    teacher = torch.full((3, 3), 1 / 3)
    torch.testing.assert_close(consistency_target(teacher, probs, blend=0.25), 0.75 * teacher + 0.25 * probs)
    assert consistency_target(teacher, None, blend=0.5) is teacher
    with pytest.raises(ValueError, match=r"top_k: expected an integer in \[1, 3\], found 4"):
        mentor_keep_mask(probs, labels, top_k=4)
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 2\], found values from 0 to 5"):
        mentor_keep_mask(probs, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"labels: expected 3 entries \(one per mentor prediction\), found 2"):
        mentor_keep_mask(probs, labels[:2])
    with pytest.raises(ValueError, match=r"mentor_probs: expected shape \(3, 3\) like teacher_probs, found \(1, 3\)"):
        consistency_target(teacher, probs[:1], blend=0.5)
    with pytest.raises(ValueError, match=r"blend: expected a finite number in \[0.0, 1.0\], found 1.5"):
        consistency_target(teacher, probs, blend=1.5)
