"""Run the Kubeflow pipeline: locally with the KFP local runner, or on a Kubeflow Pipelines server.

    python -m pipelines.run --local [--data FOLDER] [--params params.yaml] [--tiny] [--root artifacts/kfp]
                            [--registry ROOT/releases]
    python -m pipelines.run --host https://kfp.example.com [--data /mnt/data/FOLDER] [--params FILE] [--tiny]
                            [--registry /mnt/registry/FOLDER] [--experiment mlnt]
                            [--service-account mlnt-pipeline] [--pushgateway ADDRESS] [--pipeline NAME]

``--local`` runs every step as a subprocess of this Python (``kfp.local.SubprocessRunner(use_venv=False)``), so the
project must be installed here (``make setup``); the deploy step writes the InferenceService it would create (the
one of k8s/, serving the released version) without applying it. It then prints the gate's verdict, PASS or FAIL, with
every reason (the pipeline's output ``decision``, as ``python -m components.gate --check`` prints it), and
``release: REGISTRY/latest -> VERSION`` where this run's gate released a version, else ``still serving:`` and the
release the registry's ``latest`` still points at (a failed gate, or a model that is the champion already); a failed
gate is a decision, not an error: the exit code is 0. ``--tiny`` trains for two epochs at batch 32 on 600
of the ingested images (480 for training, 120 for validation): a smoke run of the whole graph, in minutes. Its gate
has no accuracy floor (``gate.min_accuracy`` 0), so with ``--host`` it needs a ``--registry`` of its own (e.g.
``/mnt/registry/smoke``; without one it is refused: the pipeline's default is the production registry) and its
deploy step writes the InferenceService without applying it.
``--host`` compiles the pipeline and submits a run; the server pulls the project image and uses its GPU node pool.
``--params`` gives every step's section from another params file, e.g. ``recipes/clothing1m.yaml`` with
``--data /mnt/data/clothing1m``; each section is checked before anything runs as its step will build it (ingest's
with the folder the run reads, not the file's ``ingest.path``), missing keys taking the step's defaults.
``--data`` is the dataset folder the ingest step reads: with ``--host`` a path in the ingest step's pod, so an absolute
one on the data volume, which the pipeline mounts at ``/mnt/data``; another is refused. Without it, ``--local`` reads
the params file's ``ingest.path`` (its default, ``data/fashion-mnist``, where the file has none), and ``--host`` sends
no ``data_path``, so the pipeline's default applies (``/mnt/data/fashion-mnist`` on the data volume, Fashion-MNIST's
folder): a params file for another dataset (``ingest.dataset``) then needs ``--data``, and is refused without it.
``--registry`` is the pipeline parameter ``registry``, the folder the gate releases into, over the params file's
``gate.registry``: ``--local``, by default ``ROOT/releases``; ``--host``, a folder on the registry volume, which the
gate step mounts at ``/mnt/registry`` (its root by default), sent with the ``storage_uri`` the deploy step serves it
from (``pvc://mlnt-registry/FOLDER``); another path is refused. ``--root`` is a local run's, refused with ``--host``.
``--pushgateway``
(default: ``$MLNT_PUSHGATEWAY``, which the weekly CronJob reads from the ConfigMap ``mlnt-pushgateway``) is the
pipeline parameter ``pushgateway``: where the steps push their training metrics (pipelines/pushgateway.py); empty,
nothing is pushed. ``--pipeline`` (default: ``$MLNT_PIPELINE``, which the weekly CronJob reads from the same ConfigMap,
else ``mlnt``) is the pipeline parameter ``pipeline``: the name those metrics are grouped under, so that pipelines
sharing a Pushgateway keep their own groups; a name that is not a label value (``telemetry.pipeline_problem``) is
refused before anything runs. ``--local`` trains on the params file's ``device`` (the pipeline's
``training_device`` empty); in the cluster the training steps train on ``cuda`` (pipelines/mlnt_pipeline.py).
``--host`` authenticates with the KFP token of a pod, where there is one: the file ``$KF_PIPELINES_SA_TOKEN_PATH``
names, else ``/var/run/secrets/kubeflow/pipelines/token`` (the projected service-account token, audience
``pipelines.kubeflow.org``, the weekly CronJob mounts), sent as ``Authorization: Bearer <token>`` with every request
and read again for each (the kubelet renews it). Without that file no Authorization header is sent (a standalone KFP,
a port-forward); a ``$KF_PIPELINES_SA_TOKEN_PATH`` that names no file is an error.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import posixpath
import sys
import tempfile
from pathlib import Path

from components.common import telemetry
from components.common.config import check_sections, load_params, printable
from components.common.telemetry import PUSHGATEWAY_ENV, has_userinfo, redact_address
from pipelines import mlnt_pipeline as definition
from pipelines import pushgateway as pushgateway_settings
from pipelines.mlnt_pipeline import PARAMS, compile_pipeline, mlnt_pipeline

SERVICE_ACCOUNT = "mlnt-pipeline"  # k8s/base/rbac.yaml
ROOT = Path("artifacts/kfp")  # --local's pipeline root

TINY = {"noise": {"train_size": 600, "val_fraction": 0.2},  # 480 training images, 120 for validation
        "baseline": {"epochs": 2, "batch_size": 32, "lr_milestones": [], "progress": False},
        "mlnt": {"epochs": 2, "batch_size": 32, "lr_milestones": [], "neighbours": 5, "ramp_start": 0.5,
                 "ramp_end": 1.0, "progress": False},
        "validate": {"class_balance_ratio": 10.0},
        "export": {"parity_images": 32},
        "gate": {"min_accuracy": 0.0}}


def step_params(params_file: Path | None = None) -> dict:
    """Every step's section of ``params_file`` (default: the params.yaml the pipeline was built with); a file without
    a section for every step is a ``ValueError``."""
    params = copy.deepcopy(PARAMS if params_file is None else load_params(params_file))
    missing = sorted(set(PARAMS) - set(params))
    if missing:
        raise ValueError(f"{params_file}: expected a section for every step, found none for {', '.join(missing)}")
    return params


def pipeline_arguments(data: str | None, *, tiny: bool, params_file: Path | None = None, pushgateway: str = "",
                       pipeline: str = telemetry.DEFAULT_PIPELINE) -> dict:
    """The pipeline's parameters: each step's section of ``params_file`` (default params.yaml; shortened by
    ``--tiny``) as JSON text, the data path, the Pushgateway's address (empty: no push) and the pipeline's name its
    metrics are grouped under. An address with credentials (``user:password@``) is a ``ValueError``: a run's
    parameters are stored and shown with the run; so is a name that is not a label value (telemetry would push
    nothing under it). ``data`` None sends no ``data_path``: the pipeline's default (``DEFAULT_DATA_PATH``,
    Fashion-MNIST's folder on the data volume) applies, which is a ``ValueError`` for a params file of another dataset
    (``ingest.dataset``, as the ingest step's config reads it). Every section is checked as its step will build it,
    ingest's with the folder the run reads (``components.common.config.check_sections``)."""
    if has_userinfo(pushgateway):
        raise ValueError(f"pushgateway: the address {redact_address(pushgateway)} carries credentials, which a run "
                         "stores with its parameters: give them in the Secret mlnt-pushgateway (docs/monitoring.md)")
    pushgateway_settings.check_pipeline(pipeline)
    params = step_params(params_file)
    for section, values in (TINY if tiny else {}).items():
        params[section].update(values)
    source = f"{params_file or 'params.yaml'}{' with --tiny' if tiny else ''}"
    configs = check_sections(params, source, data_path=definition.DEFAULT_DATA_PATH if data is None else data)
    dataset = configs["ingest"].dataset
    if data is None and dataset != definition.DEFAULT_DATASET:
        raise ValueError(f"--data: expected the {dataset} folder in the cluster (e.g. {definition.DATA_MOUNT}/"
                         f"{dataset}) for {params_file or 'params.yaml'}, found none; the pipeline's default "
                         f"{definition.DEFAULT_DATA_PATH} holds {definition.DEFAULT_DATASET}")
    return {**({} if data is None else {"data_path": data}), "pushgateway": pushgateway, "pipeline": pipeline,
            **{f"{section}_params": json.dumps(values) for section, values in params.items()}}


def ingest_config(params: dict, source: str, *, data_path: str | None = None):
    """The ingest section of ``params`` as the ingest step's typed config (``components.ingest.IngestConfig``),
    defaults included, with ``data_path`` over its ``path`` where given; a ``ConfigError`` naming ``source``."""
    return check_sections({"ingest": params["ingest"]}, source, data_path=data_path)["ingest"]


def run_local(data: Path | None, *, root: Path, registry: Path, tiny: bool, params_file: Path | None = None,
              pushgateway: str = "", pipeline: str = telemetry.DEFAULT_PIPELINE) -> dict:
    """Every step in order with the KFP local runner, on ``data`` (None: the params file's ``ingest.path``, as the
    ingest step's config reads it), the training steps on their sections' ``device`` (no GPU pool here:
    ``training_device`` empty); returns the run's gate decision (``gate_decision``)."""
    from kfp import local  # noqa: PLC0415 - only the local mode needs the runner

    if data is None:
        data = Path(ingest_config(step_params(params_file), str(params_file or "params.yaml")).path)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    finished = mlnt_pipeline(registry=str(registry), apply_deploy=False,
                             checkpoint_root=str(Path(root).resolve() / "checkpoints"), training_device="",
                             **pipeline_arguments(str(Path(data).resolve()), tiny=tiny, params_file=params_file,
                                                  pushgateway=pushgateway, pipeline=pipeline))
    return gate_decision(finished.outputs)


def gate_decision(outputs: dict) -> dict:
    """The decision of a finished run's gate: the pipeline's output ``decision`` (the gate step's decision.json); a
    ``ValueError`` naming the file where it is no decision (a JSON object with a boolean ``passed`` and a list of
    ``reasons``)."""
    if "decision" not in outputs:
        raise ValueError(f"the run's outputs: expected the gate's decision, found {', '.join(outputs) or 'none'}")
    path = Path(outputs["decision"].path)
    try:
        decision = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: expected the gate's decision (JSON), found an unreadable file: {err}") from None
    if not isinstance(decision, dict) or not isinstance(decision.get("passed"), bool) or \
            not isinstance(decision.get("reasons"), list):
        raise ValueError(f"{path}: expected the gate's decision (a JSON object with a boolean passed and a list of "
                         f"reasons), found {printable(json.dumps(decision))[:80]}")
    return decision


def served(decision: dict, registry: Path) -> str:
    """What ``registry`` serves after a run whose gate decided ``decision``: the run's release where its gate made
    one, else the champion, still serving (a failed gate, or a model that is the champion already)."""
    latest = Path(registry) / "latest"
    if decision["passed"] and decision.get("released"):
        return f"release: {latest} -> {decision['version']}"
    if latest.is_symlink():
        return f"still serving: {latest} -> {latest.readlink()}"
    return f"still serving: nothing, no release in {registry}"


def kfp_credentials():
    """The credentials ``--host`` sends: the pod's projected KFP token (``$KF_PIPELINES_SA_TOKEN_PATH``, else kfp's
    default ``/var/run/secrets/kubeflow/pipelines/token``) as ``kfp.client.ServiceAccountTokenVolumeCredentials``,
    which sends ``Authorization: Bearer <the file's text>`` and reads the file again for each request; None where no
    such file exists (no header). kfp 2.17's ``Client`` reads that file by itself only when it is given no host, so
    the weekly CronJob, which names its host, would otherwise reach a multi-user KFP unauthenticated. A
    ``$KF_PIPELINES_SA_TOKEN_PATH`` that names no file is a ``ValueError``."""
    from kfp import client  # noqa: PLC0415

    named = os.environ.get(client.KF_PIPELINES_SA_TOKEN_ENV)
    path = Path(named or client.KF_PIPELINES_SA_TOKEN_PATH)
    if not path.is_file():
        if named:
            raise ValueError(f"{client.KF_PIPELINES_SA_TOKEN_ENV}: expected the KFP token file {path}, found none")
        return None
    return client.ServiceAccountTokenVolumeCredentials(str(path))


def submit(host: str, data: str | None, *, experiment: str, tiny: bool, service_account: str = SERVICE_ACCOUNT,
           params_file: Path | None = None, pushgateway: str = "",
           pipeline: str = telemetry.DEFAULT_PIPELINE, registry: str | None = None) -> str:
    """Compile and submit one run to the Kubeflow Pipelines server at ``host``, its pods running as
    ``service_account`` (k8s/base/rbac.yaml: what KFP's launcher needs, nothing else; the deploy step alone mounts
    the ``mlnt-deployer`` token that may patch the InferenceService); returns the run id. ``data`` None: the
    pipeline's default ``data_path``; ``registry`` None: its default ``registry`` (``cluster_arguments``), a
    ``ValueError`` with ``tiny``, whose gate has no accuracy floor (``TINY``): a smoke model would become the
    production champion; a ``tiny`` run never applies its deploy (``apply_deploy`` false). The run
    keeps the compiled caching options (no ``enable_caching``, which would set every task's, turning the cache on for
    ingest and the gate): ingest and the gate are never cached, and, since KFP keys a step's cache on its input
    artifacts and ingest writes new ones each run, no step is reused. The requests carry the pod's KFP token where
    there is one (``kfp_credentials``)."""
    import kfp  # noqa: PLC0415

    # the arguments first: a wrong one fails as itself, before the client connects
    if tiny and registry is None:
        raise ValueError(f"--tiny: expected --registry with --host (a folder on the registry volume of its own, e.g. "
                         f"{definition.REGISTRY_MOUNT}/smoke), found none: a smoke run's gate has no accuracy floor "
                         f"(gate.min_accuracy {TINY['gate']['min_accuracy']:g}) and would release its model into the "
                         f"production registry, {definition.REGISTRY_MOUNT}")
    arguments = {**cluster_arguments(data, registry),
                 **pipeline_arguments(data, tiny=tiny, params_file=params_file, pushgateway=pushgateway,
                                      pipeline=pipeline),
                 **({"apply_deploy": False} if tiny else {})}  # a smoke model is never served
    client = kfp.Client(host=host, credentials=kfp_credentials())
    with tempfile.TemporaryDirectory() as folder:
        package = compile_pipeline(Path(folder) / "mlnt_pipeline.yaml")
        run = client.create_run_from_pipeline_package(str(package), arguments=arguments,
                                                      experiment_name=experiment,
                                                      service_account=service_account)
    return run.run_id


def cluster_arguments(data: str | None, registry: str | None) -> dict:
    """``--host``'s folders, checked: in the cluster the ingest step reads ``data`` and the gate releases into
    ``registry`` inside their pods, where the pipeline mounts only its volumes. Returns the pipeline's ``registry``
    and ``storage_uri`` (the same folder as ``deploy`` has the InferenceService read it) for a ``registry``; none
    for None (the pipeline's defaults: the registry volume's root)."""
    if data is not None:
        on_volume(data, "--data", step="ingest", volume=definition.DATA_PVC, mount=definition.DATA_MOUNT,
                  example=definition.DEFAULT_DATA_PATH)
    if registry is None:
        return {}
    folder = on_volume(registry, "--registry", step="gate", volume=definition.REGISTRY_PVC,
                       mount=definition.REGISTRY_MOUNT, example=f"{definition.REGISTRY_MOUNT}/clothing1m")
    return {"registry": registry, "storage_uri": "/".join(filter(None, (f"pvc://{definition.REGISTRY_PVC}", folder)))}


def on_volume(path: str, option: str, *, step: str, volume: str, mount: str, example: str) -> str:
    """``path``'s folder on ``volume``, which the ``step`` step mounts at ``mount`` ("" for its root); a
    ``ValueError`` naming ``option`` for any other path: a relative one resolves under the image's /app, another
    absolute one is the pod's own file system (nothing to read there; what is written goes with the pod)."""
    normal = posixpath.normpath(path) if path else ""
    if normal != mount and not normal.startswith(f"{mount}/"):
        raise ValueError(f"{option}: expected an absolute path on the volume {volume}, which the {step} step mounts "
                         f"at {mount} (e.g. {example}), found {path!r}")
    return normal[len(mount) + 1:]


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.run``: ``--local`` runs the pipeline here (its registry ``ROOT/releases`` unless
    ``--registry``) and prints its gate's verdict and reasons, then this run's release or the release still serving;
    ``--host`` submits a run to that server (``--registry`` its registry; ``--root`` refused) and prints the run id.
    Returns 0 (also for a failed gate: a decision, not an error), or 1 with one error line on stderr."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.run", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--local", action="store_true", help="run here with the KFP local runner")
    where.add_argument("--host", help="submit to this Kubeflow Pipelines server")
    parser.add_argument("--data", help="the dataset folder (a path in the cluster with --host); default: --local, "
                                       "the params file's ingest.path; --host, the pipeline's default "
                                       f"{definition.DEFAULT_DATA_PATH} ({definition.DEFAULT_DATASET} only)")
    parser.add_argument("--params", type=Path, help="every step's section from this params file (default: the "
                                                    "params.yaml the pipeline was built with)")
    parser.add_argument("--tiny", action="store_true", help="two epochs on 600 of the ingested images (a smoke run; "
                                                            "--host: needs --registry, never deployed)")
    parser.add_argument("--root", type=Path, help=f"--local only: the pipeline root (default: {ROOT})")
    parser.add_argument("--registry", type=Path, help="the model registry the gate releases into, over gate.registry; "
                                                      "--local: default ROOT/releases, apart from the releases/ that "
                                                      "dvc repro's gate promotes into; --host: a folder on the "
                                                      f"registry volume, default {definition.REGISTRY_MOUNT}")
    parser.add_argument("--experiment", default="mlnt", help="--host: the experiment of the run")
    parser.add_argument("--service-account", default=SERVICE_ACCOUNT,
                        help="--host: the run's Kubernetes service account (default: %(default)s)")
    parser.add_argument("--pushgateway", default=os.environ.get(PUSHGATEWAY_ENV, ""),
                        help=f"where the steps push their training metrics, host:port or a URL without credentials "
                             f"(default: ${PUSHGATEWAY_ENV}; empty: no push)")
    parser.add_argument("--pipeline", default=telemetry.pipeline_name(),
                        help=f"the name the pushed metrics are grouped under, so that pipelines sharing a Pushgateway "
                             f"keep their own groups (default: ${telemetry.PIPELINE_ENV}, else "
                             f"{telemetry.DEFAULT_PIPELINE})")
    args = parser.parse_args(argv)
    try:
        if args.local:
            local_main(args)
        else:
            if args.root is not None:  # a cluster run's artifacts go to KFP's pipeline root
                raise ValueError("--root: expected with --local only (a local run's pipeline root), found it with "
                                 "--host")
            run_id = submit(args.host, args.data, experiment=args.experiment, tiny=args.tiny,
                            service_account=args.service_account, params_file=args.params,
                            pushgateway=args.pushgateway, pipeline=args.pipeline,
                            registry=None if args.registry is None else str(args.registry))
            print(f"submitted run {run_id}")
    except Exception as err:  # the runner and the client raise many types; one line for the user
        print(f"error: pipelines.run: {err}", file=sys.stderr)
        return 1
    return 0


def local_main(args: argparse.Namespace) -> None:
    """``--local``: ``run_local``, then the gate's verdict and every reason (``components.gate.report``) and what the
    registry serves (``served``)."""
    from components.gate import report  # noqa: PLC0415 - imports torch

    root = args.root or ROOT
    registry = args.registry or root / "releases"  # never moves dvc repro's releases/latest
    data = None if args.data is None else Path(args.data)  # None: the params file's ingest.path
    decision = run_local(data, root=root, registry=registry, tiny=args.tiny, params_file=args.params,
                         pushgateway=args.pushgateway, pipeline=args.pipeline)
    print(f"pipeline finished; artifacts under {root}")
    report(decision)
    print(served(decision, registry))


if __name__ == "__main__":
    raise SystemExit(main())
