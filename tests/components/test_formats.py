"""Each dataset format read from a tiny fixture written in exactly its published layout."""

import dataclasses
import errno
import hashlib
import json
import os
import pickle
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components import ingest as ingest_module
from components.common.atomic import UMASK, OutputError, write_atomic
from components.common.errors import DataError
from components.common.thumbnails import fingerprints, first_matches
from components.formats import cifar, inside
from components.formats import clothing1m as c1m
from components.formats import images as images_module
from components.formats.cifar import read_cifar10, read_cifar10n, read_cifar100, read_cifar100n
from components.formats.imagefolder import read_imagefolder
from components.formats.images import ImageTooLargeError, check_encoded, load_image
from components.formats.webdataset import read_index
from components.ingest import IngestConfig, run
from components.ingest import main as ingest_main
from tests.components.formats_fixtures import (
    CIFAR100_SUPERCLASSES,
    refuse_resizes_over,
    write_cifar10,
    write_cifar10n,
    write_cifar100,
    write_cifar100n,
    write_clothing1m,
    write_distinct_image,
    write_image,
)


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_cifar10(tmp_path, tarball):
    source = write_cifar10(tmp_path / "cifar", tarball=tarball)
    manifest = run(IngestConfig(dataset="cifar10", path=str(source)), out=tmp_path / "out")
    with np.load(tmp_path / "out" / "train.npz") as train:
        images, labels = train["images"], train["labels"]
    assert images.shape == (20, 32, 32, 3) and labels.tolist()[:5] == [0, 1, 2, 3, 1]
    assert manifest["class_names"][9] == "truck" and manifest["counts"] == {"train": 20, "test": 4}


def test_cifar10_channel_layout(tmp_path):
    """Each row of ``data`` is the red, then green, then blue 32x32 plane, row-major."""
    source = write_cifar10(tmp_path / "cifar")
    run(IngestConfig(dataset="cifar10", path=str(source)), out=tmp_path / "out")
    first = pickle.loads((source / "cifar-10-batches-py/data_batch_1").read_bytes(), encoding="bytes")[b"data"][0]
    with np.load(tmp_path / "out" / "train.npz") as train:
        image = train["images"][0]
    for channel in range(3):
        assert (image[:, :, channel].ravel() == first[1024 * channel:1024 * (channel + 1)]).all()
    assert image[0, 1, 0] == first[1] and image[1, 0, 0] == first[32]


def _blocky_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 ``[n, 32, 32, 3]`` with spatial structure, as photos have: random colours in 4x4 blocks."""
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)


@pytest.mark.parametrize("layout", ["planes", "pixels"])
def test_cifar10_rows_written_pixel_by_pixel_are_refused_not_scrambled(tmp_path, layout):
    """A batch written from ``[N, 32, 32, 3]`` images flattened as they were reads as noise; it is named, with how to
    write it, and the same images written plane by plane read back exactly."""
    source = write_cifar10(tmp_path / "cifar")
    images = _blocky_images(6)
    rows = images.transpose(0, 3, 1, 2) if layout == "planes" else images
    batch = {b"labels": [0, 1, 2, 3, 4, 5], b"data": rows.reshape(6, 3072)}
    (source / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    if layout == "pixels":
        with pytest.raises(DataError, match=r"\(data_batch_2\): expected each row of data to hold the red, green and "
                           r"blue 32x32 planes one after the other \(CIFAR-10's layout\), found rows that look written "
                           r"pixel by pixel .*write each image as image.transpose\(2, 0, 1\).reshape\(3072\)$"):
            read_cifar10(source)
        return
    assert (read_cifar10(source).train_images[4:10] == images).all()


def test_cifar10_layout_check_passes_rows_without_structure():
    """Noise and flat grey carry no evidence of a layout: neither is refused."""
    noise = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    for rows in (noise, np.full((3, 3072), 128, np.uint8), _blocky_images(4).transpose(0, 3, 1, 2).reshape(4, -1)):
        cifar._check_planar(rows, "batch")
    next_row, three_rows = cifar.row_differences(_blocky_images(64).reshape(64, -1))
    assert three_rows < 0.5 * next_row  # written pixel by pixel: far below the 0.75 the check refuses under


def test_cifar10_refuses_a_pickle_that_would_run_code(tmp_path):
    source = write_cifar10(tmp_path / "cifar")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (source / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"data_batch_3: expected a pickled CIFAR-10 batch, found unreadable data "
                                        r"\(global posix.system is not allowed\)"):
        run(IngestConfig(dataset="cifar10", path=str(source)), out=tmp_path / "out")


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_a_cifar10_batch_far_larger_than_the_published_is_refused_before_it_is_read(tmp_path, monkeypatch,
                                                                                   tarball):
    source = write_cifar10(tmp_path / "cifar", tarball=tarball)
    # the fixture's batches: about 3 KB each; published: 31 MB
    monkeypatch.setattr(cifar, "CIFAR10", dataclasses.replace(cifar.CIFAR10, max_batch=4000))
    size = (source / "cifar-10-batches-py" / "data_batch_1").stat().st_size if not tarball else None
    with pytest.raises(DataError) as err:
        read_cifar10(source)
    assert re.fullmatch(r".*data_batch_1\)?: expected a CIFAR-10 python batch of at most 4000 bytes, found "
                        rf"{size or '[0-9]+'} bytes", str(err.value))


@pytest.mark.parametrize("tarball", [False, True], ids=["folder", "tarball"])
def test_cifar100(tmp_path, tarball):
    """The python version's train and test files with their fine labels; the manifest records each superclass's
    fine classes, which asymmetric noise flips within."""
    source = write_cifar100(tmp_path / "c100", tarball=tarball)
    manifest = run(IngestConfig(dataset="cifar100", path=str(source)), out=tmp_path / "out")
    folder = tmp_path / "c100" / "cifar-100-python"
    published = pickle.loads((folder / "train").read_bytes(), encoding="bytes") if not tarball else None
    with np.load(tmp_path / "out" / "train.npz") as train:
        images, labels = train["images"], train["labels"]
    assert images.shape == (200, 32, 32, 3) and manifest["counts"] == {"train": 200, "test": 100}
    assert manifest["class_names"][:3] == ["apple", "aquarium_fish", "baby"] and len(manifest["class_names"]) == 100
    assert manifest["superclasses"] == CIFAR100_SUPERCLASSES
    assert sorted(manifest["inputs_sha256"]) == (["cifar-100-python.tar.gz"] if tarball else
                                                 ["cifar-100-python/meta", "cifar-100-python/test",
                                                  "cifar-100-python/train"])
    if published:
        assert labels.tolist() == published[b"fine_labels"]
        assert (images[3, :, :, 1].ravel() == published[b"data"][3][1024:2048]).all()  # the green plane


def test_cifar100_errors_name_cifar100_and_the_file(tmp_path):
    source = write_cifar100(tmp_path / "c100")
    folder = source / "cifar-100-python"
    train = pickle.loads((folder / "train").read_bytes(), encoding="bytes")
    train[b"coarse_labels"][train[b"fine_labels"].index(0)] = 1  # one apple among the fish
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    with pytest.raises(DataError, match=r"c100 \(train\): expected each fine class under one coarse class, found "
                                        r"apple under fish and fruit_and_vegetables$"):
        read_cifar100(source)
    train[b"coarse_labels"] = train[b"coarse_labels"][:-1]
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    with pytest.raises(DataError, match=r"c100 \(train\): expected 200 coarse_labels \(one per row of data\), found "
                                        r"199$"):
        read_cifar100(source)
    del train[b"coarse_labels"]
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    with pytest.raises(DataError, match=r"cifar-100-python/train: expected the key 'coarse_labels', found keys"):
        read_cifar100(source)
    (folder / "train").unlink()
    with pytest.raises(DataError, match=r"cifar-100-python/train: expected a CIFAR-100 python batch, found no such "
                                        r"file"):
        read_cifar100(source)
    shutil.rmtree(folder)
    (source / "cifar-100-binary.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"expected the python version of CIFAR-100 \(cifar-100-python.tar.gz or "
                                        r"cifar-100-python/\), found the binary version \(cifar-100-binary.tar.gz\)"):
        read_cifar100(source)


def test_cifar100n(tmp_path):
    """CIFAR-100N's noisy_label lands in human_labels.npz; its clean_label must be this copy's labels in order, and
    the params left at CIFAR-10N's file are named."""
    source = write_cifar100(tmp_path / "c100")
    published = pickle.loads((source / "cifar-100-python" / "train").read_bytes(), encoding="bytes")
    clean, coarse = np.array(published[b"fine_labels"]), np.array(published[b"coarse_labels"])
    write_cifar100n(source / "CIFAR-100_human.pt", clean, coarse)
    with pytest.raises(ValueError, match=r"human_labels: expected the path of CIFAR-100_human.pt for dataset "
                                         r"cifar100n, found 'CIFAR-10_human.pt'"):
        IngestConfig(dataset="cifar100n", path=str(source))
    manifest = run(IngestConfig(dataset="cifar100n", path=str(source), human_labels="CIFAR-100_human.pt"),
                   out=tmp_path / "out")
    with np.load(tmp_path / "out" / "human_labels.npz") as human:
        assert human.files == ["noisy_label"] and human["noisy_label"].shape == (200,)
    assert sorted(manifest["inputs_sha256"]) == ["CIFAR-100_human.pt", "cifar-100-python/meta",
                                                 "cifar-100-python/test", "cifar-100-python/train"]
    assert manifest["superclasses"] == CIFAR100_SUPERCLASSES
    write_cifar100n(source / "CIFAR-100_human.pt", np.roll(clean, 1), coarse)
    with pytest.raises(DataError, match=r"CIFAR-100_human.pt: expected clean_label to equal the CIFAR-100 training "
                                        r"labels in order, found [0-9]+ differences"):
        read_cifar100n(source, source / "CIFAR-100_human.pt")


