"""pipelines/pushgateway.py: how a KFP step hands components.common.telemetry the Pushgateway's address (the pipeline
parameter ``pushgateway``), the pipeline's name (the parameter ``pipeline``) and credentials (the Secret
mlnt-pushgateway, mounted as files where it exists), and a pushing step's body doing so before its work. No cluster
and no Pushgateway: telemetry's push is recorded (tests/test_pushgateway_auth.py pushes to a real one)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from components.common import telemetry
from pipelines import mlnt_pipeline, pushgateway

VARIABLES = (telemetry.PUSHGATEWAY_ENV, telemetry.USERNAME_ENV, telemetry.PASSWORD_ENV, telemetry.PASSWORD_FILE_ENV,
             telemetry.PIPELINE_ENV)
ADDRESS = "http://prometheus-pushgateway.monitoring.svc:9091"


@pytest.fixture
def environ(monkeypatch):
    """The process's environment without telemetry's variables; whatever a test sets is undone afterwards."""
    for name in VARIABLES:
        monkeypatch.setenv(name, "-")  # recorded, so that the teardown restores what was there before
        monkeypatch.delenv(name)


def mounted(folder: Path, **files: str) -> Path:
    """A folder as the kubelet mounts a Secret: one file per key."""
    folder.mkdir()
    for key, value in files.items():
        (folder / key).write_text(value)
    return folder


def test_the_address_and_a_mounted_secret_become_telemetrys_credentials(tmp_path):
    secret = mounted(tmp_path / "secret", username="mlnt-pipeline\n", password="s3cret\n")
    environ: dict[str, str] = {}
    assert pushgateway.configure(ADDRESS, secret=secret, environ=environ) == sorted(
        [telemetry.PUSHGATEWAY_ENV, telemetry.USERNAME_ENV, telemetry.PASSWORD_FILE_ENV])
    assert environ == {telemetry.PUSHGATEWAY_ENV: ADDRESS, telemetry.USERNAME_ENV: "mlnt-pipeline",
                       telemetry.PASSWORD_FILE_ENV: str(secret / "password")}
    assert telemetry.credentials(environ) == ("mlnt-pipeline", "s3cret")  # the password stays in its file


def test_without_the_secret_nothing_but_the_address_is_set(tmp_path):
    """The Secret is optional: the kubelet mounts an empty folder, or none; an unauthenticated push follows."""
    for secret in (tmp_path / "absent", mounted(tmp_path / "empty")):
        environ: dict[str, str] = {}
        assert pushgateway.configure(ADDRESS, secret=secret, environ=environ) == [telemetry.PUSHGATEWAY_ENV]
        assert telemetry.credentials(environ) is None


def test_an_empty_address_changes_nothing(tmp_path):
    environ = {telemetry.PUSHGATEWAY_ENV: "set-before"}
    assert pushgateway.configure("", secret=tmp_path / "absent", environ=environ) == []
    assert environ == {telemetry.PUSHGATEWAY_ENV: "set-before"}


def test_the_pipelines_name_becomes_telemetrys_and_an_empty_one_leaves_its_default(tmp_path):
    """The name the metrics are grouped under (the run's parameter ``pipeline``) reaches telemetry as MLNT_PIPELINE;
    empty, telemetry's default stays."""
    environ: dict[str, str] = {}
    assert pushgateway.configure(ADDRESS, pipeline="clothing1m", secret=tmp_path / "absent", environ=environ) == [
        telemetry.PIPELINE_ENV, telemetry.PUSHGATEWAY_ENV]
    assert telemetry.pipeline_name(environ) == "clothing1m"
    environ = {}
    pushgateway.configure(ADDRESS, pipeline="", secret=tmp_path / "absent", environ=environ)
    assert telemetry.PIPELINE_ENV not in environ and telemetry.pipeline_name(environ) == telemetry.DEFAULT_PIPELINE


def test_a_secret_without_a_user_is_left_to_telemetry_which_pushes_nothing(tmp_path):
    environ: dict[str, str] = {}
    pushgateway.configure(ADDRESS, secret=mounted(tmp_path / "secret", password="s3cret"), environ=environ)
    assert telemetry.USERNAME_ENV not in environ
    with pytest.raises(telemetry.AuthConfigError, match="MLNT_PUSHGATEWAY_PASSWORD_FILE is set but not"):
        telemetry.credentials(environ)  # push_training_metrics logs it as a warning, and the step goes on


def test_an_unreadable_user_is_a_warning_not_a_failed_step(tmp_path, caplog):
    secret = mounted(tmp_path / "secret", password="s3cret")
    (secret / "username").write_bytes(b"\xff\xfe")  # not UTF-8
    environ: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="pipelines.pushgateway"):
        assert pushgateway.configure(ADDRESS, secret=secret, environ=environ) == [
            telemetry.PUSHGATEWAY_ENV, telemetry.PASSWORD_FILE_ENV]
    assert "cannot read the user of the Secret mlnt-pushgateway" in caplog.text and "\\xff" not in caplog.text


def test_a_pushing_steps_body_pushes_to_the_pipelines_address_with_the_mounted_secret(tmp_path, monkeypatch,
                                                                                    environ):
    """The gate's KFP body (as the executor calls it) sets the variables before its run, whose telemetry then pushes
    to the run's ``pushgateway``, grouped under the run's ``pipeline``, with basic authentication from the Secret
    mounted at ``pushgateway.SECRET_MOUNT``. The real gate runs, on empty inputs: it fails, and says so in its
    push."""
    from kfp.dsl import Artifact, Dataset, Model  # noqa: PLC0415

    from components.common import config  # noqa: PLC0415

    secret = mounted(tmp_path / "secret", username="mlnt-pipeline", password="s3cret")
    monkeypatch.setattr(pushgateway, "SECRET_MOUNT", str(secret))
    monkeypatch.setattr(config, "configure_logging", lambda **kwargs: None)  # pytest's handlers stay
    pushed = []
    for push in ("push_to_gateway", "pushadd_to_gateway"):  # whichever of prometheus_client's telemetry calls
        monkeypatch.setattr(telemetry, push, lambda gateway, **kw: pushed.append((gateway, kw)), raising=False)

    for folder in ("onnx", "evaluation"):
        (tmp_path / folder).mkdir()
    decision = Artifact(uri=str(tmp_path / "decision"))
    passed = mlnt_pipeline.gate.python_func(
        params_json=json.dumps(mlnt_pipeline.PARAMS["gate"]), registry=str(tmp_path / "registry"),
        pushgateway=ADDRESS, pipeline="clothing1m", onnx_model=Model(uri=str(tmp_path / "onnx")),
        evaluation=Dataset(uri=str(tmp_path / "evaluation")), decision=decision)
    assert passed is False
    [(gateway, kw)] = pushed
    assert gateway == ADDRESS and kw["grouping_key"] == {"pipeline": "clothing1m", "step": "gate"}
    assert kw["handler"] is not telemetry.default_handler  # basic authentication
    assert telemetry.credentials() == ("mlnt-pipeline", "s3cret")
