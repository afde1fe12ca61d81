"""Wiring: the model, its metrics and our routes, middleware and error handlers on KServe's FastAPI app; KServe's
ModelServer with the command line's settings, a read-only model repository (unless enabled) and gRPC inference
accounted; log records escaped (``serving.logs``)."""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from kserve import ModelServer, model_server
from kserve.model_server import app as kserve_app
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import server as grpc_server
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse
from prometheus_client import disable_created_metrics
from starlette.exceptions import HTTPException

from serving import logs, routes
from serving.auth import FeedbackToken
from serving.budget import Budget
from serving.clients import ClientIdentity, RateLimiter
from serving.dataplane import AccountedDataPlane, OneLineClientErrors, VersionedServicer
from serving.drift import DriftWindow
from serving.feedback import install_feedback
from serving.inputs import BadRequest
from serving.metrics import PredictorMetrics
from serving.middleware import Accounting, Guard
from serving.model import MAX_DECODE_PIXELS, Classifier
from serving.release import Release
from serving.repository import ManagedRepository, ReadOnlyRepository, Refused, refused

log = logging.getLogger(__name__)

# The hosts uvicorn takes X-Forwarded-For from (it reads the variable when KServe builds its config in
# ModelServer.start, which passes none of its own): see ``ignore_forwarded_for``.
FORWARDED_ALLOW_IPS = "FORWARDED_ALLOW_IPS"


def build(release: Release, *, name: str, max_batch: int, drift_window: int, threads: int,
          drift_client_share: float = 0.1, max_decode_pixels: int = MAX_DECODE_PIXELS,
          decode_threads: int = 2) -> Classifier:
    """The loaded model, with its metrics registered in prometheus_client's default registry."""
    drift = DriftWindow(release.reference_distribution, drift_window, client_share=drift_client_share)
    metrics = PredictorMetrics(name, release.version, release.spec.class_names, drift)
    model = Classifier(name, release, max_batch=max_batch, threads=threads, metrics=metrics,
                       max_decode_pixels=max_decode_pixels, decode_threads=decode_threads)
    model.load()
    return model


@dataclass(frozen=True)
class Protection:
    """What guards the REST side, from the command line: the body limit, the routes enabled beyond the default
    (docs, the model repository), the feedback token, the feedback rate per client and how clients are told apart
    (both transports)."""

    max_body_bytes: int
    docs: bool = False
    repository: bool = False
    token: FeedbackToken = field(default_factory=FeedbackToken)
    feedback_rate: float = 1.0
    feedback_burst: int = 256
    clients: ClientIdentity = field(default_factory=ClientIdentity)


def install(app: FastAPI, model: Classifier, protection: Protection) -> None:
    """Wire ``model`` into KServe's FastAPI ``app``: escaped log records, Swagger UI if ``protection.docs``, the
    ``Guard`` and ``Accounting`` middleware with the request budget, the error handlers and the feedback route;
    ``protection.clients`` counts its fallbacks to the peer in ``model.metrics``, where it has metrics (both
    transports share it)."""
    logs.install()
    if model.metrics is not None:
        protection.clients.export(model.metrics.fell_back)
    if protection.docs and app.docs_url is None:
        install_docs(app)
    budget = Budget.of(model, body_bytes=protection.max_body_bytes)
    app.add_middleware(Guard, models={model.name: model.release.version}, budget=budget, router=app.router,
                       served=routes.served(docs=protection.docs, repository=protection.repository),
                       clients=protection.clients, token=protection.token)
    app.add_middleware(Accounting, metrics=model.metrics)  # outermost of ours: sees Guard's answers too
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(RequestValidationError, invalid_body)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Refused, refused)
    install_feedback(app, model, model.metrics, token=protection.token,
                     limiter=RateLimiter(protection.feedback_rate, protection.feedback_burst))


class ModelMetadata(ModelMetadataResponse):
    """The v2 model metadata with ``parameters`` (Open Inference Protocol parameters: string, number or boolean
    values), which KServe's response model drops."""

    parameters: dict[str, str | int | float | bool] | None = None


def install_metadata(app: FastAPI, dataplane: DataPlane) -> None:
    """``GET /v2/models/{model_name}``: ``dataplane``'s model metadata with its ``parameters`` (the alternative input
    of encoded images, ``serving.model.Classifier.metadata_parameters``), ahead of KServe's route of the same path,
    whose response model drops them; so it must be installed before KServe registers its routes. The versioned path
    of the served version reaches it too (``serving.middleware.unversioned``); an unknown or unloaded model is
    KServe's ``ModelNotFound``, as on KServe's route."""

    async def model_metadata_with_parameters(model_name: str) -> ModelMetadata:
        return ModelMetadata.model_validate(await dataplane.model_metadata(model_name))

    app.add_api_route("/v2/models/{model_name}", model_metadata_with_parameters, methods=["GET"],
                      response_model=ModelMetadata, tags=["V2"])


