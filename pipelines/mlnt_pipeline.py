"""The eight pipeline steps as a Kubeflow Pipelines (KFP 2) pipeline, plus a ``deploy`` step behind the gate.

Each component is a lightweight KFP component on the project image (which has kfp: nothing is pip-installed when a
step starts) that calls ``components.<step>.run`` (the code ``dvc repro`` runs), with each step's ``params.yaml``
section as JSON text read into the step's typed config, so numbers keep their types. Artifacts are typed: the
ingested data, labels and evaluation folders are ``Dataset``s, trained weights and the ONNX export ``Model``s,
scalars ``Metrics``, the confusion matrix ``ClassificationMetrics``, a self-contained ``HTML`` page of the Great
Expectations validation (pipelines/data_docs.py) beside the ``report.json`` it is written from (``report``, every
label conflict), and the gate's ``decision``, which is also the pipeline's output; the gate step's log says its
verdict and every reason. A ``<step>_params`` text that is no JSON object fails its step naming the parameter.
The training steps ask for one GPU on the GPU node pool and are retried; they train on ``training_device`` (default
``cuda``) over their sections' ``device``, so that on a node whose NVIDIA driver the image's torch cannot use they
fail instead of training on the CPU while holding the GPU (their sections' ``auto`` would fall back quietly). Their
checkpoints go to the ``mlnt-artifacts`` volume (``checkpoint_root``), so a retry resumes where the failed attempt
stopped. Ingest (the data behind a path can change) and the gate (its decision depends on the registry) are never
cached; the other steps have KFP's cache on, but KFP keys a step's cache on its input artifacts and every run's ingest
writes new ones, so no step of a new run is ever reused from an earlier one: every run reads the data, evaluates and
gates afresh. A training step resumes from the volume a finished run of the same config, inputs, project code and
torch build (the image's) left there (``components.common.checkpoints``), so it trains nothing and writes that run's
model again, which the gate finds the champion already (``released`` false); a run with new data, params, code or
torch trains afresh (another version of a library other than torch does not).
``deploy`` serves the released version with the InferenceService of k8s/ (pipelines/inference_service.py), unless
the InferenceService already serves a newer one (a later run's deploy came first): then it changes nothing.
Every step takes the pipeline parameter ``pushgateway`` (default empty: no push), where the steps that push their
metrics (``components.common.telemetry``) send them, with the credentials of the Secret ``mlnt-pushgateway`` where it
exists (pipelines/pushgateway.py); those steps also take ``pipeline`` (default ``mlnt``), the name their metrics are
grouped under, so that pipelines sharing a Pushgateway keep their own groups.

    python -m pipelines.mlnt_pipeline [--output pipelines/compiled/mlnt_pipeline.yaml]   # compile
"""

import argparse
import json
import os
from pathlib import Path
from typing import NamedTuple

from kfp import compiler, dsl, kubernetes
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from components.common.config import load_params
from components.common.steps import STEPS
from components.common.telemetry import DEFAULT_PIPELINE
from pipelines import pushgateway

IMAGE = os.environ.get("MLNT_IMAGE", "ghcr.io/mlnt-pipeline/mlnt-pipeline:0.1.0-gpu")
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
SECTIONS = {name: json.dumps(PARAMS[name]) for name in STEPS}  # the <step>_params defaults: JSON text
GPU_POOL = {"label_key": "mlnt.io/node-pool", "label_value": "gpu"}  # the label of the GPU node pool's nodes
# The volumes of k8s/base/storage.yaml, mounted where the pipeline's parameters point by default.
CHECKPOINT_PVC, CHECKPOINT_MOUNT = "mlnt-artifacts", "/mnt/checkpoints"  # outlives a training pod: retries resume
DATA_PVC, DATA_MOUNT = "mlnt-data", "/mnt/data"
DEFAULT_DATASET = "fashion-mnist"  # what the default data_path holds (pipelines.run refuses it for another dataset)
DEFAULT_DATA_PATH = f"{DATA_MOUNT}/{DEFAULT_DATASET}"
REGISTRY_PVC, REGISTRY_MOUNT = "mlnt-registry", "/mnt/registry"
# The deploy step's identity (k8s/base/rbac.yaml): the token of the account mlnt-deployer, from the Secret the token
# controller fills, mounted into that step alone. Every step runs as the run's account (KFP 2 has no per-step
# account) and carries its token, which may do nothing but what KFP and Argo do inside a step.
DEPLOYER_SECRET, DEPLOYER_MOUNT = "mlnt-deployer-token", "/var/run/secrets/mlnt-deployer"  # the mount: deploy's too
# The steps whose ``run`` pushes its metrics (``components.common.telemetry.reports``): they alone take the pipeline's
# name and mount the Pushgateway's credentials, the Secret pipelines/pushgateway.py names, optional (a test keeps the
# two sets equal).
PUSHING = ("baseline", "mlnt", "evaluate", "gate")
# What the training steps on the GPU pool train on, over their sections' ``device`` (params.yaml: auto, for CPU
# users): with ``auto`` a node whose NVIDIA driver is older than the image's torch needs (docs/deploy.md, step 1)
# would train on its CPU while holding the GPU; ``cuda`` fails the step at once (model.trainer.pick_device).
GPU_DEVICE = "cuda"
COMPILED = Path(__file__).with_name("compiled") / "mlnt_pipeline.yaml"


