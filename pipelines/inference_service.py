"""The pipeline's ``deploy`` step: the InferenceService that k8s/ defines, serving the released version, applied
through KServe's own client (``kserve.KServeClient``).

k8s/ owns the object: ``k8s/base/serving/inferenceservice.yaml`` (RawDeployment mode, the pod's security context, no
API token), patched by each overlay (prod's replicas and autoscaling) and applied with ``kubectl apply -k``. A run
decides three fields only, the *run fields*: ``metadata.namespace``, the annotation ``mlnt.io/model-version`` and
``spec.predictor.model.storageUri`` (``<storage_uri>/<version>``). So the step

- merge-patches the run fields and nothing else where the InferenceService exists: whatever overlay applied it,
  the object stays that overlay's;
- creates it from the base manifest, with the run fields set, where it does not exist (a cluster where k8s/ was not
  applied yet; ``kubectl apply -k k8s/overlays/<env>`` later adds the overlay's fields and keeps the version);
- without a client (``apply`` off, e.g. ``pipelines.run --local``), applies nothing and returns the object it would
  create;
- changes nothing where the InferenceService already serves a newer version (its annotation ``mlnt.io/model-version``,
  or else the last part of its ``storageUri``): two runs' deploy steps may finish in either order, and the gate's
  versions (``vYYYYMMDDTHHMMSSZ-<hash>``) sort by release time, so a late deploy of an older run is skipped with a
  log line (``"skipped"``), never a rollback. A version not of that form is deployed as before. A get then a patch
  that names the ``resourceVersion`` read: where another deploy wrote in between, the API server refuses the patch
  (409 Conflict) and the step reads and decides again (a create that finds the object created: the same).

Its service account may get, create and patch InferenceServices (k8s/base/rbac.yaml), not update or delete them:
hence a merge patch, never a replace.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kserve import KServeClient, V1beta1InferenceService
from kubernetes.client import ApiException, V1ObjectMeta

# The manifest of k8s/ (the base, before an overlay's patches), found next to the package: in a checkout, and in the
# image where the Dockerfile copies it (only creating the InferenceService reads it).
MANIFEST = Path(__file__).resolve().parents[1] / "k8s" / "base" / "serving" / "inferenceservice.yaml"
NAME = "mlnt-classifier"  # the manifest's metadata.name (tested); known without the manifest, to patch
VERSION_ANNOTATION = "mlnt.io/model-version"
RELEASE_VERSION = re.compile(r"v(\d{8}T\d{6}Z)-[0-9a-f]+")  # the gate's versions: v20261126T145519Z-7fcff30e
ATTEMPTS = 5  # reads and writes of a deploy that other deploys keep overtaking, before the step fails
log = logging.getLogger(__name__)


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """The InferenceService of ``path``, checked to be the one this step deploys."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: expected the InferenceService manifest of k8s/, found no file (creating the "
                                f"InferenceService needs it; patching one that `kubectl apply -k` created does not)")
    service = yaml.safe_load(path.read_text())
    found = (service.get("kind"), service.get("metadata", {}).get("name")) if isinstance(service, dict) else (
        type(service).__name__, None)
    if found != ("InferenceService", NAME):
        raise ValueError(f"{path}: expected kind InferenceService named {NAME}, found kind {found[0]} named {found[1]}")
    return service


def run_fields(*, version: str, storage_uri: str, namespace: str) -> dict[str, Any]:
    """The fields a run decides, as a JSON merge patch (RFC 7386) of the InferenceService."""
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": NAME, "namespace": namespace, "annotations": {VERSION_ANNOTATION: version}},
            "spec": {"predictor": {"model": {"storageUri": f"{storage_uri.rstrip('/')}/{version}"}}}}


