"""Probabilities -> the response: v2 outputs ``probabilities``, ``class``, ``class_index``; v1 ``predictions``."""

from __future__ import annotations

import uuid

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse
from kserve.protocol.infer_type import RequestedOutput

from serving.inputs import BadRequest

DATATYPES = {"probabilities": "FP32", "class": "BYTES", "class_index": "INT64"}  # every v2 answer's, in order
OUTPUTS = tuple(DATATYPES)


def output_types(classes: int) -> list[dict]:
    """The outputs the v2 metadata lists: ``probabilities`` ``[-1, classes]``, ``class`` and ``class_index``
    ``[-1]``, with their datatypes."""
    return [{"name": name, "datatype": datatype, "shape": [-1, classes] if name == "probabilities" else [-1]}
            for name, datatype in DATATYPES.items()]


def check_requested(request: InferRequest) -> None:
    """A 400 ``BadRequest`` when ``request`` names an output (its ``outputs``) the model does not have: checked
    before the model runs, so a request refused is neither predicted nor counted as a prediction."""
    unknown = [o.name for o in request.request_outputs or () if o.name not in OUTPUTS]
    if unknown:
        raise BadRequest(f"expected requested outputs among {list(OUTPUTS)}, found {unknown}")


def v2_response(request: InferRequest, model: str, probabilities: np.ndarray, class_names: tuple[str, ...], *,
                version: str | None = None) -> InferResponse:
    """The v2 answer to ``request`` from model ``model`` at ``version``: ``probabilities`` FP32 ``[N, K]``, ``class``
    (the argmax's name) and ``class_index`` INT64 (flat lists for gRPC), under the request's id (else a new UUID),
    with its binary choices (``binary_data_output`` for every output, an output's own ``binary_data`` over it); only
    the outputs it names, if it names any (``check_requested`` has checked them), in its order. KServe picks the
    requested outputs for REST answers only, so they are picked here for both."""
    top = probabilities.argmax(axis=1)
    names = np.array([class_names[i] for i in top], dtype=object)
    data = _lists if request.from_grpc else _arrays
    values = {"probabilities": probabilities, "class": names, "class_index": top.astype(np.int64)}
    outputs = [InferOutput(name, list(values[name].shape), datatype, data=data(values[name]))
               for name, datatype in DATATYPES.items()]
    requested = request.request_outputs
    if requested:
        by_name = {o.name: o for o in outputs}
        outputs = [by_name[o.name] for o in requested]
        if not request.from_grpc:  # KServe's REST answer takes each named output's binary_data, None: JSON
            requested = [o if o.binary_data is not None else
                         RequestedOutput(o.name, {**(o.parameters or {}), "binary_data": request.use_binary_outputs})
                         for o in requested]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model, model_version=version,
                         infer_outputs=outputs, use_binary_outputs=request.use_binary_outputs,
                         requested_outputs=requested)


def _arrays(values: np.ndarray) -> np.ndarray:
    return values


def _lists(values: np.ndarray) -> list:
    """Flat lists for a gRPC answer: KServe 0.21's ``InferResponse.to_grpc`` takes the truth value of an output's
    data when the request came as raw contents, a ValueError for an array; lists it converts itself."""
    return values.ravel().tolist()


def v1_response(probabilities: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """The v1 answer: per row of ``probabilities``, ``class``, ``class_index``, ``confidence`` (the top probability)
    and every ``probabilities``."""
    return {"predictions": [{"class": class_names[int(p.argmax())], "class_index": int(p.argmax()),
                             "confidence": float(p.max()), "probabilities": p.tolist()} for p in probabilities]}
