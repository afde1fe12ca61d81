"""A real Pushgateway on loopback, and a real Prometheus that scrapes it: ``monitoring.snapshot``'s Training row and
the telemetry tests (``tests/pushgateway.py`` re-exports this module).

``pushgateway(folder)`` starts ``/usr/bin/prometheus-pushgateway`` (Debian's ``prometheus-pushgateway`` package,
``make system``) on a free loopback port with persistence off (``--persistence.file=``: pushes live in memory only);
``prometheus_scraping(gateway, folder)`` starts Prometheus with one scrape job for it, ``honor_labels: true`` as a
cluster must scrape a Pushgateway (so that the pushed ``job`` and ``step`` labels are kept), every second; given
``config`` (another ``prometheus.yml``, such as the predictor's), it adds that job to the config's own.
``query(url, expr)`` is Prometheus's ``/api/v1/query``; ``query_until`` polls it. The process handling (free
port, readiness, SIGTERM then SIGKILL, a clean exit or a ``LocalError`` with the log's tail) is
``monitoring.local``'s, which starts Prometheus for the serving integration test.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import yaml

from monitoring.local import INTERVAL, LocalError, free_port, prometheus_config, supervised, wait_until

PACKAGE = "prometheus-pushgateway"  # Debian's package and its binary
JOB_NAME = "pushgateway"  # the scrape job; with honor_labels, the series keep the pushed job label instead


def binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise LocalError(f"{name} not found: install Debian's {package} package (make system; CI runs make test, "
                         "which installs it)")
    return found


@contextlib.contextmanager
def pushgateway(folder: Path, *, timeout: float = 30.0) -> Iterator[str]:
    """A Pushgateway on a free loopback port, its log (``pushgateway.log``) in ``folder``; yields ``host:port``
    once ``/-/ready`` answers, and stops it on exit (it must exit 0 on SIGTERM)."""
    command = binary(PACKAGE, PACKAGE)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "pushgateway.log"
    address = f"127.0.0.1:{free_port()}"
    with log.open("wb") as out:
        process = subprocess.Popen([command, f"--web.listen-address={address}", "--persistence.file="],
                                   stdout=out, stderr=subprocess.STDOUT)
    with supervised(process, "the pushgateway", log):
        wait_until(f"http://{address}/-/ready", process, "the pushgateway", log, timeout)
        yield address


def scrape_job(gateway: str) -> dict:
    """The scrape configuration of the Pushgateway at ``gateway``: ``honor_labels: true``."""
    return {"job_name": JOB_NAME, "honor_labels": True, "static_configs": [{"targets": [gateway]}]}


def pushgateway_config(gateway: str, *, interval: str = INTERVAL, config: str | None = None) -> str:
    """``prometheus.yml`` scraping ``gateway`` with ``honor_labels: true``: ``config``'s jobs and that one, or
    (without ``config``) ``monitoring.local.prometheus_config``'s, with the project's rules, and that one only."""
    if config is None:
        loaded = yaml.safe_load(prometheus_config([gateway], job_name=JOB_NAME, interval=interval))
        loaded["scrape_configs"][0]["honor_labels"] = True
    else:
        loaded = yaml.safe_load(config)
        loaded["scrape_configs"] = [*loaded.get("scrape_configs", []), scrape_job(gateway)]
    return yaml.safe_dump(loaded, sort_keys=False)


@contextlib.contextmanager
def prometheus_scraping(gateway: str, folder: Path, *, interval: str = INTERVAL, config: str | None = None,
                        timeout: float = 30.0) -> Iterator[str]:
    """Prometheus on a free loopback port scraping the Pushgateway at ``gateway`` (and ``config``'s jobs, if
    given: ``pushgateway_config``), its configuration, TSDB and log (``prometheus.log``) in ``folder``; yields its
    URL once ``/-/ready`` answers. Its first scrape comes about 5 s later (Prometheus's discovery manager hands the
    scrape manager its targets every 5 s, the first time too)."""
    command = binary("prometheus", "prometheus")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_file, log = folder / "prometheus.yml", folder / "prometheus.log"
    config_file.write_text(pushgateway_config(gateway, interval=interval, config=config))
    url = f"http://127.0.0.1:{free_port()}"
    with log.open("wb") as out:
        process = subprocess.Popen([command, f"--config.file={config_file}",
                                    f"--storage.tsdb.path={folder / 'data'}",
                                    f"--web.listen-address={url.removeprefix('http://')}"],
                                   stdout=out, stderr=subprocess.STDOUT)
    with supervised(process, "prometheus", log):
        wait_until(f"{url}/-/ready", process, "prometheus", log, timeout)
        yield url


def query(url: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """The instant vector ``expr`` at Prometheus ``url``: (labels, value) per series."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    answer.raise_for_status()
    return [(sample["metric"], float(sample["value"][1])) for sample in answer.json()["data"]["result"]]


def query_until(url: str, expr: str, done: Callable[[list[tuple[dict[str, str], float]]], bool], *,
                timeout: float = 20.0) -> list[tuple[dict[str, str], float]]:
    """``query`` every 0.25 s until ``done(result)`` or ``timeout`` seconds; the last result either way."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(url, expr)
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.25)
