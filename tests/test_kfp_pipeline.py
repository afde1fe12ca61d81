"""The Kubeflow pipeline: the checked-in compiled spec is what the definition compiles to, the spec puts training
on the GPU node pool with retries, and the KFP local runner runs every step to a gated, deployable model."""

import html
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

from components.common.config import load_params
from components.common.steps import STEPS  # the one table of step names
from pipelines import inference_service, mlnt_pipeline, pushgateway, run
from tests.components.conftest import make_fashion_mnist
from tests.test_pushgateway_auth import AT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = mlnt_pipeline.compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml")
    return path.read_text()


def test_compiled_spec_is_checked_in_and_current(spec):
    """Fails when the definition drifts from pipelines/compiled/mlnt_pipeline.yaml: recompile with
    `python -m pipelines.mlnt_pipeline` and commit the result."""
    assert spec == mlnt_pipeline.COMPILED.read_text()


def test_training_runs_on_the_gpu_pool_with_retries_and_ingest_and_the_gate_are_never_cached(spec):
    pipeline, platform = yaml.safe_load_all(spec)
    tasks = pipeline["root"]["dag"]["tasks"]
    assert set(STEPS) <= set(tasks) and "condition-1" in tasks
    executors = pipeline["deploymentSpec"]["executors"]
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("baseline", "mlnt"):
        accelerator = executors[f"exec-{step}"]["container"]["resources"]["accelerator"]
        assert accelerator["resourceType"] == "nvidia.com/gpu" and accelerator["resourceCount"] == "1"
        assert tasks[step]["retryPolicy"]["maxRetryCount"] == 2
        assert kube[f"exec-{step}"]["nodeSelector"]["labels"] == {"mlnt.io/node-pool": "gpu"}
        assert kube[f"exec-{step}"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert kube[f"exec-{step}"]["pvcMount"][0]["constant"] == mlnt_pipeline.CHECKPOINT_PVC
        assert kube[f"exec-{step}"]["pvcMount"][0]["mountPath"] == mlnt_pipeline.CHECKPOINT_MOUNT
    for step in STEPS:
        assert executors[f"exec-{step}"]["container"]["image"] == mlnt_pipeline.IMAGE
        assert tasks[step]["cachingOptions"].get("enableCache", False) is (step not in ("ingest", "gate"))
    for step in ("validate", "baseline", "mlnt", "evaluate", "export"):  # the steps whose loader workers decode
        (shm,) = kube[f"exec-{step}"]["emptyDirMounts"]
        assert (shm["mountPath"], shm["medium"], shm["sizeLimit"]) == ("/dev/shm", "Memory", "4Gi")
    mounts = {step: kube[f"exec-{step}"]["pvcMount"][0] for step in ("ingest", "gate")}
    assert (mounts["ingest"]["constant"], mounts["ingest"]["mountPath"]) == ("mlnt-data", "/mnt/data")
    assert (mounts["gate"]["constant"], mounts["gate"]["mountPath"]) == ("mlnt-registry", "/mnt/registry")
    assert tasks["condition-1"]["triggerPolicy"]["condition"] == \
        "inputs.parameter_values['pipelinechannel--gate-Output'] == true"


def test_artifacts_are_typed(spec):
    pipeline, _ = yaml.safe_load_all(spec)
    outputs = {name: {k: v["artifactType"]["schemaTitle"] for k, v in c.get("outputDefinitions", {})
                      .get("artifacts", {}).items()} for name, c in pipeline["components"].items()}
    assert outputs["comp-validate"] == {"data_docs": "system.HTML", "report": "system.Artifact",
                                        "checks": "system.Metrics"}
    assert pipeline["root"]["dag"]["outputs"]["artifacts"]["decision"]["artifactSelectors"] == [
        {"outputArtifactKey": "decision", "producerSubtask": "gate"}]  # what pipelines.run --local reads
    assert outputs["comp-mlnt"]["model"] == "system.Model"
    assert outputs["comp-evaluate"]["confusion"] == "system.ClassificationMetrics"
    assert outputs["comp-noise"]["labels"] == "system.Dataset"


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")  # subprocess, not image
@pytest.mark.filterwarnings("ignore:Task .* have no effect in the current local runner:UserWarning")  # GPU settings
def test_local_run_produces_a_gated_released_model_and_its_inference_service(tmp_path, monkeypatch, capsys):
    data = make_fashion_mnist(tmp_path / "fashion-mnist", train=300, test=60)
    monkeypatch.chdir(tmp_path)
    args = ["--local", "--tiny", "--data", str(data), "--root", "root"]
    assert run.main(args) == 0
    latest = tmp_path / "root" / "releases" / "latest"  # its own registry: dvc repro's releases/ stays as it was
    out = capsys.readouterr().out
    assert f"gate: PASS: released as {os.readlink(latest)}\n" in out  # the gate's verdict, then its reasons
    assert out.endswith(f"\nrelease: root/releases/latest -> {os.readlink(latest)}\n")
    assert not (tmp_path / "releases").exists()
    assert (latest / "model.onnx").is_file() and json.loads((latest / "decision.json").read_text())["passed"]
    (run_dir,) = [p for p in (tmp_path / "root").iterdir() if p.name not in ("checkpoints", "releases")]
    finished = [p.parent.parent.name for p in (tmp_path / "root" / "checkpoints").glob("*/*/finished.json")]
    assert sorted(finished) == ["baseline", "mlnt"]  # kept, marked finished: a retry after the upload trains nothing
    assert {p.name for p in run_dir.iterdir()} >= {*STEPS, "deploy"}
    service = yaml.safe_load((run_dir / "deploy" / "manifest").read_text())
    version = os.readlink(latest)
    assert service == inference_service.merged(inference_service.load_manifest(), inference_service.run_fields(
        version=version, storage_uri="pvc://mlnt-registry", namespace="mlnt"))  # k8s/'s object, not applied
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert service["spec"]["predictor"]["model"]["storageUri"] == f"pvc://mlnt-registry/{version}"
    assert "<html" in (run_dir / "validate" / "data_docs").read_text().lower()
    assert not links((run_dir / "validate" / "data_docs").read_text())
    # the card records the settings the run's steps were given, with the digest `dvc repro` gives the same settings
    from components.export import MADE_BY, params_digest  # noqa: PLC0415 - imports onnx

    given = run.pipeline_arguments(str(data), tiny=True)
    card = json.loads((latest / "model_card.json").read_text())
    expected = {step: json.loads(given[f"{step}_params"]) for step in MADE_BY}
    expected["ingest"]["path"] = str(Path(data).resolve())  # the folder ingest read, not params.yaml's path
    assert card["params"] == expected
    assert card["params_sha256"] == params_digest(card["params"])


def test_steps_start_without_pip_and_take_their_params_as_json_text(spec):
    """The image has kfp: no executor installs anything when its step starts. Each step's parameters travel as JSON
    text (a dict parameter would be a protobuf Struct, where every number is a float), so ints stay ints."""
    pipeline, _ = yaml.safe_load_all(spec)
    for name, executor in pipeline["deploymentSpec"]["executors"].items():
        command = " ".join(executor["container"]["command"])
        assert "pip install" not in command and "kfp.dsl.executor_main" in command, name
    inputs = pipeline["root"]["inputDefinitions"]["parameters"]
    for step in STEPS:
        assert pipeline["components"][f"comp-{step}"]["inputDefinitions"]["parameters"]["params_json"] == \
            {"parameterType": "STRING"}
        default = inputs[f"{step}_params"]
        assert default["parameterType"] == "STRING"
        assert json.loads(default["defaultValue"]) == mlnt_pipeline.PARAMS[step]
    baseline = json.loads(inputs["baseline_params"]["defaultValue"])
    assert type(baseline["epochs"]) is int and type(baseline["lr"]) is float


def test_the_deploy_step_serves_the_inference_service_of_k8s(spec):
    """deploy calls pipelines/inference_service.py (tests/test_inference_service.py) through KServeClient."""
    pipeline, _ = yaml.safe_load_all(spec)
    source = pipeline["deploymentSpec"]["executors"]["exec-deploy"]["container"]["command"][-1]
    assert "from pipelines import inference_service" in source and "KServeClient(config_dict=" in source
    assert "kubernetes import" not in source  # no hand-written object through the raw Kubernetes client


def test_only_the_deploy_step_mounts_the_deployers_token(spec):
    """Every step runs as the run's account (KFP 2 has no per-step account); the rights to change the
    InferenceService are the deployer's (k8s/base/rbac.yaml), whose token Secret only deploy mounts."""
    pipeline, platform = yaml.safe_load_all(spec)
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounting = {executor for executor, config in kube.items() for volume in config.get("secretAsVolume", [])
                if volume["secretName"] == mlnt_pipeline.DEPLOYER_SECRET}
    assert mounting == {"exec-deploy"}, mounting
    [volume] = kube["exec-deploy"]["secretAsVolume"]
    assert (volume["secretName"], volume["mountPath"], volume["optional"]) == (
        mlnt_pipeline.DEPLOYER_SECRET, mlnt_pipeline.DEPLOYER_MOUNT, False)
    assert not any(config.get("secretAsEnv") for config in kube.values())
    secrets = {volume["secretName"] for config in kube.values() for volume in config.get("secretAsVolume", [])}
    assert secrets == {mlnt_pipeline.DEPLOYER_SECRET, pushgateway.SECRET}, secrets
    source = pipeline["deploymentSpec"]["executors"]["exec-deploy"]["container"]["command"][-1]
    assert f'folder = "{mlnt_pipeline.DEPLOYER_MOUNT}"' in source  # the body cannot read the module's constant


def pushing_steps() -> set[str]:
    """The steps whose ``run`` pushes its metrics: decorated with ``components.common.telemetry.reports`` (whose
    wrapper's code every decorated ``run`` shares)."""
    import importlib  # noqa: PLC0415

    from components.common.telemetry import reports  # noqa: PLC0415

    wrapper = reports("probe", lambda result: {})(lambda: {}).__code__
    return {step for step in STEPS if importlib.import_module(f"components.{step}").run.__code__ is wrapper}


def test_every_step_takes_the_pushgateway_and_those_that_push_mount_its_credentials(spec):
    """In the cluster the steps push their metrics only when told where (``MLNT_PUSHGATEWAY``): the pipeline parameter
    ``pushgateway`` (default empty: no push) reaches every step as an input, and ``pipeline`` (default ``mlnt``, the
    name the metrics are grouped under) every step that pushes; the body hands them to telemetry before its work
    (KFP 2.17's set_env_variable takes a compile-time constant only). The steps that push mount the Secret
    mlnt-pushgateway as files, optional (a cluster without it runs, and pushes unauthenticated); no step reads a
    Secret into its environment (secretAsEnv's ``optional`` is a field older KFP drivers refuse)."""
    from components.common import telemetry  # noqa: PLC0415

    pipeline, platform = yaml.safe_load_all(spec)
    parameters = pipeline["root"]["inputDefinitions"]["parameters"]
    assert parameters["pushgateway"] == {"defaultValue": "", "isOptional": True, "parameterType": "STRING"}
    assert parameters["pipeline"] == {"defaultValue": telemetry.DEFAULT_PIPELINE, "isOptional": True,
                                      "parameterType": "STRING"}
    tasks = pipeline["root"]["dag"]["tasks"]
    executors = pipeline["deploymentSpec"]["executors"]
    for step in STEPS:
        inputs = pipeline["components"][f"comp-{step}"]["inputDefinitions"]["parameters"]
        assert tasks[step]["inputs"]["parameters"]["pushgateway"] == {"componentInputParameter": "pushgateway"}, step
        assert inputs["pushgateway"] == {"parameterType": "STRING"}, step
        source = executors[f"exec-{step}"]["container"]["command"][-1]
        body = source[source.index(f"def {step}("):]
        assert "from pipelines.pushgateway import configure as configure_pushgateway" in body, step
        configured = ("configure_pushgateway(pushgateway, pipeline=pipeline)" if step in mlnt_pipeline.PUSHING
                      else "configure_pushgateway(pushgateway)")
        assert body.index(configured) < body.index("build("), step
        if step in mlnt_pipeline.PUSHING:
            assert tasks[step]["inputs"]["parameters"]["pipeline"] == {"componentInputParameter": "pipeline"}, step
        else:
            assert "pipeline" not in inputs, step
    kube = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounts = {executor: volume for executor, config in kube.items() for volume in config.get("secretAsVolume", [])
              if volume["secretName"] == pushgateway.SECRET}
    assert set(mounts) == {f"exec-{step}" for step in pushing_steps()} == {
        f"exec-{step}" for step in mlnt_pipeline.PUSHING}, sorted(mounts)
    for volume in mounts.values():
        assert (volume["mountPath"], volume["optional"]) == (pushgateway.SECRET_MOUNT, True), volume
    assert not any(config.get("secretAsEnv") or config.get("configMapAsEnv") for config in kube.values())


def test_the_pushgateway_reaches_a_run_and_credentials_in_its_address_do_not(capsys):
    assert run.pipeline_arguments("/mnt/data/x", tiny=False)["pushgateway"] == ""
    given = run.pipeline_arguments("/mnt/data/x", tiny=False, pushgateway="pushgateway.monitoring.svc:9091")
    assert given["pushgateway"] == "pushgateway.monitoring.svc:9091" and given["pipeline"] == "mlnt"
    with pytest.raises(ValueError, match="carries credentials") as refused:
        run.pipeline_arguments("/mnt/data/x", tiny=False, pushgateway=f"https://mlnt:s3cret{AT}pushgateway:9091")
    assert "s3cret" not in str(refused.value) and "https://***@pushgateway:9091" in str(refused.value)
    assert run.main(["--host", "http://127.0.0.1:9", "--pushgateway", "mlnt:s3cret@pushgateway:9091"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pipelines.run: pushgateway:") and "s3cret" not in err


def test_the_pipelines_name_reaches_a_run_and_a_name_that_is_no_label_is_refused(monkeypatch, capsys):
    """``--pipeline`` (default: $MLNT_PIPELINE, which the weekly CronJob reads from the ConfigMap, else mlnt) is the
    run's parameter ``pipeline``; a name telemetry could not push under is refused before anything is submitted,
    naming what was expected and found."""
    assert run.pipeline_arguments("/mnt/data/x", tiny=False, pipeline="clothing1m")["pipeline"] == "clothing1m"
    for name in ("", "-x", "a b", "x" * 64):
        with pytest.raises(ValueError, match=r"^pipeline \(the name the pushed metrics are grouped under\): "
                                             r"expected 1 to 63 letters"):
            run.pipeline_arguments("/mnt/data/x", tiny=False, pipeline=name)
    calls = []
    monkeypatch.setattr(run, "submit", lambda host, data, **kw: calls.append(kw) or "run-1")
    monkeypatch.delenv("MLNT_PIPELINE", raising=False)
    assert run.main(["--host", "http://kfp"]) == 0
    monkeypatch.setenv("MLNT_PIPELINE", "fashion-mnist.weekly")
    assert run.main(["--host", "http://kfp"]) == 0
    assert run.main(["--host", "http://kfp", "--pipeline", "clothing1m"]) == 0
    assert [kw["pipeline"] for kw in calls] == ["mlnt", "fashion-mnist.weekly", "clothing1m"]
    monkeypatch.undo()
    assert run.main(["--host", "http://127.0.0.1:9", "--pipeline", "a b"]) == 1  # refused before connecting
    assert capsys.readouterr().err == ("error: pipelines.run: pipeline (the name the pushed metrics are grouped "
                                       "under): expected 1 to 63 letters, digits, '.', '_' or '-', starting with a "
                                       "letter or digit, found 'a b'\n")


def test_the_training_steps_train_on_cuda_in_the_cluster_and_on_their_sections_device_locally(spec, tmp_path,
                                                                                             monkeypatch):
    """On the GPU pool a section's ``device: auto`` would train on the CPU, holding the GPU, where the node's driver
    is too old for the image's torch: the compiled training steps get ``training_device`` cuda (model.trainer's
    pick_device then fails at once); the local runner, which has no GPU pool, passes it empty: the section's."""
    from kfp.dsl import Dataset, Metrics, Model  # noqa: PLC0415

    import components.baseline  # noqa: PLC0415
    import components.mlnt  # noqa: PLC0415

    pipeline, _ = yaml.safe_load_all(spec)
    assert pipeline["root"]["inputDefinitions"]["parameters"]["training_device"] == {
        "defaultValue": "cuda", "isOptional": True, "parameterType": "STRING"}
    tasks = pipeline["root"]["dag"]["tasks"]
    training = {name for name, task in tasks.items() if "training_device" in task["inputs"].get("parameters", {})}
    gpu = {name for name in tasks if "accelerator" in pipeline["deploymentSpec"]["executors"].get(
        f"exec-{name}", {}).get("container", {}).get("resources", {})}
    assert training == gpu == {"baseline", "mlnt"}
    for step in training:
        assert tasks[step]["inputs"]["parameters"]["training_device"] == {
            "componentInputParameter": "training_device"}, step
    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    seen = []
    for module in (components.baseline, components.mlnt):
        monkeypatch.setattr(module, "run", lambda config, **kw: seen.append(config.device) or {
            "val_accuracy": 0.5, "best_epoch": 1, "released": "student"})
    artifacts = {"ingested": Dataset(uri=str(tmp_path / "i")), "labels": Dataset(uri=str(tmp_path / "l")),
                 "model": Model(uri=str(tmp_path / "m")), "scores": Metrics(uri=str(tmp_path / "s"))}
    for device in ("cuda", ""):
        mlnt_pipeline.baseline.python_func(params_json=json.dumps(mlnt_pipeline.PARAMS["baseline"]),
                                           checkpoint_root="", training_device=device, pushgateway="", pipeline="",
                                           **artifacts)
        mlnt_pipeline.mlnt.python_func(params_json=json.dumps(mlnt_pipeline.PARAMS["mlnt"]), checkpoint_root="",
                                       training_device=device, pushgateway="", pipeline="",
                                       baseline_model=Model(uri=str(tmp_path / "b")), **artifacts)
    assert mlnt_pipeline.PARAMS["baseline"]["device"] == mlnt_pipeline.PARAMS["mlnt"]["device"] == "auto"
    assert seen == ["cuda", "cuda", "auto", "auto"]
    given = stub_local_runner(monkeypatch, tmp_path)
    run.run_local(tmp_path / "data", root=tmp_path, registry=tmp_path / "releases", tiny=True)
    assert given["training_device"] == ""


def test_the_deploy_step_acts_as_the_deployer_not_as_the_run_account(tmp_path, monkeypatch):
    """The step's client reads the token and the CA from the mounted Secret, never the pod's own account
    (``/var/run/secrets/kubernetes.io/serviceaccount``, the run account's token)."""
    import kserve  # noqa: PLC0415 - the component imports it in its body

    built = []
    monkeypatch.setattr(kserve, "KServeClient", lambda **kwargs: built.append(kwargs) or "client")
    monkeypatch.setattr(inference_service, "deploy", lambda client, **kw: ("patched", {"client": client, **kw}))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"version": "v7"}))

    class Artifact:
        def __init__(self, path):
            self.path, self.metadata = str(path), {}

    out = Artifact(tmp_path / "manifest")
    mlnt_pipeline.deploy.python_func(decision=Artifact(decision), storage_uri="pvc://mlnt-registry", namespace="mlnt",
                                     apply=True, manifest=out)
    [config] = [call["config_dict"] for call in built]
    assert config["clusters"][0]["cluster"] == {"server": "https://[fd00::1]:443",
                                                "certificate-authority": f"{mlnt_pipeline.DEPLOYER_MOUNT}/ca.crt"}
    token = f"{mlnt_pipeline.DEPLOYER_MOUNT}/token"
    assert config["users"] == [{"name": "mlnt-deployer", "user": {"tokenFile": token}}]
    assert "serviceaccount" not in json.dumps(config)
    assert yaml.safe_load(Path(out.path).read_text())["client"] == "client" and out.metadata["action"] == "patched"


