"""``make data``: put the embedded default dataset (Fashion-MNIST) in ``data/`` and prove it is the version
``data.dvc`` records.

    python -m components.data [--source PATH]

Sources: ``--source`` (a folder with the four ``.gz`` files) when given; otherwise Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), then the official download. Files already in
``data/fashion-mnist`` are kept. Then DVC hashes ``data/`` into its cache (``dvc commit``); if that would change
``data.dvc``, the data is not the recorded version: ``data.dvc`` is restored and the command fails.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from components.atomic import write_atomic
from components.formats.idx import FASHION_MNIST_FILES

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
OFFICIAL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = [name for pair in FASHION_MNIST_FILES.values() for name in pair]


class DataFetchError(RuntimeError):
    pass


def fetch(target: Path, source: Path | None = None, *, timeout: float = 30.0) -> list[str]:
    """Place the four files in ``target``; returns where each came from."""
    target.mkdir(parents=True, exist_ok=True)
    origins = []
    for name in FILES:
        if (target / name).is_file():
            origins.append(f"{name}: kept")
            continue
        for folder in [source] if source is not None else [DEBIAN]:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, target / name)
                origins.append(f"{name}: copied from {folder}")
                break
        else:
            if source is not None:
                raise DataFetchError(f"{source / name}: expected a Fashion-MNIST file, found no such file")
            origins.append(f"{name}: {_download(OFFICIAL + name, target / name, timeout)}")
    return origins


def _download(url: str, path: Path, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (TimeoutError, urllib.error.URLError, OSError) as err:
        raise DataFetchError(f"{path.name}: not in Debian's dataset-fashion-mnist (apt-get install "
                             f"dataset-fashion-mnist) and the download from {url} failed ({err}); pass --source "
                             f"with a folder that holds the file") from err
    write_atomic(path, lambda fh: fh.write(payload))
    return f"downloaded from {url}"


def verify(root: Path) -> None:
    """Hash ``data/`` into the DVC cache and fail if it is not the version ``data.dvc`` records."""
    record = root / "data.dvc"
    if not record.is_file():
        raise DataFetchError(f"{record}: expected the DVC record of data/, found no such file (run from the "
                             f"repository root or pass --root)")
    expected = record.read_text()
    _dvc(root, "commit", "--force", "--quiet", "data.dvc")
    found = record.read_text()
    if found != expected:
        record.write_text(expected)
        raise DataFetchError(f"{root / 'data'}: expected the version recorded in data.dvc "
                             f"({_md5(expected)}), found {_md5(found)}; if you changed data/ on purpose, "
                             f"version it with `dvc add data` and commit data.dvc")
    status = _dvc(root, "status", "data.dvc")
    if "up to date" not in status:
        raise DataFetchError(f"dvc status data.dvc: expected 'up to date', found: {status.strip()}")


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise DataFetchError(f"dvc {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _md5(record: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in record.splitlines() if "md5:" in line), "no hash")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.data", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="a folder with the four Fashion-MNIST .gz files")
    parser.add_argument("--root", type=Path, default=Path("."), help="the repository root (default: .)")
    args = parser.parse_args(argv)
    try:
        for line in fetch(args.root / "data" / "fashion-mnist", args.source):
            print(f"data: {line}")
        verify(args.root)
    except DataFetchError as err:
        print(f"error: data: {err}", file=sys.stderr)
        return 1
    print("data: data/ matches data.dvc (dvc status: up to date)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
