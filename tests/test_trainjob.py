"""pipelines/trainjob.py submits, through the Kubeflow SDK, the TrainJob k8s/overlays/prod/training declares; that
TrainJob's command trains data-parallel with the variables Kubeflow Trainer's torch runtime sets.

No cluster here: the SDK's own Kubernetes backend runs against a fake of the Kubernetes custom-objects API that
answers the runtime lookup and records what the SDK creates. The SDK's local-process backend cannot run this job
(``test_the_sdks_local_backend_runs_functions_only`` says why), so the job's command runs here directly instead,
as two torchrun agents standing for two nodes.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client import ApiException, Configuration

from components.common import telemetry
from pipelines import pushgateway, trainjob
from tests.components.conftest import workdir  # noqa: F401 - the tiny workspace, a fixture
from tests.test_k8s import one, schema_errors
from tests.test_pushgateway_auth import AT

ROOT = Path(__file__).resolve().parents[1]
# kubeflow 0.5.0's pydantic models still use class-based config
pytestmark = pytest.mark.filterwarnings("ignore:Support for class-based `config` is deprecated:DeprecationWarning")
# The torch-distributed ClusterTrainingRuntime as Kubeflow Trainer installs it, as far as the SDK reads it.
TORCH_DISTRIBUTED = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
             "template": {"spec": {"replicatedJobs": [{"name": "node", "template": {
                 "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                 "spec": {"template": {"spec": {"containers": [
                     {"name": "node", "image": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime"}]}}}}}]}}}}


class Answered:
    """What ``async_req=True`` returns: a thread-like result."""

    def __init__(self, value: dict):
        self.value = value

    def get(self, timeout: float | None = None) -> dict:
        return self.value


# The rights the submitting identity needs, as docs/deploy.md and pipelines/trainjob.py state them: (verb, resource of
# trainer.kubeflow.org, namespace; None: cluster-scoped). The SDK reads the namespaced TrainingRuntime first and the
# ClusterTrainingRuntime only on a 404; without the first right the API answers 403 and the SDK gives up.
RIGHTS = {("get", "trainingruntimes", "mlnt"), ("get", "clustertrainingruntimes", None),
          ("create", "trainjobs", "mlnt")}


class FakeCustomObjects:
    """The calls the SDK makes to submit a job: look the runtime up (namespaced first), then create the TrainJob. As
    the API server does, it authorizes each call first: a call outside ``rights`` is a 403."""

    def __init__(self, rights: set[tuple] = frozenset(RIGHTS)):
        self.rights = rights
        self.lookups: list[tuple] = []
        self.created: list[tuple] = []

    def _authorize(self, verb: str, group: str, plural: str, namespace: str | None) -> None:
        if group != "trainer.kubeflow.org" or (verb, plural, namespace) not in self.rights:
            where = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            raise ApiException(status=403, reason=f'Forbidden: cannot {verb} resource "{plural}" in API group '
                                                  f'"{group}" {where}')

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **_):
        self._authorize("get", group, plural, namespace)
        self.lookups.append((group, version, namespace, plural, name))
        raise ApiException(status=404, reason="Not Found")

    def get_cluster_custom_object(self, group, version, plural, name, **_):
        self._authorize("get", group, plural, None)
        self.lookups.append((group, version, plural, name))
        if name != TORCH_DISTRIBUTED["metadata"]["name"]:
            raise ApiException(status=404, reason="Not Found")
        return Answered(copy.deepcopy(TORCH_DISTRIBUTED))

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **_):
        self._authorize("create", group, plural, namespace)
        self.created.append((group, version, namespace, plural, body))
        return body


@pytest.fixture
def cluster(monkeypatch):
    """A TrainerClient on the SDK's Kubernetes backend whose custom-objects API is a FakeCustomObjects."""
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient  # noqa: PLC0415
    from kubeflow.trainer.backends.kubernetes.backend import KubernetesBackend  # noqa: PLC0415

    # The backend reads the controller's version from a ConfigMap when it starts (a warning if it cannot).
    monkeypatch.setattr(KubernetesBackend, "verify_backend", lambda self: None)
    client = TrainerClient(KubernetesBackendConfig(namespace="mlnt", client_configuration=Configuration()))
    client.backend.custom_api = FakeCustomObjects()
    return client


