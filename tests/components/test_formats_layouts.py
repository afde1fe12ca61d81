"""The image folder's layouts as users lay them out (torchvision's, Kaggle's), Fashion-MNIST's image shape, and
text files that are not UTF-8: each once read wrong without a word, or failed with no file or line named."""

import gzip
import re

import numpy as np
import pytest

from components.common.errors import DataError
from components.formats import clothing1m as c1m
from components.formats.idx import FASHION_MNIST_FILES
from components.formats.imagefolder import read_imagefolder
from components.ingest import IngestConfig, run
from tests.components.conftest import idx_bytes
from tests.components.formats_fixtures import write_clothing1m, write_image


def write_split(root, split, count, *, start=0, classes=("a", "b")):
    """``count`` grey 6x6 images in ``root/split/<class>/`` (``split`` "": the class folders at the top), 11 grey
    levels apart: no two of one split near-duplicates (within 8)."""
    for i in range(start, start + count):
        write_image(root / split / classes[i % len(classes)] / f"{i}.png", (6, 6), (i * 11 % 256,) * 3)


def read(root, **kwargs):
    return read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0, **kwargs)


def test_a_chain_of_near_duplicates_spanning_the_classes_is_named_not_an_empty_test_split(tmp_path):
    """Swatches each 6 grey levels from the next are near-duplicates one to the next: one group of all of them,
    held out whole or not at all. The drawn test split came out empty, and validate failed naming no cause."""
    for i in range(40):
        write_image(tmp_path / "ab"[i % 2] / f"{i}.png", (6, 6), (30 + 6 * i,) * 3)
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (
        f"{tmp_path}: expected a test image of every class drawn from the training images (ingest.test_fraction "
        f"0.25), found none of a, b: near-duplicates go to one split together, and 40 of the 40 training images are "
        f"one group of them (images a few grey levels apart, joined one to the next); give a test/ folder, or "
        f"remove the near-duplicates")


@pytest.mark.parametrize("name", ["val", "valid", "validation"])
def test_the_val_split_is_read_from_val_valid_or_validation(tmp_path, name):
    """train/ with validation/ (Kaggle's, Hugging Face's) beside it: the clean validation/ was ignored unsaid."""
    write_split(tmp_path, "train", 8)
    write_split(tmp_path, name, 4, start=100)
    write_split(tmp_path, "test", 4, start=200)
    dataset = read(tmp_path)
    assert dataset.class_names == ["a", "b"]
    assert (dataset.train_labels.size, dataset.val_labels.size, dataset.test_labels.size) == (8, 4, 4)
    assert sorted(dataset.val_keys) == [f"{name}/a/100.png", f"{name}/a/102.png", f"{name}/b/101.png",
                                        f"{name}/b/103.png"]


def test_labels_csv_reads_split_names_as_the_split_folders_are_read(tmp_path):
    """``valid``, ``Validation``, ``Train``, ``TESTING``: the names a folder may have; ``Train`` was refused."""
    rows = ["filename,label,split"]
    for i, split in enumerate(["train", "Train", "training", "TRAIN", "valid", "Validation", "val", "test",
                               "Testing", "TEST"]):
        write_image(tmp_path / "pics" / f"{i}.png", (6, 6), (i * 20,) * 3)
        rows.append(f"pics/{i}.png,{'ab'[i % 2]},{split}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = read(tmp_path)
    assert dataset.val_keys == ["pics/4.png", "pics/5.png", "pics/6.png"]
    assert sorted(dataset.test_keys) == ["pics/7.png", "pics/8.png", "pics/9.png"]
    assert dataset.train_labels.size == 4


def test_labels_csv_names_an_unknown_split_and_its_line(tmp_path):
    write_image(tmp_path / "0.png", (6, 6), (0, 0, 0))
    (tmp_path / "labels.csv").write_text("filename,label,split\n0.png,a,dev\n")
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'labels.csv'} line 2: expected split train, val or test (in any "
                                 f"letter case; also training, valid, validation, testing), found 'dev'")


def test_two_val_folders_or_a_split_under_another_name_beside_train_are_refused(tmp_path):
    write_split(tmp_path, "train", 8)
    write_split(tmp_path, "val", 2, start=100)
    write_split(tmp_path, "validation", 2, start=200)
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: expected one val split folder (val/, valid/ or validation/), found "
                                 f"val/ and validation/: merge them into one")
    for split in ("val", "validation"):
        (tmp_path / split).rename(tmp_path / {"val": "dev", "validation": "notes"}[split])
    (tmp_path / "notes" / "a").rename(tmp_path / "notes" / "drafts")  # no class names: not a split, not read
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'dev'}: expected beside train/ only the splits val/, valid/ or "
                                 f"validation/ and test/, found dev/ holding folders named like train/'s classes "
                                 f"(a/, b/): rename it to the split it is, or move it out of {tmp_path}")
    (tmp_path / "dev").rename(tmp_path / "valid")
    assert read(tmp_path).val_labels.size == 2


