"""The REST routes the predictor serves, by path template; any other route of KServe's app is refused with a 403.

KServe's app carries routes this predictor must not answer for whoever reaches its port: the model repository
extension (``POST /v2/repository/models/{name}/load|unload``) in KServe 0.21, ``:explain``, which the classifier
does not implement, and whatever a later KServe adds. So the list is of what we serve, not of what we refuse: a
route that is not on it is refused by ``serving.middleware.Guard`` before it runs, until someone adds it here on
purpose. Paths that match no route at all stay a 404.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match

# The versioned v2 paths: KServe 0.21 answers them 501; the predictor serves them for the version of the release it
# serves, as the paths without the version, and answers any other version 404 (serving.middleware.unversioned).
VERSIONED = frozenset({"/v2/models/{model_name}/versions/{model_version}",
                       "/v2/models/{model_name}/versions/{model_version}/ready",
                       "/v2/models/{model_name}/versions/{model_version}/infer"})
SERVED = frozenset({
    "/", "/metrics",
    "/v1/models", "/v1/models/{model_name}", "/v1/models/{model_name}:predict",
    "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models",
    "/v2/models/{model_name}", "/v2/models/{model_name}/ready", "/v2/models/{model_name}/infer",
    *VERSIONED,
    "/v1/models/{model_name}/feedback", "/v2/models/{model_name}/feedback",
})
DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})  # with --enable_docs_url
REPOSITORY = frozenset({"/v2/repository/models/{model_name}/load",  # with --enable-model-repository
                        "/v2/repository/models/{model_name}/unload"})


def served(*, docs: bool = False, repository: bool = False) -> frozenset[str]:
    """The path templates the predictor answers, given its flags."""
    return SERVED | (DOCS if docs else frozenset()) | (REPOSITORY if repository else frozenset())


def effective(routes: list[BaseRoute]) -> list:
    """The app's routes one by one: FastAPI 0.16x keeps an included router as one lazy entry of ``app.routes``
    (``fastapi.routing.iter_route_contexts`` walks into it, as FastAPI's OpenAPI generator does); before, they were
    flat already."""
    try:
        from fastapi.routing import iter_route_contexts  # noqa: PLC0415 -- only in the FastAPI versions that need it
    except ImportError:
        return list(routes)
    return list(iter_route_contexts(routes))


def template(routes: list[BaseRoute], scope: dict) -> str | None:
    """The path template of the route that would answer ``scope``, chosen as Starlette's router chooses: the first
    whose path and method match, else the first whose path matches (it answers 405), else the same with the
    trailing slash added or removed (it answers with a redirect there); ``None`` when no path does."""
    path = scope.get("path", "")
    found = _match(routes, scope, path)
    if found is None and path != "/":
        found = _match(routes, scope, path[:-1] if path.endswith("/") else path + "/")
    return found


def _match(routes: list[BaseRoute], scope: dict, path: str) -> str | None:
    method, partial = scope.get("method", ""), None
    for route in effective(routes):
        regex = getattr(route, "path_regex", None)
        if regex is None:  # a kind of route without a path: matched as Starlette would, and never served
            match = getattr(route, "original_route", route).matches({**scope, "path": path})[0]
            found = str(getattr(route, "path", None) or route)
            if match == Match.FULL:
                return found
            partial = partial or (found if match == Match.PARTIAL else None)
        elif regex.match(path):
            methods = getattr(route, "methods", None)
            if not methods or method in methods:
                return route.path
            partial = partial or route.path
    return partial


def refusal(found: str, scope: dict) -> str:
    """The 403's sentence for a route that is not served."""
    if found in REPOSITORY:
        action = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        name = scope["path"].rstrip("/").rsplit("/", 2)[-2]
        return repository_refusal(action, name)
    return (f"expected one of the predictor's endpoints (docs/serving.md), found {scope['method']} {scope['path']}, "
            f"a KServe route ({found}) that this predictor does not serve")


def repository_refusal(action: str, model_name: str) -> str:
    """The sentence refusing ``action`` (load or unload) of ``model_name`` at run time, for the REST 403 and gRPC's
    ``PERMISSION_DENIED``."""
    return (f"expected no {action} of models at run time (this predictor serves one release: roll out a new "
            f"release to change it, or start it with --enable-model-repository), found a request to {action} "
            f"'{model_name}'")


def version_refusal(model_name: str, served: str, given: str) -> str:
    """The sentence refusing a request for version ``given`` of ``model_name``, which serves ``served``: REST's 404 and
    gRPC's ``NOT_FOUND``."""
    return (f"expected version '{served}' of model '{model_name}' (the release this predictor serves), found version "
            f"'{given}'")
