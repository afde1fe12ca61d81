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

Basic authentication, as a cluster's Pushgateway should have it: ``pushgateway(folder, users={name: bcrypt_hash})``
writes a web configuration (``web-config.yml``, the Prometheus exporter-toolkit's format: ``basic_auth_users``) and
passes it with ``--web.config.file``; every endpoint then wants the credentials, ``/-/ready`` and ``/metrics`` too.
``prometheus_scraping(..., basic_auth=(name, password_file))`` scrapes such a Pushgateway with them.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import yaml

from monitoring.local import INTERVAL, LocalError, free_port, prometheus_config, supervised, tail, wait_until

PACKAGE = "prometheus-pushgateway"  # Debian's package and its binary
JOB_NAME = "pushgateway"  # the scrape job; with honor_labels, the series keep the pushed job label instead


def binary(name: str, package: str) -> str:
    """The path of the executable ``name``; a ``LocalError`` saying to install Debian's ``package`` when it is not on
    PATH."""
    found = shutil.which(name)
    if found is None:
        raise LocalError(f"{name} not found: install Debian's {package} package (make system; CI runs make test, "
                         "which installs it)")
    return found


@contextlib.contextmanager
def pushgateway(folder: Path, *, timeout: float = 30.0, users: Mapping[str, str] | None = None) -> Iterator[str]:
    """A Pushgateway on a free loopback port, its log (``pushgateway.log``) in ``folder``; yields ``host:port``
    once ``/-/ready`` answers, and stops it on exit (it must exit 0 on SIGTERM). ``users`` (name: bcrypt hash of the
    password) turns on basic authentication (``web_config``); readiness then counts a 401 as an answer."""
    command = binary(PACKAGE, PACKAGE)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "pushgateway.log"
    address = f"127.0.0.1:{free_port()}"
    arguments = [command, f"--web.listen-address={address}", "--persistence.file="]
    if users:
        web_config = folder / "web-config.yml"
        web_config.write_text(web_config_text(users))
        arguments.append(f"--web.config.file={web_config}")
    with log.open("wb") as out:
        process = subprocess.Popen(arguments, stdout=out, stderr=subprocess.STDOUT)
    with supervised(process, "the pushgateway", log):
        if users:
            _wait_for_auth(f"http://{address}/-/ready", process, log, timeout)
        else:
            wait_until(f"http://{address}/-/ready", process, "the pushgateway", log, timeout)
        yield address


def web_config_text(users: Mapping[str, str]) -> str:
    """The exporter-toolkit web configuration that asks for basic authentication: ``users`` maps each name to the
    bcrypt hash of its password (``$2a$``/``$2b$``/``$2y$``; e.g. ``htpasswd -nbBC 10 NAME PASSWORD``)."""
    for name, hashed in users.items():
        if ":" in name or not name:
            raise ValueError(f"web config: a user name must be non-empty and without ':', found {name!r}")
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ValueError(f"web config: the password of {name!r} must be a bcrypt hash ($2a$, $2b$ or $2y$), "
                             "not the password itself")
    return yaml.safe_dump({"basic_auth_users": dict(users)}, sort_keys=False)


def _wait_for_auth(ready_url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """``monitoring.local.wait_until`` for a Pushgateway behind basic authentication: its 401 is an answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalError(f"the pushgateway exited with {process.returncode} before it was ready:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready_url, timeout=1).status_code in (200, 401):
                return
        time.sleep(0.1)
    raise LocalError(f"the pushgateway was not ready after {timeout:.0f} s ({ready_url}):\n{tail(log)}")


def scrape_job(gateway: str, *, basic_auth: tuple[str, Path] | None = None) -> dict:
    """The scrape configuration of the Pushgateway at ``gateway``: ``honor_labels: true``; with ``basic_auth``
    (name, password file), Prometheus's ``basic_auth`` reading the password from the file."""
    job = {"job_name": JOB_NAME, "honor_labels": True, "static_configs": [{"targets": [gateway]}]}
    if basic_auth is not None:
        job["basic_auth"] = {"username": basic_auth[0], "password_file": str(basic_auth[1])}
    return job


def pushgateway_config(gateway: str, *, interval: str = INTERVAL, config: str | None = None,
                       basic_auth: tuple[str, Path] | None = None) -> str:
    """``prometheus.yml`` scraping ``gateway`` with ``honor_labels: true`` (and ``basic_auth``: ``scrape_job``):
    ``config``'s jobs and that one, or (without ``config``) ``monitoring.local.prometheus_config``'s, with the
    project's rules, and that one only."""
    if config is None:
        loaded = yaml.safe_load(prometheus_config([gateway], job_name=JOB_NAME, interval=interval))
        loaded["scrape_configs"] = [{**loaded["scrape_configs"][0], **scrape_job(gateway, basic_auth=basic_auth)}]
    else:
        loaded = yaml.safe_load(config)
        loaded["scrape_configs"] = [*loaded.get("scrape_configs", []), scrape_job(gateway, basic_auth=basic_auth)]
    return yaml.safe_dump(loaded, sort_keys=False)


@contextlib.contextmanager
def prometheus_scraping(gateway: str, folder: Path, *, interval: str = INTERVAL, config: str | None = None,
                        timeout: float = 30.0, basic_auth: tuple[str, Path] | None = None) -> Iterator[str]:
    """Prometheus on a free loopback port scraping the Pushgateway at ``gateway`` (and ``config``'s jobs, if
    given; with ``basic_auth``, as (name, password file): ``pushgateway_config``), its configuration, TSDB and log
    (``prometheus.log``) in ``folder``; yields its
    URL once ``/-/ready`` answers. Its first scrape comes about 5 s later (Prometheus's discovery manager hands the
    scrape manager its targets every 5 s, the first time too)."""
    command = binary("prometheus", "prometheus")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_file, log = folder / "prometheus.yml", folder / "prometheus.log"
    config_file.write_text(pushgateway_config(gateway, interval=interval, config=config, basic_auth=basic_auth))
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