class Outputs(NamedTuple):
    """The pipeline's output: the gate step's ``decision`` (its decision.json), which ``pipelines.run --local``
    reads to say what the run decided."""

    decision: Artifact


# Every component runs on the project image, which has kfp (pyproject.toml): no pip install when a step starts. Each
# takes its params.yaml section as JSON text (``params_json``) and reads it into the step's typed config with
# components.common.config.build: a number keeps its type (a dict parameter would travel as a protobuf Struct, where
# every number is a float), and a wrong key or type fails with the field's name before any work. Each step's body
# first calls configure_logging(take_over=True): KFP's executor has configured the root logger (logging.basicConfig)
# before the body runs, so the steps' own setup would leave it alone; taken over, its handler escapes what a message
# echoes from the data (a file name from a user's folder, a label), as the steps' command line does. It then sets
# telemetry's variables from the ``pushgateway`` input (and, in the steps that push, the ``pipeline`` input) and the
# mounted Secret (pipelines/pushgateway.py: a runtime parameter reaches a step only as an input, KFP's
# set_env_variable takes a constant). The training steps' ``training_device``, where not empty, replaces their
# section's ``device``.
@dsl.component(base_image=IMAGE, install_kfp_package=False)
def ingest(params_json: str, data_path: str, pushgateway: str, ingested: Output[Dataset]):
    """KFP step ingest: reads the raw dataset at ``data_path`` (the data volume) with params.yaml's ``ingest``
    section; writes the ``ingested`` Dataset folder (``components.ingest.run``: the arrays or shards and
    ``manifest.json``) and records the dataset and its class count in the artifact's metadata."""
    from components.common.config import build, configure_logging
    from components.ingest import IngestConfig, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway)  # telemetry's address and credentials (pipelines/pushgateway.py)
    config = build(IngestConfig, {**section(params_json, "ingest"), "path": data_path}, where="ingest")
    manifest = run(config, out=ingested.path)
    ingested.metadata.update(dataset=manifest["dataset"], classes=len(manifest["class_names"]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate(params_json: str, pushgateway: str, ingested: Input[Dataset], data_docs: Output[HTML],
             report: Output[Artifact], checks: Output[Metrics]):
    """KFP step validate: reads the ``ingested`` Dataset; writes a self-contained page of the validation (its
    failures, the first label conflicts and the statistics, pipelines/data_docs.py: KFP shows one HTML file, so the
    Data Docs site's pages, which link to each other, would be dead links) to ``data_docs`` (HTML), keeps the
    ``report.json`` it is written from (every label conflict, which the page sends the user to) as ``report`` and
    logs ``failed_expectations`` (the number of failed expectations) to ``checks``. On a failure the count is logged
    first and the step then fails with ``ValidationFailedError`` (one line per failure) once the page and the report
    are written, so nothing downstream runs. KFP's executor publishes output metadata only when the body returns, so
    the UI shows ``checks`` for a pass; a failed step's count is the first line of its error in the step's log."""
    import shutil
    import tempfile
    from pathlib import Path

    from components.common.config import build, configure_logging
    from components.validate import ValidateConfig, ValidationFailedError, run
    from pipelines.data_docs import write_summary
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway)  # telemetry's address and credentials (pipelines/pushgateway.py)
    config = build(ValidateConfig, section(params_json, "validate"), where="validate")
    with tempfile.TemporaryDirectory() as out:
        try:  # a failed validation raises: the pipeline stops, nothing trains on bad data; the Data Docs show why
            result = run(config, ingest=ingested.path, out=out)
        except ValidationFailedError as failed:  # the real count, logged before the step fails
            checks.log_metric("failed_expectations", len(failed.failures))
            raise
        finally:  # the report.json run wrote, pass or fail: kept, and as one page with no links to other files
            if write_summary(Path(out) / "report.json", data_docs.path):
                shutil.copyfile(Path(out) / "report.json", report.path)
    checks.log_metric("failed_expectations", len(result["failures"]))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def noise(params_json: str, pushgateway: str, ingested: Input[Dataset], labels: Output[Dataset],
          rates: Output[Metrics]):
    """KFP step noise: reads the ``ingested`` Dataset; writes the ``labels`` Dataset folder (``labels.npz``,
    ``transition.json``, ``summary.json``) and logs ``realised_rate_train`` to ``rates`` where a clean label is
    known."""
    from components.common.config import build, configure_logging
    from components.noise import NoiseConfig, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway)  # telemetry's address and credentials (pipelines/pushgateway.py)
    config = build(NoiseConfig, section(params_json, "noise"), where="noise")
    summary = run(config, ingest=ingested.path, out=labels.path)
    if summary["realised_rate_train"] is not None:  # None: no clean label known
        rates.log_metric("realised_rate_train", summary["realised_rate_train"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def baseline(params_json: str, checkpoint_root: str, training_device: str, pushgateway: str, pipeline: str,
             ingested: Input[Dataset], labels: Input[Dataset], model: Output[Model], scores: Output[Metrics]):
    """KFP step baseline: reads the ``ingested`` and ``labels`` Datasets; trains CE on ``training_device`` (empty: the
    section's ``device``) into the ``model`` folder (``model.pt``, ``final.pt``, ``metrics.json``, ``history.json``,
    ``live/``), checkpointing under ``<checkpoint_root>/baseline`` (empty root: inside ``model``); logs
    ``val_accuracy`` and ``best_epoch`` to ``scores``."""
    from pathlib import Path

    from components.baseline import BaselineConfig, run
    from components.common.config import build, configure_logging
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway, pipeline=pipeline)  # telemetry's address, name, credentials
    device = {"device": training_device} if training_device else {}  # the GPU pool's: fail rather than use the CPU
    config = build(BaselineConfig, {**section(params_json, "baseline"), **device}, where="baseline")
    metrics = run(config, ingest=ingested.path, noise=labels.path, out=model.path,
                  checkpoints=Path(checkpoint_root) / "baseline" if checkpoint_root else None)
    scores.log_metric("val_accuracy", metrics["val_accuracy"])
    scores.log_metric("best_epoch", metrics["best_epoch"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def mlnt(params_json: str, checkpoint_root: str, training_device: str, pushgateway: str, pipeline: str,
         ingested: Input[Dataset], labels: Input[Dataset], baseline_model: Input[Model], model: Output[Model],
         scores: Output[Metrics]):
    """KFP step mlnt: reads the ``ingested`` and ``labels`` Datasets and ``model.pt`` of ``baseline_model``; trains
    MLNT on ``training_device`` (empty: the section's ``device``) into the ``model`` folder (``student.pt``,
    ``teacher.pt``, metrics, history, evaluations, ``live/``), checkpointing under ``<checkpoint_root>/mlnt``; logs the
    released model's ``val_accuracy`` and ``released_teacher`` (1.0: the teacher) to ``scores``."""
    from pathlib import Path

    from components.common.config import build, configure_logging
    from components.mlnt import MlntStepConfig, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway, pipeline=pipeline)  # telemetry's address, name, credentials
    device = {"device": training_device} if training_device else {}  # the GPU pool's: fail rather than use the CPU
    config = build(MlntStepConfig, {**section(params_json, "mlnt"), **device}, where="mlnt")
    metrics = run(config, ingest=ingested.path, noise=labels.path, baseline=baseline_model.path, out=model.path,
                  checkpoints=Path(checkpoint_root) / "mlnt" if checkpoint_root else None)
    scores.log_metric("val_accuracy", metrics["val_accuracy"])  # the released model's: student or teacher
    scores.log_metric("released_teacher", float(metrics["released"] == "teacher"))


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(params_json: str, pushgateway: str, pipeline: str, ingested: Input[Dataset], labels: Input[Dataset],
             baseline_model: Input[Model], mlnt_model: Input[Model], evaluation: Output[Dataset],
             scores: Output[Metrics], confusion: Output[ClassificationMetrics]):
    """KFP step evaluate: reads the ``ingested`` and ``labels`` Datasets and the model files of ``baseline_model``
    and ``mlnt_model``; writes the ``evaluation`` folder (``metrics.json``, the confusion, calibration, label-issue
    and ROC CSVs), logs each model's clean-test accuracy (and the label-issue F1 where there is ground truth) to
    ``scores`` and the teacher's confusion matrix to ``confusion``."""
    import csv
    from pathlib import Path

    from components.common.config import build, configure_logging
    from components.evaluate import EvaluateConfig, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway, pipeline=pipeline)  # telemetry's address, name, credentials
    config = build(EvaluateConfig, section(params_json, "evaluate"), where="evaluate")
    metrics = run(config, ingest=ingested.path, noise=labels.path, baseline=baseline_model.path,
                  mlnt=mlnt_model.path, out=evaluation.path)
    for model in ("baseline", "student", "teacher"):
        scores.log_metric(f"{model}_accuracy", metrics[model]["accuracy"])
    if metrics["label_issues"]["ground_truth"]:  # without a known truth there is no F1 to report
        scores.log_metric("label_issues_f1", metrics["label_issues"]["f1"])
    classes = metrics["class_names"]
    number = {name: i for i, name in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    with open(Path(evaluation.path) / "confusion_teacher.csv") as fh:  # rows of class names
        for row in csv.DictReader(fh):
            matrix[number[row["actual"]]][number[row["predicted"]]] += 1
    confusion.log_confusion_matrix(classes, matrix)


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export(params_json: str, ingest_params: str, validate_params: str, noise_params: str, baseline_params: str,
           mlnt_params: str, evaluate_params: str, data_path: str, pushgateway: str, ingested: Input[Dataset],
           labels: Input[Dataset],
           baseline_model: Input[Model], mlnt_model: Input[Model], evaluation: Input[Dataset],
           onnx_model: Output[Model]):
    """KFP step export: reads the ``ingested`` and ``labels`` Datasets, both models' folders and the ``evaluation``
    folder; writes ``model.onnx``, ``parity.json`` and ``model_card.json`` to the ``onnx_model`` folder and records
    the chosen model, the ONNX sha256 and the opset in its metadata. ``<step>_params``: the upstream steps'
    sections, which the card records with ``params_json`` (the same digest as ``dvc repro`` with those settings),
    ``ingest.path`` being ``data_path``: the folder ingest read, which the pipeline sets over the section's path."""
    from components.common.config import build, configure_logging
    from components.export import ExportConfig, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway)  # telemetry's address and credentials (pipelines/pushgateway.py)
    config = build(ExportConfig, section(params_json, "export"), where="export")
    given = {"ingest": ingest_params, "validate": validate_params, "noise": noise_params,
             "baseline": baseline_params, "mlnt": mlnt_params, "evaluate": evaluate_params, "export": params_json}
    params = {step: section(text, step) for step, text in given.items()}
    params["ingest"] = {**params["ingest"], "path": data_path}  # the folder ingest read (it takes data_path too)
    card = run(config, ingest=ingested.path, noise=labels.path, baseline=baseline_model.path, mlnt=mlnt_model.path,
               evaluate=evaluation.path, out=onnx_model.path, params=params)
    onnx_model.metadata.update(model=card["model"], onnx_sha256=card["onnx_sha256"], opset=card["opset"])


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(params_json: str, registry: str, pushgateway: str, pipeline: str, onnx_model: Input[Model],
         evaluation: Input[Dataset], decision: Output[Artifact]) -> bool:
    """KFP step gate: decides and, on a pass, promotes into ``registry`` (the pipeline's, over the section's
    ``registry``); writes ``decision.json`` to ``decision``, prints the verdict and every reason to the step's log
    (``components.gate.report``, as ``python -m components.gate``) and returns whether it passed (the deploy
    condition)."""
    import shutil
    import tempfile
    from pathlib import Path

    from components.common.config import build, configure_logging
    from components.gate import GateConfig, report, run
    from pipelines.pushgateway import configure as configure_pushgateway
    from pipelines.sections import section

    configure_logging(take_over=True)
    configure_pushgateway(pushgateway, pipeline=pipeline)  # telemetry's address, name, credentials
    config = build(GateConfig, {**section(params_json, "gate"), "registry": registry}, where="gate")
    with tempfile.TemporaryDirectory() as out:
        result = run(config, export=onnx_model.path, evaluate=evaluation.path, out=out)
        shutil.copyfile(Path(out) / "decision.json", decision.path)
    report(result)  # a failed gate ends the run green: its log says why
    decision.metadata.update(passed=result["passed"], version=result.get("version", ""),
                             accuracy=result["accuracy"])
    return result["passed"]


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(decision: Input[Artifact], storage_uri: str, namespace: str, apply: bool, manifest: Output[Artifact]):
    """Serve the released version with the InferenceService of k8s/ (pipelines/inference_service.py): patch the run's
    fields into it through KServeClient, or create it, when ``apply`` is set; the manifest artifact is the result.
    Where it already serves a newer version (a later run's deploy came first), nothing changes: the step logs it and
    succeeds, with ``action`` "skipped" and the object as served.
    The client acts as mlnt-deployer, with the token mounted at /var/run/secrets/mlnt-deployer (DEPLOYER_MOUNT), never
    as the run's account."""
    import json
    import os
    from pathlib import Path

    from kserve import KServeClient

    from pipelines import inference_service

    version = json.loads(Path(decision.path).read_text())["version"]
    client = None
    if apply:  # the API server the pod sees, with the deployer's token and the cluster's CA from the mounted Secret
        folder = "/var/run/secrets/mlnt-deployer"
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        client = KServeClient(config_dict={
            "apiVersion": "v1", "kind": "Config", "current-context": "mlnt-deployer",
            "clusters": [{"name": "cluster", "cluster": {"server": server,
                                                         "certificate-authority": f"{folder}/ca.crt"}}],
            "users": [{"name": "mlnt-deployer", "user": {"tokenFile": f"{folder}/token"}}],
            "contexts": [{"name": "mlnt-deployer", "context": {"cluster": "cluster", "user": "mlnt-deployer",
                                                                "namespace": namespace}}]})
    done, service = inference_service.deploy(client, version=version, storage_uri=storage_uri, namespace=namespace)
    if done == "skipped":  # also logged by inference_service; printed so that the step's log says it whatever its level
        print(f"deploy: not deployed: {version} is older than the version served, "
              f"{inference_service.served_version(service)}")
    inference_service.write(service, manifest.path)
    manifest.metadata.update(version=version, applied=apply, action=done)


def _with_shared_memory(task: dsl.PipelineTask, size: str = "4Gi") -> dsl.PipelineTask:
    """/dev/shm in memory for a step whose DataLoader workers decode shards: they hand batches to the main process
    through it, and a container's default 64 MB is not enough for ImageNet-sized batches."""
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=size)
    return task


