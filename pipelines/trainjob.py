"""Submit the multi-GPU mlnt step as a Kubeflow Trainer TrainJob, from Python, with the Kubeflow SDK.

    python -m pipelines.trainjob [--namespace mlnt] [--context CTX] [--name NAME] [--image IMAGE] [--nodes 2]
                                 [--gpus-per-node 1] [--cpu 8] [--memory 32Gi]

The job is the one ``k8s/overlays/prod`` declares (``k8s/base/training/trainjob.yaml`` plus the prod patches): the
``torch-distributed`` ClusterTrainingRuntime, ``torchrun -m components.mlnt`` on every node (the runtime sets the
``PET_*`` variables torchrun reads in place of its flags), one GPU per node on the GPU pool (label
``mlnt.io/node-pool=gpu``, taint ``nvidia.com/gpu``), ``/dev/shm`` in memory, the shared ``mlnt-artifacts`` volume
for the inputs and for the checkpoints every process resumes from, the project image, the hardened security
context. ``tests/test_trainjob.py`` fails when this module and the manifest drift apart. Unlike the manifest, the
job is not created suspended: submitting is the decision to train. Without ``--name`` the SDK names the job; the
checkpoints do not depend on the name, so a new job resumes where an earlier one with the same configuration stopped.

The cluster and the credentials are kubectl's (the kubeconfig's current context, or the pod's service account in a
cluster). That identity needs ``get`` on ``clustertrainingruntimes`` (the SDK reads the runtime first) and ``create``
on ``trainjobs`` (group ``trainer.kubeflow.org``) in the namespace; ``k8s/`` grants neither to its accounts.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

RUNTIME = "torch-distributed"  # the ClusterTrainingRuntime Kubeflow Trainer installs with its runtimes
IMAGE = "ghcr.io/mlnt-pipeline/mlnt-pipeline:0.1.0-gpu"
NAMESPACE = "mlnt"
NODE = "node"  # the torch-distributed runtime's replicated job and its trainer container
GPU_POOL_LABEL = "mlnt.io/node-pool"
COMMAND = ["torchrun"]  # no flags: torchrun reads PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK, PET_MASTER_*
LABELS = {"app.kubernetes.io/part-of": "mlnt-pipeline"}
POD_LABELS = {"app.kubernetes.io/name": "mlnt-train"}
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


@dataclass(frozen=True)
class TrainJobSettings:
    """What the job asks for; the defaults are ``k8s/overlays/prod``'s."""

    image: str = IMAGE
    num_nodes: int = 2
    gpus_per_node: int = 1  # one training process per GPU (the runtime's numProcPerNode "auto")
    cpu: str = "8"  # per node, requested and limited alike (the SDK sets both)
    memory: str = "32Gi"
    shm: str = "8Gi"  # /dev/shm, for NCCL and the data loader
    params: str = "/app/params.yaml"  # baked into the image
    service_account: str = "mlnt-training"  # k8s/base/rbac.yaml: no role, no token
    node_pool: str = "gpu"

    def __post_init__(self):
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes: expected at least 1, found {self.num_nodes}")
        if self.gpus_per_node < 1:
            # The SDK cannot set numProcPerNode, and on CPU the runtime's "auto" starts one process per CPU of the
            # limit: CPU training goes through k8s/overlays/dev (numProcPerNode: 1) instead.
            raise ValueError(f"gpus_per_node: expected at least 1 (CPU runs: apply k8s/overlays/dev), "
                             f"found {self.gpus_per_node}")


def volumes(settings: TrainJobSettings) -> list[dict]:
    """The pods' volumes: the ``mlnt-artifacts`` and (read-only) ``mlnt-data`` claims, an emptyDir of 4Gi for
    ``/tmp`` and ``/dev/shm`` in memory, ``settings.shm`` large."""
    return [{"name": "artifacts", "persistentVolumeClaim": {"claimName": "mlnt-artifacts"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "mlnt-data", "readOnly": True}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm}}]


def trainer(settings: TrainJobSettings):
    """The SDK's trainer: the project image on ``num_nodes`` nodes with their resources (``spec.trainer``)."""
    from kubeflow.trainer import CustomTrainerContainer  # noqa: PLC0415 - only submitting needs the SDK

    return CustomTrainerContainer(
        image=settings.image, num_nodes=settings.num_nodes, env={"HOME": "/tmp"},  # caches go to the writable /tmp
        resources_per_node={"cpu": settings.cpu, "memory": settings.memory, "gpu": settings.gpus_per_node})


def options(settings: TrainJobSettings, *, name: str | None = None) -> list:
    """The SDK's options: the command, and the runtime patch that places the pods on the GPU pool with the
    volumes, identity and security context of ``k8s/base/training/trainjob.yaml``."""
    from kubeflow.trainer import options as o  # noqa: PLC0415

    pod = o.PodSpecPatch(
        service_account_name=settings.service_account, security_context=POD_SECURITY,
        containers=[o.ContainerPatch(name=NODE, security_context=CONTAINER_SECURITY, volume_mounts=MOUNTS)],
        volumes=volumes(settings), node_selector={GPU_POOL_LABEL: settings.node_pool},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
    job = o.ReplicatedJobPatch(name=NODE, template=o.JobTemplatePatch(spec=o.JobSpecPatch(
        template=o.PodTemplatePatch(metadata={"labels": POD_LABELS}, spec=pod))))
    patch = o.RuntimePatch(training_runtime_spec=o.TrainingRuntimeSpecPatch(
        template=o.JobSetTemplatePatch(spec=o.JobSetSpecPatch(replicated_jobs=[job]))))
    chosen = [o.Labels(LABELS), o.TrainerCommand(COMMAND),
              o.TrainerArgs(["-m", "components.mlnt", "--params", settings.params]), patch]
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
                        help="the training image; pass it by digest (name@sha256:...) in production, as "
                             "k8s/overlays/prod pins it (default: %(default)s)")
    parser.add_argument("--nodes", type=int, default=defaults.num_nodes, help="default: %(default)s")
    parser.add_argument("--gpus-per-node", type=int, default=defaults.gpus_per_node,
                        help="GPUs per node, one training process each (default: %(default)s)")
    parser.add_argument("--cpu", default=defaults.cpu, help="CPUs per node (default: %(default)s)")
    parser.add_argument("--memory", default=defaults.memory, help="memory per node (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        settings = TrainJobSettings(image=args.image, num_nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                    cpu=args.cpu, memory=args.memory)
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
