"""The steps run from the command line, in order, on a tiny dataset in the published format."""

import csv
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from components import baseline, evaluate, export, gate, ingest, mlnt, noise, validate
from components.common.errors import DataError
from components.common.model_file import load_model, seeded_network
from tests.components.conftest import make_fashion_mnist
from tests.components.formats_fixtures import write_cifar100


def test_steps_write_their_documented_artifacts(workdir, capsys):
    for step in (ingest, noise, baseline, mlnt):
        assert step.main([]) == 0, capsys.readouterr().err
    art = workdir / "artifacts"
    for path in ["ingest/train.npz", "ingest/test.npz", "ingest/manifest.json", "noise/labels.npz",
                 "noise/transition.json", "noise/summary.json", "baseline/model.pt", "baseline/metrics.json",
                 "baseline/history.json", "mlnt/student.pt", "mlnt/teacher.pt", "mlnt/metrics.json",
                 "mlnt/history.json"]:
        assert (art / path).is_file(), path
    _, saved = load_model(art / "mlnt" / "teacher.pt")
    assert saved["network"] == "small_cnn" and saved["num_classes"] == 10 and len(saved["normalisation"]["mean"]) == 1
    metrics = json.loads((art / "mlnt" / "metrics.json").read_text())
    assert metrics["mode"] == "head" and metrics["epochs"] == 2 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["released"] in ("student", "teacher") and not metrics["warm_start"]
    assert metrics["val_accuracy"] == max(metrics["val_accuracy_teacher"], metrics["val_accuracy_student"])
    evaluations = json.loads((art / "mlnt" / "evaluations.json").read_text())
    assert [e["step"] for e in evaluations][-1] == metrics["steps"] and metrics["best_step"] in [
        e["step"] for e in evaluations]
    history = json.loads((art / "baseline" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]


def test_cifar100_with_noise_within_superclasses_through_every_step(workdir, capsys):
    """100 classes from the published layout: validated, flipped within superclasses, trained, evaluated,
    exported and gated, each step's CLI exiting 0."""
    write_cifar100(workdir / "data" / "cifar100", per_class=8, test_per_class=2)
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["ingest"].update(dataset="cifar100", path="data/cifar100")
    params["noise"].update(kind="asymmetric", rate=0.4, val_fraction=0.25)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    for step in (ingest, validate, noise, baseline, mlnt, evaluate, export, gate):
        assert step.main([]) == 0, capsys.readouterr().err
    art = workdir / "artifacts"
    _, saved = load_model(art / "mlnt" / "teacher.pt")
    assert saved["num_classes"] == 100 and len(saved["normalisation"]["mean"]) == 3
    summary = json.loads((art / "noise" / "summary.json").read_text())
    assert summary["kind"] == "asymmetric" and 0.25 < summary["realised_rate_train"] < 0.55
    with (art / "evaluate" / "label_issues.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["train"] == 600 and {r["given_class"] for r in rows} >= {"beaver", "dolphin"}
    decision = json.loads((art / "gate" / "decision.json").read_text())  # noise on 100 classes: nothing learnt
    assert not decision["passed"] and any(r.startswith("fail: accuracy") and "min_accuracy 0.8" in r
                                          for r in decision["reasons"])


def test_a_schedule_shortened_past_its_ramp_is_warned_and_recorded(workdir, capsys):
    """epochs cut to 2 with the ramp still ending at epoch 10: MLNT trained as the EMA teacher on nearly plain CE
    without a word. The warning names the weight reached and the fix, on stderr and in metrics.json."""
    for step in (ingest, noise, baseline):
        assert step.main([]) == 0, capsys.readouterr().err
    assert mlnt.main(["--set", "mlnt.ramp_end=10"]) == 0
    expected = ("ramp_end 10 is past the last epoch (2): the meta loss's weight ends at 3% of meta_weight 0.4, so "
                "this run is mostly the EMA teacher on plain CE (set ramp_end to at most epochs, or train longer)")
    assert f"WARNING: mlnt: {expected}\n" in capsys.readouterr().err
    assert json.loads((workdir / "artifacts" / "mlnt" / "metrics.json").read_text())["warning"] == expected
    assert mlnt.ramp_warning(mlnt.MlntStepConfig(epochs=15, ramp_end=15)) is None  # the pipeline's schedule
    assert mlnt.ramp_warning(mlnt.MlntStepConfig(epochs=15, ramp_end=16)).startswith(
        "ramp_end 16 is past the last epoch (15): the meta loss's weight ends at 97% of meta_weight 0.4 (set")
    assert mlnt.ramp_warning(mlnt.MlntStepConfig(epochs=3, meta_weight=0.0)) is None  # the control has no ramp


def test_the_model_files_hold_the_models_their_metrics_describe(workdir, capsys):
    """baseline's ``model.pt`` is its best validation (``val_accuracy``, ``best_epoch``), ``final.pt`` its last
    epoch (``final_val_accuracy``); mlnt's ``teacher.pt`` is the released model (``val_accuracy``, ``released``)."""
    from components.common.splits import load_split  # noqa: PLC0415
    from model.trainer import accuracy  # noqa: PLC0415

    for step in (ingest, noise, baseline, mlnt):
        assert step.main([]) == 0, capsys.readouterr().err
    art = workdir / "artifacts"
    val = load_split(art / "ingest", art / "noise")[1]
    base = json.loads((art / "baseline" / "metrics.json").read_text())
    best, saved = load_model(art / "baseline" / "model.pt")
    final, _ = load_model(art / "baseline" / "final.pt")
    history = json.loads((art / "baseline" / "history.json").read_text())
    assert accuracy(best.eval(), val) == base["val_accuracy"] and saved["best_epoch"] == base["best_epoch"]
    assert accuracy(final.eval(), val) == base["final_val_accuracy"] == history[-1]["val_accuracy_student"]
    metrics = json.loads((art / "mlnt" / "metrics.json").read_text())
    teacher, saved = load_model(art / "mlnt" / "teacher.pt")
    assert accuracy(teacher.eval(), val) == metrics["val_accuracy"]
    assert (saved["released"], saved["best_epoch"]) == (metrics["released"], metrics["best_epoch"])


def test_the_baseline_keeps_its_best_validation_in_model_pt_and_its_last_epoch_in_final_pt(workdir, monkeypatch):
    """Every validation scores lower than the one before: ``model.pt`` is the first one's weights, not the last
    epoch's (``final.pt``), and the metrics tell the two apart (``best_step`` the training step of the first
    validation, ``epochs`` the epochs trained); the Pushgateway gets the released model's score. The curves are
    rewritten at every validation while the run goes, and published to ``live/`` with the other outputs."""
    import csv  # noqa: PLC0415

    import model.trainer as trainer_module  # noqa: PLC0415
    from components.common import telemetry  # noqa: PLC0415

    for step in (ingest, noise):
        assert step.main([]) == 0
    scores, pushed, live = [], [], []
    monkeypatch.setattr(trainer_module, "accuracy", lambda *_, **__: scores.append(1 / (len(scores) + 1)) or scores[-1])
    monkeypatch.setattr(telemetry, "push_training_metrics", lambda step, metrics: pushed.append((step, metrics)))
    write_curves = baseline.write_curves
    monkeypatch.setattr(baseline, "write_curves", lambda out, history, evaluations: (
        live.append((Path(out), len(evaluations))), write_curves(out, history, evaluations)))
    assert baseline.main([]) == 0
    metrics = json.loads((workdir / "artifacts/baseline/metrics.json").read_text())
    assert len(scores) > 1 and (metrics["val_accuracy"], metrics["best_epoch"]) == (1.0, 1)
    assert metrics["final_val_accuracy"] == scores[-1] and metrics["epochs"] == 2
    history = json.loads((workdir / "artifacts/baseline/history.json").read_text())
    with open(workdir / "artifacts/baseline/live/plots/metrics/val_accuracy_student.tsv") as fh:
        curve = [(int(row["step"]), float(row["val_accuracy_student"])) for row in csv.DictReader(fh, delimiter="\t")]
    assert metrics["best_step"] == curve[0][0] == history[0]["step"] and curve[0][1] == 1.0
    assert [(step, m["accuracy"]["val"]["baseline"]) for step, m in pushed] == [("baseline", 1.0)]
    assert live == [(Path("artifacts/baseline"), n) for n in range(1, len(scores) + 1)]
    best, saved = load_model(workdir / "artifacts/baseline/model.pt")
    final, _ = load_model(workdir / "artifacts/baseline/final.pt")
    assert saved["best_epoch"] == 1
    assert any(not torch.equal(a, b) for a, b in zip(best.state_dict().values(), final.state_dict().values(),
                                                     strict=True))


@pytest.mark.parametrize("pretrained", [False, True])
def test_the_baseline_starts_from_its_configs_network_seed_and_weights_and_augments_as_set(workdir, monkeypatch,
                                                                                           pretrained):
    """``network`` and ``seed`` choose the initialisation, ``pretrained`` starts it from the network's ImageNet
    weights (asked only when set), ``augment`` reaches the training split."""
    for step in (ingest, noise):
        assert step.main([]) == 0
    seen = {}
    real = baseline.load_split
    monkeypatch.setattr(baseline, "load_split", lambda *a, **k: seen.update(augment=k["augment"]) or real(*a, **k))
    monkeypatch.setattr(baseline, "imagenet_weights", lambda network: seen.update(asked=network) or {"from": network})

    def record(network, meta, seed, *, pretrained):
        seen.update(network=network, seed=seed, weights=pretrained)
        raise RuntimeError("recorded")

    monkeypatch.setattr(baseline, "seeded_network", record)
    settings = {"augment": "true", "seed": "7", "network": "preact_resnet32", "pretrained": str(pretrained).lower()}
    assert baseline.main([a for k, v in settings.items() for a in ("--set", f"baseline.{k}={v}")]) == 1
    assert (seen["augment"], seen["network"], seen["seed"]) == (True, "preact_resnet32", 7)
    assert (seen.get("asked"), seen["weights"]) == (("preact_resnet32", {"from": "preact_resnet32"}) if pretrained
                                                    else (None, None))


def test_the_baseline_model_files_record_the_network_they_hold(workdir):
    """``model.pt`` and ``final.pt`` of a network other than the default load as that network."""
    for step in (ingest, noise):
        assert step.main([]) == 0
    assert baseline.main(["--set", "baseline.network=preact_resnet32", "--set", "baseline.epochs=1"]) == 0
    for name in ("model.pt", "final.pt"):
        net, saved = load_model(workdir / "artifacts/baseline" / name)
        assert saved["network"] == "preact_resnet32" and type(net).__name__ == "PreActResNet32", name


def test_rerun_resumes_more_epochs_continue_and_a_changed_config_starts_afresh(workdir, capsys):
    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    runs = lambda: sorted(p.name for p in (workdir / "artifacts/baseline/checkpoints").iterdir())  # noqa: E731
    first = runs()
    assert baseline.main(["--set", "baseline.progress=true"]) == 0  # a change that cannot alter the result
    assert "resumed from" in capsys.readouterr().out and runs() == first
    assert baseline.main(["--set", "baseline.epochs=3"]) == 0  # more epochs: the same run continues
    assert "resumed from" in capsys.readouterr().out and runs() == first
    assert [h["epoch"] for h in json.loads((workdir / "artifacts/baseline/history.json").read_text())] == [1, 2, 3]
    assert baseline.main(["--set", "baseline.lr=0.03"]) == 0  # another config: a new run; the old one is dropped
    assert runs() != first and len(runs()) == 1
    assert json.loads((workdir / "artifacts/baseline/metrics.json").read_text())["epochs"] == 2  # params.yaml's


@pytest.mark.parametrize("warm_start", [False, True])
def test_mlnt_starts_from_the_baselines_weights_only_with_warm_start(workdir, monkeypatch, warm_start):
    """``warm_start: false`` (the authors' code) trains from the seeded initialisation, the baseline giving only the
    features; ``true`` from the baseline's ``model.pt``."""
    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    started = {}

    def record(config, net, *args, feature_net, **kwargs):
        started.update(net={k: v.clone() for k, v in net.state_dict().items()}, features=feature_net.state_dict())
        raise RuntimeError("recorded")

    monkeypatch.setattr(mlnt, "train", record)
    assert mlnt.main(["--set", f"mlnt.warm_start={str(warm_start).lower()}"]) == 1
    base, _ = load_model(workdir / "artifacts/baseline/model.pt")
    same = lambda state: all(torch.equal(v, state[k]) for k, v in base.state_dict().items())  # noqa: E731
    assert same(started["features"]) and same(started["net"]) == warm_start


def test_a_retrained_baseline_starts_mlnt_afresh(workdir, capsys):
    """The mlnt run's checkpoints belong to the baseline it read (its features): after the baseline changes, mlnt
    does not resume the run that used the other one."""
    for step in (ingest, noise, baseline, mlnt):
        assert step.main([]) == 0
    runs = lambda: sorted(p.name for p in (workdir / "artifacts/mlnt/checkpoints").iterdir())  # noqa: E731
    first = runs()
    capsys.readouterr()
    assert mlnt.main([]) == 0  # the same inputs: the same run, resumed
    assert "resumed from" in capsys.readouterr().out and runs() == first
    assert baseline.main(["--set", "baseline.seed=1"]) == 0  # another model.pt
    assert mlnt.main([]) == 0
    assert "resumed from" not in capsys.readouterr().out and runs() != first


def test_training_step_without_its_inputs(workdir, capsys):
    assert mlnt.main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: mlnt: artifacts/ingest/manifest.json: expected the output of the ingest step")


def test_iterative_mlnt_keeps_each_rounds_teacher_and_drops_an_earlier_runs_extra_rounds(workdir):
    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    art = workdir / "artifacts" / "mlnt"
    art.mkdir(parents=True)
    for stale in ("teacher_round1.pt", "teacher_round2.pt"):  # what an earlier run with rounds: 3 left
        (art / stale).write_bytes(b"an earlier run's teacher")
    assert mlnt.main(["--set", "mlnt.rounds=2"]) == 0
    assert sorted(p.name for p in art.glob("teacher_round*.pt")) == ["teacher_round1.pt"]
    metrics = json.loads((art / "metrics.json").read_text())
    by_round = metrics["val_accuracy_by_round"]
    assert len(by_round) == 2 and by_round[-1] == metrics["val_accuracy"]
    first, _ = load_model(art / "teacher_round1.pt")
    last, _ = load_model(art / "teacher.pt")
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), last.state_dict().values(),
                                                     strict=True))


