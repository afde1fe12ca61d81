"""How far apart CIFAR-10 batches written plane by plane and pixel by pixel lie, on photos: the margin behind the
reader's layout check (``components.formats.cifar._check_planar``).

``python -m benchmarks.cifar_layout FOLDER`` cuts every PNG and JPEG in FOLDER into 32x32 images (each photo scaled so
its shorter side is 32, 64, 128 and 256 pixels, then tiled), writes them as CIFAR-10 rows both ways, and prints for each
photo the share ``differences 96 apart / differences 32 apart`` that the check compares with 0.75: over the photo's
tiles together, and its smallest and largest over single tiles.

On scikit-image 0.26's 26 sample images (``pip download --no-deps scikit-image==0.26.0``, then unzip
``skimage/data/*`` from the wheel; 2,172 tiles): over each photo's tiles, 1.67 to 2.96 plane by plane and 0.02 to
0.55 pixel by pixel; no single tile below 0.99 plane by plane, so the check, which reads a batch's first 1,024 rows
together, refuses no photos written right. Its blind side: a batch of one near-flat tile written pixel by pixel
can pass (single tiles reach 1.34).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from components.formats.cifar import _INTERLEAVED_BELOW, row_differences

SIDES = (32, 64, 128, 256)


def tiles(path: Path) -> np.ndarray:
    """uint8 ``[N, 32, 32, 3]``: the photo at ``path`` scaled to each of ``SIDES`` (never up) and cut into tiles."""
    from PIL import Image  # noqa: PLC0415

    image = Image.open(path).convert("RGB")
    out = []
    for side in SIDES:
        scale = side / min(image.size)
        if scale > 1:
            continue
        pixels = np.asarray(image.resize((max(32, round(image.width * scale)), max(32, round(image.height * scale))),
                                         Image.BILINEAR))
        out += [pixels[i:i + 32, j:j + 32] for i in range(0, pixels.shape[0] - 31, 32)
                for j in range(0, pixels.shape[1] - 31, 32)]
    return np.stack(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def share(rows: np.ndarray) -> float:
    next_row, three_rows = row_differences(rows)
    return three_rows / next_row if next_row else float("nan")


def shares(images: np.ndarray) -> dict[str, tuple[float, float, float]]:
    """Per layout: the share over all ``images`` together, and its smallest and largest over single images."""
    rows = {"planes": images.transpose(0, 3, 1, 2).reshape(len(images), -1), "pixels": images.reshape(len(images), -1)}
    out = {}
    for layout, data in rows.items():
        single = [share(data[i:i + 1]) for i in range(len(data))]
        out[layout] = (share(data), float(np.nanmin(single)), float(np.nanmax(single)))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args(argv).folder
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    print(f"refused below {_INTERLEAVED_BELOW}: share (single-tile min..max)")
    print(f"{'photo':28s} {'tiles':>5s}  {'plane by plane':>22s}  {'pixel by pixel':>22s}")
    for photo in photos:
        images = tiles(photo)
        if not len(images):
            continue
        found = shares(images)
        cells = [f"{a:5.2f} ({b:4.2f}..{c:4.2f})" for a, b, c in found.values()]
        print(f"{photo.name:28s} {len(images):5d}  {cells[0]:>22s}  {cells[1]:>22s}")


if __name__ == "__main__":
    main()