def test_cifar10_missing_batch(tmp_path):
    source = write_cifar10(tmp_path / "cifar")
    (source / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch: expected a CIFAR-10 python batch, found no such file"):
        run(IngestConfig(dataset="cifar10", path=str(source)), out=tmp_path / "out")


def test_cifar10n_human_labels(tmp_path):
    source = write_cifar10(tmp_path / "cifar")
    clean = read_cifar10(source).train_labels
    write_cifar10n(source / "CIFAR-10_human.pt", clean)
    run(IngestConfig(dataset="cifar10n", path=str(source), human_labels="CIFAR-10_human.pt"), out=tmp_path / "out")
    with np.load(tmp_path / "out" / "human_labels.npz") as table:
        assert set(table.files) == {"aggre_label", "worse_label", "random_label1", "random_label2", "random_label3"}
        assert (table["aggre_label"] == clean).all()


def test_cifar10n_human_labels_pickled_under_numpy_1(tmp_path):
    """The published CIFAR-10_human.pt was written under numpy 1.x, whose pickles name
    numpy.core.multiarray._reconstruct: the weights-only loader must admit that name as well as numpy 2's."""
    source = write_cifar10(tmp_path / "cifar")
    clean = read_cifar10(source).train_labels
    human = write_cifar10n(source / "CIFAR-10_human.pt", clean, numpy1=True)
    with zipfile.ZipFile(human) as archive:
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    assert b"numpy.core.multiarray\n_reconstruct" in pickled and b"numpy._core" not in pickled
    dataset = read_cifar10n(source, human)
    assert (dataset.extra["aggre_label"] == clean).all() and (dataset.extra["random_label3"] == clean).all()
    assert dataset.extra["worse_label"].shape == clean.shape


def test_cifar10n_human_labels_must_live_inside_the_dataset_folder(tmp_path):
    """DVC tracks ingest.path: a CIFAR-10_human.pt outside it would change without rerunning anything."""
    source = write_cifar10(tmp_path / "cifar")
    write_cifar10n(tmp_path / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    with pytest.raises(DataError, match=r"ingest.human_labels: expected a file inside .*cifar \(ingest.path, which DVC "
                                        r"tracks\), found '../CIFAR-10_human.pt'"):
        run(IngestConfig(dataset="cifar10n", path=str(source), human_labels="../CIFAR-10_human.pt"),
            out=tmp_path / "out")
    tarball = write_cifar10(tmp_path / "packed", tarball=True)  # a folder holding the tarball and the human labels
    write_cifar10n(tarball.parent / "CIFAR-10_human.pt", read_cifar10(tarball).train_labels)
    manifest = run(IngestConfig(dataset="cifar10n", path=str(tarball.parent)), out=tmp_path / "out")
    assert manifest["counts"]["train"] == 20
    with pytest.raises(DataError, match=r"expected a folder holding the CIFAR-10 files and CIFAR-10_human.pt"):
        run(IngestConfig(dataset="cifar10n", path=str(tarball)), out=tmp_path / "out")


def test_ingesting_another_dataset_leaves_nothing_of_the_last_one(tmp_path):
    """After CIFAR-10N, an image folder's ingest removes human_labels.npz (noise kind human must then fail, not read
    the old labels), and a Clothing1M ingest removes the arrays."""
    source = write_cifar10(tmp_path / "cifar")
    write_cifar10n(source / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    run(IngestConfig(dataset="cifar10n", path=str(source)), out=tmp_path / "out")
    assert (tmp_path / "out" / "human_labels.npz").is_file()
    for i in range(6):  # 40 grey levels apart: no two near-duplicates, which are held out together
        write_image(tmp_path / "mine" / ("a" if i % 2 else "b") / f"{i}.png", (4, 4), (i * 40,) * 3)
    run(IngestConfig(dataset="imagefolder", path=str(tmp_path / "mine")), out=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "test.npz", "train.npz"]
    run(IngestConfig(dataset="clothing1m", path=str(write_clothing1m(tmp_path / "c1m")), image_size=8),
        out=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "shards"]


def test_cifar10n_whose_length_does_not_match_the_training_set(tmp_path):
    source = write_cifar10(tmp_path / "cifar")
    write_cifar10n(source / "CIFAR-10_human.pt", np.zeros(19, dtype=np.int64))
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: expected aggre_label with one label per CIFAR-10 "
                                        r"training image \(20\), found 19"):
        run(IngestConfig(dataset="cifar10n", path=str(source), human_labels="CIFAR-10_human.pt"), out=tmp_path / "out")


def test_clothing1m_is_streamed_into_shards(tmp_path):
    source = write_clothing1m(tmp_path / "c1m", per_split=5)
    manifest = run(IngestConfig(dataset="clothing1m", path=str(source), image_size=16, shard_size=2),
                   out=tmp_path / "out")
    shards = tmp_path / "out" / "shards"
    assert shards.stat().st_mode & 0o777 == 0o777 & ~UMASK  # as mkdir makes it (mkdtemp's 0700 locked others out)
    index = json.loads((shards / "index.json").read_text())
    assert {s: e["count"] for s, e in index["splits"].items()} == {"train": 5, "val": 5, "test": 5}
    assert [s["count"] for s in index["splits"]["train"]["shards"]] == [2, 2, 1]
    with tarfile.open(shards / "train-00000.tar") as tar:  # WebDataset: <sample>.jpg, .cls and .json in a row
        assert tar.getnames() == [f"00000000{i}.{ext}" for i in (0, 1) for ext in ("jpg", "cls", "json")]
        meta = json.loads(tar.extractfile("000000000.json").read())
        assert tar.extractfile("000000000.jpg").read() == (source / meta["key"]).read_bytes()  # never re-encoded
        assert tar.extractfile("000000000.cls").read() == str(meta["label"]).encode()
    train = read_index(tmp_path / "out", "train")
    keys = [k.decode() for k in train.key]
    number = {key: int(key.rsplit("train", 1)[1].split(".")[0]) for key in keys}  # images/<a>/<bb>/train<i>.jpg
    assert sorted(keys) == sorted((source / "noisy_train_key_list.txt").read_text().split())
    assert train.label.tolist() == [number[k] % 14 for k in keys]
    assert train.clean_label.tolist() == [number[k] % 14 if number[k] % 2 == 0 else -1 for k in keys]
    assert [k.decode() for k in read_index(tmp_path / "out", "val").key] == \
        (source / "clean_val_key_list.txt").read_text().split()
    assert manifest["format"] == "shards" and len(manifest["images_sha256"]) == 64
    assert manifest["counts"] == {"train": 5, "val": 5, "test": 5} and manifest["image_shape"] == [16, 16, 3]
    assert manifest["transform"]["resize"] == manifest["transform"]["crop"] == 16
    assert manifest["class_names"][0] == "T-Shirt" and len(manifest["class_names"]) == 14
    assert not (tmp_path / "out" / "index.json").exists() and not (tmp_path / "out" / "train.npz").exists()


def test_a_reader_keeps_at_most_open_shards_files_open(tmp_path, monkeypatch):
    """Every shard read stayed open in the reader's cache: an epoch over a thousand shards ran into the open-file
    limit mid-epoch. The cache keeps the shards used last; a shard read again after it was closed is reopened."""
    from components.formats import webdataset  # noqa: PLC0415

    source = write_clothing1m(tmp_path / "c1m", per_split=7)
    run(IngestConfig(dataset="clothing1m", path=str(source), image_size=16, shard_size=1), out=tmp_path / "out")
    monkeypatch.setattr(webdataset, "OPEN_SHARDS", 3)
    train, handles = read_index(tmp_path / "out", "train"), {}
    first = [train.read(row, handles) for row in range(7)]
    kept = list(handles.values())
    assert len(handles) == 3 and [train.files[int(train.shard[row])] for row in (4, 5, 6)] == list(handles)
    assert all(not f.closed for f in kept)
    assert [train.read(row, handles) for row in range(7)] == first == [train.read(row) for row in range(7)]
    assert len(handles) == 3 and all(f.closed for f in kept)  # rows 4 to 6 were pushed out by 0 to 3, then read


def test_every_missing_clothing1m_image_is_counted_in_one_pass(tmp_path):
    """An image folder never unpacked: ingest named its first missing image and stopped, one rerun over the million
    keys per missing file. It now names the first and counts and lists the others, as for unreadable images."""
    import shutil  # noqa: PLC0415

    source = write_clothing1m(tmp_path / "c1m", per_split=5)
    gone = sorted(str(p.relative_to(source)) for p in (source / "images" / "1").rglob("*.jpg"))
    shutil.rmtree(source / "images" / "1")
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    message = str(caught.value)
    assert len(gone) > 2 and re.search(r"key_list\.txt line \d+: expected the image images/1/\S+, found no such "
                                       r"file; and ", message)
    assert f"; and {len(gone) - 1} more listed images could not be read either: " in message
    assert message.endswith("Fix each, or remove its key from the key lists, then ingest again")
    assert not (tmp_path / "out").exists() or not (tmp_path / "out" / "shards").exists()


def snapshot(folder):
    """Every path under ``folder`` (folders as None) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize(("damage", "named", "message"), [
    ("missing", "clean_test_key_list.txt",
     r"clean_test_key_list.txt line 4: expected the image images/1/03/test3.jpg, found no such file$"),
    ("truncated", "images/1/03/test3.jpg",
     r"images/1/03/test3.jpg \(key images/1/03/test3.jpg\): expected an image file, found unreadable data \(.+\)$"),
], ids=["missing", "truncated"])
def test_clothing1m_bad_image_keeps_previous_shards(tmp_path, damage, named, message):
    source = write_clothing1m(tmp_path / "c1m")
    config = IngestConfig(dataset="clothing1m", path=str(source), image_size=8, shard_size=2)
    out = tmp_path / "out"
    run(config, out=out)
    before = snapshot(out)
    image = source / "images/1/03/test3.jpg"  # in the last split: train and val shards are written by then
    if damage == "missing":
        image.unlink()
    else:
        image.write_bytes(image.read_bytes()[:len(image.read_bytes()) // 2])
    with pytest.raises(DataError, match=message) as caught:
        run(config, out=out)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{source / named}")
    assert snapshot(out) == before  # the previous shards and manifest, byte for byte; no staging folder left


def test_clothing1m_names_every_unreadable_image_in_one_pass(tmp_path, monkeypatch):
    """On a million images, one ingest a bad image is hours each: ingest goes on past the first unreadable image and
    names them all (the first in full, the others by key), or stops at ``MAX_UNREADABLE``, saying so."""
    source = write_clothing1m(tmp_path / "c1m")
    config = IngestConfig(dataset="clothing1m", path=str(source), image_size=8, shard_size=2)
    for key in ("images/1/01/val1.jpg", "images/1/03/test3.jpg", "images/0/00/test0.jpg"):
        (source / key).write_bytes(b"not an image")
    with pytest.raises(DataError) as caught:
        run(config, out=tmp_path / "out")
    assert str(caught.value).startswith(f"{source / 'images/1/01/val1.jpg'} (key images/1/01/val1.jpg): expected an "
                                        f"image file, found unreadable data")
    assert str(caught.value).endswith("; and 2 more listed images could not be read either: images/0/00/test0.jpg, "
                                      "images/1/03/test3.jpg. Fix each, or remove its key from the key lists, then "
                                      "ingest again")
    monkeypatch.setattr(images_module, "MAX_UNREADABLE", 2)
    with pytest.raises(DataError, match=r"; and stopped there: at least 1 more listed images could not be read "
                                        r"either: images/") as caught:
        run(config, out=tmp_path / "out")
    assert not (tmp_path / "out" / "shards").exists()


def denied_on(paths: set[Path], method):
    """``method`` of ``Path`` (``read_bytes``, ``is_file``), raising ``PermissionError`` for ``paths``."""
    def denied(path):
        if path in paths:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return method(path)
    return denied


def test_clothing1m_names_every_image_it_may_not_read_in_one_pass(tmp_path, monkeypatch):
    """An image the ingesting user may not read stopped the pass at the first, with a bare "[Errno 13] Permission
    denied" naming no key: it is collected with the other unreadable images."""
    source = write_clothing1m(tmp_path / "c1m")
    locked = {source / "images/0/00/train0.jpg", source / "images/1/01/val1.jpg"}
    monkeypatch.setattr(Path, "read_bytes", denied_on(locked, Path.read_bytes))
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    assert str(caught.value) == (f"{source / 'images/0/00/train0.jpg'} (key images/0/00/train0.jpg): expected a "
                                 f"readable image file, found Permission denied; and 1 more listed images could not "
                                 f"be read either: images/1/01/val1.jpg. Fix each, or remove its key from the key "
                                 f"lists, then ingest again")


def test_clothing1m_names_every_image_in_a_folder_it_may_not_enter_in_one_pass(tmp_path, monkeypatch):
    """A folder of images the ingesting user may not enter: ``is_file`` raises (it hides only a missing file), and
    the check that every listed image is there stopped at the first with a bare "[Errno 13] Permission denied"."""
    source = write_clothing1m(tmp_path / "c1m", per_split=5)
    locked = {p for p in (source / "images" / "1").rglob("*.jpg")}
    monkeypatch.setattr(Path, "is_file", denied_on(locked, Path.is_file))
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    assert re.fullmatch(rf"{re.escape(str(source))}/\S+_key_list\.txt line \d+: expected the image images/1/\S+, "
                        rf"found {re.escape(str(source))}/images/1/\S+ unreadable \(Permission denied\); and "
                        rf"{len(locked) - 1} more listed images could not be read either: .+", str(caught.value))

def test_clothing1m_shards_and_manifest_are_one_set(tmp_path, monkeypatch):
    """The new shards replaced the old ones before the manifest was written: a failure writing the manifest (a full
    disk) left new shards beside the old manifest. They are now renamed in one burst, or not at all."""
    source = write_clothing1m(tmp_path / "c1m")
    out = tmp_path / "out"
    run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8, shard_size=2), out=out)
    before = snapshot(out)
    write_json = ingest_module.write_json

    def full_disk_at_the_manifest(path, data):
        if Path(path).name == "manifest.json":
            write_atomic(path, lambda fh: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
        write_json(path, data)

    monkeypatch.setattr(ingest_module, "write_json", full_disk_at_the_manifest)
    with pytest.raises(OutputError, match=r"manifest\.json: expected a writable folder .* No space left on device"):
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=12, shard_size=3), out=out)
    assert snapshot(out) == before  # the old shards and manifest; no staging folder left


