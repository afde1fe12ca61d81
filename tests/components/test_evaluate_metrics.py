"""The figures evaluate writes for each model where the test set lacks a class (an image folder whose rare class has
no test image), and its refusal of probabilities that are not numbers (a diverged network)."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from components import evaluate
from components.common.errors import DataError
from components.evaluate import EvaluateConfig, classification_metrics
from tests.components.test_release_inputs import build_inputs


def test_a_class_neither_in_the_test_labels_nor_predicted_has_no_f1_and_no_accuracy():
    """A perfect classifier on a test set without class 3: macro-F1 1.0 (sklearn's, over the classes present), not
    0.75, and no per-class accuracy for class 3 (None, JSON null), not a 0 that reads as every image missed."""
    labels = np.array([0, 0, 1, 2, 2, 2])
    probs = np.eye(4)[labels] * 0.7 + 0.075
    m = classification_metrics(probs, labels, 4, bins=10)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    assert m["per_class_accuracy"] == [1.0, 1.0, 1.0, None]
    assert m["macro_f1"] == f1_score(labels, probs.argmax(1), average="macro")


def test_a_class_predicted_but_absent_from_the_labels_counts_as_f1_zero_and_has_no_accuracy():
    """Class 2 has no test image but one prediction: a wrong one, so F1 0 in the mean (as sklearn's); its share
    of test images predicted right is undefined (None). Class 3, in neither, is left out."""
    labels = np.array([0, 0, 1, 1])
    predicted = np.array([0, 2, 1, 1])
    probs = np.eye(4)[predicted] * 0.7 + 0.075
    m = classification_metrics(probs, labels, 4, bins=10)
    assert m["per_class_accuracy"] == [0.5, 1.0, None, None]
    # class 0: precision 1, recall 1/2; class 1: precision 1, recall 1; class 2: F1 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))


def test_with_every_class_in_the_test_labels_the_figures_are_those_of_every_class():
    """Every class present (Fashion-MNIST's test set): macro-F1 is sklearn's over all of them and every class has
    its accuracy, as before classes could be absent."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.arange(5), rng.integers(0, 5, 95)]
    probs = rng.dirichlet(np.ones(5), size=100)
    m = classification_metrics(probs, labels, 5, bins=15)
    predicted = probs.argmax(1)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro", labels=range(5)))
    assert m["per_class_accuracy"] == pytest.approx([(predicted[labels == c] == c).mean() for c in range(5)])


@pytest.fixture
def inputs(tmp_path):
    """The tiny hand-made outputs of ingest, noise, baseline and mlnt (4 classes) that evaluate reads."""
    return build_inputs(tmp_path)


def test_metrics_json_writes_null_for_a_class_without_test_images(inputs, tmp_path, monkeypatch):
    """A test set without class 3 (only its test.npz changed): every model's ``per_class_accuracy`` holds null for
    it, and its macro-F1 is sklearn's over the classes present in its labels or predictions."""
    test = inputs["ingest"] / "test.npz"
    with np.load(test) as arrays:
        keep = arrays["labels"] != 3
        images, labels = arrays["images"][keep], arrays["labels"][keep]
    np.savez(test, images=images, labels=labels)
    predictions, real_predict = {}, evaluate.predict

    def predict(net, data, **kwargs):
        probs = real_predict(net, data, **kwargs)
        predictions[kwargs.get("desc")] = probs.numpy().argmax(1)
        return probs

    monkeypatch.setattr(evaluate, "predict", predict)
    evaluate.run(EvaluateConfig(workers=0), **inputs, out=tmp_path / "evaluate")
    written = (tmp_path / "evaluate" / "metrics.json").read_text()
    metrics = json.loads(written)
    assert written.count("null") >= 4  # one per model, strict JSON
    for name in ("baseline", "baseline_best_epoch", "student", "teacher"):
        predicted = predictions[f"evaluate {name} on the test set"]
        assert metrics[name]["per_class_accuracy"][3] is None, name
        assert all(isinstance(a, float) for a in metrics[name]["per_class_accuracy"][:3]), name
        assert metrics[name]["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro")), name


def _corrupt_predictions(monkeypatch, desc: str, rows: list[int], value: float = float("nan")) -> None:
    """``evaluate.predict`` as it is, but with ``rows`` of the pass named ``desc`` set to ``value``."""
    real_predict = evaluate.predict

    def predict(net, data, **kwargs):
        probs = real_predict(net, data, **kwargs)
        if kwargs.get("desc") != desc:
            return probs
        probs = probs.clone()
        probs[rows] = value
        return probs

    monkeypatch.setattr(evaluate, "predict", predict)


def test_nan_probabilities_on_the_test_set_are_refused_naming_the_model_file(inputs, tmp_path, monkeypatch):
    """A student whose probabilities are NaN on 3 test images (argmax would read them as class 0, and the ECE be
    NaN, which strict JSON refuses): a DataError naming its file and the count, and nothing written."""
    _corrupt_predictions(monkeypatch, "evaluate student on the test set", [0, 5, 7])
    with pytest.raises(DataError) as err:
        evaluate.run(EvaluateConfig(workers=0), **inputs, out=tmp_path / "evaluate")
    assert str(err.value) == (
        f"{inputs['mlnt'] / 'student.pt'}: expected finite probabilities from the student model on the test set, "
        "found NaN or inf in 3 of its 40 rows (a diverged network?): train it again")
    assert not (tmp_path / "evaluate" / "metrics.json").exists()


def test_infinite_probabilities_of_the_teacher_on_the_training_rows_are_refused(inputs, tmp_path, monkeypatch):
    """The label-issue list ranks the training rows by the teacher's probabilities: a row of inf there is refused
    too, naming the teacher's file, and nothing is written."""
    _corrupt_predictions(monkeypatch, "evaluate: the teacher on the training labels", [2], float("inf"))
    with pytest.raises(DataError) as err:
        evaluate.run(EvaluateConfig(workers=0), **inputs, out=tmp_path / "evaluate")
    assert str(err.value) == (
        f"{inputs['mlnt'] / 'teacher.pt'}: expected finite probabilities from the teacher model on the training "
        "rows, found NaN or inf in 1 of its 96 rows (a diverged network?): train it again")
    assert not (tmp_path / "evaluate" / "metrics.json").exists()
