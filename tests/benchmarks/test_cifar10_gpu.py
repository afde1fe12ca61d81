"""The CIFAR-10 GPU script: its smoke run goes through every step on a CIFAR-format fixture; without data or a
GPU it stops with a message naming what is missing."""

import json

import pytest

from benchmarks.gpu import cifar10 as cifar10_gpu
from tests.components.formats_fixtures import write_cifar10


def test_smoke_run_reports_every_setting(tmp_path):
    data = write_cifar10(tmp_path / "cifar", per_batch=20)
    output = tmp_path / "docs" / "cifar10-gpu.md"
    args = ["--data", str(data), "--smoke", "--settings", "symmetric:0.5,asymmetric:0.4", "--work",
            str(tmp_path / "work"), "--output", str(output)]
    assert cifar10_gpu.main(args) == 0
    results = json.loads(output.with_suffix(".json").read_text())
    assert [r["setting"] for r in results["records"]] == ["symmetric-50", "asymmetric-40"]
    assert results["records"][0]["config"]["baseline"]["network"] == "preact_resnet32"
    text = output.read_text()
    assert "**Smoke run**" in text and text.count("| symmetric-50 |") == 1
    # every setting runs MLNT's control: the same step and config with meta_weight 0 only
    record = results["records"][0]
    assert set(record["seconds"]) == {"baseline", "mlnt", "ema_control"}
    control = json.loads((tmp_path / "work" / "symmetric-50" / "ema_control" / "metrics.json").read_text())
    ours = json.loads((tmp_path / "work" / "symmetric-50" / "mlnt" / "metrics.json").read_text())
    assert (control["meta_weight"], ours["meta_weight"]) == (0.0, 0.4)
    assert {k: v for k, v in control.items() if k in ("mode", "rounds", "epochs", "steps")} == {
        k: v for k, v in ours.items() if k in ("mode", "rounds", "epochs", "steps")}
    gap = 100 * (record["mlnt_released"] - record["control_released"])
    assert f"| {gap:+.2f} |" in text.splitlines()[-2]


def test_published_setup_is_what_the_params_file_says():
    cfg = cifar10_gpu.configs(cifar10_gpu.PARAMS, "symmetric", 0.5, data=cifar10_gpu.Path("x"), smoke=False)
    b, m = cfg["baseline"], cfg["mlnt"]
    assert (b.network, b.lr, b.batch_size, b.weight_decay, b.epochs, b.lr_milestones) == (
        "preact_resnet32", 0.2, 128, 1e-4, 120, (80.0,))
    assert (m.mode, m.num_sets, m.fraction, m.neighbours, m.inner_lr, m.meta_weight, m.ramp_start, m.ramp_end) == (
        "exact", 10, 0.5, 10, 0.2, 0.4, 2.0, 20.0)
    assert (m.warm_start, m.eval_every, b.eval_every, m.ema_during_ramp, m.ema_after_ramp) == (
        False, 50, 50, 0.99, 0.999)
    assert cfg["noise"].val_fraction == 0.1 and cfg["noise"].train_size == 0
    assert not b.amp and not m.amp  # float32, as published: bfloat16 through the meta step is not yet measured


class IngestedError(Exception):
    """Raised in place of the noise step: what the test checks is done by then, and training is the smoke run's."""


def test_another_data_folder_is_ingested_again_not_taken_from_the_work_folder(tmp_path, monkeypatch):
    """A setting on a fixture, then one on other data with the same --work: the second ingests its own data (the
    ingest left by the first is of other data), and the same data again is not ingested twice."""
    def stop(config, *, ingest, out):
        raise IngestedError(ingest)

    monkeypatch.setattr(cifar10_gpu.noise, "run", stop)
    work = tmp_path / "work"

    def setting(data):
        with pytest.raises(IngestedError):
            cifar10_gpu.run_setting(cifar10_gpu.setting_configs(cifar10_gpu.PARAMS, "symmetric:0.5", data=data,
                                                                smoke=True)[0], work)
        return json.loads((work / "ingest" / "manifest.json").read_text())

    small, larger = write_cifar10(tmp_path / "small", per_batch=20), write_cifar10(tmp_path / "larger", per_batch=40)
    for data, per_batch in ((small, 20), (larger, 40)):
        manifest = setting(data)
        assert (manifest["source"], manifest["counts"]["train"]) == (str(data), 5 * per_batch)
    made = (work / "ingest" / "train.npz").stat().st_mtime_ns
    setting(larger)
    assert (work / "ingest" / "train.npz").stat().st_mtime_ns == made  # the same data again: taken, not remade


