"""Submit the multi-GPU mlnt step as a Kubeflow Trainer TrainJob, from Python, with the Kubeflow SDK.

    python -m pipelines.trainjob [--namespace mlnt] [--context CTX] [--name NAME] [--image IMAGE] [--nodes 2]
                                 [--gpus-per-node 1] [--cpu 8] [--memory 32Gi] [--shm 8Gi]
                                 [--params /app/params.yaml] [--set SECTION.KEY=VALUE ...] [--local-params FILE]
                                 [--pushgateway ADDRESS [--pushgateway-user USER] [--pipeline NAME]]

The job is the one ``k8s/overlays/prod/training`` declares (``k8s/base/training/trainjob.yaml``, prod patches): the
``torch-distributed`` ClusterTrainingRuntime, ``torchrun -m components.mlnt`` on every node (the runtime sets the
``PET_*`` variables torchrun reads in place of its flags) with ``--set mlnt.device=cuda`` (a node whose NVIDIA driver
the image's torch cannot use fails the job rather than train on its CPU while holding the GPU), one GPU per node on
the GPU pool (label ``mlnt.io/node-pool=gpu``, taint ``nvidia.com/gpu``), ``/dev/shm`` in memory, the shared
``mlnt-artifacts`` volume for the inputs and for the checkpoints every process resumes from, the project image, the
hardened security context, no Istio sidecar (in a namespace with injection on, a sidecar keeps a finished pod
running, so the job never completes: kubeflow/trainer#1778). ``tests/test_trainjob.py`` fails when this module and
the manifest drift apart. As the manifest's, the job starts at once: submitting is the decision to train.
Without ``--name`` the SDK names the job; the checkpoints do not depend on the name, so a new job resumes where an
earlier one with the same configuration stopped. Prod names every image by digest (``k8s/components/prod-images``):
pass ``--image`` as ``name@sha256:...``; the default is the -gpu tag, which a push can move.

``--params`` is the params file inside the pod (default the image's ``/app/params.yaml``; the image holds
``recipes/`` too: ``/app/recipes/clothing1m.yaml``) and each ``--set section.key=value`` goes to the step as given,
before ``--set mlnt.device=cuda``. Before submitting, the step's config is built here, as each process will build
it, from this checkout's copy of that file (``--local-params``; default: the same path, ``/app/`` dropped, where it
exists) with the overrides: a value the step would refuse, or a ``batch_size`` the job's processes
(nodes x GPUs per node) cannot share, fails now rather than after the GPU nodes are scheduled.

The Pushgateway of the training metrics (pipelines/pushgateway.py): the manifest's TrainJob reads the address and
the pipeline's name from the ConfigMap ``mlnt-pushgateway`` and the credentials from the Secret ``mlnt-pushgateway``,
all optional; the SDK (kubeflow 0.5.0) gives the trainer literal environment values only, and Kubeflow Trainer takes
the ``node`` container's variables from ``spec.trainer`` alone. So here the address is ``--pushgateway`` (default:
``$MLNT_PUSHGATEWAY``; empty: no push), the name the metrics are grouped under ``--pipeline`` (default:
``$MLNT_PIPELINE``, else ``mlnt``) and, for a Pushgateway with basic authentication, ``--pushgateway-user`` names the
user and mounts the same Secret (optional) at ``/var/run/secrets/mlnt-pushgateway``, whose ``password`` file
telemetry reads (``MLNT_PUSHGATEWAY_PASSWORD_FILE``).

The cluster and the credentials are kubectl's (the kubeconfig's current context, or the pod's service account in a
cluster). That identity needs, in the group ``trainer.kubeflow.org``: ``get`` on ``trainingruntimes`` in the
namespace (the SDK reads the runtime first, the namespaced TrainingRuntime of that name before, on a 404 only, the
ClusterTrainingRuntime: a 403 there ends the submission), ``get`` on ``clustertrainingruntimes`` (cluster-scoped: a
ClusterRole) and ``create`` on ``trainjobs`` in the namespace; ``k8s/`` grants none of them to its accounts.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path, PurePosixPath

from kubernetes.utils.quantity import parse_quantity

from components.common import telemetry
from components.common.telemetry import PASSWORD_FILE_ENV, PUSHGATEWAY_ENV, USERNAME_ENV, has_userinfo
from pipelines import pushgateway

RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer installs with its runtimes
IMAGE = "ghcr.io/mlnt-pipeline/mlnt-pipeline:0.1.0-gpu"
NAMESPACE = "mlnt"
NODE = "node"  # the torch-distributed runtime's replicated job and its trainer container
GPU_POOL_LABEL = "mlnt.io/node-pool"
COMMAND = ["torchrun"]  # no flags: torchrun reads PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_*
# On GPUs, over params.yaml's "auto": where the node's driver is too old for the image's torch (docs/deploy.md, step
# 1), auto would train on the CPU while the job holds the GPUs; cuda fails every process at once (pick_device).
ON_GPU = ["--set", "mlnt.device=cuda"]
LABELS = {"app.kubernetes.io/part-of": "mlnt-pipeline"}
# Istio's sidecar outlives the trainer, so a pod with one never completes (kubeflow/trainer#1778): injection off, as
# the label Istio prefers and the annotation older releases read.
NO_SIDECAR = {"sidecar.istio.io/inject": "false"}
POD_LABELS = {"app.kubernetes.io/name": "mlnt-train", **NO_SIDECAR}
USER = 10001  # the image's unprivileged user (Dockerfile)
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER, "fsGroup": USER,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"runAsNonRoot": True, "runAsUser": USER, "runAsGroup": USER, "allowPrivilegeEscalation": False,
                      "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                      "seccompProfile": {"type": "RuntimeDefault"}}
MOUNTS = [{"name": "artifacts", "mountPath": "/app/artifacts"},
          {"name": "data", "mountPath": "/app/data", "readOnly": True},
          {"name": "tmp", "mountPath": "/tmp"},
          {"name": "dshm", "mountPath": "/dev/shm"}]  # the data loader's workers share tensors through /dev/shm
PUSHGATEWAY_VOLUME = "pushgateway"  # the Secret pipelines/pushgateway.py names, with --pushgateway-user
WORKDIR = PurePosixPath("/app")  # the image's WORKDIR: the checkout's layout (Dockerfile)
QUANTITY_EXAMPLES = {"cpu": "8 or 500m", "memory": "32Gi or 64G", "shm": "8Gi or 512Mi"}


def quantity(field: str, value: str) -> Decimal:
    """``value`` as the API server reads a resource quantity (a Decimal); a ValueError naming ``field`` unless it is
    one, finite and above 0 (``-4`` and ``0`` pass the CRD's pattern and fail later, in the JobSet's events)."""
    text = str(value)
    try:
        amount = parse_quantity(text) if text == text.strip() else None
    except ValueError:
        amount = None
    if amount is None or not amount.is_finite() or amount <= 0:
        raise ValueError(f"{field}: expected a Kubernetes quantity above 0 such as {QUANTITY_EXAMPLES[field]}, "
                         f"found {text!r}")
    return amount


@dataclass(frozen=True)
class TrainJobSettings:
    """What the job asks for; the defaults are ``k8s/overlays/prod/training``'s."""

    image: str = IMAGE
    num_nodes: int = 2
    gpus_per_node: int = 1  # one training process per GPU (the runtime's numProcPerNode "auto")
    cpu: str = "8"  # per node, requested and limited alike (the SDK sets both)
    memory: str = "32Gi"
    shm: str = "8Gi"  # /dev/shm, for NCCL and the data loader
    params: str = "/app/params.yaml"  # inside the pod: baked into the image, as recipes/ is
    overrides: tuple[str, ...] = ()  # the step's --set section.key=value, before ON_GPU
    service_account: str = "mlnt-training"  # k8s/base/rbac.yaml: no role, no token
    node_pool: str = "gpu"
    pushgateway: str = ""  # the training metrics' Pushgateway (host:port or a URL); empty: no push
    pushgateway_user: str = ""  # its basic-authentication user; the password: the Secret mlnt-pushgateway
    pipeline: str = telemetry.DEFAULT_PIPELINE  # the name the pushed metrics are grouped under

    def __post_init__(self):
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes: expected at least 1, found {self.num_nodes}")
        if self.gpus_per_node < 1:
            # The SDK cannot set numProcPerNode, and on CPU the runtime's "auto" starts one process per CPU of the
            # limit: CPU training goes through k8s/overlays/dev (numProcPerNode: 1) instead.
            raise ValueError(f"gpus_per_node: expected at least 1 (CPU runs: apply k8s/overlays/dev), "
                             f"found {self.gpus_per_node}")
        if has_userinfo(self.pushgateway):
            raise ValueError("pushgateway: credentials in the address are never read (and would be stored in the "
                             "TrainJob): give the user with pushgateway_user and the password in the Secret "
                             f"{pushgateway.SECRET}")
        if self.pushgateway_user and not self.pushgateway:
            raise ValueError("pushgateway_user: set without pushgateway, the address it authenticates to")
        pushgateway.check_pipeline(self.pipeline)
        self.check_resources()

    def check_resources(self) -> None:
        """cpu, memory and shm are quantities above 0, and ``/dev/shm`` (memory-backed) is less than the memory."""
        amounts = {field: quantity(field, getattr(self, field)) for field in QUANTITY_EXAMPLES}
        if amounts["shm"] >= amounts["memory"]:
            raise ValueError(f"shm: expected less than memory ({self.memory}), found {self.shm!r}: /dev/shm counts "
                             f"against the pod's memory limit")

    @property
    def processes(self) -> int:
        """The job's training processes: one per GPU of every node."""
        return self.num_nodes * self.gpus_per_node

    def step_args(self, params: str | None = None) -> list[str]:
        """The mlnt step's arguments: the params file (``params``, else the pod's), the overrides, then ``ON_GPU``."""
        overrides = [arg for assignment in self.overrides for arg in ("--set", assignment)]
        return ["--params", params or self.params, *overrides, *ON_GPU]


