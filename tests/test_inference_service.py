"""The pipeline's deploy step (pipelines/inference_service.py and the ``deploy`` component) serves the released version
with the InferenceService that k8s/ defines, through KServe's own client.

The client is the real ``kserve.KServeClient``; only the cluster is fake: a loopback HTTP server that answers the
slice of the Kubernetes API KServeClient's get, create and patch of an InferenceService use, keeps the objects and
records every request. The objects it starts from are what ``kubectl kustomize k8s/<target>`` renders
(tests/test_k8s.py's helpers), i.e. what ``kubectl apply -k`` leaves in a cluster.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import kserve
import pytest
import yaml
from kfp.dsl import Artifact
from kserve import KServeClient

from pipelines import inference_service, mlnt_pipeline
from tests.test_k8s import K8S, NAMESPACE, TARGETS, crd_validator, objects, one

PREFIX = "/apis/serving.kserve.io/v1beta1/namespaces/"
VERB = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}
RUN_FIELDS = {("metadata", "annotations", inference_service.VERSION_ANNOTATION),
              ("spec", "predictor", "model", "storageUri")}  # and metadata.namespace, already mlnt in k8s/
VERSION, STORAGE = "v0007-20250101T000000Z", "pvc://mlnt-registry"


class FakeKubernetes(BaseHTTPRequestHandler):
    """InferenceServices in namespaces: GET one, POST (create), PATCH (JSON merge patch only); PUT and DELETE are
    refused as the role mlnt-deploy would refuse them. ``forbidden`` makes every request a 403. An object stored
    with a ``metadata.resourceVersion`` keeps it as the API server does: a PATCH naming another is a 409 Conflict,
    and each PATCH counts it up (objects stored without one stay without, so that they compare with manifests)."""

    objects: ClassVar[dict[tuple[str, str], dict]] = {}
    requests: ClassVar[list[tuple[str, str, str | None, Any]]] = []
    forbidden: ClassVar[bool] = False

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str) -> None:
        self._reply(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code})

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((self.command, self.path, self.headers.get("Content-Type"), body))
        namespace, _, rest = self.path.removeprefix(PREFIX).partition("/inferenceservices")
        name = rest.strip("/") or (body or {}).get("metadata", {}).get("name")
        key = (namespace, name)
        if not self.path.startswith(PREFIX) or self.forbidden or self.command in ("PUT", "DELETE"):
            self._status(403, "Forbidden")
        elif self.command == "GET":
            self._reply(200, self.objects[key]) if key in self.objects else self._status(404, "NotFound")
        elif self.command == "POST":
            if key in self.objects:
                self._status(409, "AlreadyExists")
            else:
                self.objects[key] = body
                self._reply(201, body)
        elif self.headers.get("Content-Type") != "application/merge-patch+json":
            self._status(415, "UnsupportedMediaType")
        elif key not in self.objects:
            self._status(404, "NotFound")
        else:
            stored = self.objects[key]["metadata"].get("resourceVersion")
            asked = body.get("metadata", {}).get("resourceVersion", stored)
            if stored is not None and asked != stored:
                self._status(409, "Conflict")
                return
            self.objects[key] = merge_patch(self.objects[key], body)
            if stored is not None:
                self.objects[key]["metadata"]["resourceVersion"] = str(int(stored) + 1)
            self._reply(200, self.objects[key])

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def log_message(self, *args):
        pass


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, written here apart from the module's own, as the API server applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


@pytest.fixture
def cluster() -> Iterator[tuple[type[FakeKubernetes], KServeClient]]:
    """A fresh fake cluster and a KServeClient whose kubeconfig points at it."""
    handler = type("Cluster", (FakeKubernetes,), {"objects": {}, "requests": [], "forbidden": False})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                  "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
                  "users": [{"name": "fake", "user": {}}],
                  "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}
    try:
        yield handler, KServeClient(config_dict=kubeconfig)
    finally:
        server.shutdown()
        server.server_close()


def leaves(node: Any, path: tuple = ()) -> dict[tuple, Any]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in leaves(value, (*path, key)).items()}
    return {path: node}


def changed(before: dict, after: dict) -> set[tuple]:
    old, new = leaves(before), leaves(after)
    return {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}


def with_run_fields(service: dict, version: str = VERSION) -> dict:
    expected = copy.deepcopy(service)
    expected["metadata"]["namespace"] = NAMESPACE
    expected["metadata"].setdefault("annotations", {})[inference_service.VERSION_ANNOTATION] = version
    expected["spec"]["predictor"]["model"]["storageUri"] = f"{STORAGE}/{version}"
    return expected


def kustomize_labels() -> set[str]:
    """The labels k8s/base/kustomization.yaml adds to every object (kustomize's, not the manifest's)."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return {key for entry in kustomization.get("labels", []) for key in entry["pairs"]}


