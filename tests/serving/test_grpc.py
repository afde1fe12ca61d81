"""The predictor over gRPC (Open Inference Protocol v2), as a gRPC client sees it: the same ``python -m serving`` as
the REST tests (``server``), on its --grpc_port. KServe's own client (``kserve.InferenceGRPCClient``) for health and
inference, the generated stubs for what that client does not offer (metadata, repository, hand-made messages)."""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
import pytest
from kserve import InferenceGRPCClient, InferInput, InferRequest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub

from monitoring import metrics as contract
from serving.dataplane import GRPC
from tests.serving.conftest import CLASSES, CORRUPT_PNGS, LIMITS, VERSION, logged_since
from tests.serving.test_server import (
    EXTREME,
    NAME,
    OVERFLOW,
    V2,
    encode,
    metric,
    v2_images,
    v2_probabilities,
    v2_tensor,
)


def infer(target: str, *inputs: InferInput, model: str = NAME) -> dict[str, np.ndarray]:
    """The outputs of one inference with KServe's gRPC client, by name."""

    async def call():
        async with InferenceGRPCClient(target, timeout=30, retries=0) as client:
            return await client.infer(InferRequest(model_name=model, infer_inputs=list(inputs)))

    return {output.name: output.as_numpy() for output in asyncio.run(call()).outputs}


def tensor(x: np.ndarray, *, raw: bool = True, name: str = "images") -> InferInput:
    """An FP32 input; ``raw``: in the message's raw_input_contents (the client's default), else in its contents."""
    given = InferInput(name, list(x.shape), "FP32")
    given.set_data_from_numpy(x, binary_data=raw)
    return given


@pytest.fixture(scope="module")
def stub(grpc_target):
    with grpc.insecure_channel(grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield GRPCInferenceServiceStub(channel)


def refused(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value


def test_health_and_readiness(grpc_target):
    async def ask():
        async with InferenceGRPCClient(grpc_target, timeout=30) as client:
            return (await client.is_server_live(), await client.is_server_ready(),
                    await client.is_model_ready(NAME))

    assert asyncio.run(ask()) == (True, True, True)


def test_model_metadata_matches_rest(stub, server, client):
    found = stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME), timeout=30)
    rest = client.get(f"{server}/v2/models/{NAME}").json()
    assert found.name == NAME and list(found.versions) == rest["versions"] == [VERSION]
    assert found.platform == rest["platform"] == "onnxruntime_onnx"
    assert [t.name for t in found.inputs] == ["images"]  # the encoded images: REST's parameters (no gRPC field)
    for kind in ("inputs", "outputs"):
        grpc_tensors = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in getattr(found, kind)]
        assert grpc_tensors == rest[kind]


@pytest.mark.parametrize("raw", [True, False], ids=["raw contents", "typed contents"])
def test_probabilities_equal_the_rest_answer(grpc_target, server, client, raw):
    x = np.random.default_rng(10).standard_normal((3, 1, 8, 8)).astype(np.float32)
    out = infer(grpc_target, tensor(x, raw=raw))
    rest = v2_probabilities(client.post(server + V2, json=v2_tensor(x)))
    np.testing.assert_allclose(out["probabilities"], rest, atol=1e-6)
    assert out["class_index"].tolist() == rest.argmax(1).tolist()
    assert [name.decode() for name in out["class"]] == [CLASSES[i] for i in rest.argmax(1)]


def test_encoded_images_are_the_files_bytes(grpc_target, server, client):
    pixels = np.random.default_rng(11).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    blobs = [encode(pixels[0]), encode(pixels[1], "JPEG"), encode(pixels[2], "WEBP")]
    images = InferInput("image", [len(blobs)], "BYTES")
    images.set_data_from_numpy(np.array(blobs, dtype=object))  # raw contents: length-prefixed file bytes
    rest = v2_probabilities(client.post(server + V2, json=v2_images(blobs)))
    np.testing.assert_allclose(infer(grpc_target, images)["probabilities"], rest, atol=1e-6)


