"""Label feedback: ``POST /v1|v2/models/<name>/feedback`` updates the feedback and disagreement counters.

Bodies: ``{"predicted": "Coat", "label": "Shirt"}`` (one label for a prediction the client kept),
``{"feedback": [{"predicted": ..., "label": ...}, ...]}`` (several), or ``{"instances": [...], "labels": [...]}``
(v1-style instances the predictor classifies again, each with its true label). Classes are names or indices.

Feedback decides what the label-disagreement alert says, so it is guarded in this order, each step before any work
of the next: the model's name (404), the bearer token (``serving.auth``: 401; ``serving.middleware.Guard`` checks
both before the body is even read, and the route again), the body's form (400), then the client's rate
(``serving.clients.RateLimiter``, one unit per label, per client as ``serving.clients.ClientIdentity`` tells them
apart: 429 with ``Retry-After``), and only then the inference that
the ``instances`` form asks for.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import numpy as np
from fastapi import FastAPI, Request

from serving.auth import FeedbackToken
from serving.clients import CLIENT, RateLimiter
from serving.inputs import BadRequest, Encoded, check_batch, parse_json, v1_batch
from serving.metrics import PredictorMetrics
from serving.model import Classifier

FORMS = ('{"predicted": class, "label": class}, {"feedback": [{"predicted": .., "label": ..}, ..]} or '
         '{"instances": [..], "labels": [..]}')


@dataclass(frozen=True)
class Claim:
    """A feedback body checked: its labels, and the predictions they are about (given, or ``instances`` to
    classify again)."""

    labels: list[int]
    predicted: list[int] | None = None
    instances: np.ndarray | Encoded | None = None


def class_index(value: object, names: tuple[str, ...], what: str) -> int:
    """The class index ``value`` names: an index in range or one of ``names``; else a 400 ``BadRequest`` naming
    ``what`` and the valid classes."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value in names:
        return names.index(value)
    raise BadRequest(f"{what}: Unknown class {value!r}. Valid: {', '.join(names)} (or 0..{len(names) - 1})")


def claim(body: object, model: Classifier) -> Claim:
    """The checked body, in any of the three forms; no inference yet."""
    names = model.spec.class_names
    if isinstance(body, dict) and "instances" in body:
        instances, labels = body["instances"], body.get("labels")
        if not isinstance(instances, list) or not isinstance(labels, list) or len(labels) != len(instances):
            raise BadRequest(f"expected 'instances' and 'labels' as two lists of equal length (one label per "
                             f"instance), found {_what(instances)} and {_what(labels)}")
        x = v1_batch(body, model.spec, model.max_batch)
        return Claim([class_index(v, names, f"labels[{k}]") for k, v in enumerate(labels)], instances=x)
    items = body.get("feedback", [body]) if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and {"predicted", "label"} <= i.keys()
                                              for i in items):
        raise BadRequest(f"expected {FORMS}, found {type(body).__name__}"
                         + (f" with keys {sorted(body)}" if isinstance(body, dict) else ""))
    check_batch(len(items), model.max_batch, "feedback items")
    return Claim([class_index(i["label"], names, f"item {k} label") for k, i in enumerate(items)],
                 predicted=[class_index(i["predicted"], names, f"item {k} predicted") for k, i in enumerate(items)])


def _what(value: object) -> str:
    return f"a list of {len(value)}" if isinstance(value, list) else "none" if value is None else type(value).__name__


def install_feedback(app: FastAPI, model: Classifier, metrics: PredictorMetrics, *, token: FeedbackToken,
                     limiter: RateLimiter) -> None:
    """Add ``POST /v1|v2/models/{model_name}/feedback`` to ``app``: the model's name (404), the token, the body, the
    client's rate, then (``instances`` form) inference, each checked before the next; updates ``metrics``' feedback
    counters and answers the labels received, the disagreements and the predicted class names."""
    async def feedback(model_name: str, request: Request) -> dict:
        if model_name != model.name:  # as Guard answers it: nothing counted for a model that is not served
            raise BadRequest(f"Unknown model '{model_name}'. Valid: {model.name}", 404)
        token.check(request.headers.get("authorization"))
        found = claim(parse_json(await request.body()), model)
        wait = limiter.take(CLIENT.get(), len(found.labels))
        if wait == math.inf:
            raise BadRequest(f"expected at most {limiter.burst} feedback labels in one request from one client, "
                             f"found {len(found.labels)}", 429)
        if wait:
            raise BadRequest(f"expected at most {limiter.rate:g} feedback labels a second from one client (bursts "
                             f"of {limiter.burst}), found {len(found.labels)} more too soon: retry in "
                             f"{math.ceil(wait)} s", 429, {"Retry-After": str(math.ceil(wait))})
        predicted = found.predicted
        if predicted is None:
            x = await model.tensor(found.instances)
            probabilities = await asyncio.get_running_loop().run_in_executor(None, model.probabilities, x)
            predicted = probabilities.argmax(axis=1).tolist()
        disagreements = int((np.asarray(predicted) != np.asarray(found.labels)).sum())
        metrics.fed_back(len(found.labels), disagreements)
        return {"model": model_name, "received": len(found.labels), "disagreements": disagreements,
                "predicted": [model.spec.class_names[i] for i in predicted]}

    for version in ("v1", "v2"):
        app.add_api_route(f"/{version}/models/{{model_name}}/feedback", feedback, methods=["POST"],
                          tags=[version.upper()])
