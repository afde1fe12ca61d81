"""A hostile client against the predictor: one test per attack class of ``attacks.py`` (each with generated
variants, not only the inputs that first showed the hole). Most run in-process on KServe's own routes
(``tests.serving.inprocess``); the probe timing and the log lines need a real ``python -m serving`` on loopback,
started once with the predictor's default limits."""

from __future__ import annotations

import base64
import io
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from fastapi import APIRouter
from PIL import Image
from starlette.routing import Mount, Route

import serving.feedback
import serving.inputs
import serving.server
from serving import routes
from serving.__main__ import get_args_parser, problem
from serving.auth import FeedbackToken
from serving.clients import ClientIdentity, RateLimiter
from serving.model import Classifier
from serving.server import Protection
from tests.reliability import fuzz
from tests.serving.conftest import LIMITS, VERSION, predictor, write_release
from tests.serving.inprocess import NAME, InProcess

ROOT = Path(__file__).resolve().parents[2]
V1, V2, FEEDBACK = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer", f"/v1/models/{NAME}/feedback"
X = {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
INTERNALS = re.compile(r"Traceback|File \"|\b[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b|\bline \d+, in\b")
FORGED = "2026-01-01 00:00:00.000 1 kserve INFO [x.py:f():1] FORGED"
SECRET = "feedback-" + "t0k3n" * 4


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return write_release(tmp_path_factory.mktemp("attacks") / VERSION)[0]


@pytest.fixture(scope="module")
def inprocess(release) -> InProcess:
    return InProcess(release, max_decode_pixels=LIMITS["max_decode_pixels"])


@pytest.fixture(scope="module")
def loopback(release, tmp_path_factory):
    """``python -m serving`` with the predictor's own defaults (256 images, 16 MiB, 4 x 4096 x 4096 pixels), no
    feedback token; its URL and its log file."""
    log = tmp_path_factory.mktemp("logs") / "predictor.log"
    with predictor(release, log) as url:
        yield url, log


def good(answer: httpx.Response) -> bool:
    return answer.status_code == 200 and "outputs" in answer.json()


def no_internals(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:300])
    body = answer.json()
    assert set(body) == {"error"}, body  # every client error in the one shape (docs/serving.md, Errors)
    assert not INTERNALS.search(answer.text), answer.text[:300]


# Management endpoints ---------------------------------------------------------------------------------------------
def test_management_routes_are_refused_and_the_model_stays(inprocess):
    rng = random.Random(1)
    for _ in range(40):
        request = fuzz._management(rng)
        if request.path.startswith("/v2/repository/"):
            answer = inprocess.request(request.method, request.path, content=request.body)
            assert answer.status_code == 403 and "--enable-model-repository" in answer.json()["error"], request
    for action in ("load", "unload"):
        for name in (NAME, "other", "x%0Ay", "x%20y", "%E2%80%A8"):
            answer = inprocess.request("POST", f"/v2/repository/models/{name}/{action}")
            assert answer.status_code == 403, (action, name, answer.text)
    assert inprocess.request("GET", "/v2/health/ready").json() == {"ready": True}
    assert inprocess.request("GET", f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert good(inprocess.request("POST", V2, json=X))
    assert inprocess.request("GET", "/v2").json()["extensions"] == []


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: NAME if m[1] == "model_name" else "1", template)


def test_every_route_of_the_app_is_served_or_refused(release):
    predictor_ = InProcess(release)
    listed = [(route.path, method) for route in routes.effective(predictor_.app.router.routes)
              for method in sorted((getattr(route, "methods", None) or {"GET"}) - {"HEAD"})]
    templates = {template for template, _ in listed}
    assert templates >= routes.REPOSITORY and templates >= routes.SERVED  # KServe 0.21's, and none stale
    for template, method in listed:
        answer = predictor_.request(method, concrete(template), json=X if method == "POST" else None)
        assert (answer.status_code != 403) == (template in routes.SERVED), (method, template, answer.text)
    # What a later KServe might add: an included router, a plain route, a mount.
    added = APIRouter(prefix="/v2")
    added.add_api_route("/repository/index", lambda: {"models": []}, methods=["POST"])
    added.add_api_route("/models/{model_name}/trace", lambda model_name: {"ok": True}, methods=["GET"])
    predictor_.app.include_router(added)
    predictor_.app.router.routes.append(Route("/admin/reload", lambda request: None, methods=["POST"]))
    predictor_.app.router.routes.append(Mount("/openai", routes=[Route("/v1/completions", lambda r: None)]))
    for method, path in [("POST", "/v2/repository/index"), ("GET", f"/v2/models/{NAME}/trace"),
                         ("POST", "/admin/reload"), ("GET", "/openai/v1/completions")]:
        answer = predictor_.request(method, path)
        assert answer.status_code == 403 and "that this predictor does not serve" in answer.json()["error"], path
    assert good(predictor_.request("POST", V2, json=X))