def test_clothing1m_shards_and_their_index_are_fsynced_before_the_swap(tmp_path, monkeypatch):
    """The swap deletes the previous shards: a power cut soon after could leave new shards whose data never reached
    the disk (a rename of their folder flushes nothing) and no old ones either. Every file of the new folder is
    fsynced before it is renamed in."""
    source, out = write_clothing1m(tmp_path / "c1m"), tmp_path / "out"
    run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8, shard_size=2), out=out)
    calls, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or
                        fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: calls.append(("replace", str(a), str(b))) or replace(a, b))
    run(IngestConfig(dataset="clothing1m", path=str(source), image_size=12, shard_size=3), out=out)
    swap = next(i for i, call in enumerate(calls) if call[0] == "replace" and call[2] == str(out / "shards"))
    synced = {Path(call[1]).name for call in calls[:swap] if call[0] == "fsync"}
    written = {p.name for p in (out / "shards").iterdir() if p.suffix in (".tar", ".npz")}
    assert {Path(n).suffix for n in written} == {".tar", ".npz"} and written <= synced, sorted(written - synced)

def test_clothing1m_refuses_an_image_training_could_not_scale_to_8_bits(tmp_path):
    """A floating-point TIFF under a Clothing1M key was ingested into the shards (the image-folder reader refuses
    it); training would have clipped it."""
    source = write_clothing1m(tmp_path / "c1m")
    Image.fromarray(np.full((10, 12), 0.5, dtype=np.float32), mode="F").save(source / "images/1/03/test3.jpg",
                                                                              format="TIFF")
    with pytest.raises(DataError, match=r"images/1/03/test3.jpg .*expected an image of 8 or 16 bits a channel, "
                                        r"found mode F"):
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")


def test_clothing1m_bad_label_line(tmp_path):
    source = write_clothing1m(tmp_path / "c1m")
    with open(source / "noisy_label_kv.txt", "a") as fh:
        fh.write("images/0/00/x.jpg fourteen\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 6: expected '<image key> <label>', found"):
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")


def test_the_held_out_test_split_has_every_class_in_proportion_whatever_the_seed():
    """A draw over all training rows left a small class out of the test split at random (3 images of 60 at
    test_fraction 0.1: about three seeds in four), and validate, which needs every class there, failed by the
    seed. Per class: the overall count, in proportion, at least one of each class of two or more, never the last."""
    from components.formats.imagefolder import held_out_per_class  # noqa: PLC0415

    y = np.array([0] * 40 + [1] * 17 + [2] * 3 + [3] * 1)
    rows = np.arange(y.size)
    for seed in range(50):
        held = held_out_per_class(y, rows, 0.1, np.random.default_rng(seed))
        counts = np.bincount(y[held], minlength=4)
        assert counts.tolist() == [4, 1, 1, 0] and len(set(held.tolist())) == held.size, (seed, counts)
    assert np.bincount(y[held_out_per_class(y, rows, 0.5, np.random.default_rng(0))], minlength=4).tolist() == \
        [20, 9, 1, 0]  # 30 of 61: 20, 8.5, 1.5, 0.5 floored, the one left to the first tie; the singleton trains
    half = held_out_per_class(y[:57], rows[:57], 0.3, np.random.default_rng(1))
    assert half.size == round(0.3 * 57) and np.bincount(y[half]).tolist() == [12, 5]
    for sizes, fraction, expected in (([8, 8, 8, 4], 0.2, [2, 2, 1, 1]), ([5, 5, 5, 3], 0.3, [2, 1, 1, 1]),
                                      ([20, 2], 0.1, [2, 1]),  # a class of two gives one
                                      ([10, 10], 0.19, [2, 2]),  # round(3.8) in all, not the floors' 1 + 1
                                      ([1, 1, 4], 0.5, [0, 0, 3])):  # never a singleton, nor a class's last
        labels = np.repeat(np.arange(len(sizes)), sizes)  # a class lifted to its one image gets no more of the rest
        held = held_out_per_class(labels, np.arange(labels.size), fraction, np.random.default_rng(0))
        assert np.bincount(labels[held]).tolist() == expected, (sizes, fraction)


