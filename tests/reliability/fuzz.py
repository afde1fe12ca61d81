"""Malformed inference requests, drawn from a seeded RNG: each mutation breaks one thing a client can get wrong
(the bytes, the JSON, the tensor's name, shape, datatype or values, the encoded images, the binary extension, the
content type, the model name, the method, the size), or does what a hostile client does (shapes that declare
astronomically many values, JSON types where the header expects a string, non-ASCII digits in the binary length
header, bodies of empty binary elements, images that decompress to more pixels than a request may decode, malformed
feedback, the model repository and routes the predictor does not serve, control characters in paths and fields,
images whose header reads as PNG, JPEG or WEBP and whose body does not). Every one of them deserves a 4xx that says why,
without internals.

Left out because the predictor serves them rather than failing: the datatype in lower case (``fp32``), and nested
data lists of the tensor's shape (which the protocol allows). docs/reliability.md lists them.

The model they target is the tiny release of tests/serving/conftest.py: input ``images`` FP32 ``[N, 1, 8, 8]``,
at most ``max_batch`` images and ``max_body_bytes`` per request."""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import random
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from PIL import Image

from tests.serving.conftest import LIMITS

NAME = "mlnt-classifier"
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"
FEEDBACK = f"/v1/models/{NAME}/feedback"
BINARY = {"content-type": "application/octet-stream"}
SHAPE = [1, 8, 8]
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Request:
    mutation: str
    path: str
    body: bytes = b""
    headers: dict[str, str | bytes] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"


def dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN and Infinity literals on purpose


def pixels(rng: random.Random, n: int) -> list[float]:
    return [round(rng.gauss(0, 1), 3) for _ in range(n)]


def tensor(rng: random.Random, *, name: str = "images", shape: list | None = None, datatype: str = "FP32",
           data: object = None) -> dict:
    shape = shape if shape is not None else [rng.randint(1, 4), *SHAPE]
    if data is None:
        count = math.prod(shape) if all(isinstance(d, int) and d >= 0 for d in shape) else 4
        data = pixels(rng, min(count, 256))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def v2(*inputs: dict) -> bytes:
    return dumps({"inputs": list(inputs)})


def good_body(rng: random.Random) -> bytes:
    return v2(tensor(rng))


def _random_bytes(rng):
    return Request("random bytes", rng.choice([V1, V2]), rng.randbytes(rng.randint(1, 3000)))


def _truncated_json(rng):
    body = good_body(rng)
    return Request("truncated JSON", V2, body[:rng.randint(1, len(body) - 1)])


def _not_an_object(rng):
    value = rng.choice([[1, 2, 3], 42, "inputs", None, True, [{"inputs": []}]])
    return Request("JSON that is not an object", rng.choice([V1, V2]), dumps(value))


def _no_inputs(rng):
    body = rng.choice([{}, {"inputs": []}, {"inputs": "images"}, {"inputs": [1, 2]}, {"inputs": [{}]},
                       {"inputs": None}, {"instances": []}, {"outputs": []}])
    return Request("missing or empty inputs", V2, dumps(body))


def _wrong_shape(rng):
    rank = rng.choice([1, 2, 3, 5])
    shape = [rng.randint(1, 9) for _ in range(rank)]
    if rng.random() < 0.5:
        shape = [rng.randint(1, 4), rng.choice([2, 3]), 8, 8] if rng.random() < 0.5 else [1, 1, 8, rng.randint(9, 40)]
    return Request("wrong shape", V2, v2(tensor(rng, shape=shape)))


def _wrong_datatype(rng):
    datatype = rng.choice(["INT8", "UINT8", "FP16", "FP64", "INT64", "BOOL", "STRING", "", "FLOAT", 7, None])
    return Request("wrong datatype", V2, v2(tensor(rng, datatype=datatype)))


def _wrong_name(rng):
    name = rng.choice(["image", "input", "", "x" * rng.randint(1, 500), "images ", "IMAGES", 3, None])
    return Request("wrong input name", V2, v2(tensor(rng, name=name)))