# ---------------------------------------------------------------------------------------------------- the object
def test_the_manifest_is_the_inference_service_k8s_base_renders():
    """The step's manifest is the file k8s/base lists; kustomize only adds the namespace and its labels to it."""
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert inference_service.MANIFEST == K8S / "base" / "serving" / "inferenceservice.yaml"
    assert "serving/inferenceservice.yaml" in kustomization["resources"]
    rendered = copy.deepcopy(one("base", "InferenceService"))
    assert rendered["metadata"]["name"] == inference_service.NAME
    assert rendered["metadata"].pop("namespace") == NAMESPACE
    assert set(rendered["metadata"].pop("labels")) == kustomize_labels()
    assert rendered == inference_service.load_manifest()


@pytest.mark.parametrize("target", TARGETS)
def test_an_applied_inference_service_keeps_its_overlay_and_takes_only_the_run_fields(target, cluster):
    """`kubectl apply -k k8s/<target>` created the object; the step merge-patches the version in, nothing else: the
    object served is the overlay's (prod's autoscaling, RawDeployment, the security context) with the run fields."""
    fake, client = cluster
    applied = one(target, "InferenceService")
    fake.objects[(NAMESPACE, inference_service.NAME)] = copy.deepcopy(applied)
    done, served = inference_service.deploy(client, version=VERSION, storage_uri=STORAGE + "/", namespace=NAMESPACE)
    now = fake.objects[(NAMESPACE, inference_service.NAME)]
    assert done == "patched" and served == now == with_run_fields(applied)
    assert changed(applied, now) == RUN_FIELDS
    assert [method for method, *_ in fake.requests] == ["GET", "PATCH"]
    _, _, content_type, patch = fake.requests[1]
    assert content_type == "application/merge-patch+json"
    assert patch == inference_service.run_fields(version=VERSION, storage_uri=STORAGE, namespace=NAMESPACE)
    identity = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}
    assert set(leaves(patch)) == identity | RUN_FIELDS