@pytest.mark.parametrize("released", ["teacher", "student"])
def test_iterative_mlnt_releases_each_rounds_best_validation_and_reports_each_rounds_score(workdir, monkeypatch,
                                                                                          released):
    """Every validation scores one model 0 and the other (``released``) lower than the one before: each round
    releases its first validation's ``released`` model (``teacher_round1.pt``, ``teacher.pt``), not a later one or
    the final student; ``val_accuracy_by_round`` lists the rounds in order; ``val_accuracy_<model>`` is the best,
    ``final_val_accuracy_<model>`` the last, validation; ``teacher_start_share_released`` is the released
    teacher's (None when the student is released)."""
    import model.trainer as trainer_module  # noqa: PLC0415

    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    calls = []  # (score, weights) of every validation of the released model, in order

    def accuracy(model, *_, **__):
        if any(p.requires_grad for p in model.parameters()) != (released == "student"):
            return 0.0
        calls.append((1 / (len(calls) + 1), {k: v.clone() for k, v in model.state_dict().items()}))
        return calls[-1][0]

    monkeypatch.setattr(trainer_module, "accuracy", accuracy)
    assert mlnt.main(["--set", "mlnt.rounds=2"]) == 0
    art = workdir / "artifacts" / "mlnt"
    metrics = json.loads((art / "metrics.json").read_text())
    evaluations = json.loads((art / "evaluations.json").read_text())  # the last round's
    per_round = len(evaluations)
    assert per_round > 1 and len(calls) == 2 * per_round
    first, last = calls[0], calls[per_round]  # the best validation of each round: its first
    assert metrics["val_accuracy_by_round"] == [first[0], last[0]] and metrics["val_accuracy"] == last[0]
    assert (metrics["released"], metrics[f"val_accuracy_{released}"]) == (released, last[0])
    assert metrics[f"final_val_accuracy_{released}"] == calls[-1][0] == evaluations[-1][f"val_accuracy_{released}"]
    shares = [e["teacher_start_share"] for e in evaluations]
    assert shares[0] != shares[-1]
    assert metrics["teacher_start_share_released"] == (shares[0] if released == "teacher" else None)
    for path, want in (("teacher_round1.pt", first[1]), ("teacher.pt", last[1])):
        got, _ = load_model(art / path)
        for name, value in got.state_dict().items():
            assert torch.equal(value, want[name]), (path, name)