def _huge_dims(rng):
    shape = rng.choice([[10**9, *SHAPE], [2**62, *SHAPE], [1, 1, 10**6, 10**6], [2**31, 1, 8, 8], [1e300, 1, 8, 8]])
    return Request("huge dimensions", V2, v2(tensor(rng, shape=shape, data=pixels(rng, 64))))


def _negative_dims(rng):
    shape = rng.choice([[-1, *SHAPE], [1, -1, 8, 8], [-(2**40), 1, 8, 8], [1, 1, -8, -8]])
    return Request("negative dimensions", V2, v2(tensor(rng, shape=shape, data=pixels(rng, 64))))


def _non_finite(rng):
    data = pixels(rng, 64)
    data[rng.randrange(64)] = rng.choice([float("nan"), float("inf"), float("-inf"), 1e39, -1e300])
    if rng.random() < 0.5:
        return Request("NaN or infinity", V2, v2(tensor(rng, shape=[1, *SHAPE], data=data)))
    return Request("NaN or infinity", V1, dumps({"instances": [[[data[i * 8:(i + 1) * 8] for i in range(8)]]]}))


def _count_mismatch(rng):
    n = rng.randint(1, 4)
    return Request("data length does not match the shape", V2,
                   v2(tensor(rng, shape=[n, *SHAPE], data=pixels(rng, n * 64 + rng.choice([-63, -1, 1, 64])))))


def _not_numbers(rng):
    data = rng.choice([["a"] * 64, [None] * 64, [{"x": 1}] * 64, [[1, 2], [3]], "1,2,3", ["0.5", "x"] * 32, {},
                       ["0.5"] * 64, [True] * 64, [0.5] * 63 + [False]])  # numpy would read "0.5" and true as numbers
    return Request("values that are not numbers", V2, v2(tensor(rng, shape=[1, *SHAPE], data=data)))


def _bad_instances(rng):
    instances = rng.choice([[[1, 2, 3]], [[[[0.0] * 8] * 8]] * 2 + [[0]], "x", [None], [], [{"image": "abc"}],
                            [{"image": {"b64": 5}}], [[[[0.0] * 8] * 8], {"image": {"b64": ""}}], {"a": 1},
                            [[[["x"] * 8] * 8]]])
    return Request("malformed v1 instances", V1, dumps({"instances": instances}))


def _bad_images(rng):
    blob = rng.choice(["!!not base64!!", "AAAA" * rng.randint(1, 50),
                       base64.b64encode(rng.randbytes(rng.randint(0, 500))).decode(),
                       base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.randbytes(40)).decode(), "", 12, None])
    if rng.random() < 0.5:
        return Request("bad encoded image", V2, v2({"name": "image", "shape": [1], "datatype": "BYTES",
                                                   "data": [blob]}))
    return Request("bad encoded image", V1, dumps({"instances": [{"image": {"b64": blob}}]}))


def _bad_binary(rng):
    """One of the three things the binary extension must agree on is wrong: the tensor's declared size, the
    header's declared length, or the raw bytes that follow."""
    broken = rng.choice(["size", "length", "raw"])
    size = rng.choice([255, 10**9, -4, "x", 0]) if broken == "size" else 256
    header = v2({"name": "images", "shape": [1, *SHAPE], "datatype": "FP32", "parameters": {"binary_data_size": size}})
    raw = struct.pack("<64f", *pixels(rng, 64))
    raw = raw[:rng.randint(0, 255)] + (b"\0" * rng.randint(1, 64) if rng.random() < 0.5 else b"") \
        if broken == "raw" else raw
    declared = rng.choice([str(len(header) + 10**6), "-1", "abc", "", str(len(header) - 3)]) \
        if broken == "length" else str(len(header))
    return Request("bad binary extension", V2, header + raw, {"inference-header-content-length": declared,
                                                              "content-type": "application/octet-stream"})