def test_copies_of_an_image_are_held_out_together(tmp_path):
    """A folder scraped from the web holds re-downloaded copies (``3.png``, ``3 (1).png``); the test split the
    reader drew put one copy in test and one in training, and validate refused the folder (near-duplicates of
    test images in training). Each group of near-duplicates, mirror images too, now goes to one split."""
    from PIL import ImageOps  # noqa: PLC0415

    root = tmp_path / "mine"
    for i in range(40):
        write_distinct_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    copies = {}
    for i in range(0, 40, 3):
        cls = "cat" if i % 2 else "dog"
        copies[f"{cls}/{i}.png"] = f"{cls}/{i} (1).png"
        if i % 2:  # a mirrored copy: what a training flip makes of it
            ImageOps.mirror(Image.open(root / cls / f"{i}.png")).save(root / cls / f"{i} (1).png")
        elif i % 4:  # a copy 5 grey levels brighter: a near-duplicate, not an equal thumbnail
            Image.eval(Image.open(root / cls / f"{i}.png"), lambda v: min(v + 5, 255)).save(root / cls / f"{i} (1).png")
        else:
            shutil.copy(root / cls / f"{i}.png", root / cls / f"{i} (1).png")
    for seed in range(5):
        dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=seed)
        test = set(dataset.test_keys)
        assert all((one in test) == (other in test) for one, other in copies.items()), seed
        assert any(one in test for one in copies) and len(test) >= 0.25 * 40
        found, _ = first_matches(fingerprints(dataset.test_images), fingerprints(dataset.test_images[:, :, ::-1]),
                                 fingerprints(dataset.train_images))
        assert (found == -1).all()  # what validate checks


def test_without_near_duplicates_the_draw_is_the_per_class_one():
    from components.formats.imagefolder import held_out_per_class, held_out_whole  # noqa: PLC0415

    y, rows = np.repeat([0, 1, 2], [10, 7, 4]), np.arange(3, 24)
    y = np.concatenate([np.zeros(3, np.int64), y])
    for seed in range(3):
        assert held_out_whole(y, rows, 0.3, np.random.default_rng(seed), groups=np.arange(21)).tolist() == \
            held_out_per_class(y, rows, 0.3, np.random.default_rng(seed)).tolist()
    grouped = held_out_whole(y, rows, 0.3, np.random.default_rng(0), groups=np.r_[0, 0, 0, 3:21])
    assert {3, 4, 5} <= set(grouped.tolist()) or not {3, 4, 5} & set(grouped.tolist())


def test_a_class_with_a_copy_of_another_class_image_still_gets_a_test_image(tmp_path):
    """b/ holds two images, one a copy of a/0.png (the same photo in two class folders). The copies' group was
    drawn under a alone, so b had a test image for only some seeds, and validate failed by the seed."""
    root = tmp_path / "mine"
    for i in range(8):
        write_distinct_image(root / "a" / f"{i}.png", i)
    write_distinct_image(root / "b" / "20.png", 20)
    shutil.copy(root / "a" / "0.png", root / "b" / "copy of 0.png")
    for seed in range(30):
        dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=seed)
        assert 1 in dataset.test_labels and 1 in dataset.train_labels, (seed, dataset.test_keys)
        assert ("a/0.png" in dataset.test_keys) == ("b/copy of 0.png" in dataset.test_keys), seed


def random_groups(rng, n):
    """Groups of near-duplicates over ``n`` rows (``near_duplicate_groups``' form: each row's group's first row),
    some spanning classes when labels are drawn independently of them."""
    groups, joins = np.arange(n), rng.random() / 2
    for i in range(1, n):
        if rng.random() < joins:
            groups[i] = groups[rng.integers(0, i)]
    return groups


def test_the_held_out_draw_keeps_every_class_in_both_splits_when_copies_span_classes():
    """Groups counted under their first row's class alone took another class's last training image, or left a
    class that has a group of its own and another none in the test split; each group still goes whole."""
    from components.formats.imagefolder import held_out_whole  # noqa: PLC0415

    for seed in range(400):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 40))
        labels, groups = rng.integers(0, int(rng.integers(1, 6)), n), random_groups(rng, n)
        y, rows = np.concatenate([np.full(2, 9), labels]), np.arange(2, n + 2)
        held = np.isin(rows, held_out_whole(y, rows, float(rng.choice([0.1, 0.25, 0.5])), rng, groups=groups))
        assert all(len(set(held[groups == g])) == 1 for g in groups), seed
        for c in np.unique(labels):
            assert (~held & (labels == c)).any(), (seed, c)  # a training image kept
            holding = np.unique(groups[labels == c])
            own = [g for g in holding if (labels[groups == g] == c).all()]
            if own and holding.size >= 2:
                assert (held & (labels == c)).any(), (seed, c)  # a test image drawn


def test_the_held_out_test_split_is_the_seeds(tmp_path):
    for i in range(20):
        write_image(tmp_path / ("cat" if i % 2 else "dog") / f"{i}.png", (8, 8), (i * 10,) * 3)
    first, again, other = (read_imagefolder(tmp_path, channels=1, size=0, test_fraction=0.3, seed=seed)
                           for seed in (0, 0, 1))
    assert first.test_keys == again.test_keys != other.test_keys


@pytest.mark.parametrize("layout", ["class-folders", "train-test-folders", "csv", "csv-with-bom"])
def test_imagefolder_layouts(tmp_path, layout):
    """Every layout; "csv-with-bom": a labels.csv saved by Excel as "CSV UTF-8" starts with a byte-order mark,
    which once made the header's first name '\\ufefffilename'."""
    root = tmp_path / "mine"
    rows = ["filename,label,split"]
    for i in range(10):
        cls = "cat" if i % 2 else "dog"
        split = "test" if i >= 8 else "train"
        rel = {"class-folders": f"{cls}/{i}.png", "train-test-folders": f"{split}/{cls}/{i}.png"}.get(layout,
                                                                                                      f"pics/{i}.png")
        write_distinct_image(root / rel, i)
        rows.append(f"{rel},{cls},{split}")
    if layout.startswith("csv"):
        (root / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8-sig" if "bom" in layout else "utf-8")
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root), channels=1, test_fraction=0.3),
                   out=tmp_path / "out")
    assert manifest["class_names"] == ["cat", "dog"] and manifest["image_shape"] == [12, 12, 1]
    expected_test = 3 if layout == "class-folders" else 2
    assert manifest["counts"] == {"train": 10 - expected_test, "test": expected_test}


def write_folder_with_val(root, layout, *, count, val_from, csv=True):
    """``count`` grey images of two classes, those from ``val_from`` on in the val split: in ``train/`` and ``val/``
    folders, or in ``pics/`` listed by ``labels.csv`` (written unless ``csv`` is false); returns the folder and the
    CSV rows."""
    rows = ["filename,label,split"]
    for i in range(count):
        cls, split = ("cat" if i % 2 else "dog"), ("val" if i >= val_from else "train")
        rel = f"{split}/{cls}/{i}.png" if layout == "folders" else f"pics/{i}.png"
        write_distinct_image(root / rel, i)
        rows.append(f"{rel},{cls},{split}")
    if layout == "csv" and csv:
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, rows


@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_imagefolder_clean_validation_split(tmp_path, layout):
    """A val split (a val/ folder, or split val in labels.csv) becomes val.npz; the test split is carved out of the
    training images only, never out of the clean val images."""
    root, _ = write_folder_with_val(tmp_path / "mine", layout, count=20, val_from=16)
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root), channels=1, test_fraction=0.25),
                   out=tmp_path / "out")
    assert manifest["counts"] == {"train": 12, "test": 4, "val": 4}
    assert manifest["labels"] == "as given" and manifest["test_source"].startswith("held out of the training images")
    with np.load(tmp_path / "out" / "val.npz") as val:
        assert val["images"].shape == (4, 12, 12, 1) and sorted(val["images"][:, 0, 0, 0]) == [160, 170, 180, 190]
    for path in root.rglob("16.png"):
        path.unlink()  # without a val split, no val.npz is left behind from the earlier run
    (root / "labels.csv").unlink(missing_ok=True)
    shutil.rmtree(root / "val", ignore_errors=True)
    if layout == "csv":
        for i in range(16):
            write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
    assert "val" not in run(IngestConfig(dataset="imagefolder", path=str(root), channels=1),
                            out=tmp_path / "out")["counts"]
    assert not (tmp_path / "out" / "val.npz").exists()


@pytest.mark.parametrize(("extra", "found"), [
    ("pics/0.png,dog,test", "pics/0.png listed in train and in test (a file in two splits leaks one into the other)"),
    ("./pics/0.png,dog,val", "pics/0.png listed in train and in val"),
    ("pics/0.png,cat,train", "pics/0.png listed twice in train with different labels ('dog' and 'cat')"),
    ("pics/0.png,dog,", "pics/0.png listed twice in train (label 'dog' both times)"),
], ids=["train-and-test", "train-and-val", "conflicting-labels", "same-label"])
def test_imagefolder_csv_refuses_a_file_listed_twice(tmp_path, extra, found):
    """A file in train and test once passed ingest and validate (a leak under the duplicate tolerance), and one
    listed twice in train was trained on twice, under two labels; the error names the CSV, both lines and the file."""
    root, rows = write_folder_with_val(tmp_path / "mine", "csv", count=8, val_from=6, csv=False)
    (root / "labels.csv").write_text("\n".join([*rows, extra]) + "\n")  # pics/0.png, dog, train on line 2
    with pytest.raises(DataError, match=rf"labels.csv lines 2 and 10: expected each file listed once, found "
                                        rf"{re.escape(found)}"):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0)


@pytest.mark.parametrize("line", ["pics/0.png, ,train", "pics/0.png,,train", " ,dog,train", "pics/0.png"])
def test_imagefolder_csv_refuses_a_line_without_a_filename_or_a_label(tmp_path, line):
    """A label of spaces became a class named '' (validate then failed naming "class " and nothing else)."""
    root, rows = write_folder_with_val(tmp_path / "mine", "csv", count=8, val_from=6, csv=False)
    (root / "labels.csv").write_text("\n".join([*rows, line]) + "\n")
    with pytest.raises(DataError, match=r"labels.csv line 10: expected a filename and a label, found "):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0)