def _pushes_metrics(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """The Pushgateway's credentials for a step that pushes its metrics: the Secret ``mlnt-pushgateway`` as files at
    ``pushgateway.SECRET_MOUNT``, optional (without it the step runs and pushes unauthenticated, or not at all),
    which the step's ``configure_pushgateway`` hands to telemetry."""
    return kubernetes.use_secret_as_volume(task, secret_name=pushgateway.SECRET, mount_path=pushgateway.SECRET_MOUNT,
                                           optional=True)


def _on_gpu_pool(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """A training step on the GPU node pool: one GPU, 4 CPUs, 16-32 GB, the pool's node selector and taint, retries
    with back-off, the checkpoint volume and /dev/shm. (What it trains on is its ``training_device`` input, the
    pipeline's, ``GPU_DEVICE`` unless a run says otherwise.)"""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_request("4").set_memory_request("16G").set_memory_limit("32G")
    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)
    kubernetes.add_node_selector(task, **GPU_POOL)
    kubernetes.add_toleration(task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    kubernetes.mount_pvc(task, pvc_name=CHECKPOINT_PVC, mount_path=CHECKPOINT_MOUNT)
    return _with_shared_memory(task)


@dsl.pipeline(name="mlnt-pipeline", description="Noisy-label training with MLNT, from raw data to a gated release")
def mlnt_pipeline(data_path: str = DEFAULT_DATA_PATH, registry: str = REGISTRY_MOUNT,
                  storage_uri: str = f"pvc://{REGISTRY_PVC}", namespace: str = "mlnt", apply_deploy: bool = True,
                  checkpoint_root: str = CHECKPOINT_MOUNT, training_device: str = GPU_DEVICE, pushgateway: str = "",
                  pipeline: str = DEFAULT_PIPELINE,
                  ingest_params: str = SECTIONS["ingest"], validate_params: str = SECTIONS["validate"],
                  noise_params: str = SECTIONS["noise"], baseline_params: str = SECTIONS["baseline"],
                  mlnt_params: str = SECTIONS["mlnt"], evaluate_params: str = SECTIONS["evaluate"],
                  export_params: str = SECTIONS["export"], gate_params: str = SECTIONS["gate"]) -> Outputs:
    """``<step>_params``: the step's params.yaml section as JSON text (``pipelines.run`` writes them; a text that is
    no JSON object fails the step naming the parameter, pipelines/sections.py).
    ``registry``: the folder the gate releases into, over the gate section's ``registry`` (on the registry volume,
    mounted at ``REGISTRY_MOUNT``); ``storage_uri``: where ``deploy`` has the InferenceService read that folder.
    ``training_device``: what baseline and mlnt train on, over their sections' ``device`` (``cuda`` on the GPU pool;
    empty: the sections', as the local runner, which has no GPU pool, passes it).
    ``pushgateway``: the Pushgateway of the training metrics (``host:port`` or a URL, no credentials; empty: none).
    ``pipeline``: the name the pushed metrics are grouped under (the label ``pipeline``; telemetry.pipeline_problem)."""
    reading = ingest(params_json=ingest_params, data_path=data_path, pushgateway=pushgateway)
    reading.set_caching_options(False)  # the data behind data_path can change while the path stays the same
    ingested = kubernetes.mount_pvc(reading, pvc_name=DATA_PVC, mount_path=DATA_MOUNT).outputs["ingested"]
    checked = _with_shared_memory(validate(params_json=validate_params, pushgateway=pushgateway, ingested=ingested))
    labelled = noise(params_json=noise_params, pushgateway=pushgateway, ingested=ingested).after(checked)
    labels = labelled.outputs["labels"]
    ce = _pushes_metrics(_on_gpu_pool(baseline(params_json=baseline_params, checkpoint_root=checkpoint_root,
                                               training_device=training_device, pushgateway=pushgateway,
                                               pipeline=pipeline, ingested=ingested, labels=labels)))
    meta = _pushes_metrics(_on_gpu_pool(mlnt(params_json=mlnt_params, checkpoint_root=checkpoint_root,
                                             training_device=training_device, pushgateway=pushgateway,
                                             pipeline=pipeline, ingested=ingested, labels=labels,
                                             baseline_model=ce.outputs["model"])))
    evaluated = _pushes_metrics(_with_shared_memory(evaluate(
        params_json=evaluate_params, pushgateway=pushgateway, pipeline=pipeline, ingested=ingested, labels=labels,
        baseline_model=ce.outputs["model"], mlnt_model=meta.outputs["model"])))
    exported = _with_shared_memory(export(params_json=export_params, ingest_params=ingest_params,
                                          validate_params=validate_params, noise_params=noise_params,
                                          baseline_params=baseline_params, mlnt_params=mlnt_params,
                                          evaluate_params=evaluate_params, data_path=data_path, pushgateway=pushgateway,
                                          ingested=ingested,
                                          labels=labels, baseline_model=ce.outputs["model"],
                                          mlnt_model=meta.outputs["model"], evaluation=evaluated.outputs["evaluation"]))
    gated = _pushes_metrics(gate(params_json=gate_params, registry=registry, pushgateway=pushgateway,
                                 pipeline=pipeline, onnx_model=exported.outputs["onnx_model"],
                                 evaluation=evaluated.outputs["evaluation"]))
    gated.set_caching_options(False)  # the decision depends on the registry's champion, not only on the inputs
    kubernetes.mount_pvc(gated, pvc_name=REGISTRY_PVC, mount_path=REGISTRY_MOUNT)
    with dsl.If(gated.outputs["Output"] == True):  # noqa: E712 - a KFP condition, not Python
        serving = deploy(decision=gated.outputs["decision"], storage_uri=storage_uri, namespace=namespace,
                         apply=apply_deploy)
        kubernetes.use_secret_as_volume(serving, secret_name=DEPLOYER_SECRET, mount_path=DEPLOYER_MOUNT)
    return Outputs(decision=gated.outputs["decision"])


def compile_pipeline(output: Path = COMPILED) -> Path:
    """Compile ``mlnt_pipeline`` to the KFP YAML spec ``output`` (default: the checked-in ``COMPILED``), creating its
    folder; returns ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(mlnt_pipeline, str(output))
    return output


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.mlnt_pipeline [--output FILE]``: compile the pipeline and print where; returns 0."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.mlnt_pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=COMPILED)
    args = parser.parse_args(argv)
    print(f"compiled -> {compile_pipeline(args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
