"""Bounded load against a running predictor: latency percentiles and throughput per batch size, as JSON.

    python -m serving.load --url http://127.0.0.1:8080 [--model-name mlnt-classifier] --batch 1 --batch 64
                           [--concurrency 4] [--requests 200] [--protocol v2|v1] [--quick]

Each batch size sends ``--requests`` requests (after a few unmeasured warm-up requests) from ``--concurrency``
threads, each request a v2 FP32 tensor (or v1 instances) of the model's input shape, read from its v2 metadata.
Bounded: at most 10000 requests per batch size, 64 threads, and the server's own batch limit. A request that gets
no 200, an answer of another status or none at all (a dropped connection, a timeout), is an error: counted, and the
run goes on; the percentiles are of the requests served, null where none was. Exit status 1 if any request failed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

MAX_REQUESTS, MAX_CONCURRENCY, WARMUP = 10_000, 64, 3
PERCENTILES = (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("max", 100))


def payload(shape: list[int], batch: int, protocol: str, *, seed: int = 0) -> bytes:
    """A request body of ``batch`` random normalised images of ``shape`` ([C, H, W])."""
    x = np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)
    if protocol == "v1":
        return json.dumps({"instances": x.tolist()}).encode()
    return json.dumps({"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.ravel().tolist()}]}).encode()


def input_shape(client: httpx.Client, url: str, name: str) -> list[int]:
    """The input shape without the batch axis (``[C, H, W]``) of the first FP32 input in the v2 metadata of model
    ``name`` at ``url``; raises httpx's error for a failed request."""
    metadata = client.get(f"{url}/v2/models/{name}").raise_for_status().json()
    tensor = next(i for i in metadata["inputs"] if i["datatype"] == "FP32")
    return tensor["shape"][1:]


def run_batch(url: str, endpoint: str, body: bytes, *, requests: int, concurrency: int) -> dict:
    """Send ``requests`` copies of ``body`` from ``concurrency`` threads; latencies in ms of those answered 200, the
    count of the others (``status``) and the wall time from the first measured request to the last (the warm-up
    requests are neither counted nor timed)."""
    latencies, errors, lock = [], [], threading.Lock()
    remaining, first = iter(range(requests)), [math.inf]

    def worker() -> None:
        with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as client:
            for _ in range(WARMUP):
                status(client, url + endpoint, body)
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                start = time.perf_counter()
                answered = status(client, url + endpoint, body)
                with lock:
                    first[0] = min(first[0], start)
                    (latencies if answered == 200 else errors).append((time.perf_counter() - start) * 1e3)

    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return {"latencies_ms": latencies, "errors": len(errors), "wall_s": time.perf_counter() - first[0]}


def status(client: httpx.Client, url: str, body: bytes) -> int | None:
    """The status of a POST of ``body`` to ``url``; ``None`` when no answer came (httpx's error: a connection
    dropped or refused, a timeout), which counts as an error like any status but 200."""
    try:
        return client.post(url, content=body).status_code
    except httpx.HTTPError:
        return None


def summary(batch: int, done: dict) -> dict:
    """One batch size's results: requests served and failed, latency percentiles (``PERCENTILES``) in ms of those
    served (``None`` when none was: there are none to give), and requests and images per second over the measured
    wall time."""
    ms, served = done["latencies_ms"], len(done["latencies_ms"])
    return {"batch": batch, "requests": served, "errors": done["errors"],
            "latency_ms": {q: round(float(np.percentile(ms, p)), 3) if served else None for q, p in PERCENTILES},
            "requests_per_s": round(served / done["wall_s"], 2),
            "images_per_s": round(served * batch / done["wall_s"], 1)}


def load(url: str, *, name: str, batches: list[int], concurrency: int, requests: int, protocol: str) -> dict:
    """Measure each of ``batches`` against model ``name`` at ``url``, with inputs of the shape its v2 metadata gives;
    returns the report ``main`` prints."""
    url = url.rstrip("/")
    with httpx.Client(timeout=30) as client:
        shape = input_shape(client, url, name)
    endpoint = f"/v1/models/{name}:predict" if protocol == "v1" else f"/v2/models/{name}/infer"
    results = [summary(b, run_batch(url, endpoint, payload(shape, b, protocol), requests=requests,
                                     concurrency=concurrency)) for b in batches]
    return {"url": url, "model": name, "protocol": protocol, "concurrency": concurrency, "input_shape": shape,
            "results": results}


def get_args_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m serving.load`` (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m serving.load", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model-name", default="mlnt-classifier")
    parser.add_argument("--batch", type=int, action="append", help="images per request; repeat for several")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200, help="measured requests per batch size")
    parser.add_argument("--protocol", choices=("v2", "v1"), default="v2")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 requests, batches 1 and 8, 2 threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m serving.load``: run ``load`` with the command line and print its JSON report (strict JSON: no
    NaN); returns 2 for options out of range, 1 when any request failed (the metadata's too: no report then), else
    0."""
    args = get_args_parser().parse_args(argv)
    if args.quick:
        args.requests, args.concurrency, args.batch = 20, 2, args.batch or [1, 8]
    batches = args.batch or [1, 64]
    if not (1 <= args.requests <= MAX_REQUESTS and 1 <= args.concurrency <= MAX_CONCURRENCY and min(batches) >= 1):
        print(f"serving.load: expected 1..{MAX_REQUESTS} requests, 1..{MAX_CONCURRENCY} threads and batches >= 1, "
              f"found {args.requests}, {args.concurrency} and {batches}", file=sys.stderr)
        return 2
    try:
        report = load(args.url, name=args.model_name, batches=batches, concurrency=args.concurrency,
                      requests=args.requests, protocol=args.protocol)
    except httpx.HTTPError as exc:
        print(f"serving.load: expected the v2 metadata of model {args.model_name} at {args.url}, found "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2, allow_nan=False))
    return 0 if all(r["errors"] == 0 for r in report["results"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
