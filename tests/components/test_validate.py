"""The validate step: real Great Expectations runs over good and deliberately broken ingest outputs."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from components import validate
from components.common.errors import DataError
from components.common.thumbnails import fingerprints, first_matches, near_duplicate_groups, thumbnails
from components.ingest import IngestConfig
from components.ingest import run as ingest
from components.validate import ValidateConfig, ValidationFailedError, run


@pytest.fixture
def ingested(fashion_dir, tmp_path):
    out = tmp_path / "artifacts" / "ingest"  # where the CLI looks, relative to the working directory
    ingest(IngestConfig(path=str(fashion_dir)), out=out)
    return out


def rewrite(ingest_dir, split, change):
    with np.load(ingest_dir / f"{split}.npz") as f:
        images, labels = f["images"].copy(), f["labels"].copy()
    images, labels = change(images, labels)
    np.savez(ingest_dir / f"{split}.npz", images=images, labels=labels)


def test_good_data_passes_and_writes_report_and_data_docs(ingested, tmp_path):
    report = run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert report["success"] and report["failures"] == []
    assert json.loads((tmp_path / "v" / "report.json").read_text()) == report
    docs = tmp_path / "v" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert docs.is_file() and "images" in docs.read_text()
    assert report["statistics"]["images"] == 360
    with np.load(ingested / "train.npz") as train:  # each class's share of the training split, not of all images
        counts = np.bincount(train["labels"], minlength=10)
    assert report["statistics"]["class_shares"] == (counts / counts.sum()).round(6).tolist()


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_and_data_docs_are_written_as_one_set(ingested, tmp_path, monkeypatch):
    """Great Expectations rewrote gx/ in place before report.json was written: a failed write left the report of
    the previous (good) run beside the Data Docs of this (failed) one. Now a run's gx/ is built aside and swapped in
    with report.json; a failed write changes neither, and no run's results pile up in gx/."""
    out = tmp_path / "v"
    run(ValidateConfig(), ingest=ingested, out=out)
    first = _tree(out / "gx")
    run(ValidateConfig(), ingest=ingested, out=out)
    second, report = _tree(out / "gx"), (out / "report.json").read_bytes()
    assert len(second) == len(first) and second != first  # this run's results alone, not both runs'

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(validate, "write_json", full)
    with pytest.raises(OSError, match="No space left"):
        run(ValidateConfig(min_images=10 ** 6), ingest=ingested, out=out)
    assert _tree(out / "gx") == second and (out / "report.json").read_bytes() == report
    assert sorted(p.name for p in out.iterdir()) == ["gx", "report.json"]  # no staging folder left


def test_broken_data_fails_with_one_line_per_failed_expectation(ingested, tmp_path):
    def break_train(images, labels):
        labels[:3] = 12  # outside the 10 classes
        images[3:40] = 7  # 37 blank images, far over 1 %
        return images, labels

    def leak_test_into_train(images, labels):
        with np.load(ingested / "test.npz") as test:
            images[-30:] = test["images"][:30]
        return images, labels

    rewrite(ingested, "train", break_train)
    rewrite(ingested, "train", leak_test_into_train)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    lines = str(failure.value).splitlines()
    assert lines[0].startswith("3 expectation(s) failed on")
    assert lines[1].startswith("expect_column_values_to_be_between column=label expected={'min_value': 0.0, "
                               "'max_value': 9.0")
    assert "observed=3 of 360 values unexpected, e.g. [12, 12, 12] at train images 0, 1, 2" in lines[1]
    assert lines[2] == ("expect_column_values_to_be_between column=train_blank_share expected={'max_value': 0.01} "
                        "observed=1 of 1 values unexpected, e.g. [0.12333333333333334]; blank (one colour): train "
                        "images 3, 4, 5, 6, 7, ... (37 in all)")  # 37 of the 300 training images
    assert lines[3].startswith("expect_column_values_to_be_between column=test_in_train_share")
    assert "observed=1 of 1 values unexpected, e.g. [0.5]" in lines[3]
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert not report["success"] and len(report["failures"]) == 3
    assert report["statistics"]["duplicate_share"] == 0.5  # the share the overlap failure reports


def test_a_mirrored_copy_of_a_test_image_in_training_counts_as_a_duplicate(ingested, tmp_path):
    """Training flips images, so a mirrored copy of a test image is the test image to the model; the thumbnail
    alone missed it."""
    def mirror_test_into_train(images, labels):
        with np.load(ingested / "test.npz") as test:
            images[-30:] = test["images"][:30, :, ::-1]
        return images, labels

    rewrite(ingested, "train", mirror_test_into_train)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert [f["column"] for f in failure.value.failures] == ["test_in_train_share"]
    assert "observed=1 of 1 values unexpected, e.g. [0.5]" in str(failure.value)


