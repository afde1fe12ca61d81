"""A step run by hand on another step's outputs that do not belong together (a dataset ingested again under the
noise step's labels, a baseline model of another dataset, a damaged manifest) stops with an error that says what
to re-run, never trains on other images' labels; and a dataset with one class is refused at ingest."""

import json

import numpy as np
import pytest

from components.baseline import BaselineConfig
from components.baseline import run as baseline
from components.common.artifacts import MADE_FROM
from components.common.errors import DataError
from components.common.model_file import TRAINED_ON, check_trained_on, load_model, save_model
from components.common.splits import load_split, training_digest
from components.ingest import IngestConfig
from components.ingest import run as ingest
from components.mlnt import MlntStepConfig
from components.mlnt import run as mlnt
from components.noise import NoiseConfig
from components.noise import run as noise
from tests.components.conftest import make_fashion_mnist
from tests.components.formats_fixtures import write_image


@pytest.fixture
def made(tmp_path):
    """A tiny Fashion-MNIST ingested, and the noise step's labels drawn from it."""
    data = make_fashion_mnist(tmp_path / "fashion-mnist", train=200, test=40)
    ingest(IngestConfig(path=str(data)), out=tmp_path / "ingest")
    noise(NoiseConfig(train_size=0, rate=0.3), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    return tmp_path


def rewrite_labels(noise_dir, **changes):
    path = noise_dir / "labels.npz"
    with np.load(path) as data:
        arrays = {**dict(data), **changes}
    np.savez(path, **arrays)


def test_labels_drawn_from_another_ingest_are_refused(made):
    assert len(load_split(made / "ingest", made / "noise")[0]) > 0
    other = make_fashion_mnist(made / "other", train=200, test=40, seed=1)  # as many images, other labels
    ingest(IngestConfig(path=str(other)), out=made / "ingest")
    with pytest.raises(DataError) as err:
        load_split(made / "ingest", made / "noise")
    assert str(err.value) == (f"{made / 'noise' / 'labels.npz'}: expected labels drawn from the training set ingested "
                              f"now in {made / 'ingest'}, found labels the noise step drew from another ingest "
                              "(re-run the noise step)")


def test_the_same_dataset_ingested_again_keeps_its_labels(made):
    before = load_split(made / "ingest", made / "noise")[0]
    ingest(IngestConfig(path=str(made / "fashion-mnist")), out=made / "ingest")
    assert (load_split(made / "ingest", made / "noise")[0].labels == before.labels).all()


def test_labels_from_before_the_digest_are_read_as_before(made):
    with np.load(made / "noise" / "labels.npz") as data:
        arrays = {k: data[k] for k in data.files if k != MADE_FROM}
    np.savez(made / "noise" / "labels.npz", **arrays)
    assert len(load_split(made / "ingest", made / "noise")[0]) > 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda n: {"label": np.full(n, 12)}, "expected labels of the 10 classes of {ingest}/manifest.json, 0 to 9, found "
                                          "12 (re-run the noise step)"),
    (lambda n: {"label": np.full(n, 0.5, dtype=np.float32)}, "expected integer class indices as label, found "
                                                             "float32 label with values like 0.5"),
    (lambda n: {"is_val": np.zeros(n - 1, dtype=bool)}, "expected is_val as one bool per row of index ({n}), found "
                                                        "bool of shape [{m}] (re-run the noise step)"),
    (lambda n: {"label": np.zeros(n + 1, dtype=np.int64)}, "expected one label per row of index ({n} label), found "
                                                           "{p} label"),
])
def test_a_damaged_labels_file_names_what_it_expected(made, change, message):
    n = int(np.load(made / "noise" / "labels.npz")["index"].size)
    rewrite_labels(made / "noise", **change(n))
    with pytest.raises(DataError) as err:
        load_split(made / "ingest", made / "noise")
    expected = message.format(ingest=made / "ingest", n=n, m=n - 1, p=n + 1)
    assert str(err.value) == f"{made / 'noise' / 'labels.npz'}: {expected}"


@pytest.mark.parametrize(("manifest", "message"), [
    ([], "expected the key 'dataset' written by the ingest step, found list"),
    ({"dataset": "x", "format": "arrays", "counts": {"train": 1}, "image_shape": [28, 28, 1]},
     "expected the key 'class_names' written by the ingest step, found keys ['counts', 'dataset', 'format', "
     "'image_shape']"),
    ({"dataset": "x", "format": "arrays", "class_names": "ab", "counts": {}, "image_shape": [28, 28, 1]},
     "expected class_names as a JSON array written by the ingest step, found str 'ab'"),
])
def test_a_manifest_of_another_shape_is_an_error_naming_the_key(made, manifest, message):
    (made / "ingest" / "manifest.json").write_text(json.dumps(manifest))
    for step in (lambda: noise(NoiseConfig(), ingest=made / "ingest", out=made / "noise2"),
                 lambda: load_split(made / "ingest", made / "noise")):
        with pytest.raises(DataError) as err:
            step()
        assert str(err.value) == f"{made / 'ingest' / 'manifest.json'}: {message}"