def test_imagefolder_csv_reads_a_label_and_a_split_with_spaces_around_them(tmp_path):
    """A hand-written labels.csv (``pics/0.png, dog, val``): the label and the split are taken without the spaces
    around them, not refused as a split named ' val' or read as a class named ' dog'."""
    root, rows = write_folder_with_val(tmp_path / "mine", "csv", count=8, val_from=6, csv=False)
    (root / "labels.csv").write_text("\n".join([rows[0], *(row.replace(",", ", ") for row in rows[1:])]) + "\n")
    dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0)
    assert dataset.class_names == ["cat", "dog"]
    assert dataset.val_keys == ["pics/6.png", "pics/7.png"] and dataset.val_labels.tolist() == [1, 0]


def test_imagefolder_errors(tmp_path):
    root = tmp_path / "mine"
    write_image(root / "cat" / "a.png", (12, 10), (1, 2, 3))
    write_image(root / "dog" / "b.png", (14, 10), (1, 2, 3))
    with pytest.raises(DataError, match=r"dog/b.png: expected 12x10 \(width x height\) like a.png, found 14x10; "
                                        r"1 image has another size; set ingest.image_size to resize$"):
        run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    (root / "dog" / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"b.png: expected an image file, found unreadable data"):
        run(IngestConfig(dataset="imagefolder", path=str(root), image_size=8), out=tmp_path / "out")
    with pytest.raises(DataError, match=r"cat: expected images in class sub-folders or a labels.csv, found none"):
        run(IngestConfig(dataset="imagefolder", path=str(root / "cat")), out=tmp_path / "out")


def test_mixed_sizes_name_the_first_odd_file_its_own_size_and_how_many_differ(tmp_path):
    """The error once printed the set of every distinct (H, W, C) shape (thousands, for a real folder), never the
    named file's own size, and mixed W x H with (H, W, C)."""
    root = tmp_path / "mine"
    write_image(root / "cat" / "0.png", (65, 63), (1, 2, 3))
    write_image(root / "cat" / "1.png", (62, 53), (1, 2, 3))
    for i in range(2, 72):
        write_image(root / "dog" / f"{i}.png", (40 + i, 30 + i % 7), (1, 2, 3))
    with pytest.raises(DataError) as caught:
        read_imagefolder(root, channels=3, size=0, test_fraction=0.25, seed=0)
    assert str(caught.value) == (f"{root / 'cat' / '1.png'}: expected 65x63 (width x height) like 0.png, found "
                                 f"62x53; 71 images have other sizes; set ingest.image_size to resize")


@pytest.mark.parametrize("name", ["val", "test"])
def test_a_top_level_val_or_test_folder_without_train_is_refused_not_made_a_class(tmp_path, name):
    """``<class>/*`` with a ``val/<class>/*`` beside it once made a class named val of the clean validation images
    (rglob found them) and trained on them."""
    root = tmp_path / "mine"
    for i in range(8):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
        write_image(root / name / ("cat" if i % 2 else "dog") / f"v{i}.png", (12, 12), (i * 10,) * 3)
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    assert str(caught.value) == (f"{root / name}: expected {name}/ beside train/ (train/<class>/*, {name}/<class>/*),"
                                 f" found {name}/ with class folders without train/: move the class folders (cat/, "
                                 f"dog/) into train/")
    assert not (tmp_path / "out" / "train.npz").exists()
    (root / "train").mkdir()
    for cls in ("cat", "dog"):
        (root / cls).rename(root / "train" / cls)
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    assert manifest["class_names"] == ["cat", "dog"] and manifest["counts"][name] == 8


@pytest.mark.parametrize(("files", "found"), [
    ([], "found 0 images (an empty folder)"),
    ([f"{i}.heic" for i in range(20)] + ["notes.txt", "README"],
     "found 0 images, 22 files with other extensions (.heic 20, (no extension) 1, .txt 1)"),
], ids=["empty", "other-extensions"])
def test_a_class_folder_without_images_is_refused_naming_what_it_holds(tmp_path, files, found):
    """An empty class folder, or one of files with unlisted extensions, once vanished from the classes unsaid."""
    root = tmp_path / "mine"
    for i in range(4):
        write_image(root / "train" / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
    (root / "train" / "owl").mkdir()
    for name in files:
        (root / "train" / "owl" / name).write_bytes(b"x")
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    assert str(caught.value) == (f"{root / 'train' / 'owl'}: expected images in class folder 'owl', {found}; "
                                 f"accepted: .bmp, .gif, .jfif, .jpe, .jpeg, .jpg, .png, .tif, .tiff, .webp")


def test_the_skipped_files_name_five_extensions_most_first_and_mark_the_rest():
    """``describe_skipped``: up to five extensions, most first, each with its count; "..." only where there are more,
    so five kinds are all named and a sixth is not dropped silently."""
    from collections import Counter  # noqa: PLC0415

    from components.formats.imagefolder import describe_skipped  # noqa: PLC0415

    five = Counter({".heic": 6, ".txt": 5, ".json": 4, "": 3, ".xml": 2})
    assert describe_skipped(five) == ("20 files with other extensions (.heic 6, .txt 5, .json 4, (no extension) 3, "
                                      ".xml 2)")
    assert describe_skipped(five + Counter({".md": 1})) == ("21 files with other extensions (.heic 6, .txt 5, "
                                                            ".json 4, (no extension) 3, .xml 2, ...)")
    assert describe_skipped(Counter({".txt": 1})) == "1 file with other extensions (.txt 1)"


def test_jfif_images_are_read_and_other_files_are_counted_and_reported(tmp_path, capsys):
    """.jfif and .jpe are JPEGs that Pillow reads; notes.txt or a .heic beside the images was skipped uncounted,
    and hidden files (.DS_Store, macOS's ._x.png, .ipynb_checkpoints/) are not read at all."""
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
    for i, ext in enumerate([".jfif", ".jpe", ".jfif"]):  # three photos, not copies (held out together)
        (root / "owl").mkdir(exist_ok=True)
        Image.new("RGB", (12, 12), (200, 60 * i, 0)).save(root / "owl" / f"{i}{ext}", format="JPEG")
    (root / "cat" / "notes.txt").write_text("x")
    (root / "dog" / "a.heic").write_bytes(b"x")
    (root / "dog" / "b.HEIC").write_bytes(b"x")
    (root / "dog" / ".DS_Store").write_bytes(b"x")
    (root / "dog" / "._0.png").write_bytes(b"AppleDouble, not a png")
    write_image(root / ".ipynb_checkpoints" / "x.png", (12, 12), (1, 1, 1))
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root), test_fraction=0.3), out=tmp_path / "out")
    assert manifest["class_names"] == ["cat", "dog", "owl"] and sum(manifest["counts"].values()) == 9
    assert manifest["skipped_files"] == {"count": 3, "extensions": {".heic": 2, ".txt": 1},
                                         "files": ["cat/notes.txt", "dog/a.heic", "dog/b.HEIC"]}
    err = capsys.readouterr().err
    assert (f"WARNING: ingest: skipped 3 files with other extensions (.heic 2, .txt 1) under the class folders of "
            f"{root} (accepted: .bmp, .gif, .jfif,") in err and err.count("\n") == 1
    assert ".webp), e.g. cat/notes.txt, dog/a.heic, dog/b.HEIC; see skipped_files in" in err
    for path in (root / "cat" / "notes.txt", root / "dog" / "a.heic", root / "dog" / "b.HEIC"):
        path.unlink()
    assert "skipped_files" not in run(IngestConfig(dataset="imagefolder", path=str(root), test_fraction=0.3),
                                      out=tmp_path / "out")
    assert capsys.readouterr().err == ""


def test_folders_systems_leave_behind_are_not_classes_nor_read(tmp_path):
    """A Mac zip's __MACOSX/ beside the class folders was taken for a split, with advice that failed when followed;
    a NAS's @eaDir/ thumbnails inside a class were read as images of it."""
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
        (root / "__MACOSX" / ("cat" if i % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        (root / "__MACOSX" / ("cat" if i % 2 else "dog") / f"._{i}.png").write_bytes(b"AppleDouble")
    write_image(root / "cat" / "@eaDir" / "1.png" / "SYNOPHOTO_THUMB_S.jpg", (12, 12), (9, 9, 9))
    write_image(root / "$RECYCLE.BIN" / "x.png", (12, 12), (1, 1, 1))
    dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.3, seed=0)
    assert dataset.class_names == ["cat", "dog"] and len(dataset.train_keys) + len(dataset.test_keys) == 6


def test_imagefolder_names_every_unreadable_image_in_one_pass(tmp_path, monkeypatch):
    """A web scrape holds many broken files; ingest stopped at the first, so naming them took one run each."""
    root = tmp_path / "mine"
    for i in range(8):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
    for name in ("cat/1.png", "dog/2.png", "dog/4.png"):
        (root / name).write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError) as caught:
        run(IngestConfig(dataset="imagefolder", path=str(root), test_fraction=0.3), out=tmp_path / "out")
    assert str(caught.value).startswith(f"{root / 'cat/1.png'}: expected an image file, found unreadable data")
    assert str(caught.value).endswith("; and 2 more listed images could not be read either: dog/2.png, dog/4.png. "
                                      "Fix each, or remove the file (or its line of labels.csv), then ingest again")
    monkeypatch.setattr(images_module, "MAX_UNREADABLE", 2)
    with pytest.raises(DataError, match=r"; and stopped there: at least 1 more listed images could not be read "
                                        r"either: dog/2.png\. Fix each"):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.3, seed=0)
    assert not (tmp_path / "out" / "train.npz").exists()