def test_mlnt_step_under_torchrun_matches_one_process(workdir):
    """What the TrainJob (and the PyTorchJob) in k8s/ runs: ``torchrun -m components.mlnt`` with 2 processes (gloo
    on the CPU) writes the same teacher as the step run alone, and only once."""
    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    assert mlnt.main([]) == 0
    alone = workdir / "artifacts" / "mlnt-alone"
    (workdir / "artifacts" / "mlnt").rename(alone)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "components.mlnt"], cwd=workdir, env=env, capture_output=True, text=True, check=False,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("mlnt (head): released the") == 2  # both processes finish; rank 0 wrote the files
    got, _ = load_model(workdir / "artifacts" / "mlnt" / "teacher.pt")
    want, _ = load_model(alone / "teacher.pt")
    for (name, a), b in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert json.loads((workdir / "artifacts/mlnt/metrics.json").read_text())["epochs"] == 2


def test_a_retry_with_empty_outputs_resumes_from_a_shared_checkpoint_root(workdir, capsys, monkeypatch):
    """How a Kubeflow retry resumes: its output folder starts empty, its checkpoints live on a volume."""
    for step in (ingest, noise):
        assert step.main([]) == 0
    config = baseline.BaselineConfig(**{**yaml.safe_load((workdir / "params.yaml").read_text())["baseline"]})
    shared, other_run = workdir / "volume" / "baseline", workdir / "volume" / "baseline" / "another-run"
    other_run.mkdir(parents=True)
    failed_outputs = workdir / "attempt1"

    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:  # the first attempt trains, then fails to write its outputs
        patch.setattr(baseline, "_write", disk_full)
        with pytest.raises(OSError):
            baseline.run(config, out=failed_outputs, checkpoints=shared)
    capsys.readouterr()
    metrics = baseline.run(config, out=workdir / "attempt2", checkpoints=shared)
    assert "resumed from" in capsys.readouterr().out and metrics["epochs"] == 2
    assert (workdir / "attempt2" / "model.pt").is_file()
    # its own folder kept, marked finished, for a retry after the outputs were written; other runs' left alone
    assert (shared / "another-run").is_dir() and len(list(shared.iterdir())) == 2
    assert len(list(shared.glob("*/finished.json"))) == 1


