"""ASGI middleware around KServe's routes: ``Guard`` answers the client errors KServe would answer vaguely (or
not at all) before it sees the request; ``Accounting`` counts and times every inference request, bad ones too."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import orjson

from serving.binary import HEADER as BINARY_HEADER
from serving.binary import unpack
from serving.inputs import BadRequest, parse_json
from serving.metrics import PredictorMetrics

ROUTE = re.compile(r"^/v(?P<protocol>[12])/models/(?P<name>[^/:]+)(?P<rest>.*)$")

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def inference_protocol(scope: dict) -> str | None:
    """``"v1"``/``"v2"`` for ``/v1/models/<name>:predict`` and ``/v2/models/<name>[/versions/<v>]/infer``."""
    route = ROUTE.match(scope.get("path", "")) if scope["type"] == "http" else None
    if route and (route["rest"] == ":predict" or route["rest"].endswith("/infer")):
        return "v" + route["protocol"]
    return None


class Accounting:
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
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.request(protocol, status, time.perf_counter() - start)


class Guard:
    """404 for an unknown model name, 413 for a body over ``max_body_bytes``, 400 for malformed JSON or a v2 binary
    body that does not fit its header; a JSON body sent without a JSON content type (``curl -d``) passes as JSON."""

    def __init__(self, app, *, models: set[str], max_body_bytes: int):
        self.app, self.models, self.max_body_bytes = app, models, max_body_bytes

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        route = ROUTE.match(scope.get("path", "")) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        if route["name"] not in self.models:
            return await reply(send, 404, f"Unknown model '{route['name']}'. Valid: {', '.join(sorted(self.models))}")
        if scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body, size = await read_body(scope, receive, self.max_body_bytes)
        if body is None:
            return await reply(send, 413, f"expected a request body of at most {self.max_body_bytes} bytes, "
                                          f"found {size}")
        try:
            body, scope = prepared(body, scope, binary=route["protocol"] == "2" and route["rest"].endswith("/infer"))
        except BadRequest as exc:
            return await reply(send, 400, str(exc))
        await self.app(scope, replay(body, receive), send)


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


def prepared(body: bytes, scope: dict, *, binary: bool) -> tuple[bytes, dict]:
    """The body checked, and the scope's headers to match: binary tensors unpacked (``serving.binary``; v2
    inference only), or the JSON parsed and labelled as JSON."""
    headers = dict(scope["headers"])
    if binary and BINARY_HEADER in headers:
        body, json_length = unpack(body, headers[BINARY_HEADER])
        headers[BINARY_HEADER] = str(json_length).encode()
    else:
        parse_json(body)
        if b"json" not in headers.get(b"content-type", b""):
            headers[b"content-type"] = b"application/json"
    headers[b"content-length"] = str(len(body)).encode()
    return body, {**scope, "headers": list(headers.items())}


def replay(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def receive_again() -> dict:
        nonlocal delivered
        if delivered:
            return await receive()  # after the body: the client's disconnect
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive_again


async def reply(send: Send, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