@pytest.mark.parametrize("folder", ["cat/batch2", "cat"], ids=["sub-folder", "class-folder"])
def test_an_unreadable_folder_under_a_class_is_refused_not_skipped(tmp_path, monkeypatch, folder):
    """A sub-folder the ingesting user may not read (or an I/O error on a network mount) was skipped without a word:
    its images vanished from the dataset and ingest succeeded; a class folder itself was called empty."""
    root = tmp_path / "mine"
    for i in range(6):
        write_distinct_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    for i in range(6, 9):
        write_distinct_image(root / "cat" / "batch2" / f"{i}.png", i)
    locked, scandir = root / folder, os.scandir

    def denied(path="."):
        if Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(DataError) as caught:
        read_imagefolder(root, channels=1, size=0, test_fraction=0.3, seed=0)
    assert str(caught.value).startswith(f"{locked}: expected a folder this user can read (in class folder 'cat'), "
                                        f"found Permission denied")

def test_imagefolder_refuses_names_that_are_not_utf8_at_ingest(tmp_path, capsys, monkeypatch):
    """A zip made on Windows and unpacked on Linux names a file caf\\xe9.png: ingest, validate and training ran, and
    evaluate failed writing label_issues.csv, naming no file. Ingest now lists such names, with the fix."""
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 12), (i * 10,) * 3)
    for folder, name in (("cat", b"caf\xe9 1.png"), ("dog", b"h\xf6nd.png")):
        shutil.copy(root / "cat" / "1.png", os.path.join(os.fsencode(root / folder), name))
    (tmp_path / "params.yaml").write_text(f"ingest: {{dataset: imagefolder, path: {root}}}\n")
    monkeypatch.chdir(tmp_path)  # the CLI writes to artifacts/ingest under the working directory
    assert ingest_main(["--params", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: ingest: {root}: expected file and folder names in UTF-8, found 2 names that are not "
                   f"(b'cat/caf\\xe9 1.png', b'dog/h\\xf6nd.png'): rename them in UTF-8 (convmv -f <their encoding, "
                   f"e.g. cp1252> -t utf8 -r --notest {root}), or unzip with the archive's encoding (unzip -O cp437)\n")


def test_a_class_named_in_two_unicode_forms_is_one_class(tmp_path):
    """macOS writes folder names decomposed (NFD): train/Schuhé/ copied from a Mac and val/Schuhé/ typed elsewhere
    were two names that print the same, and the error said 'Schuhé' in val only and 'Schuhé' in train only."""
    root = tmp_path / "mine"
    composed, decomposed = "Schuh\u00e9", "Schuhe\u0301"
    for split, shoe in (("train", decomposed), ("val", composed), ("test", composed)):
        for i in range(4):
            write_image(root / split / (shoe if i % 2 else "hat") / f"{i}.png", (12, 12), (i * 10,) * 3)
    dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.3, seed=0)
    assert dataset.class_names == [composed, "hat"]
    assert sorted(dataset.train_labels.tolist()) == sorted(dataset.val_labels.tolist()) == [0, 0, 1, 1]


def test_class_names_that_differ_only_in_case_are_a_warning(tmp_path, capsys):
    """T-shirt/ and t-shirt/ became two classes silently; they stay two (a dataset may mean them), with a warning."""
    root = tmp_path / "mine"
    for i, cls in enumerate(["T-shirt", "t-shirt", "coat"] * 4):
        write_distinct_image(root / cls / f"{i}.png", i)
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root), test_fraction=0.25), out=tmp_path / "out")
    assert manifest["class_names"] == ["T-shirt", "coat", "t-shirt"]
    assert capsys.readouterr().err == ("WARNING: ingest: classes whose names differ only in letter case, 'T-shirt' "
                                       "and 't-shirt', are 2 classes: if they are one, merge their folders (or labels) "
                                       "and ingest again\n")


def test_imagefolder_refuses_non_square_images_unless_image_size_makes_them_square(tmp_path):
    """Same-size non-square images once passed ingest, then broke training (small_cnn) or gave the model card a
    wrong input shape (``[batch, C, H, H]``); ingest refuses them, naming the file, the size and the remedy."""
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (12, 8), (i * 10,) * 3)
    with pytest.raises(DataError, match=r"cat/1.png: expected square images \(width = height\), found 12x8 images "
                                        r"\(width x height\); set ingest.image_size to resize and centre-crop"):
        run(IngestConfig(dataset="imagefolder", path=str(root), test_fraction=0.5), out=tmp_path / "out")
    assert not (tmp_path / "out" / "train.npz").exists()
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root), image_size=8, test_fraction=0.5),
                   out=tmp_path / "out")
    assert manifest["image_shape"] == [8, 8, 3]


@pytest.mark.parametrize("shape", [(8, 12), (12, 8)], ids=["wide", "tall"])
def test_load_image_keeps_the_centre_square_of_a_non_square_image(tmp_path, shape):
    """``load_image(size=...)``: the short side resized to ``size``, then the centre cropped square (what
    ``ingest.image_size`` does to a user's photos): 2 rows or columns off each side of a 12x8 image, not 4 off one."""
    height, width = shape
    ramp = np.arange(max(shape), dtype=np.uint8) * 20  # a distinct grey value per row or column
    pixels = np.broadcast_to(ramp[None, :] if width > height else ramp[:, None], shape).copy()
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    image = load_image(tmp_path / "photo.png", channels=1, size=8)[..., 0]
    centre = ramp[2:10]
    assert image.tolist() == np.broadcast_to(centre[None, :] if width > height else centre[:, None], (8, 8)).tolist()



def test_a_thin_image_is_resized_only_where_the_centre_crop_keeps_it(tmp_path, monkeypatch):
    """A 1x20000 line (a web page's spacer, 164 bytes of PNG, far under the pixel limit) was resized whole before
    the crop, to 224x4480000: a gigapixel, 3 GB, and a MemoryError traceback. Only the kept square is resampled."""
    Image.fromarray(np.arange(20000, dtype=np.uint8)[:, None]).save(tmp_path / "line.png")
    sizes = refuse_resizes_over(1_000_000, monkeypatch)
    image = load_image(tmp_path / "line.png", channels=3, size=224, max_pixels=1_000_000)
    assert image.shape == (224, 224, 3) and sizes == [(224, 224)]


@pytest.mark.parametrize("shape", [(30, 4), (4, 30), (37, 5)], ids=["tall", "wide", "odd"])
def test_the_crop_of_a_resize_too_large_to_make_is_the_same_image(tmp_path, shape):
    """Under the limit the image is resized whole, then cropped (the recorded results, bit for bit); over it only the
    square is resampled, from the same pixels with the same filter: the same image."""
    pixels = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "thin.png")
    whole = load_image(tmp_path / "thin.png", channels=3, size=16)
    square = load_image(tmp_path / "thin.png", channels=3, size=16, max_pixels=200)  # 16 x 120 resized: 1920
    assert square.shape == whole.shape == (16, 16, 3)
    assert np.abs(square.astype(int) - whole.astype(int)).max() <= 2  # rounding: float box edges, fixed-point weights


def test_missing_dataset_path(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: expected the cifar10 files, found no such file or folder"):
        run(IngestConfig(dataset="cifar10", path=str(tmp_path / "nowhere")), out=tmp_path / "out")


@pytest.mark.parametrize(("name", "found"), [
    ("../x.png", "found '../x.png'"), ("a/../../x.png", "found 'a/../../x.png'"),
    ("/etc/passwd", "found '/etc/passwd'"), ("", "found ''"), (".", "found '.'"), ("a/..", "found 'a/..'"),
])
def test_inside_refuses_names_that_leave_the_folder(tmp_path, name, found):
    with pytest.raises(DataError, match=rf"^list line 3: expected a file name relative to .*root that stays inside "
                                        rf"it, {re.escape(found)}$"):
        inside(tmp_path / "root", name, where="list line 3")


def test_inside_follows_links_only_while_they_stay_inside(tmp_path):
    root = tmp_path / "root"
    write_image(root / "a" / "x.png", (4, 4), (1, 2, 3))
    write_image(tmp_path / "secret.png", (4, 4), (1, 2, 3))
    (root / "b").symlink_to("a")  # a folder link inside
    (root / "y.png").symlink_to(root / "a" / "x.png")
    (root / "leak.png").symlink_to(tmp_path / "secret.png")
    (root / "up").symlink_to("..")
    assert inside(root, "b/x.png", where="w") == root / "b" / "x.png"  # the name as listed, not its target
    assert inside(root, "y.png", where="w") == root / "y.png"
    assert inside(root, "a/../a/x.png", where="w") == root / "a" / "x.png"
    for name, target in (("leak.png", tmp_path / "secret.png"), ("up/secret.png", tmp_path / "secret.png")):
        with pytest.raises(DataError, match=rf"^w: expected a file inside {re.escape(str(root))}, found a symbolic "
                                            rf"link to {re.escape(str(target))}, outside it$"):
            inside(root, name, where="w")
    (tmp_path / "link-to-root").symlink_to(root)  # the data folder itself on another disk
    assert inside(tmp_path / "link-to-root", "a/x.png", where="w") == tmp_path / "link-to-root" / "a" / "x.png"
    (tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab").mkdir(parents=True)  # cache.type: symlink
    cached = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab" / "cdef"
    cached.write_bytes((root / "a" / "x.png").read_bytes())
    (root / "cached.png").symlink_to(cached)
    assert inside(root, "cached.png", where="w") == root / "cached.png"


def test_clothing1m_reads_no_key_outside_its_folder(tmp_path):
    source = write_clothing1m(tmp_path / "c1m")
    write_image(tmp_path / "secret.jpg", (8, 8), (1, 2, 3))
    with pytest.raises(DataError, match=r"c1m/\.\./secret.jpg \(key \.\./secret.jpg\): expected a file name relative "
                                        r"to .*c1m that stays inside it, found '../secret.jpg'"):
        c1m.read_image(source, "../secret.jpg")
    (source / "images" / "0" / "00" / "val0.jpg").unlink()
    (source / "images" / "0" / "00" / "val0.jpg").symlink_to(tmp_path / "secret.jpg")
    with pytest.raises(DataError, match=r"clean_val_key_list.txt line 1: expected a file inside .*c1m, found a "
                                        r"symbolic link to .*secret.jpg, outside it"):
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")


def test_a_labels_csv_linked_out_of_the_folder_to_no_file_is_refused_not_ignored(tmp_path):
    """A ``labels.csv`` that is a symbolic link leading out of the folder is refused even where its target is gone
    (a disk not mounted): skipped as no file, the class folders beside it were read instead, with other labels."""
    root = tmp_path / "mine"
    for i in range(6):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (8, 8), (i * 10,) * 3)
    (root / "labels.csv").symlink_to(tmp_path / "elsewhere" / "labels.csv")
    with pytest.raises(DataError, match=r"mine/labels.csv: expected a file inside .*mine, found a symbolic link to "
                                        r".*elsewhere/labels.csv, outside it"):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.5, seed=0)


