"""components.telemetry against a tiny Pushgateway stand-in on loopback that records what it receives."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from components import baseline, evaluate, export, gate, ingest, mlnt, noise
from components.telemetry import PUSHGATEWAY_ENV, push_training_metrics


class Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, str, str]]
    status = 200

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.received.append((self.command, self.path, body))
        self.send_response(self.status)
        self.end_headers()

    def do_POST(self):
        self.do_PUT()

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway():
    Recorder.received, Recorder.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", Recorder
    server.shutdown()
    server.server_close()


def test_a_step_pushes_its_metrics_under_the_pipeline_job(gateway, monkeypatch):
    address, recorder = gateway
    monkeypatch.setenv(PUSHGATEWAY_ENV, address)
    assert push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.88, "student": 0.87}},
                                          "estimated_noise_rate": 0.49, "duration_seconds": 312.5})
    assert push_training_metrics("gate", {"gate_passed": False})
    (method, path, body), (_, gate_path, gate_body) = recorder.received
    assert method == "PUT" and path == "/metrics/job/mlnt-pipeline/step/mlnt"
    assert 'mlnt_training_accuracy{model="teacher",split="val",step="mlnt"} 0.88' in body
    assert 'mlnt_training_accuracy{model="student",split="val",step="mlnt"} 0.87' in body
    assert "mlnt_training_estimated_noise_rate 0.49" in body
    assert 'mlnt_training_duration_seconds{step="mlnt"} 312.5' in body
    assert "mlnt_training_last_success_timestamp_seconds " in body and "mlnt_gate_passed" not in body
    assert gate_path == "/metrics/job/mlnt-pipeline/step/gate" and "mlnt_gate_passed 0.0" in gate_body


def test_without_a_gateway_nothing_is_sent(gateway, monkeypatch):
    monkeypatch.delenv(PUSHGATEWAY_ENV, raising=False)
    assert not push_training_metrics("baseline", {"accuracy": {"val": {"baseline": 0.8}}})
    assert gateway[1].received == []


def test_a_failed_push_is_a_warning_not_an_error(gateway, caplog):
    address, recorder = gateway
    recorder.status = 500
    with caplog.at_level(logging.WARNING):
        assert not push_training_metrics("evaluate", {"accuracy": {"test": {"teacher": 0.86}}}, gateway=address)
        assert not push_training_metrics("evaluate", {}, gateway="127.0.0.1:1", timeout=1)  # nothing listens
    assert caplog.text.count("could not push the evaluate step's metrics") == 2


@pytest.mark.parametrize(("metrics", "message"), [
    ({"acc": 1}, r"unknown metric keys \['acc'\]. Valid: accuracy, estimated_noise_rate"),
    ({"accuracy": {"train": {"teacher": 1}}}, "unknown split 'train'. Valid: test, val"),
    ({"accuracy": {"val": {"mentor": 1}}}, "unknown model 'mentor'. Valid: teacher, student, baseline"),
])
def test_metrics_outside_the_contract_are_refused(metrics, message):
    with pytest.raises(ValueError, match=message):
        push_training_metrics("mlnt", metrics, gateway="127.0.0.1:1")


def test_the_pipeline_steps_push_when_a_gateway_is_set(gateway, workdir, monkeypatch):
    """What a cluster's Pushgateway receives from one run: the training steps, evaluate and the gate, each with
    its duration (under torchrun, rank 0 alone)."""
    address, recorder = gateway
    monkeypatch.setenv(PUSHGATEWAY_ENV, address)
    for step in (ingest, noise, baseline, mlnt, evaluate, export, gate):
        assert step.main(["--set", "gate.min_accuracy=0.0"] if step is gate else []) == 0
    bodies = {path.rsplit("/", 1)[1]: body for _, path, body in recorder.received}
    assert set(bodies) == {"baseline", "mlnt", "evaluate", "gate"}
    assert 'mlnt_training_accuracy{model="teacher",split="test",step="evaluate"}' in bodies["evaluate"]
    assert "mlnt_training_estimated_noise_rate" in bodies["evaluate"] and "mlnt_gate_passed 1.0" in bodies["gate"]
    assert all('mlnt_training_duration_seconds{step="' in body for body in bodies.values())
    monkeypatch.setenv("RANK", "1")
    assert not push_training_metrics("mlnt", {"duration_seconds": 1.0})
