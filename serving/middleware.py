"""ASGI middleware around KServe's routes: ``Guard`` refuses what the predictor does not serve and answers the
client errors KServe would answer vaguely (or not at all, or with a 500) before it sees the request; ``Accounting``
counts and times every inference request, bad ones too."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

import orjson
from starlette.datastructures import Headers
from starlette.routing import Router

from serving import routes
from serving.auth import FeedbackToken
from serving.binary import HEADER as BINARY_HEADER
from serving.binary import unpack
from serving.budget import Budget, check_v1, check_v2
from serving.clients import CLIENT, ClientIdentity, peer
from serving.inputs import BadRequest, json_type, parse_json
from serving.metrics import PredictorMetrics

log = logging.getLogger(__name__)
INTERNAL = "expected a request the predictor can answer, found one that failed inside it (the server log has why)"

# A model's path as its route reads it (serving.routes): Starlette's {model_name} is any run of characters but '/',
# colons too, so the name is what comes before one of the suffixes the protocol's routes have, and a path without
# one is no model route.
SUFFIXES = {"1": r":predict|/feedback", "2": r"/ready|/infer|/feedback|/versions/[^/]+(?:/ready|/infer)?"}
ROUTES = tuple(re.compile(rf"^/v(?P<protocol>{protocol})/models/(?P<name>[^/]+?)(?P<rest>(?:{suffixes})?)$")
               for protocol, suffixes in SUFFIXES.items())

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def model_route(path: str) -> re.Match | None:
    """``path`` read as a model's route reads it (``ROUTES``): its ``protocol``, model ``name`` and the ``rest``
    after the name; ``None`` for a path that is no model's."""
    return next((found for route in ROUTES if (found := route.match(path))), None)


def inference_protocol(scope: dict) -> str | None:
    """``"v1"``/``"v2"`` for ``/v1/models/<name>:predict`` and ``/v2/models/<name>[/versions/<v>]/infer``."""
    route = model_route(scope.get("path", "")) if scope["type"] == "http" else None
    if route and (route["rest"] == ":predict" or route["rest"].endswith("/infer")):
        return "v" + route["protocol"]
    return None


