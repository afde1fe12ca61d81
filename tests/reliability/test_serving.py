"""The predictor under a bounded fuzz of malformed and hostile requests and a bounded concurrent load, on loopback:
no crash, no dropped connection, every bad request a 4xx whose body names no internals, memory that stops growing,
and latency percentiles recorded.

The reports (fuzz.json, load.json) go to $RELIABILITY_OUT when it is set (else a temporary folder):
    RELIABILITY_OUT=/tmp/reliability .venv/bin/pytest -q tests/reliability/test_serving.py
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from serving.load import load
from tests.reliability.fuzz import MUTATIONS, NAME, V2, Request, good_body, malformed
from tests.serving.conftest import LIMITS, VERSION, predictor, write_release

FUZZ, WARM_UP, SEED = 50 * len(MUTATIONS), 200, 20261126  # 50 of each mutation
THREADS, LOAD_REQUESTS = 4, 800
MAX_GROWTH = 16 * 2**20  # RSS growth allowed over the malformed requests after the warm-up


@pytest.fixture(scope="module")
def live_predictor(tmp_path_factory):
    """``python -m serving`` on a tiny real release, and its process (the one listening on the port)."""
    folder, _ = write_release(tmp_path_factory.mktemp("release") / VERSION)
    with predictor(folder, tmp_path_factory.mktemp("logs") / "predictor.log", **LIMITS) as url:
        marker = ["--http-port", url.rsplit(":", 1)[1]]
        (process,) = [p for p in psutil.process_iter(["cmdline"])
                      if any(p.info["cmdline"][i:i + 2] == marker for i in range(len(p.info["cmdline"] or [])))]
        yield url, process


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("RELIABILITY_OUT") or tmp_path_factory.mktemp("reports"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


INTERNALS = re.compile(r"Traceback|\b[A-Z]\w*(?:Error|Exception)\b")  # exception type names, tracebacks


def send(client: httpx.Client, url: str, request: Request) -> int | str:
    """The status code (with the reason when the body shows internals), or how the connection failed."""
    try:
        answer = client.request(request.method, url + request.path, content=request.body, headers=request.headers)
    except httpx.TransportError as exc:
        return f"dropped ({type(exc).__name__})"
    found = INTERNALS.search(answer.text)
    return answer.status_code if found is None else f"internals in a {answer.status_code} ({found[0]})"


def fire(url: str, requests: list[Request]) -> list[int | str]:
    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=THREADS)) as client, \
            ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda r: send(client, url, r), requests))


def test_fuzzed_requests_all_get_a_4xx_and_memory_stays_flat(live_predictor, reports):
    url, process = live_predictor
    requests = list(malformed(SEED, FUZZ))
    statuses = fire(url, requests[:WARM_UP])
    before = process.memory_info().rss
    statuses += fire(url, requests[WARM_UP:])
    after = process.memory_info().rss
    tally = collections.Counter(f"{r.mutation}: {s}" for r, s in zip(requests, statuses, strict=True))
    (reports / "fuzz.json").write_text(json.dumps({"requests": FUZZ, "seed": SEED, "threads": THREADS,
                                                   "rss_bytes_after_warm_up": before, "rss_bytes_after": after,
                                                   "outcomes": dict(sorted(tally.items()))}, indent=2))
    wrong = sorted(key for key in tally if not key.rsplit(": ", 1)[1].startswith("4"))
    assert not wrong, f"not a 4xx: {wrong}"
    with httpx.Client(timeout=30) as client:
        assert process.is_running() and send(client, url, Request("good", V2, good_body(random.Random(0)))) == 200
    assert after - before < MAX_GROWTH, f"RSS grew by {(after - before) / 2**20:.1f} MiB"


def test_concurrent_load_is_served_without_errors(live_predictor, reports):
    url, process = live_predictor
    report = load(url, name=NAME, batches=[1, LIMITS["max_batch"]], concurrency=THREADS, requests=LOAD_REQUESTS,
                  protocol="v2")
    report["rss_bytes_after"] = process.memory_info().rss
    (reports / "load.json").write_text(json.dumps(report, indent=2))
    for row in report["results"]:
        assert row["requests"] == LOAD_REQUESTS and row["errors"] == 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]