# Cost -------------------------------------------------------------------------------------------------------------
def png(width: int, height: int, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def over_budget(rng: random.Random) -> tuple[str, dict]:
    """One request over the tiny release's budget (16 images, 1024 values, 4096 x 4096 pixels, 64 KiB)."""
    kind = rng.choice(["pixels", "empty elements", "astronomical", "bytes data", "v1 values", "fp32 data"])
    if kind == "pixels":
        request = fuzz._pixel_bombs(rng)
    elif kind == "empty elements":
        request = fuzz._empty_elements(rng)
        if b'"shape": [0]' in request.body:  # declares nothing: refused for the batch size, also before decoding
            return kind, {"path": request.path, "content": request.body, "headers": request.headers}
    elif kind == "astronomical":
        request = fuzz._astronomical_shapes(rng)
    else:
        body = {"bytes data": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                           "data": [""] * rng.randint(17, 10_000)}]},
                "v1 values": {"instances": [[[[0.0] * rng.randint(129, 2000)] * 8]]},
                "fp32 data": {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                          "data": [0.0] * rng.randint(1025, 8000)}]}}[kind]
        return kind, {"path": V1 if "instances" in body else V2, "json": body}
    return kind, {"path": request.path, "content": request.body, "headers": request.headers}


def test_requests_over_the_budget_are_refused_before_any_work(inprocess, monkeypatch):
    decoded, preprocessed = [], []
    real_decode, real_preprocess = serving.inputs.decode_image, Classifier.preprocess

    def decode_image(*args):
        decoded.append(args[2])
        return real_decode(*args)

    async def preprocess(self, payload, headers=None):
        preprocessed.append(type(payload).__name__)
        return await real_preprocess(self, payload, headers)

    monkeypatch.setattr(serving.inputs, "decode_image", decode_image)
    monkeypatch.setattr(Classifier, "preprocess", preprocess)
    rng, kinds = random.Random(20), set()
    for _ in range(60):
        kind, request = over_budget(rng)
        kinds.add(kind)
        answer = inprocess.request("POST", request.pop("path"), **request)
        no_internals(answer)
        assert answer.status_code == 400, (kind, answer.text)
        if kind != "pixels":  # refused by the guard, before KServe parsed the body
            assert not preprocessed, (kind, answer.text)
        assert not decoded, (kind, answer.text)  # no image decoded, whatever was refused
        preprocessed.clear()
    assert len(kinds) == 6
    blobs = [png(4096, 2048)] * 2  # exactly the budget: decoded
    answer = inprocess.request("POST", V2, json={"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                                             "data": [base64.b64encode(b).decode() for b in blobs]}]})
    assert good(answer) and len(decoded) == 2


def test_feedback_instances_over_the_budget_are_refused_before_the_route_reads_them(inprocess, monkeypatch):
    """The instances form of feedback is within the same request budget as inference, checked by the guard."""
    seen = []
    real_claim = serving.feedback.claim
    monkeypatch.setattr(serving.feedback, "claim", lambda body, model: seen.append(1) or real_claim(body, model))
    wide = {"instances": [[[[0.0] * 2000] * 8]], "labels": ["ant"]}  # one instance of 16,000 values: over 1024
    answer = inprocess.request("POST", FEEDBACK, json=wide)
    no_internals(answer)
    assert answer.json() == {"error": "expected at most 1024 values in one request's instances, found more"}
    assert not seen


def probe_timeout() -> float:
    """The probes' timeoutSeconds in the ServingRuntime (Kubernetes' default, 1 s, where it is not set)."""
    runtime = yaml.safe_load((ROOT / "k8s/base/serving/servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    return min(float(container[probe].get("timeoutSeconds", 1)) for probe in ("livenessProbe", "readinessProbe"))


def worst_allowed_requests() -> list[dict]:
    """The most pixels a request may have decoded (4 x 4096 x 4096 by default), in the two shapes that cost most:
    four RGB images of the largest size, and the most images (256) that fit the same pixels."""
    big = base64.b64encode(png(4096, 4096, "RGB")).decode()
    many = base64.b64encode(png(512, 512)).decode()
    return [{"path": V2, "json": {"inputs": [{"name": "image", "shape": [4], "datatype": "BYTES",
                                              "data": [big] * 4}]}},
            {"path": V1, "json": {"instances": [{"image": {"b64": big}}] * 4}},
            {"path": V2, "json": {"inputs": [{"name": "image", "shape": [256], "datatype": "BYTES",
                                              "data": [many] * 256}]}}]


def test_health_answers_within_the_probe_timeout_during_the_worst_allowed_requests(loopback):
    url, _ = loopback
    timeout, requests = probe_timeout(), worst_allowed_requests() * 2
    latencies, done = [], threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=timeout) as client:
            while not done.is_set():
                for path in ("/v2/health/live", "/v2/health/ready"):
                    start = time.perf_counter()
                    answer = client.get(url + path)  # a timeout raises: the probe would have failed
                    latencies.append(time.perf_counter() - start)
                    assert answer.status_code == 200
                time.sleep(0.05)

    def send(request: dict) -> int:
        with httpx.Client(timeout=120) as client:
            return client.post(url + request["path"], json=request["json"]).status_code

    with ThreadPoolExecutor(1 + len(requests)) as pool:
        prober = pool.submit(probe)
        time.sleep(0.2)
        start = time.perf_counter()
        statuses = list(pool.map(send, requests))
        busy = time.perf_counter() - start
        done.set()
        prober.result()
    assert statuses == [200] * len(requests)
    assert len(latencies) >= 4, f"too few probes ({len(latencies)}) in {busy:.2f} s of requests"
    assert max(latencies) < timeout, f"slowest probe {max(latencies):.3f} s, over the probes' {timeout} s"


# Malformed requests -----------------------------------------------------------------------------------------------
MALFORMED = [fuzz._astronomical_shapes, fuzz._wrong_json_types, fuzz._non_ascii_length, fuzz._bad_feedback,
             fuzz._huge_dims, fuzz._negative_dims, fuzz._bad_binary]


@pytest.mark.parametrize("mutation", MALFORMED, ids=lambda m: m.__name__.strip("_"))
def test_malformed_requests_get_a_4xx_without_internals(inprocess, mutation):
    rng = random.Random(mutation.__name__)
    for _ in range(30):
        request = mutation(rng)
        no_internals(inprocess.request(request.method, request.path, content=request.body, headers=request.headers))
    assert good(inprocess.request("POST", V2, json=X))


def test_an_unforeseen_failure_is_a_500_without_internals(release, caplog):
    broken = InProcess(release)

    def fail(images):
        raise RuntimeError("secret internals at /srv/model.onnx")

    broken.model.probabilities = fail
    answer = broken.request("POST", V2, json=X)
    assert answer.status_code == 500 and set(answer.json()) == {"error"}
    assert "secret" not in answer.text and not INTERNALS.search(answer.text)
    assert broken.sample("mlnt_requests_total", protocol="v2", outcome="server_error") == 1
    assert "RuntimeError: secret internals" in caplog.text and "Traceback" in caplog.text
    assert broken.request("GET", "/v2/health/live").status_code == 200


# Feedback ---------------------------------------------------------------------------------------------------------
def counters(predictor_: InProcess) -> tuple[float, float]:
    return (predictor_.sample("mlnt_feedback_total"), predictor_.sample("mlnt_feedback_disagreements_total"))


def test_feedback_requires_the_token_when_there_is_one(release, loopback):
    guarded = InProcess(release, protection=Protection(LIMITS["max_body_bytes"], token=FeedbackToken(token=SECRET)))
    body = {"feedback": [{"predicted": "ant", "label": "bee"}] * 3}
    for headers in ({}, {"authorization": "Basic eDp5"}, {"authorization": "Bearer " + SECRET[::-1]},
                    {"authorization": "Bearer"}, {"authorization": SECRET}):
        answer = guarded.request("POST", FEEDBACK, json=body, headers=headers)
        assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer"), answer.text
        assert SECRET not in answer.text
    assert counters(guarded) == (0, 0)
    answer = guarded.request("POST", FEEDBACK, json=body, headers={"authorization": f"Bearer {SECRET}"})
    assert answer.json()["received"] == 3 and counters(guarded) == (3, 3)
    # Without a token (the loopback predictor): open, and said loudly at start.
    assert "WARNING" in (warning := next(line for line in loopback[1].read_text().splitlines()
                                         if "FEEDBACK IS NOT AUTHENTICATED" in line))
    assert "serving.server" in warning
    # The runtime asks for the token from the Secret, which may be absent (a dev cluster): mounted read-only.
    runtime = yaml.safe_load((ROOT / "k8s/base/serving/servingruntime.yaml").read_text())
    container = runtime["spec"]["containers"][0]
    path = container["args"][container["args"].index("--feedback-token-file") + 1]
    mount = next(m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in runtime["spec"]["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True and volume["secret"]["optional"] is True
    assert volume["secret"]["secretName"] == "mlnt-feedback-token" and path.endswith("/token")


def test_feedback_is_rate_limited_per_client(release):
    limited = InProcess(release, protection=Protection(LIMITS["max_body_bytes"], feedback_rate=0.01,
                                                       feedback_burst=10))
    body = {"feedback": [{"predicted": 0, "label": 1}] * 4}
    attacker, other = ("10.0.0.66", 4000), ("10.0.0.7", 4000)
    answers = [limited.request("POST", FEEDBACK, json=body, client=attacker) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
    assert int(answers[2].headers["retry-after"]) >= 1 and "labels a second from one client" in answers[2].text
    assert counters(limited) == (8, 8)
    assert limited.request("POST", FEEDBACK, json=body, client=other).status_code == 200
    too_many = limited.request("POST", FEEDBACK, json={"feedback": body["feedback"] * 3}, client=other)
    assert too_many.status_code == 429 and "at most 10 feedback labels in one request" in too_many.text
    assert counters(limited) == (12, 12)


def test_retry_after_is_rounded_up_to_when_the_labels_fit(release, monkeypatch):
    """Retry-After is whole seconds: rounded down, a client that waits as told is refused again."""
    frozen = lambda: 100.0  # noqa: E731 -- no time passes between the two requests
    monkeypatch.setattr(serving.server, "RateLimiter", lambda rate, burst: RateLimiter(rate, burst, clock=frozen))
    limited = InProcess(release, protection=Protection(LIMITS["max_body_bytes"], feedback_rate=0.3,
                                                       feedback_burst=1))
    body = {"predicted": 0, "label": 1}
    assert limited.request("POST", FEEDBACK, json=body).status_code == 200
    refused = limited.request("POST", FEEDBACK, json=body)  # one label in 1 / 0.3 = 3.33 s
    assert refused.status_code == 429 and refused.headers["retry-after"] == "4" and "retry in 4 s" in refused.text


# Drift ------------------------------------------------------------------------------------------------------------
def test_one_client_cannot_pin_the_drift_gauge(release):
    size, share = LIMITS["drift_window"], 0.1
    bound = int(share * size) / size  # 3 slots of 32, each moving the distance by at most 1/32
    rng = np.random.default_rng(3)
    strategies = {
        "one image, again and again": lambda: np.zeros((16, 1, 8, 8), np.float32),
        "many images": lambda: rng.standard_normal((16, 1, 8, 8)).astype(np.float32),
        "one image, slightly changed": lambda: np.zeros((16, 1, 8, 8), np.float32) + rng.random() * 1e-3,
    }
    for name, batch in strategies.items():
        alone = InProcess(release, client_share=share)
        for _ in range(20):
            x = batch()
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                "data": x.ravel().tolist()}]}
            assert good(alone.request("POST", V2, json=body, client=("10.0.0.66", 1)))
        assert 0 < alone.sample("mlnt_prediction_drift") <= bound + 1e-9, name
    crowd = InProcess(release, client_share=share)
    for k in range(16):  # many clients with the same skewed stream: a real shift, reported whole
        x = rng.standard_normal((4, 1, 8, 8)).astype(np.float32) + 3
        crowd.request("POST", V2, json={"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                                    "data": x.ravel().tolist()}]}, client=(f"10.0.1.{k}", 1))
    assert crowd.sample("mlnt_prediction_drift") > bound


# Client identity --------------------------------------------------------------------------------------------------
GATEWAY = ("127.0.0.6", 4000)  # the peer of every request behind the gateway (an Istio sidecar connects from here)


def drift_threshold() -> float:
    """The drift alert's threshold, from the rule the cluster runs."""
    rules = yaml.safe_load((ROOT / "monitoring/rules/mlnt.rules.yml").read_text())
    expr = next(rule["expr"] for group in rules["groups"] for rule in group["rules"]
                if rule.get("alert") == "MlntPredictionDrift")
    return float(re.fullmatch(r".*>\s*([0-9.]+)", expr.strip())[1])


def behind_the_gateway(**options) -> Protection:
    return Protection(LIMITS["max_body_bytes"], clients=ClientIdentity("x-forwarded-for", 1), **options)


def test_clients_behind_the_gateway_are_the_addresses_it_appended(release):
    size, share, threshold = LIMITS["drift_window"], 0.1, drift_threshold()
    bound = int(share * size) / size
    rng = np.random.default_rng(5)

    def shifted(images: int = 4) -> dict:  # a population shift: every user's images now look alike
        x = rng.standard_normal((images, 1, 8, 8)).astype(np.float32) + 3
        return {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}

    # Many users behind the gateway, one peer: the shift is reported past the alert's threshold; without the flag
    # the same traffic is one client and the gauge stays within its share.
    requests = [(shifted(), f"198.51.100.{k}") for k in range(16)]
    crowd, one_peer = InProcess(release, protection=behind_the_gateway(), client_share=share), InProcess(release)
    for body, user in requests:
        for predictor_ in (crowd, one_peer):
            assert good(predictor_.request("POST", V2, json=body, client=GATEWAY, headers={"x-forwarded-for": user}))
    assert crowd.sample("mlnt_prediction_drift") > threshold > bound
    assert one_peer.sample("mlnt_prediction_drift") <= bound + 1e-9

    # One user forging what it may (everything left of what the gateway appends) stays one client.
    real = "192.0.2.66"
    forgeries = {
        "a new address each time": lambda k: [("x-forwarded-for", f"203.0.113.{k}, {real}")],
        "many addresses": lambda k: [("x-forwarded-for", ", ".join(f"203.0.{k}.{j}" for j in range(50)) + f", {real}")],
        "junk": lambda k: [("x-forwarded-for", f"unknown, , [::1]:x, {'9' * k}, {real}")],
        "a header line of its own": lambda k: [("x-forwarded-for", f"203.0.113.{k}"), ("x-forwarded-for", real)],
    }
    for name, forged in forgeries.items():
        alone = InProcess(release, protection=behind_the_gateway(), client_share=share)
        for k in range(16):
            assert good(alone.request("POST", V2, json=shifted(), client=GATEWAY, headers=forged(k)))
        assert 0 < alone.sample("mlnt_prediction_drift") <= bound + 1e-9, name
        assert set(alone.model.metrics.drift.by_client) == {real}, name

    # Feedback is limited per forwarded client, whatever it forges; another user behind the same peer is served.
    limited = InProcess(release, protection=behind_the_gateway(feedback_rate=0.01, feedback_burst=10))
    body = {"feedback": [{"predicted": 0, "label": 1}] * 4}
    answers = [limited.request("POST", FEEDBACK, json=body, client=GATEWAY, headers=forgeries["junk"](k))
               for k in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
    assert limited.request("POST", FEEDBACK, json=body, client=GATEWAY,
                           headers={"x-forwarded-for": f"{real}, 192.0.2.7"}).status_code == 200
    assert counters(limited) == (12, 12)

    # The cluster's runtime sets the flag, and the predictor accepts it.
    runtime = yaml.safe_load((ROOT / "k8s/base/serving/servingruntime.yaml").read_text())
    args = get_args_parser().parse_args(runtime["spec"]["containers"][0]["args"][3:])
    assert problem(args) is None and (args.client_header, args.trusted_proxy_hops) == ("x-forwarded-for", 1)


# Logs -------------------------------------------------------------------------------------------------------------
def test_log_lines_cannot_be_forged(loopback):
    url, log = loopback
    forged = ["\n" + FORGED, "\r\n" + FORGED, "\x1b[2K\r" + FORGED, "\u2028" + FORGED, "\x85" + FORGED]
    with httpx.Client(timeout=30) as client:
        for text in forged:
            encoded = "".join(f"%{b:02X}" for b in text.encode())  # a decoded path holds the raw characters
            client.post(f"{url}/v2/repository/models/x{encoded}/unload")
            client.post(f"{url}/v1/models/{NAME}{encoded}:explain")
            client.post(f"{url}/v2/models/{NAME}/infer", json={"inputs": [
                {"name": "x" + text, "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]})
            client.post(f"{url}/v1/models/{NAME}/feedback", json={"predicted": "ant", "label": text})
            client.post(f"{url}/v1/models/{NAME}:predict", json={"instances": [{"image": {"b64": text}}]})
    time.sleep(0.5)  # the server's process writes its log
    text = log.read_text(errors="replace")
    assert "\\n" + FORGED in text and "\\u2028" + FORGED in text, "the fields never reached the log"
    # str.splitlines breaks at \r, \x85 and \u2028 too: a forged line would start with the forged text.
    assert not [line for line in text.splitlines() if line.startswith(FORGED)]
    assert "\x1b" not in text
