"""KServe's data plane, with gRPC inference counted and timed like REST inference, and readiness that means it.

``serving.middleware.Accounting`` counts REST requests around KServe's routes; gRPC requests never pass there, so
``VersionedServicer.ModelInfer`` accounts them (protocol ``grpc-v2``, ``AccountedDataPlane.accounting``): from the
decoded message to the answer's message, i.e. KServe's conversion of the message, finding the model, preprocess,
predict and postprocess. Only messages over the size limit, refused by gRPC itself before anything is decoded, are
not counted. A call its client cancels, or whose deadline passes, is a client error: gRPC cancels its handler, and
the client that went away is no fault of the server's (MlntPredictorHighErrorRate reads server errors). Before
KServe converts the message, an unknown model is refused (``ModelNotFound``) and each input's datatype and shape
are checked against the model's request budget as the REST path checks them, with its messages
(``serving.budget.check_v2``): KServe's conversion reads only upper-case datatypes it knows, and refuses any other
with ``invalid content type``, naming neither the input nor the datatype; and a shape with two negative dimensions,
or more than ``MAX_RANK``, would pass the model's own checks.

A client error (``CLIENT_ERRORS``) is logged as one line at info, as the REST path logs it (``OneLineClientErrors``);
KServe's interceptor logs each with its traceback at ERROR.

A gRPC inference that names a ``model_version`` other than the version of the release served is refused here with
``NOT_FOUND`` (KServe's servicer ignores the field), as REST answers ``/v2/models/<name>/versions/<v>/infer`` 404;
the served version, or none, is inferred. ``VersionedServicer`` does the same for ``ModelReady`` and
``ModelMetadata`` (KServe's servicer does not pass their ``version`` on), and the model metadata lists the served
version (``versions``) and the platform (``onnxruntime_onnx``) over both transports.

A gRPC request's client (``serving.clients``) is set here too, from the call's metadata: ``grpc`` for all of them,
or with ``--client-header`` the address that header names.

KServe's server readiness is always true; here it is true only while every model the predictor was started with is
registered and ready (an unload, with ``--enable-model-repository``, makes it false). The server metadata lists the
repository extension only when it is enabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from grpc import StatusCode
from kserve.errors import InvalidInput, ModelNotFound, UnsupportedProtocol
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.utils.utils import to_headers

from serving.budget import Budget, check_v2
from serving.clients import CLIENT, ClientIdentity
from serving.metrics import PredictorMetrics
from serving.repository import Refused
from serving.routes import version_refusal

log = logging.getLogger(__name__)

GRPC = "grpc-v2"  # the protocol label, KServe's name for the Open Inference Protocol over gRPC
CLIENT_ERRORS = (InvalidInput, ModelNotFound, UnsupportedProtocol)  # serving.inputs.BadRequest is an InvalidInput


class VersionNotFound(ModelNotFound):
    """A version of a model other than the one it serves: gRPC ``NOT_FOUND`` (REST answers the versioned path 404)."""

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason


class AccountedDataPlane(DataPlane):
    """KServe's ``DataPlane`` that counts and times gRPC inference in ``metrics`` (``None``: not at all), tells its
    clients apart as ``clients`` says, is ready only while every model of ``serves`` is, and lists no extensions
    unless ``repository`` (see the module docstring)."""

    def __init__(self, model_registry: ModelRepository, metrics: PredictorMetrics | None, *,
                 serves: frozenset[str] = frozenset(), repository: bool = False,
                 clients: ClientIdentity | None = None, message_bytes: int = 0):
        super().__init__(model_registry=model_registry)
        self.metrics, self.serves, self.repository = metrics, serves, repository
        self.clients = clients or ClientIdentity()
        self.message_bytes = message_bytes  # the largest gRPC message, the gRPC side's body_bytes

    def check_grpc(self, request: pb.ModelInferRequest) -> None:
        """A gRPC inference's model registered, its ``model_version``, if any, the served release's version (KServe
        ignores the field: ``VersionNotFound`` for another), and its inputs' datatypes and shapes within that model's
        request budget (``serving.budget.check_v2``, the REST path's checks and messages), in the REST path's order;
        each datatype then in upper case, the only case KServe's conversion of the message reads."""
        model = self.model_registry.get_model(request.model_name)
        if model is None:
            raise ModelNotFound(request.model_name)
        self.check_version(request.model_name, request.model_version)
        if hasattr(model, "spec"):  # a serving.model.Classifier
            header = {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                                 for t in request.inputs]}
            check_v2(header, Budget.of(model, body_bytes=self.message_bytes))
        for tensor in request.inputs:
            tensor.datatype = tensor.datatype.upper()

    async def ready(self) -> bool:
        """True only while every model of ``serves`` is registered and ready and KServe's own readiness holds."""
        for name in self.serves:
            if not await self.model_registry.is_model_ready(name):
                return False
        return await super().ready()

    def metadata(self) -> dict:
        """KServe's server metadata, with ``extensions`` emptied unless the repository extension is enabled."""
        found = super().metadata()
        return found if self.repository else {**found, "extensions": []}

    async def model_metadata(self, model_name: str) -> dict:
        """KServe's model metadata, with what a ``serving.model.Classifier`` knows of itself: ``versions``, the
        served release's version, the one version that ``/v2/models/<name>/versions/<v>`` answers (KServe lists
        none); ``platform``, ``onnxruntime_onnx`` (KServe's is empty); and ``parameters``, describing the
        alternative input of encoded images (REST only: ``serving.server.install_metadata``; gRPC's message has no
        such field)."""
        found = await super().model_metadata(model_name)
        model = self.model_registry.get_model(model_name)
        release = getattr(model, "release", None)
        if release is not None:
            found = {**found, "versions": [release.version]}
        if getattr(model, "platform", None):
            found = {**found, "platform": model.platform}
        if callable(getattr(model, "metadata_parameters", None)):
            found = {**found, "parameters": model.metadata_parameters()}
        return found

    @contextlib.contextmanager
    def accounting(self, headers: dict | None) -> Iterator[None]:
        """Within it, a gRPC inference has its client (from ``headers``, the call's metadata) and is counted, timed
        and counted in flight in ``metrics`` (if any) as ``GRPC``, with its outcome: ``ok``, ``client_error`` for
        ``CLIENT_ERRORS`` and for a call cancelled (its client cancelled it or its deadline passed: gRPC cancels the
        handler; the client went away, nginx's 499, no fault of the server's), else ``server_error``."""
        noted = CLIENT.set(self.clients.of_metadata(headers))
        outcome, start = "server_error", time.perf_counter()  # an exception that escapes is a server error
        try:
            with self.metrics.in_flight(GRPC) if self.metrics else contextlib.nullcontext():
                yield
            outcome = "ok"
        except (*CLIENT_ERRORS, asyncio.CancelledError):  # the cancellation goes on: gRPC ends the call
            outcome = "client_error"
            raise
        finally:
            CLIENT.reset(noted)
            if self.metrics:
                self.metrics.answered(GRPC, outcome, time.perf_counter() - start)

    def check_version(self, model_name: str, version: str | None) -> None:
        """``VersionNotFound`` unless ``version`` is empty or the version of the release ``model_name`` serves (a
        model that is not registered is left to KServe's own ``ModelNotFound``)."""
        release = getattr(self.model_registry.get_model(model_name), "release", None)
        if version and release is not None and version != release.version:
            raise VersionNotFound(version_refusal(model_name, release.version, version))