def without_ownership(spec: dict) -> dict:
    """A TrainJob spec without what differs by who submits it: the patches' manager, whether it starts suspended (an
    older manifest's did), the
    image's digest (prod pins it, k8s/overlays/prod; the SDK submits what --image names), and the Pushgateway's
    variables, the pipeline's name with them (the manifest reads them from the ConfigMap and the Secret
    mlnt-pushgateway; the SDK can give the trainer literal values only:
    ``test_the_sdk_passes_the_pushgateway_as_literal_values_and_the_secret_as_a_file``)."""
    spec = {key: value for key, value in copy.deepcopy(spec).items() if key != "suspend"}
    for patch in spec.get("runtimePatches", []):
        patch.pop("manager")
    if "image" in spec.get("trainer", {}):
        spec["trainer"]["image"] = spec["trainer"]["image"].partition("@")[0]
    if "env" in spec.get("trainer", {}):
        spec["trainer"]["env"] = [e for e in spec["trainer"]["env"] if not e["name"].startswith("MLNT_PUSHGATEWAY")
                                  and e["name"] != telemetry.PIPELINE_ENV]
    return spec


def test_the_sdk_submits_the_trainjob_that_k8s_overlays_prod_declares(cluster):
    name = trainjob.submit(trainjob.TrainJobSettings(), name="mlnt-train", client=cluster)
    api = cluster.backend.custom_api
    assert name == "mlnt-train" and len(api.created) == 1
    group, version, namespace, plural, body = api.created[0]
    assert (f"{group}/{version}", namespace, plural) == ("trainer.kubeflow.org/v1alpha1", "mlnt", "trainjobs")
    assert api.lookups[-1] == ("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes", "torch-distributed")
    declared = one("overlays/prod", "TrainJob")
    assert (body["apiVersion"], body["kind"], body["metadata"]["name"]) == (
        declared["apiVersion"], declared["kind"], declared["metadata"]["name"])
    assert body["metadata"]["labels"].items() <= declared["metadata"]["labels"].items()
    assert without_ownership(body["spec"]) == without_ownership(declared["spec"])
    assert [patch["manager"] for patch in body["spec"]["runtimePatches"]] == ["trainer.kubeflow.org/kubeflow-sdk"]
    assert "suspend" not in body["spec"], "submitting from Python starts the job"
    assert not schema_errors({**body, "metadata": {**body["metadata"], "namespace": namespace}})


def test_the_sdks_job_trains_on_cuda_without_an_istio_sidecar(cluster):
    """What the comparison above holds, said outright: the pods the SDK's patch describes turn Istio's sidecar off,
    label and annotation (a sidecar keeps a finished pod running: kubeflow/trainer#1778), and the step trains with
    ``--set mlnt.device=cuda`` (a node whose driver torch cannot use fails the job rather than train on its CPU)."""
    trainjob.submit(trainjob.TrainJobSettings(), name="mlnt-train", client=cluster)
    body = cluster.backend.custom_api.created[0][4]
    template = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]
    no_sidecar = {"sidecar.istio.io/inject": "false"}
    assert template["metadata"]["labels"].items() >= no_sidecar.items()
    assert template["metadata"]["annotations"] == no_sidecar
    assert body["spec"]["trainer"]["args"][-2:] == ["--set", "mlnt.device=cuda"]