def test_export_calibrates_with_the_bins_params_yaml_gives_evaluate(workdir, capsys, monkeypatch):
    """evaluate.ece_bins reaches export's calibration report (it once took the dataclass default, 15). Every ECE
    export computes is counted with its bins: the tiny network's ECEs are the same at any bins (under-confident in
    every bin before the temperature, at the accuracy after), so comparing figures could not tell 3 bins from 15."""
    from components import evaluate, export  # noqa: PLC0415 - imports onnx

    for step in (ingest, noise, baseline, mlnt):
        assert step.main([]) == 0, capsys.readouterr().err
    assert evaluate.main(["--set", "evaluate.ece_bins=3"]) == 0, capsys.readouterr().err
    used = []
    monkeypatch.setattr(export, "expected_calibration_error", lambda probs, labels, bins: used.append(bins) or
                        evaluate.expected_calibration_error(probs, labels, bins))
    assert export.main([]) == 0, capsys.readouterr().err
    card = json.loads((workdir / "artifacts/export/model_card.json").read_text())
    assert used == [3, 3, 3, 3]  # validation and test, before and after
    assert {"val_ece_before", "val_ece_after", "test_ece_before", "test_ece_after"} <= set(card["calibration"])


def test_the_card_records_the_settings_a_step_ran_with_not_the_params_files(workdir, capsys, caplog):
    """A step run by hand with --set ran with other settings than params.yaml's; the card recorded the file's, so
    its params (and digest) described a run that did not happen. Each step's outputs now record its config."""
    from components import evaluate, export  # noqa: PLC0415 - imports onnx

    assert ingest.main(["--set", "ingest.test_fraction=0.25"]) == 0  # no effect on Fashion-MNIST, but recorded
    assert noise.main(["--set", "noise.rate=0.6"]) == 0, capsys.readouterr().err
    assert baseline.main(["--set", "baseline.seed=3"]) == 0, capsys.readouterr().err
    for step, setting in ((mlnt, "mlnt.seed=9"), (evaluate, "evaluate.batch_size=256"), (export, None)):
        assert step.main(["--set", setting] if setting else []) == 0, capsys.readouterr().err
    card = json.loads((workdir / "artifacts/export/model_card.json").read_text())
    assert card["params"]["noise"]["rate"] == 0.6 and card["params"]["baseline"]["epochs"] == 2
    assert card["params"]["baseline"]["seed"] == 3
    ran = {step: card["params"][step][key] for step, key in (
        ("ingest", "test_fraction"), ("mlnt", "seed"), ("evaluate", "batch_size"))}
    assert ran == {"ingest": 0.25, "mlnt": 9, "evaluate": 256}  # every step's record, not the file's
    assert card["params_sha256"] == export.params_digest(card["params"])
    assert ("the model card records the settings the steps ran with, not the params file's: noise.rate 0.6 (the "
            "params file: 0.3)") in caplog.text


