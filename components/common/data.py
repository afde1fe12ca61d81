"""``make data``: put Fashion-MNIST in ``data/`` and prove it is the version ``data.dvc`` records.

Fashion-MNIST is the embedded default dataset.

    python -m components.common.data [--source PATH]

Sources: ``--source`` (a folder with the four ``.gz`` files) when given; otherwise Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then the official download (https only,
redirects included; each archive checked against the md5 its publisher lists). Files already in
``data/fashion-mnist`` are kept. The missing ones are gathered in a hidden folder beside it and renamed into place
only once all of them are there. Then DVC hashes ``data/`` into its cache (``dvc commit``); if that would change
``data.dvc``, the data is not the recorded version: ``data.dvc`` is restored, the files this run placed are removed
(so the next ``dvc repro`` cannot ingest them) and the command fails; unless the files decompress to the recorded
version's bytes (Zalando's archives, which Debian recompressed), which are kept with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from components.common.atomic import rename_all, write_text
from components.common.config import error_lines
from components.formats.idx import FASHION_MNIST_FILES

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"  # Zalando's own repository
# The md5 of each archive as Zalando publishes it (README, "Get the Data"). Debian recompressed its copies, so theirs
# differ byte for byte (same images and labels); data.dvc records Debian's.
PUBLISHED_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                 "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                 "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                 "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
# The sha256 of each file's decompressed bytes (the IDX arrays) in the version data.dvc records: the same images and
# labels in other gzip bytes (Zalando's own archives) are the recorded data, which data.dvc's hash of the bytes
# alone cannot tell.
CONTENT_SHA256 = {"train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                  "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                  "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                  "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"}
MAX_DOWNLOAD = 64 << 20  # bytes per file; the largest archive is 26 MB
FILES = [name for pair in FASHION_MNIST_FILES.values() for name in pair]


class DataFetchError(RuntimeError):
    """The Fashion-MNIST files could not be placed, or are not the version ``data.dvc`` records; the message names
    the file or the record and why."""

    pass


class NotRecordedError(DataFetchError):
    """``data/`` hashes to another version than the one ``data.dvc`` records."""


def fetch(target: Path, source: Path | None = None, *, timeout: float = 30.0) -> list[str]:
    """Place the four files in ``target``; returns where each came from. The missing files are copied or
    downloaded into a hidden folder beside ``target`` and renamed into it only when every one of them is there
    (and every download matched its published md5): a failure places nothing (a kill during the renames themselves
    can place some files; a rerun places the rest)."""
    target.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.incoming.*"):  # a killed run's staging folder
        if re.fullmatch(r"[a-z0-9_]{8}", leftover.name.rpartition(".")[2]) and leftover.is_dir() \
                and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    origins, gathered = [], []
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.incoming.", dir=target.parent))
    try:
        for name in FILES:
            if (target / name).is_file():
                origins.append(f"{name}: kept")
                continue
            gathered.append(name)
            for folder in [source] if source is not None else [DEBIAN]:
                if (folder / name).is_file():
                    shutil.copyfile(folder / name, staging / name)
                    origins.append(f"{name}: copied from {folder}")
                    break
            else:
                if source is not None:
                    raise DataFetchError(f"{source / name}: expected a Fashion-MNIST file, found no such file")
                origins.append(f"{name}: {_download(OFFICIAL + name, staging / name, timeout)}")
        rename_all([(staging / name, target / name) for name in gathered])  # the files as a set, in one burst
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return origins


def _download(url: str, path: Path, timeout: float) -> str:
    """Download ``url`` into ``path`` (a file in the staging folder) and check it against ``PUBLISHED_MD5``."""
    try:
        with _open(url, timeout) as response, open(path, "wb") as fh:
            total = 0
            while block := response.read(1 << 20):
                total += len(block)
                if total > MAX_DOWNLOAD:
                    raise DataFetchError(f"{url}: expected at most {MAX_DOWNLOAD} bytes, found more; nothing placed")
                fh.write(block)
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        raise DataFetchError(f"{path.name}: not in Debian's dataset-fashion-mnist (apt-get install "
                             f"dataset-fashion-mnist) and the download from {url} failed ({err}); pass --source "
                             f"with a folder that holds the file") from err
    digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
    if digest != PUBLISHED_MD5[path.name]:
        raise DataFetchError(f"{url}: expected the archive Zalando publishes (md5 {PUBLISHED_MD5[path.name]}), found "
                             f"md5 {digest}; nothing placed")
    return f"downloaded from {url}"


class _HttpsOnly(urllib.request.HTTPRedirectHandler):
    """Follows redirects only to https: a plain-http hop would let anyone on the path swap the archive."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme != "https":
            raise urllib.error.URLError(f"redirected to {newurl}, expected an https address")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, timeout: float):
    if urllib.parse.urlsplit(url).scheme != "https":
        raise urllib.error.URLError(f"expected an https address, found {url}")
    return urllib.request.build_opener(_HttpsOnly).open(url, timeout=timeout)


