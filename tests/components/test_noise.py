import io
import json
import re

import numpy as np
import pytest

from components.common.config import ConfigError, as_record
from components.formats.idx import FASHION_MNIST_CLASSES
from components.ingest import IngestConfig
from components.ingest import run as ingest
from components.noise import NoiseConfig, corrupt, main, run, transition_matrix


def binomial_bound(p, n, sigmas=5.0):
    return sigmas * np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize(("kind", "rate", "expected"), [("symmetric", 0.5, 0.5 * 9 / 10),
                                                         ("symmetric", 0.8, 0.8 * 9 / 10),
                                                         ("uniform_other", 0.4, 0.4), ("none", 0.7, 0.0)])
def test_realised_rate_within_binomial_tolerance(kind, rate, expected):
    clean = np.random.default_rng(1).integers(0, 10, 50_000)
    noisy = corrupt(clean, kind=kind, rate=rate, num_classes=10, rng=np.random.default_rng(0))
    realised = (noisy != clean).mean()
    assert abs(realised - expected) <= binomial_bound(max(expected, 1e-9), clean.size) + 1e-12


def test_symmetric_flips_spread_over_all_classes_and_uniform_other_never_keeps_the_class():
    clean = np.zeros(40_000, dtype=np.int64)
    noisy = corrupt(clean, kind="symmetric", rate=1.0, num_classes=4, rng=np.random.default_rng(0))
    assert np.allclose(np.bincount(noisy, minlength=4) / clean.size, 0.25, atol=0.01)
    other = corrupt(clean, kind="uniform_other", rate=1.0, num_classes=4, rng=np.random.default_rng(0))
    assert (other != 0).all() and np.allclose(np.bincount(other, minlength=4)[1:] / clean.size, 1 / 3, atol=0.01)


def test_same_seed_same_labels_other_seed_different():
    clean = np.random.default_rng(1).integers(0, 10, 1000)
    a = corrupt(clean, kind="symmetric", rate=0.5, num_classes=10, rng=np.random.default_rng(3))
    b = corrupt(clean, kind="symmetric", rate=0.5, num_classes=10, rng=np.random.default_rng(3))
    c = corrupt(clean, kind="symmetric", rate=0.5, num_classes=10, rng=np.random.default_rng(4))
    assert (a == b).all() and (a != c).any()


def test_step_writes_labels_split_transition_and_summary(fashion_dir, tmp_path):
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="uniform_other", rate=0.4, seed=2, train_size=200, val_fraction=0.25),
                  ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        labels = {k: f[k] for k in f.files}
    with np.load(tmp_path / "ingest" / "train.npz") as f:
        assert (f["labels"][labels["index"]] == labels["clean_label"]).all()
    assert len(set(labels["index"].tolist())) == 200 and labels["is_val"].sum() == 50
    assert not labels["is_noisy"][labels["is_val"]].any()  # val_clean
    assert (labels["is_noisy"] == (labels["label"] != labels["clean_label"])).all()
    train = ~labels["is_val"]
    assert summary["realised_rate_train"] == pytest.approx(labels["is_noisy"][train].mean())
    matrix = np.array(json.loads((tmp_path / "noise" / "transition.json").read_text()))
    expected = transition_matrix(labels["clean_label"][train], labels["label"][train], 10)
    assert np.allclose(matrix, expected, atol=1e-6) and np.allclose(matrix.sum(1)[matrix.sum(1) > 0], 1)
    assert json.loads((tmp_path / "noise" / "summary.json").read_text()) == summary
    assert summary["realised_rate_val"] == 0.0  # val_clean: the held-out labels are clean
    assert json.loads((tmp_path / "noise" / "config.json").read_text()) == as_record(
        NoiseConfig(kind="uniform_other", rate=0.4, seed=2, train_size=200, val_fraction=0.25))  # export reads it