def test_the_manifest_reads_the_pushgateway_the_sdk_cannot_reference():
    """What without_ownership leaves out of the comparison: the manifest's references, which the SDK cannot write."""
    env = {e["name"]: e for e in one("overlays/prod", "TrainJob")["spec"]["trainer"]["env"]}
    assert env["MLNT_PUSHGATEWAY"]["valueFrom"]["configMapKeyRef"]["name"] == pushgateway.CONFIG_MAP
    assert env[telemetry.PIPELINE_ENV]["valueFrom"]["configMapKeyRef"] == {
        "name": pushgateway.CONFIG_MAP, "key": pushgateway.PIPELINE_KEY, "optional": True}
    assert {env[n]["valueFrom"]["secretKeyRef"]["name"] for n in ("MLNT_PUSHGATEWAY_USERNAME",
                                                                  "MLNT_PUSHGATEWAY_PASSWORD")} == {pushgateway.SECRET}


def test_the_sdk_passes_the_pushgateway_as_literal_values_and_the_secret_as_a_file(cluster):
    """The Kubeflow SDK (0.5.0) gives the trainer literal variables only, and Kubeflow Trainer takes the node
    container's variables from spec.trainer alone: the address and the pipeline's name are values, the password the
    Secret mounted as a file (optional: a missing Secret is telemetry's warning, not a pod that never starts)."""
    address = "http://prometheus-pushgateway.monitoring.svc:9091"
    trainjob.submit(trainjob.TrainJobSettings(pushgateway=address, pushgateway_user="mlnt-pipeline",
                                              pipeline="clothing1m"), name="mlnt-train", client=cluster)
    namespace, body = cluster.backend.custom_api.created[0][2], cluster.backend.custom_api.created[0][4]
    env = {e["name"]: e["value"] for e in body["spec"]["trainer"]["env"]}
    password = f"{pushgateway.SECRET_MOUNT}/{pushgateway.PASSWORD_KEY}"
    assert env == {"HOME": "/tmp", telemetry.PUSHGATEWAY_ENV: address, telemetry.PIPELINE_ENV: "clothing1m",
                   telemetry.USERNAME_ENV: "mlnt-pipeline", telemetry.PASSWORD_FILE_ENV: password}
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert {"name": "pushgateway", "secret": {"secretName": pushgateway.SECRET, "optional": True}} in pod["volumes"]
    assert {"name": "pushgateway", "mountPath": pushgateway.SECRET_MOUNT, "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    assert not schema_errors({**body, "metadata": {**body["metadata"], "namespace": namespace}})


def test_the_sdk_without_a_pushgateway_sets_nothing_of_it(cluster):
    trainjob.submit(trainjob.TrainJobSettings(), client=cluster)
    body = cluster.backend.custom_api.created[0][4]
    assert body["spec"]["trainer"]["env"] == [{"name": "HOME", "value": "/tmp"}]
    assert "pushgateway" not in json.dumps(body["spec"]["runtimePatches"])


def test_other_settings_reach_the_submitted_job(cluster):
    settings = trainjob.TrainJobSettings(image="registry.example/mlnt:1.0-gpu", num_nodes=4, gpus_per_node=2,
                                         memory="64Gi")
    trainjob.submit(settings, client=cluster)
    body = cluster.backend.custom_api.created[0][4]
    assert body["metadata"]["name"]  # the SDK made one up
    spec = body["spec"]["trainer"]
    assert (spec["image"], spec["numNodes"]) == ("registry.example/mlnt:1.0-gpu", 4)
    assert spec["resourcesPerNode"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 2}


@pytest.mark.parametrize("right", sorted(RIGHTS, key=str))
def test_the_documented_rights_are_the_ones_submitting_needs(cluster, right):
    """With the rights docs/deploy.md and the module name (RIGHTS, which FakeCustomObjects enforces) the SDK submits
    (the tests above); without any one of them, nothing is created."""
    for text in (trainjob.__doc__, (ROOT / "docs" / "deploy.md").read_text()):
        words = " ".join(text.split())
        for verb, plural, _ in RIGHTS:
            assert f"``{verb}`` on ``{plural}``" in words or f"`{verb}` on `{plural}`" in words, (verb, plural)
    cluster.backend.custom_api.rights = RIGHTS - {right}
    with pytest.raises(RuntimeError) as raised:
        trainjob.submit(trainjob.TrainJobSettings(), name="mlnt-train", client=cluster)
    assert not cluster.backend.custom_api.created
    assert "403" in str(raised.value.__cause__) or "403" in str(raised.value), raised.value


def test_an_unknown_runtime_is_reported_before_anything_is_created(cluster, monkeypatch):
    monkeypatch.setattr(trainjob, "RUNTIME", "torch-distributed-typo")
    with pytest.raises(RuntimeError, match="torch-distributed-typo"):
        trainjob.submit(trainjob.TrainJobSettings(), client=cluster)
    assert not cluster.backend.custom_api.created


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("num_nodes", 0, "num_nodes: expected at least 1, found 0"),
    ("gpus_per_node", 0, "gpus_per_node: expected at least 1 (CPU runs: apply k8s/overlays/dev), found 0"),
    ("pushgateway", f"https://user:pw{AT}pushgateway:9091", "pushgateway: credentials in the address are never read "
     "(and would be stored in the TrainJob): give the user with pushgateway_user and the password in the Secret "
     "mlnt-pushgateway"),
    ("pushgateway_user", "mlnt-pipeline", "pushgateway_user: set without pushgateway, the address it authenticates "
     "to"),
    ("pipeline", "prod pipeline", "pipeline (the name the pushed metrics are grouped under): expected 1 to 63 letters, "
     "digits, '.', '_' or '-', starting with a letter or digit, found 'prod pipeline'"),
    ("cpu", "eight", "cpu: expected a Kubernetes quantity above 0 such as 8 or 500m, found 'eight'"),
    ("cpu", "-4", "cpu: expected a Kubernetes quantity above 0 such as 8 or 500m, found '-4'"),
    ("cpu", "inf", "cpu: expected a Kubernetes quantity above 0 such as 8 or 500m, found 'inf'"),
    ("cpu", " 8", "cpu: expected a Kubernetes quantity above 0 such as 8 or 500m, found ' 8'"),
    ("memory", "32GB", "memory: expected a Kubernetes quantity above 0 such as 32Gi or 64G, found '32GB'"),
    ("memory", "0", "memory: expected a Kubernetes quantity above 0 such as 32Gi or 64G, found '0'"),
    ("shm", "lots", "shm: expected a Kubernetes quantity above 0 such as 8Gi or 512Mi, found 'lots'"),
    ("shm", "32Gi", "shm: expected less than memory (32Gi), found '32Gi': /dev/shm counts against the pod's memory "
     "limit"),
])
def test_settings_name_what_they_reject(field, value, expected):
    with pytest.raises(ValueError) as raised:
        trainjob.TrainJobSettings(**{field: value})
    assert str(raised.value) == expected


