"""The published datasets as people hold them: Clothing1M's lists with a key in two of them (a test image trained
on, which nothing refused), its images in the authors' layout, its text files saved with a byte-order mark or a
label file copied over a key list; Fashion-MNIST uncompressed; CIFAR-10 gunzipped by a browser or in its binary
version; CIFAR-10N's labels in torch's legacy serialization. Each once read wrong without a word, or refused
without saying why."""

import gzip
import io
import re
import shutil
import tarfile

import numpy as np
import pytest
import torch

from components.common.errors import DataError
from components.formats import clothing1m as c1m
from components.formats.cifar import read_cifar10, read_cifar10n
from components.formats.idx import FASHION_MNIST_FILES, read_fashion_mnist
from components.formats.webdataset import read_index
from components.ingest import IngestConfig, run
from tests.components.formats_fixtures import STORED_BLOCK, gzip_stored, stored_offset, write_cifar10, write_clothing1m

TRAIN, VAL, TEST = (c1m.SPLITS[s] for s in ("train", "val", "test"))


def ingest(source, out):
    return run(IngestConfig(dataset="clothing1m", path=str(source), image_size=8), out=out)


def append(path, line):
    with open(path, "a") as fh:
        fh.write(line + "\n")


def add_key(source, name, key, label=0):
    """``key`` appended to the list ``name`` (line 6 of the fixture's lists of 5), with a label where it needs one."""
    append(source / name, key)
    append(source / ("noisy_label_kv.txt" if name == TRAIN else "clean_label_kv.txt"), f"{key} {label}")


WHY = {"test-train": "a test image must not be trained on (the gate would judge the model on images it learnt); "
                     f"remove it from {TRAIN}",
       "val-train": "a validation image must not be trained on (it would flatter the model selection); remove it "
                    f"from {TRAIN}",
       "test-val": "a test image must not select the model (the test accuracy would no longer be of unseen images); "
                   f"remove it from {VAL}"}


@pytest.mark.parametrize(("added_to", "key", "named", "line", "other", "other_line", "why"), [
    (TRAIN, "images/0/00/test0.jpg", TEST, 1, TRAIN, 6, "test-train"),  # a test image put into training
    (TEST, "images/0/00/train0.jpg", TEST, 6, TRAIN, 1, "test-train"),
    (VAL, "images/1/01/train1.jpg", VAL, 6, TRAIN, 2, "val-train"),
    (TRAIN, "images/0/02/val2.jpg", VAL, 3, TRAIN, 6, "val-train"),
    (TEST, "images/0/04/val4.jpg", TEST, 6, VAL, 5, "test-val"),
], ids=["test-in-train", "train-in-test", "train-in-val", "val-in-train", "val-in-test"])
def test_clothing1m_refuses_a_key_in_two_lists_naming_both_lines(tmp_path, added_to, key, named, line, other,
                                                                 other_line, why):
    """A key in noisy_train_key_list.txt and clean_test_key_list.txt was ingested into both splits: an exact leak,
    which validate's near-duplicate share (up to 5 %) let through."""
    source = write_clothing1m(tmp_path / "c1m")
    add_key(source, added_to, key)
    with pytest.raises(DataError) as caught:
        ingest(source, tmp_path / "out")
    assert str(caught.value) == (f"{source / named} line {line}: expected a key in one key list only, found {key} "
                                 f"also in {other} line {other_line}: {WHY[why]}")
    assert not (tmp_path / "out" / "shards").exists()


@pytest.mark.parametrize("name", [TRAIN, VAL, TEST])
def test_clothing1m_refuses_a_key_listed_twice_in_one_list(tmp_path, name):
    """labels.csv refuses a file listed twice; a Clothing1M key listed twice was trained on (or tested) twice."""
    source = write_clothing1m(tmp_path / "c1m")
    key = (source / name).read_text().split()[2]
    append(source / name, key)
    with pytest.raises(DataError) as caught:
        ingest(source, tmp_path / "out")
    assert str(caught.value) == (f"{source / name} line 6: expected each image key once, found {key} also on line 3: "
                                 f"it would be read twice (trained on twice, or counted twice in an accuracy); remove "
                                 f"the repeated line")


