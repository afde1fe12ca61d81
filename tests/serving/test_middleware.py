"""The accounting middleware on its own: every inference request is counted with its outcome, crashes included."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from kserve.errors import InvalidInput
from prometheus_client import CollectorRegistry

from serving import routes
from serving.auth import FeedbackToken
from serving.clients import RateLimiter
from serving.drift import DriftWindow
from serving.feedback import install_feedback
from serving.inputs import BadRequest
from serving.metrics import PredictorMetrics
from serving.middleware import Accounting, inference_protocol, model_route, read_body
from serving.server import bad_request
from tests.serving.conftest import LIMITS, VERSION, write_release
from tests.serving.inprocess import NAME, InProcess


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


ODD_NAMES = (":x", f"{NAME}:x", ":predict", f"{NAME}:predict", "a:b:c", "x:")


def test_the_guard_reads_a_model_name_as_the_route_that_answers_reads_it(tmp_path):
    """Starlette's ``{model_name}`` is any run of characters but '/', colons too: for every model path the predictor
    serves, the name (and so the path's kind) the guard and accounting read is the one the route hands its handler."""
    app = InProcess(write_release(tmp_path / VERSION)[0]).app
    served = {r.path: r.path_regex for r in routes.effective(app.router.routes)
              if getattr(r, "path", None) in routes.SERVED and "{model_name}" in r.path}
    assert set(served) == {t for t in routes.SERVED if "{model_name}" in t}
    for template, regex in served.items():
        for name in ODD_NAMES:
            path = template.replace("{model_name}", name).replace("{model_version}", "v1")
            if template == "/v1/models/{model_name}" and path.endswith(":predict"):
                continue  # read as v1 inference, whose route takes POST: a GET is 405 before any handler
            route = model_route(path)
            assert route is not None and route["name"] == regex.match(path)["model_name"], path


@pytest.mark.parametrize("path", ["/v2/models/:x/infer", "/v1/models/:x/feedback", "/v2/models/:x/feedback",
                                  f"/v1/models/{NAME}:x/feedback", f"/v2/models/{NAME}:x/infer"])
def test_a_model_name_with_a_colon_is_an_unknown_model_refused_before_its_body_is_read(tmp_path, path):
    predictor = InProcess(write_release(tmp_path / VERSION)[0])
    body = json.dumps({"predicted": "ant", "label": "bee", "pad": "x" * (LIMITS["max_body_bytes"] * 3)})
    answer = predictor.request("POST", path, content=body, headers={"content-type": "application/json"})
    name = path.split("/")[3]
    assert (answer.status_code, answer.json()) == (404, {"error": f"Unknown model '{name}'. Valid: {NAME}"})
    assert predictor.sample("mlnt_feedback_total") == 0
    if path.endswith("/infer"):  # counted, as every request naming an unknown model is
        assert predictor.sample("mlnt_requests_total", protocol="v2", outcome="client_error") == 1


def test_the_feedback_route_refuses_a_model_it_does_not_serve_on_its_own(tmp_path):
    """Behind the guard or not: feedback for a name that is not the model's counts nothing."""
    predictor = InProcess(write_release(tmp_path / VERSION)[0])
    model, app = predictor.model, FastAPI()
    install_feedback(app, model, model.metrics, token=FeedbackToken(), limiter=RateLimiter(1.0, 256))
    app.add_exception_handler(BadRequest, bad_request)

    async def post(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://predictor") as client:
            return await client.post(path, json={"predicted": "ant", "label": "bee"})

    answer = asyncio.run(post("/v1/models/:x/feedback"))
    assert (answer.status_code, answer.json()) == (404, {"error": f"Unknown model ':x'. Valid: {NAME}"})
    assert asyncio.run(post(f"/v2/models/{NAME}/feedback")).status_code == 200
    assert predictor.sample("mlnt_feedback_total") == 1
