"""The accounting middleware on its own: every inference request is counted with its outcome, crashes included."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kserve.errors import InvalidInput
from prometheus_client import CollectorRegistry

from serving.drift import DriftWindow
from serving.metrics import PredictorMetrics
from serving.middleware import Accounting, inference_protocol, read_body
from tests.serving.conftest import VERSION, write_release
from tests.serving.inprocess import InProcess


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

    def timed(protocol, outcome):
        return registry.get_sample_value("mlnt_request_duration_seconds_count", {"model": "m", "protocol": protocol,
                                                                                 "outcome": outcome})

    assert (timed("v2", "ok"), timed("v1", "client_error"), timed("v2", "server_error")) == (1, 1, 2)
    assert registry.get_sample_value("mlnt_model_info", {"model": "m", "version": "v1"}) == 1


def test_a_request_is_in_flight_while_it_runs_and_not_after_it_ends_or_fails():
    registry = CollectorRegistry()
    metrics = PredictorMetrics("m", "v1", ("a", "b"), DriftWindow([0.5, 0.5], 4), registry=registry)

    def in_flight(protocol="v2"):
        return registry.get_sample_value("mlnt_requests_in_flight", {"model": "m", "protocol": protocol})

    async def two_at_once():
        release, seen = asyncio.Event(), []

        async def slow(scope, receive, send):
            seen.append(in_flight())
            await release.wait()
            await answer(200)(scope, receive, send)

        calls = [asyncio.create_task(call(Accounting(slow, metrics=metrics), "/v2/models/m/infer")) for _ in "ab"]
        while len(seen) < 2:
            await asyncio.sleep(0)
        during = in_flight()
        release.set()
        await asyncio.gather(*calls)
        return seen, during

    assert asyncio.run(two_at_once()) == ([1, 2], 2)
    assert (in_flight(), in_flight("v1"), in_flight("grpc-v2")) == (0, 0, 0)
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(call(Accounting(answer(None), metrics=metrics), "/v2/models/m/infer"))
    assert in_flight() == 0
    asyncio.run(call(Accounting(answer(200), metrics=metrics), "/v2/models/m"))  # metadata: not inference
    assert in_flight() == 0


def test_a_grpc_call_is_in_flight_while_the_data_plane_answers_it_and_timed_by_outcome(tmp_path):
    served = InProcess(write_release(tmp_path / VERSION)[0])
    plane, seen = served.dataplane, []
    answer_for = type(plane).infer

    async def watched(model_name, request, headers):
        seen.append(served.sample("mlnt_requests_in_flight", protocol="grpc-v2"))
        return await answer_for(plane, model_name, request, headers)

    plane.infer = watched
    x = np.zeros((1, 1, 8, 8), np.float32)
    served.grpc_infer(x)
    with pytest.raises(InvalidInput):
        served.grpc_infer(x, shape=[1, 1, 8, 9])  # not the model's image size: a client error
    assert seen == [1, 1] and served.sample("mlnt_requests_in_flight", protocol="grpc-v2") == 0
    assert [served.sample("mlnt_request_duration_seconds_count", protocol="grpc-v2", outcome=outcome)
            for outcome in ("ok", "client_error", "server_error")] == [1, 1, 0]


def test_a_grpc_call_the_client_cancels_is_a_client_error_and_stays_cancelled(tmp_path):
    """gRPC cancels the handler of a call its client cancels or whose deadline passes: a CancelledError at whatever
    it awaits. The client went away (nginx's 499), so it counts as a client error, never a server error (which
    MlntPredictorHighErrorRate reads), and the cancellation goes on to gRPC."""
    served = InProcess(write_release(tmp_path / VERSION)[0])

    async def cancelled_while_the_model_runs():
        started, never = asyncio.Event(), asyncio.Event()

        async def blocked(model_name, request, headers):
            started.set()
            await never.wait()

        served.dataplane.infer = blocked
        call = asyncio.create_task(served.agrpc_infer(np.zeros((1, 1, 8, 8), np.float32)))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(cancelled_while_the_model_runs())
    assert [served.sample("mlnt_requests_total", protocol="grpc-v2", outcome=outcome)
            for outcome in ("ok", "client_error", "server_error")] == [0, 1, 0]
    assert served.sample("mlnt_request_duration_seconds_count", protocol="grpc-v2", outcome="client_error") == 1
    assert served.sample("mlnt_requests_in_flight", protocol="grpc-v2") == 0


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