def test_clothing1m_read_image_refuses_an_image_over_its_max_pixels(tmp_path):
    """``read_image(max_pixels=...)``: an image over the caller's limit is refused from its header, naming the file,
    the key, the limit and its size; under the limit its bytes are returned as they are."""
    source = write_clothing1m(tmp_path / "c1m")
    key = "images/0/00/val0.jpg"
    width, height = Image.open(source / key).size
    with pytest.raises(ImageTooLargeError, match=rf"val0.jpg \(key {re.escape(key)}\): expected an image of at most "
                                                 rf"{width * height - 1} pixels .*, found {width}x{height} = "):
        c1m.read_image(source, key, max_pixels=width * height - 1)
    assert c1m.read_image(source, key, max_pixels=width * height) == (source / key).read_bytes()


@pytest.mark.parametrize("layout", ["folders", "csv"])
def test_imagefolder_reads_nothing_outside_its_folder_in_any_split(tmp_path, layout):
    """train, val and test alike: a name or link leading out of the folder is refused; links inside it are read."""
    write_image(tmp_path / "secret.png", (12, 10), (9, 9, 9))
    root, rows = write_folder_with_val(tmp_path / "mine", layout, count=12, val_from=8, csv=False)
    linked = "val/cat/again.png" if layout == "folders" else "pics/again.png"
    (root / linked).symlink_to(root / ("val/cat/9.png" if layout == "folders" else "pics/9.png"))
    rows.append(f"{linked},cat,val")
    if layout == "csv":
        (root / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0)
    assert dataset.val_labels.size == 5 and dataset.train_labels.size + dataset.test_labels.size == 8
    if layout == "folders":
        (root / "val" / "cat" / "leak.png").symlink_to(tmp_path / "secret.png")
        message = r"val/cat/leak.png: expected a file inside .*mine, found a symbolic link to .*secret.png, outside it"
    else:
        (root / "labels.csv").write_text("\n".join([*rows, "../secret.png,cat,val"]) + "\n")
        message = (r"labels.csv line 15: expected a file name relative to .*mine that stays inside it, found "
                   r"'../secret.png'")
    with pytest.raises(DataError, match=message):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.25, seed=0)


def test_an_image_over_the_pixel_limit_is_refused_naming_file_limit_and_size(tmp_path):
    write_image(tmp_path / "big.png", (300, 200), (1, 2, 3))
    assert load_image(tmp_path / "big.png", channels=1, size=0).shape == (200, 300, 1)
    with pytest.raises(ImageTooLargeError, match=r"big.png: expected an image of at most 50000 pixels \(the readers' "
                                                  r"limit on decompression bombs\), found 300x200 = 60000 pixels"):
        load_image(tmp_path / "big.png", channels=1, size=0, max_pixels=50_000)
    payload = (tmp_path / "big.png").read_bytes()
    with pytest.raises(ImageTooLargeError, match=r"^k: expected an image of at most 50000 pixels"):
        check_encoded(payload, where="k", max_pixels=50_000)
    assert check_encoded(payload, where="k") == (300, 200)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".pgm"])
def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped(tmp_path, suffix):
    """Pillow's convert clips a 16-bit image at 255 (a ramp over 0..65535 turned almost all white); the loader keeps
    each value's high byte. A 16-bit PNG or TIFF opens as mode I;16, a 16-bit PGM as mode I."""
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 257, (4, 1))  # 0, 257, .., 65535 along each row
    Image.fromarray(ramp).save(tmp_path / f"ramp{suffix}")
    assert Image.open(tmp_path / f"ramp{suffix}").mode == ("I" if suffix == ".pgm" else "I;16")
    grey = load_image(tmp_path / f"ramp{suffix}", channels=1, size=0)
    assert grey.dtype == np.uint8 and (grey[..., 0] == np.arange(256)).all()
    colour = load_image(tmp_path / f"ramp{suffix}", channels=3, size=0)
    assert colour.shape == (4, 256, 3) and all((colour[..., c] == np.arange(256)).all() for c in range(3))


def test_an_image_with_no_16_bit_range_is_refused_naming_its_mode(tmp_path):
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float.tif: expected an image of 8 or 16 bits a channel, found mode F "
                                        r"\(32-bit floating point\)"):
        load_image(tmp_path / "float.tif", channels=1, size=0)
    Image.fromarray(np.array([[-1, 0], [70_000, 5]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide.tif: expected an image of 8 or 16 bits a channel \(values 0..65535\), "
                                        r"found mode I with values -1..70000"):
        load_image(tmp_path / "wide.tif", channels=3, size=0)


def test_clothing1m_conflicting_labels_keep_the_last_and_are_reported(tmp_path, capsys, monkeypatch):
    source = write_clothing1m(tmp_path / "c1m")
    lines = (source / "noisy_label_kv.txt").read_text().split("\n")
    key, label = lines[0].split()
    other = (int(label) + 1) % 14
    with open(source / "noisy_label_kv.txt", "a") as fh:
        fh.write(f"{key} {label}\n{key} {other}\n")  # listed three times: twice the same, then another label
    table, conflicts = c1m.read_label_kv(source / "noisy_label_kv.txt", 14)
    assert table[key] == other and conflicts == {key: [int(label), other]}
    assert c1m.read_label_kv(source / "clean_label_kv.txt", 14)[1] == {}  # listed once each: nothing to report
    first = (source / "clean_label_kv.txt").read_text().split("\n")[0]
    with open(source / "clean_label_kv.txt", "a") as fh:  # the same label again is no conflict
        fh.write(first + "\n")
    assert c1m.read_label_kv(source / "clean_label_kv.txt", 14)[1] == {}
    manifest = run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    assert manifest["label_conflicts"] == {"noisy_label_kv.txt": {
        "keys": 1, "kept": "the last label", "examples": {key: [int(label), other]}}}
    written = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert written["label_conflicts"] == manifest["label_conflicts"]
    (tmp_path / "params.yaml").write_text(f"ingest: {{dataset: clothing1m, path: {source}, image_size: 8}}\n")
    monkeypatch.chdir(tmp_path)  # the CLI writes to artifacts/ingest under the working directory
    assert ingest_main(["--params", "params.yaml"]) == 0
    assert (f"WARNING: noisy_label_kv.txt: 1 image key listed with different labels; each keeps its last label (e.g. "
            f"{key} [{label}, {other}])") in capsys.readouterr().err


def test_imagefolder_npz_files_keep_each_images_file_relative_to_the_folder(tmp_path):
    """train.npz and test.npz carry ``keys``, the file of each row, which the label-issue list and validate's
    duplicate report name."""
    root, _ = write_folder_with_val(tmp_path / "mine", "folders", count=12, val_from=10)
    run(IngestConfig(dataset="imagefolder", path=str(root), channels=1, test_fraction=0.25), out=tmp_path / "out")
    for split in ("train", "val", "test"):
        with np.load(tmp_path / "out" / f"{split}.npz") as arrays:
            keys = arrays["keys"].tolist()
            values = arrays["images"][:, 0, 0, 0].tolist()
        assert len(keys) == len(values) and all(key.startswith(("train/", "val/")) for key in keys)
        assert [int(Path(key).stem) * 10 for key in keys] == values  # each row's own file


def test_clothing1m_training_order_is_the_seeds(tmp_path):
    """The training samples are written in a random order drawn with ingest.seed: the same seed, the same shards."""
    source = write_clothing1m(tmp_path / "c1m", per_split=3, train=12)
    orders = []
    for seed in (0, 0, 1):
        run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8, seed=seed), out=tmp_path / "out")
        orders.append([k.decode() for k in read_index(tmp_path / "out", "train").key])
    assert orders[0] == orders[1] != orders[2] and sorted(orders[0]) == sorted(orders[2])


def test_clothing1m_manifest_digest_is_every_key_with_its_files_sha256(tmp_path):
    """``images_sha256``: one digest over every image key and its file's sha256 (docs/data.md), in shard order."""
    source = write_clothing1m(tmp_path / "c1m", per_split=3)
    manifest = run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    digest = hashlib.sha256()
    for split in ("train", "val", "test"):
        for key in read_index(tmp_path / "out", split).key:
            digest.update(f"{key.decode()} {hashlib.sha256((source / key.decode()).read_bytes()).hexdigest()}\n"
                          .encode())
    assert manifest["images_sha256"] == digest.hexdigest()


def test_clothing1m_ingest_removes_the_staging_folder_a_killed_run_left(tmp_path):
    source = write_clothing1m(tmp_path / "c1m", per_split=3)
    leftover = tmp_path / "out" / ".shards.k1ll3d_x"  # mkdtemp's name: what a run killed mid-copy leaves
    leftover.mkdir(parents=True)
    (leftover / "train-00000.tar").write_bytes(b"half a shard")
    run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "shards"]