def test_missing_ingest_output_and_bad_sizes(tmp_path, fashion_dir, capsys):
    with pytest.raises(ValueError, match=r"manifest.json: expected the output of the ingest step, found no such file"):
        run(NoiseConfig(), ingest=tmp_path / "nothing", out=tmp_path / "noise")
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    assert run(NoiseConfig(train_size=301), ingest=tmp_path / "ingest", out=tmp_path / "noise")["ingested_train"] == 300
    assert "train_size 301 is more than the 300 ingested training images: using all 300" in capsys.readouterr().err
    everything = run(NoiseConfig(train_size=0), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert everything["train"] + everything["val"] == 300 and capsys.readouterr().err == ""
    exactly = run(NoiseConfig(train_size=300), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert exactly["train"] + exactly["val"] == 300 and capsys.readouterr().err == ""  # all of them: no note
    subset = run(NoiseConfig(train_size=100), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert subset["train"] + subset["val"] == 100
    assert "using a random 100 of the 300 ingested training images (noise.train_size; 0 uses all)" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\)"):
        NoiseConfig(val_fraction=0.0)
    before = (tmp_path / "noise" / "labels.npz").read_bytes()
    with pytest.raises(ValueError, match=r"val_fraction: expected a validation set of at least one image, found "
                                         r"0.002 x 100 training images = 0 held out"):  # training then crashed on it
        run(NoiseConfig(train_size=100, val_fraction=0.002), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert (tmp_path / "noise" / "labels.npz").read_bytes() == before


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_a_seed_that_is_not_a_non_negative_integer_is_a_config_error(seed):
    with pytest.raises(ValueError, match=rf"seed: expected an integer >= 0, found {seed!r}"):
        NoiseConfig(seed=seed)


def test_a_negative_seed_on_the_command_line_names_the_field_and_exits_2(workdir, capsys):
    assert main(["--set", "noise.seed=-1"]) == 2
    assert "noise: seed: expected an integer >= 0, found -1" in capsys.readouterr().err


def test_a_noisy_validation_set_and_its_realised_rate(fashion_dir, tmp_path):
    """val_clean false: the held-out labels are corrupted like the training labels, and realised_rate_val measures
    the held-out rows alone."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="pairflip", rate=0.4, train_size=0, val_fraction=0.5, val_clean=False),
                  ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        is_noisy, is_val = f["is_noisy"], f["is_val"]
    assert summary["val_clean"] is False and is_noisy[is_val].any()
    assert summary["realised_rate_val"] == pytest.approx(is_noisy[is_val].mean())
    assert summary["realised_rate_train"] == pytest.approx(is_noisy[~is_val].mean())
    assert summary["realised_rate_val"] != pytest.approx(summary["realised_rate_train"])


def test_kind_none_on_curated_labels_is_clean_labels_at_rate_zero(fashion_dir, tmp_path):
    """The module docstring: ``none`` leaves the labels unchanged; on a curated dataset they are the clean labels,
    known for every row, so the realised rate is 0 (only a user's labels as given have an unknown truth)."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(kind="none", train_size=0), ingest=tmp_path / "ingest", out=tmp_path / "noise")
    assert summary["realised_rate_train"] == 0.0 and summary["clean_label_known_train"] == summary["train"]
    with np.load(tmp_path / "noise" / "labels.npz") as f, np.load(tmp_path / "ingest" / "train.npz") as t:
        assert (f["clean_label"] == t["labels"][f["index"]]).all() and (f["label"] == f["clean_label"]).all()


def test_the_seed_draws_the_noise_not_only_the_split(fashion_dir, tmp_path):
    """Everything is drawn from noise.seed: another seed corrupts other labels, also among the rows both runs train on
    (every image: the subset is the same)."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    noisy = []
    for seed in (0, 1):
        run(NoiseConfig(kind="symmetric", rate=0.5, seed=seed, train_size=0), ingest=tmp_path / "ingest",
            out=tmp_path / "noise")
        with np.load(tmp_path / "noise" / "labels.npz") as f:
            noisy.append((f["is_noisy"].copy(), f["is_val"].copy()))
    (a, a_val), (b, b_val) = noisy
    both = ~a_val & ~b_val
    assert (a[both] != b[both]).any()


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("kind", "symetric", r"Unknown noise kind 'symetric'. Valid: none, symmetric"),
    ("human_labels", "aggregate", r"Unknown human_labels 'aggregate'. Valid: aggre_label"),
    ("train_size", -1, r"train_size: expected 0 \(all\) or a positive count, found -1"),
])
def test_a_config_built_in_code_is_checked_as_the_params_file_is(field, bad, message):
    """``NoiseConfig`` used as a library checks its own fields (a negative train_size silently dropped one image)."""
    with pytest.raises(ValueError, match=message):
        NoiseConfig(**{field: bad})


def test_a_val_fraction_that_leaves_no_training_image_is_refused(tmp_path, fashion_dir):
    """round(0.96 x 10) = 10: every image held out, no training row (training then failed on batch_size)."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    with pytest.raises(ValueError, match=r"val_fraction: expected at least one training image left, found 0.96 x 10 "
                                         r"training images = 10 held out"):
        run(NoiseConfig(train_size=10, val_fraction=0.96), ingest=tmp_path / "ingest", out=tmp_path / "noise")


def test_the_bounds_of_rate_and_val_fraction():
    """``rate`` is a probability in [0, 1], both ends allowed; ``val_fraction`` lies in (0, 1), both ends refused
    by the config itself (not first by the step, after reading the data)."""
    assert NoiseConfig(rate=0.0).rate == 0.0 and NoiseConfig(rate=1.0).rate == 1.0
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\], found 1.01"):
        NoiseConfig(rate=1.01)
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\)"):
        NoiseConfig(val_fraction=1.0)


def test_the_seed_draws_the_held_out_rows(fashion_dir, tmp_path):
    """The held-out validation rows are a random draw of noise.seed, not a prefix of the ingested order."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    held = []
    for seed in (0, 1):
        run(NoiseConfig(kind="none", seed=seed, train_size=0, val_fraction=0.2), ingest=tmp_path / "ingest",
            out=tmp_path / "noise")
        with np.load(tmp_path / "noise" / "labels.npz") as f:
            held.append(f["index"][f["is_val"]])
    assert (held[0] != held[1]).any() and held[0].max() >= 0.5 * 300


def test_the_command_line_says_when_the_realised_rate_is_unknown(monkeypatch, capsys):
    """A user's labels under kind none: no clean label is known, the summary's rate is None, and the step's last
    line says so instead of failing to format None."""
    from components import noise  # noqa: PLC0415

    summary = {"kind": "none", "requested_rate": None, "realised_rate_train": None, "train": 15, "val": 4,
               "val_clean": False, "val_source": "held out of the training images"}
    monkeypatch.setattr(noise, "run", lambda config, **inputs: summary)
    noise._main({"noise": NoiseConfig(kind="none")})
    assert "noise: none -> realised unknown (no clean labels) on 15 training labels; 4 validation labels (noisy" \
        in capsys.readouterr().out


def _with_train_images(ingest_dir, edit) -> None:
    """``ingest_dir``'s train.npz with its images changed by ``edit`` (labels and every other array kept)."""
    path = ingest_dir / "train.npz"
    with np.load(path) as f:
        arrays = {k: f[k].copy() for k in f.files}
    edit(arrays["images"])
    np.savez(path, **arrays)


def test_a_training_copy_of_a_held_out_image_is_held_out_with_it(fashion_dir, tmp_path):
    """A web scrape saves one picture twice (``3.jpg``, ``3 (1).jpg``), or mirrored: a copy left in training would
    let validation reward memorising its label. Every training image whose near-duplicate was drawn for validation
    is held out too, with its clean label; no other row moves, and the noise drawn is the same."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    config = NoiseConfig(kind="symmetric", rate=0.5, seed=3, train_size=0, val_fraction=0.2)
    before = run(config, ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        drawn, label = f["is_val"].copy(), f["label"].copy()
    assert "held_out_near_duplicates" not in before  # the fixture's images have no near-duplicates
    held, trained = np.flatnonzero(drawn)[:6], np.flatnonzero(~drawn)[:6]

    def copy(images):  # three exact copies, three mirrored ones, and one pair among the training images
        images[trained[:3]] = images[held[:3]]
        images[trained[3:]] = images[held[3:], :, ::-1]
        images[np.flatnonzero(~drawn)[-1]] = images[np.flatnonzero(~drawn)[-2]]

    _with_train_images(tmp_path / "ingest", copy)
    after = run(config, ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        is_val, moved_label, is_noisy = f["is_val"], f["label"], f["is_noisy"]
    expected = drawn.copy()
    expected[trained] = True
    assert (is_val == expected).all() and after["held_out_near_duplicates"] == 6
    assert after["val"] == before["val"] + 6 and after["train"] == before["train"] - 6
    assert (moved_label[~expected] == label[~expected]).all() and not is_noisy[is_val].any()  # val_clean


def _brighter(images: np.ndarray) -> np.ndarray:
    return np.minimum(images.astype(np.int16) + 1, 255).astype(np.uint8)


def _jpeg_resaved(images: np.ndarray) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415

    saved = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, "JPEG", quality=95)
        saved.append(np.asarray(Image.open(buffer))[..., None])
    return np.stack(saved)


@pytest.mark.parametrize("resave", [_brighter, _jpeg_resaved], ids=["one-grey-level-brighter", "jpeg-q95"])
def test_a_re_encoded_or_brighter_copy_of_a_held_out_image_is_held_out_with_it(fashion_dir, tmp_path, resave):
    """The same picture saved twice is rarely the same bytes: a JPEG re-save, or a copy a grey level brighter, is
    held out with its drawn twin too, by validate's own near-duplicate rule, so that no validation image has a
    near-duplicate left in training by the rule validate measures leaks with."""
    from components.common.thumbnails import fingerprints, first_matches  # noqa: PLC0415

    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    config = NoiseConfig(kind="symmetric", rate=0.5, seed=3, train_size=0, val_fraction=0.2)
    run(config, ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        drawn = f["is_val"].copy()
    held, trained = np.flatnonzero(drawn)[:6], np.flatnonzero(~drawn)[:6]
    _with_train_images(tmp_path / "ingest", lambda images: images.__setitem__(trained, resave(images[held])))
    after = run(config, ingest=tmp_path / "ingest", out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        is_val = f["is_val"]
    expected = drawn.copy()
    expected[trained] = True
    assert (is_val == expected).all() and after["held_out_near_duplicates"] == 6
    with np.load(tmp_path / "ingest" / "train.npz") as f:
        val, train = f["images"][is_val], f["images"][~is_val]
    matched, _ = first_matches(fingerprints(val), fingerprints(val[:, :, ::-1]), fingerprints(train))
    assert (matched < 0).all()


def test_a_dataset_of_copies_of_the_held_out_images_is_refused(fashion_dir, tmp_path):
    """Where every training image is a near-duplicate of a held-out one, nothing would be left to train on."""
    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    _with_train_images(tmp_path / "ingest", lambda images: images.__setitem__(slice(None), images[0]))
    with pytest.raises(ValueError, match=r"val_fraction: expected at least one training image left, found every one "
                                         r"of the 300 a near-duplicate of one of the 30 drawn for validation"):
        run(NoiseConfig(train_size=0), ingest=tmp_path / "ingest", out=tmp_path / "noise")


def test_a_class_the_validation_draw_leaves_out_of_a_split_is_named():
    """The draw is uniform over the images: on a class of a few it can take every image (nothing to learn the class
    from) or none (the class plays no part in selection). The step says which classes, before training."""
    from components.noise import coverage_warning  # noqa: PLC0415

    names = ["cat", "dog", "owl", "yak"]
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 3, 3])
    rest = (": a class without training images cannot be learnt, one without validation images plays no part in "
            "selection; use more of the images (noise.train_size), or give the dataset a val split")
    owl_in_val = np.array([1, 0, 0, 1, 0, 0, 1, 0, 1], dtype=bool)
    assert coverage_warning(labels, owl_in_val, names) == (
        "the validation draw left class 'owl' no training image" + rest)
    only_cats = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    assert coverage_warning(labels, only_cats, names) == (
        "the validation draw left 3 classes ('dog', 'owl', 'yak') no validation image" + rest)
    assert coverage_warning(labels, np.array([1, 0, 0, 1, 0, 0, 0, 1, 0], dtype=bool), names) == (
        "the validation draw left class 'owl' no validation image" + rest)
    assert coverage_warning(labels, np.array([1, 0, 0, 0, 0, 0, 1, 0, 0], dtype=bool), names) == (
        "the validation draw left class 'owl' no training image and 2 classes ('dog', 'yak') no validation image"
        + rest)
    assert coverage_warning(np.array([0, 0, 1, 1]), np.array([1, 0, 1, 0], dtype=bool), names[:2]) is None


def test_a_class_the_train_size_draw_leaves_out_is_named(fashion_dir, tmp_path):
    """A class with no image among the train_size rows has no training image and no validation image: the warning
    names it, as it names the classes the validation draw leaves out of a split (the fixture's 20 rows, seed 0,
    have no Shirt)."""
    from components.noise import coverage_warning  # noqa: PLC0415

    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    summary = run(NoiseConfig(train_size=20, val_fraction=0.5, seed=0), ingest=tmp_path / "ingest",
                  out=tmp_path / "noise")
    with np.load(tmp_path / "noise" / "labels.npz") as f:
        drawn = set(f["clean_label"].tolist())
    assert drawn == set(range(10)) - {6}
    assert summary["coverage_warning"].startswith("the train_size draw left class 'Shirt' no image, for training or "
                                                  "validation; the validation draw left ")
    names = ["cat", "dog", "owl", "yak"]
    labels, is_val = np.array([0, 0, 1, 1]), np.array([1, 0, 1, 0], dtype=bool)
    assert coverage_warning(labels, is_val, names) is None  # owl and yak: not in the dataset at all
    assert coverage_warning(labels, is_val, names, ingested=np.array([1, 1, 0, 1], dtype=bool)) == (
        "the train_size draw left class 'yak' no image, for training or validation: a class without training images "
        "cannot be learnt, one without validation images plays no part in selection; use more of the images "
        "(noise.train_size), or give the dataset a val split")


def test_a_class_map_is_a_params_error_exit_2_its_shape_checked_before_any_data_is_read(workdir, capsys):
    """A class_map entry that is no ``source->target``, or names a class the dataset lacks, was a ValueError at run
    time (exit 1, as for a broken input): it is the params file's error (exit 2). The shape is checked with the
    config, before the ingest output is even looked for; the classes once the dataset's names are read."""
    from components.common.steps import FOLDERS  # noqa: PLC0415
    from components.noise import parse_class_map  # noqa: PLC0415

    assert main(["--set", "noise.kind=asymmetric", "--set", "noise.class_map=[Trouser->Bag, Shirt]"]) == 2
    assert capsys.readouterr().err == ("error: noise: params.yaml with --set overrides: noise: class_map: expected "
                                       "'source->target', found 'Shirt'\n")  # no ingest output: no data read
    for pair in ("Shirt", "->Coat", "Shirt-> ", 3):
        with pytest.raises(ConfigError, match=rf"class_map: expected 'source->target', found {re.escape(repr(pair))}"):
            NoiseConfig(kind="asymmetric", class_map=(pair,))
    ingest(IngestConfig(path="data/fashion-mnist"), out=FOLDERS["ingest"])
    assert main(["--set", "noise.kind=asymmetric", "--set", "noise.class_map=[Trouser->Wolf]"]) == 2
    assert capsys.readouterr().err.startswith("error: noise: class_map: 'Trouser->Wolf': expected a class name or "
                                              "index of this dataset (T-shirt/top, Trouser, ")
    assert not (FOLDERS["noise"] / "labels.npz").exists()
    with pytest.raises(ConfigError, match="expected one target per class"):
        parse_class_map(["1->2", "Trouser->Bag"], list(FASHION_MNIST_CLASSES))


FAILED_REPORT = {"success": False, "failures": [
    {"table": "classes", "expectation": "expect_column_values_to_be_between", "column": "train_count",
     "expected": {"min_value": 0.1}, "observed": "9 of 10 values unexpected, e.g. [0, 0] at classes Trouser, Dress"},
    {"table": "images", "expectation": "expect_column_values_to_not_be_null", "column": "label", "expected": {},
     "observed": "1 of 360 values unexpected"}]}


def test_the_step_refuses_data_that_failed_validation_before_writing_anything(workdir, capsys):
    """``dvc repro -s noise`` or ``python -m components.noise`` after validate failed: the step refuses, naming the
    report and what failed, and writes nothing. Without a report (steps run by hand on a folder never validated)
    it runs as before; so does ``run`` without ``validate`` (the KFP component, whose validate step raises first)."""
    from components.common.steps import FOLDERS  # noqa: PLC0415

    ingest(IngestConfig(path="data/fashion-mnist"), out=FOLDERS["ingest"])
    report = FOLDERS["validate"] / "report.json"
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps(FAILED_REPORT))
    assert main([]) == 1
    assert capsys.readouterr().err == (
        "error: noise: artifacts/validate/report.json: expected data that passed the validate step, found success "
        "false, 2 expectation(s) failed: expect_column_values_to_be_between column=train_count observed=9 of 10 "
        "values unexpected, e.g. [0, 0] at classes Trouser, Dress; expect_column_values_to_not_be_null column=label "
        "observed=1 of 360 values unexpected; fix the data, then re-run the validate step (python -m "
        "components.validate)\n")
    assert not FOLDERS["noise"].exists()
    run(NoiseConfig(train_size=0), out=workdir / "by-hand")  # no ``validate``: the report is not read
    report.write_text(json.dumps({**FAILED_REPORT, "success": True, "failures": []}))
    assert main([]) == 0 and (FOLDERS["noise"] / "labels.npz").is_file()
    report.unlink()
    assert main([]) == 0


def test_a_validate_report_that_cannot_be_read_is_refused(tmp_path, fashion_dir):
    """A report that is not validate's JSON cannot vouch for the data: a DataError naming it, nothing written."""
    from components.common.errors import DataError  # noqa: PLC0415

    ingest(IngestConfig(path=str(fashion_dir)), out=tmp_path / "ingest")
    (tmp_path / "validate").mkdir()
    for text, found in (("{", "invalid JSON"), ('{"failures": []}', "found keys ['failures']"),
                        ('{"success": "no"}', "found success 'no'")):
        (tmp_path / "validate" / "report.json").write_text(text)
        with pytest.raises(DataError, match=re.escape(found)):
            run(NoiseConfig(train_size=0), ingest=tmp_path / "ingest", out=tmp_path / "noise",
                validate=tmp_path / "validate")
    assert not (tmp_path / "noise").exists()
