"""What evaluate scored is what export releases: evaluate records the sha256 of each model file it scored, export
refuses a model file evaluate did not score, and export checks evaluate's metrics and the validation accuracies it
chooses by before any expensive work (calibration, the ONNX export)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from components import evaluate, export
from components.common.artifacts import sha256_file
from components.common.errors import DataError
from components.common.model_file import save_model
from components.common.splits import load_split
from model.networks import build_network
from tests.components.conftest import write_manifest

MODELS = {"baseline": "baseline/final.pt", "baseline_best_epoch": "baseline/model.pt", "student": "mlnt/student.pt",
          "teacher": "mlnt/teacher.pt"}


def _images(rng, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8x8 grey images whose class ``c`` lights rows ``2c`` and ``2c + 1``."""
    labels = rng.integers(0, k, n)
    images = rng.integers(0, 60, (n, 8, 8, 1)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c:2 * c + 2, :, 0] = 250
    return images, labels.astype(np.int64)


def build_inputs(root: Path, *, k: int = 4, base_val: float = 0.8, teacher_val: float = 0.9) -> dict[str, Path]:
    """The outputs of ingest, noise, baseline and mlnt, tiny and hand-made (untrained networks): the folders
    evaluate and export read."""
    rng = np.random.default_rng(0)
    folders = {step: root / step for step in ("ingest", "noise", "baseline", "mlnt")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    (train_x, train_y), (test_x, test_y) = _images(rng, 120, k), _images(rng, 40, k)
    np.savez(folders["ingest"] / "train.npz", images=train_x, labels=train_y)
    np.savez(folders["ingest"] / "test.npz", images=test_x, labels=test_y)
    write_manifest(folders["ingest"], [f"c{i}" for i in range(k)], {"train": 120, "test": 40},
                   dataset="fashion-mnist", inputs_sha256={"train": "0"})
    is_val = np.arange(120) < 24
    np.savez(folders["noise"] / "labels.npz", index=np.arange(120), label=train_y, clean_label=train_y,
             is_noisy=np.zeros(120, bool), is_val=is_val)
    (folders["noise"] / "summary.json").write_text(json.dumps({"val_source": "held out", "val_clean": True,
                                                               "val": 24}))
    _, _, meta = load_split(folders["ingest"], folders["noise"], workers=0)
    for seed, file in enumerate(MODELS.values()):
        torch.manual_seed(seed)
        net = build_network("small_cnn", k, in_channels=1, image_size=8)
        save_model(root / file, net.state_dict(), network="small_cnn", meta=meta)
    (folders["baseline"] / "metrics.json").write_text(json.dumps({"val_accuracy": base_val}))
    (folders["mlnt"] / "metrics.json").write_text(json.dumps({"val_accuracy": teacher_val}))
    return folders


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The tiny inputs, evaluated once (``root/evaluate``)."""
    root = tmp_path_factory.mktemp("evaluated")
    folders = build_inputs(root)
    evaluate.run(evaluate.EvaluateConfig(workers=0), **folders, out=root / "evaluate")
    return root


@pytest.fixture
def work(evaluated, tmp_path):
    """A copy of ``evaluated`` to change."""
    return Path(shutil.copytree(evaluated, tmp_path / "work"))


def folders_of(root: Path) -> dict[str, Path]:
    return {step: root / step for step in ("ingest", "noise", "baseline", "mlnt", "evaluate")}


def edit_metrics(root: Path, change) -> None:
    path = root / "evaluate" / "metrics.json"
    metrics = json.loads(path.read_text())
    change(metrics)
    path.write_text(json.dumps(metrics))


@pytest.fixture
def no_expensive_work(monkeypatch):
    """Calibration and the ONNX export fail the test if they run."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("expensive work ran before the inputs were checked")

    monkeypatch.setattr(export, "calibrate", refuse)
    monkeypatch.setattr(export, "to_onnx", refuse)


def test_evaluate_records_the_sha256_of_every_model_file_it_scored(evaluated):
    metrics = json.loads((evaluated / "evaluate" / "metrics.json").read_text())
    for name, file in MODELS.items():
        assert metrics[name]["model_sha256"] == sha256_file(evaluated / file), name


def test_export_refuses_a_model_file_evaluate_did_not_score(work, no_expensive_work):
    """mlnt run again by hand and evaluate not: the card would carry the old teacher's accuracy."""
    teacher = work / "mlnt" / "teacher.pt"
    scored = sha256_file(teacher)
    shutil.copy(work / "mlnt" / "student.pt", teacher)
    with pytest.raises(DataError) as err:
        export.run(export.ExportConfig(workers=0), **folders_of(work), out=work / "export")
    message = str(err.value)
    assert message.startswith(f"{teacher}: expected the model file evaluate scored (sha256 {scored}, "
                              f"{work / 'evaluate' / 'metrics.json'} teacher.model_sha256), found sha256 "
                              f"{sha256_file(teacher)}")
    assert "python -m components.evaluate" in message
    assert not (work / "export").exists() or not any((work / "export").iterdir())


def test_the_card_names_the_model_file_evaluate_scored_and_older_metrics_still_export(work):
    """The card records the sha256 of the model file (``model_sha256``, outside its metrics); metrics written before
    evaluate recorded the digests are exported as before, unchecked, as labels.npz from before its digest is read."""
    card = export.run(export.ExportConfig(workers=0, calibrate=False), **folders_of(work), out=work / "export")
    assert card["model"] == "teacher" and card["model_sha256"] == sha256_file(work / "mlnt" / "teacher.pt")
    assert "model_sha256" not in card["metrics"]
    edit_metrics(work, lambda m: [m[name].pop("model_sha256") for name in MODELS])
    card = export.run(export.ExportConfig(workers=0, calibrate=False), **folders_of(work), out=work / "export")
    assert card["model_sha256"] == sha256_file(work / "mlnt" / "teacher.pt")


@pytest.mark.parametrize(("change", "key", "found"), [
    (lambda m: m.pop("teacher"), "'teacher'", "found keys ["),
    (lambda m: m.update(teacher=[0.5]), "teacher as a JSON object", "found list [0.5]"),
    (lambda m: m.update(validation=["held out"]), "validation as a JSON object", "found list ['held out']"),
    (lambda m: m.update(test="clean"), "test as a JSON object", "found str 'clean'"),
    (lambda m: m.update(ece_bins="15"), "ece_bins as a JSON integer", "found str '15'"),
    (lambda m: m.update(label_issues=[]), "label_issues as a JSON object", "found list []"),
])
def test_malformed_evaluate_metrics_are_refused_before_any_expensive_work(work, no_expensive_work, change, key,
                                                                          found):
    edit_metrics(work, change)
    with pytest.raises(DataError) as err:
        export.run(export.ExportConfig(workers=0), **folders_of(work), out=work / "export")
    message = str(err.value)
    assert message.startswith(f"{work / 'evaluate' / 'metrics.json'}: expected ") and key in message
    assert found in message, message


def test_older_metrics_without_the_chosen_baseline_are_refused_before_any_expensive_work(work, no_expensive_work):
    """The CE baseline's best epoch wins on validation, and evaluate's metrics predate ``baseline_best_epoch``: a
    one-line error naming the file and the key, not a KeyError after calibration and the ONNX export."""
    (work / "baseline" / "metrics.json").write_text(json.dumps({"val_accuracy": 0.95}))
    edit_metrics(work, lambda m: m.pop("baseline_best_epoch"))
    with pytest.raises(DataError, match=r"metrics.json: expected the key 'baseline_best_epoch' written by the "
                                        r"evaluate step, found keys \["):
        export.run(export.ExportConfig(workers=0), **folders_of(work), out=work / "export")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "null", '"0.8"', "1.5", "-0.1", "true"])
@pytest.mark.parametrize("side", ["baseline", "mlnt"])
def test_choose_refuses_a_validation_accuracy_that_is_no_fraction(tmp_path, bad, side):
    """A NaN won the comparison, and null or a string gave a TypeError naming neither file nor key."""
    for folder in ("baseline", "mlnt"):
        (tmp_path / folder).mkdir()
        value = bad if folder == side else "0.85"
        (tmp_path / folder / "metrics.json").write_text(f'{{"val_accuracy": {value}}}')
    path = tmp_path / side / "metrics.json"
    with pytest.raises(DataError) as err:
        export.choose(tmp_path / "baseline", tmp_path / "mlnt")
    assert str(err.value).startswith(f"{path}: expected val_accuracy as a finite number in [0, 1] written by the "
                                     f"{side} step, found ")