def test_clothing1m_reads_no_clean_train_list_so_its_overlap_with_training_is_no_error(tmp_path):
    """clean_train_key_list.txt (the clean training keys, which the paper does not use) overlaps the noisy training
    keys in the published dataset: it is not read, and one pass over the three lists keeps their keys apart."""
    source = write_clothing1m(tmp_path / "c1m")
    (source / "clean_train_key_list.txt").write_text((source / TRAIN).read_text())
    listed = {}
    rows = {s: c1m.split_keys(source, s, noisy=c1m.read_label_kv(source / "noisy_label_kv.txt", 14)[0],
                              clean=c1m.read_label_kv(source / "clean_label_kv.txt", 14)[0], listed=listed)
            for s in c1m.SPLITS}
    assert {s: len(r) for s, r in rows.items()} == {"train": 5, "val": 5, "test": 5}
    assert listed["test"] == {f"images/{i % 2}/{i:02d}/test{i}.jpg": i + 1 for i in range(5)}
    assert ingest(source, tmp_path / "out")["counts"] == {"train": 5, "val": 5, "test": 5}


def to_authors_layout(source):
    """The image folders 0..9 moved out of images/ to the top, as LiJunnan1992/MLNT's loader reads them."""
    for folder in (source / "images").iterdir():
        folder.rename(source / folder.name)
    (source / "images").rmdir()


def test_clothing1m_reads_the_authors_layout_alike(tmp_path):
    """MLNT's loader opens ``root + key[7:]``: with the folders 0..9 at the top, ingest failed on the first key
    (``expected the image images/0/00/train0.jpg, found no such file``). The same images give the same shards."""
    source = write_clothing1m(tmp_path / "c1m")
    published = ingest(source, tmp_path / "published")
    to_authors_layout(source)
    assert c1m.flat_layout(source) and c1m.read_image(source, "images/0/00/val0.jpg") == \
        (source / "0/00/val0.jpg").read_bytes()
    authors = ingest(source, tmp_path / "authors")
    assert authors["images_sha256"] == published["images_sha256"] and authors["counts"] == published["counts"]
    for split in c1m.SPLITS:
        assert read_index(tmp_path / "authors", split).key.tolist() == \
            read_index(tmp_path / "published", split).key.tolist()
    (source / "0/00/test0.jpg").unlink()
    with pytest.raises(DataError) as caught:
        ingest(source, tmp_path / "authors")
    assert str(caught.value) == (f"{source / TEST} line 1: expected the image 0/00/test0.jpg (key "
                                 f"images/0/00/test0.jpg; with no images/ folder, the image folders 0..9 are read "
                                 f"from {source} itself, as in the authors' loader), found no such file; put them in "
                                 f"{source / 'images'} (the published layout) or in {source}")


def test_clothing1m_names_an_image_left_outside_images_and_what_to_do(tmp_path):
    """Beside an images/ folder, an image in the authors' place is not read (one layout for every key), but named."""
    source = write_clothing1m(tmp_path / "c1m")
    (source / "1").mkdir()
    (source / "images/1/01").rename(source / "1/01")
    with pytest.raises(DataError) as caught:
        ingest(source, tmp_path / "out")
    assert str(caught.value) == (f"{source / TRAIN} line 2: expected the image images/1/01/train1.jpg, found no such "
                                 f"file, but 1/01/train1.jpg outside images/ (the authors' layout): move the image "
                                 f"folders 0..9 into {source / 'images'}; and 2 more listed images could not be read "
                                 f"either: images/1/01/val1.jpg, images/1/01/test1.jpg. Fix each, or remove its key "
                                 f"from the key lists, then ingest again")


def samples(out, split):
    """Each sample of ``split`` in the shards at ``out``: its key, label and clean label, by key."""
    index = read_index(out, split)
    return sorted(zip(index.key.tolist(), index.label.tolist(), index.clean_label.tolist(), strict=True))


@pytest.mark.parametrize("name", ["noisy_label_kv.txt", "clean_label_kv.txt", TRAIN, VAL, TEST,
                                  "category_names_eng.txt"])
def test_clothing1m_text_files_may_start_with_a_byte_order_mark(tmp_path, name):
    """A list saved by Notepad or Excel as UTF-8 starts with U+FEFF: the first key became ``\\ufeffimages/...``
    (``expected the image \\ufeffimages/0/00/train0.jpg, found no such file``), the first class name ``\\ufeffclass
    0``, and in clean_label_kv.txt the first training key silently lost its clean label."""
    source = write_clothing1m(tmp_path / "c1m")
    names = [f"class {i}" for i in range(14)]
    (source / "category_names_eng.txt").write_text("\n".join(names) + "\n")
    ingest(source, tmp_path / "plain")
    path = source / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    manifest = ingest(source, tmp_path / "bom")
    assert manifest["class_names"] == names and manifest["counts"] == {"train": 5, "val": 5, "test": 5}
    for split in c1m.SPLITS:
        assert samples(tmp_path / "bom", split) == samples(tmp_path / "plain", split)


