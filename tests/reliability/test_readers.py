"""The dataset readers against hostile data (issue 20), one test per attack class:

- **a path that leaves the data folder**: a name with ``..``, an absolute name, a symbolic link (a file or a folder)
  leading out, wherever a reader opens files by name (Clothing1M's key lists, ``labels.csv``) or walks folders (an
  image folder's classes) or opens fixed names (Fashion-MNIST's archives, CIFAR-10's batches);
- **a decompression bomb**: an image whose header declares more pixels than the readers' limit (a few KB of PNG
  declaring 81 or 196 megapixels), in every reader that decodes images;
- **an unverified download**: ``make data`` places nothing that failed verification, and speaks https only.

Each data attack runs the ingest step's command line in a copy of the good workspace and expects exit 1, one line
naming the file (or the list and line), what was expected and what was found, no traceback, the previous outputs
unchanged, and nothing of what lies outside the data folder read.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import shutil
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from components import ingest
from components.common import data
from components.common.errors import DataError
from components.common.streaming import decode
from components.formats.images import MAX_PIXELS, check_encoded, load_image
from tests.reliability.workspace import snapshot

C1M = ("--set", "ingest.dataset=clothing1m", "--set", "ingest.path=data/clothing1m", "--set", "ingest.image_size=8")
FOLDER = ("--set", "ingest.dataset=imagefolder", "--set", "ingest.path=data/imagefolder")
CIFAR = ("--set", "ingest.dataset=cifar10", "--set", "ingest.path=data/cifar10")
LIMIT = f"expected an image of at most {MAX_PIXELS} pixels (the readers' limit on decompression bombs), found"


@functools.cache
def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels: a few KB on disk, ``width * height``
    bytes once decoded to greyscale (three times that as RGB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row, packer = b"\0" * (1 + (width + 7) // 8), zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


BOMB = (14_000, 14_000)  # 196 megapixels: over twice Pillow's limit, which raises DecompressionBombError
UNDER_PILLOW = (9_000, 9_000)  # 81 megapixels: under Pillow's limit (89.5), which would decode it whole


# -- the attacks on paths ------------------------------------------------------------------------------------------

def outside() -> Path:
    """Files beside the data folder, which no reader may open: an image, a JPEG, an archive, a folder of images."""
    folder = Path("outside").resolve()
    (folder / "photos").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "secret.png")
    Image.new("RGB", (8, 8), (4, 5, 6)).save(folder / "secret.jpg")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (7, 8, 9)).save(folder / "photos" / name)
    shutil.copyfile("data/fashion-mnist/t10k-labels-idx1-ubyte.gz", folder / "labels.gz")
    shutil.copyfile("data/cifar10/cifar-10-batches-py/test_batch", folder / "test_batch")
    return folder


def add_key(key: str) -> None:
    """A test key (with its clean label) appended to Clothing1M's lists."""
    with open("data/clothing1m/clean_test_key_list.txt", "a") as fh:
        fh.write(f"{key}\n")
    with open("data/clothing1m/clean_label_kv.txt", "a") as fh:
        fh.write(f"{key} 3\n")


def link(path: str, target: Path) -> None:
    """``path`` (a file, a folder or nothing yet) replaced by a symbolic link to ``target``."""
    if Path(path).is_dir() and not Path(path).is_symlink():
        shutil.rmtree(path)
    Path(path).unlink(missing_ok=True)
    Path(path).symlink_to(target)


def labels_csv(*names: str) -> None:
    rows = ["filename,label", "red/0.png,red", "red/1.png,red", "blue/0.png,blue", "blue/1.png,blue"]
    Path("data/imagefolder/labels.csv").write_text("\n".join(rows + [f"{n},blue" for n in names]) + "\n")


@dataclass(frozen=True)
class Attack:
    id: str
    argv: tuple[str, ...]
    breaks: Callable[[Path], None]  # given the folder outside the data
    says: Callable[[Path], tuple[str, ...]]  # the fragments of the message


