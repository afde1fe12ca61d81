"""The predictor over HTTP, as a client sees it: ``python -m serving`` on loopback with a tiny real release."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import struct
import subprocess

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from components.common.splits import normalise
from monitoring import metrics as contract
from tests.serving.conftest import CLASSES, CLIENT_SHARE, CORRUPT_PNGS, LIMITS, MEAN, ROOT, STD, VERSION, logged_since

NAME = "mlnt-classifier"
V1, V2 = f"/v1/models/{NAME}:predict", f"/v2/models/{NAME}/infer"


def v2_tensor(x: np.ndarray, name: str = "images", datatype: str = "FP32") -> dict:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


def v2_images(blobs: list[bytes]) -> dict:
    return {"inputs": [{"name": "image", "shape": [len(blobs)], "datatype": "BYTES",
                        "data": [base64.b64encode(b).decode() for b in blobs]}]}


def v1_images(blobs: list[bytes]) -> dict:
    return {"instances": [{"image": {"b64": base64.b64encode(b).decode()}} for b in blobs]}


def v2_binary(*tensors: tuple[dict, bytes]) -> dict:
    """The v2 binary extension: a JSON header, then each tensor's raw bytes (BYTES elements length-prefixed)."""
    header = json.dumps({"inputs": [meta for meta, _ in tensors]}).encode()
    return {"content": header + b"".join(raw for _, raw in tensors),
            "headers": {"inference-header-content-length": str(len(header)),
                        "content-type": "application/octet-stream"}}