def test_every_step_escapes_its_log_lines_under_the_kfp_executor(spec):
    """KFP's executor configures the root logger before a step's body runs, so each body takes its handlers over
    (components.common.config.configure_logging, tested in tests/components/test_config.py) before any work."""
    pipeline, _ = yaml.safe_load_all(spec)
    for step in STEPS:
        source = pipeline["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["command"][-1]
        body = source[source.index(f"def {step}("):]
        assert "configure_logging(take_over=True)" in body, step
        assert body.index("configure_logging(take_over=True)") < body.index("build("), step


def test_a_failed_validation_logs_its_failure_count_before_the_step_fails(tmp_path, monkeypatch):
    """``failed_expectations`` is the number of failed expectations, logged to ``checks`` before the step raises
    (after copying the Data Docs page), not the 0 of a metric that was only logged on a pass."""
    from kfp.dsl import HTML, Artifact, Dataset, Metrics  # noqa: PLC0415 - the artifact types KFP passes the body

    from components.common import config  # noqa: PLC0415
    from components.ingest import IngestConfig  # noqa: PLC0415
    from components.ingest import run as ingest  # noqa: PLC0415
    from components.validate import ValidationFailedError  # noqa: PLC0415

    taken = []  # the body's logging set-up, recorded: pytest's own handlers stay as they are
    monkeypatch.setattr(config, "configure_logging", lambda **kwargs: taken.append(kwargs))
    ingest(IngestConfig(path=str(make_fashion_mnist(tmp_path / "fashion-mnist"))), out=tmp_path / "ingested")
    docs, checks = HTML(uri=str(tmp_path / "data_docs")), Metrics(uri=str(tmp_path / "checks"))
    report = Artifact(uri=str(tmp_path / "report"))
    with pytest.raises(ValidationFailedError) as failure:  # 300 train and 60 test images, 30 per class: all short
        mlnt_pipeline.validate.python_func(params_json=json.dumps({"min_images": 1000}), pushgateway="",
                                           ingested=Dataset(uri=str(tmp_path / "ingested")), data_docs=docs,
                                           report=report, checks=checks)
    assert taken == [{"take_over": True}]
    page = Path(docs.path).read_text()
    assert "<html" in page.lower() and not links(page)  # one file in the KFP UI: nothing it links to would be there
    assert f"{len(failure.value.failures)} expectation(s) failed" in page
    assert all(html.escape(f["column"]) in page for f in failure.value.failures)
    assert sorted(f["column"] for f in failure.value.failures) == ["test_images", "train_count", "train_images"]
    assert checks.metadata == {"failed_expectations": 3}
    assert str(failure.value).startswith("3 expectation(s) failed on")
    assert len(json.loads(Path(report.path).read_text())["failures"]) == 3  # the report the page was written from


def links(page: str) -> list[str]:
    """Every link, script, image or stylesheet a page refers to (href, src), but its own #anchors."""
    from html.parser import HTMLParser  # noqa: PLC0415

    found = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name in ("href", "src") and value
                         and not value.startswith("#"))

    Parser().feed(page)
    return found


