"""The load script and the runtime comparison run and report what they promise (timings are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.speed.inference import compare_runtimes
from tests.serving.conftest import ROOT


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


def test_onnxruntime_and_pytorch_are_compared_on_the_same_model(release):
    folder, net = release
    report = compare_runtimes(net, (folder / "model.onnx").read_bytes(), (1, 8, 8), batches=(1, 4), repeats=3)
    assert [r["batch"] for r in report["results"]] == [1, 4]
    for row in report["results"]:
        assert row["max_abs_diff"] < 1e-5 and row["pytorch_over_onnxruntime"] > 0
