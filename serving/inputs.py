"""Requests -> the network's input: float32 ``[N, C, H, W]``, normalised like training; or one clear 4xx error.

Accepted: a preprocessed tensor (v2 FP32 input named as in the card; v1 ``instances`` as nested lists) or encoded
images (v2 BYTES input of base64 PNG/JPEG/WEBP; v1 ``instances: [{"image": {"b64": ...}}]``). ``v2_batch`` and
``v1_batch`` check a request and return its tensor, or its images still ``Encoded``: decoding is the expensive part,
which the model runs off the event loop (``serving.model.Classifier.tensor``) through ``decode_images``. That reads
every image's header first and refuses the request if their pixels add up to more than the budget
(``serving.budget``; under the short-side transform an image counts the pixels its resize makes where more, so a
thin one cannot make gigabytes); then it decodes them with Pillow, converts them to the card's channels, brings
them to its size as its ``input.transform`` says (the short side resized, then the centre crop, exactly as training
and evaluate did; or, for a dataset stored at its final size and a card without one, resized to the size), scales
them to [0, 1] and normalises them with its mean/std.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import struct
from dataclasses import dataclass
from itertools import chain

import numpy as np
import orjson
from kserve.errors import InvalidInput
from PIL import Image, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from serving.release import SHORT_SIDE, InputSpec

JSON_TYPES = {str: "string", int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}

# Pillow's names; training reads more (components.formats.imagefolder). MPO is Pillow's name for a JPEG with a
# Multi-Picture segment (a camera's large thumbnail, an HDR gain map): its first picture, as ingest reads it
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "WEBP")
FORMATS = "PNG, JPEG or WEBP"  # IMAGE_FORMATS in the messages
PIL_PIXELS = re.compile(r"\((\d+) pixels\)")  # the size in Pillow's decompression bomb error
MAX_IMAGE_PIXELS = 4096 * 4096  # larger images are refused before they are decompressed
# What Pillow raises for bytes it cannot read: besides its own errors, a PNG's truncated IHDR chunk is a ValueError
# when it is opened and a broken chunk a SyntaxError when it is decoded; struct.error, IndexError and TypeError come
# from other cut or corrupt headers.
UNREADABLE = (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError, struct.error,
              IndexError, TypeError)
NUMBERS = frozenset({int, float})  # JSON numbers as parsed; a bool is neither
# The datatypes the model takes: a preprocessed tensor or encoded images. KServe reads a datatype in any case ("fp32").
DATATYPES = ("FP32", "BYTES")


class BadRequest(InvalidInput):
    """A client error (HTTP 400 unless ``status`` says otherwise); the message is one sentence."""

    def __init__(self, reason: str, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status, self.headers = status, headers


@dataclass(frozen=True)
class Encoded:
    """A request's encoded images (PNG/JPEG/WEBP bytes), checked but not yet decoded."""

    blobs: tuple[bytes, ...]


def parse_json(raw: bytes | str) -> object:
    """The JSON value of ``raw``; a 400 ``BadRequest`` for invalid JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"expected a JSON body, found invalid JSON ({exc})") from None


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type: ``string``, ``number``, ``boolean``, ``list``, ``object`` or ``null``."""
    return JSON_TYPES.get(type(value), "null")


def check_datatype(datatype: str, what: str) -> None:
    """A 400 ``BadRequest`` unless ``datatype`` is one the model takes (``DATATYPES``, in any case, as KServe reads
    it): checked on a v2 body before KServe parses it (``serving.budget.check_v2``), whose own refusals of some
    (FP16 sent as JSON) advise what the model does not take either, and again on every request the model gets (gRPC);
    ``what`` names the input."""
    if datatype.upper() not in DATATYPES:
        found = datatype if len(datatype) <= 40 else datatype[:37] + "..."
        raise BadRequest(f"{what}: expected datatype FP32 (a preprocessed tensor) or BYTES (encoded images), found "
                         f"{found}")


def check_batch(n: int, max_batch: int, what: str = "images") -> None:
    """A 400 ``BadRequest`` unless ``n`` lies in ``[1, max_batch]``; ``what`` names the items."""
    if not 1 <= n <= max_batch:
        raise BadRequest(f"expected a batch of 1 to {max_batch} {what}, found {n}")


