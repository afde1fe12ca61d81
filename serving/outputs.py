"""Probabilities -> the response: v2 outputs ``probabilities``, ``class``, ``class_index``; v1 ``predictions``."""

from __future__ import annotations

import uuid

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse


def v2_response(request: InferRequest, model: str, probabilities: np.ndarray,
                class_names: tuple[str, ...]) -> InferResponse:
    top = probabilities.argmax(axis=1)
    names = np.array([class_names[i] for i in top], dtype=object)
    outputs = [InferOutput("probabilities", list(probabilities.shape), "FP32", data=probabilities),
               InferOutput("class", [len(top)], "BYTES", data=names),
               InferOutput("class_index", [len(top)], "INT64", data=top.astype(np.int64))]
    return InferResponse(response_id=request.id or str(uuid.uuid4()), model_name=model, infer_outputs=outputs,
                         use_binary_outputs=request.use_binary_outputs, requested_outputs=request.request_outputs)


def v1_response(probabilities: np.ndarray, class_names: tuple[str, ...]) -> dict:
    return {"predictions": [{"class": class_names[int(p.argmax())], "class_index": int(p.argmax()),
                             "confidence": float(p.max()), "probabilities": p.tolist()} for p in probabilities]}