OUT_OF = "expected a file name relative to {} that stays inside it, found {!r}"
LINK = "expected a file inside {}, found a symbolic link to {}, outside it"
PATHS = [
    Attack("clothing1m-key-climbs-out", C1M, lambda o: add_key("../../outside/secret.jpg"),
           lambda o: ("data/clothing1m/clean_test_key_list.txt line 6: " + OUT_OF.format(
               "data/clothing1m", "../../outside/secret.jpg"),)),
    Attack("clothing1m-key-absolute", C1M, lambda o: add_key(str(o / "secret.jpg")),
           lambda o: ("clean_test_key_list.txt line 6: " + OUT_OF.format("data/clothing1m", str(o / "secret.jpg")),)),
    Attack("clothing1m-image-links-out", C1M, lambda o: link("data/clothing1m/images/1/03/test3.jpg",
                                                             o / "secret.jpg"),
           lambda o: ("clean_test_key_list.txt line 4: " + LINK.format("data/clothing1m", o / "secret.jpg"),)),
    Attack("clothing1m-folder-links-out", C1M, lambda o: (shutil.copytree("data/clothing1m/images/1", o / "one"),
                                                          link("data/clothing1m/images/1", o / "one")),
           lambda o: ("noisy_train_key_list.txt line 2: " + LINK.format("data/clothing1m", o / "one/01/train1.jpg"),)),
    Attack("clothing1m-list-links-out", C1M, lambda o: (shutil.copyfile("data/clothing1m/noisy_label_kv.txt",
                                                                        o / "kv.txt"),
                                                        link("data/clothing1m/noisy_label_kv.txt", o / "kv.txt")),
           lambda o: ("data/clothing1m/noisy_label_kv.txt: " + LINK.format("data/clothing1m", o / "kv.txt"),)),
    Attack("labels-csv-climbs-out", FOLDER, lambda o: labels_csv("../../outside/secret.png"),
           lambda o: ("data/imagefolder/labels.csv line 6: " + OUT_OF.format("data/imagefolder",
                                                                            "../../outside/secret.png"),)),
    Attack("labels-csv-absolute", FOLDER, lambda o: labels_csv(str(o / "secret.png")),
           lambda o: ("labels.csv line 6: " + OUT_OF.format("data/imagefolder", str(o / "secret.png")),)),
    Attack("labels-csv-links-out", FOLDER, lambda o: (labels_csv(), shutil.move("data/imagefolder/labels.csv",
                                                                                o / "labels.csv"),
                                                      link("data/imagefolder/labels.csv", o / "labels.csv")),
           lambda o: ("data/imagefolder/labels.csv: " + LINK.format("data/imagefolder", o / "labels.csv"),)),
    Attack("class-folder-file-links-out", FOLDER, lambda o: link("data/imagefolder/red/leak.png", o / "secret.png"),
           lambda o: ("data/imagefolder/red/leak.png: " + LINK.format("data/imagefolder", o / "secret.png"),)),
    Attack("class-folder-links-out", FOLDER, lambda o: link("data/imagefolder/green", o / "photos"),
           lambda o: ("data/imagefolder/green/a.png: " + LINK.format("data/imagefolder", o / "photos/a.png"),)),
    Attack("fashion-mnist-archive-links-out", (), lambda o: link("data/fashion-mnist/t10k-labels-idx1-ubyte.gz",
                                                                 o / "labels.gz"),
           lambda o: ("data/fashion-mnist/t10k-labels-idx1-ubyte.gz: " + LINK.format("data/fashion-mnist",
                                                                                     o / "labels.gz"),)),
    Attack("cifar10-batch-links-out", CIFAR, lambda o: link("data/cifar10/cifar-10-batches-py/test_batch",
                                                            o / "test_batch"),
           lambda o: ("data/cifar10/cifar-10-batches-py/test_batch: " + LINK.format("data/cifar10",
                                                                                    o / "test_batch"),)),
]


WATCHED: list[tuple[Path, list[str]]] = []  # (folder, files opened under it) while a reader runs


