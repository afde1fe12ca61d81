"""Label feedback: ``POST /v1|v2/models/<name>/feedback`` updates the feedback and disagreement counters.

Bodies: ``{"predicted": "Coat", "label": "Shirt"}`` (one label for a prediction the client kept),
``{"feedback": [{"predicted": ..., "label": ...}, ...]}`` (several), or ``{"instances": [...], "labels": [...]}``
(v1-style instances the predictor classifies again, each with its true label). Classes are names or indices.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import FastAPI, Request

from serving.inputs import BadRequest, check_batch, parse_json, v1_batch
from serving.metrics import PredictorMetrics
from serving.model import Classifier

FORMS = ('{"predicted": class, "label": class}, {"feedback": [{"predicted": .., "label": ..}, ..]} or '
         '{"instances": [..], "labels": [..]}')


def class_index(value: object, names: tuple[str, ...], what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value in names:
        return names.index(value)
    raise BadRequest(f"{what}: Unknown class {value!r}. Valid: {', '.join(names)} (or 0..{len(names) - 1})")


async def judge(body: object, model: Classifier) -> tuple[list[int], list[int]]:
    """``(predicted, labels)`` as class indices, from any of the three body forms."""
    names = model.spec.class_names
    if isinstance(body, dict) and "instances" in body:
        labels = body.get("labels")
        if not isinstance(labels, list) or not isinstance(body["instances"], list) \
                or len(labels) != len(body["instances"]):
            raise BadRequest(f"expected one label per instance, found {len(body['instances'])} instances and "
                             f"{len(labels) if isinstance(labels, list) else 'no'} labels")
        x = v1_batch(body, model.spec, model.max_batch)
        probabilities = await asyncio.get_running_loop().run_in_executor(None, model.probabilities, x)
        return probabilities.argmax(axis=1).tolist(), [class_index(v, names, f"labels[{k}]")
                                                       for k, v in enumerate(labels)]
    items = body.get("feedback", [body]) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"predicted", "label"} <= i.keys()
                                              for i in items):
        raise BadRequest(f"expected {FORMS}, found {type(body).__name__}"
                         + (f" with keys {sorted(body)}" if isinstance(body, dict) else ""))
    check_batch(len(items), model.max_batch, "feedback items")
    return ([class_index(i["predicted"], names, f"item {k} predicted") for k, i in enumerate(items)],
            [class_index(i["label"], names, f"item {k} label") for k, i in enumerate(items)])


def install_feedback(app: FastAPI, model: Classifier, metrics: PredictorMetrics) -> None:
    async def feedback(model_name: str, request: Request) -> dict:
        predicted, labels = await judge(parse_json(await request.body()), model)
        disagreements = int((np.asarray(predicted) != np.asarray(labels)).sum())
        metrics.fed_back(len(labels), disagreements)
        return {"model": model_name, "received": len(labels), "disagreements": disagreements,
                "predicted": [model.spec.class_names[i] for i in predicted]}

    for version in ("v1", "v2"):
        app.add_api_route(f"/{version}/models/{{model_name}}/feedback", feedback, methods=["POST"],
                          tags=[version.upper()])
