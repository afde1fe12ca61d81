"""components.common.telemetry against a real Pushgateway (Debian's ``prometheus-pushgateway``) scraped by a real
Prometheus, both on loopback (``tests/pushgateway.py``): what the steps push arrives in Prometheus with its labels
and values, a second push for a step replaces the first, and a Pushgateway that refuses a push or is down is a
warning. Without the ``prometheus-pushgateway`` or ``prometheus`` binary these tests fail, naming the Debian package
to install (``make system``, which ``make test`` and CI run); they do not skip.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from prometheus_client import CollectorRegistry, Summary, push_to_gateway

from components import baseline, evaluate, export, gate, ingest, mlnt, noise
from components.common import telemetry
from components.common.telemetry import (
    DEFAULT_PIPELINE,
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    PIPELINE_ENV,
    PUSHGATEWAY_ENV,
    USERNAME_ENV,
    push_training_metrics,
    reports,
    training_registry,
)
from monitoring import check
from monitoring.dashboard import ROWS
from monitoring.local import LocalError
from monitoring.metrics import PUSHGATEWAY_JOB
from tests.pushgateway import JOB_NAME, prometheus_scraping, pushgateway, query, query_until

ACCURACY = f'mlnt_training_accuracy{{job="{PUSHGATEWAY_JOB}"}}'
LAST_SUCCESS = "mlnt_training_last_success_timestamp_seconds"


def series(url: str, expr: str, *labels: str, count: int | None = None) -> dict[tuple[str, ...], float]:
    """``expr`` at Prometheus ``url`` as {the values of ``labels``: value}; with ``count``, polled (20 s at most)
    until it has that many series, since Prometheus scrapes the Pushgateway once a second."""
    found = query_until(url, expr, lambda result: count is None or len(result) == count)
    return {tuple(metric.get(label, "") for label in labels): value for metric, value in found}


def groups(gateway: str) -> dict[str, dict]:
    """The Pushgateway's groups (its ``/api/v1/metrics``) by their ``step`` label (``""`` for none): the group's
    ``labels`` (job and grouping key), ``last_push_successful``, and its metrics by name."""
    answer = httpx.get(f"http://{gateway}/api/v1/metrics", timeout=5)
    answer.raise_for_status()
    return {group["labels"].get("step", ""): group for group in answer.json()["data"]}


def test_a_missing_pushgateway_names_its_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LocalError, match=r"prometheus-pushgateway not found: install Debian's prometheus-pushgateway"
                                         r" package \(make system"), pushgateway(tmp_path):
        pass


def test_prometheus_scrapes_the_pushed_metrics_and_a_second_push_replaces_the_first(tmp_path):
    with pushgateway(tmp_path) as gateway, prometheus_scraping(gateway, tmp_path) as url:
        pushed = time.time()
        assert push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.88, "student": 0.87}},
                                              "estimated_noise_rate": 0.49, "duration_seconds": 312.5},
                                     gateway=gateway)
        assert push_training_metrics("gate", {"gate_passed": False}, gateway=gateway)
        assert series(url, "mlnt_gate_passed", "job", "step", count=1) == {(PUSHGATEWAY_JOB, "gate"): 0.0}
        assert series(url, "mlnt_gate_passed", "pipeline") == {(DEFAULT_PIPELINE,): 0.0}  # MLNT_PIPELINE unset
        assert series(url, ACCURACY, "step", "split", "model", count=2) == {
            ("mlnt", "val", "teacher"): 0.88, ("mlnt", "val", "student"): 0.87}
        assert series(url, "mlnt_training_estimated_noise_rate", "job", "step") == {(PUSHGATEWAY_JOB, "mlnt"): 0.49}
        assert series(url, "mlnt_training_duration_seconds", "job", "step") == {(PUSHGATEWAY_JOB, "mlnt"): 312.5}
        assert query(url, LAST_SUCCESS) == []  # a training step, a gate that failed: no successful run
        assert series(url, f'up{{job="{JOB_NAME}"}}', "job") == {(JOB_NAME,): 1.0}  # honor_labels: pushed job kept
        assert push_training_metrics("gate", {"gate_passed": True}, gateway=gateway)
        last_success = series(url, LAST_SUCCESS, "step", count=1)
        assert set(last_success) == {("gate",)}
        assert all(pushed - 1 <= value <= time.time() for value in last_success.values())

        # The same step again (grouping key step="mlnt"): its whole group is replaced, the gate's group is kept.
        assert push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.9}}}, gateway=gateway)
        assert series(url, ACCURACY, "step", "split", "model", count=1) == {("mlnt", "val", "teacher"): 0.9}
        assert query(url, "mlnt_training_estimated_noise_rate") == []
        assert query(url, "mlnt_training_duration_seconds") == []
        assert series(url, "mlnt_gate_passed", "step") == {("gate",): 1.0}
        assert series(url, LAST_SUCCESS, "step").keys() == {("gate",)}


def test_two_pipelines_pushing_to_one_pushgateway_keep_their_own_groups(tmp_path, monkeypatch):
    """Two pipelines (``MLNT_PIPELINE``) push the same steps to one Pushgateway: neither replaces the other's groups,
    and Prometheus has each pipeline's values under its own ``pipeline`` label."""
    with pushgateway(tmp_path) as gateway, prometheus_scraping(gateway, tmp_path) as url:
        for name, accuracy, passed in (("fmnist", 0.88, True), ("clothing1m", 0.70, False)):
            monkeypatch.setenv(PIPELINE_ENV, name)
            assert push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": accuracy}}}, gateway=gateway)
            assert push_training_metrics("gate", {"gate_passed": passed}, gateway=gateway)
        assert series(url, ACCURACY, "pipeline", "step", count=2) == {("fmnist", "mlnt"): 0.88,
                                                                       ("clothing1m", "mlnt"): 0.70}
        assert series(url, "mlnt_gate_passed", "pipeline", count=2) == {("fmnist",): 1.0, ("clothing1m",): 0.0}
        assert series(url, LAST_SUCCESS, "pipeline", count=1).keys() == {("fmnist",)}