def test_a_missing_inference_service_is_created_from_the_manifest(cluster):
    """On a cluster where k8s/ was not applied yet: the object of k8s/base (RawDeployment, hardened pod, no API
    token), with the run fields; kustomize's labels come with the next `kubectl apply -k`."""
    fake, client = cluster
    done, created = inference_service.deploy(client, version=VERSION, storage_uri=STORAGE, namespace=NAMESPACE)
    assert done == "created" and [method for method, *_ in fake.requests] == ["GET", "POST"]
    assert created == fake.objects[(NAMESPACE, inference_service.NAME)] == fake.requests[1][3]
    rendered = copy.deepcopy(one("base", "InferenceService"))
    labels = rendered["metadata"].pop("labels")
    if set(labels) - kustomize_labels():
        rendered["metadata"]["labels"] = {k: v for k, v in labels.items() if k not in kustomize_labels()}
    assert created == with_run_fields(rendered)
    annotations, predictor = created["metadata"]["annotations"], created["spec"]["predictor"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert predictor["automountServiceAccountToken"] is False and predictor["securityContext"]["runAsNonRoot"]
    assert not list(crd_validator(created["apiVersion"], created["kind"]).iter_errors(created))


def test_without_a_client_nothing_is_applied_and_the_object_is_the_one_a_create_sends(cluster, tmp_path):
    fake, client = cluster
    done, written = inference_service.deploy(None, version=VERSION, storage_uri=STORAGE, namespace=NAMESPACE)
    assert done == "not applied" and not fake.requests
    _, created = inference_service.deploy(client, version=VERSION, storage_uri=STORAGE, namespace=NAMESPACE)
    assert written == created
    inference_service.write(written, tmp_path / "manifest")
    assert yaml.safe_load((tmp_path / "manifest").read_text()) == written
    assert [p.name for p in tmp_path.iterdir()] == ["manifest"]  # no temporary file left


def test_the_step_asks_only_for_what_its_role_grants(cluster):
    """get, create, patch: the verbs of the Role mlnt-deploy (k8s/base/rbac.yaml); never update (replace) or delete."""
    fake, client = cluster
    inference_service.deploy(client, version="v1", storage_uri=STORAGE, namespace=NAMESPACE)  # creates
    inference_service.deploy(client, version="v2", storage_uri=STORAGE, namespace=NAMESPACE)  # patches
    (role,) = [r for r in objects("base", "Role") if r["metadata"]["name"] == "mlnt-deploy"]
    granted = {verb for rule in role["rules"] if "inferenceservices" in rule["resources"] for verb in rule["verbs"]}
    used = {VERB[method] for method, *_ in fake.requests}
    assert used == {"get", "create", "patch"} and used <= granted
    stored = fake.objects[(NAMESPACE, inference_service.NAME)]
    assert stored["spec"]["predictor"]["model"]["storageUri"] == f"{STORAGE}/v2"


def test_an_error_other_than_not_found_stops_the_step_before_a_create(cluster):
    fake, client = cluster
    fake.forbidden = True
    with pytest.raises(RuntimeError, match="403"):
        inference_service.deploy(client, version=VERSION, storage_uri=STORAGE, namespace=NAMESPACE)
    assert [method for method, *_ in fake.requests] == ["GET"]


def test_a_manifest_of_another_object_is_refused(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}))
    with pytest.raises(ValueError, match=r"other.yaml: expected kind InferenceService named mlnt-classifier, "
                                         r"found kind ConfigMap named x"):
        inference_service.load_manifest(other)
    with pytest.raises(FileNotFoundError, match="expected the InferenceService manifest of k8s/"):
        inference_service.load_manifest(tmp_path / "missing.yaml")
    other.write_text(yaml.safe_dump({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                                     "metadata": {"name": "another-model"}}))
    with pytest.raises(ValueError, match="found kind InferenceService named another-model"):
        inference_service.load_manifest(other)  # another InferenceService: created, it would serve beside ours


# ------------------------------------------------------------------------------------------------ the component
def _deploy_component(tmp_path, monkeypatch, version):
    """Run the KFP ``deploy`` component's own code in a pod (the service host set), with ``apply`` on, for a gate
    decision that released ``version``; returns its manifest artifact."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    (tmp_path / "decision").write_text(json.dumps({"passed": True, "version": version}))
    manifest = Artifact(name="manifest", uri=str(tmp_path / "manifest"))
    mlnt_pipeline.deploy.python_func(decision=Artifact(name="decision", uri=str(tmp_path / "decision")),
                                     storage_uri=STORAGE, namespace=NAMESPACE, apply=True, manifest=manifest)
    return manifest


def test_the_deploy_component_applies_through_kserve_client(cluster, tmp_path, monkeypatch):
    """The KFP ``deploy`` component's own code, with ``apply`` on: KServeClient (here: one for the fake cluster)
    patches the overlay's object, and the manifest artifact is what the cluster now serves."""
    fake, client = cluster
    applied = one("overlays/prod", "InferenceService")
    fake.objects[(NAMESPACE, inference_service.NAME)] = copy.deepcopy(applied)
    made = []
    monkeypatch.setattr(kserve, "KServeClient", lambda **kwargs: made.append(client) or client)  # as mlnt-deployer
    manifest = _deploy_component(tmp_path, monkeypatch, VERSION)
    assert made == [client] and [method for method, *_ in fake.requests] == ["GET", "PATCH"]
    assert yaml.safe_load((tmp_path / "manifest").read_text()) == with_run_fields(applied)
    assert manifest.metadata == {"version": VERSION, "applied": True, "action": "patched"}