def test_the_card_records_the_settings_of_every_step_up_to_export(workdir, capsys):
    """As given in the params file, ``--set`` overrides applied; the digest depends on the settings, not on how the
    file is written (order, comments), and a missing section is refused by name."""
    from components import evaluate, export  # noqa: PLC0415 - imports onnx

    for step in (ingest, noise, baseline, mlnt, evaluate):
        assert step.main([]) == 0, capsys.readouterr().err
    assert export.main(["--set", "export.parity_images=64"]) == 0, capsys.readouterr().err
    card = json.loads((workdir / "artifacts/export/model_card.json").read_text())
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["export"]["parity_images"] = 64
    assert card["params"] == {step: params[step] for step in export.MADE_BY} and "gate" not in card["params"]
    assert card["params_sha256"] == export.params_digest(card["params"])
    reordered = {step: dict(reversed(params[step].items())) for step in reversed(export.MADE_BY)}
    assert export.params_digest(export.made_by(reordered)) == card["params_sha256"]
    assert export.params_digest({**card["params"], "mlnt": {**params["mlnt"], "epochs": 3}}) != card["params_sha256"]
    with pytest.raises(ValueError, match="expected the params of every step up to export, found none for validate"):
        export.made_by({step: params[step] for step in export.MADE_BY if step != "validate"})


def test_export_reports_the_released_models_calibration_on_the_test_set(workdir, capsys):
    """The card's ``test_ece_after`` is the ECE of what onnxruntime serves (the temperature in the graph), and
    ``test_ece_before`` is evaluate's figure for the uncalibrated network, on the same test images and bins."""
    import onnxruntime as ort  # noqa: PLC0415

    from components import evaluate, export  # noqa: PLC0415 - imports onnx
    from components.common.splits import test_set  # noqa: PLC0415

    for step in (ingest, noise, baseline, mlnt, evaluate):
        assert step.main([]) == 0, capsys.readouterr().err
    with np.load(workdir / "artifacts/noise/labels.npz") as saved:
        arrays = dict(saved)
    val = np.flatnonzero(arrays["is_val"])[:4]  # four validation errors: every image right leaves T undetermined
    arrays["label"][val] = (arrays["label"][val] + 1) % 10
    np.savez(workdir / "artifacts/noise/labels.npz", **arrays)
    assert export.main([]) == 0, capsys.readouterr().err
    card = json.loads((workdir / "artifacts/export/model_card.json").read_text())
    calibration, bins = card["calibration"], evaluate.EvaluateConfig().ece_bins
    assert calibration["test_ece_before"] == pytest.approx(card["metrics"]["ece"], abs=1e-6)
    test = test_set(workdir / "artifacts/ingest", card["input"]["normalisation"])
    images = torch.cat([x for x, _ in test.eval_batches(256)]).numpy()
    session = ort.InferenceSession(str(workdir / "artifacts/export/model.onnx"))
    served = session.run(None, {"images": images})[0]
    assert calibration["test_ece_after"] == pytest.approx(
        evaluate.expected_calibration_error(served, test.labels.numpy(), bins), abs=1e-5)
    assert calibration["temperature"] != 1.0 and calibration["test_ece_after"] != calibration["test_ece_before"]