def test_the_validation_page_is_self_contained_and_escapes_what_the_data_says():
    from pipelines.data_docs import summary_html  # noqa: PLC0415

    page = summary_html({"failures": [{"table": "images", "expectation": "expect_column_values_to_be_in_set",
                                       "column": "label", "expected": {"value_set": [0, 1]},
                                       "observed": "<a href='x.html'>shirt</a>"}],
                         "statistics": {"images": 3}})
    assert not links(page) and "&lt;a href=" in page and "1 expectation(s) failed" in page
    assert "Every expectation was met" in summary_html({"failures": [], "statistics": {"images": 3}})
    conflicts = [f"train/dog/{i}.png ≈ train/cat/<{i}>.png (dog and cat)" for i in range(101)]
    page = summary_html({"failures": [], "label_conflicts": conflicts})
    assert "Training images with another label's near-duplicate (101)" in page and page.count("<li>") == 100
    assert "train/cat/&lt;0&gt;.png" in page and "... and 1 more in report.json's label_conflicts" in page
    assert "near-duplicate" not in summary_html({"failures": [], "label_conflicts": []})


def test_the_validation_page_puts_each_failure_in_its_columns_and_shows_the_statistics(tmp_path):
    """The page lists every failed expectation's table, expectation, column, expected and observed value in that
    order, and the statistics; without a report (validate could not read the data) nothing is written."""
    from pipelines.data_docs import summary_html, write_summary  # noqa: PLC0415

    page = summary_html({"failures": [{"table": "images", "expectation": "expect_table_row_count_to_be_between",
                                       "column": "train_count", "expected": ">= 1000", "observed": "300"}],
                         "statistics": {"train_images": 300}})
    assert ("<th>table</th><th>expectation</th><th>column</th><th>expected</th><th>observed</th></tr><tr><td>images"
            "</td><td>expect_table_row_count_to_be_between</td><td>train_count</td><td>&gt;= 1000</td><td>300</td>"
            "</tr>") in page
    assert "<h2>Statistics</h2><table><tr><th>train_images</th><td>300</td></tr></table>" in page
    assert not write_summary(tmp_path / "report.json", tmp_path / "data_docs") and not list(tmp_path.iterdir())