def install_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, what KServe's --enable_docs_url gives: KServe reads that flag only when it creates its
    app, at import, and imports with an empty command line here (``serving.__main__.kserve_cli``)."""

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=root + app.openapi_url, title=f"{app.title} - Swagger UI")

    app.docs_url = "/docs"
    app.add_route(app.docs_url, swagger_ui, include_in_schema=False)


def serve(model: Classifier, settings: dict, protection: Protection) -> None:
    """Serve ``model`` with KServe until SIGTERM; ``settings`` are the parsed command line (KServe's flags too)."""
    install(kserve_app, model, protection)
    # prometheus_client's <name>_created series (one per counter and histogram child, KServe's too: about 40 a pod)
    # are read by no rule or panel; checked when /metrics is collected, so this covers collectors made before it
    disable_created_metrics()
    server = make_server(settings, model.metrics, models=[model], clients=protection.clients)
    install_metadata(kserve_app, server.dataplane)  # before server.start registers KServe's routes
    logs.show_with_kserve()  # KServe has configured logging now
    grpc = f" and gRPC on port {server.grpc_port}" if server.enable_grpc else ""
    log.info("serving %s (%s) from %s: REST on port %d%s", model.name, model.release.version, model.release.folder,
             server.http_port, grpc)
    log.info("%s", protection.clients.describe())
    if (warning := protection.token.describe()) is not None:
        log.warning(warning)
    if protection.repository:
        log.warning("the model repository extension is enabled (--enable-model-repository): anyone who reaches a "
                    "port can unload the model and take this replica out of service")
    ignore_forwarded_for()
    server.start([model])


def ignore_forwarded_for() -> None:
    """Keep uvicorn from replacing a connection's peer with the address X-Forwarded-For names: by default it does
    for every connection from loopback (``FORWARDED_ALLOW_IPS``, 127.0.0.1 and ::1), so a local client, or one through
    ``kubectl port-forward``, would be whoever its header says, a new client for the feedback rate limit and the drift
    window's cap with every request. Who a client is, ``serving.clients`` says (``--client-header``): uvicorn trusts
    no host. Must run before ``ModelServer.start``, which builds uvicorn's config; a value set in the environment is
    overridden, with a warning."""
    if os.environ.get(FORWARDED_ALLOW_IPS):
        log.warning("%s=%s is ignored: the predictor reads no forwarded header unless --client-header names it "
                    "(docs/serving.md, 'Who is a client')", FORWARDED_ALLOW_IPS, os.environ[FORWARDED_ALLOW_IPS])
    os.environ[FORWARDED_ALLOW_IPS] = ""  # no trusted host: uvicorn's ProxyHeadersMiddleware changes nothing


def make_server(settings: dict, metrics: PredictorMetrics | None, *, models: list[Classifier] = (),
                clients: ClientIdentity | None = None) -> ModelServer:
    """KServe's ModelServer with every setting that is one of its arguments; the rest of KServe's flags it reads from
    ``kserve.model_server.args`` (``hand_to_kserve``). Both transports share its repository extension and data
    plane: the repository is read-only unless ``enable_model_repository``, and the data plane accounts gRPC
    inference in our metrics (from our servicer, whose client errors our interceptor logs in one line), tells gRPC
    clients apart as ``clients`` says, and is ready only while ``models`` are."""
    hand_to_kserve(settings)
    accepted = inspect.signature(ModelServer).parameters
    server = ModelServer(**{name: value for name, value in settings.items() if name in accepted})
    enabled = bool(settings.get("enable_model_repository"))
    server.model_repository_extension = (ManagedRepository(server.registered_models, {m.name: m for m in models})
                                         if enabled else ReadOnlyRepository(server.registered_models))
    server.dataplane = AccountedDataPlane(server.registered_models, metrics, serves=frozenset(m.name for m in models),
                                          repository=enabled, clients=clients,
                                          message_bytes=settings.get("grpc_max_receive_message_length", 0))
    grpc_server.InferenceServicer = VersionedServicer  # the servicer and interceptor KServe's GRPCServer.start builds
    grpc_server.ExceptionToStatusInterceptor = OneLineClientErrors
    return server


def hand_to_kserve(settings: dict) -> None:
    """Put our parse of the command line in the namespace KServe parsed from sys.argv at import, where it reads
    logging, the gRPC message limits and a transformer's predictor settings: our parse is the one that knows every
    option and caps gRPC messages at --max-body-bytes, and ``main(argv)`` then means the same in a test as on the
    command line. (``--enable_docs_url``, which KServe reads only at import, is ``install_docs``.)"""
    for name in vars(model_server.args):
        if name in settings:
            setattr(model_server.args, name, settings[name])


async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
    """The JSON answer ``{"error": reason}`` of a ``BadRequest``, with its status and headers, logged at info."""
    log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.reason)
    return JSONResponse(status_code=exc.status, content={"error": exc.reason}, headers=exc.headers)


async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals in the predictor's shape ``{"error": "... expected ..., found ..."}`` (FastAPI's
    would be ``{"detail": "Method Not Allowed"}``): a method the route does not take (405, with ``Allow``), a path
    that is no route (404); logged at info."""
    method, path = request.method, request.url.path
    if exc.status_code == 405:
        message = f"{path}: expected {(exc.headers or {}).get('Allow', 'another method')}, found {method}"
    elif exc.status_code == 404:
        message = f"expected one of the predictor's endpoints (docs/serving.md), found {method} {path}, no route"
    else:
        message = f"expected a request the predictor can answer, found {exc.detail}"
    log.info("%s %s -> %d: %s", method, path, exc.status_code, message)
    return JSONResponse(status_code=exc.status_code, content={"error": message}, headers=exc.headers)


async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 naming the first field that FastAPI's validation of a v2 body rejected, logged at info."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the body"
    message = (f'expected an Open Inference Protocol v2 body {{"inputs": [{{"name", "shape", "datatype", "data"}}]}}, '
               f"found {where}: {first.get('msg', 'invalid')}")
    log.info("%s %s -> 400: %s", request.method, request.url.path, message)
    return JSONResponse(status_code=400, content={"error": message})
