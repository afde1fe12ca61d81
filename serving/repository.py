"""The model repository extension: read-only unless ``--enable-model-repository`` says otherwise.

KServe offers ``POST /v2/repository/models/{name}/load|unload`` over REST and ``RepositoryModelLoad``/``Unload``
over gRPC, without authentication. An unload would remove the model from the server for every client (KServe then
answers "model does not exist" to every inference while readiness still says ready), and KServe's load has no
release to load it again from. By default both transports call ``ReadOnlyRepository``, which refuses: HTTP 403 and
gRPC ``PERMISSION_DENIED`` (the REST routes are refused earlier still, by ``serving.routes``). A new model is a new
rollout.

``--enable-model-repository`` (for an operator who wants to drain a replica by hand) installs
``ManagedRepository``: an unload takes the model out of service (inference 404, ``/v2/health/ready`` false, so
Kubernetes stops routing to the pod), and a load puts the same verified release back, from the bytes checked at
start.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from grpc_interceptor.exceptions import PermissionDenied
from kserve import Model
from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

from serving.routes import repository_refusal

log = logging.getLogger(__name__)


class Refused(PermissionDenied):
    """A load or unload of the model repository; KServe's gRPC interceptor turns it into ``PERMISSION_DENIED``."""

    def __init__(self, action: str, model_name: str):
        super().__init__(repository_refusal(action, model_name))


class ReadOnlyRepository(ModelRepositoryExtension):
    """The default repository extension: every load and unload is ``Refused`` (HTTP 403, gRPC ``PERMISSION_DENIED``)."""

    async def load(self, model_name: str) -> None:
        """Refuse: raises ``Refused``."""
        raise Refused("load", model_name)

    async def unload(self, model_name: str) -> None:
        """Refuse: raises ``Refused``."""
        raise Refused("unload", model_name)


class ManagedRepository(ModelRepositoryExtension):
    """Unload and load of the models this predictor was started with, and of no other."""

    def __init__(self, registry: ModelRepository, models: dict[str, Model]):
        super().__init__(registry)
        self.models = models

    async def load(self, model_name: str) -> dict:
        """Put ``model_name`` back into service, if it was unloaded, with a fresh session from the release verified
        at start; ``ModelNotFound`` for a model this predictor was not started with. Logs a warning. Returns the
        answer KServe's gRPC servicer reads (``{"name", "load"}``; its REST route makes its own): KServe's own
        extension returns nothing, and the servicer then fails with an internal error after the load."""
        model = self.models.get(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        if self._model_registry.get_model(model_name) is None:
            model.load()  # a fresh session from the release verified at start
            self._model_registry.update(model)
        log.warning("model %s loaded again by a repository request", model_name)
        return {"name": model_name, "load": True}

    async def unload(self, model_name: str) -> dict:
        """Take ``model_name`` out of service (KServe's unload: inference 404, readiness false) and log a warning;
        returns the answer KServe's gRPC servicer reads (``{"name", "unload"}``, as ``load``)."""
        await super().unload(model_name)
        log.warning("model %s unloaded by a repository request: inference answers 404 and readiness is false until "
                    "a load", model_name)
        return {"name": model_name, "unload": True}


async def refused(request: Request, exc: Refused) -> JSONResponse:
    """The 403 JSON answer to a REST load or unload (``Refused``), logged as a warning."""
    log.warning("%s %s -> 403: %s", request.method, request.url.path, exc.details)
    return JSONResponse(status_code=403, content={"error": exc.details})