class VersionedServicer(InferenceServicer):
    """KServe's gRPC servicer, with ``ModelInfer`` accounted and its request checked first (``check_grpc``),
    and ``ModelReady`` and ``ModelMetadata`` answering for the served version only (``NOT_FOUND`` for another, as
    REST's versioned paths answer 404) and ``ModelMetadata`` listing that version. Its data plane is an
    ``AccountedDataPlane``."""

    async def ModelInfer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:  # noqa: N802
        with self._data_plane.accounting(to_headers(context)):
            self._data_plane.check_grpc(request)
            return await super().ModelInfer(request, context)

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:  # noqa: N802
        self._data_plane.check_version(request.name, request.version)
        return await super().ModelReady(request, context)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:  # noqa: N802
        self._data_plane.check_version(request.name, request.version)
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(name=metadata["name"], versions=metadata.get("versions") or [],
                                        platform=metadata["platform"], inputs=metadata["inputs"],
                                        outputs=metadata["outputs"])


class OneLineClientErrors(ExceptionToStatusInterceptor):
    """KServe's gRPC interceptor, with a client error (``CLIENT_ERRORS``) logged as one line at info, naming the
    method, the status and the reason, and a refused load or unload of the model repository (``Refused``) as one at
    warning, as the REST path logs them; anything else as KServe handles it."""

    async def handle_exception(self, ex: Exception, request_or_iterator, context, method_name: str):
        if isinstance(ex, Refused):
            log.warning("gRPC %s -> %s: %s", method_name, ex.status_code.name, ex.details)
        if not isinstance(ex, CLIENT_ERRORS):
            return await super().handle_exception(ex, request_or_iterator, context, method_name)
        status = StatusCode.NOT_FOUND if isinstance(ex, ModelNotFound) else StatusCode.INVALID_ARGUMENT
        log.info("gRPC %s -> %s: %s", method_name, status.name, ex.reason)
        await context.abort(status, ex.reason)
