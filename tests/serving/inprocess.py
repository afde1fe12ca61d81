"""The predictor's REST app in-process: KServe's own routes, middleware and exception handlers registered on a fresh
FastAPI app as ``kserve.ModelServer`` registers them on its global one, with ours installed as ``serving.server``
installs them, and metrics in a registry of their own. Requests go through ``httpx.ASGITransport`` (the peer is
``127.0.0.1`` unless ``client=(host, port)``), so what the tests check is what a client gets, without starting a
process. ``grpc_infer`` calls the gRPC servicer (``serving.dataplane.VersionedServicer``) on the same data plane
(``self.dataplane``), as a gRPC call's handler would."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import numpy as np
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from kserve.model_repository import ModelRepository
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.rest.server import RESTServer
from prometheus_client import CollectorRegistry

from serving.dataplane import AccountedDataPlane, VersionedServicer
from serving.drift import DriftWindow
from serving.metrics import PredictorMetrics
from serving.model import Classifier
from serving.release import load_release
from serving.repository import ManagedRepository, ReadOnlyRepository
from serving.server import Protection, install, install_metadata
from tests.serving.conftest import LIMITS

NAME = "mlnt-classifier"


class InProcess:
    """One app, its model, its registry of metrics and its model registry."""

    def __init__(self, release: Path, *, protection: Protection | None = None, max_batch: int = LIMITS["max_batch"],
                 drift_window: int = LIMITS["drift_window"], client_share: float = 0.1, **model_options):
        loaded = load_release(release)
        self.registry = CollectorRegistry()
        drift = DriftWindow(loaded.reference_distribution, drift_window, client_share=client_share)
        metrics = PredictorMetrics(NAME, loaded.version, loaded.spec.class_names, drift, registry=self.registry)
        self.model = Classifier(NAME, loaded, max_batch=max_batch, threads=1, metrics=metrics, **model_options)
        self.model.load()
        self.protection = protection or Protection(max_body_bytes=LIMITS["max_body_bytes"])
        self.models = ModelRepository()
        self.models.update(self.model)
        self.extension = extension = (ManagedRepository(self.models, {NAME: self.model}) if self.protection.repository
                                      else ReadOnlyRepository(self.models))
        self.dataplane = dataplane = AccountedDataPlane(self.models, metrics, serves=frozenset({NAME}),
                                       repository=self.protection.repository, clients=self.protection.clients)
        self.app = FastAPI(docs_url=None, redoc_url=None, default_response_class=ORJSONResponse)
        install(self.app, self.model, self.protection)  # before KServe's, as serve() does
        install_metadata(self.app, dataplane)
        rest = RESTServer("kserve.model_server:app", dataplane, extension, http_port=0)
        rest._add_middlewares(self.app)  # what RESTServer.create_application does to its app
        rest._register_endpoints(self.app)
        rest._add_exception_handlers(self.app)

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, {"model": NAME, **labels})

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return asyncio.run(self.arequest(method, path, **kwargs))

    async def arequest(self, method: str, path: str, **kwargs) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=kwargs.pop("client", ("127.0.0.1", 50000)))
        async with httpx.AsyncClient(transport=transport, base_url="http://predictor", timeout=60) as client:
            return await client.request(method, path, **kwargs)

    def grpc_infer(self, x: np.ndarray, metadata: dict | None = None, *, shape: list[int] | None = None):
        """The gRPC servicer's answer to an inference of the FP32 images ``x`` (raw contents; ``shape`` as declared,
        ``x``'s by default), with ``metadata`` as the call's."""
        return asyncio.run(self.agrpc_infer(x, metadata, shape=shape))

    async def agrpc_infer(self, x: np.ndarray, metadata: dict | None = None, *, shape: list[int] | None = None):
        """``grpc_infer`` on the running event loop: a task of it can be cancelled, as gRPC cancels a call's."""
        message = pb.ModelInferRequest(model_name=NAME, inputs=[pb.ModelInferRequest.InferInputTensor(
            name="images", datatype="FP32", shape=shape or list(x.shape))], raw_input_contents=[x.tobytes()])
        servicer = VersionedServicer(self.dataplane, self.extension)
        return await servicer.ModelInfer(message, Call(metadata or {}))


class Call:
    """What the servicer reads of a gRPC call's context: its metadata."""

    def __init__(self, metadata: dict):
        self.metadata = metadata

    def invocation_metadata(self) -> list:
        return [Metadatum(key, value) for key, value in self.metadata.items()]


Metadatum = collections.namedtuple("Metadatum", "key value")
