"""The accounting middleware on its own: every inference request is counted with its outcome, crashes included."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from serving.drift import DriftWindow
from serving.metrics import PredictorMetrics
from serving.middleware import Accounting, inference_protocol, read_body


def answer(status: int | None):
    async def app(scope, receive, send):
        if status is None:
            raise RuntimeError("boom")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    return app


async def call(app, path: str) -> None:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)


def test_outcomes_follow_the_status_and_an_escaping_exception_is_a_server_error():
    registry = CollectorRegistry()
    metrics = PredictorMetrics("m", "v1", ("a", "b"), DriftWindow([0.5, 0.5], 4), registry=registry)
    for status, path in [(200, "/v2/models/m/infer"), (400, "/v1/models/m:predict"), (503, "/v2/models/m/infer"),
                         (200, "/v2/models/m/ready")]:
        asyncio.run(call(Accounting(answer(status), metrics=metrics), path))
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(call(Accounting(answer(None), metrics=metrics), "/v2/models/m/versions/3/infer"))

    def count(protocol, outcome):
        return registry.get_sample_value("mlnt_requests_total", {"model": "m", "protocol": protocol,
                                                                 "outcome": outcome})

    assert (count("v2", "ok"), count("v1", "client_error"), count("v2", "server_error")) == (1, 1, 2)
    assert registry.get_sample_value("mlnt_request_duration_seconds_count", {"model": "m", "protocol": "v2"}) == 3
    assert registry.get_sample_value("mlnt_model_info", {"model": "m", "version": "v1"}) == 1


def test_only_inference_paths_are_accounted():
    http = {"type": "http"}
    assert inference_protocol({**http, "path": "/v1/models/m:predict"}) == "v1"
    assert inference_protocol({**http, "path": "/v2/models/m/infer"}) == "v2"
    for path in ("/v2/models/m", "/v1/models/m/feedback", "/metrics", "/v2/health/ready"):
        assert inference_protocol({**http, "path": path}) is None


def test_a_body_of_one_byte_over_the_limit_is_refused_whether_declared_or_streamed():
    def receiving(*chunks: bytes):
        messages = iter([{"type": "http.request", "body": c, "more_body": k < len(chunks) - 1}
                         for k, c in enumerate(chunks)])

        async def receive():
            return next(messages)
        return receive

    def read(chunks: tuple[bytes, ...], declared: int | None = None):
        headers = [] if declared is None else [(b"content-length", str(declared).encode())]
        return asyncio.run(read_body({"headers": headers}, receiving(*chunks), 10))

    assert read((b"x" * 10,), 10) == (b"x" * 10, "10 bytes")  # exactly the limit is read
    assert read((b"x" * 6, b"x" * 4)) == (b"x" * 10, "10 bytes")
    assert read((b"x" * 11,), 11) == (None, "11 bytes")  # refused from its content-length, unread
    assert read((b"x" * 6, b"x" * 5)) == (None, "more than 10 bytes")  # streamed: refused once the sum passes it
