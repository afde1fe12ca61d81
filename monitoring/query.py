"""Prometheus's HTTP API as the snapshot asks it: the dashboard's panel queries over a time range, and waiting until
Prometheus has scraped what a query needs.

Reads a Prometheus server (``/api/v1/query_range``, ``/api/v1/query``) and the dashboard (``monitoring.dashboard``:
its panels walked with ``monitoring.check.panels_of``); writes nothing: ``collect`` returns the answers, JSON-ready,
as ``snapshot.json`` records them and ``monitoring.render`` draws them.
"""

from __future__ import annotations

import time

import httpx

from monitoring import check


class PrometheusError(Exception):
    """Prometheus refused a query, or had not the series awaited in time; the message says which and why."""


def panels(board: dict) -> list[dict]:
    """The dashboard's panels, rows left out, in layout order."""
    return [panel for panel in check.panels_of(board["panels"]) if panel["type"] != "row"]


def query_range(client: httpx.Client, url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    """``/api/v1/query_range`` of ``expr`` over [start, end] every ``step`` seconds: its ``result``, one item per
    series (``metric``, ``values``); a ``PrometheusError`` with Prometheus's message if it refuses."""
    answer = client.get(f"{url}/api/v1/query_range", params={"query": expr, "start": f"{start:.3f}",
                                                               "end": f"{end:.3f}", "step": f"{step:g}"})
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code != 200 or body.get("status") != "success":
        raise PrometheusError(f"query_range {expr!r}: HTTP {answer.status_code}: {body.get('error', answer.text)}")
    return body["data"]["result"]


def collect(client: httpx.Client, url: str, board: dict, *, start: float, end: float, step: float,
            variables: dict[str, str]) -> list[dict]:
    """Every panel's queries over [start, end], template variables filled from ``variables``
    (``monitoring.check.fill_variables``, whose ``CheckError`` names an unknown one), as Prometheus answered them."""
    return [{"id": panel["id"], "title": panel["title"], "type": panel["type"],
             "targets": [{"refId": target["refId"], "expr": target["expr"],
                          "query": (query := check.fill_variables(target["expr"], variables)),
                          "legendFormat": target.get("legendFormat", ""),
                          "result": query_range(client, url, query, start, end, step)}
                         for target in panel["targets"]]}
            for panel in panels(board)]


def wait_for(client: httpx.Client, url: str, expr: str, what: str, timeout: float = 20.0) -> None:
    """Poll ``expr`` until it has a result; a ``PrometheusError`` saying that prometheus had not ``what`` if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"{url}/api/v1/query", params={"query": expr})
        if answer.status_code == 200 and answer.json()["data"]["result"]:
            return
        time.sleep(0.25)
    raise PrometheusError(f"prometheus had not {what} after {timeout:.0f} s ({expr})")


def wait_for_scrape(client: httpx.Client, url: str, job: str, timeout: float = 20.0) -> None:
    """``wait_for`` Prometheus to have scraped the targets of ``job`` (``up == 1``)."""
    wait_for(client, url, f'up{{job="{job}"}} == 1', f"scraped the predictor (job {job})", timeout)