def test_clothing1m_manifest_records_the_crop_as_the_image_shape_and_its_labels_as_given(tmp_path):
    """The short side is resized to ingest.resize, then cropped to ingest.image_size: the shape every step sees is
    the crop's. Clothing1M's web labels are labels whose truth is not known: ``as given``."""
    source = write_clothing1m(tmp_path / "c1m", per_split=3)
    manifest = run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8, resize=12),
                   out=tmp_path / "out")
    assert manifest["image_shape"] == [8, 8, 3]
    assert (manifest["transform"]["resize"], manifest["transform"]["crop"]) == (12, 8)
    assert manifest["labels"] == "as given" and manifest["test_source"] == "the dataset's test split"


def write_human_labels(path, clean, **changes):
    """A CIFAR-10_human.pt whose every label set is ``clean``, but for ``changes`` (name: array)."""
    import torch  # noqa: PLC0415

    table = {name: clean.copy() for name in ("clean_label", "aggre_label", "worse_label", "random_label1",
                                              "random_label2", "random_label3")}
    torch.save({**table, **changes}, path)


def test_cifar10n_labels_are_checked_against_cifar10(tmp_path):
    """Each label set holds class indices in [0, 9]; ``clean_label`` must be CIFAR-10's own training labels."""
    source = write_cifar10(tmp_path / "cifar")
    clean = read_cifar10(source).train_labels
    human = source / "CIFAR-10_human.pt"
    write_human_labels(human, clean, worse_label=np.where(np.arange(clean.size) == 3, 10, clean))
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: expected worse_label labels in \[0, 9\], found values "
                                        r"from 0 to 10"):
        read_cifar10n(source, human)
    write_human_labels(human, clean, random_label1=np.where(np.arange(clean.size) == 3, -1, clean))
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: expected random_label1 labels in \[0, 9\], found "
                                        r"values from -1 to \d"):
        read_cifar10n(source, human)
    write_human_labels(human, clean, clean_label=(clean + 1) % 10)
    with pytest.raises(DataError, match=r"CIFAR-10_human.pt: expected clean_label to equal the CIFAR-10 training "
                                        r"labels in order, found 20 differences"):
        read_cifar10n(source, human)


def test_cifar10n_manifest_hashes_the_human_labels_file(tmp_path):
    source = write_cifar10(tmp_path / "cifar", tarball=True).parent
    write_cifar10n(source / "CIFAR-10_human.pt", read_cifar10(source).train_labels)
    manifest = run(IngestConfig(dataset="cifar10n", path=str(source)), out=tmp_path / "out")
    assert sorted(manifest["inputs_sha256"]) == ["CIFAR-10_human.pt", "cifar-10-python.tar.gz"]
    assert manifest["inputs_sha256"]["CIFAR-10_human.pt"] == \
        hashlib.sha256((source / "CIFAR-10_human.pt").read_bytes()).hexdigest()


def test_a_tarball_without_a_batch_is_named(tmp_path):
    tarball = write_cifar10(tmp_path / "cifar", tarball=True)
    with tarfile.open(tarball) as source, tarfile.open(tmp_path / "cut.tar.gz", "w:gz") as target:
        for member in source.getmembers():
            if not member.name.endswith("data_batch_3"):
                target.addfile(member, source.extractfile(member))
    with pytest.raises(DataError, match=r"cut.tar.gz: expected the CIFAR-10 batches data_batch_3, found none"):
        read_cifar10(tmp_path / "cut.tar.gz")


def test_clothing1m_class_names_labels_and_hashed_lists(tmp_path):
    """category_names_eng.txt names the classes; a label must lie in [0, K - 1]; the manifest hashes the two label
    files and the three key lists."""
    source = write_clothing1m(tmp_path / "c1m", per_split=3)
    names = [f"class {i}" for i in range(14)]
    (source / "category_names_eng.txt").write_text("\n".join(names) + "\n\n")
    manifest = run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=tmp_path / "out")
    assert manifest["class_names"] == names
    assert sorted(manifest["inputs_sha256"]) == sorted(["noisy_label_kv.txt", "clean_label_kv.txt",
                                                        *c1m.SPLITS.values()])
    with open(source / "noisy_label_kv.txt", "a") as fh:
        fh.write("images/0/00/x.jpg 14\n")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line \d+: expected a label in \[0, 13\], found 14$"):
        c1m.read_label_kv(source / "noisy_label_kv.txt", 14)


def test_the_pixel_limit_admits_an_image_of_exactly_the_limit():
    from components.formats.images import check_pixels  # noqa: PLC0415

    check_pixels((100, 50), where="x.png", max_pixels=5000)
    with pytest.raises(ImageTooLargeError, match=r"x.png: expected an image of at most 4999 pixels .* found "
                                                 r"100x50 = 5000 pixels"):
        check_pixels((100, 50), where="x.png", max_pixels=4999)


def test_a_32_bit_image_just_over_16_bits_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 65536]], dtype=np.int32), mode="I").save(tmp_path / "a.tif", format="TIFF")
    with pytest.raises(DataError, match=r"a.tif: expected an image of 8 or 16 bits a channel \(values 0..65535\), "
                                        r"found mode I with values 0..65536"):
        load_image(tmp_path / "a.tif", channels=1, size=0)


def test_imagefolder_classes_are_sorted_by_name_and_extensions_read_in_any_case(tmp_path):
    """Classes are numbered in name order, not in the order labels.csv first lists them; ``.PNG`` is an image."""
    root = tmp_path / "mine"
    rows = ["filename,label"]
    for i, cls in enumerate(["zebra", "ant", "zebra", "ant", "moth", "moth"]):
        write_image(root / "pics" / f"{i}.PNG", (4, 4), (i * 30, 0, 0))
        rows.append(f"pics/{i}.PNG,{cls}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = read_imagefolder(root, channels=3, size=0, test_fraction=0.5, seed=0)
    assert dataset.class_names == ["ant", "moth", "zebra"]
    assert sorted(zip(dataset.train_keys + dataset.test_keys, [*dataset.train_labels, *dataset.test_labels],
                      strict=True)) == [(f"pics/{i}.PNG", label) for i, label in enumerate([2, 0, 2, 0, 1, 1])]
    (root / "labels.csv").unlink()
    for i, cls in enumerate(["zebra", "ant", "zebra", "ant"]):
        (root / "pics" / f"{i}.PNG").rename((root / cls).mkdir(exist_ok=True) or root / cls / f"{i}.PNG")
    (root / "ant" / "more").mkdir()  # a sub-folder is no skipped file; the images in it are read
    write_image(root / "ant" / "more" / "9.png", (4, 4), (9, 9, 9))
    shutil.rmtree(root / "pics")
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    assert manifest["class_names"] == ["ant", "zebra"] and sum(manifest["counts"].values()) == 5
    assert "skipped_files" not in manifest


def test_a_labels_csv_without_training_images_is_refused(tmp_path):
    root = tmp_path / "mine"
    rows = ["filename,label,split"]
    for i in range(4):
        write_image(root / f"{i}.png", (4, 4), (i, i, i))
        rows.append(f"{i}.png,{'cat' if i % 2 else 'dog'},{'val' if i < 2 else 'test'}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"mine: expected training images, found only the splits \['test', 'val'\]"):
        read_imagefolder(root, channels=1, size=0, test_fraction=0.5, seed=0)


def test_a_conflicting_key_lists_each_label_once_in_the_order_they_first_appear(tmp_path):
    (tmp_path / "kv.txt").write_text("a.jpg 3\nb.jpg 1\na.jpg 5\n\na.jpg 3\na.jpg 5\nb.jpg 1\n")
    table, conflicts = c1m.read_label_kv(tmp_path / "kv.txt", 14)
    assert table == {"a.jpg": 5, "b.jpg": 1} and conflicts == {"a.jpg": [3, 5]}


def test_clothing1m_category_names_leading_out_of_the_folder_are_refused(tmp_path):
    source = write_clothing1m(tmp_path / "c1m", per_split=3)
    (tmp_path / "secret.txt").write_text("\n".join(f"leaked {i}" for i in range(14)))
    (source / "category_names_eng.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(DataError, match=r"category_names_eng.txt: expected a file inside .*, found a symbolic link "
                                        r"to .*secret.txt, outside it"):
        c1m.class_names(source)


@pytest.mark.parametrize("label", ["--3", "1\u00b2"])
def test_a_malformed_clothing1m_label_is_a_data_error_naming_its_line(tmp_path, label):
    """A label ``int`` cannot read ('--3', '1²') is a DataError naming the file and line: it was a bare ValueError
    ("invalid literal for int() with base 10: '--3'"), naming neither."""
    (tmp_path / "noisy_label_kv.txt").write_text(f"images/0/00/a.jpg 1\nimages/0/00/b.jpg {label}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"noisy_label_kv.txt line 2: expected '<image key> <label>', found"):
        c1m.read_label_kv(tmp_path / "noisy_label_kv.txt", 14)


def test_a_sub_folder_named_like_an_image_is_not_read_as_one(tmp_path):
    """A class folder's images are the files under it whose extension is an image's; a folder ``album.jpg/`` was
    taken for an image and failed the whole ingest ("expected an image file, found no such file")."""
    root = tmp_path / "mine"
    for i in range(4):
        write_image(root / ("cat" if i % 2 else "dog") / f"{i}.png", (4, 4), (i * 40,) * 3)
    write_image(root / "cat" / "album.jpg" / "9.png", (4, 4), (250, 250, 250))
    dataset = read_imagefolder(root, channels=1, size=0, test_fraction=0.5, seed=0)
    assert sorted(dataset.train_keys + dataset.test_keys) == ["cat/1.png", "cat/3.png", "cat/album.jpg/9.png",
                                                             "dog/0.png", "dog/2.png"]