def test_clothing1m_refuses_a_label_file_copied_over_a_key_list(tmp_path):
    """noisy_label_kv.txt copied over noisy_train_key_list.txt: each line ``<key> <label>`` was taken for a key,
    and the error said no label was found for it."""
    source = write_clothing1m(tmp_path / "c1m")
    shutil.copy(source / "noisy_label_kv.txt", source / TRAIN)
    with pytest.raises(DataError) as caught:
        ingest(source, tmp_path / "out")
    assert str(caught.value) == (f"{source / TRAIN} line 1: expected one image key per line, found "
                                 f"'images/0/00/train0.jpg 0'; {TRAIN} holds keys only (is it a copy of a label file, "
                                 f"'<image key> <label>'?): put the published key list there")


@pytest.mark.parametrize("which", ["all", "train-images"])
def test_fashion_mnist_idx_files_may_be_uncompressed(fashion_dir, which):
    """Kaggle's copy and torchvision's raw/ folder hold the IDX files without .gz: ingest wanted the .gz names."""
    expected = read_fashion_mnist(fashion_dir)
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    for name in names if which == "all" else names[:1]:
        (fashion_dir / name.removesuffix(".gz")).write_bytes(gzip.decompress((fashion_dir / name).read_bytes()))
        (fashion_dir / name).unlink()
    found = read_fashion_mnist(fashion_dir)
    assert np.array_equal(found.train_images, expected.train_images)
    assert np.array_equal(found.test_labels, expected.test_labels)
    assert found.inputs[0] == fashion_dir / "train-images-idx3-ubyte"
    (fashion_dir / "train-images-idx3-ubyte").unlink()
    with pytest.raises(DataError) as caught:
        read_fashion_mnist(fashion_dir)
    assert str(caught.value) == (f"{fashion_dir / 'train-images-idx3-ubyte.gz'}: expected an IDX file, found no such "
                                 f"file (nor train-images-idx3-ubyte, the file uncompressed)")


def test_an_uncompressed_idx_file_cut_short_is_named(fashion_dir):
    name = FASHION_MNIST_FILES["test"][0]
    data = gzip.decompress((fashion_dir / name).read_bytes())
    (fashion_dir / name).unlink()
    (fashion_dir / name.removesuffix(".gz")).write_bytes(data[:-5])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected 47040 data bytes for shape \[60, 28, 28\], "
                                        r"found 47035$"):
        read_fashion_mnist(fashion_dir)


@pytest.mark.parametrize("dims", [(300, 16777244, 28), (300, 2**32 - 1, 2**32 - 1)], ids=["bit-flip", "wraps-int64"])
@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
def test_an_idx_header_promising_a_huge_array_is_a_data_error(fashion_dir, dims, gzipped):
    """A header whose width has one bit flipped (0x0100001c for 28) passed the count check, and the reader asked for
    its 141 GB at once: a MemoryError traceback. A product of the dimensions past 2**63 wrapped around silently."""
    name = FASHION_MNIST_FILES["train"][0]
    data = gzip.decompress((fashion_dir / name).read_bytes())
    header = b"".join(d.to_bytes(4, "big") for d in dims)
    damaged = data[:4] + header + data[16:]
    if not gzipped:
        (fashion_dir / name).unlink()
        name = name.removesuffix(".gz")
    (fashion_dir / name).write_bytes(gzip.compress(damaged) if gzipped else damaged)
    size, shape = dims[0] * dims[1] * dims[2], re.escape(str(list(dims)))
    with pytest.raises(DataError, match=rf"/{name}: expected {size} data bytes for shape {shape}, found 235200$"):
        read_fashion_mnist(fashion_dir)