def local_copy(params: str) -> Path | None:
    """Where this checkout keeps the pod's params file ``params``: the same path relative to the image's WORKDIR
    (``/app/recipes/x.yaml``: ``recipes/x.yaml``); None for one outside it (a mounted file)."""
    path = PurePosixPath(params)
    if path.is_absolute() and not path.is_relative_to(WORKDIR):
        return None
    return Path(path.relative_to(WORKDIR) if path.is_absolute() else path)


def step_config(settings: TrainJobSettings, local_params: Path):
    """The mlnt step's config as each of the job's processes builds it, from ``local_params`` with the job's
    overrides, by the step's own parser: a ``ConfigError`` where the step would refuse them."""
    from components.common.config import parse  # noqa: PLC0415 - the step's config imports torch
    from components.mlnt import MlntStepConfig  # noqa: PLC0415

    configs, _ = parse(settings.step_args(str(local_params)), "mlnt", {"mlnt": MlntStepConfig}, "mlnt")
    return configs["mlnt"]


def check_overrides(overrides: tuple[str, ...]) -> None:
    """Each ``section.key=value`` names a key of the mlnt step and holds a YAML value (``ConfigError`` otherwise)."""
    from components.common.config import apply_override  # noqa: PLC0415
    from components.mlnt import MlntStepConfig  # noqa: PLC0415

    for assignment in overrides:
        apply_override({}, assignment, {"mlnt": MlntStepConfig})