def binary_images(blobs: list[bytes]) -> tuple[dict, bytes]:
    raw = b"".join(struct.pack("<I", len(b)) + b for b in blobs)
    meta = {"name": "image", "shape": [len(blobs)], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
    return meta, raw


def encode(pixels: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def v2_probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    out = {o["name"]: o for o in response.json()["outputs"]}
    return np.asarray(out["probabilities"]["data"], np.float32).reshape(out["probabilities"]["shape"])


def v1_probabilities(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray([p["probabilities"] for p in response.json()["predictions"]], np.float32)


def metric(client, url: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_v2_tensor_matches_onnxruntime(server, release, client):
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    response = client.post(server + V2, json=v2_tensor(x))
    want = ort.InferenceSession(str(release[0] / "model.onnx")).run(None, {"images": x})[0]
    np.testing.assert_allclose(v2_probabilities(response), want, atol=1e-6)
    out = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert out["class_index"] == want.argmax(1).tolist()
    assert out["class"] == [CLASSES[i] for i in want.argmax(1)]


def test_v1_instances_answer_like_v2(server, client):
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    v1 = client.post(server + V1, json={"instances": x.tolist()})
    np.testing.assert_allclose(v1_probabilities(v1), v2_probabilities(client.post(server + V2, json=v2_tensor(x))),
                               atol=1e-6)
    for p in v1.json()["predictions"]:
        assert p["class"] == CLASSES[p["class_index"]] and p["confidence"] == max(p["probabilities"])


def test_raw_images_give_the_preprocessed_tensors_answer(server, client):
    pixels = np.random.default_rng(2).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    blobs = [encode(p) for p in pixels]
    tensor = normalise(pixels[..., None], MEAN, STD).numpy()  # the training pipeline's own preprocessing
    want = v2_probabilities(client.post(server + V2, json=v2_tensor(tensor)))
    np.testing.assert_allclose(v2_probabilities(client.post(server + V2, json=v2_images(blobs))), want, atol=1e-6)
    np.testing.assert_allclose(v1_probabilities(client.post(server + V1, json=v1_images(blobs))), want, atol=1e-6)
    webp = [encode(p, "WEBP", lossless=True) for p in pixels]  # the same pixels (WEBP stores grey as R = G = B)
    np.testing.assert_allclose(v2_probabilities(client.post(server + V2, json=v2_images(webp))), want, atol=1e-6)
    binary = client.post(server + V2, **v2_binary(binary_images(blobs)))
    np.testing.assert_allclose(v2_probabilities(binary), want, atol=1e-6)
    raw_tensor = ({"name": "images", "shape": list(tensor.shape), "datatype": "FP32",
                   "parameters": {"binary_data_size": tensor.nbytes}}, tensor.tobytes())
    np.testing.assert_allclose(v2_probabilities(client.post(server + V2, **v2_binary(raw_tensor))), want, atol=1e-6)


def test_images_of_other_sizes_and_modes_are_converted(server, client):
    rgb = np.random.default_rng(3).integers(0, 256, (20, 12, 3), dtype=np.uint8)
    response = client.post(server + V1, json=v1_images([encode(rgb, "JPEG"), encode(rgb, "PNG"), encode(rgb, "WEBP")]))
    assert v1_probabilities(response).shape == (3, len(CLASSES))


NOT_AN_IMAGE = base64.b64encode(b"hello world").decode()
UNREADABLE = "image 0: expected PNG, JPEG or WEBP bytes, found {} bytes that are not a readable image"
NOT_NUMBERS = "expected numbers in nested lists of equal length, found other values ({})"
FP32 = {"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32"}
WRONG_DATATYPE = "input 'images': expected datatype FP32 (a preprocessed tensor) or BYTES (encoded images), found {}"
# Finite float32 numbers far outside the normalised range: the network overflows on them, to NaN probabilities
EXTREME = np.random.default_rng(0).choice(np.float32([3e38, -3e38]), (1, 1, 8, 8))
OVERFLOW = ("expected inputs the model computes finite probabilities for, found NaN or infinite probabilities for "
            "image(s) [{}] of {}")
BAD = [  # (case, path, request, status, the error names what was expected and what was found)
    ("malformed JSON v2", V2, {"content": b'{"inputs": ['}, 400, "expected a JSON body, found invalid JSON"),
    ("malformed JSON v1", V1, {"content": b"{instances"}, 400, "expected a JSON body, found invalid JSON"),
    ("no inputs v2", V2, {"json": {"instances": []}}, 400, 'expected an Open Inference Protocol v2 body {"inputs"'),
    ("no instances v1", V1, {"json": {"inputs": []}}, 400,
     "expected a JSON object with an 'instances' list, found keys ['inputs']"),
    ("wrong shape v2", V2, {"json": v2_tensor(np.zeros((1, 3, 8, 8)))}, 400,
     "input 'images': expected shape [N, 1, 8, 8], found [1, 3, 8, 8]"),
    ("wrong shape v1", V1, {"json": {"instances": np.zeros((1, 1, 4, 4)).tolist()}}, 400,
     "expected instances of shape [1, 8, 8] (channels, height, width), found [1, 4, 4]"),
    ("too few values v2", V2, {"json": {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                    "data": [0.0] * 10}]}}, 400,
     "expected 64 values for shape [1, 1, 8, 8], found 10"),
    ("wrong dtype v2", V2, {"json": v2_tensor(np.zeros((1, 1, 8, 8), int), datatype="INT32")}, 400,
     "expected datatype FP32 (a preprocessed tensor) or BYTES (encoded images), found INT32"),
    ("wrong dtype v1", V1, {"json": {"instances": [[["a"] * 8] * 8]}}, 400,
     "expected numbers in nested lists of equal length, found other values"),
    ("wrong input name v2", V2, {"json": v2_tensor(np.zeros((1, 1, 8, 8)), name="x")}, 400,
     "expected the FP32 input to be named 'images', found 'x'"),
    ("empty batch v2", V2, {"json": v2_tensor(np.zeros((0, 1, 8, 8)))}, 400, "expected a batch of 1 to 16 images, "
                                                                               "found 0"),
    ("empty batch v1", V1, {"json": {"instances": []}}, 400, "expected a batch of 1 to 16 images, found 0"),
    ("batch too large v1", V1, {"json": {"instances": np.zeros((17, 1, 8, 8)).tolist()}}, 400,
     "expected a batch of 1 to 16 images, found 17"),
    ("oversized payload", V2, {"content": b" " * 100_000}, 413,
     "expected a request body of at most 65536 bytes, found 100000 bytes"),
    ("non-image bytes v2", V2, {"json": {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                                     "data": [NOT_AN_IMAGE]}]}}, 400,
     "image 0: expected PNG, JPEG or WEBP bytes, found 11 bytes that are not a readable image"),
    ("non-image bytes v1", V1, {"json": {"instances": [{"image": {"b64": NOT_AN_IMAGE}}]}}, 400,
     "expected PNG, JPEG or WEBP bytes, found 11 bytes"),
    ("not base64 v1", V1, {"json": {"instances": [{"image": {"b64": "***"}}]}}, 400,
     "instance 0: expected base64 text of a PNG, JPEG or WEBP image, found str that is not base64"),
    ("binary data cut short v2", V2, v2_binary(({"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32",
                                                    "parameters": {"binary_data_size": 256}}, b"\0" * 10)), 400,
     "input 'images': expected binary_data_size to be at most the 10 bytes left after the JSON header, found 256"),
    ("binary non-image v2", V2, v2_binary(binary_images([b"hello world"])), 400,
     "expected PNG, JPEG or WEBP bytes, found 11 bytes"),
    *[(f"{case} v2", V2, {"json": v2_images([blob])}, 400, UNREADABLE.format(len(blob)))
      for case, blob in CORRUPT_PNGS.items()],
    *[(f"{case} v1", V1, {"json": v1_images([blob])}, 400, UNREADABLE.format(len(blob)))
      for case, blob in CORRUPT_PNGS.items()],
    ("numeric strings as FP32 data v2", V2, {"json": {"inputs": [{**FP32, "data": ["0.5"] * 64}]}}, 400,
     "input 'images': " + NOT_NUMBERS.format("strings")),
    ("booleans as FP32 data v2", V2, {"json": {"inputs": [{**FP32, "data": [True] * 64}]}}, 400,
     "input 'images': " + NOT_NUMBERS.format("booleans")),
    ("numeric strings as instances v1", V1, {"json": {"instances": [[[["0.5"] * 8] * 8]]}}, 400,
     "instances: " + NOT_NUMBERS.format("strings")),
    ("a JSON string as the body v2", V2, {"json": "x"}, 400,
     'expected an Open Inference Protocol v2 body {"inputs": [{"name", "shape", "datatype", "data"}]}, found a JSON '
     "string"),
    ("a JSON string as the body v1", V1, {"json": "x"}, 400,
     "expected a JSON object with an 'instances' list, found a JSON string"),
    ("a JSON-encoded body inside a JSON string v1", V1, {"json": json.dumps({"instances": [[[[0.0] * 8] * 8]]})},
     400, "expected a JSON object with an 'instances' list, found a JSON string"),
    ("null as the body v1", V1, {"content": b"null"}, 400,
     "expected a JSON object with an 'instances' list, found a JSON null"),
    ("an output the model does not have v2", V2, {"json": {**v2_tensor(np.zeros((1, 1, 8, 8))),
                                                         "outputs": [{"name": "class"}, {"name": "nope"}]}}, 400,
     "expected requested outputs among ['probabilities', 'class', 'class_index'], found ['nope']"),
    ("'instances' as a JSON string v1", V1, {"json": {"instances": "x"}}, 400,
     "expected a JSON object with an 'instances' list, found 'instances' as a JSON string"),
    ("'instances' as a JSON null v1", V1, {"json": {"instances": None}}, 400,
     "expected a JSON object with an 'instances' list, found 'instances' as a JSON null"),
    *[(f"{datatype} as JSON v2", V2, {"json": {"inputs": [{**FP32, "datatype": datatype, "data": [0.0] * 64}]}}, 400,
       WRONG_DATATYPE.format(datatype)) for datatype in ("FP16", "fp16", "BF16")],  # FP16: KServe's own 400 before
    ("FP16 as JSON in a binary header v2", V2, v2_binary(({**FP32, "datatype": "FP16", "data": [0.0] * 64}, b"")), 400,
     WRONG_DATATYPE.format("FP16")),
    ("FP16 as binary data v2", V2, v2_binary(({**FP32, "datatype": "FP16", "parameters": {"binary_data_size": 128}},
                                              b"\0" * 128)), 400, WRONG_DATATYPE.format("FP16")),
    ("finite numbers the network overflows on v2", V2, {"json": v2_tensor(EXTREME)}, 400, OVERFLOW.format(0, 1)),
    ("finite numbers the network overflows on v1", V1, {"json": {"instances": EXTREME.tolist()}}, 400,
     OVERFLOW.format(0, 1)),
    ("unknown model v2", "/v2/models/nope/infer", {"json": {}}, 404, f"Unknown model 'nope'. Valid: {NAME}"),
    ("unknown model v1", "/v1/models/nope:predict", {"json": {}}, 404, f"Unknown model 'nope'. Valid: {NAME}"),
]