@pytest.mark.parametrize(("make_data", "args", "message"), [
    (False, [], "expected cifar-10-batches-py/ or cifar-10-python.tar.gz"),
    (True, ["--settings", "symmetric"], "expected kind:rate such as symmetric:0.5, found 'symmetric'"),
    # the second setting's typo is found before the first setting trains
    (True, ["--settings", "symmetric:0.5,asymetric:0.4"], "--settings: 'asymetric:0.4': "),
    (True, ["--settings", "symmetric:0.5, symmetric:1.5"], "--settings: 'symmetric:1.5': "),
])
def test_missing_data_or_bad_settings_are_named(tmp_path, capsys, monkeypatch, make_data, args, message):
    monkeypatch.setattr(cifar10_gpu, "run_setting", lambda cfg, work: pytest.fail("trained before every check"))
    data = write_cifar10(tmp_path / "cifar") if make_data else tmp_path / "none"
    assert cifar10_gpu.main(["--data", str(data), "--smoke", "--work", str(tmp_path / "w"), *args]) == 2
    assert message in capsys.readouterr().err


def test_the_report_is_written_after_each_setting(tmp_path, monkeypatch):
    """A failure in the second setting keeps the first setting's record (hours of GPU time) in the report."""
    record = {"setting": "symmetric-50", "realised_rate": 0.45, "seconds": {"baseline": 1.0}, "ce_last": 0.5,
              "ce_early": 0.6, "control_released": 0.7, "mlnt_released": 0.71, "mlnt_student": 0.69,
              "label_issues_f1": 0.8}
    outcomes = iter([record, RuntimeError("the GPU fell over")])

    def run_setting(cfg, work):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(cifar10_gpu, "run_setting", run_setting)
    output = tmp_path / "report.md"
    with pytest.raises(RuntimeError, match="fell over"):
        cifar10_gpu.main(["--data", str(write_cifar10(tmp_path / "cifar")), "--smoke", "--output", str(output),
                          "--settings", "symmetric:0.5,asymmetric:0.4", "--work", str(tmp_path / "w")])
    assert json.loads(output.with_suffix(".json").read_text())["records"] == [record]
    assert "| symmetric-50 | 45.0 % |" in output.read_text()


def test_without_a_gpu_the_full_run_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cifar10_gpu.torch.cuda, "is_available", lambda: False)
    data = write_cifar10(tmp_path / "cifar")
    assert cifar10_gpu.main(["--data", str(data), "--work", str(tmp_path / "w")]) == 2
    assert "expected a CUDA device for the published setup" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["file", "read-only"])
def test_an_unwritable_output_fails_before_any_training(tmp_path, capsys, monkeypatch, where):
    """The report is written after each setting has trained (hours on a GPU): an --output folder that cannot be
    made or written (the image's /app/docs: neither there nor writable) is named before the first step."""
    monkeypatch.setattr(cifar10_gpu, "run_setting", lambda cfg, work: pytest.fail("trained before checking --output"))
    blocker = tmp_path / "blocker"
    blocker.write_text("")  # a file where the folder should be: fails as root too
    if where == "read-only":  # as for user 10001 in the image's root-owned /app (chmod binds no root: a fake)
        def refused(**kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(cifar10_gpu.tempfile, "TemporaryFile", refused)
        folder, output = tmp_path / "docs", tmp_path / "docs" / "r.md"
        reason = "Permission denied"
    else:
        folder, output = blocker / "docs", blocker / "docs" / "r.md"
        reason = "Not a directory"
    data = write_cifar10(tmp_path / "cifar", per_batch=20)
    assert cifar10_gpu.main(["--data", str(data), "--smoke", "--work", str(tmp_path / "w"), "--output",
                             str(output)]) == 2
    assert capsys.readouterr().err == (f"error: benchmarks.gpu.cifar10: --output: expected a folder {folder} that "
                                       f"can be made and written for r.md and r.json, found: {reason}\n")