def check_world_size(settings: TrainJobSettings, batch_size: int, source: str) -> None:
    """The global batch splits evenly over the job's processes, by the rule each process applies (``Group.rows``)."""
    from model.distributed import Group  # noqa: PLC0415

    try:
        Group(world_size=settings.processes).rows(batch_size)
    except ValueError as err:
        nodes, gpus = settings.num_nodes, settings.gpus_per_node
        shape = f"{nodes} node{'s' * (nodes > 1)} x {gpus} GPU{'s' * (gpus > 1)} per node"
        raise ValueError(f"{source}: mlnt.{err} ({shape})") from None


def check_locally(settings: TrainJobSettings, local_params: str | None = None) -> None:
    """Before submitting, what the job's processes would refuse once scheduled: the step's config from
    ``local_params`` (default: ``local_copy`` of the pod's params file, where it exists) with the overrides, and
    its batch size against the processes. Without a local copy, the overrides alone, with a note on stderr."""
    path = Path(local_params) if local_params else local_copy(settings.params)
    if local_params and not path.is_file():
        raise ValueError(f"--local-params: expected a params file, found none at {local_params}")
    if path is None or not path.is_file():
        check_overrides(settings.overrides)
        where = f" ({path})" if path else ""
        print(f"note: pipelines.trainjob: no local copy of {settings.params}{where} to check the step's config "
              f"against (pass --local-params FILE): the job's {settings.processes} processes check mlnt.batch_size "
              f"themselves", file=sys.stderr)
        return
    source = f"{path}{' with --set overrides' if settings.overrides else ''}"
    check_world_size(settings, step_config(settings, path).batch_size, source)