def _content_type(rng):
    kind = rng.choice(["text/plain", "application/xml", "multipart/form-data; boundary=x", "image/png",
                       "application/x-www-form-urlencoded"])
    body = rng.choice([rng.randbytes(100), b"inputs=1&x=2", b"<inputs/>", b"--x\r\n\r\n--x--"])
    return Request("wrong content type", rng.choice([V1, V2]), body, {"content-type": kind})


def _unknown_model(rng):
    name = rng.choice(["resnet", "mlnt", "MLNT-CLASSIFIER", "a" * rng.randint(1, 300), "%00", "x y", "-"])
    path = rng.choice([f"/v2/models/{name}/infer", f"/v1/models/{name}:predict", f"/v2/models/{name}"])
    return Request("unknown model", path, good_body(rng), method="POST" if "infer" in path or ":" in path else "GET")


def _oversize(rng):
    size = LIMITS["max_body_bytes"] + rng.randint(1, 60_000)
    body = rng.choice([b" " * size, v2(tensor(rng, shape=[1, *SHAPE], data=[0.5] * (size // 4)))])
    return Request("over-size body", rng.choice([V1, V2]), body)


def _batch_limits(rng):
    n = rng.choice([0, LIMITS["max_batch"] + 1, LIMITS["max_batch"] * 4])
    if rng.random() < 0.5:
        return Request("batch outside 1..max_batch", V1, dumps({"instances": [[[[0.1] * 8] * 8]] * n}))
    return Request("batch outside 1..max_batch", V2, v2(tensor(rng, shape=[n, *SHAPE], data=[0.1] * (n * 64))))


def _deep_nesting(rng):
    depth = rng.choice([600, 2000, 20000])
    return Request("deeply nested JSON", rng.choice([V1, V2]), b'{"instances": ' + b"[" * depth + b"]" * depth + b"}")


def _wrong_method(rng):
    return Request("wrong method", rng.choice([V1, V2]), b"", {}, rng.choice(["GET", "PUT", "DELETE", "PATCH"]))


def _many_inputs(rng):
    return Request("several inputs", V2, v2(*[tensor(rng) for _ in range(rng.randint(2, 5))]))


def _astronomical_shapes(rng):
    """Shapes whose product no server can hold, or that hide huge dimensions behind a zero."""
    huge = rng.choice([2**62, 2**63, 2**64 + 1, 10**30, 10**18])
    shape = rng.choice([[huge, huge, 0], [0, huge], [huge, *SHAPE], [huge] * rng.randint(2, 8), [1, 1, huge, 0],
                        [1] * rng.randint(9, 40), [-huge, -1, 8, 8], [-2, -32, 1, 1]])
    datatype = rng.choice(["FP32", "BYTES", "INT64", "INT8"])
    if rng.random() < 0.5:
        return Request("astronomical shape product", V2, v2(tensor(rng, shape=shape, datatype=datatype, data=[])))
    size = rng.choice([0, 256])
    header = v2({"name": "images", "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": size}})
    return Request("astronomical shape product", V2, header + b"\0" * size,
                   {"inference-header-content-length": str(len(header)), **BINARY})


def _wrong_json_types(rng):
    """A list, object, number or null where the header expects a datatype or name string."""
    odd = rng.choice([["FP32"], {"type": "FP32"}, 32, None, True, [["BYTES"]]])
    field_ = rng.choice(["datatype", "name"])
    meta = {"name": "images", "shape": [1, *SHAPE], "datatype": "FP32", field_: odd}
    if rng.random() < 0.5:
        return Request("wrong JSON type for a string", V2, v2({**meta, "data": pixels(rng, 64)}))
    header = v2({**meta, "parameters": {"binary_data_size": 256}})
    return Request("wrong JSON type for a string", V2, header + b"\0" * 256,
                   {"inference-header-content-length": str(len(header)), **BINARY})


def _non_ascii_length(rng):
    """A binary length header of digits Python's ``isdigit`` accepts and ``int`` may not: superscripts, other
    scripts' digits, full-width digits."""
    header = v2({"name": "images", "shape": [1, *SHAPE], "datatype": "FP32", "parameters": {"binary_data_size": 256}})
    digits = rng.choice(["\u00b2", "\u00b3", "\u00b9", "\u0663", "\uff11\uff12", "\u0967", str(len(header)) + "\u00b2"])
    latin = all(ord(c) < 0x100 for c in digits) and rng.random() < 0.5
    raw = digits.encode("latin-1" if latin else "utf-8")  # the bytes on the wire: one byte each, or UTF-8
    return Request("non-ASCII digits in the binary length header", V2, header + b"\0" * 256,
                   {"inference-header-content-length": raw, **BINARY})


def _empty_elements(rng):
    """A BYTES tensor of zero-length elements: four bytes each, so a body holds a quarter of its size in them."""
    n = rng.randint(1000, (LIMITS["max_body_bytes"] - 200) // 4)
    raw = b"\0\0\0\0" * n
    shape = rng.choice([[1], [n], [LIMITS["max_batch"]], [0]])
    header = v2({"name": "image", "shape": shape, "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}})
    return Request("empty binary elements", V2, header + raw,
                   {"inference-header-content-length": str(len(header)), **BINARY})


@functools.cache
def _blank_png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode()


def _pixel_bombs(rng):
    """Small PNGs of large dimensions whose pixels add up to more than a request may decode, or one image over the
    largest size."""
    images = rng.choice([[_blank_png(4096, 4096)] * 2, [_blank_png(4096, 4096), _blank_png(2048, 4096)],
                         [_blank_png(5000, 4000)], [_blank_png(4096, 4096)] + [_blank_png(1024, 1024)] * 3])
    if rng.random() < 0.5:
        return Request("pixel bomb", V2, v2({"name": "image", "shape": [len(images)], "datatype": "BYTES",
                                             "data": images}))
    return Request("pixel bomb", V1, dumps({"instances": [{"image": {"b64": b}} for b in images]}))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _corrupt_body(rng: random.Random) -> bytes:
    """A PNG, JPEG or WEBP whose signature and header read as one and whose body does not: Pillow opens it (or starts
    to) and fails in ways other than its own errors (a ValueError for an IHDR chunk cut short, a SyntaxError for a
    broken chunk while decoding)."""
    buffer = io.BytesIO()
    fmt = rng.choice(["PNG", "PNG", "PNG", "JPEG", "WEBP"])
    Image.frombytes("L", (8, 8), rng.randbytes(64)).save(buffer, fmt)
    good = buffer.getvalue()
    if fmt == "JPEG":  # cut inside the scan
        return good[:rng.randint(good.index(b"\xff\xda") + 2, len(good) - 3)]
    if fmt == "WEBP":  # cut after the RIFF header, anywhere up to the last bytes of the bitstream
        return good[:rng.randint(12, len(good) - 3)]
    at = good.index(b"IDAT") - 4
    idat = good[at + 8:at + 8 + struct.unpack(">I", good[at:at + 4])[0]]
    kind = rng.choice(["short IHDR", "cut IDAT", "junk chunk"])
    if kind == "short IHDR":  # the signature, then an IHDR chunk of fewer than its 13 bytes (a valid CRC)
        return good[:8] + _png_chunk(b"IHDR", good[16:16 + rng.randint(0, 12)])
    cut = good[:at] + _png_chunk(b"IDAT", idat[:rng.randint(1, len(idat) // 2)])  # too little for the pixels
    if kind == "cut IDAT":  # then a chunk header of random bytes
        return cut + rng.randbytes(12)
    return cut + b"\0\0\0\0" + rng.randbytes(4) + b"\0\0\0\0"  # an empty chunk of a junk type


def _corrupt_images(rng):
    blobs = [base64.b64encode(_corrupt_body(rng)).decode() for _ in range(rng.randint(1, 3))]
    where = rng.choice(["v1", "v2", "feedback"])
    if where == "v2":
        return Request("valid header, corrupt body", V2, v2({"name": "image", "shape": [len(blobs)],
                                                             "datatype": "BYTES", "data": blobs}))
    instances = {"instances": [{"image": {"b64": b}} for b in blobs]}
    if where == "feedback":
        return Request("valid header, corrupt body", FEEDBACK, dumps({**instances, "labels": [0] * len(blobs)}))
    return Request("valid header, corrupt body", V1, dumps(instances))


def _bad_feedback(rng):
    body = rng.choice([{"instances": 5, "labels": [1]}, {"instances": {"a": 1}, "labels": "x"},
                       {"instances": [[[[0.0] * 8] * 8]], "labels": 3}, {"instances": "x", "labels": None},
                       {"instances": [[[[0.0] * 8] * 8]] * 2, "labels": ["ant"]}, {"feedback": 7},
                       {"feedback": [1, 2]}, {"feedback": [{"predicted": "cow", "label": "ant"}]},
                       {"predicted": None, "label": [1]}, {"predicted": True, "label": 0}, [1, 2], "feedback",
                       {"feedback": [{"predicted": 0, "label": 0}] * (LIMITS["max_batch"] + 1)},
                       {"instances": [{"image": {"b64": 5}}], "labels": [0]}])
    return Request("malformed feedback", rng.choice([FEEDBACK, FEEDBACK.replace("/v1/", "/v2/")]), dumps(body))


def _management(rng):
    """The model repository and the routes of KServe's app that the predictor does not serve."""
    name = rng.choice([NAME, "other", "x" * rng.randint(1, 50)])
    method, path = rng.choice([("POST", f"/v2/repository/models/{name}/unload"),
                               ("POST", f"/v2/repository/models/{name}/load"),
                               ("POST", f"/v1/models/{NAME}:explain"), ("GET", "/openapi.json"),
                               ("GET", "/docs"), ("POST", f"/v2/repository/models/{name}/unload/")])
    return Request("management or unserved route", path, b"{}", method=method)


def _control_characters(rng):
    """Newlines, carriage returns, escape sequences and Unicode line separators where a log line would quote them."""
    forged = rng.choice(["\n", "\r\n", "\x1b[2J", "\u2028", "\x00", "\x85"]) + "2026-01-01 00:00:00 INFO FORGED"
    where = rng.choice(["name", "path", "repository", "label"])
    if where == "name":
        return Request("control characters in fields", V2, v2(tensor(rng, name="x" + forged)))
    if where == "label":
        return Request("control characters in fields", FEEDBACK, dumps({"predicted": "ant", "label": forged}))
    encoded = urllib.parse.quote(forged, safe="")
    if where == "path":
        return Request("control characters in fields", f"/v2/models/x{encoded}/infer", good_body(rng))
    return Request("control characters in fields", f"/v2/repository/models/x{encoded}/unload", b"{}")


MUTATIONS: list[Callable[[random.Random], Request]] = [
    _random_bytes, _truncated_json, _not_an_object, _no_inputs, _wrong_shape, _wrong_datatype, _wrong_name,
    _huge_dims, _negative_dims, _non_finite, _count_mismatch, _not_numbers, _bad_instances, _bad_images,
    _corrupt_images, _bad_binary, _content_type, _unknown_model, _oversize, _batch_limits, _deep_nesting,
    _wrong_method, _many_inputs, _astronomical_shapes, _wrong_json_types, _non_ascii_length, _empty_elements,
    _pixel_bombs, _bad_feedback, _management, _control_characters,
]


def malformed(seed: int, count: int) -> Iterator[Request]:
    """``count`` malformed requests, every mutation in turn, each drawn from ``seed``."""
    rng = random.Random(seed)
    for i in range(count):
        yield MUTATIONS[i % len(MUTATIONS)](rng)