def _record_opens(event: str, args: tuple) -> None:
    """An audit hook: every file opened (``open``, ``io.open``, ``os.open``, pathlib's openers) under a watched
    folder, once its links are followed. Audit hooks cannot be removed: outside ``opens_under`` it does nothing."""
    if not WATCHED or event != "open" or not isinstance(args[0], str | bytes | os.PathLike):
        return
    path = Path(os.path.realpath(os.fsdecode(args[0])))
    for folder, opened in WATCHED:
        if path.is_relative_to(folder):
            opened.append(str(path))


@functools.cache
def _hook_installed() -> bool:
    sys.addaudithook(_record_opens)
    return True


@contextlib.contextmanager
def opens_under(folder: Path) -> Iterator[list[str]]:
    """The files opened under ``folder`` (links followed) while the block runs, in this process."""
    _hook_installed()
    opened: list[str] = []
    WATCHED.append((folder.resolve(), opened))
    try:
        yield opened
    finally:
        WATCHED.pop()


def run_ingest(argv: tuple[str, ...], capsys) -> tuple[int, str]:
    code = ingest.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err.strip().splitlines()[-1] if err.strip() else ""


@pytest.mark.parametrize("attack", PATHS, ids=[a.id for a in PATHS])
def test_a_reader_never_opens_a_file_outside_its_data_folder(attack, work, capsys):
    folder = outside()
    attack.breaks(folder)
    before = snapshot(work / "artifacts")
    with opens_under(folder) as opened:
        code, said = run_ingest(attack.argv, capsys)
    assert not opened, f"the reader opened {opened} before refusing: {said}"
    assert code == 1 and said.startswith("error: ingest: "), said
    assert said.count("expected") == 1
    for fragment in attack.says(folder):
        assert fragment in said, f"{fragment!r} not in {said!r}"
    assert snapshot(work / "artifacts") == before


def test_links_that_stay_inside_the_data_folder_are_followed(work, capsys):
    """A data folder that is itself a link (a bigger disk), and links inside it to its own files, are fine."""
    link("data/c1m", Path("data/clothing1m").resolve())
    code, said = run_ingest(("--set", "ingest.dataset=clothing1m", "--set", "ingest.path=data/c1m",
                             "--set", "ingest.image_size=8"), capsys)
    assert code == 0, said
    Path("data/imagefolder/red/again.png").symlink_to("0.png")
    Path("data/imagefolder/blue/2.png").unlink()
    Path("data/imagefolder/blue/2.png").symlink_to(Path("data/imagefolder/blue/1.png").resolve())
    code, said = run_ingest(FOLDER, capsys)
    assert code == 0, said


# -- decompression bombs -------------------------------------------------------------------------------------------