def test_submit_without_a_client_uses_kubectls_cluster_in_the_namespace_and_context_given(monkeypatch):
    """``--namespace`` and ``--context`` reach the SDK's Kubernetes backend: a job for another cluster or namespace
    is never created in the kubeconfig's current one."""
    import kubeflow.trainer  # noqa: PLC0415

    made = []

    class Client:
        def __init__(self, backend):
            made.append(backend)

        def train(self, **kwargs):
            return "mlnt-abc"

    monkeypatch.setattr(kubeflow.trainer, "TrainerClient", Client)
    assert trainjob.submit(trainjob.TrainJobSettings(), namespace="mlnt-gpu", context="gpu-cluster") == "mlnt-abc"
    assert [(backend.namespace, backend.context) for backend in made] == [("mlnt-gpu", "gpu-cluster")]


def test_the_cli_takes_the_image_and_the_resources_per_node(monkeypatch):
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append(settings) or "mlnt-abc")
    assert trainjob.main(["--image", "registry/mlnt@sha256:" + "0" * 64, "--cpu", "16", "--memory", "64Gi"]) == 0
    assert (calls[0].image, calls[0].cpu, calls[0].memory) == ("registry/mlnt@sha256:" + "0" * 64, "16", "64Gi")


def test_the_cli_names_a_bad_resource_before_it_reaches_the_cluster(monkeypatch, capsys):
    """Without a check, ``eight`` or ``32GB`` fail as a long 422 from the API server, and ``-4`` or ``0`` pass its
    pattern and fail later, in the JobSet's events; here, no cluster is asked."""
    monkeypatch.setattr(trainjob, "submit", lambda *a, **kw: pytest.fail("submitted"))
    assert trainjob.main(["--memory", "32GB"]) == 1
    assert capsys.readouterr().err == ("error: pipelines.trainjob: memory: expected a Kubernetes quantity above 0 "
                                       "such as 32Gi or 64G, found '32GB'\n")


