"""The per-request budget, checked before any work: how many images, numbers, pixels and bytes one request may
make the predictor handle.

A request's cost is not its size: a few kilobytes of PNG can declare 4096 x 4096 pixels, a shape can declare more
numbers than there are atoms, and a binary BYTES tensor of 16 MiB is four million empty elements. So what a request
*declares* is checked against the budget before anything is unpacked, parsed by KServe or decoded:

* ``images`` (``--max-batch``): the elements of a BYTES tensor, the rows of an FP32 tensor, v1 instances;
* ``values``: the numbers of one request's tensor (``images`` x the card's C x H x W), as declared by every input's
  shape and as held by its data;
* ``pixels`` (``--max-decode-pixels``): width x height summed over a request's encoded images, read from their
  headers before the first one is decoded (``serving.inputs.decode_images``);
* ``body_bytes`` (``--max-body-bytes``): the request body, or a gRPC message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serving.inputs import BadRequest, check_datatype

MAX_RANK = 8  # more dimensions than any tensor of this protocol needs


@dataclass(frozen=True)
class Budget:
    """The most one request may make the predictor handle: ``images``, ``values`` (the numbers of one tensor),
    ``pixels`` of encoded images and ``body_bytes`` (see the module docstring)."""

    images: int
    values: int
    pixels: int
    body_bytes: int

    @classmethod
    def for_input(cls, shape: tuple[int, ...], *, images: int, pixels: int, body_bytes: int) -> Budget:
        """The budget for a model whose input is ``[N, *shape]``."""
        return cls(images=images, values=images * math.prod(shape), pixels=pixels, body_bytes=body_bytes)

    @classmethod
    def of(cls, model, *, body_bytes: int) -> Budget:
        """The budget of a ``serving.model.Classifier``: its input shape, batch and decode limits."""
        return cls.for_input(model.spec.shape, images=model.max_batch, pixels=model.max_decode_pixels,
                             body_bytes=body_bytes)


def check_v2(header: object, budget: Budget) -> None:
    """A v2 body (JSON) or binary extension header: every input's datatype a string the model takes
    (``serving.inputs.check_datatype``: KServe would refuse FP16 data in JSON itself, advising the binary format,
    which the model does not take either), its shape a list of at most ``MAX_RANK`` non-negative integers declaring
    no more than the budget, and its data holding no more."""
    inputs = header.get("inputs") if isinstance(header, dict) else None
    for tensor in inputs if isinstance(inputs, list) else []:
        if not isinstance(tensor, dict):
            continue
        name = tensor.get("name")
        what = f"input '{name}'" if isinstance(name, str) else "an input"
        datatype, shape = tensor.get("datatype"), tensor.get("shape")
        if "datatype" in tensor and not isinstance(datatype, str):
            raise BadRequest(f"{what}: expected the datatype as a string such as FP32 or BYTES, found "
                             f"{type(datatype).__name__}")
        if isinstance(datatype, str):
            check_datatype(datatype, what)
        bytes_ = isinstance(datatype, str) and datatype.upper() == "BYTES"
        limit, unit = (budget.images, "images") if bytes_ else (budget.values, "values")
        if "shape" in tensor:
            declared = _declared(shape, what, limit)
            if declared > limit:
                many = declared if declared < 10**18 else "more than 10^18"
                raise BadRequest(f"{what}: expected at most {limit} {unit} in one request, found shape "
                                 f"{_short(shape)} ({many} {unit})")
        if "data" in tensor and count(tensor["data"], limit) > limit:
            raise BadRequest(f"{what}: expected at most {limit} {unit} in one request, found more in its data")


def check_v1(body: object, budget: Budget) -> None:
    """A v1 body: at most ``images`` instances holding at most ``values`` numbers (or encoded images)."""
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list):
        return
    if len(instances) > budget.images:
        raise BadRequest(f"expected a batch of 1 to {budget.images} images, found {len(instances)}")
    if count(instances, budget.values) > budget.values:
        raise BadRequest(f"expected at most {budget.values} values in one request's instances, found more")


def _declared(shape: object, what: str, limit: int) -> int:
    """The count a shape declares: a list of at most ``MAX_RANK`` integers in ``[0, limit]`` (a larger dimension is
    never of use, and beside a zero it declares nothing but makes numpy fail)."""
    if not (isinstance(shape, list) and len(shape) <= MAX_RANK
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        raise BadRequest(f"{what}: expected the shape as a list of at most {MAX_RANK} integers from 0 to {limit}, "
                         f"found {_short(shape)}")
    declared = math.prod(shape)
    if declared <= limit and any(d > limit for d in shape):
        raise BadRequest(f"{what}: expected the shape as a list of at most {MAX_RANK} integers from 0 to {limit}, "
                         f"found {_short(shape)}")
    return declared


def count(data: object, limit: int) -> int:
    """The numbers (or elements) nested lists hold, as numpy will read them: the product of the lengths along the
    first elements, ``limit + 1`` as soon as one list is longer than ``limit``. It costs the depth, not the size, so
    checking a valid request is free; a ragged list that hides more further on is refused by numpy later, after work
    bounded by the body's size."""
    found, item = 1, data
    while isinstance(item, list):
        if len(item) > limit:
            return limit + 1
        if not item:
            return 0
        found *= len(item)
        if found > limit:
            return found
        item = item[0]
    return found


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
