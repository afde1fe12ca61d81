"""Decoding image files into fixed-size uint8 arrays (Pillow), within a pixel limit.

Every image is opened through ``open_image``: its width and height are read from the header and checked against
``max_pixels`` (``MAX_PIXELS`` unless the caller passes another) before a single pixel is decoded, so a small file
that declares a huge image (a decompression bomb: a few KB of PNG can declare gigapixels of zeros) is refused with
a ``DataError`` instead of being decoded whole. Pillow's own guard (``DecompressionBombError`` at twice
``Image.MAX_IMAGE_PIXELS``, a mere ``DecompressionBombWarning`` above it) is caught too, the warning as an error.

Images of more than 8 bits a channel are scaled to 8 bits, never clipped (``to_8_bits``): a 16-bit greyscale image
(a 16-bit PNG or TIFF, mode ``I;16``; a 16-bit PGM, mode ``I``) keeps its high byte, value // 256, the standard
mapping of the range 0..65535 onto 0..255 and the one Pillow itself applies to 16-bit colour PNGs. A 32-bit integer
image with values outside 0..65535 and a floating-point one (mode ``F``) have no such range and are refused.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from components.common.errors import DataError

# 64 megapixels: 192 MB decoded as RGB, above any photo a dataset of this kind holds (Clothing1M's are well under
# 1 megapixel, a 50-megapixel camera's full frame fits) and below Pillow's warning threshold (about 89 megapixels).
MAX_PIXELS = 64_000_000
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the reader's limit."""


MAX_UNREADABLE = 100  # images that cannot be read before a reader stops looking: past that, all of them may be
UNREADABLE_NAMED = 20  # of the others, the names the error gives


class Unreadable:
    """The images of one ingest that could not be read, so that one pass names every one of them: fixing them then
    takes one ingest, not one a bad image (hours each on a million images; dozens of runs on a web scrape). ``fix``
    says what to do about each, after "then ingest again"'s "Fix each, or"."""

    def __init__(self, fix: str):
        self.fix, self.found = fix, []

    def add(self, name: str, error: DataError) -> None:
        """Note ``error`` for the image ``name``; the error of them all once ``MAX_UNREADABLE`` are noted."""
        self.found.append((name, error))
        if len(self.found) == MAX_UNREADABLE:
            raise self.error(stopped=True) from error

    def check(self) -> None:
        """The error of them all, if any image could not be read."""
        if self.found:
            raise self.error(stopped=False)

    def error(self, *, stopped: bool) -> DataError:
        """The first image's message, then how many more there are and the names of the first
        ``UNREADABLE_NAMED`` of them. ``stopped``: the reader gave up at ``MAX_UNREADABLE``."""
        first = self.found[0][1]
        if len(self.found) == 1:
            return first
        others = [name for name, _ in self.found[1:]]
        named = ", ".join(others[:UNREADABLE_NAMED]) + (", ..." if len(others) > UNREADABLE_NAMED else "")
        where = f"stopped there: at least {len(others)}" if stopped else str(len(others))
        return DataError(f"{first}; and {where} more listed images could not be read either: {named}. Fix each, or "
                         f"{self.fix}, then ingest again")