def v2_batch(request, spec: InputSpec, max_batch: int) -> np.ndarray | Encoded:
    """The tensor of a v2 ``InferRequest`` (one FP32 input ``spec.name``), or its images (one BYTES input)."""
    if len(request.inputs) != 1:
        raise BadRequest(f"expected one input ('{spec.name}' FP32 [N, {', '.join(map(str, spec.shape))}] or a "
                         f"BYTES [N] input of base64 PNG/JPEG/WEBP images), found {len(request.inputs)}")
    tensor = request.inputs[0]
    if tensor.datatype == "BYTES":
        declared = math.prod(tensor.shape)
        check_batch(declared, max_batch)
        raw = raw_contents(tensor)
        data = list(tensor.data) if raw is None else elements(raw, tensor.name, limit=declared)
        if len(data) != declared:
            raise BadRequest(f"input '{tensor.name}': expected {declared} elements for shape "
                             f"{list(tensor.shape)}, found {len(data)}")
        return Encoded(tuple(_b64(item, f"input '{tensor.name}' element {k}") for k, item in enumerate(data)))
    check_datatype(tensor.datatype, f"input '{tensor.name}'")
    if tensor.name != spec.name:
        raise BadRequest(f"expected the FP32 input to be named '{spec.name}', found '{tensor.name}'")
    _check_shape(list(tensor.shape), spec, max_batch)
    if raw_contents(tensor) is not None:
        return _finite(_raw_fp32(raw_contents(tensor), list(tensor.shape), f"input '{spec.name}'"))
    return _finite(_values(tensor.data, tensor.shape, f"input '{spec.name}'"))


def raw_contents(tensor) -> bytes | None:
    """The bytes of a gRPC input sent in ``raw_input_contents`` (KServe keeps them beside the empty ``data``, as its
    own ``InferInput.as_numpy`` reads them), or ``None`` for data in the message or in JSON."""
    return getattr(tensor, "_raw_data", None)


def v1_batch(body: object, spec: InputSpec, max_batch: int) -> np.ndarray | Encoded:
    """The tensor of a v1 body ``{"instances": [...]}``: nested lists ``[C, H, W]`` or ``{"image": {"b64": ..}}``."""
    if isinstance(body, bytes):  # a body KServe did not parse; a str is a JSON string it parsed
        body = parse_json(body)
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        if not isinstance(body, dict):
            found = f"a JSON {json_type(body)}"
        elif "instances" in body:
            found = f"'instances' as a JSON {json_type(body['instances'])}"
        else:
            found = f"keys {sorted(body)}"
        raise BadRequest(f"expected a JSON object with an 'instances' list, found {found}")
    instances = body["instances"]
    check_batch(len(instances), max_batch)
    encoded = [isinstance(i, dict) for i in instances]
    if all(encoded):
        return Encoded(tuple(_b64(_image_field(i, k), f"instance {k}") for k, i in enumerate(instances)))
    if any(encoded):
        raise BadRequest("expected instances all of one kind (nested lists or {\"image\": {\"b64\": ...}}), "
                         "found a mix")
    x = _values(instances, None, "instances")
    if x.shape[1:] != spec.shape:
        raise BadRequest(f"expected instances of shape {list(spec.shape)} (channels, height, width), found "
                         f"{list(x.shape[1:])}")
    return _finite(x)


def elements(chunk: bytes, name: str, *, limit: int) -> list[bytes]:
    """The elements of a binary BYTES tensor (the v2 binary extension, gRPC raw contents): each a 4-byte
    little-endian length, then that many bytes. More than ``limit`` (the count its shape declares) is refused as
    soon as it is seen: four bytes make an element, so a body of zeros holds a quarter of its size in them."""
    items, at = [], 0
    while at < len(chunk):
        if len(items) == limit:
            raise BadRequest(f"input '{name}': expected {limit} elements as its shape declares, found more")
        if at + 4 > len(chunk):
            raise BadRequest(f"input '{name}': expected BYTES elements each prefixed by its 4-byte little-endian "
                             f"length, found {len(chunk) - at} byte(s) at byte {at}, too few for a length")
        n = struct.unpack_from("<I", chunk, at)[0]
        if at + 4 + n > len(chunk):
            raise BadRequest(f"input '{name}': expected BYTES elements each prefixed by its 4-byte little-endian "
                             f"length, found an element of {n} bytes with {len(chunk) - at - 4} left")
        items.append(chunk[at + 4:at + 4 + n])
        at += 4 + n
    return items


def decode_images(blobs: tuple[bytes, ...] | list[bytes], spec: InputSpec, max_pixels: int) -> np.ndarray:
    """The normalised tensor of encoded images, once their headers show at most ``max_pixels`` in all, each image
    counted as the most pixels it is made of on its way (``work``)."""
    sizes = [image_size(blob, f"image {k}") for k, blob in enumerate(blobs)]
    total = sum(work(width, height, spec, f"image {k}") for k, (width, height) in enumerate(sizes))
    if total > max_pixels:
        counted = "width x height summed"
        if spec.transform.method == SHORT_SIDE:
            counted += f", or what resizing the short side to {spec.transform.resize} makes where more"
        raise BadRequest(f"expected encoded images of at most {max_pixels} pixels in one request ({counted}), found "
                         f"{total} in {len(blobs)} images")
    pixels = np.stack([decode_image(blob, spec, f"image {k}") for k, blob in enumerate(blobs)])
    return normalise(pixels, spec)