def merged(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``target`` with the JSON merge patch ``patch`` applied (RFC 7386: what the API server does with it)."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = merged(result[key] if isinstance(result.get(key), dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def as_kserve(service: dict[str, Any]) -> V1beta1InferenceService:
    """``service`` as KServeClient takes it. The spec stays the manifest's mapping: kserve's generated models cannot
    read a manifest back (their deserialiser looks for V1ObjectMeta in kserve.models), and a mapping loses no field."""
    attributes = {key: attr for attr, key in V1ObjectMeta.attribute_map.items()}
    unknown = sorted(set(service["metadata"]) - set(attributes))
    if unknown:
        raise ValueError(f"InferenceService metadata: unknown field(s) {', '.join(unknown)}")
    metadata = V1ObjectMeta(**{attributes[key]: value for key, value in service["metadata"].items()})
    return V1beta1InferenceService(api_version=service["apiVersion"], kind=service["kind"], metadata=metadata,
                                   spec=service["spec"])


def api_status(err: RuntimeError) -> int | None:
    """The HTTP status of the API's answer that KServeClient wrapped in ``err`` (it keeps the ApiException as the
    context); None where there was no answer."""
    return err.__context__.status if isinstance(err.__context__, ApiException) else None


def current(client: KServeClient, namespace: str) -> dict[str, Any] | None:
    """The InferenceService in ``namespace`` as the cluster has it, None where there is none; any error but "not
    found" is raised."""
    try:
        return client.get(NAME, namespace=namespace)
    except RuntimeError as err:
        if api_status(err) == 404:
            return None
        raise


def served_version(service: dict[str, Any] | None) -> str | None:
    """The version ``service`` serves: its ``mlnt.io/model-version`` annotation, or else the last part of its
    ``storageUri``; None when it names none."""
    if not isinstance(service, dict):
        return None
    version = ((service.get("metadata") or {}).get("annotations") or {}).get(VERSION_ANNOTATION)
    if not version:
        uri = (((service.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri") or ""
        version = uri.rstrip("/").rpartition("/")[2] or None
    return version


def older(version: str, than: str | None) -> bool:
    """Whether the release ``version`` was released before ``than``: both must be the gate's versions (their UTC
    time decides; the same second is not older); anything else is never older."""
    mine, theirs = RELEASE_VERSION.fullmatch(version), RELEASE_VERSION.fullmatch(than or "")
    return bool(mine and theirs and mine.group(1) < theirs.group(1))


def deploy(client: KServeClient | None, *, version: str, storage_uri: str, namespace: str,
           manifest: Path = MANIFEST) -> tuple[str, dict[str, Any]]:
    """Serve ``version``: patch the run fields into the InferenceService, or create it from ``manifest``; with no
    ``client``, apply nothing; where the InferenceService serves a newer version already, change nothing. Returns
    what was done ("patched", "created", "skipped" or "not applied") and the object: the cluster's answer (as served,
    when skipped), or the object a create would send. The patch names the ``resourceVersion`` read: where another
    deploy wrote in between (409 Conflict, or AlreadyExists for a create), the step reads and decides again."""
    fields = run_fields(version=version, storage_uri=storage_uri, namespace=namespace)
    if client is None:
        return "not applied", merged(load_manifest(manifest), fields)
    for _ in range(ATTEMPTS):
        served = current(client, namespace)
        if served is not None and older(version, served_version(served)):
            log.warning("deploy: skipped: %s/%s serves %s, newer than %s (a later run deployed first); nothing "
                        "changed", namespace, NAME, served_version(served), version)
            return "skipped", served
        try:
            if served is None:
                return "created", client.create(as_kserve(merged(load_manifest(manifest), fields)),
                                                namespace=namespace)
            return "patched", client.patch(NAME, as_kserve(read_at(fields, served)), namespace=namespace)
        except RuntimeError as err:
            if api_status(err) != 409:
                raise
            log.warning("deploy: %s/%s changed after it was read (another run's deploy): reading it again",
                        namespace, NAME)
    raise RuntimeError(f"deploy: {namespace}/{NAME}: expected to write it after reading it, found it changed in "
                       f"between {ATTEMPTS} times in a row; run the step again")


def read_at(fields: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with the ``resourceVersion`` of ``served`` (if it has one): the API server then refuses the patch
    with 409 Conflict where the object changed since it was read, instead of writing over another deploy."""
    read = (served.get("metadata") or {}).get("resourceVersion")
    return merged(fields, {"metadata": {"resourceVersion": read}}) if read else fields


def write(service: dict[str, Any], path: str | Path) -> None:
    """The object as YAML at ``path``, through a temporary file: a crash never leaves half a manifest."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            yaml.safe_dump(service, fh, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