def test_the_cli_takes_the_shared_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append(settings) or "mlnt-abc")
    monkeypatch.chdir(ROOT)
    assert trainjob.main(["--memory", "64Gi", "--shm", "16Gi"]) == 0
    assert (calls[0].memory, calls[0].shm) == ("64Gi", "16Gi")


def test_the_cli_submits_its_settings(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append((settings, kw)) or "mlnt-abc")
    monkeypatch.delenv("MLNT_PIPELINE", raising=False)
    assert trainjob.main(["--nodes", "4", "--gpus-per-node", "2", "--context", "gpu-cluster"]) == 0
    settings, kw = calls[0]
    assert (settings.num_nodes, settings.gpus_per_node, settings.image) == (4, 2, trainjob.IMAGE)
    assert kw == {"name": None, "namespace": "mlnt", "context": "gpu-cluster"}
    assert "submitted TrainJob mlnt/mlnt-abc" in capsys.readouterr().out
    assert calls[0][0].pipeline == telemetry.DEFAULT_PIPELINE
    monkeypatch.setenv("MLNT_PUSHGATEWAY", "pushgateway.monitoring.svc:9091")  # the default of --pushgateway
    monkeypatch.setenv("MLNT_PIPELINE", "fashion-mnist-prod")  # the default of --pipeline
    assert trainjob.main(["--pushgateway-user", "mlnt-pipeline"]) == 0
    assert (calls[-1][0].pushgateway, calls[-1][0].pushgateway_user) == ("pushgateway.monitoring.svc:9091",
                                                                         "mlnt-pipeline")
    assert calls[-1][0].pipeline == "fashion-mnist-prod"
    assert trainjob.main(["--pipeline", "clothing1m"]) == 0 and calls[-1][0].pipeline == "clothing1m"
    capsys.readouterr()
    assert trainjob.main(["--nodes", "0"]) == 1
    assert capsys.readouterr().err == "error: pipelines.trainjob: num_nodes: expected at least 1, found 0\n"


def test_the_cli_passes_a_params_file_and_overrides_to_the_step(cluster, monkeypatch):
    """``--params`` (a path inside the pod) and ``--set`` reach the step's command, the user's overrides before
    ``--set mlnt.device=cuda``, which stays last (it wins over a user's device)."""
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append(settings) or "mlnt-abc")
    monkeypatch.chdir(ROOT)
    argv = ["--params", "/app/recipes/clothing1m.yaml", "--set", "mlnt.epochs=3", "--set", "mlnt.lr=0.01"]
    assert trainjob.main(argv) == 0
    (settings,) = calls
    assert (settings.params, settings.overrides) == ("/app/recipes/clothing1m.yaml", ("mlnt.epochs=3", "mlnt.lr=0.01"))
    monkeypatch.undo()
    trainjob.submit(settings, name="mlnt-train", client=cluster)
    args = cluster.backend.custom_api.created[0][4]["spec"]["trainer"]["args"]
    assert args == ["-m", "components.mlnt", "--params", "/app/recipes/clothing1m.yaml", "--set", "mlnt.epochs=3",
                    "--set", "mlnt.lr=0.01", "--set", "mlnt.device=cuda"]