def test_a_duplicate_failure_names_the_pairs_by_split_and_row_without_file_names(ingested, tmp_path):
    """The failure once gave only a share ("observed 0.5"), naming no image."""
    def leak(images, labels):
        with np.load(ingested / "test.npz") as test:
            images[-7:] = test["images"][:7]
            images[-8] = test["images"][7, :, ::-1]
        return images, labels

    rewrite(ingested, "train", leak)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    [line] = [x for x in str(failure.value).splitlines() if "test_in_train_share" in x]
    assert line.endswith("; near-duplicates: test image 0 ≈ train image 293, test image 1 ≈ train image 294, "
                         "test image 2 ≈ train image 295, test image 3 ≈ train image 296, test image 4 ≈ train image "
                         "297, ... (8 test images in all) (every pair: report.json's near_duplicates); remove one "
                         "image of each pair, or put both in one split")
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["near_duplicates"]["test"] == [f"test image {i} ≈ train image {293 + i}" for i in range(7)] + [
        "test image 7 ≈ train image 292 (mirrored)"]


def block_folder(root: Path) -> Path:
    """An image folder of 32 training and 8 test images (two classes), random 16x16 colour images of 4x4 blocks, no
    two of them near-duplicates."""
    from PIL import Image  # noqa: PLC0415

    rng = np.random.default_rng(0)
    for i in range(40):
        cls, split = ("cat" if i % 2 else "dog"), ("test" if i >= 32 else "train")
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        pixels = np.kron(rng.integers(0, 256, (4, 4, 3)), np.ones((4, 4, 1))).astype(np.uint8)
        Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_a_duplicate_failure_names_the_files_of_an_image_folder(tmp_path):
    """An image folder's npz files keep each file: a test image and its training copy are named by their files."""
    root = block_folder(tmp_path / "mine")
    (root / "test" / "cat" / "dup.png").write_bytes((root / "train" / "cat" / "3.png").read_bytes())
    ingest(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "ingest")
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(class_balance_ratio=5.0), ingest=tmp_path / "ingest", out=tmp_path / "v")
    [line] = [x for x in str(failure.value).splitlines() if "test_in_train_share" in x]
    assert "; near-duplicates: test/cat/dup.png ≈ train/cat/3.png (every pair:" in line


def test_training_copies_with_different_labels_are_a_warning_naming_them(tmp_path, capsys):
    """The same photo in two class folders is a label error for certain (one of its two labels is wrong), which
    nothing reported; validate now warns, naming the pairs and their classes, and passes."""
    root = block_folder(tmp_path / "mine")
    (root / "train" / "dog" / "3 (1).png").write_bytes((root / "train" / "cat" / "3.png").read_bytes())
    (root / "train" / "cat" / "5 (1).png").write_bytes((root / "train" / "cat" / "5.png").read_bytes())  # same label
    ingest(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "ingest")
    capsys.readouterr()
    report = run(ValidateConfig(class_balance_ratio=5.0), ingest=tmp_path / "ingest", out=tmp_path / "v")
    assert report["success"] and report["statistics"]["train_label_conflicts"] == 1
    assert report["label_conflicts"] == ["train/dog/3 (1).png ≈ train/cat/3.png (dog and cat)"]
    assert capsys.readouterr().err == (
        "WARNING: validate: 1 training image is a copy of one with another label, e.g. train/dog/3 (1).png "
        "≈ train/cat/3.png (dog and cat): one of the two labels is wrong; every pair is in report.json's "
        "label_conflicts\n")
    assert json.loads((tmp_path / "v" / "report.json").read_text())["label_conflicts"] == report["label_conflicts"]


def test_a_mirrored_training_copy_with_another_label_is_a_conflict(tmp_path):
    """A flip does not change a photo's class: a mirrored copy in another class folder is a label error too, named
    as mirrored; a mirrored copy under the same label is none."""
    from PIL import Image  # noqa: PLC0415

    root = block_folder(tmp_path / "mine")
    for source, copy in (("cat/3.png", "dog/3 flipped.png"), ("cat/5.png", "cat/5 flipped.png")):
        Image.open(root / "train" / source).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "train" / copy)
    ingest(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "ingest")
    report = run(ValidateConfig(class_balance_ratio=5.0), ingest=tmp_path / "ingest", out=tmp_path / "v")
    assert report["statistics"]["train_label_conflicts"] == 1
    assert report["label_conflicts"] == ["train/dog/3 flipped.png ≈ train/cat/3.png (mirrored) (dog and cat)"]