def test_the_card_describes_the_run_it_came_from(workdir, capsys):
    """The card's ``parity`` counts the first ``export.parity_images`` test images; ``calibration.fitted_on`` and
    ``validation`` say the validation labels were noisy; ``train_class_distribution`` is the share of each class
    among the training rows' noisy labels (validation rows left out), ``predicted_class_distribution`` the share of each
    class among the released network's predictions on the test set; ``data`` hashes the inputs; the ECEs before and
    after are the network's on the validation set at T = 1 and T; ``test`` is evaluate's record; the ONNX file
    holds the card's temperature and opset."""
    import hashlib  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import onnx  # noqa: PLC0415

    from components import evaluate, export  # noqa: PLC0415 - imports onnx
    from components.common.calibration import (  # noqa: PLC0415
        at_bound,
        fit_temperature,
        fit_temperature_on_noisy_labels,
    )
    from components.common.splits import load_split, test_set  # noqa: PLC0415

    make_fashion_mnist(workdir / "data" / "fashion-mnist", train=1000)
    assert ingest.main([]) == 0
    # 350 noisy validation images: at least 301 give the noise matrix 10 anchor points a class
    assert noise.main(["--set", "noise.val_clean=false", "--set", "noise.val_fraction=0.35"]) == 0, \
        capsys.readouterr().err
    for step in (baseline, mlnt, evaluate):
        assert step.main([]) == 0, capsys.readouterr().err
    assert export.main(["--set", "export.parity_images=16"]) == 0, capsys.readouterr().err
    art = workdir / "artifacts"
    card = json.loads((art / "export/model_card.json").read_text())
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    assert card["parity"]["images"] == 16 and card["parity"]["passed"]
    assert card["validation"]["clean"] is False and card["calibration"]["fitted_on"].startswith("noisy validation")
    assert card["test"] == metrics["test"]
    given, is_val = (np.load(art / "noise/labels.npz")[k] for k in ("label", "is_val"))
    shares = np.bincount(given[~is_val], minlength=10) / (~is_val).sum()
    assert card["train_class_distribution"] == pytest.approx(shares.tolist())
    assert card["data"] == {"ingest_inputs_sha256": json.loads((art / "ingest/manifest.json").read_text())[
        "inputs_sha256"], "labels_sha256": hashlib.sha256((art / "noise/labels.npz").read_bytes()).hexdigest()}
    net, _ = load_model(art / ("mlnt/teacher.pt" if card["model"] == "teacher" else "baseline/model.pt"))
    val = load_split(art / "ingest", art / "noise")[1]
    with torch.no_grad():
        logits = torch.cat([net.eval()(x) for x, _ in val.eval_batches(512)]).double()
    calibration, bins = card["calibration"], metrics["ece_bins"]
    # fitted on the validation set alone, with the noisy labels it has, through their estimated noise matrix; the
    # bands are learnt without an error, so the fit runs to the edge of its range and T stays 1, with a warning (the
    # fitted case: tests/components/test_evaluate_export_gate.py, test_too_few_noisy_validation_images...)
    fit = fit_temperature_on_noisy_labels(logits, val.labels)
    assert at_bound(fit.temperature) and calibration["temperature"] == 1.0
    assert calibration["warning"].startswith("kept T = 1: the fit ran to the edge of its range")
    assert calibration["uncorrected_temperature"] == pytest.approx(fit_temperature(logits, val.labels))
    assert calibration["noise_matrix"] == np.round(fit.noise_matrix, 4).tolist()
    assert calibration["estimated_noise_rate"] == round(fit.noise_rate, 4)
    assert calibration["fitted_on"] == f"noisy validation set ({len(val)} images)"
    assert calibration["method"] == "temperature scaling through the labels' noise matrix (anchor points)"
    assert f"export: temperature T = {calibration['temperature']:.3f}, fitted on the noisy validation set" in (
        capsys.readouterr().out)
    for key, temperature in (("val_ece_before", 1.0), ("val_ece_after", calibration["temperature"])):
        probs = torch.softmax(logits / temperature, dim=1).numpy()
        assert calibration[key] == pytest.approx(evaluate.expected_calibration_error(probs, val.labels.numpy(), bins))
    model = onnx.load(art / "export/model.onnx")
    assert {p.key: p.value for p in model.metadata_props}["temperature"] == str(calibration["temperature"])
    assert {o.domain: o.version for o in model.opset_import}[""] == card["opset"] == 18
    metadata = {p.key: p.value for p in model.metadata_props}
    assert json.loads(metadata["normalisation"]) == card["input"]["normalisation"]
    assert json.loads(metadata["input_transform"]) == card["input"]["transform"]
    assert json.loads(metadata["class_names"]) == card["class_names"] and metadata["model"] == card["model"]
    assert card["output"] == {"name": "probabilities", "shape": ["batch", 10]} and card["network"] == "small_cnn"
    # parity.json and the card's parity: onnxruntime against PyTorch on the first 16 test images, at the bound given
    first = torch.cat([x for x, _ in test_set(art / "ingest", card["input"]["normalisation"]).subset(
        torch.arange(16)).eval_batches(256)])
    allowed = yaml.safe_load((workdir / "params.yaml").read_text())["export"]["max_abs_diff"]
    assert card["parity"] == json.loads((art / "export/parity.json").read_text()) == export.parity(
        (art / "export/model.onnx").read_bytes(), net, first, allowed, temperature=calibration["temperature"])
    assert card["onnx_sha256"] == hashlib.sha256((art / "export/model.onnx").read_bytes()).hexdigest()
    # the drift gauge's reference: the released model's predicted classes on the whole test set
    whole = test_set(art / "ingest", card["input"]["normalisation"])
    with torch.no_grad():
        predicted = torch.cat([net(x) for x, _ in whole.eval_batches(512)]).argmax(1).numpy()
    assert card["predicted_class_distribution"] == pytest.approx((np.bincount(predicted, minlength=10)
                                                                  / predicted.size).tolist())
    assert card["metrics"]["val_accuracy"] == json.loads((art / ("mlnt" if card["model"] == "teacher" else
                                                                 "baseline") / "metrics.json").read_text())[
        "val_accuracy"] and card["label_issues"] == metrics["label_issues"]


def test_evaluate_metrics_and_csvs_come_from_the_four_files_they_name(workdir, capsys, monkeypatch):
    """metrics.json's ``baseline`` scores CE's last epoch (``final.pt``), ``baseline_best_epoch`` and the baseline's
    ``best_epoch_accuracy`` its best epoch (``model.pt``); ``confusion_<model>.csv`` is each test image's
    ``actual,predicted`` class names, ``calibration_<model>.csv`` the reliability rows at ``evaluate.ece_bins``; and
    ``label_issues.csv`` names the rows of the ingested training set that labels.npz holds."""
    import csv  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    import model.trainer as trainer_module  # noqa: PLC0415
    from components import evaluate  # noqa: PLC0415
    from components.common.splits import test_set  # noqa: PLC0415

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["noise"]["train_size"] = 300  # of 400: labels.npz's index is not every row
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for step in (ingest, noise):
        assert step.main([]) == 0, capsys.readouterr().err
    scores = []  # every validation scores lower than the one before: model.pt (epoch 1) is not final.pt (epoch 2)
    monkeypatch.setattr(trainer_module, "accuracy", lambda *_, **__: scores.append(1 / (len(scores) + 1)) or scores[-1])
    for step in (baseline, mlnt):
        assert step.main([]) == 0, capsys.readouterr().err
    assert evaluate.main(["--set", "evaluate.ece_bins=4"]) == 0, capsys.readouterr().err
    art = workdir / "artifacts"
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    names = metrics["class_names"]
    files = {"baseline": "baseline/final.pt", "baseline_best_epoch": "baseline/model.pt",
             "student": "mlnt/student.pt", "teacher": "mlnt/teacher.pt"}
    for name, file in files.items():
        net, saved = load_model(art / file)
        test = test_set(art / "ingest", saved["normalisation"], workers=0)
        probs, labels = trainer_module.predict(net, test).numpy(), test.labels.numpy()
        want = evaluate.classification_metrics(probs, labels, len(names), 4)
        assert (metrics[name]["accuracy"], metrics[name]["ece"]) == pytest.approx((want["accuracy"], want["ece"])), name
        with open(art / f"evaluate/confusion_{name}.csv") as fh:
            assert [(r["actual"], r["predicted"]) for r in csv.DictReader(fh)] == [
                (names[a], names[p]) for a, p in zip(labels, probs.argmax(1), strict=True)], name
        with open(art / f"evaluate/calibration_{name}.csv") as fh:
            written = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(fh)]
        rows = evaluate.reliability_rows(probs, labels, 4)
        assert len(written) == len(rows), name
        assert all(w == pytest.approx(r) for w, r in zip(written, rows, strict=True)), name
    assert metrics["baseline"]["best_epoch_accuracy"] == metrics["baseline_best_epoch"]["accuracy"]
    assert metrics["ece_bins"] == 4
    with np.load(art / "noise/labels.npz") as labels_npz:
        training_rows = set(labels_npz["index"][~labels_npz["is_val"]].tolist())
    with open(art / "evaluate/label_issues.csv") as fh:
        assert {int(r["index"]) for r in csv.DictReader(fh)} == training_rows


