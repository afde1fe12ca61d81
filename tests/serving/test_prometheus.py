"""A real Prometheus server scrapes the predictor on loopback every second and evaluates the project's recording
rules (``monitoring/rules/mlnt.rules.yml``) on what it scraped."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import httpx
import numpy as np

from tests.serving.conftest import ROOT, free_port
from tests.serving.test_server import NAME, V2, v2_tensor

RULES = ROOT / "monitoring" / "rules" / "mlnt.rules.yml"
JOB = "podMonitor/mlnt/mlnt-predictor/0"  # the job prometheus-operator names a PodMonitor's scrape job
CONFIG = """global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{rules}"]
scrape_configs:
  - job_name: "{job}"
    static_configs: [{{targets: ["{target}"]}}]
"""


@contextlib.contextmanager
def prometheus(target: str, folder):
    (folder / "prometheus.yml").write_text(CONFIG.format(rules=RULES, job=JOB, target=target))
    port = free_port()
    with (folder / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(["prometheus", f"--config.file={folder / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        assert process.wait(timeout=15) == 0, (folder / "prometheus.log").read_text()


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
    with prometheus(urlsplit(server).netloc, tmp_path) as url:
        deadline, scraped, recorded = time.monotonic() + 25, [], []
        while time.monotonic() < deadline and not recorded:
            client.post(server + V2, json=v2_tensor(x))  # traffic between scrapes, so that rates are above zero
            scraped = query(client, url, f'mlnt_requests_total{{job="{JOB}",model="{NAME}",outcome="ok"}} > 0')
            recorded = query(client, url, f'model_outcome:mlnt_requests:rate5m{{model="{NAME}",outcome="ok"}} > 0')
            time.sleep(0.5)
        assert scraped and recorded, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert query(client, url, f'up{{job="{JOB}"}} == 1')
        assert query(client, url, f'model:mlnt_prediction_drift:avg{{model="{NAME}"}}')