def environment(settings: TrainJobSettings) -> dict[str, str]:
    """The trainer's environment: ``HOME=/tmp`` (caches go to the writable /tmp) and, with a Pushgateway, the variables
    ``components.common.telemetry`` reads: its address, the pipeline's name and, with a user, the user and the
    mounted password file."""
    env = {"HOME": "/tmp"}
    if settings.pushgateway:
        env[PUSHGATEWAY_ENV] = settings.pushgateway
        env[telemetry.PIPELINE_ENV] = settings.pipeline
    if settings.pushgateway_user:
        env[USERNAME_ENV] = settings.pushgateway_user
        env[PASSWORD_FILE_ENV] = f"{pushgateway.SECRET_MOUNT}/{pushgateway.PASSWORD_KEY}"
    return env


def volumes(settings: TrainJobSettings) -> list[dict]:
    """The pods' volumes: the ``mlnt-artifacts`` and (read-only) ``mlnt-data`` claims, an emptyDir of 4Gi for
    ``/tmp`` and ``/dev/shm`` in memory, ``settings.shm`` large; with a Pushgateway user, the Secret
    ``mlnt-pushgateway`` (optional: without it the job trains, and telemetry warns that it cannot read the
    password)."""
    found = [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "mlnt-artifacts"}},
             {"name": "data", "persistentVolumeClaim": {"claimName": "mlnt-data", "readOnly": True}},
             {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
             {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm}}]
    if settings.pushgateway_user:
        found.append({"name": PUSHGATEWAY_VOLUME, "secret": {"secretName": pushgateway.SECRET, "optional": True}})
    return found


def mounts(settings: TrainJobSettings) -> list[dict]:
    """The trainer container's mounts: ``MOUNTS``, and the Pushgateway's Secret (read-only) with a user."""
    if not settings.pushgateway_user:
        return list(MOUNTS)
    return [*MOUNTS, {"name": PUSHGATEWAY_VOLUME, "mountPath": pushgateway.SECRET_MOUNT, "readOnly": True}]


def trainer(settings: TrainJobSettings):
    """The SDK's trainer: the project image on ``num_nodes`` nodes with their resources (``spec.trainer``)."""
    from kubeflow.trainer import CustomTrainerContainer  # noqa: PLC0415 - only submitting needs the SDK

    return CustomTrainerContainer(
        image=settings.image, num_nodes=settings.num_nodes, env=environment(settings),
        resources_per_node={"cpu": settings.cpu, "memory": settings.memory, "gpu": settings.gpus_per_node})