def test_mlnt_refuses_a_baseline_model_of_another_dataset(made):
    meta = {"num_classes": 10, "in_channels": 3, "image_size": 8, "normalisation": {"mean": [0.5] * 3,
                                                                                     "std": [0.2] * 3}}
    from model.networks import build_network  # noqa: PLC0415

    net = build_network("small_cnn", 10, in_channels=3, image_size=8)
    save_model(made / "baseline" / "model.pt", net.state_dict(), network="small_cnn", meta=meta)
    with pytest.raises(DataError) as err:
        mlnt(MlntStepConfig(epochs=2, ramp_start=1, ramp_end=1, progress=False), ingest=made / "ingest",
             noise=made / "noise", baseline=made / "baseline", out=made / "mlnt")
    assert str(err.value).startswith(f"{made / 'baseline' / 'model.pt'}: expected a model for the dataset of "
                                     f"{made / 'ingest' / 'manifest.json'} (10 classes, 1 channel, image size 28), "
                                     "found one with 3 channels, image size 8")
    assert not (made / "mlnt" / "checkpoints").exists()  # refused before anything was written


def test_mlnt_refuses_a_baseline_trained_on_other_noisy_labels(made):
    """A baseline trained before the noise step was re-run has seen the rows mlnt now validates on: its model.pt
    records the digest of its training inputs, and mlnt refuses it when its own inputs differ."""
    baseline(BaselineConfig(epochs=1, progress=False, device="cpu"), ingest=made / "ingest", noise=made / "noise",
             out=made / "baseline")
    _, saved = load_model(made / "baseline" / "model.pt")
    assert saved[TRAINED_ON] == training_digest(made / "ingest", made / "noise")
    noise(NoiseConfig(train_size=0, rate=0.6, seed=1), ingest=made / "ingest", out=made / "noise")
    with pytest.raises(DataError) as err:
        mlnt(MlntStepConfig(epochs=2, ramp_start=1, ramp_end=1, progress=False, warm_start=True),
             ingest=made / "ingest", noise=made / "noise", baseline=made / "baseline", out=made / "mlnt")
    now = training_digest(made / "ingest", made / "noise")
    assert str(err.value) == (f"{made / 'baseline' / 'model.pt'}: expected a model trained on the inputs in "
                              f"{made / 'ingest'} and {made / 'noise'} (sha256 {now[:16]}), found one trained on "
                              f"others (sha256 {saved[TRAINED_ON][:16]}) (re-run the baseline step)")
    assert not (made / "mlnt" / "checkpoints").exists()  # refused before anything was written


def test_a_model_from_before_the_digest_is_read_as_before(made):
    """As labels.npz from before its digest: a model.pt that records no training inputs is not checked for them."""
    check_trained_on(made / "model.pt", {"network": "small_cnn"}, training_digest(made / "ingest", made / "noise"),
                     inputs="the inputs")


def test_a_dataset_of_one_class_is_refused_at_ingest(tmp_path):
    for n in range(6):
        write_image(tmp_path / "photos" / "only" / f"{n}.png", (8, 8), (200, 0, 0))
    with pytest.raises(DataError) as err:
        ingest(IngestConfig(dataset="imagefolder", path=str(tmp_path / "photos")), out=tmp_path / "ingest")
    assert str(err.value) == f"{tmp_path / 'photos'}: expected at least 2 classes to tell apart, found 1: 'only'"
    assert not (tmp_path / "ingest" / "manifest.json").exists()


def test_evaluate_refuses_models_trained_on_other_noisy_labels(made):
    """mlnt's model files record their training inputs as the baseline's do, and evaluate checks all four: a model
    trained before the noise step was re-run would be scored, and its label issues listed, against labels it never
    saw, and the gate would compare MLNT with a baseline of other data."""
    from components.evaluate import EvaluateConfig  # noqa: PLC0415
    from components.evaluate import run as evaluate  # noqa: PLC0415

    baseline(BaselineConfig(epochs=1, progress=False, device="cpu"), ingest=made / "ingest", noise=made / "noise",
             out=made / "baseline")
    mlnt(MlntStepConfig(epochs=2, ramp_start=1, ramp_end=1, progress=False, device="cpu"), ingest=made / "ingest",
         noise=made / "noise", baseline=made / "baseline", out=made / "mlnt")
    before = training_digest(made / "ingest", made / "noise")
    for name in ("student.pt", "teacher.pt"):
        assert load_model(made / "mlnt" / name)[1][TRAINED_ON] == before
    kept = (made / "mlnt" / "teacher.pt").read_bytes()
    noise(NoiseConfig(train_size=0, rate=0.6, seed=1), ingest=made / "ingest", out=made / "noise")
    with pytest.raises(DataError) as err:
        evaluate(EvaluateConfig(), ingest=made / "ingest", noise=made / "noise", baseline=made / "baseline",
                 mlnt=made / "mlnt", out=made / "evaluate")
    now = training_digest(made / "ingest", made / "noise")
    assert str(err.value) == (f"{made / 'baseline' / 'final.pt'}: expected a model trained on the inputs in "
                              f"{made / 'ingest'} and {made / 'noise'} (sha256 {now[:16]}), found one trained on "
                              f"others (sha256 {before[:16]}) (re-run the baseline step)")
    assert not (made / "evaluate" / "metrics.json").exists()
    baseline(BaselineConfig(epochs=1, progress=False, device="cpu"), ingest=made / "ingest", noise=made / "noise",
             out=made / "baseline")
    with pytest.raises(DataError) as err:
        evaluate(EvaluateConfig(), ingest=made / "ingest", noise=made / "noise", baseline=made / "baseline",
                 mlnt=made / "mlnt", out=made / "evaluate")
    assert str(err.value).startswith(f"{made / 'mlnt' / 'student.pt'}: expected a model trained on the inputs in ")
    assert str(err.value).endswith("(re-run the mlnt step)")
    assert (made / "mlnt" / "teacher.pt").read_bytes() == kept