def test_the_image_holds_the_recipes_a_job_can_name():
    """``--params /app/recipes/<name>.yaml`` names a file the image holds: the Dockerfile copies recipes/."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nCOPY recipes/ recipes/\n" in dockerfile
    assert "recipes" not in (ROOT / ".dockerignore").read_text().split()


@pytest.mark.parametrize(("argv", "expected"), [
    (["--nodes", "3"], "params.yaml: mlnt.batch_size: expected a multiple of the 3 processes, found 128 "
                       "(3 nodes x 1 GPU per node)"),
    (["--nodes", "2", "--gpus-per-node", "3"], "params.yaml: mlnt.batch_size: expected a multiple of the 6 "
                                               "processes, found 128 (2 nodes x 3 GPUs per node)"),
    (["--set", "mlnt.batch_size=129"], "params.yaml with --set overrides: mlnt.batch_size: expected a multiple of "
                                       "the 2 processes, found 129 (2 nodes x 1 GPU per node)"),
    # the job's params file, read from this checkout's copy: /app/recipes/clothing1m.yaml is recipes/clothing1m.yaml
    (["--params", "/app/recipes/clothing1m.yaml", "--nodes", "3"], "recipes/clothing1m.yaml: mlnt.batch_size: "
     "expected a multiple of the 3 processes, found 32 (3 nodes x 1 GPU per node)"),
    # what the step itself would refuse, refused before the job holds any GPU
    (["--set", "mlnt.epoch=3"], "--set 'mlnt.epoch=3': unknown key 'epoch' in section 'mlnt'. Valid: "),
    (["--set", "baseline.epochs=3"], "--set 'baseline.epochs=3': unknown section 'baseline'. Valid: mlnt"),
    (["--set", "mlnt.epochs=0"], "params.yaml with --set overrides: mlnt: epochs: expected an integer >= 1"),
])
def test_what_the_step_would_refuse_is_refused_before_submitting(monkeypatch, capsys, argv, expected):
    """The job's processes parse the params file with the overrides, and each fails on a global batch it cannot
    share with the others: after the GPU nodes are scheduled. This checkout's copy of the params file tells now."""
    monkeypatch.setattr(trainjob, "submit", lambda *a, **kw: pytest.fail("submitted"))
    monkeypatch.chdir(ROOT)
    assert trainjob.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: pipelines.trainjob: {expected}"), err


def test_the_local_params_file_can_be_named(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append(settings) or "mlnt-abc")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("mlnt:\n  batch_size: 96\n")
    assert trainjob.main(["--params", "/mnt/params/mine.yaml", "--local-params", "mine.yaml", "--nodes", "3"]) == 0
    assert calls[0].params == "/mnt/params/mine.yaml"
    assert trainjob.main(["--local-params", "mine.yaml", "--nodes", "5"]) == 1
    assert "mine.yaml: mlnt.batch_size: expected a multiple of the 5 processes, found 96" in capsys.readouterr().err
    assert trainjob.main(["--local-params", "missing.yaml"]) == 1
    assert capsys.readouterr().err == ("error: pipelines.trainjob: --local-params: expected a params file, found "
                                       "none at missing.yaml\n")


def test_without_a_local_copy_the_overrides_are_checked_and_the_job_submitted_with_a_note(monkeypatch, capsys,
                                                                                         tmp_path):
    calls = []
    monkeypatch.setattr(trainjob, "submit", lambda settings, **kw: calls.append(settings) or "mlnt-abc")
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert trainjob.main(["--nodes", "3", "--set", "mlnt.epochs=3"]) == 0 and len(calls) == 1
    err = capsys.readouterr().err
    assert "note: pipelines.trainjob: no local copy of /app/params.yaml (params.yaml)" in err
    assert "batch_size" in err  # what the job will check itself
    assert trainjob.main(["--set", "mlnt.epoch=3"]) == 1 and len(calls) == 1
    assert "unknown key 'epoch' in section 'mlnt'" in capsys.readouterr().err


