"""A real Pushgateway on loopback, and a real Prometheus that scrapes it, for the telemetry tests.

``pushgateway(folder)`` starts ``/usr/bin/prometheus-pushgateway`` (Debian's ``prometheus-pushgateway`` package,
``make system``) on a free loopback port with persistence off (``--persistence.file=``: pushes live in memory only);
``prometheus_scraping(gateway, folder)`` starts Prometheus with one scrape job for it, ``honor_labels: true`` as a
cluster must scrape a Pushgateway (so that the pushed ``job`` and ``step`` labels are kept), every second.
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


def pushgateway_config(gateway: str, *, interval: str = INTERVAL) -> str:
    """``prometheus.yml`` (``monitoring.local.prometheus_config``, with the project's rules) scraping ``gateway``
    with ``honor_labels: true``."""
    config = yaml.safe_load(prometheus_config([gateway], job_name=JOB_NAME, interval=interval))
    config["scrape_configs"][0]["honor_labels"] = True
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def prometheus_scraping(gateway: str, folder: Path, *, interval: str = INTERVAL,
                        timeout: float = 30.0) -> Iterator[str]:
    """Prometheus on a free loopback port scraping the Pushgateway at ``gateway``, its configuration, TSDB and log
    (``prometheus.log``) in ``folder``; yields its URL once ``/-/ready`` answers. Its first scrape comes about 5 s
    later (Prometheus's discovery manager hands the scrape manager its targets every 5 s, the first time too)."""
    command = binary("prometheus", "prometheus")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, log = folder / "prometheus.yml", folder / "prometheus.log"
    config.write_text(pushgateway_config(gateway, interval=interval))
    url = f"http://127.0.0.1:{free_port()}"
    with log.open("wb") as out:
        process = subprocess.Popen([command, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
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
