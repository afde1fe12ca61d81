"""The release workflow's champion: the latest published model release, laid out as the gate's registry expects.

A fresh CI checkout has no ``releases/`` (it is git-ignored), so without this the gate would find "no champion yet"
and never check ``gate.max_regression``. ``.github/workflows/release.yml`` lists the repository's releases
(``gh release list``), picks the latest model release here, downloads its assets (``gh release download``: the
``model.onnx`` and ``model_card.json`` that its publish step uploaded) and restores them here as
``releases/<version>/`` with ``releases/latest`` pointing at it, which is what ``components.gate.read_champion``
reads (``latest/model_card.json``'s ``metrics.accuracy``).

    python -m pipelines.champion latest-tag TAGS_FILE          # prints the latest model-<version> tag, or nothing
    python -m pipelines.champion restore FOLDER --tag TAG [--registry releases]

Tags are ``model-<version>``, the version the gate's (``vYYYYMMDDTHHMMSSZ-<sha256 prefix>``), which sorts by release
time. ``restore`` refuses (exit 1, one error line) a folder without both files, a card without ``metrics.accuracy``,
a ``model.onnx`` whose sha256 is not the card's, or a registry that already has a ``latest``: a champion that cannot
be read must fail the release, never let it pass as the first one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from components.common.artifacts import fraction
from components.gate import read_champion

TAG = re.compile(r"model-(v\d{8}T\d{6}Z-[0-9a-f]{8,64})")  # what release.yml's publish step names a release
ASSETS = ("model.onnx", "model_card.json")  # what it uploads


def latest_tag(tags: Iterable[str]) -> str | None:
    """The tag of the latest model release among ``tags`` (others, e.g. a software release ``v1.0``, are ignored);
    None when there is none: the first release."""
    found = {match.group(1): tag for tag in (t.strip() for t in tags) if (match := TAG.fullmatch(tag))}
    return found[max(found)] if found else None


def restore(folder: Path, *, tag: str, registry: Path) -> tuple[str, float]:
    """Lay the release assets downloaded into ``folder`` out as ``registry/<version>/`` and point
    ``registry/latest`` at it; returns the champion as the gate reads it, ``(version, accuracy)``."""
    match = TAG.fullmatch(tag)
    if not match:
        raise ValueError(f"{tag}: expected a model release tag, model-vYYYYMMDDTHHMMSSZ-<hash>")
    version = match.group(1)
    missing = [name for name in ASSETS if not (folder / name).is_file()]
    if missing:
        raise ValueError(f"{folder}: expected the assets of release {tag} ({', '.join(ASSETS)}), found none for "
                         f"{', '.join(missing)}")
    try:
        card = json.loads((folder / "model_card.json").read_text())
    except ValueError as err:
        raise ValueError(f"{folder / 'model_card.json'}: expected a JSON model card, found {err}") from None
    digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    if not isinstance(card, dict) or card.get("onnx_sha256") != digest:
        found = card.get("onnx_sha256") if isinstance(card, dict) else type(card).__name__
        raise ValueError(f"{folder}: expected the model card of the model.onnx beside it (sha256 {digest}), found "
                         f"{found}")
    accuracy = (card.get("metrics") or {}).get("accuracy") if isinstance(card.get("metrics"), dict) else None
    if not fraction(accuracy):  # as the gate reads a champion: a finite number in [0, 1]
        raise ValueError(f"{folder / 'model_card.json'}: expected a released model card with metrics.accuracy, "
                         f"a finite number in [0, 1], found {accuracy!r}")
    latest = registry / "latest"
    if latest.is_symlink() or latest.exists():
        raise FileExistsError(f"{latest}: expected a registry without a champion (a fresh checkout), found one")
    registry.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming.", dir=registry))
    try:
        for name in ASSETS:
            shutil.copy2(folder / name, staging / name)
        staging.chmod(0o755)
        staging.rename(registry / version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    latest.symlink_to(version)  # relative, as the gate points it
    champion = read_champion(registry)  # what the gate will read
    if champion is None:  # never: latest was just made
        raise FileNotFoundError(f"{latest}: expected the restored champion, found none")
    return champion.version, champion.accuracy


def main(argv: list[str] | None = None) -> int:
    """``latest-tag TAGS_FILE``: print the latest model release's tag (nothing for none); ``restore FOLDER --tag
    TAG``: restore it as the registry's champion and print it. Returns 0, or 1 with one error line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.champion", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("latest-tag", help="print the latest model-<version> tag of a file of tags")
    listing.add_argument("tags", type=Path, help="release tags, one a line (gh release list --json tagName)")
    restoring = commands.add_parser("restore", help="restore a downloaded model release as releases/latest")
    restoring.add_argument("folder", type=Path, help="where gh release download put its assets")
    restoring.add_argument("--tag", required=True, help="the release's tag, model-<version>")
    restoring.add_argument("--registry", type=Path, default=Path("releases"), help="default: %(default)s")
    args = parser.parse_args(argv)
    try:
        if args.command == "latest-tag":
            tag = latest_tag(args.tags.read_text().splitlines())
            if tag:
                print(tag)
        else:
            version, accuracy = restore(args.folder, tag=args.tag, registry=args.registry)
            print(f"champion: {args.registry / 'latest'} -> {version} (accuracy {accuracy:.4f}), from release "
                  f"{args.tag}")
    except (OSError, ValueError) as err:
        print(f"error: pipelines.champion: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