@pytest.fixture
def never_decoded(monkeypatch):
    """Fails the test if an image over the limit is ever decoded (every decode goes through ``ImageFile.load``)."""
    real = ImageFile.ImageFile.load

    def load(self):
        assert self.size[0] * self.size[1] <= MAX_PIXELS, f"decoded a {self.size} image"
        return real(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize("size", [BOMB, UNDER_PILLOW], ids=["over-pillow-limit", "under-pillow-limit"])
@pytest.mark.parametrize("reader", ["imagefolder", "clothing1m"])
def test_a_decompression_bomb_is_refused_from_its_header(reader, size, work, capsys, never_decoded):
    bomb = png_bomb(*size)
    assert len(bomb) < 32_000
    path, argv = (("data/imagefolder/red/0.png", FOLDER) if reader == "imagefolder" else
                  ("data/clothing1m/images/1/03/test3.jpg", C1M))  # a PNG under a .jpg name: the content decides
    Path(path).write_bytes(bomb)
    before = snapshot(work / "artifacts")
    code, said = run_ingest(argv, capsys)
    found = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size == UNDER_PILLOW else \
        f"{size[0] * size[1]} pixels"
    assert code == 1 and path in said and f"{LIMIT} {found}" in said, said
    assert snapshot(work / "artifacts") == before


def _decode(payload: bytes, **kwargs) -> object:
    return decode(payload, resize=8, crop=8, where="shard 0 (key k)", **kwargs)


def _load(payload: bytes, **kwargs) -> object:
    path = Path("bomb.png")
    path.write_bytes(payload)
    return load_image(path, channels=3, size=8, **kwargs)


def _check(payload: bytes, **kwargs) -> object:
    return check_encoded(payload, where="shard 0 (key k)", size=8, **kwargs)


READERS = {"load_image": _load, "check_encoded": _check, "streaming.decode": _decode}


@pytest.mark.parametrize("reader", READERS)
def test_every_image_reader_has_the_limit_and_turns_pillows_warning_into_a_refusal(reader, tmp_path, monkeypatch,
                                                                                    never_decoded):
    """Each reader that decodes images: over the limit, a ``DataError`` naming the image, the limit and its size;
    a lower ``max_pixels`` lowers it; Pillow's ``DecompressionBombWarning`` (an image over Pillow's own limit but
    under the reader's) is a refusal too, never a warning followed by a full decode."""
    monkeypatch.chdir(tmp_path)
    read = READERS[reader]
    with pytest.raises(DataError, match=rf"{re.escape(LIMIT)} 9000x9000 = 81000000 pixels"):
        read(png_bomb(*UNDER_PILLOW))
    with pytest.raises(DataError, match=rf"{re.escape(LIMIT)} 196000000 pixels"):
        read(png_bomb(*BOMB))
    with pytest.raises(DataError, match=r"expected an image of at most 1000 pixels .*, found 40x40 = 1600 pixels"):
        read(png_bomb(40, 40), max_pixels=1000)
    read(png_bomb(40, 40))  # under every limit: decoded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's warning now fires at 1000 pixels
    with pytest.raises(DataError, match=r"expected an image of at most 1000 pixels .*, found 1600 pixels"):
        read(png_bomb(40, 40))


# -- unverified downloads ------------------------------------------------------------------------------------------

class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *_):
        return None


def test_a_download_that_fails_verification_leaves_nothing_in_data(tmp_path, monkeypatch, capsys):
    """No Debian package, a download that is not the published archive: nothing is placed for ``dvc repro``."""
    asked = []
    monkeypatch.setattr(data, "DEBIAN", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_open", lambda url, timeout: asked.append(url) or _Response(b"not the dataset"))
    assert data.main(["--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    md5 = hashlib.md5(b"not the dataset", usedforsecurity=False).hexdigest()
    assert f"expected the archive Zalando publishes (md5 {data.PUBLISHED_MD5[data.FILES[0]]}), found md5 {md5}; " \
           f"nothing placed" in err and "Traceback" not in err
    assert asked and all(url.startswith("https://") for url in asked)
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]  # no staging folder left


def test_downloads_speak_https_only(monkeypatch):
    """Every URL the shipped code fetches is https, and a redirect to plain http is refused."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    from tests.reliability.workspace import ROOT  # noqa: PLC0415

    remote = re.compile(r"http://(?!127\.0\.0\.1|localhost|\[::1\]|\{)")  # loopback, a formatted host: no download
    plain = [f"{p.relative_to(ROOT)}: {line.strip()}" for folder in ("components", "benchmarks")
             for p in sorted((ROOT / folder).rglob("*.py")) for line in p.read_text().splitlines()
             if remote.search(line)]
    assert not plain, plain
    with pytest.raises(urllib.error.URLError, match=r"expected an https address, found http://"):
        data._open("http://example.invalid/x.gz", 1)
    handler = data._HttpsOnly()
    request = urllib.request.Request("https://example.invalid/x.gz")
    with pytest.raises(urllib.error.URLError, match=r"redirected to http://example.invalid/y.gz, expected an https "):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.invalid/y.gz")
    assert handler.redirect_request(request, None, 302, "Found", {}, "https://example.invalid/y.gz").full_url == \
        "https://example.invalid/y.gz"

