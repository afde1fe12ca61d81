"""The Clothing1M recipe through the real `dvc repro`, shrunk to a fixture in the published layout (real JPEGs of
varied sizes, the key lists and label files, a few hundred images): ingest writes WebDataset shards, every later
step streams them, model selection runs on the clean validation keys, and the gate releases an ONNX model."""

import csv
import json
import shutil

import pytest
import yaml

from benchmarks.fixtures import write_clothing1m
from components.formats.clothing1m import CLASSES
from tests.test_pipeline_e2e import ROOT, commit_all, copy_repository, sh

TRAIN, PER_SPLIT = 320, 64


def shrunk_recipe(repo) -> None:
    """recipes/clothing1m.yaml with only what the fixture and two CPU cores need changed: 32-pixel crops of
    36-pixel images, the small CNN from random weights (no ImageNet weights offline), a learning rate and a few
    epochs that let it learn in seconds, validation every 4 steps, and the meta step in head mode (exact mode, the
    recipe's, is a GPU's work; tests/model checks it); every other setting is the recipe's."""
    params = yaml.safe_load((ROOT / "recipes" / "clothing1m.yaml").read_text())
    params["ingest"].update(path="fixture/clothing1m", image_size=32, resize=36, shard_size=64)
    params["baseline"].update(network="small_cnn", pretrained=False, epochs=4, lr=0.02, lr_milestones=[3.0],
                              eval_every=4, checkpoint_every=3, workers=2, progress=True)
    params["mlnt"].update(pretrained=False, epochs=3, lr=0.02, eval_every=4, checkpoint_every=3, workers=2,
                          ramp_start=0.3, ramp_end=1.5, neighbours=5, mode="head", progress=True)
    for section in ("evaluate", "export"):
        params[section].update(workers=0)
    params["export"].update(parity_images=32)
    params["gate"].update(min_accuracy=0.5)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repository(tmp_path_factory.mktemp("clothing1m") / "repo")
    write_clothing1m(repo / "fixture" / "clothing1m", per_split=PER_SPLIT, train=TRAIN, noise_rate=0.3)
    shrunk_recipe(repo)
    commit_all(repo)
    return repo


def test_dvc_repro_runs_the_shrunk_recipe_from_shards_to_a_released_model(repo):
    done = sh(repo, "dvc", "repro")
    art = repo / "artifacts"
    shards = sorted(p.name for p in (art / "ingest" / "shards").glob("*.tar"))
    assert shards == ["test-00000.tar", "train-00000.tar", "train-00001.tar", "train-00002.tar", "train-00003.tar",
                      "train-00004.tar", "val-00000.tar"]
    assert not (art / "ingest" / "train.npz").exists()  # nothing decoded is stored
    manifest = json.loads((art / "ingest" / "manifest.json").read_text())
    assert manifest["format"] == "shards" and manifest["class_names"] == list(CLASSES)
    assert manifest["counts"] == {"train": TRAIN, "val": PER_SPLIT, "test": PER_SPLIT}
    summary = json.loads((art / "noise" / "summary.json").read_text())
    assert (summary["kind"], summary["val"], summary["val_source"]) == ("human", PER_SPLIT, "the dataset's val split")
    assert summary["clean_label_known_train"] == TRAIN // 2 and 0.15 < summary["realised_rate_train"] < 0.45
    # selection on the clean validation keys: the validations saw all of them
    evaluations = json.loads((art / "mlnt" / "evaluations.json").read_text())
    assert evaluations and all("val_accuracy_student" in e for e in evaluations)
    history = json.loads((art / "baseline" / "history.json").read_text())
    assert all(record["loader_images_per_s_per_worker"] > 0 for record in history)  # the loader's throughput
    with open(art / "evaluate" / "label_issues.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == TRAIN and rows[0]["key"].startswith("images/") and rows[0]["key"].endswith(".jpg")
    assert {r["given_class"] for r in rows} <= set(CLASSES) and rows[0]["suggested_class"] in CLASSES
    metrics = json.loads((art / "evaluate" / "metrics.json").read_text())
    assert metrics["class_names"] == list(CLASSES) and metrics["label_issues"]["rows_with_clean_label"] == TRAIN // 2
    with open(art / "evaluate" / "confusion_teacher.csv") as fh:
        assert {r["actual"] for r in csv.DictReader(fh)} <= set(CLASSES)
    card = json.loads((art / "export" / "model_card.json").read_text())
    assert card["class_names"] == list(CLASSES) and card["input"]["shape"] == ["batch", 3, 32, 32]
    assert card["input"]["normalisation"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert card["parity"]["passed"]
    decision = json.loads((art / "gate" / "decision.json").read_text())
    assert decision["passed"] is True, decision
    assert (repo / "releases" / "clothing1m" / "latest" / "model.onnx").is_file()  # the recipe's own registry
    log = done.stdout + done.stderr
    assert f"ingest train: {TRAIN}/{TRAIN} images" in log  # progress as whole lines in a log...
    assert "\r" not in log  # ...never carriage-return redraws


def test_training_killed_in_the_middle_of_an_epoch_resumes_to_the_same_weights(repo, tmp_path):
    """SIGKILL (tests/reliability/crash.py) right after the checkpoint of step 3, then at the 5th optimizer step of
    the resumed run: 10 steps an epoch, so both resumes start mid-epoch, with the loader's worker processes killed
    with their parent. The weights end bitwise equal to those of the uninterrupted `dvc repro`."""
    from tests.reliability.crash import KILLED, run_step  # noqa: PLC0415 - starts a forkserver
    from tests.reliability.test_crash_restart import differences  # noqa: PLC0415

    work = tmp_path / "ws"
    for name in ("params.yaml", "artifacts/ingest", "artifacts/noise"):
        copy = shutil.copytree if (repo / name).is_dir() else shutil.copy2
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        copy(repo / name, work / name)
    assert TRAIN // 32 == 10  # steps an epoch; checkpoints every 3 steps (the shrunk recipe)
    for point, resumed in (("checkpoint-saved:2", None), ("optimizer-step:5", "step 3)")):
        code, log = run_step(work, "baseline", kill=point)
        assert code == KILLED, log
        assert resumed is None or ("resumed from artifacts/baseline/checkpoints/" in log and resumed in log), log
    code, log = run_step(work, "baseline")
    assert code == 0 and "step 6)" in log, log
    for name in ("model.pt", "final.pt"):
        assert not differences(work / "artifacts/baseline" / name, repo / "artifacts/baseline" / name), name


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")  # subprocess, not image
@pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning")  # GPU settings
def test_the_kubeflow_pipeline_runs_the_recipe_locally(tmp_path, monkeypatch, capsys):
    """`python -m pipelines.run --local --params <recipe>`: the same steps through the KFP local runner."""
    from pipelines import run  # noqa: PLC0415 - imports kfp

    data = write_clothing1m(tmp_path / "clothing1m", per_split=PER_SPLIT, train=TRAIN, noise_rate=0.3)
    shrunk_recipe(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["--local", "--params", "params.yaml", "--data", str(data), "--root", "root", "--registry", "releases"]
    assert run.main(args) == 0, capsys.readouterr().err[-3000:]
    latest = tmp_path / "releases" / "latest"
    card = json.loads((latest / "model_card.json").read_text())
    assert card["class_names"] == list(CLASSES) and json.loads((latest / "decision.json").read_text())["passed"]
    (run_dir,) = [p for p in (tmp_path / "root").iterdir() if p.name != "checkpoints"]
    assert sorted(p.name for p in (run_dir / "ingest").rglob("*.tar"))[0] == "test-00000.tar"