def test_shape_dtype_count_and_balance_failures(ingested, tmp_path):
    rewrite(ingested, "test", lambda images, labels: (images[:, :27].astype(np.float32), labels))
    rewrite(ingested, "train", lambda images, labels: (images, np.where(labels < 9, 0, labels)))
    manifest = json.loads((ingested / "manifest.json").read_text())
    manifest["counts"]["train"] += 1
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    text = str(failure.value)
    assert "expect_table_row_count_to_equal column=(table) expected={'value': 361} observed=360" in text
    assert "expect_column_values_to_be_in_set column=height expected={'value_set': [28]}" in text
    assert "expect_column_values_to_be_in_set column=dtype expected={'value_set': ['uint8']}" in text
    assert "e.g. ['float32', 'float32', 'float32', 'float32', 'float32'] at test images 0, 1, 2, 3, 4" in text
    assert "expect_column_values_to_be_between column=train_share" in text


def test_pixel_values_outside_0_to_255_fail_on_the_minimum_and_the_maximum_naming_the_images(ingested, tmp_path):
    """data.md: "pixel minimum and maximum in [0, 255]": images that are not uint8 (a converter's int16 output)
    fail on each bound that they break, naming the image, besides the dtype."""
    def widen(images, labels):
        images = images.astype(np.int16)
        images[2, 0, 0, 0], images[4, 0, 0, 0] = -3, 300
        return images, labels

    rewrite(ingested, "test", widen)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    found = {f["column"]: f["observed"] for f in failure.value.failures}
    assert sorted(found) == ["dtype", "pixel_max", "pixel_min"]
    assert found["pixel_min"] == "1 of 360 values unexpected, e.g. [-3.0] at test image 2"
    assert found["pixel_max"] == "1 of 360 values unexpected, e.g. [300.0] at test image 4"


def test_a_split_below_min_images_fails_naming_the_split_the_minimum_and_the_count(ingested, tmp_path):
    """The fixture's test split holds 60 images: min_images = 61 fails on it alone (train has 300, and each training
    class about 30, over 61 / K); the failure is in the message, report.json and the exception's ``failures``."""
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(min_images=61), ingest=ingested, out=tmp_path / "v")
    lines = str(failure.value).splitlines()
    assert lines[0].startswith("1 expectation(s) failed on")
    assert lines[1] == "expect_column_min_to_be_between column=test_images expected={'min_value': 61.0} observed=60"
    (entry,) = failure.value.failures
    assert (entry["table"], entry["column"], entry["observed"]) == ("splits", "test_images", 60)
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["failures"] == [entry] and not report["success"]


def test_each_split_passes_at_min_images_and_a_val_split_is_checked_too(ingested, tmp_path):
    assert run(ValidateConfig(min_images=60), ingest=ingested, out=tmp_path / "v")["success"]  # test: exactly 60
    assert run(ValidateConfig(min_images=0), ingest=ingested, out=tmp_path / "v")["success"]  # 0: no minimum
    _write_val(ingested, {})  # a val split of 20 clean images, as an imagefolder set has
    assert run(ValidateConfig(min_images=20), ingest=ingested, out=tmp_path / "v2")["success"]
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(min_images=21), ingest=ingested, out=tmp_path / "v3")
    assert [f["column"] for f in failure.value.failures] == ["val_images"]
    assert "column=val_images expected={'min_value': 21.0} observed=20" in str(failure.value)


def test_an_empty_val_split_fails_on_its_counts_and_on_nothing_it_does_not_have(ingested, tmp_path):
    """An empty clean_val_key_list.txt gives a val split of no images: it fails on its size and class counts; its
    overlap with training, a share of no images, is 0 rather than a missing column failing as observed=None."""
    with np.load(ingested / "test.npz") as test:
        np.savez(ingested / "val.npz", images=test["images"][:0], labels=test["labels"][:0])
    manifest = json.loads((ingested / "manifest.json").read_text())
    manifest["counts"]["val"] = 0
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert sorted((f["table"], f["column"]) for f in failure.value.failures) == [("classes", "val_count"),
                                                                                ("splits", "val_images")]
    assert "None" not in str(failure.value)