@pytest.mark.parametrize(("path", "request_", "status", "message"), [case[1:] for case in BAD],
                         ids=[case[0] for case in BAD])
def test_bad_requests_get_a_4xx_that_says_why_and_are_counted(server, server_log, client, path, request_, status,
                                                              message):
    """... and are logged as one line that says why, with no traceback and nothing at ERROR."""
    protocol = path[1:3]
    counted = {"model": NAME, "protocol": protocol, "outcome": "client_error"}
    before = metric(client, server, "mlnt_requests_total", **counted)
    logged = server_log.stat().st_size
    response = client.post(server + path, **request_)
    assert response.status_code == status and message in response.json()["error"], response.text
    assert metric(client, server, "mlnt_requests_total", **counted) == before + 1
    lines = logged_since(server_log, logged)
    assert any(message in line and f"-> {status}: " in line for line in lines), lines
    assert not any("Traceback" in line or " ERROR " in line for line in lines), lines
    x = np.zeros((1, 1, 8, 8), np.float32)
    assert v2_probabilities(client.post(server + V2, json=v2_tensor(x))).shape == (1, len(CLASSES))


def test_a_body_is_limited_to_max_body_bytes_however_it_is_sent_and_curl_d_is_json(server, client):
    """A body of exactly --max-body-bytes is answered; one streamed in chunks without a content-length, each under
    the limit, is refused once their sum passes it; a JSON body sent with curl -d's form content type (or as text)
    is read as JSON, v2 as v1."""
    limit = LIMITS["max_body_bytes"]
    body = json.dumps(v2_tensor(np.zeros((1, 1, 8, 8), np.float32))).encode()
    exact = client.post(server + V2, content=body + b" " * (limit - len(body)),
                        headers={"content-type": "application/json"})
    assert exact.status_code == 200, exact.text

    def chunks():
        for _ in range(3):
            yield b" " * (limit * 2 // 3)

    streamed = client.post(server + V2, content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json() == {"error": f"expected a request body of at most {limit} bytes, found more than {limit} "
                                        "bytes"}
    v1 = json.dumps({"instances": np.zeros((1, 1, 8, 8)).tolist()})
    for path, content in ((V2, body), (V1, v1)):
        for kind in ("application/x-www-form-urlencoded", "text/plain"):
            answer = client.post(server + path, content=content, headers={"content-type": kind})
            assert answer.status_code == 200, (path, kind, answer.text)


def test_a_v2_answer_echoes_the_requests_id(server, client):
    body = v2_tensor(np.zeros((1, 1, 8, 8), np.float32))
    assert client.post(server + V2, json={**body, "id": "req-42"}).json()["id"] == "req-42"
    assert client.post(server + V2, json=body).json()["id"]  # none given: a new one


def test_every_image_of_a_batch_is_counted_as_a_prediction(server, client):
    """``mlnt_predictions_total`` counts images, not requests, and ``mlnt_batch_size`` observes the images a request
    holds (two images of one class add two, not one)."""
    def counted():
        return (sum(metric(client, server, "mlnt_predictions_total", model=NAME, **{"class": c}) for c in CLASSES),
                metric(client, server, "mlnt_batch_size_sum", model=NAME),
                metric(client, server, "mlnt_batch_size_count", model=NAME))

    before = counted()
    assert client.post(server + V2, json=v2_tensor(np.zeros((3, 1, 8, 8), np.float32))).status_code == 200
    assert counted() == (before[0] + 3, before[1] + 3, before[2] + 1)


def test_images_the_network_overflows_on_are_refused_before_anything_is_counted(server, client):
    """Finite numbers far outside the normalised range overflow inside the network: NaN probabilities, which would
    answer 200 with null probabilities and class 0, count a prediction of class 0 and make the confidence sum NaN for
    good (MlntLowConfidence reads it). The request is refused, naming the image; inference and feedback count
    nothing of it, not even its good images."""
    def counted():
        return ([metric(client, server, "mlnt_predictions_total", model=NAME, **{"class": c}) for c in CLASSES],
                metric(client, server, "mlnt_prediction_confidence_count", model=NAME),
                metric(client, server, "mlnt_batch_size_count", model=NAME),
                metric(client, server, "mlnt_prediction_drift", model=NAME),
                metric(client, server, "mlnt_feedback_total", model=NAME))

    before = counted()
    x = np.concatenate([np.zeros_like(EXTREME), EXTREME])  # image 1 overflows
    for path, body in ((V2, v2_tensor(x)), (V1, {"instances": x.tolist()}),
                       (f"/v1/models/{NAME}/feedback", {"instances": x.tolist(), "labels": ["ant", "bee"]})):
        answer = client.post(server + path, json=body)
        assert answer.status_code == 400 and answer.json()["error"].startswith(OVERFLOW.format(1, 2)), answer.text
    assert counted() == before
    assert math.isfinite(metric(client, server, "mlnt_prediction_confidence_sum", model=NAME))


def test_a_wrong_method_is_refused_in_the_error_shape_and_counted(server, client):
    counted = {"model": NAME, "protocol": "v2", "outcome": "client_error"}
    before = metric(client, server, "mlnt_requests_total", **counted)
    response = client.get(server + V2)
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": f"{V2}: expected POST, found GET"}
    assert metric(client, server, "mlnt_requests_total", **counted) == before + 1
    v1 = {"model": NAME, "protocol": "v1", "outcome": "client_error"}
    before = metric(client, server, "mlnt_requests_total", **v1)
    response = client.get(server + V1)  # KServe read 'mlnt-classifier:predict' as a model name: a 404
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json() == {"error": f"{V1}: expected POST, found GET"}
    assert metric(client, server, "mlnt_requests_total", **v1) == before + 1
    nowhere = client.get(f"{server}/v3/models")
    assert nowhere.status_code == 404
    assert nowhere.json() == {"error": "expected one of the predictor's endpoints (docs/serving.md), found GET "
                                       "/v3/models, no route"}


def test_a_request_gets_the_outputs_it_names_in_its_order_and_an_unknown_one_is_refused_before_predicting(
        server, client):
    body = v2_tensor(np.zeros((2, 1, 8, 8), np.float32))
    answer = client.post(server + V2, json={**body, "outputs": [{"name": "class_index"}, {"name": "class"}]})
    assert [o["name"] for o in answer.json()["outputs"]] == ["class_index", "class"], answer.text
    assert [o["name"] for o in client.post(server + V2, json=body).json()["outputs"]] == ["probabilities", "class",
                                                                                          "class_index"]
    for outputs, binary in (([{"name": "class_index"}], [True]),  # binary_data_output: every output, named or not
                            ([{"name": "class_index"}, {"name": "probabilities", "parameters": {"binary_data": False}}],
                             [True, False])):  # an output's own binary_data over it
        answer = client.post(server + V2, json={**body, "outputs": outputs,
                                                "parameters": {"binary_data_output": True}})
        size = int(answer.headers["inference-header-content-length"])
        header = json.loads(answer.content[:size])
        assert [o["name"] for o in header["outputs"]] == [o["name"] for o in outputs]
        assert ["binary_data_size" in o.get("parameters", {}) for o in header["outputs"]] == binary
        assert np.frombuffer(answer.content[size:size + 16], "<i8").shape == (2,)  # class_index, two INT64
    predicted = metric(client, server, "mlnt_batch_size_count", model=NAME)
    refused = client.post(server + V2, json={**body, "outputs": [{"name": "nope"}]})
    assert refused.status_code == 400
    assert metric(client, server, "mlnt_batch_size_count", model=NAME) == predicted  # the model did not run


def test_health_metadata_and_model_endpoints(server, client):
    assert client.get(f"{server}/v2/health/live").json() == {"live": True}
    assert client.get(f"{server}/v2/health/ready").json() == {"ready": True}
    assert client.get(f"{server}/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    metadata = client.get(f"{server}/v2/models/{NAME}").json()
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]} in metadata["outputs"]
    assert metadata["versions"] == [VERSION]  # the one version /v2/models/<name>/versions/<v> answers
    for path in (V2, f"/v2/models/{NAME}/versions/{VERSION}/infer"):
        answer = client.post(server + path, json=v2_tensor(np.zeros((1, 1, 8, 8), np.float32))).json()
        assert (answer["model_name"], answer["model_version"]) == (NAME, VERSION)
    assert client.get(f"{server}/v1/models/{NAME}").json() == {"name": NAME, "ready": True}


def test_a_request_built_from_the_metadata_is_answered_and_so_is_the_encoded_image_input_it_describes(server, client):
    """Tools build a v2 request from the model metadata, sending every input it lists. It listed the tensor and the
    BYTES input of encoded images, which are alternatives (one input a request), so such a request was refused: the
    metadata lists the tensor alone, describes the encoded images in its parameters (Open Inference Protocol
    parameters: string, number or boolean values), and names the platform."""
    metadata = client.get(f"{server}/v2/models/{NAME}").json()
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
    built = []
    for listed in metadata["inputs"]:
        shape = [1 if d == -1 else d for d in listed["shape"]]
        built.append({**listed, "shape": shape, "data": [0.0] * math.prod(shape)})
    assert v2_probabilities(client.post(server + V2, json={"inputs": built})).shape == (1, len(CLASSES))
    parameters = metadata["parameters"]
    assert all(isinstance(value, str | int | float | bool) for value in parameters.values()), parameters
    assert json.loads(parameters["encoded_image_input_shape"]) == [-1] and "PNG, JPEG or WEBP" in \
        parameters["encoded_image_input_use"]
    blob = encode(np.zeros((8, 8), np.uint8))
    image = {"name": parameters["encoded_image_input"], "datatype": parameters["encoded_image_input_datatype"],
             "shape": [1], "data": [base64.b64encode(blob).decode()]}
    assert (image["name"], image["datatype"]) == ("image", "BYTES")
    np.testing.assert_allclose(v2_probabilities(client.post(server + V2, json={"inputs": [image]})),
                               v2_probabilities(client.post(server + V2, json=v2_images([blob]))), atol=1e-6)


def test_the_metadata_docs_serving_md_shows_is_the_predictors(server, client):
    shown = json.loads(re.search(r"```json\n(\{\"name\": \"mlnt-classifier\".*?)\n```", (ROOT / "docs" / "serving.md")
                                 .read_text(), re.DOTALL)[1])
    metadata = client.get(f"{server}/v2/models/{NAME}").json()
    assert list(shown) == list(metadata)
    assert (shown["platform"], shown["parameters"]) == (metadata["platform"], metadata["parameters"])
    for kind in ("inputs", "outputs"):  # the shapes are Fashion-MNIST's there
        assert [(t["name"], t["datatype"]) for t in shown[kind]] == [(t["name"], t["datatype"]) for t in metadata[kind]]


def test_metrics_follow_the_contract_and_pass_promtool(server, client):
    client.post(server + V2, json=v2_tensor(np.zeros((2, 1, 8, 8), np.float32)))
    text = client.get(f"{server}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for m in contract.PREDICTOR:
        name = m.name.removesuffix("_total")
        assert name in families and families[name].type == m.kind, m.name
        assert {k for s in families[name].samples for k in s.labels} - {"le"} == set(m.labels), m.name
    assert metric(client, server, "mlnt_model_info", model=NAME, version=VERSION) == 1
    for m in contract.KSERVE:  # KServe's own stage histograms, which the dashboard and the rules read
        samples = families[m.name].samples
        assert families[m.name].type == m.kind and {k for s in samples for k in s.labels} - {"le"} == set(m.labels)
        assert [float(s.labels["le"]) for s in samples if s.name == f"{m.name}_bucket"] == [*m.buckets, math.inf]
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                           check=False, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_one_client_moves_the_drift_gauge_but_cannot_pin_it(server, client):
    same = np.zeros((16, 1, 8, 8), np.float32)  # one image 32 times: counted once in the window
    for _ in range(2):
        response = client.post(server + V2, json=v2_tensor(same))
    top = int(v2_probabilities(response)[0].argmax())
    counted = metric(client, server, "mlnt_predictions_total", model=NAME, **{"class": CLASSES[top]})
    assert counted >= 32  # every prediction is counted as traffic
    skewed = np.random.default_rng(7).standard_normal((16, 1, 8, 8)).astype(np.float32)
    client.post(server + V2, json=v2_tensor(skewed))
    drift = metric(client, server, "mlnt_prediction_drift", model=NAME)
    # This loopback client holds at most 3 of the 32 slots (gRPC, one client, at most 3 more): each slot moves the
    # distance by at most 1/32, and an empty slot counts as the training distribution.
    cap = math.floor(CLIENT_SHARE * LIMITS["drift_window"])
    assert 0 < drift <= 2 * cap / LIMITS["drift_window"] + 1e-9
    assert metric(client, server, "mlnt_batch_size_count", model=NAME) >= 3


def test_feedback_updates_the_disagreement_counters(server, client):
    def counters():
        return (metric(client, server, "mlnt_feedback_total", model=NAME),
                metric(client, server, "mlnt_feedback_disagreements_total", model=NAME))

    before = counters()
    url = f"{server}/v1/models/{NAME}/feedback"
    assert client.post(url, json={"predicted": "cat", "label": "dog"}).json()["disagreements"] == 1
    assert client.post(url, json={"feedback": [{"predicted": "cat", "label": "cat"},
                                               {"predicted": 0, "label": "bee"}]}).json()["received"] == 2
    x = np.zeros((2, 1, 8, 8), np.float32)
    top = CLASSES[int(v2_probabilities(client.post(server + V2, json=v2_tensor(x)))[0].argmax())]
    other = next(c for c in CLASSES if c != top)
    answer = client.post(f"{server}/v2/models/{NAME}/feedback", json={"instances": x.tolist(), "labels": [top, other]})
    assert answer.json() == {"model": NAME, "received": 2, "disagreements": 1, "predicted": [top, top]}
    assert counters() == (before[0] + 5, before[1] + 3)
    wrong = client.post(url, json={"predicted": "cow", "label": "dog"})
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "item 0 predicted: Unknown class 'cow'. Valid: ant, bee, cat, dog (or 0..3)"
    for index in (len(CLASSES), -1):  # indices run 0..K-1
        wrong = client.post(url, json={"predicted": 0, "label": index})
        assert wrong.status_code == 400 and wrong.json()["error"].startswith(f"item 0 label: Unknown class {index}")
    for blob in CORRUPT_PNGS.values():  # the instances form decodes as inference does
        corrupt = client.post(url, json={**v1_images([blob]), "labels": ["ant"]})
        assert corrupt.status_code == 400 and corrupt.json()["error"].startswith(UNREADABLE.format(len(blob)))
    assert counters() == (before[0] + 5, before[1] + 3)