def test_evaluate_on_labels_whose_errors_nobody_knows(workdir, capsys, monkeypatch):
    """Noise kind ``none`` with validation labels as given: evaluate ranks the labels, estimates the rate and the
    count per class (the first ``estimated_issues`` rows of ``label_issues.csv``, by given class name), and reports
    no precision or recall; ``roc_label_issues.csv`` keeps its ``fpr,tpr`` header for ``dvc plots``; metrics.json's
    ``validation`` carries the noise step's size and warning, which evaluate prints; ``config.json`` the settings it
    ran with; the Pushgateway gets each model's test accuracy and the estimated noise rate."""
    import csv  # noqa: PLC0415

    from components import evaluate  # noqa: PLC0415
    from components.common import telemetry  # noqa: PLC0415

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["noise"].update(kind="none", val_clean=False)
    for section in ("baseline", "mlnt"):
        params[section]["epochs"] = 1
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for step in (ingest, noise, baseline, mlnt):
        assert step.main([]) == 0, capsys.readouterr().err
    capsys.readouterr()
    pushed = []
    monkeypatch.setattr(telemetry, "push_training_metrics", lambda step, m, **_: pushed.append((step, m)) or True)
    assert evaluate.main(["--set", "evaluate.ece_bins=4"]) == 0
    out, err = capsys.readouterr()
    art = workdir / "artifacts"
    assert json.loads((art / "evaluate/config.json").read_text()) == {**params["evaluate"], "ece_bins": 4}
    summary = json.loads((art / "noise/summary.json").read_text())
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    assert metrics["validation"] == {"source": summary["val_source"], "clean": False, "size": summary["val"],
                                     "warning": summary["warning"]}
    assert f"WARNING: {summary['warning']}" in err
    issues, names = metrics["label_issues"], metrics["class_names"]
    assert issues["ground_truth"] is False and not {"precision", "recall", "f1", "auroc"} & issues.keys()
    assert f"{issues['estimated_issues']} suspect labels" in out and "no ground truth" in out
    assert (art / "evaluate/roc_label_issues.csv").read_text().split() == ["fpr,tpr"]
    with open(art / "evaluate/label_issues.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert "injected_noise" not in rows[0]
    for row in rows:
        assert (row["given_class"], row["suggested_class"]) == (
            names[int(row["given_label"])], names[int(row["suggested_label"])]), row
        assert row["suggested_label"] != row["given_label"], row  # a suggestion is always another class
    # what the Pushgateway gets: each model's test accuracy and the estimated noise rate
    [(pushed_by, sent)] = pushed
    assert pushed_by == "evaluate" and sent.pop("duration_seconds") > 0 and sent == {
        "accuracy": {"test": {m: metrics[m]["accuracy"] for m in ("baseline", "student", "teacher")}},
        "estimated_noise_rate": issues["estimated_noise_rate"]}
    assert [row["flagged"] for row in rows] == ["True"] * issues["estimated_issues"] + ["False"] * (
        len(rows) - issues["estimated_issues"])
    flagged = [row["given_class"] for row in rows if row["flagged"] == "True"]
    assert {name: c["flagged"] for name, c in issues["per_class"].items()} == {n: flagged.count(n) for n in names}


def test_the_seeded_network_is_the_same_every_time_and_leaves_torchs_generator_alone():
    meta = {"num_classes": 3, "in_channels": 1, "image_size": 28}
    state = torch.get_rng_state()
    first, again = seeded_network("small_cnn", meta, 7), seeded_network("small_cnn", meta, 7)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True))


