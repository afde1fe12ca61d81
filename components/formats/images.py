"""Decoding image files into fixed-size uint8 arrays (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.formats import DataError


def load_image(path: Path, *, channels: int, size: int) -> np.ndarray:
    """``[H, W, C]`` uint8. ``size > 0``: the short side resized to ``size`` and the centre cropped square."""
    if not path.is_file():
        raise DataError(f"{path}: expected an image file, found no such file")
    try:
        with Image.open(path) as opened:
            img = opened.convert("L" if channels == 1 else "RGB")
        if size:
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            left, top = (w - size) // 2, (h - size) // 2
            img = img.resize((w, h), Image.Resampling.BILINEAR).crop((left, top, left + size, top + size))
        array = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"{path}: expected an image file, found unreadable data ({err})") from err
    return array[..., None] if array.ndim == 2 else array


def check_encoded(payload: bytes, *, where: str, size: int = 0) -> tuple[int, int]:
    """Decode ``payload`` (an encoded image) fully, to prove it is whole; returns its ``(width, height)``.
    ``size > 0`` lets a JPEG decode at a reduced scale no smaller than ``size``, which is faster and as thorough
    (every byte is still read)."""
    try:
        with Image.open(io.BytesIO(payload)) as img:
            width, height = img.size
            if size and img.format == "JPEG":
                img.draft("RGB", (size, size))
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(f"{where}: expected an image file, found unreadable data ({err})") from err
    return width, height