def test_an_idx_file_gunzipped_under_its_gz_name_is_read(fashion_dir):
    """A browser that gunzips on download leaves the IDX file under its .gz name, as it does CIFAR-10's tarball:
    "expected a gzip file, found a truncated or corrupt one", and downloading again brought the same file back."""
    expected = read_fashion_mnist(fashion_dir)
    for name in FASHION_MNIST_FILES["train"]:
        (fashion_dir / name).write_bytes(gzip.decompress((fashion_dir / name).read_bytes()))
    found = read_fashion_mnist(fashion_dir)
    assert np.array_equal(found.train_images, expected.train_images)
    assert np.array_equal(found.train_labels, expected.train_labels)
    assert found.inputs == expected.inputs
    (fashion_dir / FASHION_MNIST_FILES["train"][1]).write_bytes(b"<html>Not Found</html>")  # neither gzip nor IDX
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: expected a gzip file, found a truncated or "
                                        r"corrupt one \(Not a gzipped file"):
        read_fashion_mnist(fashion_dir)

@pytest.mark.parametrize("name", ["cifar-10-python.tar.gz", "cifar-10-python.tar"])
def test_a_cifar10_tarball_a_browser_gunzipped_is_read(tmp_path, name):
    """A browser that gunzips on download leaves a plain tar, under the .gz name or as .tar: ``found a corrupt
    archive (not a gzip file)``."""
    expected = read_cifar10(write_cifar10(tmp_path / "folder"))
    tarball = write_cifar10(tmp_path / "gz", tarball=True)
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / name).write_bytes(gzip.decompress(tarball.read_bytes()))
    for path in (folder, folder / name):
        found = read_cifar10(path)
        assert np.array_equal(found.train_images, expected.train_images)
        assert found.class_names == expected.class_names and found.inputs == [folder / name]