def work(width: int, height: int, spec: InputSpec, what: str) -> int:
    """The most pixels an image of ``width`` x ``height`` is made of on its way to the input: its own, or under
    ``SHORT_SIDE`` the ones its short side resized makes before the crop (``fit``) where more, as a thin image's are
    (8192 x 1 at 256: 2097152 x 256); a ``BadRequest`` when those are over ``MAX_IMAGE_PIXELS``."""
    if spec.transform.method != SHORT_SIDE:
        return width * height
    w, h = short_side_size(width, height, spec.transform.resize)
    if w * h > MAX_IMAGE_PIXELS:
        raise BadRequest(f"{what}: expected an image whose short side resized to {spec.transform.resize} makes at "
                         f"most {MAX_IMAGE_PIXELS} pixels, found {width}x{height} ({w}x{h} = {w * h} pixels)")
    return max(width * height, w * h)


def short_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """``(width, height)`` of an image with its short side resized to ``side``, the aspect ratio kept."""
    scale = side / min(width, height)
    return max(side, round(width * scale)), max(side, round(height * scale))


def image_size(blob: bytes, what: str) -> tuple[int, int]:
    """``(width, height)`` from the image's header, without decoding it; a ``BadRequest`` for anything but a PNG,
    JPEG or WEBP of at most ``MAX_IMAGE_PIXELS``."""
    try:
        with _open(blob, what) as opened:
            _check_header(opened, what)
            return opened.width, opened.height
    except BadRequest:  # a ValueError too: ours, already one sentence
        raise
    except UNREADABLE as exc:
        raise _unreadable(blob, what, exc) from None


def _open(blob: bytes, what: str) -> Image.Image:
    """``Image.open``, lazily: the header only. Pillow itself refuses a header of more than twice its own
    ``MAX_IMAGE_PIXELS`` (about 179 million pixels) as a decompression bomb; a PNG or JPEG header that large is
    read by its format's plugin instead (which decodes nothing either), so that it gets ``_check_header``'s answer,
    as every image over ``MAX_IMAGE_PIXELS`` does. Any other (a WEBP: its plugin checks the size itself) gets the
    same sentence with the pixels Pillow counted."""
    try:
        return Image.open(io.BytesIO(blob))
    except Image.DecompressionBombError as exc:
        for plugin in (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile):
            try:
                return plugin(io.BytesIO(blob))
            except UNREADABLE:
                continue
        if (pixels := PIL_PIXELS.search(str(exc))) is None:
            raise
        raise BadRequest(f"{what}: expected a {FORMATS} image of at most {MAX_IMAGE_PIXELS} pixels, found "
                         f"{pixels[1]} pixels") from None


def _check_header(opened: Image.Image, what: str) -> None:
    if opened.format not in IMAGE_FORMATS or opened.width * opened.height > MAX_IMAGE_PIXELS:
        raise BadRequest(f"{what}: expected a {FORMATS} image of at most {MAX_IMAGE_PIXELS} pixels, "
                         f"found {opened.format} {opened.width}x{opened.height}")


def _unreadable(blob: bytes, what: str, exc: Exception) -> BadRequest:
    why = "" if isinstance(exc, UnidentifiedImageError) else f": {exc}"
    return BadRequest(f"{what}: expected {FORMATS} bytes, found {len(blob)} bytes that are not a readable image "
                      f"(starting {blob[:8]!r}{why})")


def decode_image(blob: bytes, spec: InputSpec, what: str) -> np.ndarray:
    """PNG, JPEG or WEBP bytes -> uint8 ``[H, W, C]`` in the card's channels and size, resized (and cropped) as the
    card's ``input.transform`` says (``fit``). An animated image gives its first frame, as ingest reads one."""
    if spec.channels not in (1, 3):
        raise BadRequest(f"{what}: expected a model with 1 or 3 channels for encoded images, found "
                         f"{spec.channels}; send a preprocessed tensor instead")
    transform = spec.transform
    try:
        with _open(blob, what) as opened:
            _check_header(opened, what)
            if transform.jpeg_draft and opened.format == "JPEG":
                opened.draft("RGB", (transform.resize, transform.resize))  # as training decoded it
            img = _eight_bits(opened, what).convert("L" if spec.channels == 1 else "RGB")
        img = fit(img, spec)
        return np.asarray(img, dtype=np.uint8).reshape(spec.height, spec.width, spec.channels)
    except BadRequest:  # a ValueError too: ours, already one sentence
        raise
    except UNREADABLE as exc:
        raise _unreadable(blob, what, exc) from None


