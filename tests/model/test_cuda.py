"""The CUDA path: the meta-gradient on the GPU against the float64 CPU reference, training on CUDA in CE and each
mode (bfloat16 autocast, as the trainer runs there), and a crashed CUDA run resumed. Skipped without a GPU; ``make
gpu-check`` runs them."""

import pytest
import torch

from components.common.checkpoints import FileCheckpointStore
from model.mlnt import meta_loss
from model.trainer import MlntConfig, TrainConfig, accuracy, train
from tests.model.test_mlnt_gradients import TinyCNN, grads_of, make_problem, reference_meta
from tests.model.test_trainer import QUIET, CrashError, CrashingStore, net, noisy_problem

pytestmark = pytest.mark.gpu
CUDA = {**QUIET, "device": "cuda"}


@pytest.mark.parametrize("mode", ["exact", "first_order", "head"])
@pytest.mark.parametrize("batch_norm", [False, True], ids=["cnn", "cnn-batchnorm"])
def test_the_meta_gradient_on_cuda_is_the_float64_reference(ieee_float32, mode, batch_norm):
    torch.set_default_dtype(torch.float64)
    try:
        cpu, x, _, synth, teacher = make_problem(TinyCNN, 0, batch_norm=batch_norm)
        reference = reference_meta(cpu, x, synth, teacher, 0.3, mode)
        expected = grads_of(reference, cpu)
    finally:
        torch.set_default_dtype(torch.float32)
    gpu = TinyCNN(batch_norm=batch_norm)
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.float().cuda()
    ours = meta_loss(gpu, x.float().cuda(), synth.cuda(), teacher.float().cuda(), inner_lr=0.3, mode=mode)
    assert abs(ours.item() - reference.item()) <= 1e-5 * abs(reference.item()) + 1e-7
    for got, want in zip(grads_of(ours, gpu), expected, strict=True):
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("config", [
    TrainConfig(epochs=6, **CUDA),
    MlntConfig(epochs=6, mode="head", ramp_end=2, ema_during_ramp=0.9, ema_after_ramp=0.95, **CUDA),
    MlntConfig(epochs=4, mode="first_order", num_sets=3, ramp_end=1, ema_during_ramp=0.9, ema_after_ramp=0.95,
               **CUDA),
    MlntConfig(epochs=4, num_sets=3, ramp_end=1, ema_during_ramp=0.9, ema_after_ramp=0.95, **CUDA),  # auto: exact
    MlntConfig(epochs=4, num_sets=3, ramp_end=1, ema_during_ramp=0.9, ema_after_ramp=0.95, graph=True, **CUDA),
], ids=["ce", "head", "first-order", "auto-exact", "graphed"])
def test_training_on_cuda_learns_a_noisy_problem(config):
    train_data, val = noisy_problem()
    result = train(config, net(), train_data, val_data=val)
    chosen = result.teacher if result.best_model == "teacher" else result.student
    chosen.load_state_dict(result.best_state)
    assert next(chosen.parameters()).device.type == "cuda"
    assert accuracy(chosen, val, device=torch.device("cuda")) > 0.85
    expected = None if type(config) is TrainConfig else "exact" if config.mode == "auto" else config.mode
    assert result.mode == expected


def test_a_crashed_cuda_run_resumes_to_the_same_weights(tmp_path):
    torch.backends.cudnn.deterministic, before = True, torch.backends.cudnn.deterministic
    try:
        train_data, val = noisy_problem(n=400)
        config = MlntConfig(epochs=3, mode="exact", num_sets=2, ramp_end=1, checkpoint_every=4, **CUDA)
        straight = train(config, net(), train_data, val_data=val, store=FileCheckpointStore(tmp_path / "straight"))
        with pytest.raises(CrashError):
            train(config, net(), train_data, val_data=val, store=CrashingStore(tmp_path / "crashed", 3))
        resumed = train(config, net(seed=99), train_data, val_data=val, store=FileCheckpointStore(tmp_path / "crashed"))
    finally:
        torch.backends.cudnn.deterministic = before
    assert resumed.steps == straight.steps and len(resumed.history) == len(straight.history)
    for (name, a), b in zip(straight.student.state_dict().items(), resumed.student.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