class Accounting:
    """ASGI middleware that counts and times every inference request (``inference_protocol``) in ``metrics`` by the
    status it was answered with, and counts it in flight while it runs; an exception that escapes counts as a
    500."""

    def __init__(self, app, *, metrics: PredictorMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        protocol = inference_protocol(scope)
        if protocol is None:
            return await self.app(scope, receive, send)
        status, start = 500, time.perf_counter()  # an exception that escapes is a server error

        async def send_and_note(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            with self.metrics.in_flight(protocol):
                await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.request(protocol, status, time.perf_counter() - start)


class Guard:
    """In front of KServe's routes, before any work: 403 for a route the predictor does not serve
    (``serving.routes``), 404 for an unknown model name or a version other than the one served (a versioned v2
    path of the served version goes on as the unversioned path: KServe answers those with a 501), 401 for feedback
    without the feedback token (before its body is read), 413 for a body over the budget's bytes, 400 for malformed
    JSON, a v2 body that is no JSON object, a v2 binary body that does not fit its header, a v2 input of a datatype
    the model does not take, or a request that declares more than the budget (``serving.budget``), each logged as one
    line; a JSON body sent without a JSON content type (``curl -d``) passes as
    JSON; a POST to a model's metadata or readiness goes on unread, for its 405. It notes the client
    (``serving.clients``: the peer; for inference and feedback, the one ``clients`` names),
    and answers an exception that escapes the app with a 500 that names no internals (KServe's own handler would
    answer with the exception's type and message), logging its traceback instead. ``models`` maps each model's name
    to the version it serves; ``token`` is the feedback token (``None``: the feedback route checks it alone)."""

    def __init__(self, app, *, models: dict[str, str], budget: Budget, router: Router | None = None,
                 served: frozenset[str] = routes.SERVED, clients: ClientIdentity | None = None,
                 token: FeedbackToken | None = None):
        self.app, self.models, self.budget, self.router, self.served = app, models, budget, router, served
        self.clients, self.token = clients or ClientIdentity(), token

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        CLIENT.set(peer(scope))
        started = False

        async def send_noting(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.guard(scope, receive, send_noting)
        except Exception:
            if started:
                raise
            log.exception("%s %s -> 500", scope["method"], scope["path"])
            await reply(send, 500, INTERNAL)

    async def guard(self, scope: dict, receive: Receive, send: Send) -> None:
        """The checks of the class docstring, in order; a refusal is answered here, else KServe's app gets the
        request with the checked body replayed (``prepared``, ``replay``)."""
        found = routes.template(self.router.routes, scope) if self.router is not None else None
        if found is not None and found not in self.served:
            message = routes.refusal(found, scope)
            log.warning("%s %s -> 403: %s", scope["method"], scope["path"], message)
            return await reply(send, 403, message)
        route = model_route(scope.get("path", ""))
        if route is None:
            return await self.app(scope, receive, send)
        try:
            scope, route = self.admitted(scope, route, found)
        except BadRequest as exc:
            log.info("%s %s -> %d: %s", scope["method"], scope["path"], exc.status, exc.reason)
            return await reply(send, exc.status, exc.reason, exc.headers)
        what = kind(route)
        if scope["method"] != "POST" or what == "other":  # a POST to metadata or readiness: its 405 unread
            return await self.app(scope, receive, send)
        # Inference and feedback only: probes and scrapes come without the proxies' header and are no one's traffic.
        CLIENT.set(self.clients.of(scope))
        body, size = await read_body(scope, receive, self.budget.body_bytes)
        try:
            if body is None:
                raise BadRequest(f"expected a request body of at most {self.budget.body_bytes} bytes, found {size}",
                                 413)
            body, scope = prepared(body, scope, kind=what, budget=self.budget)
        except BadRequest as exc:  # a client error: one line in the log, as serving.server.bad_request logs
            log.info("%s %s -> %d: %s", scope["method"], scope["path"], exc.status, exc.reason)
            return await reply(send, exc.status, exc.reason, exc.headers)
        await self.app(scope, replay(body, receive), send)

    def admitted(self, scope: dict, route: re.Match, found: str | None) -> tuple[dict, re.Match]:
        """The request to a model's path, checked before its body is read: a known model (404), POST for v1
        inference (405), the version it serves on a versioned path, then the path without it (``unversioned``), and
        the feedback token (401)."""
        if route["name"] not in self.models:
            raise BadRequest(f"Unknown model '{route['name']}'. Valid: {', '.join(sorted(self.models))}", 404)
        if route["rest"] == ":predict" and scope["method"] != "POST":  # KServe read '<name>:predict' as a name: 404
            raise BadRequest(f"{scope['path']}: expected POST, found {scope['method']}", 405, {"Allow": "POST"})
        if found in routes.VERSIONED:
            scope = unversioned(scope, route, self.models[route["name"]])
            route = model_route(scope["path"])
        if self.token is not None and scope["method"] == "POST" and kind(route) == "feedback":
            self.token.check(Headers(scope=scope).get("authorization"))
        return scope, route


def unversioned(scope: dict, route: re.Match, version: str) -> dict:
    """The scope of ``/v2/models/<name>/versions/<v>[/ready|/infer]`` at the path without ``/versions/<v>`` when
    ``<v>`` is the ``version`` the model serves; else a 404."""
    given, _, rest = route["rest"].removeprefix("/versions/").partition("/")
    if given != version:
        raise BadRequest(routes.version_refusal(route["name"], version, given), 404)
    path = f"/v2/models/{route['name']}" + (f"/{rest}" if rest else "")
    return {**scope, "path": path, "raw_path": path.encode()}


def kind(route: re.Match) -> str:
    """What a POST to a model's path is: ``v2`` inference, ``v1`` inference, ``feedback``, or ``other``."""
    if route["protocol"] == "2" and route["rest"].endswith("/infer"):
        return "v2"
    if route["rest"] == ":predict":
        return "v1"
    return "feedback" if route["rest"] == "/feedback" else "other"


async def read_body(scope: dict, receive: Receive, limit: int) -> tuple[bytes | None, str]:
    """The whole body, or ``None`` and the size found once it is known to exceed ``limit``."""
    declared = dict(scope["headers"]).get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None, f"{int(declared)} bytes"
    chunks, size = [], 0
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None, f"more than {limit} bytes"
        if not message.get("more_body"):
            return b"".join(chunks), f"{size} bytes"


def prepared(body: bytes, scope: dict, *, kind: str, budget: Budget) -> tuple[bytes, dict]:
    """The body checked against the budget, and the scope's headers to match: binary tensors unpacked
    (``serving.binary``; v2 inference only), or the JSON parsed and labelled as JSON."""
    headers = dict(scope["headers"])
    if kind == "v2" and BINARY_HEADER in headers:
        body, json_length = unpack(body, headers[BINARY_HEADER], budget)
        headers[BINARY_HEADER] = str(json_length).encode()
    else:
        parsed = parse_json(body)
        if kind == "v2" and not isinstance(parsed, dict):  # KServe would read a JSON string as binary data
            raise BadRequest('expected an Open Inference Protocol v2 body {"inputs": [{"name", "shape", "datatype", '
                             f'"data"}}]}}, found a JSON {json_type(parsed)}')
        if kind == "v2":
            check_v2(parsed, budget)
        elif kind in ("v1", "feedback"):
            check_v1(parsed, budget)
        if b"json" not in headers.get(b"content-type", b""):
            headers[b"content-type"] = b"application/json"
    headers[b"content-length"] = str(len(body)).encode()
    return body, {**scope, "headers": list(headers.items())}


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that delivers ``body`` whole as the first message, then hands over to the client's ``receive``
    (for its disconnect)."""
    delivered = False

    async def receive_again() -> dict:
        nonlocal delivered
        if delivered:
            return await receive()  # after the body: the client's disconnect
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


async def reply(send: Send, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    """Answer ``status`` with the JSON body ``{"error": message}`` (and ``headers``)."""
    body = orjson.dumps({"error": message})
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})
