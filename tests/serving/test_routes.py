"""Which routes the predictor answers (``serving.routes``): the model repository only with
``--enable-model-repository``, the docs only with ``--enable_docs_url``, every gRPC method known. In-process
(``tests.serving.inprocess``): KServe's own routes, on a fresh app. That every route of the app is served or refused,
whatever KServe adds, is ``tests/reliability/test_attacks.py``'s to check."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from serving import routes
from serving.dataplane import VersionedServicer
from serving.server import Protection
from tests.serving.conftest import LIMITS, VERSION
from tests.serving.inprocess import NAME, Call, InProcess

X = {"inputs": [{"name": "images", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]}
GRPC_SERVED = {"ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelInfer"}
GRPC_REFUSED = {"RepositoryModelLoad", "RepositoryModelUnload"}  # tests/serving/test_grpc.py calls each


@pytest.fixture(scope="module")
def predictor(release):
    return InProcess(release[0])


def test_the_served_list_holds_no_management_route():
    assert not {t for t in routes.SERVED if "repository" in t or ":explain" in t}
    assert routes.served(repository=True) - routes.SERVED == routes.REPOSITORY
    assert routes.served(docs=True) - routes.SERVED == routes.DOCS


def test_the_versioned_v2_paths_serve_the_release_version_and_refuse_any_other(predictor):
    assert routes.VERSIONED <= routes.SERVED
    versioned = f"/v2/models/{NAME}/versions/{VERSION}"
    assert predictor.request("GET", versioned).json() == predictor.request("GET", f"/v2/models/{NAME}").json()
    assert predictor.request("GET", f"{versioned}/ready").json() == {"name": NAME, "ready": True}
    want = predictor.request("POST", f"/v2/models/{NAME}/infer", json=X).json()["outputs"][0]["data"]
    np.testing.assert_allclose(predictor.request("POST", f"{versioned}/infer", json=X).json()["outputs"][0]["data"],
                               want, atol=1e-7)

    def count(outcome: str) -> float:
        return predictor.sample("mlnt_requests_total", protocol="v2", outcome=outcome)

    before = count("client_error"), count("server_error")
    for method, suffix, body in [("GET", "", None), ("GET", "/ready", None), ("POST", "/infer", X)]:
        answer = predictor.request(method, f"/v2/models/{NAME}/versions/1{suffix}", json=body)
        assert answer.status_code == 404, (suffix, answer.text)
        assert answer.json() == {"error": f"expected version '{VERSION}' of model '{NAME}' (the release this predictor "
                                          f"serves), found version '1'"}
    assert (count("client_error"), count("server_error")) == (before[0] + 1, before[1])  # the inference counted
    assert predictor.request("POST", f"/v2/models/nope/versions/{VERSION}/infer", json=X).status_code == 404


def test_the_model_repository_refuses_unless_enabled(predictor):
    for action in ("unload", "load"):
        answer = predictor.request("POST", f"/v2/repository/models/{NAME}/{action}")
        assert answer.status_code == 403
        assert answer.json()["error"].endswith(f"or start it with --enable-model-repository), found a request to "
                                               f"{action} '{NAME}'")
    assert predictor.request("GET", "/v2").json()["extensions"] == []  # not advertised either


def test_an_enabled_repository_drains_the_replica_and_loads_the_same_release_back(release):
    predictor = InProcess(release[0], protection=Protection(LIMITS["max_body_bytes"], repository=True))
    assert "model_repository_extension" in predictor.request("GET", "/v2").json()["extensions"]
    want = predictor.request("POST", f"/v2/models/{NAME}/infer", json=X).json()["outputs"][0]["data"]
    assert predictor.request("POST", f"/v2/repository/models/{NAME}/unload").json() == {"name": NAME, "unload": True}
    assert predictor.request("POST", f"/v2/models/{NAME}/infer", json=X).status_code == 404
    assert predictor.request("GET", "/v2/health/ready").status_code == 503  # Kubernetes stops routing to it
    assert predictor.request("GET", "/v2/health/live").status_code == 200  # and does not restart it
    assert predictor.request("POST", "/v2/repository/models/other/load").status_code == 404
    assert predictor.request("POST", f"/v2/repository/models/{NAME}/load").json() == {"name": NAME, "load": True}
    assert predictor.request("GET", "/v2/health/ready").json() == {"ready": True}
    again = predictor.request("POST", f"/v2/models/{NAME}/infer", json=X).json()["outputs"][0]["data"]
    np.testing.assert_allclose(again, want, atol=1e-7)


def test_an_enabled_repository_answers_unload_and_load_over_grpc(release):
    """KServe's servicer reads the extension's answer, which KServe's own extension does not give (an internal error
    after the unload was done)."""
    predictor = InProcess(release[0], protection=Protection(LIMITS["max_body_bytes"], repository=True))
    servicer, call = VersionedServicer(predictor.dataplane, predictor.extension), Call({})
    unloaded = asyncio.run(servicer.RepositoryModelUnload(pb.RepositoryModelUnloadRequest(model_name=NAME), call))
    assert (unloaded.model_name, unloaded.isUnloaded) == (NAME, True)
    assert predictor.request("GET", "/v2/health/ready").status_code == 503
    loaded = asyncio.run(servicer.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=NAME), call))
    assert (loaded.model_name, loaded.isLoaded) == (NAME, True)
    assert predictor.request("GET", "/v2/health/ready").json() == {"ready": True}


def test_docs_are_served_only_with_the_flag(release):
    """The schema and the Swagger UI page; the schema alone answered 200 whether or not the UI was installed."""
    plain = InProcess(release[0])
    assert [plain.request("GET", path).status_code for path in ("/openapi.json", "/docs")] == [403, 404]
    docs = InProcess(release[0], protection=Protection(LIMITS["max_body_bytes"], docs=True))
    assert docs.request("GET", "/openapi.json").status_code == 200
    page = docs.request("GET", "/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text


def test_every_grpc_method_is_known_as_served_or_refused():
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert methods == GRPC_SERVED | GRPC_REFUSED, "a new RPC: decide whether the predictor serves it"


@pytest.mark.parametrize("path", [f"/v2/models/{NAME}/ready", f"/v2/models/{NAME}", f"/v1/models/{NAME}"])
def test_a_post_to_a_models_get_endpoint_is_a_405_with_or_without_a_body(predictor, path):
    """``curl -X POST .../ready`` sends no body: the method is what is wrong, as with a body or on /v2/health/ready."""
    for body in [{}, {"json": {}}]:
        answer = predictor.request("POST", path, **body)
        assert answer.status_code == 405, (body, answer.text)
        assert answer.headers["allow"] == "GET" and answer.json() == {"error": f"{path}: expected GET, found POST"}
