"""The v2 binary tensor extension (a JSON header of ``inference-header-content-length`` bytes, then raw tensors),
checked before KServe decodes it: KServe 0.21 answers 500 when the raw data does not fit the header or its shape
cannot be made (a negative or astronomically large dimension), and it decodes binary BYTES tensors as UTF-8 text,
which fails on PNG/JPEG bytes. So the header is checked against the request budget first (``serving.budget``: the
datatypes are strings the model takes, FP32 or BYTES, the shapes declare no more than a request may hold), binary
BYTES tensors move into the header as base64 text (what JSON clients send), other binary tensors stay binary, and
misfits are a 400."""

from __future__ import annotations

import base64
import math

import orjson

from serving.budget import Budget, check_v2
from serving.inputs import BadRequest, elements, parse_json

HEADER = b"inference-header-content-length"
ITEM_BYTES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "UINT32": 4, "INT32": 4,
              "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}


def unpack(body: bytes, declared: bytes, budget: Budget) -> tuple[bytes, int]:
    """``(body, JSON length)`` with every binary BYTES tensor moved into the JSON header; a ``BadRequest`` for a
    header that is not JSON, declares more than ``budget``, or raw data that does not fit it."""
    length = declared.decode("latin-1")
    if not (length.isascii() and length.isdigit()) or int(length) > len(body):  # int() takes '٣' and '²' is a digit
        raise BadRequest(f"expected {HEADER.decode()} to be a byte count of at most the body's {len(body)} bytes, "
                         f"found {length!r}")
    header, raw = parse_json(body[:int(length)]), body[int(length):]
    inputs = header.get("inputs") if isinstance(header, dict) else None
    if not isinstance(inputs, list) or not all(isinstance(t, dict) and {"name", "shape", "datatype"} <= t.keys()
                                               for t in inputs):
        raise BadRequest('expected a JSON header {"inputs": [{"name", "shape", "datatype", ...}]}, found '
                         f"{type(header).__name__}")
    check_v2(header, budget)
    offset, kept = 0, []
    for tensor in inputs:
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        chunk = _chunk(tensor, size, raw, offset)
        offset += size
        if tensor["datatype"].upper() == "BYTES":  # check_v2 has made it a string; KServe reads it in any case
            found = elements(chunk, tensor["name"], limit=math.prod(tensor["shape"]))
            tensor["data"] = [base64.b64encode(e).decode() for e in found]
            del tensor["parameters"]["binary_data_size"]
        else:
            kept.append(chunk)
    if offset != len(raw):
        raise BadRequest(f"expected {offset} bytes of binary tensor data after the JSON header, found {len(raw)}")
    json_bytes = orjson.dumps(header)
    return json_bytes + b"".join(kept), len(json_bytes)


def _chunk(tensor: dict, size: object, raw: bytes, offset: int) -> bytes:
    name, datatype, shape = tensor["name"], tensor["datatype"].upper(), tensor["shape"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(raw):
        raise BadRequest(f"input '{name}': expected binary_data_size to be at most the {len(raw) - offset} bytes "
                         f"left after the JSON header, found {size!r}")
    if datatype != "BYTES":
        if datatype not in ITEM_BYTES:
            raise BadRequest(f"input '{name}': expected a datatype of {', '.join(ITEM_BYTES)} or BYTES, found "
                             f"{datatype}")
        if size != math.prod(shape) * ITEM_BYTES[datatype]:
            raise BadRequest(f"input '{name}': expected {math.prod(shape) * ITEM_BYTES[datatype]} bytes for "
                             f"{datatype} {shape}, found {size}")
    return raw[offset:offset + size]