def _eight_bits(img: Image.Image, what: str) -> Image.Image:
    """A 16-bit image (modes ``I;16*`` and ``I``, values 0..65535) as 8 bits, value // 256, as ingest reads one
    (``components.formats.images.to_8_bits``; ``convert`` alone would clip it at 255); a 400 for a floating-point
    image or one outside that range. Other modes are returned as they are."""
    if img.mode == "F":
        raise BadRequest(f"{what}: expected an image of 8 or 16 bits a channel, found mode F (floating point)")
    if not img.mode.startswith("I"):
        return img
    array = np.asarray(img)
    low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
    if low < 0 or high > 65535:
        raise BadRequest(f"{what}: expected an image of 8 or 16 bits a channel (values 0..65535), found mode "
                         f"{img.mode} with values {low}..{high}")
    return Image.fromarray((array.astype(np.uint32) >> 8).astype(np.uint8))


def fit(img: Image.Image, spec: InputSpec) -> Image.Image:
    """``img`` (decoded, in the card's channels) at the input's size, as training and evaluate prepared theirs:
    ``SHORT_SIDE``: the short side resized to ``resize``, then the centre ``crop`` square, its corner at
    ``round((side - crop) / 2)`` (``components.common.streaming.decode``) or ``(side - crop) // 2``
    (``components.formats.images.load_image``); ``STRETCH``: resized to the input size unless it has it."""
    transform = spec.transform
    resample = Image.Resampling[transform.filter.upper()]
    if transform.method != SHORT_SIDE:
        if img.size == (spec.width, spec.height):
            return img
        return img.resize((spec.width, spec.height), resample)
    crop = transform.crop
    w, h = short_side_size(img.width, img.height, transform.resize)
    if transform.offset == "round":
        left, top = round((w - crop) * 0.5), round((h - crop) * 0.5)
    else:
        left, top = (w - crop) // 2, (h - crop) // 2
    return img.resize((w, h), resample).crop((left, top, left + crop, top + crop))


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]``: pixels / 255, then (x - mean) / std per channel,
    in float32 as in training (``components.common.splits.normalise``)."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return np.ascontiguousarray((x - mean) / std)


def _check_shape(shape: list[int], spec: InputSpec, max_batch: int) -> None:
    if len(shape) != 4 or tuple(shape[1:]) != spec.shape:
        raise BadRequest(f"input '{spec.name}': expected shape [N, {', '.join(map(str, spec.shape))}], found "
                         f"{shape}")
    check_batch(shape[0], max_batch)


def _values(data: object, shape: list[int] | None, what: str) -> np.ndarray:
    odd = _leaf_types(data) - NUMBERS
    if odd and list not in odd:  # numpy would turn "0.5" and true into numbers; ragged lists it refuses below
        raise BadRequest(f"{what}: expected numbers in nested lists of equal length, found other values "
                         f"({', '.join(sorted(_KINDS.get(t, t.__name__) for t in odd))})")
    try:
        with np.errstate(over="ignore"):  # numbers beyond float32 become infinity, refused by _finite
            values = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadRequest(f"{what}: expected numbers in nested lists of equal length, found other values or "
                         f"lists of unequal length") from None
    if shape is None:
        return values
    if values.size != math.prod(shape):
        raise BadRequest(f"{what}: expected {math.prod(shape)} values for shape {list(shape)}, found {values.size}")
    return values.reshape(shape)


_KINDS = {str: "strings", bool: "booleans", type(None): "nulls", dict: "objects"}


def _leaf_types(data: object) -> set[type]:
    """The types of what nested lists hold at the bottom, one level at a time (loops in C: cheap next to the JSON
    parse); ``list`` among them when the lists are ragged."""
    level = [data]
    while (kinds := set(map(type, level))) == {list}:
        level = list(chain.from_iterable(level))
    return kinds


def _raw_fp32(raw: bytes, shape: list[int], what: str) -> np.ndarray:
    """Little-endian float32 values, as the Open Inference Protocol sends FP32 raw contents."""
    if len(raw) != math.prod(shape) * 4:
        raise BadRequest(f"{what}: expected {math.prod(shape) * 4} bytes of raw FP32 contents for shape {shape}, "
                         f"found {len(raw)}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def _finite(x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise BadRequest("expected finite numbers, found NaN or infinity")
    return np.ascontiguousarray(x, dtype=np.float32)


def _image_field(instance: dict, k: int) -> object:
    field = instance.get("image", instance)
    if not isinstance(field, dict) or "b64" not in field:
        raise BadRequest(f"instance {k}: expected {{\"image\": {{\"b64\": \"<base64 PNG/JPEG/WEBP>\"}}}}, found keys "
                         f"{sorted(instance)}")
    return field["b64"]


def _b64(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise BadRequest(f"{what}: expected base64 text of a {FORMATS} image, found "
                         f"{type(value).__name__} that is not base64") from None
