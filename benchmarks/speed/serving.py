"""The predictor under concurrent load: ``make bench``'s ``serving`` section.

The workload's small CNN is exported as the export step exports it (``components.export.to_onnx``) into a
release folder that ``serving.release`` accepts (``model.onnx`` and a model card holding its hash), and served
by the real predictor, ``python -m serving`` with its default options, started as its own process on a free
loopback port (``monitoring.local``). The load generator, ``serving.load``, sends Open Inference Protocol v2 FP32
tensors from several client threads, one batch size at a time, each batch size's requests in two halves. The
predictor's resident memory (VmRSS in ``/proc/<pid>/status``) is read before each batch size, between its halves
and after them: once a batch size's buffers exist, the second half should not grow it. At the end the predictor
must exit 0 on SIGTERM, or the section fails.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx

from benchmarks.speed.workload import Workload
from components.common.artifacts import read_json
from components.common.atomic import write_atomic, write_json
from components.export import class_distribution, interface, onnx_metadata, to_onnx
from monitoring.local import predictor_process
from serving.load import WARMUP, input_shape, payload, run_batch, summary

MODEL_NAME = "mlnt-classifier"  # the predictor's default --model-name
PROTOCOL, ENDPOINT = "v2", f"/v2/models/{MODEL_NAME}/infer"


def run(workload: Workload, work: Path, *, batches: tuple[int, ...], clients: int, requests: int) -> dict:
    """Latency percentiles, throughput, errors and the predictor's RSS for each batch size in ``batches``:
    ``requests`` measured requests (at least 2: two halves) from ``clients`` threads."""
    if requests < 2:
        raise ValueError(f"serving: expected at least 2 requests per batch size (two halves), found {requests}")
    work = Path(work)
    release = write_release(workload, work / "release")
    with predictor_process(release, work / "predictor.log") as (url, process):
        with httpx.Client(timeout=30) as client:
            shape = input_shape(client, url, MODEL_NAME)
        rows = [load_batch(url, process.pid, payload(shape, b, PROTOCOL), b, clients=clients,
                           requests=requests) for b in batches]
    return {"protocol": PROTOCOL, "clients": clients, "requests": requests, "warmup_per_client": WARMUP,
            "cpus": os.cpu_count(), "input_shape": shape, "results": rows}


def load_batch(url: str, pid: int, body: bytes, batch: int, *, clients: int, requests: int) -> dict:
    """``requests`` copies of ``body`` in two halves, the predictor's RSS before, between and after them; a
    ``RuntimeError`` when none was served: there are no latencies to report (``summary`` gives none)."""
    rss, halves = [rss_mb(pid)], []
    for count in (requests // 2, requests - requests // 2):
        halves.append(run_batch(url, ENDPOINT, body, requests=count, concurrency=clients))
        rss.append(rss_mb(pid))
    both = {"latencies_ms": [ms for half in halves for ms in half["latencies_ms"]],
            "errors": sum(half["errors"] for half in halves), "wall_s": sum(half["wall_s"] for half in halves)}
    if not both["latencies_ms"]:
        raise RuntimeError(f"serving: expected the predictor to serve requests of batch {batch}, found all "
                           f"{both['errors']} failed (no answer, or not 200)")
    return {**summary(batch, both), "body_bytes": len(body),
            "rss_mb": dict(zip(("before", "half", "after"), rss, strict=True))}


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` in MiB, from ``/proc/<pid>/status`` (Linux)."""
    status = Path(f"/proc/{pid}/status")
    try:
        lines = status.read_text().splitlines()
    except OSError as exc:
        raise RuntimeError(f"{status}: expected the predictor's memory figures, found {exc.strerror}") from None
    found = next((line.split()[1] for line in lines if line.startswith("VmRSS:")), None)
    if found is None:
        raise RuntimeError(f"{status}: expected a VmRSS line, found none")
    return round(int(found) / 1024, 1)


def write_release(workload: Workload, folder: Path) -> Path:
    """``model.onnx`` and ``model_card.json`` with the fields the export step writes and the predictor reads."""
    net, meta = workload.feature_net.cpu().eval(), workload.meta
    names = read_json(workload.ingest / "manifest.json", "ingest", "class_names")["class_names"]
    onnx_bytes = to_onnx(net, workload.train.images[:2], onnx_metadata(names, meta["normalisation"], "bench"))
    card = {"model": "bench", **interface("small_cnn", names, meta),
            "train_class_distribution": class_distribution(workload.train.labels.numpy(), meta["num_classes"]),
            "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest()}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "model.onnx", lambda fh: fh.write(onnx_bytes))
    write_json(folder / "model_card.json", card)
    return folder