@pytest.mark.parametrize(("labels", "found"), [
    (lambda y: y + 0.7, r"expected integer class indices as labels, found float64 labels with values like "
                        r"\d\.7, \d\.7, \d\.7$"),
    (lambda y: y.astype(np.float32), r"expected integer class indices as labels, found float32 labels with values "
                                     r"like \d\.0, \d\.0, \d\.0$"),
    (lambda y: np.where(np.arange(y.size) == 5, np.nan, y), r"expected integer class indices as labels, found "
                                                            r"float64 labels with values like nan$"),
    (lambda y: y[:-1], r"expected one label per image \(300 labels\), found 299 labels$"),
    (lambda y: np.eye(10, dtype=np.int64)[y], r"expected labels of shape \[N\] \(one class index per image\), "
                                               r"found shape \[300, 10\]$"),
], ids=["fractional", "float-integral", "nan", "one-short", "one-hot"])
def test_labels_that_are_not_one_integer_per_image_fail_naming_the_file(ingested, tmp_path, labels, found):
    """Float labels once passed (cast to int64: 0.7 became class 0, NaN -9223372036854775808) and crashed the noise
    step; wrong shapes failed in pandas naming no file. Each is now refused before the table is built."""
    rewrite(ingested, "train", lambda images, y: (images, labels(y)))
    with pytest.raises(DataError, match=rf"^{re.escape(str(ingested / 'train.npz'))}: {found}"):
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")


def test_a_test_or_val_split_missing_a_class_fails_naming_split_and_class(ingested, tmp_path):
    """Only the training split's classes were counted: a test set without one class passed, and evaluate then
    reported 0 for that class. The failure names the split (the column) and the class."""
    rewrite(ingested, "test", lambda images, labels: (images[labels != 3], labels[labels != 3]))
    _recount(ingested, "test")
    manifest = _write_val(ingested, {}, classes=tuple(c for c in range(10) if c not in (3, 7)))  # none of 3 or 7
    names = manifest["class_names"]
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert [(f["table"], f["column"]) for f in failure.value.failures] == [("classes", "test_count"),
                                                                          ("classes", "val_count")]
    lines = str(failure.value).splitlines()
    assert lines[1] == ("expect_column_values_to_be_between column=test_count expected={'min_value': 1.0} "
                        f"observed=1 of 10 values unexpected, e.g. [0] at class {names[3]}")
    assert lines[2].endswith(f"e.g. [0, 0] at classes {names[3]}, {names[7]}")


def test_an_imbalanced_training_class_is_named(ingested, tmp_path):
    def starve_class_2(images, labels):
        keep = (labels != 2) | (np.cumsum(labels == 2) <= 1)
        return images[keep], labels[keep]

    rewrite(ingested, "train", starve_class_2)
    manifest = _recount(ingested)
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig())
    assert (entry["table"], entry["column"]) == ("classes", "train_share")
    assert entry["observed"].startswith("1 of 10 values unexpected, e.g. [0.00")
    assert entry["observed"].endswith(f"] at class {manifest['class_names'][2]}")


