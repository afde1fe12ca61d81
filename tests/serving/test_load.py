"""The load script and the runtime comparison run and report what they promise (timings are never asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from benchmarks.speed.inference import compare_runtimes
from benchmarks.speed.serving import load_batch
from monitoring import local
from serving.load import WARMUP, main
from tests.serving.conftest import ROOT

METADATA = json.dumps({"name": "mlnt-classifier", "inputs": [{"name": "images", "datatype": "FP32",
                                                             "shape": [-1, 1, 8, 8]}]}).encode()


class Flaky(BaseHTTPRequestHandler):
    """A predictor that answers its metadata, and each inference with ``status``, except that it drops the
    connection of the inferences numbered in ``drop`` (from 1) without answering."""

    status, drop, posts = 200, frozenset(), 0

    def do_GET(self):
        self.answer(200, METADATA)

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        type(self).posts += 1
        if self.posts in self.drop:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.answer(self.status, b'{"outputs": []}' if self.status == 200 else b'{"error": "not ready"}')

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    """The URL of a ``Flaky`` predictor, and its handler class to set ``status`` and ``drop`` on."""
    handler = type("Handler", (Flaky,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def strict_json(text: str) -> dict:
    """``text`` as JSON, refusing NaN and Infinity (not JSON, whatever Python's json reads)."""
    def refuse(constant: str):
        raise ValueError(f"expected JSON, found {constant}")
    return json.loads(text, parse_constant=refuse)


def test_a_dropped_connection_counts_as_an_error_and_the_run_goes_on(flaky, capsys):
    url, handler = flaky
    handler.drop = frozenset({1, WARMUP + 2})  # a warm-up request (not counted) and the second measured one
    code = main(["--url", url, "--batch", "1", "--requests", "4", "--concurrency", "1"])
    [row] = strict_json(capsys.readouterr().out)["results"]
    assert (code, row["requests"], row["errors"]) == (1, 3, 1)
    assert row["latency_ms"]["p50"] <= row["latency_ms"]["max"]


def test_a_run_where_every_request_failed_reports_null_percentiles_as_json(flaky, capsys):
    url, handler = flaky
    handler.status = 503
    code = main(["--url", url, "--batch", "1", "--batch", "2", "--requests", "3", "--concurrency", "2"])
    report = strict_json(capsys.readouterr().out)
    assert code == 1
    for row in report["results"]:
        assert (row["requests"], row["errors"], row["requests_per_s"]) == (0, 3, 0)
        assert row["latency_ms"] == {"p50": None, "p90": None, "p95": None, "p99": None, "max": None}


def test_the_load_script_reports_percentiles_and_throughput(server):
    done = subprocess.run([sys.executable, "-m", "serving.load", "--url", server, "--quick"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["input_shape"] == [1, 8, 8] and [r["batch"] for r in report["results"]] == [1, 8]
    for row in report["results"]:
        assert row["requests"] == 20 and row["errors"] == 0 and row["images_per_s"] > 0
        assert row["latency_ms"]["p50"] <= row["latency_ms"]["p95"] <= row["latency_ms"]["p99"]


def test_the_load_script_refuses_unbounded_runs(server):
    done = subprocess.run([sys.executable, "-m", "serving.load", "--url", server, "--requests", "100000"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2 and "expected 1..10000 requests" in done.stderr


def test_a_predictor_that_does_not_answer_its_metadata_is_one_line_and_status_1(capsys):
    url = f"http://127.0.0.1:{local.free_port()}"  # nothing listens there
    assert main(["--url", url, "--requests", "1"]) == 1
    found = capsys.readouterr()
    assert found.out == "" and found.err.startswith(f"serving.load: expected the v2 metadata of model "
                                                    f"mlnt-classifier at {url}, found ConnectError")


def test_the_benchmark_refuses_a_batch_size_the_predictor_served_none_of(flaky):
    url, handler = flaky
    handler.status = 503
    with pytest.raises(RuntimeError, match="expected the predictor to serve requests of batch 1, found all 2 failed"):
        load_batch(url, os.getpid(), b"{}", 1, clients=1, requests=2)


def test_onnxruntime_and_pytorch_are_compared_on_the_same_model(release):
    folder, net = release
    report = compare_runtimes(net, (folder / "model.onnx").read_bytes(), (1, 8, 8), batches=(1, 4), repeats=3)
    assert [r["batch"] for r in report["results"]] == [1, 4]
    for row in report["results"]:
        assert row["max_abs_diff"] < 1e-5 and row["pytorch_over_onnxruntime"] > 0