def check_pixels(size: tuple[int, int], *, where: str, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose declared ``(width, height)`` holds more than ``max_pixels`` pixels."""
    width, height = size
    if width * height > max_pixels:
        raise ImageTooLargeError(f"{where}: expected an image of at most {max_pixels} pixels (the readers' limit on "
                            f"decompression bombs), found {width}x{height} = {width * height} pixels")


@contextlib.contextmanager
def open_image(source: Path | bytes, *, where: str, max_pixels: int = MAX_PIXELS) -> Iterator[Image.Image]:
    """The image in ``source`` (a file or encoded bytes), opened lazily and proved within ``max_pixels`` from its
    header. Anything that goes wrong while opening it or decoding it in the ``with`` block (unreadable data, a
    decompression bomb, Pillow's bomb warning) is a ``DataError`` naming ``where``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                check_pixels(img.size, where=where, max_pixels=max_pixels)
                yield img
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            pixels = _PIL_PIXELS.search(str(err))  # Pillow refused it at open, before its size could be read
            found = f"{pixels[1]} pixels" if pixels else f"more ({err})"
            limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)  # Pillow's limit caps a higher one
            raise ImageTooLargeError(f"{where}: expected an image of at most {limit} pixels (the readers' limit on "
                                f"decompression bombs), found {found}") from err
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{where}: expected an image file, found unreadable data ({err})") from err


def load_image(path: Path, *, channels: int, size: int, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """``[H, W, C]`` uint8. ``size > 0``: the short side resized to ``size`` and the centre cropped square.
    ``max_pixels``: the largest image (width x height, from its header) that is decoded at all."""
    if not path.is_file():
        raise DataError(f"{path}: expected an image file, found no such file")
    with open_image(path, where=str(path), max_pixels=max_pixels) as opened:
        img = to_8_bits(opened, where=str(path)).convert("L" if channels == 1 else "RGB")
        if size:
            scale = size / min(img.size)
            w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
            img = resize_crop(img, (w, h), ((w - size) // 2, (h - size) // 2, size), max_pixels=max_pixels)
        array = np.asarray(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def resize_crop(img: Image.Image, size: tuple[int, int], square: tuple[int, int, int], *,
                max_pixels: int = MAX_PIXELS) -> Image.Image:
    """``img`` resized (bilinear) to ``size`` (width, height), then its ``square`` (left, top, side) cut out. A
    resized image of more than ``max_pixels`` is never made (a 1x20000 line resized to 224 wide is a gigapixel, 3
    GB): only the square is resampled, from the region of ``img`` it maps back to, with the same filter and the same
    pixels around it (the same image to a grey level or two: the box's edges are fractions, rounded otherwise). Under
    the limit the image is resized whole and cropped, as every recorded result was made, bit for bit."""
    (w, h), (left, top, side) = size, square
    if w * h <= max_pixels:
        return img.resize((w, h), Image.Resampling.BILINEAR).crop((left, top, left + side, top + side))
    sx, sy = img.width / w, img.height / h
    box = (left * sx, top * sy, (left + side) * sx, (top + side) * sy)
    return img.resize((side, side), Image.Resampling.BILINEAR, box=box)


def to_8_bits(img: Image.Image, *, where: str) -> Image.Image:
    """``img`` with at most 8 bits a channel, ready for ``convert("L")`` or ``convert("RGB")``, which would clip a
    16-bit image at 255 (most of it white) instead of scaling it. An integer image (modes ``I;16*`` and ``I``) whose
    values lie in 0..65535 becomes ``L`` with value // 256; one outside that range, and a floating-point image (mode
    ``F``), are a ``DataError`` naming ``where`` and the mode. Every other mode is returned as it is."""
    if img.mode == "F":
        raise DataError(f"{where}: expected an image of 8 or 16 bits a channel, found mode F (32-bit floating "
                        f"point), whose values have no standard range to scale to 8 bits")
    if not img.mode.startswith("I"):
        return img
    array = np.asarray(img)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > 65535:
        raise DataError(f"{where}: expected an image of 8 or 16 bits a channel (values 0..65535), found mode "
                        f"{img.mode} with values {low}..{high}")
    return Image.fromarray((array.astype(np.uint32) >> 8).astype(np.uint8))  # 2-D uint8: mode L


def check_encoded(payload: bytes, *, where: str, size: int = 0, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Decode ``payload`` (an encoded image) fully, to prove it is whole; returns its ``(width, height)``.
    ``size > 0`` lets a JPEG decode at a reduced scale no smaller than ``size``, which is faster and as thorough
    (every byte is still read). An image over ``max_pixels`` is refused from its header, never decoded; one that
    training could not scale to 8 bits (``to_8_bits``: mode F, values outside 0..65535) is refused too."""
    with open_image(payload, where=where, max_pixels=max_pixels) as img:
        width, height = img.size
        if size and img.format == "JPEG":
            img.draft("RGB", (size, size))
        img.load()
        to_8_bits(img, where=where)
    return width, height