def test_cli_exits_non_zero_with_the_failures(ingested, tmp_path, monkeypatch, capsys):
    rewrite(ingested, "train", lambda images, labels: (images, np.full_like(labels, 0)))
    params = tmp_path / "params.yaml"
    params.write_text("validate: {}\n")
    monkeypatch.chdir(tmp_path)
    assert validate.main(["--params", str(params)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: validate: ") and "column=train_share" in err


def test_missing_ingest_output(tmp_path):
    with pytest.raises(ValueError, match=r"manifest.json: expected the output of the ingest step, found no such file"):
        run(ValidateConfig(), ingest=tmp_path / "none", out=tmp_path / "v")


def test_a_near_duplicate_is_named_by_its_first_training_row_past_the_first_chunk(ingested, tmp_path, monkeypatch):
    """The images are read in chunks (10,000 by default): a training row is numbered in the whole split, and a test
    image with several copies in training is named by the first."""
    import functools  # noqa: PLC0415

    monkeypatch.setattr(validate, "iter_images", functools.partial(validate.iter_images, chunk=100))

    def leak(images, labels):
        with np.load(ingested / "test.npz") as test:
            images[[5, 250]] = test["images"][0]
            images[251] = test["images"][1]
        return images, labels

    rewrite(ingested, "train", leak)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(max_duplicate_share=0.0), ingest=ingested, out=tmp_path / "v")
    [line] = [x for x in str(failure.value).splitlines() if "test_in_train_share" in x]
    assert "; near-duplicates: test image 0 ≈ train image 5, test image 1 ≈ train image 251 (every pair:" in line


def test_near_duplicates_differ_by_at_most_8_grey_levels_in_every_cell_mirrored_or_not():
    """``first_matches``: each test image's first training near-duplicate, every cell of the 8x8 grey thumbnails
    within ``TOLERANCE`` (8 levels), or of its mirror image's; -1 where none is."""
    def flat(value, size=32):
        return np.full((1, size, size, 3), value, dtype=np.uint8)

    half = np.concatenate([flat(0)[:, :, :16], flat(255)[:, :, :16]], axis=2)  # left half black
    train = np.concatenate([flat(100), flat(100), half])
    queries = np.concatenate([flat(108), flat(92), flat(109), half[:, :, ::-1], flat(40)])
    found, mirrored = first_matches(fingerprints(queries), fingerprints(queries[:, :, ::-1]), fingerprints(train))
    assert found.tolist() == [0, 0, -1, 2, -1] and mirrored.tolist() == [False, False, False, True, False]
    # grouped transitively: 109 is 1 level from 108, which is 8 from 100
    assert near_duplicate_groups(np.concatenate([train, queries])).tolist() == [0, 0, 2, 0, 0, 0, 2, 7]


def test_two_textures_alike_only_at_8x8_are_not_near_duplicates():
    """A bright band on grainy noise, twice with other grain: their 8x8 thumbnails average the grain away (every
    cell within 8 levels), their 16x16 ones do not; the same image 3 levels brighter still matches.
    (The own-folder walkthrough's images: 23 of its 60 test images were taken for copies of training images.)"""
    grains = np.random.default_rng(0).integers(0, 60, (40, 20, 20, 3)).astype(np.uint8)
    grains[:, 6:9, 2:18] = 250
    coarse = fingerprints(grains).coarse
    apart = (coarse[:, None] - coarse[None]).abs().amax(dim=2) + 999 * torch.eye(40)
    i, j = divmod(int(apart.argmin()), 40)
    assert apart[i, j] <= 8  # the two grains closest at 8x8 are alike there
    train = grains[i:i + 1]
    copies = np.concatenate([grains[j:j + 1], train + 3])
    found, _ = first_matches(fingerprints(copies), fingerprints(copies[:, :, ::-1]), fingerprints(train))
    assert found.tolist() == [-1, 0]


def test_a_copy_exactly_8_levels_off_an_rgb_image_is_a_near_duplicate():
    """The grey of three channels averaged in float32 came to 8.00003 for a copy exactly 8 levels brighter: every
    such RGB copy was missed, against the documented 'up to 8 levels'."""
    image = np.random.default_rng(0).integers(20, 200, (1, 32, 32, 3)).astype(np.uint8)
    copies = np.concatenate([image + 8, image - 8, image + 9])
    found, _ = first_matches(fingerprints(copies), fingerprints(copies[:, :, ::-1]), fingerprints(image))
    assert found.tolist() == [0, 0, -1]


def test_one_pixel_images_and_thousands_of_identical_blank_ones_are_fingerprinted_and_grouped():
    """A 1-pixel-wide image flipped kept a negative stride torch refused; 1,000 blank frames made a million
    candidate pairs (5.5 GB): identical fingerprints are one node now."""
    tiny = np.arange(6, dtype=np.uint8).reshape(2, 1, 1, 3) * 40
    assert near_duplicate_groups(tiny).tolist() == [0, 1]
    blank = np.zeros((3000, 28, 28, 1), dtype=np.uint8)
    assert (near_duplicate_groups(blank) == 0).all()
    found, _ = first_matches(fingerprints(blank), fingerprints(blank), fingerprints(blank[:5]))
    assert (found == 0).all()


def test_near_duplicates_are_found_in_windows_as_by_every_pair(monkeypatch):
    """The search compares each chunk of queries only with the references of close mean grey, in blocks: it finds
    what comparing every pair finds (the random 8x8 images are their own thumbnails, at 8x8 and 16x16)."""
    from components.common import thumbnails as module  # noqa: PLC0415

    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    queries = np.clip(train[rng.integers(0, 300, 200)] + rng.integers(-5, 6, (200, 8, 8, 1)), 0, 255)
    queries = np.concatenate([queries, rng.integers(0, 256, (100, 8, 8, 1))]).astype(np.uint8)
    prints, flipped, reference = fingerprints(queries), fingerprints(queries[:, :, ::-1]), fingerprints(train)
    close = ((prints.coarse[:, None] - reference.coarse[None]).abs().amax(dim=2) <= module.TOLERANCE).numpy()
    for i, j in zip(*np.nonzero(close), strict=True):  # every pair, by both tests
        close[i, j] = bool(module._alike(prints.detail[i:i + 1], reference.detail[j:j + 1]))
    expected = np.where(close.any(axis=1), close.argmax(axis=1), -1)
    monkeypatch.setattr(module, "QUERIES", 7)
    monkeypatch.setattr(module, "REFERENCES", 5)
    monkeypatch.setattr(module, "PAIRS", 2)
    found, _ = first_matches(prints, flipped, reference)
    assert found.tolist() == expected.tolist() and 100 < (expected >= 0).sum() < 200  # some copies too far off


def test_the_copy_key_is_an_8x8_grey_thumbnail_in_16_levels():
    """``thumbnails``, the key of copies (the label-conflict warning, the noise step's held-out groups): 8x8 grey,
    quantised to 16 levels (steps of 16 grey values)."""
    def flat(value, size=32):
        return np.full((1, size, size, 3), value, dtype=np.uint8)

    [a], [b], [c] = (thumbnails(flat(v)) for v in (100, 108, 112))
    assert a == b == bytes([6] * 64) and c == bytes([7] * 64)
    [d] = thumbnails(np.concatenate([flat(0, 16), flat(255, 16)], axis=2))  # left half black
    assert d == bytes(([0] * 4 + [15] * 4) * 8)


def blank_first(count: int, value=9):
    """A ``rewrite`` change: the first ``count`` images of the split one colour, ``value``."""
    return lambda images, labels: (np.where(np.arange(len(images))[:, None, None, None] < count,
                                            np.asarray(value, dtype=np.uint8), images), labels)


@pytest.mark.parametrize("share", [0.01, 0.18, 0.43])
def test_blank_images_up_to_max_blank_share_pass_in_each_split(ingested, tmp_path, share):
    """``max_blank_share``: at most this share of each split's images is blank; at the limit passes (0.18 and
    0.43 failed at it: Great Expectations' ``mostly`` was 1 - share, rounded)."""
    rewrite(ingested, "train", blank_first(round(share * 300)))  # 300 training images
    assert run(ValidateConfig(max_blank_share=share), ingest=ingested, out=tmp_path / "v")["success"]
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(max_blank_share=share - 0.001), ingest=ingested, out=tmp_path / "v2")
    assert [f["column"] for f in failure.value.failures] == ["train_blank_share"]


