"""KServe's data plane, with gRPC inference counted and timed like REST inference, and readiness that means it.

``serving.middleware.Accounting`` counts REST requests around KServe's routes; gRPC requests never pass there. Both
transports call the data plane, so it accounts the gRPC ones (protocol ``grpc-v2``): from the call into the data
plane to its answer, i.e. finding the model, preprocess, predict and postprocess, without the protobuf decoding
before and encoding after (KServe's servicer does those). Errors that KServe's servicer raises before the call (a
datatype it cannot read, raw contents that do not match the inputs) and messages over the size limit (refused by
gRPC itself) are not counted.

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

import time

from kserve.errors import InvalidInput, ModelNotFound, UnsupportedProtocol
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferRequest

from serving.clients import CLIENT, ClientIdentity
from serving.metrics import PredictorMetrics
from serving.routes import version_refusal

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
                 clients: ClientIdentity | None = None):
        super().__init__(model_registry=model_registry)
        self.metrics, self.serves, self.repository = metrics, serves, repository
        self.clients = clients or ClientIdentity()

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

    async def infer(self, model_name: str, request, headers: dict | None = None):
        """KServe's inference; a gRPC request is also given its client (from ``headers``, its metadata) and counted
        and timed as ``GRPC`` with its outcome: ``ok``, ``client_error`` for ``CLIENT_ERRORS``, else
        ``server_error``."""
        if not (isinstance(request, InferRequest) and request.from_grpc):
            return await super().infer(model_name, request, headers)
        noted = CLIENT.set(self.clients.of_metadata(headers))
        try:
            return await self.accounted(model_name, request, headers)
        finally:
            CLIENT.reset(noted)

    async def accounted(self, model_name: str, request: InferRequest, headers: dict | None):
        """KServe's inference of a gRPC request, counted, timed and counted in flight in ``metrics`` (if any)."""
        if self.metrics is None:
            return await self.versioned(model_name, request, headers)
        outcome, start = "server_error", time.perf_counter()  # an exception that escapes is a server error
        try:
            with self.metrics.in_flight(GRPC):
                answer = await self.versioned(model_name, request, headers)
        except CLIENT_ERRORS:
            outcome = "client_error"
            raise
        else:
            outcome = "ok"
            return answer
        finally:
            self.metrics.answered(GRPC, outcome, time.perf_counter() - start)

    async def versioned(self, model_name: str, request: InferRequest, headers: dict | None):
        """KServe's inference of a gRPC request whose ``model_version``, if any, is the served release's version
        (KServe ignores the field); ``VersionNotFound`` for another."""
        self.check_version(model_name, request.model_version)
        return await super().infer(model_name, request, headers)

    def check_version(self, model_name: str, version: str | None) -> None:
        """``VersionNotFound`` unless ``version`` is empty or the version of the release ``model_name`` serves (a
        model that is not registered is left to KServe's own ``ModelNotFound``)."""
        release = getattr(self.model_registry.get_model(model_name), "release", None)
        if version and release is not None and version != release.version:
            raise VersionNotFound(version_refusal(model_name, release.version, version))


class VersionedServicer(InferenceServicer):
    """KServe's gRPC servicer, with ``ModelReady`` and ``ModelMetadata`` answering for the served version only
    (``NOT_FOUND`` for another, as REST's versioned paths answer 404) and ``ModelMetadata`` listing that version.
    Its data plane is an ``AccountedDataPlane``."""

    async def ModelReady(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:  # noqa: N802
        self._data_plane.check_version(request.name, request.version)
        return await super().ModelReady(request, context)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:  # noqa: N802
        self._data_plane.check_version(request.name, request.version)
        metadata = await self._data_plane.model_metadata(model_name=request.name)
        return pb.ModelMetadataResponse(name=metadata["name"], versions=metadata.get("versions") or [],
                                        platform=metadata["platform"], inputs=metadata["inputs"],
                                        outputs=metadata["outputs"])
