"""The model repository extension, read-only: a predictor serves one verified release for its whole life.

KServe offers ``POST /v2/repository/models/{name}/load|unload`` over REST and ``RepositoryModelLoad``/``Unload``
over gRPC, without authentication. An unload would remove the model from the server for every client (KServe then
answers "model does not exist" to every inference), and a load has no release to verify. Both transports call the
same extension object, so refusing here refuses on both: HTTP 403 and gRPC ``PERMISSION_DENIED``. A new model is a
new rollout.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from grpc_interceptor.exceptions import PermissionDenied
from kserve.protocol.model_repository_extension import ModelRepositoryExtension

log = logging.getLogger(__name__)


class Refused(PermissionDenied):
    """A load or unload of the model repository; KServe's gRPC interceptor turns it into ``PERMISSION_DENIED``."""

    def __init__(self, action: str, model_name: str):
        super().__init__(f"expected no {action} of models at run time (this predictor serves one release; roll out "
                         f"a new release to change it), found a request to {action} '{model_name}'")


class ReadOnlyRepository(ModelRepositoryExtension):
    async def load(self, model_name: str) -> None:
        raise Refused("load", model_name)

    async def unload(self, model_name: str) -> None:
        raise Refused("unload", model_name)


async def refused(request: Request, exc: Refused) -> JSONResponse:
    log.warning("%s %s -> 403: %s", request.method, request.url.path, exc.details)
    return JSONResponse(status_code=403, content={"error": exc.details})