@pytest.mark.parametrize("name", ["valid", "validation", "Test", "Validation", "TESTING"])
def test_a_top_level_split_folder_without_train_is_refused_not_made_a_class(tmp_path, name):
    """``a/ b/ valid/{a,b}``: the classes came out as a, b and valid, the clean images a class trained on; the
    split's name was matched exactly, so ``Test/`` became a class too."""
    write_split(tmp_path, "", 8)
    write_split(tmp_path, name, 4, start=100)
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / name}: expected {name}/ beside train/ (train/<class>/*, "
                                 f"{name}/<class>/*), found {name}/ with class folders without train/: move the "
                                 f"class folders (a/, b/) into train/")


def test_a_top_level_folder_of_folders_named_like_the_classes_is_refused(tmp_path):
    write_split(tmp_path, "", 8, classes=("a", "b", "c"))
    write_split(tmp_path, "holdout", 4, start=100, classes=("a", "b"))
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'holdout'}: expected a class folder, found holdout/ holding folders "
                                 f"named like the classes (a/, b/), a split: move the class folders (a/, b/, c/) "
                                 f"into train/, and holdout/ beside it as val/ or test/")
    (tmp_path / "holdout" / "b").rename(tmp_path / "holdout" / "indoor")  # a class's own sub-folders: read
    write_image(tmp_path / "holdout" / "outdoor" / "x.png", (6, 6), (1, 1, 1))
    assert read(tmp_path).class_names == ["a", "b", "c", "holdout"]


@pytest.mark.parametrize("split", ["train", "val", ""])
def test_an_image_beside_the_class_folders_is_refused_not_dropped(tmp_path, split):
    """train/x.png (in no class folder) was ignored with no warning; notes beside the class folders are no image."""
    write_split(tmp_path, "train" if split else "", 8)
    if split == "val":
        write_split(tmp_path, "val", 2, start=100)
    (tmp_path / split / "README.txt").write_text("how these were collected")
    assert read(tmp_path).train_labels.size == 6
    for name in ("z.png", "y.JPG"):
        write_image(tmp_path / split / name, (6, 6), (9, 9, 9))
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    where = f"{split}/<class>/*" if split else "<class>/*"
    folder = tmp_path / split if split else tmp_path
    assert str(caught.value) == (f"{folder / 'y.JPG'}: expected images in class folders ({where}), found 2 images "
                                 f"in {folder} itself, in no class folder: move each into its class's folder")


def test_a_linked_sub_folder_inside_the_folder_is_read_once_and_one_leading_out_is_refused(tmp_path):
    """A folder link under a class folder was not followed (Path.rglob does not), though the docstring said links
    inside the folder are; a link back up must not loop, and one leading out is refused like a file link."""
    root = tmp_path / "mine"
    write_split(root, "train", 4)
    write_image(root / "shared" / "9.png", (6, 6), (90, 90, 90))
    (root / "train" / "b" / "more").symlink_to(root / "shared")
    (root / "train" / "b" / "again").symlink_to(root / "train" / "b")  # a loop: read once
    dataset = read(root)
    assert sorted(dataset.train_keys + dataset.test_keys) == ["train/a/0.png", "train/a/2.png", "train/b/1.png",
                                                             "train/b/3.png", "train/b/more/9.png"]
    write_image(tmp_path / "elsewhere" / "7.png", (6, 6), (70, 70, 70))
    (root / "train" / "a" / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError) as caught:
        read(root)
    assert str(caught.value) == (f"{root / 'train' / 'a' / 'out'}: expected a file inside {root}, found a symbolic "
                                 f"link to {tmp_path / 'elsewhere'}, outside it")


@pytest.mark.parametrize("shape", [(28, 20), (20, 28)])
def test_non_square_idx_images_are_refused_naming_the_file_and_shape(fashion_dir, tmp_path, shape):
    """28x20 Fashion-MNIST images passed ingest and failed in training with a shape error."""
    name = FASHION_MNIST_FILES["train"][0]
    (fashion_dir / name).write_bytes(gzip.compress(idx_bytes(np.zeros((300, *shape)), 0x0803)))
    with pytest.raises(DataError) as caught:
        run(IngestConfig(path=str(fashion_dir)), out=tmp_path / "out")
    assert str(caught.value) == (f"{fashion_dir / name}: expected square images (width = height), found "
                                 f"{shape[1]}x{shape[0]} images (width x height)")


def test_idx_test_images_of_another_size_than_the_training_images_are_refused(fashion_dir, tmp_path):
    name = FASHION_MNIST_FILES["test"][0]
    (fashion_dir / name).write_bytes(gzip.compress(idx_bytes(np.zeros((60, 32, 32)), 0x0803)))
    with pytest.raises(DataError) as caught:
        run(IngestConfig(path=str(fashion_dir)), out=tmp_path / "out")
    assert str(caught.value) == (f"{fashion_dir / name}: expected 28x28 images (width x height) like "
                                 f"{FASHION_MNIST_FILES['train'][0]}, found 32x32")


def spoil(path, line: int, byte: bytes = b"\xff") -> int:
    """Put ``byte`` (not UTF-8) at the start of line ``line`` of ``path``; its offset in the file."""
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = byte + lines[line - 1]
    path.write_bytes(b"\n".join(lines))
    return sum(len(x) + 1 for x in lines[:line - 1])


@pytest.mark.parametrize("name", ["noisy_label_kv.txt", "clean_label_kv.txt", "category_names_eng.txt",
                                  "noisy_train_key_list.txt", "clean_test_key_list.txt"])
def test_clothing1m_text_that_is_not_utf8_is_refused_naming_file_and_line(tmp_path, name):
    """``'utf-8' codec can't decode byte 0xff in position 157``, naming neither the file nor the line."""
    source = write_clothing1m(tmp_path / "c1m", per_split=3, train=2000)
    (source / "category_names_eng.txt").write_text("\n".join(f"class {i}" for i in range(14)) + "\n")
    line = 1990 if "train" in name or "noisy" in name else 3  # far past the decoder's first chunk
    offset = spoil(source / name, line, b"\xe9" if "category" in name else b"\xff")
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    found = "0xe9" if "category" in name else "0xff"
    assert str(caught.value) == (f"{source / name} line {line}: expected UTF-8 text, found byte {found} (byte "
                                 f"{offset} of the file); save the file as UTF-8")


def test_clothing1m_label_file_not_utf8_is_named_when_read_alone(tmp_path):
    path = tmp_path / "noisy_label_kv.txt"
    path.write_bytes(b"images/0/00/a.jpg 1\nimages/0/00/\xffb.jpg 2\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 2: expected UTF-8 text, found byte 0xff \(byte 32 "):
        c1m.read_label_kv(path, 14)


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["utf-8", "excel-utf-8"])
def test_a_labels_csv_that_is_not_utf8_is_refused_naming_its_line(tmp_path, bom):
    """A labels.csv saved as Latin-1 (``café`` as 0xe9) failed with the codec's words and no file or line."""
    for i in range(4):
        write_image(tmp_path / "pics" / f"{i}.png", (6, 6), (i * 30,) * 3)
    rows = ["filename,label"] + [f"pics/{i}.png,{'tea' if i % 2 else 'caf'}" for i in range(4)]
    (tmp_path / "labels.csv").write_bytes(bom + "\n".join(rows).encode() + b"\n")
    assert read(tmp_path).class_names == ["caf", "tea"]
    offset = len(bom) + sum(len(r) + 1 for r in rows[:3]) + len("pics/2.png,caf")
    (tmp_path / "labels.csv").write_bytes(bom + "\n".join(rows).replace("2.png,caf", "2.png,caf\xe9")
                                          .encode("latin-1") + b"\n")
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'labels.csv'} line 4: expected UTF-8 text, found byte 0xe9 (byte "
                                 f"{offset} of the file); save the file as UTF-8")


def test_a_class_named_otherwise_in_one_split_is_refused_naming_both(tmp_path):
    """A class folder renamed in train/ only became a class with no val or test images, which validate reported
    as counts of 0 class by class; ingest now names the classes each side has alone."""
    write_split(tmp_path, "train", 8, classes=("a", "plus"))
    write_split(tmp_path, "val", 4, start=100, classes=("a", "cross"))
    with pytest.raises(DataError) as err:
        read(tmp_path)
    assert str(err.value) == (f"{tmp_path}: expected the same classes in train and val, found 'cross' in val only "
                              "and 'plus' in train only: name each class the same in every split")
    write_split(tmp_path, "val", 2, start=200, classes=("plus",))  # val has a class more than train: named alone
    write_split(tmp_path, "test", 4, start=300, classes=("a",))
    with pytest.raises(DataError) as err:
        read(tmp_path)
    assert str(err.value).endswith("found 'cross' in val only: name each class the same in every split")


@pytest.mark.parametrize(("train", "val", "test"), [("Train", "Valid", "Test"), ("Training", None, "Test"),
                                                    ("TRAIN", "VALIDATION", "Testing"), ("train", None, "Test")],
                         ids=["kaggle", "fruits-360", "capitals", "one-capital"])
def test_split_folders_are_found_in_any_letter_case_and_under_their_synonyms(tmp_path, train, val, test):
    """Fruits-360 publishes Training/<class>/* and Test/<class>/*; Kaggle's copies have Train/ and Test/. Matched
    exactly, they were read in the <class>/* layout as two classes, "Test" and "Training", each class's images one
    class, and validate passed."""
    write_split(tmp_path, train, 8)
    write_split(tmp_path, test, 4, start=100)
    if val:
        write_split(tmp_path, val, 2, start=200)
    dataset = read(tmp_path)
    assert dataset.class_names == ["a", "b"] and dataset.test_source == "the dataset's test split"
    assert (dataset.train_labels.size, dataset.test_labels.size) == (8, 4)
    assert dataset.val_keys == (None if val is None else [f"{val}/a/200.png", f"{val}/b/201.png"])
    assert sorted(dataset.test_keys)[0] == f"{test}/a/100.png"


@pytest.mark.parametrize(("one", "other"), [("Training", "train"), ("Valid", "val"), ("TEST", "testing")])
def test_two_folders_naming_one_split_are_refused_naming_both(tmp_path, one, other):
    split = {"Training": "train", "Valid": "val", "TEST": "test"}[one]
    if split != "train":
        write_split(tmp_path, "train", 8)
    write_split(tmp_path, one, 4, start=100)
    write_split(tmp_path, other, 4, start=200)
    shown = {"train": "train/ or training/", "val": "val/, valid/ or validation/", "test": "test/ or testing/"}[split]
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: expected one {split} split folder ({shown}), found {one}/ and "
                                 f"{other}/: merge them into one")


@pytest.mark.parametrize("split", ["test", "val", "Test"])
def test_a_split_folder_of_loose_images_is_refused_not_dropped(tmp_path, split):
    """test/ holding its images directly, with no class folder, was read as no split at all: the user's
    hand-checked test set vanished and a test split was drawn from the training images instead."""
    write_split(tmp_path, "train", 8)
    for i in range(3):
        write_image(tmp_path / split / f"{i}.png", (6, 6), (i * 40,) * 3)
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    folder = tmp_path / split
    assert str(caught.value) == (f"{folder / '0.png'}: expected images in class folders ({split}/<class>/*), found 3 "
                                 f"images in {folder} itself, in no class folder: move each into its class's folder")


def write_csv_folder(root, text):
    """Four images ``0.png`` .. ``3.png`` and a labels.csv of ``text``."""
    for i in range(4):
        write_image(root / f"{i}.png", (6, 6), (i * 40,) * 3)
    (root / "labels.csv").write_text(text)


@pytest.mark.parametrize(("text", "lines"), [
    ("filename,label,split\n0.png,a,train\n1.png,b,train\n\n2.png,a,train\n3.png,b,train\n0.png,a,test\n", "2 and 7"),
    ('filename,label,split\n0.png,"a\nb",train\n1.png,b,train\n2.png,a,train\n0.png,a,test\n', "3 and 6"),
], ids=["blank-line", "field-over-two-lines"])
def test_labels_csv_errors_name_the_line_after_a_blank_line_or_a_quoted_line_break(tmp_path, text, lines):
    """Records counted from line 2 named line 6 for the 7th line after a blank one (Excel and hand edits leave
    them), and too low a line after a field quoted over two lines: the line is where the record ends."""
    write_csv_folder(tmp_path, text)
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'labels.csv'} lines {lines}: expected each file listed once, found "
                                 f"0.png listed in train and in test (a file in two splits leaks one into the other)")


def test_a_stray_quote_in_a_large_labels_csv_is_named_with_its_line(tmp_path):
    """An opening quote never closed makes one field of every line after it: past 131072 characters csv raised
    ``_csv.Error: field larger than field limit`` as a traceback naming no file or line."""
    lines = ["filename,label,split"] + [f"img_{i:05d}.png,{'ab'[i % 2]},train" for i in range(20000)]
    lines[4] = '"img_00003.png,b,train'
    lines.insert(4, "")  # the record after line 3 starts on line 5, past the blank line
    write_csv_folder(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        read(tmp_path)
    found = re.fullmatch(rf"{re.escape(str(tmp_path / 'labels.csv'))} line (\d+): expected one record a line, found "
                         r"a field of more than 131072 characters running from line 6 \(field larger than field "
                         r'limit \(131072\)\): likely a quote \("\) opened on line 6 and never closed; close or '
                         r"remove it", str(caught.value))
    assert found and 5000 < int(found[1]) < 20002  # the line where csv gave up, far past the quote


def test_a_class_named_like_a_split_in_another_word_or_case_stays_a_class(tmp_path):
    """Matching split folders in any case and under their synonyms must not turn the <class>/* layout's class
    ``Training`` (photos of a workout, say) into a train split of loose images."""
    for name in ("Training", "resting"):
        for i in range(4):
            write_image(tmp_path / name / f"{i}.png", (6, 6), (i * 40 + len(name),) * 3)
    assert read(tmp_path).class_names == ["Training", "resting"]