class FakeKfpServer(BaseHTTPRequestHandler):
    """The slice of the Kubeflow Pipelines v2beta1 REST API that a run submission uses; it records requests, and the
    Authorization header of each (None: none sent) in ``authorizations``."""

    requests: ClassVar[list] = []
    authorizations: ClassVar[list] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.authorizations.append(self.headers.get("Authorization"))
        self.requests.append(("GET", self.path, None))
        self._reply({"experiments": [], "total_size": 0} if "/experiments" in self.path else {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.authorizations.append(self.headers.get("Authorization"))
        self.requests.append(("POST", self.path, body))
        if self.path == "/apis/v2beta1/experiments":
            self._reply({"experiment_id": "exp-1", "display_name": body["display_name"]})
        else:
            self._reply({"run_id": "run-1", "display_name": body.get("display_name", "")})

    def log_message(self, *args):
        pass


def test_host_submits_the_compiled_pipeline_with_its_arguments(capsys, tmp_path, monkeypatch):
    """Also with the pod's KFP token: the file KF_PIPELINES_SA_TOKEN_PATH names (the weekly CronJob's projected token
    at kfp's default path otherwise) goes with every request as a Bearer token, which a multi-user KFP requires."""
    token = tmp_path / "token"
    token.write_text("kfp-token-of-mlnt-submitter\n")  # the kubelet's file; the header carries it stripped
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    FakeKfpServer.requests, FakeKfpServer.authorizations = [], []
    server = HTTPServer(("127.0.0.1", 0), FakeKfpServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        assert run.main(["--host", host, "--data", "/mnt/data/fashion-mnist", "--experiment", "noisy",
                         "--pushgateway", "http://prometheus-pushgateway.monitoring.svc:9091",
                         "--pipeline", "mlnt-noisy"]) == 0
    finally:
        server.shutdown()
    assert "submitted run run-1" in capsys.readouterr().out
    assert ("POST", "/apis/v2beta1/runs") in [(m, p) for m, p, b in FakeKfpServer.requests]
    assert FakeKfpServer.authorizations == ["Bearer kfp-token-of-mlnt-submitter"] * len(FakeKfpServer.requests)
    (experiment,) = [b for m, p, b in FakeKfpServer.requests if p == "/apis/v2beta1/experiments"]
    (submitted,) = [b for m, p, b in FakeKfpServer.requests if p == "/apis/v2beta1/runs"]
    assert experiment["display_name"] == "noisy" and submitted["experiment_id"] == "exp-1"
    assert submitted["service_account"] == run.SERVICE_ACCOUNT
    spec = submitted["pipeline_spec"]  # with a platform spec, KFP sends both documents under one key
    assert spec["pipeline_spec"]["pipelineInfo"]["name"] == "mlnt-pipeline"
    assert "exec-mlnt" in spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    arguments = submitted["runtime_config"]["parameters"]
    assert arguments["data_path"] == "/mnt/data/fashion-mnist"
    assert arguments["pushgateway"] == "http://prometheus-pushgateway.monitoring.svc:9091"
    assert arguments["pipeline"] == "mlnt-noisy"
    assert "training_device" not in arguments  # the pipeline's default: cuda, on the GPU pool
    for step in STEPS:  # JSON text that the step decodes: the ints of params.yaml arrive as ints
        assert json.loads(arguments[f"{step}_params"]) == mlnt_pipeline.PARAMS[step]
    assert type(json.loads(arguments["baseline_params"])["epochs"]) is int


def test_host_without_a_kfp_token_sends_no_authorization(tmp_path, monkeypatch, capsys):
    """Outside a pod (no token file at kfp's default path, no KF_PIPELINES_SA_TOKEN_PATH) nothing is invented: a
    standalone KFP or a port-forward gets no Authorization header. A KF_PIPELINES_SA_TOKEN_PATH naming no file is one
    line of error, before any request."""
    import kfp.client  # noqa: PLC0415

    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    monkeypatch.setattr(kfp.client, "KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-token"))
    FakeKfpServer.authorizations = []
    submitted_run(["--data", "/mnt/data/fashion-mnist"])
    assert FakeKfpServer.authorizations and set(FakeKfpServer.authorizations) == {None}
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "missing"))
    assert run.main(["--host", "http://127.0.0.1:9"]) == 1  # nothing listens on port 9: refused before connecting
    assert capsys.readouterr().err == (f"error: pipelines.run: KF_PIPELINES_SA_TOKEN_PATH: expected the KFP token "
                                       f"file {tmp_path / 'missing'}, found none\n")