def test_blank_test_images_fail_though_few_among_all_images(ingested, tmp_path):
    """3 blank test images of 60 (5 %) are 3 of 360 images (0.8 %): the share over every split let them pass, and
    the gate would have judged models on them."""
    rewrite(ingested, "test", blank_first(3))
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig(max_blank_share=0.01))
    assert entry["column"] == "test_blank_share" and entry["observed"].endswith("; blank (one colour): test images "
                                                                                "0, 1, 2")


def test_an_image_of_one_colour_is_blank(tmp_path):
    """A solid red image's channels each hold one value; its range over every channel together (200 - 30) hid
    it."""
    from PIL import Image  # noqa: PLC0415

    root = block_folder(tmp_path / "pics")
    for i in range(4):
        Image.new("RGB", (16, 16), (200, 30 + i, 30)).save(root / "train" / "cat" / f"red{i}.png")
    ingest(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "ingest")
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(max_blank_share=0.01), ingest=tmp_path / "ingest", out=tmp_path / "v")
    assert [f["column"] for f in failure.value.failures] == ["train_blank_share"]


def test_images_with_other_channels_than_the_manifest_fail(ingested, tmp_path):
    rewrite(ingested, "test", lambda images, labels: (np.repeat(images, 3, axis=3), labels))
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert [f["column"] for f in failure.value.failures] == ["channels"]
    assert "expect_column_values_to_be_in_set column=channels expected={'value_set': [1]}" in str(failure.value)


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("min_images", -1, r"min_images: expected >= 0, found -1"),
    ("class_balance_ratio", 0.9, r"class_balance_ratio: expected >= 1, found 0.9"),
    ("max_duplicate_share", 1.5, r"max_duplicate_share: expected a number in \[0, 1\], found 1.5"),
    ("max_blank_share", -0.1, r"max_blank_share: expected a number in \[0, 1\], found -0.1"),
])
def test_thresholds_out_of_range_are_refused(field, bad, message):
    with pytest.raises(ValueError, match=message):
        ValidateConfig(**{field: bad})
    assert ValidateConfig(max_duplicate_share=1.0, max_blank_share=1.0, class_balance_ratio=1.0, min_images=0)


def test_a_nan_balance_ratio_is_refused():
    """NaN compared false with 1 and dropped the balance check of a direct caller's config."""
    with pytest.raises(ValueError, match=r"class_balance_ratio: expected >= 1, found nan"):
        ValidateConfig(class_balance_ratio=float("nan"))


