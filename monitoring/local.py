"""A real Prometheus and the predictor as local processes on loopback: the harness of everything that runs them
outside a cluster, never used in one.

Its users: the serving integration tests (``tests/serving/``), the serving benchmark
(``benchmarks.speed.serving``, which reads the predictor's memory through ``predictor_process``),
``docs.generate --record``, ``monitoring.snapshot`` and ``monitoring.pushgateway`` (which adds a Pushgateway with
the same process handling). Reads a release folder and the
rule file; writes each server's configuration, data and log where it is told (a folder, or the log's path).

``prometheus(targets, folder)`` starts ``/usr/bin/prometheus`` (Debian's ``prometheus`` package, ``make system``)
with a temporary configuration and TSDB in ``folder``: one scrape job for ``targets``, scraped and evaluated every
second, with the project's rules (``monitoring/rules/mlnt.rules.yml``). ``predictor(release, log)`` starts
``python -m serving`` on a free HTTP port and a free gRPC port (never KServe's default 8081, so that several
predictors can run at once). Both yield once they answer and stop their process on exit: SIGTERM, then
SIGKILL after a timeout, so that nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

from monitoring import ROOT, RULES_FILE

# prometheus-operator names a PodMonitor's scrape configuration "podMonitor/<namespace>/<name>/<endpoint>" and sets
# the targets' job label to "<namespace>/<name>" (k8s/base/monitoring/podmonitor.yaml: mlnt/mlnt-classifier).
PODMONITOR_JOB_NAME = "podMonitor/mlnt/mlnt-classifier/0"
PODMONITOR_JOB = "mlnt/mlnt-classifier"
INTERVAL = "1s"  # scrape and rule evaluation interval
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL


class LocalError(Exception):
    """A local server did not start, or did not stop cleanly; the message ends with the tail of its log."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(log: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of ``log``, for an error message; empty if there is no such file."""
    return log.read_text(errors="replace")[-chars:] if log.is_file() else ""


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code, or ``None`` if it had to be killed."""
    if process.poll() is not None:
        return process.returncode
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


@contextlib.contextmanager
def supervised(process: subprocess.Popen, what: str, log: Path) -> Iterator[subprocess.Popen]:
    """Stop ``process`` on exit; if the body succeeded, a ``LocalError`` unless it exited 0 on SIGTERM."""
    try:
        yield process
    except BaseException:
        stop(process)
        raise
    code = stop(process)
    if code != 0:
        found = "had to be killed" if code is None else f"exited with {code}"
        raise LocalError(f"{what} did not shut down cleanly on SIGTERM: {found}\n{tail(log)}")


def wait_until(ready_url: str, process: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    """Poll ``ready_url`` until it answers 200; a ``LocalError`` with the tail of ``log`` if ``process`` exits first
    or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalError(f"{what} exited with {process.returncode} before it was ready:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise LocalError(f"{what} was not ready after {timeout:.0f} s ({ready_url}):\n{tail(log)}")


def prometheus_config(targets: list[str], *, job_name: str, job: str | None = None,
                      rules: Path = RULES_FILE, interval: str = INTERVAL) -> str:
    """``prometheus.yml``: one static scrape job; ``job`` relabels the targets' job label as prometheus-operator
    does for a PodMonitor (without it, the job label is ``job_name``)."""
    scrape = {"job_name": job_name, "static_configs": [{"targets": list(targets)}]}
    if job is not None:
        scrape["relabel_configs"] = [{"target_label": "job", "replacement": job}]
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval},
              "rule_files": [str(rules)], "scrape_configs": [scrape]}
    return yaml.safe_dump(config, sort_keys=False)


@contextlib.contextmanager
def prometheus(targets: str | list[str], folder: Path, *, job_name: str = PODMONITOR_JOB_NAME,
               job: str | None = PODMONITOR_JOB, rules: Path = RULES_FILE, interval: str = INTERVAL,
               timeout: float = 30.0) -> Iterator[str]:
    """A Prometheus server on a free loopback port scraping ``targets`` (``host:port``), its configuration, TSDB
    and log (``prometheus.log``) in ``folder``; yields its URL once ``/-/ready`` answers."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise LocalError("prometheus not found: install Debian's prometheus package (make system)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config, log = folder / "prometheus.yml", folder / "prometheus.log"
    config.write_text(prometheus_config([targets] if isinstance(targets, str) else targets, job_name=job_name,
                                        job=job, rules=rules, interval=interval))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
                                    f"--web.listen-address=127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT)
    with supervised(process, "prometheus", log):
        wait_until(f"{url}/-/ready", process, "prometheus", log, timeout)
        yield url


@contextlib.contextmanager
def predictor(release: Path, log: Path, *, port: int | None = None, grpc_port: int | None = None,
              timeout: float = 60.0, **options: object) -> Iterator[str]:
    """``python -m serving --model release`` on ``port`` and ``grpc_port`` (default: free ports; KServe binds
    them on all interfaces), its output in ``log``; ``options`` are its own command-line options
    (``model_name="x"`` is ``--model-name=x``). Yields its URL once ``/v2/health/ready`` answers."""
    with predictor_process(release, log, port=port, grpc_port=grpc_port, timeout=timeout, **options) as (url, _):
        yield url


@contextlib.contextmanager
def predictor_process(release: Path, log: Path, *, port: int | None = None, grpc_port: int | None = None,
                      timeout: float = 60.0, **options: object) -> Iterator[tuple[str, subprocess.Popen]]:
    """``predictor``, yielding its URL and its process (for its pid: ``benchmarks.speed.serving`` reads its memory)."""
    port = port or next(p for p in iter(free_port, None) if p != grpc_port)
    grpc_port = grpc_port or next(p for p in iter(free_port, None) if p != port)
    argv = [sys.executable, "-m", "serving", "--model", str(Path(release).resolve()), "--http-port", str(port),
            "--grpc_port", str(grpc_port)]
    argv += [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    with supervised(process, "the predictor", log):
        wait_until(f"{url}/v2/health/ready", process, "the predictor", log, timeout)
        yield url, process
