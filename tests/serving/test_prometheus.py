"""A real Prometheus server scrapes the predictor on loopback every second and evaluates the project's recording
rules (``monitoring/rules/mlnt.rules.yml``) on what it scraped; the server is started by ``monitoring.local``, which
``monitoring.snapshot`` uses too."""

from __future__ import annotations

import contextlib
import shutil
import time
from urllib.parse import urlsplit

import httpx
import numpy as np

from monitoring import RULES_FILE as RULES
from monitoring import local
from monitoring.local import prometheus
from monitoring.pushgateway import query_until
from tests.serving.test_server import NAME, V2, v2_tensor

JOB = "podMonitor/mlnt/mlnt-predictor/0"  # the job prometheus-operator names a PodMonitor's scrape job


def query(client: httpx.Client, url: str, expr: str) -> list[dict]:
    with contextlib.suppress(httpx.HTTPError):
        answer = client.get(f"{url}/api/v1/query", params={"query": expr})
        if answer.status_code == 200:
            return answer.json()["data"]["result"]
    return []


def test_prometheus_scrapes_the_predictor_and_evaluates_the_recording_rules(server, client, tmp_path):
    assert shutil.which("prometheus"), "expected the prometheus server on PATH (make system installs it), found none"
    assert RULES.is_file(), f"{RULES}: expected the recording rules, found no such file"
    x = np.zeros((4, 1, 8, 8), np.float32)
    with prometheus(urlsplit(server).netloc, tmp_path, job_name=JOB, job=None) as url:
        deadline, scraped, recorded = time.monotonic() + 25, [], []
        while time.monotonic() < deadline and not recorded:
            client.post(server + V2, json=v2_tensor(x))  # traffic between scrapes, so that rates are above zero
            scraped = query(client, url, f'mlnt_requests_total{{job="{JOB}",model="{NAME}",outcome="ok"}} > 0')
            recorded = query(client, url, f'model_outcome:mlnt_requests:rate5m{{model="{NAME}",outcome="ok"}} > 0')
            time.sleep(0.5)
        assert scraped and recorded, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert query(client, url, f'up{{job="{JOB}"}} == 1')
        assert query(client, url, f'model:mlnt_prediction_drift:avg{{model="{NAME}"}}')
        stages = query(client, url, f'model_stage:kserve_request_duration_seconds:p95_5m{{model="{NAME}"}}')
        assert {item["metric"]["stage"] for item in stages} == {"preprocess", "predict", "postprocess"}


def test_the_metrics_page_has_no_created_series(server, client):
    """prometheus_client adds a ``<name>_created`` series to every counter and histogram child, which no rule or
    panel reads (about 40 more series a pod): the predictor turns them off, for KServe's collectors too."""
    assert client.post(server + V2, json=v2_tensor(np.zeros((1, 1, 8, 8), np.float32))).status_code == 200
    page = client.get(server + "/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in page.splitlines() if line and not line.startswith("#")}
    assert "mlnt_requests_total" in names and "request_predict_seconds_count" in names
    assert sorted(name for name in names if name.endswith("_created")) == []


def test_prometheus_is_ready_when_yielded_keeps_its_files_in_its_folder_and_labels_the_job_as_a_podmonitor(
        tmp_path, monkeypatch):
    """``monitoring.local.prometheus`` yields once ``/-/ready`` answers; its configuration, TSDB and log are in the
    folder it is given; by default its targets get the PodMonitor's job label (``mlnt/mlnt-classifier``), which
    ``monitoring.snapshot`` waits for."""
    waited, wait_until = [], local.wait_until
    monkeypatch.setattr(local, "wait_until", lambda url, *args: waited.append(url) or wait_until(url, *args))
    with prometheus(f"127.0.0.1:{local.free_port()}", tmp_path) as url:
        assert waited == [f"{url}/-/ready"] and httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        up = query_until(url, "up", bool)
    assert [labels["job"] for labels, _ in up] == [local.PODMONITOR_JOB]
    assert {"prometheus.yml", "prometheus.log", "data"} <= {path.name for path in tmp_path.iterdir()}
    assert (tmp_path / "data").is_dir()