def test_load_model_names_a_missing_file_and_a_state_dict_that_is_not_a_mapping(tmp_path):
    with pytest.raises(DataError, match=r"none\.pt: expected a model file, found no such file$"):
        load_model(tmp_path / "none.pt")
    torch.save({"format": 1, "network": "small_cnn", "num_classes": 3, "in_channels": 1, "image_size": 28,
                "normalisation": {"mean": [0.5], "std": [0.2]}, "state_dict": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(DataError, match=r"list\.pt: expected weights that fit a small_cnn with 3 classes, found a "
                                        r"state_dict of type list$"):
        load_model(tmp_path / "list.pt")


def test_an_earlier_steps_output_is_one_error_naming_the_file_what_was_expected_and_what_was_found(tmp_path):
    """components/common/artifacts.py: a file another step writes, missing, unreadable or without what is needed,
    is one ``DataError`` naming the file, the step that writes it, what was expected and what was found."""
    from components.common.artifacts import check_labels, read_arrays, read_json  # noqa: PLC0415

    (tmp_path / "folder.json").mkdir()  # a folder is no output file
    with pytest.raises(DataError, match=r"folder\.json: expected the output of the ingest step, found no such file "
                                        r"\(run python -m components\.ingest first\)$"):
        read_json(tmp_path / "folder.json", "ingest")
    cases = {b"\xff\xfe": r"expected JSON written by the noise step, found invalid JSON \(",
             b"[1, 2]": r"expected the key 'c' written by the noise step, found list$",
             b'"a c d"': r"expected the key 'c' written by the noise step, found str$",  # no substring test
             b'{"b": 1, "a": 2}': r"expected the key 'c' written by the noise step, found keys \['a', 'b'\]$"}
    for text, found in cases.items():
        (tmp_path / "x.json").write_bytes(text)
        with pytest.raises(DataError, match=rf"x\.json: {found}"):
            read_json(tmp_path / "x.json", "noise", "c", "d")
    assert read_json(tmp_path / "x.json", "noise", "a") == {"b": 1, "a": 2}

    np.savez(tmp_path / "a.npz", a=np.arange(3), b=np.ones(2))
    first, second = read_arrays(tmp_path / "a.npz", "noise", "b", "a")
    assert first.tolist() == [1.0, 1.0] and second.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match=r"a\.npz: expected the array 'c' written by the noise step, found \['a', "
                                        r"'b'\]$"):
        read_arrays(tmp_path / "a.npz", "noise", "a", "c")
    np.savez_compressed(tmp_path / "z.npz", a=np.arange(100_000))
    damaged = bytearray((tmp_path / "z.npz").read_bytes())
    damaged[200:400] = bytes(b ^ 0xFF for b in damaged[200:400])  # inside the compressed data: a zlib error
    (tmp_path / "z.npz").write_bytes(bytes(damaged))
    (tmp_path / "empty.npz").write_bytes(b"")  # numpy: EOFError
    for name in ("z.npz", "empty.npz"):
        with pytest.raises(DataError, match=rf"{name}: expected an \.npz file written by the noise step, found "
                                            r"unreadable data \("):
            read_arrays(tmp_path / name, "noise", "a")
    with open(tmp_path / "train.npz", "wb") as fh:  # an .npy file: np.load returns a bare array, not an archive
        np.save(fh, np.arange(3))
    with pytest.raises(DataError, match=r"train\.npz: expected an \.npz file written by the ingest step, found a "
                                        r"single \.npy array$"):
        read_arrays(tmp_path / "train.npz", "ingest", "labels")

    check_labels(tmp_path, np.array([0, 3, 1], dtype=np.uint8), 3, what="image")  # unsigned: class indices too
    floats = r"integer class indices as labels, found float64 labels with values like "
    refused = [(np.int64(2), 1, r"labels of shape \[N\] \(one class index per image\), found shape \[\]$"),
               (np.array([True, False]), 2, r"integer class indices as labels, found bool labels with values like "
                                              r"True, False$"),
               (np.array([1.0, 2.0, 0.5, np.inf, 3.0]), 5, floats + r"0\.5, inf$"),
               (np.array([1.0, 1.0, 1.0, 2.0, 3.0, 4.0]), 6, floats + r"1\.0, 2\.0, 3\.0$"),
               (np.zeros(0), 0, floats + r"none \(no labels\)$")]
    for labels, count, found in refused:
        with pytest.raises(DataError, match=rf"^{re.escape(str(tmp_path))}: expected {found}"):
            check_labels(tmp_path, labels, count, what="image")


def test_save_model_writes_what_load_model_reads_and_a_file_without_normalisation_is_refused(tmp_path):
    from components.common.model_file import save_model  # noqa: PLC0415

    meta = {"num_classes": 3, "in_channels": 1, "image_size": 28, "normalisation": {"mean": [0.5], "std": [0.2]}}
    net = seeded_network("small_cnn", meta, 0)
    save_model(tmp_path / "m.pt", net.state_dict(), network="small_cnn", meta=meta, extra={"epochs": 2})
    loaded, saved = load_model(tmp_path / "m.pt")
    assert {k: saved[k] for k in (*meta, "format", "network", "epochs")} == {**meta, "format": 1,
                                                                              "network": "small_cnn", "epochs": 2}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["normalisation"]
    torch.save(payload, tmp_path / "m.pt")
    with pytest.raises(DataError, match=r"m\.pt: expected a model file with network, num_classes, in_channels, "
                                        r"image_size, normalisation and state_dict, found one without "
                                        r"'normalisation'$"):
        load_model(tmp_path / "m.pt")


def test_an_image_size_the_network_does_not_take_names_the_setting_that_sets_it():
    """baseline failed with small_cnn's own words, 'image_size: expected a multiple of 4', which named no setting:
    a user with 50x50 images had set nothing called image_size but ingest's."""
    from components.common.model_file import seeded_network  # noqa: PLC0415

    with pytest.raises(ValueError) as caught:
        seeded_network("small_cnn", {"num_classes": 2, "in_channels": 1, "image_size": 50}, 0)
    assert str(caught.value) == ("ingest.image_size: expected a multiple of 4 (e.g. 28 or 32), found 50: small_cnn "
                                 "takes only images of such a side, and the ingested images are 50x50; set "
                                 "ingest.image_size to one (ingest resizes and centre-crops) and run ingest again")
    with pytest.raises(ValueError, match="Unknown network 'vgg'"):  # other refusals are the network's own
        seeded_network("vgg", {"num_classes": 2, "in_channels": 1, "image_size": 48}, 0)