@pytest.mark.parametrize("name", ["two words", "-first", "x" * 64, "a/b", "é"])
def test_a_pipeline_name_that_is_not_a_label_value_is_a_warning_and_nothing_is_pushed(name, monkeypatch, caplog):
    monkeypatch.setenv(PIPELINE_ENV, name)
    with caplog.at_level(logging.WARNING, logger=telemetry.__name__):
        assert not push_training_metrics("baseline", {"duration_seconds": 1.0}, gateway="127.0.0.1:9")
    assert caplog.messages == [
        f"telemetry: MLNT_PIPELINE is not usable as the pipeline's name (expected 1 to 63 letters, digits, '.', '_' "
        f"or '-', starting with a letter or digit, found {name!r}); the baseline step's metrics were not pushed"]


def samples(registry, name: str) -> list[float]:
    return [sample.value for family in registry.collect() for sample in family.samples if sample.name == name]


@pytest.mark.parametrize(("step", "metrics", "stamped"), [
    ("baseline", {"accuracy": {"val": {"baseline": 0.8}}, "duration_seconds": 1.0}, False),
    ("mlnt", {"duration_seconds": 1.0}, False),
    ("evaluate", {"estimated_noise_rate": 0.4}, False),
    ("gate", {"gate_passed": False, "duration_seconds": 1.0}, False),
    ("gate", {"duration_seconds": 1.0}, False),
    ("gate", {"gate_passed": True, "duration_seconds": 1.0}, True),
])
def test_only_a_gate_that_passed_stamps_the_last_success(step, metrics, stamped):
    before = time.time()
    values = samples(training_registry(step, metrics), LAST_SUCCESS)
    assert len(values) == stamped and all(before <= value <= time.time() for value in values)


def value(group: dict, name: str) -> float:
    (metric,) = group[name]["metrics"]
    return float(metric["value"])


