"""The real `dvc repro` on a tiny configuration in a temporary copy of the repository: every stage runs, the
gate releases an ONNX model, a second repro reruns only the gate (which finds the model the champion already and
releases nothing), and a killed training stage resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from components.common.steps import STEPS
from tests.components.conftest import make_fashion_mnist

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}


def sh(repo: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=repo, env=ENV, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise AssertionError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def tiny_params(repo: Path, **changes) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(path="fixture/fashion-mnist")
    params["validate"].update(class_balance_ratio=10.0)
    params["noise"].update(train_size=0, val_fraction=0.2, rate=0.3)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=2, batch_size=32, checkpoint_every=2, progress=False)
    params["mlnt"].update(neighbours=5, ramp_start=0.5, ramp_end=1.0)
    params["export"].update(parity_images=32)
    params["gate"].update(min_accuracy=0.3)
    for key, value in changes.items():
        section, name = key.split("__")
        params[section][name] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repository(repo: Path) -> Path:
    """The tracked files of this repository (without data/) in ``repo``."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in [*files, "dvc.yaml", "params.yaml"]:
        if (ROOT / name).is_file() and not name.startswith("data"):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    return repo


def commit_all(repo: Path) -> None:
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repository(tmp_path_factory.mktemp("pipeline") / "repo")
    make_fashion_mnist(repo / "fixture" / "fashion-mnist", train=300, test=60, mislabelled_test=0.2)
    tiny_params(repo)
    commit_all(repo)
    return repo


def test_dvc_repro_releases_a_gated_onnx_model(repo):
    done = sh(repo, "dvc", "repro")
    assert "\r" not in done.stdout + done.stderr  # progress as whole lines in a log, not carriage-return redraws
    art = repo / "artifacts"
    for path in ["ingest/train.npz", "ingest/manifest.json", "validate/report.json", "noise/labels.npz",
                 "noise/summary.json", "baseline/model.pt", "baseline/final.pt", "mlnt/teacher.pt",
                 "mlnt/student.pt", "evaluate/metrics.json", "evaluate/label_issues.csv",
                 "evaluate/confusion_teacher.csv", "export/model.onnx", "export/model_card.json",
                 "export/parity.json", "gate/decision.json"]:
        assert (art / path).is_file(), path
    metrics = json.loads((art / "evaluate/metrics.json").read_text())
    for model in ("baseline", "student", "teacher"):
        assert 0.0 <= metrics[model]["accuracy"] <= 1.0
    assert 0.0 <= metrics["baseline"]["best_epoch_accuracy"] <= 1.0
    decision = json.loads((art / "gate/decision.json").read_text())
    assert decision["passed"] is True and isinstance(decision["reasons"], list)
    assert decision["accuracy"] == metrics[decision["model"]]["accuracy"]
    release = repo / "releases" / "latest"
    card = json.loads((release / "model_card.json").read_text())
    assert card["parity"]["passed"] and (release / "model.onnx").is_file()
    plots = json.loads(sh(repo, "dvc", "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots["errors"]
    values = {plot: plots["data"][plot][0]["content"]["data"]["values"]
              for plot in ("validation_accuracy", "reliability_diagram", "label_issue_roc")}  # top-level plots
    assert all(values.values()), values
    for source in ("baseline/live/plots/metrics/val_accuracy_student", "mlnt/live/plots/metrics/val_accuracy_teacher"):
        assert source in json.dumps(values["validation_accuracy"]), source  # CE and MLNT on one chart
    for model in ("baseline", "student", "teacher"):
        assert f"calibration_{model}.csv" in json.dumps(values["reliability_diagram"]), model
    shown = sh(repo, "dvc", "metrics", "show").stdout
    assert "artifacts/evaluate/metrics.json" in shown and "teacher.accuracy" in shown
    sh(repo, "python", "-m", "components.common.report", "--output", "docs/pipeline-run.md")  # `make results`
    report = (repo / "docs" / "pipeline-run.md").read_text()
    assert f"| {metrics['teacher']['accuracy']:.4f} |" in report and "Decision: **pass**" in report


def test_second_repro_reruns_only_the_gate_which_releases_nothing_again(repo):
    """The gate judges against the registry, which DVC does not track, so its stage is always changed; the model is
    the champion already (the same ONNX bytes), so it passes with ``released`` false and no new version."""
    before = sorted(p.name for p in (repo / "releases").iterdir())
    done = sh(repo, "dvc", "repro")
    ran = [line.split("'")[1] for line in done.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["gate"], done.stdout
    for stage in STEPS[:-1]:
        assert f"Stage '{stage}' didn't change, skipping" in done.stdout, stage
    decision = json.loads((repo / "artifacts" / "gate" / "decision.json").read_text())
    assert decision["passed"] and decision["released"] is False
    assert f"gate: PASS: the champion already ({decision['version']}): nothing released again" in done.stdout
    assert sorted(p.name for p in (repo / "releases").iterdir()) == before


def test_enforced_gate_fails_an_impossible_bar_and_releases_nothing(repo):
    """A fifth of the fixture's test labels are wrong, so an accuracy of 0.9 is out of reach."""
    before = sorted(p.name for p in (repo / "releases").iterdir())
    done = sh(repo, "python", "-m", "components.gate", "--enforce", "--set", "gate.min_accuracy=0.9", check=False)
    assert done.returncode == 1 and "gate: FAIL: not released" in done.stdout
    assert sorted(p.name for p in (repo / "releases").iterdir()) == before


def test_killed_training_stage_resumes_from_its_checkpoint(repo):
    """Killed after its second save, the stage's rerun resumes from its checkpoint. The tiny settings are put back
    after, so the experiment that follows trains for as long as the first run did."""
    tiny_params(repo, mlnt__epochs=16)
    checkpoints = repo / "artifacts" / "mlnt" / "checkpoints"
    started = time.time()  # more epochs continue the finished run in its folder (the resume policy)
    process = subprocess.Popen(["dvc", "repro", "mlnt"], cwd=repo, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120

    def written():
        return [p for p in checkpoints.glob("*/round0*.pt") if p.stat().st_mtime > started]

    while time.monotonic() < deadline and len(written()) < 2:  # after the second save: round0 and its .prev
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)  # DVC and the training process with it
    process.wait()
    assert written(), "no checkpoint was written before the kill"
    assert not (repo / "artifacts/mlnt/teacher.pt").exists()  # DVC removed the old outputs; the stage never ended
    done = sh(repo, "dvc", "repro", "mlnt")
    assert "resumed from" in done.stdout + done.stderr
    assert json.loads((repo / "artifacts/mlnt/metrics.json").read_text())["epochs"] == 16
    tiny_params(repo)


def test_experiment_with_another_noise_rate(repo):
    """`dvc exp run -S` reruns from the noise stage on, and `dvc metrics diff` shows what changed. Last:
    it leaves the workspace at the experiment."""
    done = sh(repo, "dvc", "exp", "run", "-S", "noise.rate=0.6")
    assert "Stage 'ingest' didn't change, skipping" in done.stdout and "Running stage 'noise'" in done.stdout
    summary = json.loads((repo / "artifacts/noise/summary.json").read_text())
    assert summary["requested_rate"] == 0.6
    assert "noise.rate" in sh(repo, "dvc", "exp", "show", "--no-pager", "--csv").stdout
    assert "realised_rate_train" in sh(repo, "dvc", "metrics", "diff").stdout