def test_the_sdks_local_backend_runs_functions_only():
    """Why the job does not run through the SDK's local-process backend (kubeflow 0.5.0): it accepts a CustomTrainer
    (a Python function) only, not a container's command such as ``torchrun -m components.mlnt``; and it runs the
    function with ``torchrun`` from a fresh virtual environment into which it first pip-installs the runtime's
    packages (torch) from the index, with no access to this environment. When this fails, the SDK takes commands
    locally: run the job's command through it in test_the_trainjobs_command_trains_on_two_nodes_...."""
    from kubeflow.trainer import LocalProcessBackendConfig, TrainerClient  # noqa: PLC0415

    local = TrainerClient(LocalProcessBackendConfig())
    settings = trainjob.TrainJobSettings()
    with pytest.raises(ValueError, match="CustomTrainer must be set with LocalProcessBackend"):
        local.train(runtime=trainjob.RUNTIME, trainer=trainjob.trainer(settings))
    with pytest.raises(ValueError, match="not compatible with LocalProcessBackend"):
        local.train(runtime=trainjob.RUNTIME, trainer=trainjob.trainer(settings), options=trainjob.options(settings))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_nodes(folder: Path, args: list[str], *, nodes: int) -> list[subprocess.CompletedProcess]:
    """The TrainJob's command on ``nodes`` nodes, here: one torchrun per node, each with the environment Kubeflow
    Trainer's torch plugin gives a node (one process per node, as numProcPerNode: 1 says)."""
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun) if torchrun.is_file() else shutil.which("torchrun"), *args]
    env = {key: value for key, value in os.environ.items()
           if key not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), PET_NNODES=str(nodes), PET_NPROC_PER_NODE="1",
               PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(free_port()))
    started = [subprocess.Popen(command, cwd=folder, env={**env, "PET_NODE_RANK": str(rank)}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(nodes)]
    finished = []
    for process in started:
        try:
            out, err = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in started:
                other.kill()
            raise
        finished.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    return finished


def test_the_trainjobs_command_trains_on_two_nodes_with_the_runtimes_variables(workdir):  # noqa: F811
    """What each node of k8s/base's TrainJob runs (its trainer's command and args, the params file of the tiny
    workspace in place of the image's) with PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_ADDR and
    PET_MASTER_PORT, as the torch-distributed runtime sets them: torchrun takes them for its flags and the step trains
    with two processes, rank 0 writing the outputs. A global batch the two cannot share fails on both, which shows
    the step saw both."""
    from components import baseline, ingest, noise  # noqa: PLC0415

    for step in (ingest, noise, baseline):
        assert step.main([]) == 0
    trainer = one("base", "TrainJob")["spec"]["trainer"]
    assert trainer["numProcPerNode"] == 1 and trainer["args"][-1] == "/app/params.yaml"
    args = [*trainer["command"][1:], *trainer["args"][:-1], str(workdir / "params.yaml")]

    nodes = run_nodes(workdir, args, nodes=2)
    assert all(node.returncode == 0 for node in nodes), "\n".join(node.stderr[-3000:] for node in nodes)
    assert [node.stdout.count("mlnt (head): released the") for node in nodes] == [1, 1]
    assert (workdir / "artifacts" / "mlnt" / "teacher.pt").is_file()

    odd = run_nodes(workdir, [*args, "--set", "mlnt.batch_size=33"], nodes=2)
    assert all(node.returncode != 0 for node in odd)
    assert all("batch_size: expected a multiple of the 2 processes, found 33" in node.stderr for node in odd), \
        odd[0].stderr[-3000:]