def request(datatype: str, shape: list[int], raw: bytes, name: str = "images", model: str = NAME, version: str = ""):
    return pb.ModelInferRequest(model_name=model, model_version=version, raw_input_contents=[raw], inputs=[
        pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)])


ZEROS = np.zeros((1, 1, 8, 8), np.float32).tobytes()
BAD = [  # (case, request, status, the message names what was expected and what was found)
    ("raw contents cut short", request("FP32", [1, 1, 8, 8], b"\0" * 10), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected 256 bytes of raw FP32 contents for shape [1, 1, 8, 8], found 10"),
    ("wrong shape", request("FP32", [1, 3, 8, 8], ZEROS * 3), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected shape [N, 1, 8, 8], found [1, 3, 8, 8]"),
    ("batch too large", request("FP32", [17, 1, 8, 8], ZEROS * 17), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected at most 1024 values in one request, found shape [17, 1, 8, 8] (1088 values)"),
    ("two negative dimensions", request("BYTES", [-1, -1], struct.pack("<I", 11) + b"hello world", name="image"),
     grpc.StatusCode.INVALID_ARGUMENT,  # their product is 1: the model's own checks would take it
     "input 'image': expected the shape as a list of at most 8 integers from 0 to 16, found [-1, -1]"),
    ("nine dimensions", request("FP32", [1] * 5 + [1, 1, 8, 8], ZEROS), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected the shape as a list of at most 8 integers from 0 to 1024, found [1, 1, 1, 1, 1, 1, 1, "
     "8, 8]"),
    ("an unknown model and a datatype it would refuse", request("FP99", [1, 1, 8, 8], ZEROS, model="nope"),
     grpc.StatusCode.NOT_FOUND, "Model with name nope does not exist"),  # the model first, as over REST
    ("NaN", request("FP32", [1, 1, 8, 8], np.full((1, 1, 8, 8), np.nan, np.float32).tobytes()),
     grpc.StatusCode.INVALID_ARGUMENT, "expected finite numbers, found NaN or infinity"),
    ("finite numbers the network overflows on", request("FP32", [1, 1, 8, 8], EXTREME.tobytes()),
     grpc.StatusCode.INVALID_ARGUMENT, OVERFLOW.format(0, 1)),
    ("wrong input name", request("FP32", [1, 1, 8, 8], ZEROS, name="x"), grpc.StatusCode.INVALID_ARGUMENT,
     "expected the FP32 input to be named 'images', found 'x'"),
    ("BYTES elements cut short", request("BYTES", [1], struct.pack("<I", 100) + b"abc", name="image"),
     grpc.StatusCode.INVALID_ARGUMENT, "expected BYTES elements each prefixed by its 4-byte little-endian length"),
    ("bytes that are not an image", request("BYTES", [1], struct.pack("<I", 11) + b"hello world", name="image"),
     grpc.StatusCode.INVALID_ARGUMENT, "image 0: expected PNG, JPEG or WEBP bytes, found 11 bytes"),
    *[(case, request("BYTES", [1], struct.pack("<I", len(blob)) + blob, name="image"),
       grpc.StatusCode.INVALID_ARGUMENT, f"image 0: expected PNG, JPEG or WEBP bytes, found {len(blob)} bytes that "
                                         "are not a readable image") for case, blob in CORRUPT_PNGS.items()],
    ("a datatype KServe cannot read", request("FP99", [1, 1, 8, 8], ZEROS), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected datatype FP32 (a preprocessed tensor) or BYTES (encoded images), found FP99"),
    ("a datatype KServe reads", request("INT32", [1, 1, 8, 8], ZEROS), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images': expected datatype FP32 (a preprocessed tensor) or BYTES (encoded images), found INT32"),
    ("raw contents for one of two inputs", pb.ModelInferRequest(model_name=NAME, raw_input_contents=[ZEROS], inputs=[
        pb.ModelInferRequest.InferInputTensor(name=name, datatype="FP32", shape=[1, 1, 8, 8]) for name in "ab"]),
     grpc.StatusCode.INVALID_ARGUMENT, "the number of inputs (2) does not match the expected number of raw input "
                                       "contents (1)"),
    ("unknown model", request("FP32", [1, 1, 8, 8], ZEROS, model="nope"), grpc.StatusCode.NOT_FOUND,
     "Model with name nope does not exist"),
    ("another version", request("FP32", [1, 1, 8, 8], ZEROS, version="1"), grpc.StatusCode.NOT_FOUND,
     f"expected version '{VERSION}' of model '{NAME}' (the release this predictor serves), found version '1'"),
]


@pytest.mark.parametrize(("request_", "status", "message"), [case[1:] for case in BAD], ids=[c[0] for c in BAD])
def test_bad_requests_get_the_rest_paths_checks_and_are_counted(stub, server, server_log, client, request_, status,
                                                                message):
    """... and are logged as one line that says why, with no traceback and nothing at ERROR, as over REST."""
    counted = {"model": NAME, "protocol": GRPC, "outcome": "client_error"}
    before = metric(client, server, "mlnt_requests_total", **counted)
    logged = server_log.stat().st_size
    error = refused(stub.ModelInfer, request_)
    assert error.code() == status and message in error.details(), (error.code(), error.details())
    assert metric(client, server, "mlnt_requests_total", **counted) == before + 1
    lines = logged_since(server_log, logged)
    assert any(message in line and f"ModelInfer -> {status.name}: " in line for line in lines), lines
    assert not any("Traceback" in line or " ERROR " in line for line in lines), lines


def test_a_datatype_in_lower_case_is_read_as_over_rest(stub, server, client):
    x = np.random.default_rng(13).standard_normal((2, 1, 8, 8)).astype(np.float32)
    answer = stub.ModelInfer(request("fp32", [2, 1, 8, 8], x.tobytes()), timeout=30)
    rest = client.post(server + V2, json=v2_tensor(x, datatype="fp32"))
    np.testing.assert_allclose(probabilities(answer, 2), v2_probabilities(rest), atol=1e-6)


def probabilities(answer: pb.ModelInferResponse, n: int) -> np.ndarray:
    """The first output of a gRPC answer (the probabilities), raw or typed contents, as ``n`` rows."""
    found = np.frombuffer(answer.raw_output_contents[0], "<f4") if answer.raw_output_contents else \
        np.asarray(answer.outputs[0].contents.fp32_contents, np.float32)
    return found.reshape(n, -1)


def test_the_served_version_is_inferred_as_rest_serves_its_versioned_path(stub, server, client):
    x = np.random.default_rng(12).standard_normal((1, 1, 8, 8)).astype(np.float32)
    answer = stub.ModelInfer(request("FP32", [1, 1, 8, 8], x.tobytes(), version=VERSION), timeout=30)
    rest = client.post(f"{server}/v2/models/{NAME}/versions/{VERSION}/infer", json=v2_tensor(x))
    np.testing.assert_allclose(probabilities(answer, 1), v2_probabilities(rest), atol=1e-6)


def test_a_request_gets_the_outputs_it_names_and_the_served_version(stub):
    asked = request("FP32", [1, 1, 8, 8], ZEROS)
    wanted = pb.ModelInferRequest.InferRequestedOutputTensor
    asked.outputs.extend([wanted(name=name) for name in ("class_index", "class")])  # not the model's order
    asked.id = "req-42"
    answer = stub.ModelInfer(asked, timeout=30)
    assert [o.name for o in answer.outputs] == ["class_index", "class"] and answer.id == "req-42"
    assert (answer.model_name, answer.model_version) == (NAME, VERSION)
    unknown = request("FP32", [1, 1, 8, 8], ZEROS)
    unknown.outputs.append(pb.ModelInferRequest.InferRequestedOutputTensor(name="nope"))
    error = refused(stub.ModelInfer, unknown)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected requested outputs among ['probabilities', 'class', 'class_index'], found ['nope']" in \
        error.details()


def test_model_ready_and_metadata_answer_for_the_served_version_only(stub):
    """As REST's /v2/models/<name>/versions/<v>[/ready]: the served version answers, any other is NOT_FOUND with the
    same message (KServe's servicer ignored the field and answered for any version)."""
    assert stub.ModelReady(pb.ModelReadyRequest(name=NAME, version=VERSION), timeout=30).ready
    assert stub.ModelMetadata(pb.ModelMetadataRequest(name=NAME, version=VERSION), timeout=30).name == NAME
    for call, message in ((stub.ModelReady, pb.ModelReadyRequest), (stub.ModelMetadata, pb.ModelMetadataRequest)):
        error = refused(call, message(name=NAME, version="1"))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert f"expected version '{VERSION}' of model '{NAME}' (the release this predictor serves), found version " \
               "'1'" in error.details()
    assert refused(stub.ModelMetadata, pb.ModelMetadataRequest(name="nope")).code() == grpc.StatusCode.NOT_FOUND


def test_a_message_over_max_body_bytes_is_refused(stub, grpc_target):
    big = request("FP32", [1, 1, 8, 8], b"\0" * (LIMITS["max_body_bytes"] + 1))
    error = refused(stub.ModelInfer, big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and str(LIMITS["max_body_bytes"]) in error.details()
    assert infer(grpc_target, tensor(np.zeros((1, 1, 8, 8), np.float32)))["probabilities"].shape == (1, 4)


def test_good_requests_are_counted_and_timed(grpc_target, server, client):
    assert GRPC in contract.PROTOCOLS  # so its series start at zero with the others
    labels = {"model": NAME, "protocol": GRPC}
    before = (metric(client, server, "mlnt_requests_total", outcome="ok", **labels),
              metric(client, server, "mlnt_request_duration_seconds_count", outcome="ok", **labels),
              metric(client, server, "request_predict_seconds_count", model_name=NAME))
    infer(grpc_target, tensor(np.zeros((2, 1, 8, 8), np.float32)))
    assert (metric(client, server, "mlnt_requests_total", outcome="ok", **labels),
            metric(client, server, "mlnt_request_duration_seconds_count", outcome="ok", **labels),
            metric(client, server, "request_predict_seconds_count", model_name=NAME)) == tuple(b + 1 for b in before)


def test_the_model_repository_cannot_unload_or_load_over_either_transport(stub, grpc_target, server, server_log,
                                                                         client):
    logged = server_log.stat().st_size
    unload = refused(stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name=NAME))
    assert unload.code() == grpc.StatusCode.PERMISSION_DENIED
    assert unload.details() == (f"expected no unload of models at run time (this predictor serves one release: roll "
                                f"out a new release to change it, or start it with --enable-model-repository), found "
                                f"a request to unload '{NAME}'")
    lines = logged_since(server_log, logged)  # one line at warning, as REST logs its 403
    assert any(" WARNING " in line and "RepositoryModelUnload -> PERMISSION_DENIED: expected no unload" in line
               for line in lines), lines
    load = refused(stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="other"))
    assert load.code() == grpc.StatusCode.PERMISSION_DENIED and "found a request to load 'other'" in load.details()
    for action in ("unload", "load"):
        answer = client.post(f"{server}/v2/repository/models/{NAME}/{action}")
        assert answer.status_code == 403 and f"found a request to {action} '{NAME}'" in answer.json()["error"]
    assert client.get(f"{server}/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert infer(grpc_target, tensor(np.zeros((1, 1, 8, 8), np.float32)))["probabilities"].shape == (1, 4)