def make(root: Path, source: Path | None = None, *, timeout: float = 30.0) -> list[str]:
    """``fetch`` into ``root/data/fashion-mnist``, then ``verify``; returns where each file came from and the
    verdict. A failed verification removes the files this run placed (files that were there before are the user's
    and stay), so nothing unverified is left for ``dvc repro`` to ingest; unless the files hold the recorded images
    and labels in other gzip bytes (``CONTENT_SHA256``: Zalando's archives, downloaded), which are kept."""
    target = root / "data" / "fashion-mnist"
    before = {name for name in FILES if (target / name).is_file()}
    origins = fetch(target, source, timeout=timeout)
    try:
        verify(root)
    except NotRecordedError as err:
        if not _recorded_content(target):
            _remove_placed(target, before, err)
        return [*origins, "data/ holds the images and labels data.dvc records, in other gzip bytes (data.dvc "
                          "records Debian's recompressed copies; dvc status shows data modified): kept; `dvc add "
                          "data` versions these bytes"]
    except DataFetchError as err:
        _remove_placed(target, before, err)
    return [*origins, "data/ matches data.dvc (dvc status: up to date)"]


def _remove_placed(target: Path, before: set[str], err: DataFetchError) -> None:
    """Remove the files of ``target`` not in ``before`` (the user's own stay), then raise ``err`` naming both."""
    placed = [name for name in FILES if name not in before]
    for name in placed:
        (target / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        target.rmdir()  # only if this run left it empty
    kept = (f"; kept, as they were there before: {', '.join(sorted(before))} (a damaged copy of the dataset's: "
            f"delete it and run make data again to fetch it afresh)" if before else "")
    raise DataFetchError(f"{err}; removed the files this run placed: {', '.join(placed) or 'none'}{kept}") from err


def _recorded_content(target: Path) -> bool:
    """Whether each file in ``target`` decompresses to the bytes of the recorded version (``CONTENT_SHA256``)."""
    try:
        for name, digest in CONTENT_SHA256.items():
            with gzip.open(target / name) as fh:
                if hashlib.sha256(fh.read()).hexdigest() != digest:
                    return False
        return True
    except (OSError, EOFError, zlib.error):  # a damaged archive is not the recorded data
        return False


def verify(root: Path) -> None:
    """Hash ``data/`` into the DVC cache and fail if it is not the version ``data.dvc`` records. ``dvc commit``
    rewrites ``data.dvc`` with what it hashed, so the record is kept in ``.data.dvc.verifying`` meanwhile: a run
    killed during the commit (whose ``dvc`` may finish after it, writing a damaged file's hash) leaves it there.
    The next run then refuses to check anything while ``data.dvc`` differs from it, as it cannot tell that
    ``dvc``'s write from the user's own change (``dvc add data``, another branch); it says how to settle which."""
    record = root / "data.dvc"
    kept = root / ".data.dvc.verifying"
    if kept.is_file():  # a run killed during its commit
        if record.is_file() and record.read_text() != kept.read_text():
            raise DataFetchError(f"{kept}: expected no record left by a killed make data, found one that differs "
                                 f"from data.dvc (the run was killed while dvc commit could rewrite data.dvc): if "
                                 f"you changed data.dvc yourself since (dvc add data, another branch), delete "
                                 f"{kept.name}; if not, put it back: mv {kept.name} data.dvc")
        kept.unlink()
    if not record.is_file():
        raise DataFetchError(f"{record}: expected the DVC record of data/, found no such file (run from the "
                             f"repository root or pass --root)")
    expected = record.read_text()
    write_text(kept, expected)
    try:
        _dvc(root, "commit", "--force", "data.dvc")  # not --quiet: that silences the reason of a failure too
        found = record.read_text()
    finally:
        record.write_text(expected)  # what the commit wrote where the data matched; else the record back
        kept.unlink()
    if found != expected:
        raise NotRecordedError(f"{root / 'data'}: expected the version recorded in data.dvc "
                             f"({_md5(expected)}), found {_md5(found)}; if you changed data/ on purpose, "
                             f"version it with `dvc add data` and commit data.dvc")
    status = _dvc(root, "status", "data.dvc")
    if "up to date" not in status:
        raise DataFetchError(f"dvc status data.dvc: expected 'up to date', found: {status.strip()}")


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        reason = (done.stderr.strip() or done.stdout.strip() or "no output").replace("\n", "; ")
        raise DataFetchError(f"dvc {' '.join(args)} failed (exit {done.returncode}): {reason}")
    return done.stdout


def _md5(record: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in record.splitlines() if "md5:" in line), "no hash")


def main(argv: list[str] | None = None) -> int:
    """``make data``: ``make`` into ``--root`` (default ``.``) from ``--source`` or the default sources, printing
    where each file came from; returns 0, or 1 with one error line on stderr when a file cannot be fetched or the
    data is not the recorded version."""
    parser = argparse.ArgumentParser(prog="python -m components.common.data", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a folder with the four Fashion-MNIST .gz files")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    args = parser.parse_args(argv)
    try:
        for line in make(args.root, args.source):
            print(f"data: {line}")
    except (DataFetchError, OSError) as err:  # an OSError: a path in the way, a full disk, a permission
        print(*error_lines("data", err), sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