# ----------------------------------------------------------------------------------------- deploys out of order
OLDER, NEWER = "v20261201T000001Z-aaaaaaaa", "v20261201T000002Z-bbbbbbbb"  # the gate's versions: by release time


def test_a_late_deploy_of_an_older_release_is_skipped_not_a_rollback(cluster, caplog):
    """Two runs release OLDER then NEWER; NEWER's deploy finishes first. OLDER's deploy then reads what is served
    and changes nothing (a GET, no PATCH), logging why; a deploy of the same or a newer version patches."""
    fake, client = cluster
    applied = one("overlays/prod", "InferenceService")
    fake.objects[(NAMESPACE, inference_service.NAME)] = copy.deepcopy(applied)
    assert inference_service.deploy(client, version=NEWER, storage_uri=STORAGE, namespace=NAMESPACE)[0] == "patched"
    fake.requests.clear()
    with caplog.at_level("WARNING", logger=inference_service.__name__):
        done, served = inference_service.deploy(client, version=OLDER, storage_uri=STORAGE, namespace=NAMESPACE)
    assert done == "skipped" and [method for method, *_ in fake.requests] == ["GET"]
    assert served == fake.objects[(NAMESPACE, inference_service.NAME)] == with_run_fields(applied, NEWER)
    assert f"serves {NEWER}, newer than {OLDER}" in caplog.text
    for version in (NEWER, "v20261201T000003Z-cccccccc"):
        assert inference_service.deploy(client, version=version, storage_uri=STORAGE, namespace=NAMESPACE)[0] == \
            "patched"
    assert inference_service.served_version(fake.objects[(NAMESPACE, inference_service.NAME)]) == \
        "v20261201T000003Z-cccccccc"


def _overtaken(monkeypatch, client, version: str) -> None:
    """The next ``deploy`` reads what is served, then ``version``'s deploy runs to its end before it writes."""
    read = inference_service.current

    def then_another_deploy(*args, **kwargs):
        served = read(*args, **kwargs)
        monkeypatch.setattr(inference_service, "current", read)
        inference_service.deploy(client, version=version, storage_uri=STORAGE, namespace=NAMESPACE)
        return served

    monkeypatch.setattr(inference_service, "current", then_another_deploy)


def test_a_deploy_overtaken_between_its_read_and_its_patch_reads_again_and_never_rolls_back(cluster, monkeypatch):
    """OLDER's deploy reads OLDER-than-nothing served, NEWER's deploy patches, then OLDER's patch names the
    resourceVersion it read: refused (409), OLDER reads again and skips. NEWER stays served."""
    fake, client = cluster
    applied = copy.deepcopy(one("overlays/prod", "InferenceService"))
    applied["metadata"]["resourceVersion"] = "1"
    fake.objects[(NAMESPACE, inference_service.NAME)] = applied
    _overtaken(monkeypatch, client, NEWER)
    done, served = inference_service.deploy(client, version=OLDER, storage_uri=STORAGE, namespace=NAMESPACE)
    assert done == "skipped" and inference_service.served_version(served) == NEWER
    assert [(method, (body or {}).get("metadata", {}).get("resourceVersion")) for method, _, _, body in
            fake.requests] == [("GET", None), ("GET", None), ("PATCH", "1"), ("PATCH", "1"), ("GET", None)]
    assert inference_service.served_version(fake.objects[(NAMESPACE, inference_service.NAME)]) == NEWER