def test_unreachable_host_is_one_line_of_error(capsys):
    server = HTTPServer(("127.0.0.1", 0), FakeKfpServer)
    port = server.server_address[1]
    server.server_close()  # nothing listens on this port now
    assert run.main(["--host", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pipelines.run:") and "Traceback" not in err


def submitted_run(argv: list[str]) -> dict:
    """The run ``pipelines.run.main(argv + ["--host", <a FakeKfpServer>])`` submits (asserting it returns 0)."""
    FakeKfpServer.requests, FakeKfpServer.authorizations = [], []
    server = HTTPServer(("127.0.0.1", 0), FakeKfpServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert run.main(["--host", f"http://127.0.0.1:{server.server_address[1]}", *argv]) == 0
    finally:
        server.shutdown()
        server.server_close()
    (submitted,) = [b for m, p, b in FakeKfpServer.requests if p == "/apis/v2beta1/runs"]
    return submitted


def test_a_submitted_run_keeps_ingest_and_the_gate_uncached(spec):
    """The client's ``enable_caching`` (True or False) sets every task's option in the spec it submits; unset, the
    compiled options travel as they are: ingest (the data behind the path can change) and the gate (the registry's
    champion can change) run in every run."""
    tasks = submitted_run(["--data", "/mnt/data/fashion-mnist"])["pipeline_spec"]["pipeline_spec"]["root"]["dag"][
        "tasks"]
    compiled = next(yaml.safe_load_all(spec))["root"]["dag"]["tasks"]
    for step in ("ingest", "gate"):
        assert tasks[step]["cachingOptions"].get("enableCache", False) is False, step
    assert {name: task.get("cachingOptions") for name, task in tasks.items()} == {
        name: task.get("cachingOptions") for name, task in compiled.items()}


@pytest.mark.parametrize("params_file", [None, ROOT / "recipes/clothing1m.yaml", ROOT / "recipes/imagefolder.yaml"])
def test_tiny_trains_on_a_few_hundred_images_whatever_the_params_file(params_file):
    """--tiny said "a few hundred images" and set noise.train_size 0, which is every image: 48,000 of
    Fashion-MNIST, four times the default run's. With the Clothing1M recipe its two epochs met the recipe's
    lr_milestones [2.0], a config the baseline step refused in the cluster after three steps had run."""
    arguments = run.pipeline_arguments("/mnt/data/x", tiny=True, params_file=params_file)
    noise = json.loads(arguments["noise_params"])
    assert 0 < noise["train_size"] <= 1000 and noise["val_fraction"] == 0.2
    assert json.loads(arguments["baseline_params"])["lr_milestones"] == []


def test_tiny_is_the_documented_smoke_run():
    """docs/deploy.md and ``pipelines.run``: ``--tiny`` trains for two epochs at batch 32 on 600 of the ingested
    images, 480 for training and 120 for validation."""
    given = run.pipeline_arguments("/mnt/data/x", tiny=True)
    noise = json.loads(given["noise_params"])
    assert (noise["train_size"], noise["val_fraction"]) == (600, 0.2)
    for step in ("baseline", "mlnt"):
        section = json.loads(given[f"{step}_params"])
        assert (section["epochs"], section["batch_size"]) == (2, 32), step


def test_a_params_file_without_a_section_for_every_step_is_refused_by_name(tmp_path):
    params = load_params(ROOT / "params.yaml")
    del params["gate"], params["export"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"p.yaml: expected a section for every step, found none for export, gate"):
        run.pipeline_arguments("/mnt/data/x", tiny=False, params_file=tmp_path / "p.yaml")


def test_the_command_line_reaches_the_run(monkeypatch, tmp_path, capsys):
    """Every option of ``python -m pipelines.run`` reaches what runs: --tiny, --params and --pipeline the local run,
    and --experiment, --service-account, --tiny, --params, --pushgateway and --pipeline the submitted one."""
    calls = []
    decision = {"passed": True, "released": True, "version": "v1", "reasons": []}
    monkeypatch.setattr(run, "run_local", lambda data, **kw: calls.append(("local", data, kw)) or decision)
    monkeypatch.setattr(run, "submit", lambda host, data, **kw: calls.append(("host", data, kw)) or "run-1")
    params = tmp_path / "p.yaml"
    assert run.main(["--local", "--tiny", "--data", "d", "--params", str(params), "--root", str(tmp_path),
                     "--pipeline", "local"]) == 0
    assert run.main(["--host", "http://kfp", "--tiny", "--data", "/mnt/data/d", "--params", str(params),
                     "--experiment", "e", "--service-account", "sa", "--pushgateway", "pg:9091",
                     "--pipeline", "p", "--registry", "/mnt/registry/d"]) == 0
    (_, data, local), (_, path, host) = calls
    assert data == Path("d") and (local["tiny"], local["params_file"], local["root"]) == (True, params, tmp_path)
    assert local["registry"] == tmp_path / "releases" and local["pipeline"] == "local"
    assert path == "/mnt/data/d" and host == {"experiment": "e", "tiny": True, "service_account": "sa",
                                              "params_file": params, "pushgateway": "pg:9091", "pipeline": "p",
                                              "registry": "/mnt/registry/d"}


def test_a_params_file_a_step_would_refuse_is_refused_before_the_run_is_submitted(tmp_path):
    params = load_params(ROOT / "params.yaml")
    params["baseline"]["lr_milestones"] = [20.0]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match=r"p.yaml: baseline: lr_milestones\[0\]: expected an epoch below epochs "
                                         r"\(15\), found 20.0"):
        run.pipeline_arguments("/mnt/data/x", tiny=False, params_file=tmp_path / "p.yaml")


def test_host_without_data_leaves_the_pipelines_default_data_path(capsys):
    submitted = submitted_run([])
    assert "data_path" not in submitted["runtime_config"]["parameters"]
    pipeline = submitted["pipeline_spec"]["pipeline_spec"]
    assert pipeline["root"]["inputDefinitions"]["parameters"]["data_path"]["defaultValue"] == \
        mlnt_pipeline.DEFAULT_DATA_PATH == "/mnt/data/fashion-mnist"


def test_host_refuses_another_datasets_params_without_data(capsys):
    """The pipeline's default folder holds Fashion-MNIST: a Clothing1M recipe without --data would read it as
    Clothing1M. Refused before any connection (nothing listens on port 9)."""
    assert run.main(["--host", "http://127.0.0.1:9", "--params", str(ROOT / "recipes" / "clothing1m.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pipelines.run: --data: expected the clothing1m folder") and "Traceback" not in err


@pytest.mark.parametrize(("params", "folder"), [(None, "data/fashion-mnist"),
                                                ("recipes/clothing1m.yaml", "data/clothing1m")])
def test_local_without_data_reads_the_params_files_ingest_path(params, folder, tmp_path, monkeypatch):
    given = stub_local_runner(monkeypatch, tmp_path)
    monkeypatch.chdir(ROOT)
    assert run.main(["--local", "--root", str(tmp_path), *(["--params", params] if params else [])]) == 0
    assert given["data_path"] == str((ROOT / folder).resolve())
    assert json.loads(given["ingest_params"])["path"] == folder


def test_the_model_card_records_the_folder_ingest_read(spec, tmp_path, monkeypatch):
    """ingest reads ``data_path``, not its section's ``path``: the export step records what was read."""
    from kfp.dsl import Dataset, Model  # noqa: PLC0415

    import components.export  # noqa: PLC0415

    recorded = {}

    def fake_run(config, **kwargs):
        recorded.update(kwargs["params"])
        return {"model": "teacher", "onnx_sha256": "0" * 64, "opset": 17}

    monkeypatch.setattr(components.export, "run", fake_run)
    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    sections = {f"{step}_params": json.dumps(mlnt_pipeline.PARAMS[step]) for step in
                ("ingest", "validate", "noise", "baseline", "mlnt", "evaluate")}
    artifact = {name: kind(uri=str(tmp_path / name)) for name, kind in (
        ("ingested", Dataset), ("labels", Dataset), ("baseline_model", Model), ("mlnt_model", Model),
        ("evaluation", Dataset), ("onnx_model", Model))}
    mlnt_pipeline.export.python_func(params_json=json.dumps(mlnt_pipeline.PARAMS["export"]),
                                     data_path="/mnt/data/fashion-mnist-2027", pushgateway="", **sections, **artifact)
    assert recorded["ingest"]["path"] == "/mnt/data/fashion-mnist-2027"
    assert recorded["ingest"]["dataset"] == mlnt_pipeline.PARAMS["ingest"]["dataset"]
    pipeline, _ = yaml.safe_load_all(spec)
    for step in ("ingest", "export"):
        assert pipeline["root"]["dag"]["tasks"][step]["inputs"]["parameters"]["data_path"] == {
            "componentInputParameter": "data_path"}, step


def test_no_step_after_validate_starts_before_it_passes(spec):
    """A failed validation stops the run before anything trains on the data (the validate step's docstring): noise,
    and through it every later step, waits for validate; ingest alone does not."""
    pipeline, _ = yaml.safe_load_all(spec)
    tasks = pipeline["root"]["dag"]["tasks"]

    def upstream(name: str) -> set[str]:
        direct = set(tasks[name].get("dependentTasks", []))
        return direct.union(*(upstream(task) for task in direct))

    assert "validate" in tasks["noise"].get("dependentTasks", [])
    assert {name for name in tasks if "validate" in upstream(name)} == set(tasks) - {"ingest", "validate"}


def test_the_steps_log_the_metrics_their_docstrings_name(tmp_path, monkeypatch):
    """What the KFP UI shows of a run: ingest's dataset and class count, noise's realised_rate_train where a clean
    label is known (a rate of 0.0 too), baseline's val_accuracy and best_epoch, mlnt's released_teacher (1.0: the
    teacher), evaluate's accuracies, the label-issue F1 only with a ground truth, and the teacher's confusion matrix
    with one row per actual class."""
    from kfp.dsl import ClassificationMetrics, Dataset, Metrics, Model  # noqa: PLC0415

    import components.baseline  # noqa: PLC0415
    import components.evaluate  # noqa: PLC0415
    import components.ingest  # noqa: PLC0415
    import components.mlnt  # noqa: PLC0415
    import components.noise  # noqa: PLC0415

    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    params = {step: json.dumps(mlnt_pipeline.PARAMS[step]) for step in STEPS}
    data = {name: kind(uri=str(tmp_path / name)) for name, kind in (
        ("ingested", Dataset), ("labels", Dataset), ("baseline_model", Model), ("mlnt_model", Model))}

    def logged(step: str, result: dict, output: str, **inputs) -> dict:
        """The metadata of the Metrics artifact ``output`` of ``step``'s body, its library run returning ``result``."""
        monkeypatch.setattr(getattr(components, step), "run", lambda config, **kwargs: result)
        metrics = Metrics(uri=str(tmp_path / f"{step}-{output}"))
        body = getattr(mlnt_pipeline, step).python_func
        named = {"pipeline": ""} if step in mlnt_pipeline.PUSHING else {}
        body(params_json=params[step], pushgateway="", **named, **inputs, **{output: metrics})
        return metrics.metadata

    monkeypatch.setattr(components.ingest, "run", lambda config, out: {"dataset": "fashion-mnist",
                                                                        "class_names": ["a", "b", "c"]})
    ingested = Dataset(uri=str(tmp_path / "ingest"))
    mlnt_pipeline.ingest.python_func(params_json=params["ingest"], data_path="/mnt/data/x", pushgateway="",
                                     ingested=ingested)
    assert ingested.metadata == {"dataset": "fashion-mnist", "classes": 3}
    noise = {"ingested": data["ingested"], "labels": Dataset(uri=str(tmp_path / "noise"))}
    assert logged("noise", {"realised_rate_train": 0.0}, "rates", **noise) == {"realised_rate_train": 0.0}
    assert logged("noise", {"realised_rate_train": None}, "rates", **noise) == {}
    training = {"checkpoint_root": "", "training_device": "", "ingested": data["ingested"], "labels": data["labels"],
                "model": Model(uri=str(tmp_path / "model"))}
    assert logged("baseline", {"val_accuracy": 0.8, "best_epoch": 3}, "scores", **training) == {
        "val_accuracy": 0.8, "best_epoch": 3}
    for released, teacher in (("teacher", 1.0), ("student", 0.0)):
        assert logged("mlnt", {"val_accuracy": 0.9, "released": released}, "scores", **training,
                      baseline_model=data["baseline_model"]) == {"val_accuracy": 0.9, "released_teacher": teacher}

    evaluation = tmp_path / "evaluation"
    evaluation.mkdir()
    (evaluation / "confusion_teacher.csv").write_text("actual,predicted\na,a\na,b\nb,b\nb,b\nb,b\n")
    for truth, scores in ((True, {"label_issues_f1": 0.5}), (False, {})):
        metrics = {"class_names": ["a", "b"], "label_issues": {"ground_truth": truth, "f1": 0.5 if truth else None},
                   **{model: {"accuracy": 0.7} for model in ("baseline", "student", "teacher")}}
        monkeypatch.setattr(components.evaluate, "run", lambda config, result=metrics, **kwargs: result)
        logged_scores, confusion = Metrics(uri=str(tmp_path / "scores")), ClassificationMetrics(uri=str(tmp_path / "c"))
        mlnt_pipeline.evaluate.python_func(params_json=params["evaluate"], pushgateway="", pipeline="",
                                           ingested=data["ingested"],
                                           labels=data["labels"], baseline_model=data["baseline_model"],
                                           mlnt_model=data["mlnt_model"],
                                           evaluation=Dataset(uri=str(evaluation)), scores=logged_scores,
                                           confusion=confusion)
        assert logged_scores.metadata == {"baseline_accuracy": 0.7, "student_accuracy": 0.7, "teacher_accuracy": 0.7,
                                          **scores}
        assert confusion.metadata["confusionMatrix"]["rows"] == [{"row": [1, 1]}, {"row": [0, 3]}]  # row: actual


# What a run says and refuses (pipelines.run), and what each step keeps and says (pipelines.mlnt_pipeline) ----------
CHAMPION = "v20250101T000000Z-deadbeef"
FAILED = {"passed": False, "accuracy": 0.5, "reasons": ["fail: accuracy 0.5000, required at least min_accuracy 0.8",
                                                        "pass: ONNX parity: max |diff| 1e-06"]}


def stub_local_runner(monkeypatch, tmp_path, decision: dict | None = None) -> dict:
    """The KFP local runner stood in for: ``run.mlnt_pipeline`` records its arguments and returns a task whose output
    ``decision`` is the gate step's file holding ``decision`` (default: a pass that released nothing)."""
    from types import SimpleNamespace  # noqa: PLC0415

    from kfp import local  # noqa: PLC0415
    from kfp.dsl import Artifact  # noqa: PLC0415

    given = {}

    def pipeline(**kwargs):
        given.update(kwargs)
        path = tmp_path / "gate-decision"
        path.write_text(json.dumps(decision or {"passed": True, "released": False, "version": CHAMPION,
                                                "reasons": ["pass: no champion yet"]}))
        return SimpleNamespace(outputs={"decision": Artifact(uri=str(path))})

    monkeypatch.setattr(local, "init", lambda **kwargs: None)
    monkeypatch.setattr(run, "mlnt_pipeline", pipeline)
    return given


def test_the_gate_step_logs_its_verdict_and_every_reason(tmp_path, monkeypatch, capsys):
    """docs/deploy.md step 7 sends a user to the gate step's log: it says PASS or FAIL and every reason of
    decision.json, as ``python -m components.gate`` does."""
    from kfp.dsl import Artifact, Dataset, Model  # noqa: PLC0415

    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    for folder in ("export", "evaluate"):  # nothing exported: the gate fails
        (tmp_path / folder).mkdir()
    decision = Artifact(uri=str(tmp_path / "decision"))
    passed = mlnt_pipeline.gate.python_func(params_json="{}", registry=str(tmp_path / "registry"), pushgateway="",
                                            pipeline="mlnt", onnx_model=Model(uri=str(tmp_path / "export")),
                                            evaluation=Dataset(uri=str(tmp_path / "evaluate")), decision=decision)
    reasons = json.loads(Path(decision.path).read_text())["reasons"]
    assert passed is False and reasons[0].startswith("fail: inputs missing or unreadable")
    assert capsys.readouterr().out == "gate: FAIL: not released\n" + "".join(f"  {r}\n" for r in reasons)


@pytest.mark.parametrize(("decision", "champion", "last"), [
    (FAILED, CHAMPION, "still serving: {latest} -> " + CHAMPION),
    (FAILED, None, "still serving: nothing, no release in {registry}"),
    ({"passed": True, "released": False, "version": CHAMPION, "reasons": ["pass: accuracy 0.9000"]}, CHAMPION,
     "still serving: {latest} -> " + CHAMPION),
    ({"passed": True, "released": True, "version": "v20260101T000000Z-0123abcd", "reasons": ["pass: accuracy 0.9"]},
     "v20260101T000000Z-0123abcd", "release: {latest} -> v20260101T000000Z-0123abcd")])
def test_local_prints_the_gates_verdict_and_what_is_served(decision, champion, last, tmp_path, monkeypatch, capsys):
    """A failed gate (or a model that is the champion already) releases nothing: the run ends well (exit 0, a decision
    is no error) and says so with the gate's reasons; the registry's latest is "still serving", never this run's
    release."""
    registry = tmp_path / "releases"
    registry.mkdir()
    if champion:
        (registry / champion).mkdir()
        (registry / "latest").symlink_to(champion)
    stub_local_runner(monkeypatch, tmp_path, decision)
    assert run.main(["--local", "--data", str(tmp_path / "data"), "--root", str(tmp_path), "--registry",
                     str(registry)]) == 0
    verdict = "FAIL: not released" if not decision["passed"] else (
        f"PASS: released as {champion}" if decision["released"] else
        f"PASS: the champion already ({CHAMPION}): nothing released again")
    assert capsys.readouterr().out == (f"pipeline finished; artifacts under {tmp_path}\ngate: {verdict}\n"
                                       + "".join(f"  {r}\n" for r in decision["reasons"])
                                       + last.format(latest=registry / "latest", registry=registry) + "\n")


def test_host_sends_registry_as_the_pipelines_registry_and_refuses_root(capsys):
    """The gate releases into the pipeline's ``registry`` (over the params file's gate.registry), which ``--registry``
    sets, on the registry volume; deploy serves the release from that folder of the volume. ``--root`` is a local
    run's: refused with --host, as is a registry the gate step does not mount (its releases would go with the pod)."""
    arguments = submitted_run(["--registry", "/mnt/registry/clothing1m"])["runtime_config"]["parameters"]
    assert (arguments["registry"], arguments["storage_uri"]) == ("/mnt/registry/clothing1m",
                                                                 "pvc://mlnt-registry/clothing1m")
    arguments = submitted_run([])["runtime_config"]["parameters"]
    assert "registry" not in arguments and "storage_uri" not in arguments  # the pipeline's defaults: the volume's root
    assert run.main(["--host", "http://127.0.0.1:9", "--root", "/nowhere"]) == 1  # refused before connecting
    assert capsys.readouterr().err == ("error: pipelines.run: --root: expected with --local only (a local run's "
                                       "pipeline root), found it with --host\n")
    assert run.main(["--host", "http://127.0.0.1:9", "--registry", "releases/clothing1m"]) == 1
    assert capsys.readouterr().err == ("error: pipelines.run: --registry: expected an absolute path on the volume "
                                       "mlnt-registry, which the gate step mounts at /mnt/registry (e.g. "
                                       "/mnt/registry/clothing1m), found 'releases/clothing1m'\n")


def test_host_refuses_a_tiny_run_without_a_registry_of_its_own_and_never_deploys_it(capsys):
    """--tiny's gate has no accuracy floor (min_accuracy 0): submitted with the pipeline's registry (the volume's root,
    production's) and deploy, a smoke model would become the champion and be served, and later models would be judged
    against it. Refused before connecting without --registry; with one, the run releases there and deploy writes
    the InferenceService it would apply without applying it."""
    assert run.main(["--host", "http://127.0.0.1:9", "--tiny", "--data", "/mnt/data/fashion-mnist"]) == 1
    assert capsys.readouterr().err == (
        "error: pipelines.run: --tiny: expected --registry with --host (a folder on the registry volume of its own, "
        "e.g. /mnt/registry/smoke), found none: a smoke run's gate has no accuracy floor (gate.min_accuracy 0) and "
        "would release its model into the production registry, /mnt/registry\n")
    arguments = submitted_run(["--tiny", "--registry", "/mnt/registry/smoke"])["runtime_config"]["parameters"]
    assert (arguments["registry"], arguments["apply_deploy"]) == ("/mnt/registry/smoke", False)
    assert json.loads(arguments["gate_params"])["min_accuracy"] == 0.0
    assert "apply_deploy" not in submitted_run([])["runtime_config"]["parameters"]  # the pipeline's default: True


@pytest.mark.parametrize("missing", ["dataset", "path"])
def test_a_params_file_that_leaves_ingest_fields_to_their_defaults_runs_as_the_step_would(missing, tmp_path,
                                                                                         monkeypatch, capsys):
    """ingest.dataset and ingest.path default as the step's typed config does (fashion-mnist, data/fashion-mnist):
    --host without --data takes the pipeline's default folder, --local the default path."""
    params = load_params(ROOT / "params.yaml")
    del params["ingest"][missing]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    arguments = submitted_run(["--params", str(tmp_path / "p.yaml")])["runtime_config"]["parameters"]
    assert "data_path" not in arguments
    given = stub_local_runner(monkeypatch, tmp_path)
    monkeypatch.chdir(ROOT)
    assert run.main(["--local", "--root", str(tmp_path), "--params", str(tmp_path / "p.yaml")]) == 0
    assert given["data_path"] == str(ROOT / "data" / "fashion-mnist")


def test_an_ingest_section_the_step_refuses_is_refused_by_name_without_data(tmp_path, monkeypatch, capsys):
    params = load_params(ROOT / "params.yaml")
    params["ingest"]["dataset"] = "mnist"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    stub_local_runner(monkeypatch, tmp_path)
    for where in (["--host", "http://127.0.0.1:9"], ["--local", "--root", str(tmp_path)]):
        assert run.main([*where, "--params", str(tmp_path / "p.yaml")]) == 1
        err = capsys.readouterr().err
        assert err == (f"error: pipelines.run: {tmp_path / 'p.yaml'}: ingest.dataset: expected one of 'fashion-mnist', "
                       "'cifar10', 'cifar10n', 'cifar100', 'cifar100n', 'clothing1m', 'imagefolder', found 'mnist'\n")


NOT_AN_OBJECT = [('{"rate": 0.8', "invalid JSON: Expecting ',' delimiter: line 1 column 13 (char 12)"),
                 ("null", "null"), ('"symmetric"', 'a string, "symmetric"'), ("[1, 2]", "an array, [1, 2]"),
                 ("", "invalid JSON: Expecting value: line 1 column 1 (char 0)")]


@pytest.mark.parametrize(("text", "found"), NOT_AN_OBJECT)
def test_a_steps_params_text_that_is_no_json_object_is_refused_naming_the_parameter(text, found, tmp_path,
                                                                                   monkeypatch):
    """In the KFP UI a user edits ``<step>_params`` as JSON text (docs/deploy.md): one that is not an object fails
    the step naming the pipeline parameter, what was expected and what was found."""
    from components.common.config import ConfigError  # noqa: PLC0415

    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    for step in STEPS:
        with pytest.raises(ConfigError) as refused:
            call_step(step, tmp_path, params_json=text)
        assert str(refused.value) == f"{step}_params: expected a JSON object (the {step} section), found {found}"
    for step in ("ingest", "validate", "noise", "baseline", "mlnt", "evaluate"):  # what export records in the card
        with pytest.raises(ConfigError, match=rf"^{step}_params: expected a JSON object \(the {step} section\)"):
            call_step("export", tmp_path, **{f"{step}_params": text})


def call_step(step: str, tmp_path: Path, **given):
    """``step``'s body called with ``given``, the rest of its inputs params.yaml's sections, empty strings and
    artifacts under ``tmp_path``."""
    import inspect  # noqa: PLC0415
    import typing  # noqa: PLC0415

    body = getattr(mlnt_pipeline, step).python_func
    arguments = {}
    for name, parameter in inspect.signature(body).parameters.items():
        kind = parameter.annotation
        if name.endswith("_params") or name == "params_json":
            arguments[name] = json.dumps(mlnt_pipeline.PARAMS[step if name == "params_json" else name[:-7]])
        elif kind in (str, bool):
            arguments[name] = kind()
        else:  # Input[...] and Output[...]: the artifact class, annotated
            arguments[name] = typing.get_args(kind)[0](uri=str(tmp_path / f"{step}-{name}"))
    return body(**{**arguments, **given})


@pytest.mark.parametrize("data", ["data/fashion-mnist", "", "/data/fashion-mnist", "/mnt/data/../etc"])
def test_host_refuses_a_data_folder_off_the_data_volume(data, capsys):
    """In the cluster ingest reads ``data_path`` in its pod, where the volume mlnt-data is mounted at /mnt/data: a
    relative path resolves under the image's /app, another absolute one finds nothing there."""
    assert run.main(["--host", "http://127.0.0.1:9", "--data", data]) == 1  # refused before connecting
    assert capsys.readouterr().err == ("error: pipelines.run: --data: expected an absolute path on the volume "
                                       "mlnt-data, which the ingest step mounts at /mnt/data (e.g. "
                                       f"/mnt/data/fashion-mnist), found {data!r}\n")


def test_the_ingest_section_is_checked_with_the_folder_the_run_reads(tmp_path):
    """ingest reads ``data_path`` over its section's ``path``: the check before a run builds the section with it."""
    from components.common.config import ConfigError  # noqa: PLC0415

    params = load_params(ROOT / "params.yaml")
    params["ingest"]["path"] = ""  # not what the run reads: --data is
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    given = run.pipeline_arguments("/mnt/data/fashion-mnist", tiny=False, params_file=tmp_path / "p.yaml")
    assert given["data_path"] == "/mnt/data/fashion-mnist"
    with pytest.raises(ConfigError, match=r"^params.yaml: ingest: path: expected the folder \(or file\) of the "
                                          r"dataset, found ''$"):
        run.pipeline_arguments("", tiny=False)


def test_the_validate_step_keeps_report_json_beside_its_page(tmp_path, monkeypatch):
    """The page lists the first 100 label conflicts and sends the user to report.json's label_conflicts for the
    rest: the step keeps report.json as its ``report`` artifact, pass or fail."""
    from kfp.dsl import HTML, Artifact, Dataset, Metrics  # noqa: PLC0415

    import components.validate  # noqa: PLC0415

    conflicts = [f"train/a/{i}.png ≈ train/b/{i}.png (a and b)" for i in range(150)]
    failures = [{"table": "images", "expectation": "e", "column": "c", "expected": 1, "observed": 0}]

    def fake_run(config, *, ingest, out, failed=False):  # a pass (or a failure) with 150 label conflicts
        report = {"failures": failures if failed else [], "label_conflicts": conflicts, "statistics": {}}
        (Path(out) / "report.json").write_text(json.dumps(report))
        if failed:
            raise components.validate.ValidationFailedError("1 expectation(s) failed on x\nc", failures)
        return report

    monkeypatch.setattr("components.common.config.configure_logging", lambda **kwargs: None)
    for failed in (False, True):
        monkeypatch.setattr(components.validate, "run", lambda config, failed=failed, **kw: fake_run(
            config, failed=failed, **kw))
        folder = tmp_path / str(failed)
        docs, report = HTML(uri=str(folder / "data_docs")), Artifact(uri=str(folder / "report"))
        folder.mkdir()
        try:
            mlnt_pipeline.validate.python_func(params_json="{}", pushgateway="", ingested=Dataset(uri=str(tmp_path)),
                                               data_docs=docs, report=report, checks=Metrics(uri=str(folder / "m")))
        except components.validate.ValidationFailedError:
            assert failed
        assert json.loads(Path(report.path).read_text())["label_conflicts"] == conflicts
        assert "... and 50 more in report.json's label_conflicts (the validate step's report artifact)" in \
            Path(docs.path).read_text()