def test_a_failed_or_unfinished_run_leaves_the_last_success_as_it_was(tmp_path):
    """A run that passed the gate, then one whose gate failed and one that stopped after its training steps: the
    timestamp is still the first run's, in the Pushgateway and in the dashboard's *Since the last successful run*,
    while ``mlnt_gate_passed`` says the last gate failed."""
    (expr,) = (check.fill_variables(query.expr, check.VARIABLES) for row in ROWS for panel in row.panels
               if panel.title == "Since the last successful run" for query in panel.queries)
    with pushgateway(tmp_path) as gateway, prometheus_scraping(gateway, tmp_path) as url:
        for step in ("baseline", "mlnt", "evaluate"):
            assert push_training_metrics(step, {"duration_seconds": 1.0}, gateway=gateway)
        assert all(LAST_SUCCESS not in group for group in groups(gateway).values())
        before = time.time()
        assert push_training_metrics("gate", {"gate_passed": True, "duration_seconds": 2.0}, gateway=gateway)
        passed = value(groups(gateway)["gate"], LAST_SUCCESS)
        assert before - 1 <= passed <= time.time()

        for step in ("baseline", "mlnt", "evaluate"):  # the next run: trained, then its gate failed
            assert push_training_metrics(step, {"duration_seconds": 1.0}, gateway=gateway)
        assert push_training_metrics("gate", {"gate_passed": False, "duration_seconds": 3.0}, gateway=gateway)
        assert push_training_metrics("baseline", {"duration_seconds": 4.0}, gateway=gateway)  # one that stopped
        gate_group = groups(gateway)["gate"]
        assert value(gate_group, LAST_SUCCESS) == passed and value(gate_group, "mlnt_gate_passed") == 0.0
        assert value(gate_group, "mlnt_training_duration_seconds") == 3.0
        assert [step for step, group in groups(gateway).items() if LAST_SUCCESS in group] == ["gate"]
        last_push = query_until(url, 'mlnt_training_duration_seconds{step="baseline"}',
                                lambda result: [v for _, v in result] == [4.0])  # scraped after every push
        assert [v for _, v in last_push] == [4.0] and series(url, "mlnt_gate_passed", "step") == {("gate",): 0.0}
        (age,) = series(url, expr).values()
        assert time.time() - passed - 5 <= age <= time.time() - passed + 5


def test_without_a_gateway_nothing_is_sent(tmp_path, monkeypatch):
    monkeypatch.delenv(PUSHGATEWAY_ENV, raising=False)
    with pushgateway(tmp_path) as gateway:
        assert not push_training_metrics("baseline", {"accuracy": {"val": {"baseline": 0.8}}})
        assert groups(gateway) == {}


def test_a_failed_push_is_a_warning_not_an_error(tmp_path, caplog):
    with pushgateway(tmp_path / "gone") as gone:
        pass  # stopped: nothing listens at its address any more
    with pushgateway(tmp_path) as gateway:
        # Another job pushed a summary under one of our names: the Pushgateway refuses our gauge (HTTP 400).
        registry = CollectorRegistry()
        Summary("mlnt_training_estimated_noise_rate", "Not ours.", registry=registry).observe(1.0)
        push_to_gateway(gateway, job="other", registry=registry)
        with caplog.at_level(logging.WARNING):
            assert not push_training_metrics("evaluate", {"estimated_noise_rate": 0.49}, gateway=gateway)
            assert not push_training_metrics("evaluate", {}, gateway=gone, timeout=1)
        rejected = groups(gateway)["evaluate"]  # the Pushgateway records the failure, and keeps none of the push
        assert rejected["last_push_successful"] is False and "mlnt_training_estimated_noise_rate" not in rejected
    assert caplog.text.count("could not push the evaluate step's metrics") == 2
    assert "HTTP Error 400" in caplog.text and "Connection refused" in caplog.text


@reports("baseline", lambda result: {"accuracy": {"val": {"baseline": result["val_accuracy"]}}})
def finished_step() -> dict:
    """A step whose work is done: what is left is its push (``reports``)."""
    return {"val_accuracy": 0.8}


def push_warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "components.common.telemetry"]


