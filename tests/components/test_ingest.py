import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from components.common.errors import DataError
from components.formats.idx import FASHION_MNIST_FILES, IDX_IMAGES, IDX_LABELS, read_idx
from components.ingest import IngestConfig, run
from tests.components.conftest import idx_bytes, write_idx
from tests.components.formats_fixtures import write_image


def test_ingest_writes_arrays_and_manifest(fashion_dir, tmp_path):
    out = tmp_path / "out"
    manifest = run(IngestConfig(path=str(fashion_dir)), out=out)
    with np.load(out / "train.npz") as train:
        assert train["images"].shape == (300, 28, 28, 1) and train["images"].dtype == np.uint8
        assert train["labels"].dtype == np.int64 and train["labels"].max() <= 9
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["counts"] == {"train": 300, "test": 60}
    assert manifest["class_names"][9] == "Ankle boot"
    name = "train-images-idx3-ubyte.gz"
    assert manifest["inputs_sha256"][name] == hashlib.sha256((fashion_dir / name).read_bytes()).hexdigest()


def test_ingest_reads_the_real_dataset_when_installed():
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make setup installs it)")
    assert read_idx(root / "t10k-images-idx3-ubyte.gz", IDX_IMAGES).shape == (10000, 28, 28)


def break_file(root, name, content: bytes):
    (root / name).write_bytes(content)


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("train-images-idx3-ubyte.gz", lambda p: p.write_bytes(p.read_bytes()[:200]),
     r"train-images-idx3-ubyte.gz: expected a gzip file, found a truncated or corrupt one"),
    ("train-labels-idx1-ubyte.gz", lambda p: p.write_bytes(b"not gzip at all"),
     r"train-labels-idx1-ubyte.gz: expected a gzip file, found a truncated or corrupt one"),
    ("t10k-images-idx3-ubyte.gz", lambda p: p.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28)), 0x0801))),
     r"t10k-images-idx3-ubyte.gz: expected IDX magic number 0x00000803, found 0x00000801"),
    ("t10k-images-idx3-ubyte.gz",
     lambda p: p.write_bytes(gzip.compress(idx_bytes(np.zeros((60, 28, 28)), 0x0803)[:-5])),
     r"expected 47040 data bytes for shape \[60, 28, 28\], found 47035"),
    ("train-labels-idx1-ubyte.gz", lambda p: write_idx(p, np.zeros(299), 0x0801),
     r"train-images-idx3-ubyte.gz: expected as many images as train-labels-idx1-ubyte.gz has labels \(299\), "
     r"found 300"),
    ("train-labels-idx1-ubyte.gz", lambda p: write_idx(p, np.full(300, 12), 0x0801),
     r"train-labels-idx1-ubyte.gz: expected train labels in \[0, 9\], found values from 12 to 12"),
    ("t10k-labels-idx1-ubyte.gz", lambda p: p.unlink(),
     r"t10k-labels-idx1-ubyte.gz: expected an IDX file, found no such"),
    ("train-images-idx3-ubyte.gz",  # a header promising a billion images: refused before any data is read
     lambda p: p.write_bytes(gzip.compress(IDX_IMAGES.to_bytes(4, "big") + b"".join(
         d.to_bytes(4, "big") for d in (10**9, 28, 28)) + bytes(100))),
     r"train-images-idx3-ubyte.gz: expected as many images as train-labels-idx1-ubyte.gz has labels \(300\), "
     r"found 1000000000$"),
    ("t10k-images-idx3-ubyte.gz",  # more data than the header says: counted, not kept
     lambda p: p.write_bytes(gzip.compress(idx_bytes(np.zeros((60, 28, 28)), 0x0803) + bytes(3 << 20))),
     r"expected 47040 data bytes for shape \[60, 28, 28\], found 3192768$"),
    ("t10k-labels-idx1-ubyte.gz", lambda p: p.write_bytes(gzip.compress(IDX_LABELS.to_bytes(4, "big") + b"\0\0")),
     r"t10k-labels-idx1-ubyte.gz: expected 1 dimensions in the IDX header, found 0$"),
])
def test_bad_input_fails_clearly_and_keeps_previous_outputs(fashion_dir, tmp_path, name, damage, message):
    out = tmp_path / "out"
    run(IngestConfig(path=str(fashion_dir)), out=out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    damage(fashion_dir / name)
    with pytest.raises(DataError, match=message):
        run(IngestConfig(path=str(fashion_dir)), out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'. Valid: fashion-mnist"):
        IngestConfig(dataset="mnist")


@pytest.mark.parametrize("seed", [-1, 2.0, False])
def test_a_seed_that_is_not_a_non_negative_integer_is_a_config_error(seed):
    with pytest.raises(ValueError, match=rf"seed: expected an integer >= 0, found {seed!r}"):
        IngestConfig(seed=seed)


def test_the_test_digest_names_the_test_sets_content_and_nothing_else(fashion_dir, tmp_path):
    """What the gate compares before it compares accuracies with the champion's: the same for the same test images
    and labels (a rerun, a new training split), different when one label or pixel of the test set changes."""
    from components.common.splits import test_digest  # noqa: PLC0415

    out = tmp_path / "out"
    run(IngestConfig(path=str(fashion_dir)), out=out)
    first = test_digest(out)
    with np.load(out / "train.npz") as train:
        np.savez(out / "train.npz", images=train["images"][::-1], labels=train["labels"][::-1])
    assert test_digest(out) == first
    with np.load(out / "test.npz") as test:
        images, labels = test["images"], test["labels"].copy()
    labels[0] = (labels[0] + 1) % 10
    np.savez(out / "test.npz", images=images, labels=labels)
    assert test_digest(out) != first


@pytest.mark.parametrize(("settings", "message"), [
    ({"dataset": "clothing1m", "image_size": 224, "resize": 223},
     r"resize: expected 0 or at least image_size \(224\), found 223"),
    ({"dataset": "clothing1m", "image_size": 8, "shard_size": 0},
     r"image_size, shard_size, resize: expected >= 0, >= 1, >= 0, found 8, 0, 0"),
    ({"dataset": "clothing1m"}, r"image_size: expected a size \(e.g. 224\) for clothing1m"),
    ({"dataset": "imagefolder", "test_fraction": 0.0}, r"test_fraction: expected a number in \(0, 1\), found 0.0"),
    ({"dataset": "cifar10n", "human_labels": ""}, r"human_labels: expected the path of CIFAR-10_human.pt"),
])
def test_settings_out_of_their_documented_range_are_config_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        IngestConfig(**settings)


def test_settings_at_the_edge_of_their_documented_range_are_accepted():
    """resize may equal the crop (Resize(224) then CenterCrop(224)); one image a shard is a shard size."""
    assert IngestConfig(dataset="clothing1m", image_size=224, resize=224, shard_size=1).resize == 224


def test_the_manifest_hashes_every_input_file_by_its_name_inside_the_dataset_folder(fashion_dir, tmp_path):
    manifest = run(IngestConfig(path=str(fashion_dir)), out=tmp_path / "out")
    assert sorted(manifest["inputs_sha256"]) == sorted(n for pair in FASHION_MNIST_FILES.values() for n in pair)
    root = tmp_path / "mine"
    for i in range(6):
        for cls in ("cat", "dog"):  # cat/0.png and dog/0.png: two inputs of one file name
            write_image(root / cls / f"{i}.png", (4, 4), (i * 40 + 20 * (cls == "dog"),) * 3)  # no near-duplicates
    manifest = run(IngestConfig(dataset="imagefolder", path=str(root)), out=tmp_path / "out")
    assert len(manifest["inputs_sha256"]) == 12
    assert manifest["inputs_sha256"]["dog/5.png"] == hashlib.sha256((root / "dog/5.png").read_bytes()).hexdigest()


@pytest.mark.parametrize(("name", "damage", "message"), [
    ("train-labels-idx1-ubyte.gz", lambda p: write_idx(p, np.full(300, 10), 0x0801),
     r"train-labels-idx1-ubyte.gz: expected train labels in \[0, 9\], found values from 10 to 10"),
    ("t10k-images-idx3-ubyte.gz",
     lambda p: p.write_bytes(gzip.compress(idx_bytes(np.zeros((60, 28, 28)), 0x0803) + b"\0")),
     r"expected 47040 data bytes for shape \[60, 28, 28\], found 47041"),
], ids=["label-10", "trailing-byte"])
def test_fashion_mnist_edges_of_the_checks(fashion_dir, tmp_path, name, damage, message):
    damage(fashion_dir / name)
    with pytest.raises(DataError, match=message):
        run(IngestConfig(path=str(fashion_dir)), out=tmp_path / "out")