def test_a_file_that_is_no_archive_is_named_on_one_line(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not an archive at all" * 40)
    with pytest.raises(DataError) as caught:
        read_cifar10(tmp_path)
    assert str(caught.value) == (f"{tmp_path / 'cifar-10-python.tar.gz'}: expected cifar-10-python.tar.gz, found a "
                                 f"corrupt archive (neither a tar archive nor a gzip, bzip2 or xz compressed one)")


DOWNLOAD_AGAIN = "the download was cut short or damaged; download it again"


def damaged_at(tar: bytes, where: str) -> bytes:
    """``tar`` gzipped in stored blocks (``gzip_stored``: the same bytes under every zlib), damaged at a fixed
    place: ``block-length``, the length of the block holding data_batch_3's header (zlib.error, which escaped as a
    traceback); ``tar-header``, that header's name (the archive read as ending there: reported as batches missing);
    ``pixel``, one bit of an ASCII byte half-way through data_batch_1, in its data (which a protocol-2 pickle holds
    as latin-1 text): another pixel value, read without a word."""
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        members = {m.name.rsplit("/", 1)[1]: m for m in archive.getmembers()}
    header, batch = members["data_batch_3"].offset, members["data_batch_1"]
    pixel = next(i for i in range(batch.offset_data + batch.size // 2, len(tar)) if 0x20 <= tar[i] < 0x7f)
    at, flips = {"block-length": (10 + header // STORED_BLOCK * (STORED_BLOCK + 5) + 3, b"\x55\x55"),
                 "tar-header": (stored_offset(header + 10), b"\x55" * 4),
                 "pixel": (stored_offset(pixel), b"\x01")}[where]
    damaged = bytearray(gzip_stored(tar))
    damaged[at:at + len(flips)] = bytes(b ^ f for b, f in zip(damaged[at:at + len(flips)], flips, strict=True))
    return bytes(damaged)


@pytest.mark.parametrize(("where", "reason"), [
    ("block-length", "Error -3 while decompressing data: invalid stored block lengths"),
    ("tar-header", "CRC check failed 0x[0-9a-f]+ != 0x[0-9a-f]+"),
    ("pixel", "CRC check failed 0x[0-9a-f]+ != 0x[0-9a-f]+"),
])
def test_a_damaged_cifar10_tarball_is_refused_as_damaged(tmp_path, where, reason):
    """A download damaged in the middle: zlib.error escaped as a traceback, a header read wrong was reported as
    batches missing (``expected the CIFAR-10 batches data_batch_3, ..., found none``), and a pixel read wrong
    passed. The archive is now read to its end, where gzip checks its CRC."""
    tar = gzip.decompress(write_cifar10(tmp_path / "source", per_batch=20, tarball=True).read_bytes())
    assert len(tar) > 4 * STORED_BLOCK  # data_batch_3's header lies past the first block
    tarball = tmp_path / "cifar" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    tarball.write_bytes(gzip_stored(tar))
    assert read_cifar10(tarball.parent).train_labels.size == 100  # undamaged, the stored blocks read
    tarball.write_bytes(damaged_at(tar, where))
    with pytest.raises(DataError) as caught:
        read_cifar10(tarball.parent)
    assert re.fullmatch(rf"{re.escape(str(tarball))}: expected cifar-10-python.tar.gz, found a corrupt archive "
                        rf"\({reason}\): {DOWNLOAD_AGAIN}", str(caught.value)), str(caught.value)


def test_a_cifar10_tarball_damaged_anywhere_is_refused_as_damaged(tmp_path):
    """The published tarball's compressed bytes, 64 of them flipped at one of several offsets (what each gives
    depends on zlib's output: a zlib.error, a header read wrong, a batch read wrong), or cut short."""
    tarball = write_cifar10(tmp_path / "cifar", per_batch=50, tarball=True)
    published = tarball.read_bytes()
    for share in (0.1, 0.3, 0.325, 0.5, 0.55, 0.7, 0.75, 0.9, 0.999):
        damaged = bytearray(published)
        at = int(len(damaged) * share)
        damaged[at:at + 64] = bytes(b ^ 0x55 for b in damaged[at:at + 64])
        tarball.write_bytes(bytes(damaged))
        with pytest.raises(DataError, match=rf"found a corrupt archive \(.+\): {DOWNLOAD_AGAIN}$"):
            read_cifar10(tarball)
    tarball.write_bytes(published[:len(published) // 2])
    with pytest.raises(DataError, match=rf"found a corrupt archive \(.+\): {DOWNLOAD_AGAIN}$"):
        read_cifar10(tarball)


def write_binary_version(root):
    """CIFAR-10's binary version: cifar-10-batches-bin/ with data_batch_1.bin .. test_batch.bin and
    batches.meta.txt (each record a label byte and 3072 pixel bytes), and its tarball cifar-10-binary.tar.gz."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (folder / name).write_bytes(bytes(3073 * 2))
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    return folder


def test_the_cifar10_binary_version_is_named_with_what_to_use(tmp_path):
    """``expected a CIFAR-10 python batch, found no such file`` (or ``expected the CIFAR-10 batches ..., found
    none``) for the binary version, which holds the same images in another format."""
    folder = write_binary_version(tmp_path / "data")
    use = ("use the python version cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)")
    cases = {folder: "data_batch_1.bin",
             tmp_path / "data": "cifar-10-binary.tar.gz, cifar-10-batches-bin",
             tmp_path / "data" / "cifar-10-binary.tar.gz": "cifar-10-binary.tar.gz holding data_batch_1.bin"}
    for path, found in cases.items():
        with pytest.raises(DataError) as caught:
            read_cifar10(path)
        assert str(caught.value) == (f"{path}: expected the python version of CIFAR-10 (cifar-10-python.tar.gz or "
                                     f"cifar-10-batches-py/), found the binary version ({found}); {use}")
    write_cifar10(tmp_path / "data")  # the python version beside it is read
    assert read_cifar10(tmp_path / "data").train_labels.size == 20


def test_cifar10n_labels_in_torchs_legacy_serialization_say_to_save_them_again(tmp_path):
    """torch.save before 1.6 (or with _use_new_zipfile_serialization=False) writes no zip archive: the reader said
    ``found unreadable data (File is not a zip file)`` and nothing of what to do."""
    source = write_cifar10(tmp_path / "cifar", per_batch=2)
    labels = read_cifar10(source).train_labels
    human = source / "CIFAR-10_human.pt"
    torch.save({key: labels.copy() for key in ("clean_label", "aggre_label", "worse_label", "random_label1",
                                               "random_label2", "random_label3")}, human,
               _use_new_zipfile_serialization=False)
    with pytest.raises(DataError) as caught:
        read_cifar10n(source, human)
    assert str(caught.value) == (
        f"{human}: expected a torch-saved dict of label arrays, found unreadable data (File is not a zip file); it is "
        f"in torch's legacy serialization (torch before 1.6, or _use_new_zipfile_serialization=False): save it again "
        f"with a current torch.save, whose zip format the published file has (github.com/UCSC-REAL/cifar-10-100n, "
        f"data/CIFAR-10_human.pt)")
    buffer = io.BytesIO()
    torch.save({"aggre_label": labels}, buffer)  # the zip format: read (and here refused for a missing key)
    human.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match=r"expected the key 'worse_label'"):
        read_cifar10n(source, human)