def test_a_dataset_without_a_test_split_fails_here_not_after_training(ingested, tmp_path):
    """The required splits were those the manifest listed: without a test split validate passed, and evaluate
    failed after both trainings."""
    manifest = json.loads((ingested / "manifest.json").read_text())
    del manifest["counts"]["test"]
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    (ingested / "test.npz").unlink()
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert ("splits", "test_images", 0) in [(f["table"], f["column"], f["observed"]) for f in failure.value.failures]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("image_shape", [28, 28], r"expected image_shape \[height, width, channels\] of positive sizes, found \[28, 28\]"),
    ("class_names", [], r"expected class_names, a list of at least one class, found \[\]"),
    ("counts", {"train": -1}, r"expected counts, each split's number of images, found \{'train': -1\}"),
])
def test_a_manifest_it_cannot_make_expectations_from_is_a_data_error_naming_it(ingested, tmp_path, key, value,
                                                                              message):
    manifest = json.loads((ingested / "manifest.json").read_text())
    manifest[key] = value
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"^{re.escape(str(ingested / 'manifest.json'))}: {message}$"):
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert not (tmp_path / "v").exists()


def test_splits_without_images_or_images_without_pixels_are_data_errors(ingested, tmp_path):
    manifest = json.loads((ingested / "manifest.json").read_text())
    for split in ("train", "test"):
        rewrite(ingested, split, lambda images, labels: (images[:, :, :0], labels))
    with pytest.raises(DataError, match=r"expected images of at least one pixel, found \w+ images of shape "
                                        r"\[28, 0, 1\]$"):
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    for split in ("train", "test"):
        rewrite(ingested, split, lambda images, labels: (images[:0], labels[:0]))
    manifest["counts"] = {"train": 0, "test": 0}
    (ingested / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"expected images in the train and test splits, found none in any split$"):
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")


def test_a_copy_with_a_label_outside_the_classes_is_named_not_a_crash(ingested, tmp_path):
    """Naming the two classes of a training copy indexed the class names with the label: 12 raised IndexError, -1
    named the last class."""
    def copy_with_bad_labels(images, labels):
        images[1], images[3] = images[0], images[2]
        labels[1], labels[3] = 12, -1
        return images, labels

    rewrite(ingested, "train", copy_with_bad_labels)
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(), ingest=ingested, out=tmp_path / "v")
    assert [f["column"] for f in failure.value.failures] == ["label"]
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    names = json.loads((ingested / "manifest.json").read_text())["class_names"]
    with np.load(ingested / "train.npz") as train:
        first, third = (names[train["labels"][row]] for row in (0, 2))
    assert report["label_conflicts"] == [f"train image 1 ≈ train image 0 (label 12 and {first})",
                                         f"train image 3 ≈ train image 2 (label -1 and {third})"]


@pytest.mark.parametrize("change", [
    lambda x: np.clip(x.astype(int) + 3, 0, 255).astype(np.uint8),
    lambda x: np.clip(x.astype(int) - 6, 0, 255).astype(np.uint8),
    lambda x: jpeg(x, 75),
], ids=["brighter-3", "darker-6", "jpeg-75"])
def test_a_test_image_re_encoded_or_brightened_in_training_is_a_near_duplicate(ingested, tmp_path, change):
    """The thumbnails, quantised to 16 levels, had to be equal: a copy one grey level brighter matched one time in
    ten (a level boundary between them), a JPEG at quality 75 one in ten; every cell within 8 levels matches all."""
    def leak(images, labels):
        with np.load(ingested / "test.npz") as test:
            images[-30:] = change(test["images"][:30])
        return images, labels

    rewrite(ingested, "train", leak)
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig())
    assert entry["column"] == "test_in_train_share" and "e.g. [0.5]" in entry["observed"]  # 30 of the 60


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """``images`` (uint8 ``[N, H, W, 1]``) saved as JPEG at ``quality`` and read back."""
    import io  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    def again(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0]).save(buffer, "JPEG", quality=quality)
        return np.asarray(Image.open(buffer))[..., None]

    return np.stack([again(image) for image in images])


def _recount(ingest_dir, split: str = "train"):
    """The manifest, its count of ``split`` set to the images its rewritten ``<split>.npz`` holds."""
    manifest = json.loads((ingest_dir / "manifest.json").read_text())
    with np.load(ingest_dir / f"{split}.npz") as table:
        manifest["counts"][split] = int(table["labels"].size)
    (ingest_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def test_a_training_class_under_min_images_over_k_fails_on_its_count(ingested, tmp_path):
    """Class 2 keeps 4 training images: within the share bounds of ratio 10 ([0.01, 1]), under min_images / K = 6."""
    def starve_class_2(images, labels):
        keep = (labels != 2) | (np.cumsum(labels == 2) <= 4)
        return images[keep], labels[keep]

    rewrite(ingested, "train", starve_class_2)
    manifest = _recount(ingested)
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig(min_images=60, class_balance_ratio=10.0))
    assert (entry["table"], entry["column"], entry["expected"]) == ("classes", "train_count", {"min_value": 6.0})
    assert entry["observed"].endswith(f"e.g. [4] at class {manifest['class_names'][2]}")