def options(settings: TrainJobSettings, *, name: str | None = None) -> list:
    """The SDK's options: the command (on CUDA, ``ON_GPU``), and the runtime patch that places the pods on the GPU
    pool, without an Istio sidecar, with the volumes, identity and security context of
    ``k8s/base/training/trainjob.yaml``."""
    from kubeflow.trainer import options as o  # noqa: PLC0415

    pod = o.PodSpecPatch(
        service_account_name=settings.service_account, security_context=POD_SECURITY,
        containers=[o.ContainerPatch(name=NODE, security_context=CONTAINER_SECURITY, volume_mounts=mounts(settings))],
        volumes=volumes(settings), node_selector={GPU_POOL_LABEL: settings.node_pool},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    job = o.ReplicatedJobPatch(name=NODE, template=o.JobTemplatePatch(spec=o.JobSpecPatch(
        template=o.PodTemplatePatch(metadata={"labels": POD_LABELS, "annotations": NO_SIDECAR}, spec=pod))))
    patch = o.RuntimePatch(training_runtime_spec=o.TrainingRuntimeSpecPatch(
        template=o.JobSetTemplatePatch(spec=o.JobSetSpecPatch(replicated_jobs=[job]))))
    chosen = [o.Labels(LABELS), o.TrainerCommand(COMMAND),
              o.TrainerArgs(["-m", "components.mlnt", *settings.step_args()]), patch]
    return [o.Name(name), *chosen] if name else chosen


def submit(settings: TrainJobSettings, *, name: str | None = None, client=None, namespace: str = NAMESPACE,
           context: str | None = None) -> str:
    """Create the TrainJob in ``namespace`` (with ``client``, else a TrainerClient on kubectl's cluster and
    ``context``); returns its name."""
    if client is None:
        from kubeflow.trainer import KubernetesBackendConfig, TrainerClient  # noqa: PLC0415

        client = TrainerClient(KubernetesBackendConfig(namespace=namespace, context=context))
    return client.train(runtime=RUNTIME, trainer=trainer(settings), options=options(settings, name=name))


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.trainjob``: submit the TrainJob with the command line's settings and print how to follow
    it; returns 0, or 1 with one error line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.trainjob", description=__doc__.splitlines()[0])
    defaults = TrainJobSettings()
    parser.add_argument("--namespace", default=NAMESPACE, help="default: %(default)s")
    parser.add_argument("--context", help="the kubeconfig context (default: the current one)")
    parser.add_argument("--name", help="the TrainJob's name (default: one the SDK makes up)")
    parser.add_argument("--image", default=defaults.image,
                        help="the training image; prod names every image by digest: pass the -gpu image as "
                             "name@sha256:..., the digest k8s/components/prod-images pins (default: %(default)s, a "
                             "tag, which a push can move)")
    parser.add_argument("--nodes", type=int, default=defaults.num_nodes, help="default: %(default)s")
    parser.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node,
                        help="GPUs per node, one training process each (default: %(default)s)")
    parser.add_argument("--cpu", default=defaults.cpu, help="CPUs per node (default: %(default)s)")
    parser.add_argument("--memory", default=defaults.memory, help="memory per node (default: %(default)s)")
    parser.add_argument("--shm", default=defaults.shm,
                        help="/dev/shm per node, in memory: less than --memory (default: %(default)s)")
    parser.add_argument("--params", default=defaults.params,
                        help="the params file inside the pod, e.g. /app/recipes/clothing1m.yaml (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter of the step, as `python -m components.mlnt --set` does; "
                             "repeatable (mlnt.device=cuda is always added last)")
    parser.add_argument("--local-params", metavar="FILE",
                        help="this checkout's copy of --params, to check the step's config and its batch size "
                             "against the processes before submitting (default: the --params path without /app/, "
                             "where it exists)")
    parser.add_argument("--pushgateway", default=os.environ.get(PUSHGATEWAY_ENV, ""),
                        help=f"where the job pushes its training metrics, host:port or a URL without credentials "
                             f"(default: ${PUSHGATEWAY_ENV}; empty: no push)")
    parser.add_argument("--pushgateway-user", default="",
                        help=f"the Pushgateway's basic-authentication user; the password is the key "
                             f"'{pushgateway.PASSWORD_KEY}' of the Secret {pushgateway.SECRET}, mounted into the job")
    parser.add_argument("--pipeline", default=telemetry.pipeline_name(),
                        help=f"the name the pushed metrics are grouped under (default: ${telemetry.PIPELINE_ENV}, "
                             f"else {telemetry.DEFAULT_PIPELINE})")
    args = parser.parse_args(argv)
    try:
        settings = TrainJobSettings(image=args.image, num_nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                    cpu=args.cpu, memory=args.memory, shm=args.shm, params=args.params,
                                    overrides=tuple(args.overrides), pushgateway=args.pushgateway,
                                    pushgateway_user=args.pushgateway_user, pipeline=args.pipeline)
        check_locally(settings, args.local_params)
        name = submit(settings, name=args.name, namespace=args.namespace, context=args.context)
    except Exception as err:  # the settings, the kubeconfig and the API raise many types; one line for the user
        print(f"error: pipelines.trainjob: {err}", file=sys.stderr)
        return 1
    print(f"submitted TrainJob {args.namespace}/{name}; follow it with: "
          f"kubectl -n {args.namespace} get trainjob {name} -w   (logs: kubectl -n {args.namespace} logs -f "
          f"-l jobset.sigs.k8s.io/jobset-name={name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