@pytest.fixture
def pushing_to(monkeypatch):
    """Set ``MLNT_PUSHGATEWAY`` for the step, as the main process (no ``RANK``) and without credentials."""
    for name in ("RANK", USERNAME_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    return lambda address: monkeypatch.setenv(PUSHGATEWAY_ENV, address)


@pytest.mark.parametrize(("address", "problem"), [
    ("pushgateway:909l", "Port could not be cast to integer value as '909l'"),  # http.client's InvalidURL
    ("127.0.0.1:99999", "Port out of range 0-65535"),
    ("http://[::1", "Invalid IPv6 URL"),
    ("http://", "no host"),
    ("tcp://10.0.0.5:9091", "scheme tcp://"),  # Kubernetes' PUSHGATEWAY_PORT form: was sent to a host named tcp
    ("ftp://pushgateway:9091", "scheme ftp://"),
])
def test_a_malformed_address_is_one_warning_naming_it_and_the_step_succeeds(address, problem, pushing_to, caplog):
    pushing_to(address)
    with caplog.at_level(logging.WARNING):
        assert finished_step() == {"val_accuracy": 0.8}
    assert push_warnings(caplog) == [
        f"telemetry: the Pushgateway address {address} ({PUSHGATEWAY_ENV}) is not usable ({problem}): expected "
        "host:port or an http or https URL; the baseline step's metrics were not pushed"]


@pytest.mark.parametrize("address", ["pushgateway:9091", "http://pushgateway:9091", "https://pushgateway:9091",
                                     "HTTPS://pushgateway.example/", "https://[::1]:9091"])
def test_host_port_and_http_or_https_urls_are_usable_addresses(address):
    """The forms the module docstring names (``host:port``, an http or https URL) have no ``address_problem``: an
    https Pushgateway, the one to use with basic authentication, is not refused as another scheme."""
    assert telemetry.address_problem(address) is None


@contextmanager
def listener(answer: bytes) -> Iterator[str]:
    """A TCP server on loopback that reads what it is sent and answers ``answer`` (not HTTP): its host:port."""
    server, stop = socket.create_server(("127.0.0.1", 0)), threading.Event()
    server.settimeout(0.1)

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                connection.recv(65536)
                connection.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


@pytest.mark.parametrize(("answer", "path", "reason"), [
    # another service at the address: http.client's BadStatusLine
    (b"SSH-2.0-OpenSSH_9.2\r\n", "", r"BadStatusLine: SSH-2.0-OpenSSH_9.2\r\n"),
    # a path urllib refuses once the job and group are appended: http.client's InvalidURL, before any connection
    (b"", "/a b", "InvalidURL: URL can't contain control characters"),
])
def test_an_answer_or_url_http_client_refuses_is_a_warning_and_the_step_succeeds(answer, path, reason, pushing_to,
                                                                                  caplog):
    with listener(answer) as address:
        pushing_to(address + path)
        with caplog.at_level(logging.WARNING):
            assert finished_step() == {"val_accuracy": 0.8}
    (warning,) = push_warnings(caplog)
    assert warning.startswith(f"telemetry: could not push the baseline step's metrics to the Pushgateway at "
                              f"{address}{path} ({reason}")
    assert warning.endswith("); the step itself succeeded")


@pytest.mark.parametrize(("metrics", "message"), [
    ({"acc": 1}, r"unknown metric keys \['acc'\]. Valid: accuracy, estimated_noise_rate"),
    ({"accuracy": {"train": {"teacher": 1}}}, "unknown split 'train'. Valid: test, val"),
    ({"accuracy": {"train": {}}}, "unknown split 'train'. Valid: test, val"),  # with no model as well
    ({"accuracy": {"val": {"mentor": 1}}}, "unknown model 'mentor'. Valid: teacher, student, baseline"),
])
def test_metrics_outside_the_contract_are_refused(metrics, message):
    with pytest.raises(ValueError, match=message):
        push_training_metrics("mlnt", metrics, gateway="127.0.0.1:1")


def test_the_pipeline_steps_push_when_a_gateway_is_set(workdir, monkeypatch):
    """What a cluster's Prometheus scrapes from the Pushgateway during one run: the training steps, evaluate and the
    gate, each under its own step group with its duration (under torchrun, rank 0 alone)."""
    servers = workdir / "servers"
    with pushgateway(servers) as gateway, prometheus_scraping(gateway, servers) as url:
        monkeypatch.setenv(PUSHGATEWAY_ENV, gateway)
        for step in (ingest, noise, baseline, mlnt, evaluate, export, gate):
            assert step.main(["--set", "gate.min_accuracy=0.0"] if step is gate else []) == 0
        steps = {"baseline", "mlnt", "evaluate", "gate"}
        assert groups(gateway).keys() == steps
        durations = series(url, "mlnt_training_duration_seconds", "job", "step", count=len(steps))
        assert {step for _, step in durations} == steps and all(value > 0 for value in durations.values())
        assert {job for job, _ in durations} == {PUSHGATEWAY_JOB}
        assert series(url, 'mlnt_training_accuracy{step="evaluate",split="test",model="teacher"}', "job")
        assert series(url, "mlnt_training_estimated_noise_rate", "step").keys() == {("evaluate",)}
        assert series(url, "mlnt_gate_passed", "step") == {("gate",): 1.0}
        assert series(url, LAST_SUCCESS, "step").keys() == {("gate",)}  # the gate passed: a successful run
        monkeypatch.setenv("RANK", "1")
        assert not push_training_metrics("mlnt", {"duration_seconds": 1.0})


def test_a_step_pushes_its_summary_with_the_seconds_its_run_took(monkeypatch):
    """``reports`` pushes ``summarise(result)`` and ``duration_seconds``, the run's own time (not a clock reading),
    after a run that returned; a run that raised pushes nothing."""
    pushed, clock = [], iter([100.0, 102.5, 200.0])
    monkeypatch.setattr(telemetry, "push_training_metrics", lambda step, metrics: pushed.append((step, metrics)))
    monkeypatch.setattr(telemetry.time, "monotonic", lambda: next(clock))
    run = reports("evaluate", lambda result: {"estimated_noise_rate": result["rate"]})(lambda rate: {"rate": rate})
    assert run(0.3) == {"rate": 0.3}
    assert pushed == [("evaluate", {"estimated_noise_rate": 0.3, "duration_seconds": 2.5})]

    def failing() -> dict:
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        reports("evaluate", lambda result: {})(failing)()
    assert len(pushed) == 1


def test_the_steps_of_a_dvc_experiment_push_nothing(monkeypatch, caplog):
    """``dvc exp run`` sets DVC_EXP_NAME for every stage: the gate releases nothing there and pushes no verdict, and
    the other steps' pushes replaced the pipeline's last real run's groups with the experiment's figures."""
    monkeypatch.setenv("DVC_EXP_NAME", "exp-noise80")
    with caplog.at_level(logging.INFO, logger=telemetry.__name__):
        assert not push_training_metrics("evaluate", {"estimated_noise_rate": 0.8}, gateway="127.0.0.1:9")
    assert caplog.messages == ["telemetry: DVC experiment exp-noise80: the evaluate step's metrics are not pushed (an "
                               "experiment is judged, not monitored: dvc exp show has them)"]


def test_the_mlnt_step_pushes_each_networks_best_validation_accuracy():
    """It pushed the released model's score as the teacher's and the student's last one as the student's: where
    the student was released, the teacher's line showed the student's best."""
    from components import mlnt  # noqa: PLC0415

    released_student = {"val_accuracy": 0.865, "val_accuracy_teacher": 0.86, "val_accuracy_student": 0.865,
                        "final_val_accuracy_student": 0.8308}
    assert mlnt._pushed(released_student) == {"accuracy": {"val": {"teacher": 0.86, "student": 0.865}}}
    never_a_teacher = {**released_student, "val_accuracy_teacher": None}  # the meta loss never started
    assert mlnt._pushed(never_a_teacher) == {"accuracy": {"val": {"student": 0.865}}}
