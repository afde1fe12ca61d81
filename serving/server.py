"""Wiring: the model, its metrics and our routes, middleware and error handlers on KServe's FastAPI app."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import ModelServer
from kserve.model_server import app as kserve_app

from serving.drift import DriftWindow
from serving.feedback import install_feedback
from serving.inputs import BadRequest
from serving.metrics import PredictorMetrics
from serving.middleware import Accounting, Guard
from serving.model import Classifier
from serving.release import Release

log = logging.getLogger(__name__)


def build(release: Release, *, name: str, max_batch: int, drift_window: int, threads: int) -> Classifier:
    """The loaded model, with its metrics registered in prometheus_client's default registry."""
    drift = DriftWindow(release.train_distribution, drift_window)
    metrics = PredictorMetrics(name, release.version, release.spec.class_names, drift)
    model = Classifier(name, release, max_batch=max_batch, threads=threads, metrics=metrics)
    model.load()
    return model


def install(app: FastAPI, model: Classifier, *, max_body_bytes: int) -> None:
    app.add_middleware(Guard, models={model.name}, max_body_bytes=max_body_bytes)
    app.add_middleware(Accounting, metrics=model.metrics)  # outermost of ours: sees Guard's answers too
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(RequestValidationError, invalid_body)
    install_feedback(app, model, model.metrics)


def serve(model: Classifier, *, http_port: int, max_body_bytes: int) -> None:
    install(kserve_app, model, max_body_bytes=max_body_bytes)
    log.info("serving %s (%s) from %s on port %d", model.name, model.release.version, model.release.folder,
             http_port)
    ModelServer(http_port=http_port, enable_grpc=False, workers=1).start([model])


async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.reason)
    return JSONResponse(status_code=exc.status, content={"error": exc.reason})


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the body"
    message = (f'expected an Open Inference Protocol v2 body {{"inputs": [{{"name", "shape", "datatype", "data"}}]}}, '
               f"found {where}: {first.get('msg', 'invalid')}")
    log.info("%s %s -> 400: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=400, content={"error": message})