@pytest.mark.parametrize("share", ["low", "high"])
def test_a_training_share_just_outside_the_balance_bounds_fails(ingested, tmp_path, share):
    """class_balance_ratio r = 2, K = 10: each class's share of training within [0.05, 0.2]; class 2 at about 0.035,
    or class 0 at about 0.25, is outside (both pass at r = 5)."""
    def change(images, labels):
        if share == "low":
            keep = (labels != 2) | (np.cumsum(labels == 2) <= 10)
            return images[keep], labels[keep]
        labels = labels.copy()
        labels[np.flatnonzero(labels != 0)[:45]] = 0
        return images, labels

    rewrite(ingested, "train", change)
    _recount(ingested)
    assert run(ValidateConfig(class_balance_ratio=5.0), ingest=ingested, out=tmp_path / "v")["success"]
    with pytest.raises(ValidationFailedError) as failure:
        run(ValidateConfig(class_balance_ratio=2.0), ingest=ingested, out=tmp_path / "v2")
    assert [(f["column"], f["expected"]) for f in failure.value.failures] == [
        ("train_share", {"min_value": 0.05, "max_value": 0.2})]


def _write_val(ingested, copies: dict[int, tuple[str, int]], classes: tuple[int, ...] = tuple(range(10))) -> dict:
    """A val split of two images per class of ``classes``, of random pixels (no near-duplicate of any image), but
    for ``copies``: val row -> (split, row) of the image it copies; returns the manifest, which counts it."""
    images = np.random.default_rng(0).integers(0, 256, (2 * len(classes), 28, 28, 1), dtype=np.uint8)
    for row, (split, source) in copies.items():
        with np.load(ingested / f"{split}.npz") as arrays:
            images[row] = arrays["images"][source]
    np.savez(ingested / "val.npz", images=images, labels=np.repeat(classes, 2))
    return _recount(ingested, "val")


def test_a_val_split_with_a_near_duplicate_in_training_fails(ingested, tmp_path):
    """The overlap table checks the dataset's own val split too (it picks the epoch and fits the temperature)."""
    _write_val(ingested, {0: ("train", 17)})
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig())
    assert (entry["table"], entry["column"]) == ("overlap", "val_in_train_share")
    assert "; near-duplicates: val image 0 ≈ train image 17 (every pair:" in entry["observed"]


def test_a_val_split_with_a_near_duplicate_in_the_test_split_fails(ingested, tmp_path):
    """A val split made of test images (the same photos under other names in val/ and test/) passed: every model
    selection, the temperature and the gate's CE reference were then chosen on the test images the gate judges."""
    _write_val(ingested, {})
    assert run(ValidateConfig(), ingest=ingested, out=tmp_path / "ok")["near_duplicates"]["val_in_test"] == []
    _write_val(ingested, {3: ("test", 5), 8: ("test", 40)})
    entry = _the_one_failure(ingested, tmp_path, ValidateConfig(max_duplicate_share=0.05))  # 2 of 20 is over
    assert (entry["table"], entry["column"], entry["expected"]) == ("overlap", "val_in_test_share",
                                                                   {"min_value": 0.0, "max_value": 0.05})
    assert entry["observed"].startswith("1 of 1 values unexpected, e.g. [0.1]")
    assert entry["observed"].endswith("; near-duplicates: val image 3 ≈ test image 5, val image 8 ≈ test image 40 "
                                      "(every pair: report.json's near_duplicates); remove one image of each pair, "
                                      "or put both in one split")
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["near_duplicates"]["val_in_test"] == ["val image 3 ≈ test image 5", "val image 8 ≈ test image 40"]
    assert report["near_duplicates"]["val"] == []  # none in training
    assert run(ValidateConfig(max_duplicate_share=0.1), ingest=ingested, out=tmp_path / "at")["success"]  # 0.1 <= 0.1


def _the_one_failure(ingested, tmp_path, config: ValidateConfig) -> dict:
    """The single failure of validating ``ingested`` under ``config``."""
    with pytest.raises(ValidationFailedError) as failure:
        run(config, ingest=ingested, out=tmp_path / "v")
    (entry,) = failure.value.failures
    return entry


def test_thumbnails_are_the_same_in_chunks_as_whole(monkeypatch):
    """A folder of photos is fingerprinted a chunk at a time (in float32 at once it would not fit in memory)."""
    from components.common import thumbnails as module  # noqa: PLC0415

    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    whole = thumbnails(images)
    monkeypatch.setattr(module, "CHUNK", 3)
    assert thumbnails(images) == whole and len(set(whole)) == 10