def test_a_create_that_finds_the_object_created_meanwhile_reads_again(cluster, monkeypatch):
    fake, client = cluster
    _overtaken(monkeypatch, client, NEWER)
    done, served = inference_service.deploy(client, version=OLDER, storage_uri=STORAGE, namespace=NAMESPACE)
    assert done == "skipped" and inference_service.served_version(served) == NEWER
    assert [method for method, *_ in fake.requests] == ["GET", "GET", "POST", "POST", "GET"]


def test_a_deploy_overtaken_every_time_fails_naming_the_object(cluster, monkeypatch):
    fake, client = cluster
    fake.objects[(NAMESPACE, inference_service.NAME)] = {"metadata": {"name": inference_service.NAME,
                                                                      "resourceVersion": "1"}}
    monkeypatch.setattr(inference_service, "read_at", lambda fields, _: inference_service.merged(
        fields, {"metadata": {"resourceVersion": "0"}}))  # always a stale read
    with pytest.raises(RuntimeError, match=f"{NAMESPACE}/{inference_service.NAME}: expected to write it after "
                                           f"reading it, found it changed in between 5 times in a row"):
        inference_service.deploy(client, version=NEWER, storage_uri=STORAGE, namespace=NAMESPACE)


def test_the_served_version_falls_back_to_the_storage_uri(cluster):
    """An object patched by hand (docs/deploy.md: storageUri only) names its version in storageUri alone."""
    fake, client = cluster
    applied = copy.deepcopy(one("base", "InferenceService"))  # one() returns the cached render: never mutate it
    applied["metadata"].get("annotations", {}).pop(inference_service.VERSION_ANNOTATION, None)
    applied["spec"]["predictor"]["model"]["storageUri"] = f"{STORAGE}/{NEWER}"
    fake.objects[(NAMESPACE, inference_service.NAME)] = applied
    assert inference_service.served_version(applied) == NEWER
    assert inference_service.deploy(client, version=OLDER, storage_uri=STORAGE, namespace=NAMESPACE)[0] == "skipped"
    assert inference_service.older(OLDER, NEWER) and not inference_service.older(NEWER, OLDER)
    assert not inference_service.older(OLDER, OLDER) and not inference_service.older(OLDER, "placeholder")


def test_releases_within_the_same_second_are_not_older_than_each_other():
    """``older`` orders the gate's versions by their UTC second alone ("the same second is not older"): the hash
    after it says nothing of which came first, so either deploy of two releases made in one second patches."""
    first, second = "v20261201T000001Z-bbbbbbbb", "v20261201T000001Z-aaaaaaaa"
    assert not inference_service.older(first, second) and not inference_service.older(second, first)
    by_hand = {"spec": {"predictor": {"model": {"storageUri": f"{STORAGE}/{first}/"}}}}  # a trailing slash
    assert inference_service.served_version(by_hand) == first


def test_the_deploy_component_skips_an_older_release_and_succeeds(cluster, tmp_path, monkeypatch, capsys):
    fake, client = cluster
    fake.objects[(NAMESPACE, inference_service.NAME)] = with_run_fields(one("overlays/prod", "InferenceService"),
                                                                        NEWER)
    monkeypatch.setattr(kserve, "KServeClient", lambda **kwargs: client)
    manifest = _deploy_component(tmp_path, monkeypatch, OLDER)
    assert [method for method, *_ in fake.requests] == ["GET"]
    assert manifest.metadata == {"version": OLDER, "applied": True, "action": "skipped"}
    assert inference_service.served_version(yaml.safe_load((tmp_path / "manifest").read_text())) == NEWER
    assert f"deploy: not deployed: {OLDER} is older than the version served, {NEWER}" in capsys.readouterr().out
