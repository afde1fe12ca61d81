"""The dashboard's queries on a real Prometheus, rendered into one PNG (there is no Grafana here).

    python -m monitoring.snapshot --model releases/latest --output docs/monitoring/dashboard.png [--minutes 3]
    python -m monitoring.snapshot --from-json docs/monitoring/snapshot.json --output dashboard.png  # render only

1. starts the predictor (``python -m serving``) for the release, a Pushgateway and a real Prometheus scraping
   both (``monitoring.local``, ``monitoring.pushgateway``: scrape and rule evaluation every second,
   ``monitoring/rules/mlnt.rules.yml``, the PodMonitor's job label for the predictor, ``honor_labels`` for the
   Pushgateway), all on free loopback ports;
2. runs the project's pipeline (``ingest`` .. ``gate``, ``PIPELINE``) once in a temporary folder on a tiny
   Fashion-MNIST (``--pipeline-images`` training images of the real data, or synthetic ones without it) with
   short training (``--pipeline-epochs``) and ``MLNT_PUSHGATEWAY`` pointing at the Pushgateway: what its steps
   push fills the dashboard's Training row (``--no-pipeline`` leaves the row empty); the release served is still
   ``--model``;
3. drives scripted, synthetic traffic for ``--minutes`` (``PHASES``): normal Fashion-MNIST test images (random
   tensors if the data or the model's input shape does not fit), then one class's images only, a burst of client
   errors, and label feedback of which half disagrees at the end; v2 batches of 1 and 16 and some v1 requests;
4. asks ``/api/v1/query_range`` for every panel query of the dashboard (``monitoring.dashboard.build()``; template
   variables replaced as ``monitoring.check`` does, ``$model`` by the served model and ``$__rate_interval`` by
   ``--rate-interval``), writes the answers to ``--json`` (default: ``snapshot.json`` beside the PNG) and renders
   them laid out like the dashboard: one subplot per panel on its grid position, with its title, unit, legend,
   threshold line and value range;
5. stops the servers (SIGTERM, then SIGKILL after a timeout), whatever happened.

The whole run is bounded: at most ``MAX_SECONDS`` of traffic, ``PIPELINE_TIMEOUT`` of pipeline (about 30 s by
default on two CPU cores) and about half a minute to start and stop.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson
import yaml
from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from components.formats.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES, IDX_IMAGES, IDX_LABELS, read_idx
from components.telemetry import PUSHGATEWAY_ENV
from monitoring import ROOT, check, dashboard, local
from monitoring.local import PODMONITOR_JOB, PODMONITOR_JOB_NAME, LocalError, free_port, predictor, prometheus
from monitoring.metrics import PUSHGATEWAY_JOB
from monitoring.pushgateway import JOB_NAME as PUSHGATEWAY_SCRAPE_JOB
from monitoring.pushgateway import prometheus_scraping, pushgateway
from serving.release import InputSpec, ReleaseError, load_release

DATA = ROOT / "data" / "fashion-mnist"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
MODEL_NAME = "mlnt-classifier"
MAX_SECONDS = 240  # traffic; with the start and the stop, a run stays under 5 minutes
RATE_INTERVAL = "20s"  # what $__rate_interval becomes
DRIFT_WINDOW = 500  # the predictor's --drift-window: the drift gauge follows a phase within seconds
TICK = 0.125  # seconds between two client actions: about 8 a second
MAX_POINTS = 150  # per series in query_range
SKEWED_CLASS = "Trouser"  # the one Fashion-MNIST class of the skewed phase
PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642",
           "#CCA300", "#447EBC", "#C15C17")  # Grafana's classic palette
PHASE_COLORS = {"skewed": "#1F78C1", "bad requests": "#E24D42", "disagreeing feedback": "#EAB839"}
# the figure, in inches: a dashboard grid unit's height and width, margins, the header, the gap between panels,
# room for the y tick labels, and a legend's row and item sizes (7 pt)
ROW_UNIT, COLUMN_UNIT, MARGIN, HEADER, GAP, AXIS_LEFT = 0.3, 0.62, 0.25, 1.25, 0.1, 0.72
LEGEND_ROW, LEGEND_CHAR, LEGEND_HANDLE = 0.17, 0.056, 0.42
DPI = 110
# the pipeline run whose pushes fill the Training row: its steps, what it trains on, and how long it may take
PIPELINE = ("ingest", "noise", "baseline", "mlnt", "evaluate", "export", "gate")
PUSHING_STEPS = ("baseline", "mlnt", "evaluate", "gate")  # the steps that push (components.telemetry.reports)
PIPELINE_IMAGES, PIPELINE_EPOCHS = 1500, 3  # and a quarter as many test images, at least 100
PIPELINE_MIN_ACCURACY = 0.5  # the gate's bar for so short a run (params.yaml's is for the full one)
PIPELINE_TIMEOUT = 300.0


class SnapshotError(Exception):
    """The snapshot could not be taken; the message says which step and why."""


@dataclass(frozen=True)
class Phase:
    name: str
    share: float  # of the traffic time
    description: str


PHASES = (
    Phase("normal", 0.30, "test images of every class (v2 batches of 1 and 16, some v1 requests); feedback with "
                          "their true labels"),
    Phase("skewed", 0.25, f"only one class's images ('{SKEWED_CLASS}'; with random inputs, one image repeated): the "
                          "predicted-class mix and the drift gauge move"),
    Phase("bad requests", 0.15, "normal traffic with a burst of client errors (wrong shape, wrong datatype, "
                                "malformed JSON, unknown model): 4xx"),
    Phase("disagreeing feedback", 0.30, "normal traffic; half of the feedback labels are wrong, as from a client "
                                        "that maps class names wrongly"),
)


# the inputs


@dataclass(frozen=True)
class Images:
    x: np.ndarray  # float32 [N, C, H, W], normalised like the model's training inputs
    labels: np.ndarray | None  # the true class indices, if known
    skewed: np.ndarray  # the skewed phase's pool, indices into x: one class's images (or one image)
    source: str


def normalise(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 ``[N, H, W, C]`` -> float32 ``[N, C, H, W]``, as ``serving.inputs.normalise`` and training do."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    return np.ascontiguousarray((x - np.asarray(mean, np.float32)[:, None, None])
                                / np.asarray(std, np.float32)[:, None, None])


def load_images(spec: InputSpec, data: Path = DATA, *, limit: int = 2000, seed: int = 0) -> Images:
    """Fashion-MNIST test images if they exist and fit the model's input (shape and classes), else random
    normalised tensors, whose skewed pool is a single image repeated (one predicted class)."""
    rng = np.random.default_rng(seed)
    images, labels = data / TEST_IMAGES, data / TEST_LABELS
    fits = spec.shape[0] == 1 and spec.shape[1:] == (28, 28) and spec.class_names == FASHION_MNIST_CLASSES
    if fits and images.is_file() and labels.is_file():
        pixels, y = read_idx(images, IDX_IMAGES)[..., None], read_idx(labels, IDX_LABELS).astype(np.int64)
        keep = rng.permutation(len(y))[:limit]
        x, y = normalise(pixels[keep], spec.mean, spec.std), y[keep]
        shown = images.relative_to(ROOT) if images.is_relative_to(ROOT) else images
        return Images(x, y, np.flatnonzero(y == spec.class_names.index(SKEWED_CLASS)),
                      f"{shown} ({len(y)} images; skewed phase: '{SKEWED_CLASS}' only)")
    x = rng.standard_normal((limit, *spec.shape)).astype(np.float32)
    return Images(x, None, np.zeros(1, np.int64),
                  f"random normalised tensors ({spec.shape}; skewed phase: one image repeated)")


# the pipeline run (the Training row)


def idx_gz(array: np.ndarray, magic: int) -> bytes:
    """The IDX format, gzipped: a big-endian magic number, one big-endian uint32 per dimension, the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(), compresslevel=1)


def tiny_fashion_mnist(folder: Path, data: Path = DATA, *, train: int = PIPELINE_IMAGES, test: int = 100,
                       seed: int = 0) -> str:
    """A tiny Fashion-MNIST in the published file layout in ``folder``: a random subset of the one in ``data`` if
    it is there, else synthetic images (class c a bright band at rows 2c+4..2c+7); says which."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    real = all((data / name).is_file() for pair in FASHION_MNIST_FILES.values() for name in pair)
    for split, count in (("train", train), ("test", test)):
        images_name, labels_name = FASHION_MNIST_FILES[split]
        if real:
            images, labels = read_idx(data / images_name, IDX_IMAGES), read_idx(data / labels_name, IDX_LABELS)
            keep = np.sort(rng.permutation(len(labels))[:count])
            images, labels = images[keep], labels[keep]
        else:
            labels = rng.integers(0, 10, count)
            images = rng.integers(0, 60, (count, 28, 28))
            for i, c in enumerate(labels):
                images[i, 2 * c + 4:2 * c + 7, 4:24] = 250
        (folder / images_name).write_bytes(idx_gz(images, IDX_IMAGES))
        (folder / labels_name).write_bytes(idx_gz(labels, IDX_LABELS))
    shown = data.relative_to(ROOT) if data.is_relative_to(ROOT) else data
    return (f"{train} training and {test} test images of {shown}" if real
            else f"{train} training and {test} test synthetic images (no Fashion-MNIST at {shown})")


def pipeline_params(epochs: int) -> dict:
    """``params.yaml`` for a short run: the whole tiny training set, ``epochs`` epochs for the baseline and MLNT
    (the meta-learning ramp within them), no progress bars, and the gate's bar at ``PIPELINE_MIN_ACCURACY``."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["ingest"].update(dataset="fashion-mnist", path="data/fashion-mnist")
    params["noise"].update(train_size=0)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=epochs, batch_size=64, progress=False, checkpoint_every=1000)
    params["mlnt"].update(ramp_start=0.25 * epochs, ramp_end=0.5 * epochs)
    params["gate"].update(min_accuracy=PIPELINE_MIN_ACCURACY, registry="releases")
    return params


_RUN_STEPS = """
import sys
from importlib import import_module
for name in sys.argv[1:]:
    print(f"--- python -m components.{name}", flush=True)
    code = import_module(f"components.{name}").main([])
    if code:
        sys.exit(f"components.{name} exited with {code}")
"""


def run_pipeline(folder: Path, gateway: str, *, images: int = PIPELINE_IMAGES, epochs: int = PIPELINE_EPOCHS,
                 data: Path = DATA, timeout: float = PIPELINE_TIMEOUT) -> dict:
    """The pipeline's steps (``PIPELINE``), one after another in one Python process in ``folder`` (its own
    ``params.yaml``, ``data/``, ``artifacts/`` and ``releases/``), pushing to ``gateway``; its log is
    ``folder/pipeline.log``. What ran, for the snapshot."""
    source = tiny_fashion_mnist(folder / "data" / "fashion-mnist", data, train=images,
                                test=max(100, images // 4))
    params = pipeline_params(epochs)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = folder / "pipeline.log"
    env = {**os.environ, PUSHGATEWAY_ENV: gateway, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("RANK", None)
    began = time.monotonic()
    with log.open("wb") as out:
        try:
            done = subprocess.run([sys.executable, "-c", _RUN_STEPS, *PIPELINE], cwd=folder, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SnapshotError(f"the pipeline run took over {timeout:.0f} s:\n{log.read_text()[-3000:]}") from None
    if done.returncode != 0:
        raise SnapshotError(f"the pipeline run failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    return {"steps": list(PIPELINE), "pushing": list(PUSHING_STEPS), "data": source, "epochs": epochs,
            "network": params["baseline"]["network"], "noise": {"kind": params["noise"]["kind"],
                                                                  "rate": params["noise"]["rate"]},
            "gate_min_accuracy": PIPELINE_MIN_ACCURACY, "seconds": round(time.monotonic() - began, 1),
            "pushgateway_job": PUSHGATEWAY_JOB}


# the traffic


class Traffic:
    """One client's requests against the predictor; ``sent`` counts them by kind and HTTP status."""

    def __init__(self, client: httpx.Client, url: str, name: str, images: Images, classes: int, *, seed: int = 0):
        self.client, self.url, self.name, self.images, self.classes = client, url, name, images, classes
        self.rng = np.random.default_rng(seed)
        self.sent: Counter[str] = Counter()
        self.kept: deque[tuple[int, int]] = deque(maxlen=64)  # (predicted, true label) awaiting feedback

    def post(self, kind: str, path: str, body: bytes) -> httpx.Response | None:
        try:
            answer = self.client.post(self.url + path, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as error:
            self.sent[f"{kind} {type(error).__name__}"] += 1
            return None
        self.sent[f"{kind} {answer.status_code}"] += 1
        return answer

    def pick(self, batch: int, skewed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        pool = self.images.skewed if skewed else np.arange(len(self.images.x))
        index = self.rng.choice(pool, batch)
        return self.images.x[index], None if self.images.labels is None else self.images.labels[index]

    def infer(self, batch: int, protocol: str, *, skewed: bool = False) -> None:
        x, labels = self.pick(batch, skewed)
        if protocol == "v1":
            answer = self.post(f"v1 batch {batch}", f"/v1/models/{self.name}:predict",
                               orjson.dumps({"instances": x}, option=orjson.OPT_SERIALIZE_NUMPY))
            predicted = [p["class_index"] for p in answer.json()["predictions"]] if ok(answer) else []
        else:
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel()}]}
            answer = self.post(f"v2 batch {batch}", f"/v2/models/{self.name}/infer",
                               orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))
            outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]} if ok(answer) else {}
            predicted = outputs.get("class_index", [])
        truth = predicted if labels is None else labels.tolist()
        self.kept.extend(zip(predicted, truth, strict=False))

    def feedback(self, wrong_share: float, items: int = 4) -> None:
        """Labels for kept predictions: the true label, or with probability ``wrong_share`` the next class."""
        pairs = [self.kept.popleft() for _ in range(min(items, len(self.kept)))]
        if not pairs:
            return
        feedback = [{"predicted": int(p), "label": int((t + 1) % self.classes if self.rng.random() < wrong_share
                                                         else t)} for p, t in pairs]
        self.post("feedback", f"/v2/models/{self.name}/feedback", orjson.dumps({"feedback": feedback}))

    def bad(self) -> None:
        """One client error, of one of four kinds."""
        x, _ = self.pick(1, False)
        kind = int(self.rng.integers(4))
        if kind == 0:  # the wrong image size
            body = {"inputs": [{"name": "images", "shape": [1, 1, 5, 5], "datatype": "FP32", "data": [0.0] * 25}]}
            self.post("bad: wrong shape", f"/v2/models/{self.name}/infer", orjson.dumps(body))
        elif kind == 1:
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "INT32",
                                "data": [0] * x.size}]}
            self.post("bad: wrong datatype", f"/v2/models/{self.name}/infer", orjson.dumps(body))
        elif kind == 2:
            self.post("bad: malformed JSON", f"/v2/models/{self.name}/infer", b'{"inputs": [')
        else:
            body = {"inputs": [{"name": "images", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel()}]}
            self.post("bad: unknown model", "/v2/models/no-such-model/infer",
                      orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY))

    def step(self, phase: Phase) -> None:
        """One action of ``phase``: mostly inference, a feedback post now and then, client errors in a burst."""
        if phase.name == "bad requests" and self.rng.random() < 0.5:
            return self.bad()
        r = self.rng.random()
        if r < 0.12:
            return self.feedback(wrong_share=0.5 if phase.name == "disagreeing feedback" else 0.0)
        skewed = phase.name == "skewed"
        if r < 0.22:
            return self.infer(1, "v1", skewed=skewed)
        return self.infer(16 if r < 0.45 else 1, "v2", skewed=skewed)


def ok(answer: httpx.Response | None) -> bool:
    return answer is not None and answer.status_code == 200


def drive(traffic: Traffic, seconds: float, log: Callable[[str], None] = print) -> list[dict]:
    """Run ``PHASES`` one after another for ``seconds`` in all; their names and Unix start and end times."""
    done, start = [], time.time()
    boundaries = np.cumsum([0.0] + [phase.share for phase in PHASES]) / sum(phase.share for phase in PHASES)
    for phase, end_share in zip(PHASES, boundaries[1:], strict=True):
        began, until = time.time(), start + end_share * seconds
        log(f"phase '{phase.name}' for {until - began:.0f} s: {phase.description}")
        while time.time() < until:
            tick = time.monotonic()
            traffic.step(phase)
            time.sleep(max(0.0, TICK - (time.monotonic() - tick)))
        done.append({"name": phase.name, "description": phase.description, "start": began, "end": time.time()})
    return done


# the queries


def panels(board: dict) -> list[dict]:
    """The dashboard's panels, rows left out, in layout order."""
    return [panel for panel in check._panels(board["panels"]) if panel["type"] != "row"]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's template variables replaced by literals, as ``monitoring.check.substitute`` does."""

    def literal(match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise SnapshotError(f"unknown template variable ${name} in {expr}")
        return variables[name]

    return check._VARIABLE.sub(literal, expr)


def query_range(client: httpx.Client, url: str, expr: str, start: float, end: float, step: float) -> list[dict]:
    answer = client.get(f"{url}/api/v1/query_range", params={"query": expr, "start": f"{start:.3f}",
                                                               "end": f"{end:.3f}", "step": f"{step:g}"})
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if answer.status_code != 200 or body.get("status") != "success":
        raise SnapshotError(f"query_range {expr!r}: HTTP {answer.status_code}: {body.get('error', answer.text)}")
    return body["data"]["result"]


def collect(client: httpx.Client, url: str, board: dict, *, start: float, end: float, step: float,
            variables: dict[str, str]) -> list[dict]:
    """Every panel's queries over [start, end], as Prometheus answered them."""
    return [{"id": panel["id"], "title": panel["title"], "type": panel["type"],
             "targets": [{"refId": target["refId"], "expr": target["expr"],
                          "query": (query := substitute(target["expr"], variables)),
                          "legendFormat": target.get("legendFormat", ""),
                          "result": query_range(client, url, query, start, end, step)}
                         for target in panel["targets"]]}
            for panel in panels(board)]


def wait_for(client: httpx.Client, url: str, expr: str, what: str, timeout: float = 20.0) -> None:
    """Poll ``expr`` until it has a result; a ``SnapshotError`` saying that prometheus had not ``what`` if not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = client.get(f"{url}/api/v1/query", params={"query": expr})
        if answer.status_code == 200 and answer.json()["data"]["result"]:
            return
        time.sleep(0.25)
    raise SnapshotError(f"prometheus had not {what} after {timeout:.0f} s ({expr})")


def wait_for_scrape(client: httpx.Client, url: str, job: str, timeout: float = 20.0) -> None:
    wait_for(client, url, f'up{{job="{job}"}} == 1', f"scraped the predictor (job {job})", timeout)


# the rendering


def legend(fmt: str, metric: dict[str, str]) -> str:
    """Grafana's legend: ``{{label}}`` replaced by the series' label values; ``__auto`` or none: the labels."""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
    labels = ", ".join(f'{key}="{value}"' for key, value in sorted(metric.items()) if key != "__name__")
    return f"{metric.get('__name__', '')}{{{labels}}}" if labels or "__name__" in metric else "value"


def unit_text(value: float, unit: str) -> str:
    """A value as Grafana shows it in ``unit`` (the units the dashboard uses; others as plain numbers)."""
    if not math.isfinite(value):
        return str(value)
    if unit == "s":
        for size, suffix in ((3600, "h"), (60, "min"), (1, "s"), (1e-3, "ms")):
            if abs(value) >= size:
                return f"{value / size:.3g} {suffix}"
        return "0 s" if value == 0 else f"{value * 1e3:.3g} ms"
    scale, suffix = {"percentunit": (100, "%"), "reqps": (1, " req/s")}.get(unit, (1, ""))
    return f"{value * scale:.3g}{suffix}"


def series(target: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(legend, times, values)`` per series of one query's answer, times as Unix seconds."""
    out = []
    for item in target.get("result", []):
        values = np.asarray([[float(t), float(v)] for t, v in item.get("values", [])]).reshape(-1, 2)
        out.append((legend(target.get("legendFormat", ""), item.get("metric", {})), values[:, 0], values[:, 1]))
    return out


def _unix_to_num(seconds: np.ndarray | float) -> np.ndarray:
    """Unix seconds -> matplotlib's date numbers (days since 1970, its default epoch)."""
    return np.asarray(seconds, dtype=float) / 86400.0 + mdates.date2num(dt.datetime(1970, 1, 1, tzinfo=dt.UTC))


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#888888", fontsize=12, transform=ax.transAxes)


def _legend_layout(labels: list[str], width: float) -> tuple[int, int]:
    """Columns and rows of a legend of ``labels`` in ``width`` inches (Grafana's list legend, at 7 pt)."""
    if not labels:
        return 0, 0
    item = max(map(len, labels)) * LEGEND_CHAR + LEGEND_HANDLE
    columns = max(1, min(len(labels), int(width // item)))
    return columns, math.ceil(len(labels) / columns)


def timeseries_lines(recorded: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [line for target in recorded.get("targets", []) for line in series(target)]


def draw_timeseries(ax, panel: dict, lines: list, snapshot: dict) -> None:
    """One time-series panel: its lines (or percent-stacked areas), threshold, value range, unit and phases."""
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    stacking = defaults.get("custom", {}).get("stacking", {}).get("mode")
    shade_phases(ax, snapshot)
    if not lines or all(np.isnan(values).all() for _, _, values in lines):
        _no_data(ax)
    elif stacking == "percent":
        times = np.unique(np.concatenate([t for _, t, _ in lines]))
        stack = np.zeros((len(lines), len(times)))
        for row, (_, t, values) in enumerate(lines):
            stack[row, np.searchsorted(times, t)] = np.nan_to_num(values)
        total = stack.sum(axis=0)
        shares = np.divide(stack, total, out=np.full_like(stack, np.nan), where=total > 0)
        ax.stackplot(_unix_to_num(times), shares, labels=[name for name, _, _ in lines],
                     colors=[PALETTE[k % len(PALETTE)] for k in range(len(lines))], alpha=0.9, lw=0)
        ax.set_ylim(0, 1)
    else:
        for k, (name, t, values) in enumerate(lines):
            ax.plot(_unix_to_num(t), values, lw=1.4, color=PALETTE[k % len(PALETTE)], label=name)
    steps = defaults.get("thresholds", {}).get("steps", [])
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "dashed" and len(steps) > 1:
        ax.axhline(steps[1]["value"], color="#E02F44", lw=1, ls="--")
    if "min" in defaults or "max" in defaults:
        ax.set_ylim(defaults.get("min"), defaults.get("max"))
    elif stacking != "percent":
        top = max([np.nanmax(v) for _, _, v in lines if np.isfinite(v).any()] or [0.0])
        limit = steps[1]["value"] if len(steps) > 1 else None
        if limit is not None and limit > 3 * top > 0:  # far above the data: say so instead of flattening the lines
            ax.text(0.99, 0.97, f"threshold {unit_text(limit, unit)} off scale", color="#E02F44", fontsize=7.5,
                    ha="right", va="top", transform=ax.transAxes)
        elif limit is not None:
            top = max(top, limit)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    style_axes(ax, unit)


def shade_phases(ax, snapshot: dict) -> None:
    """The snapshot's time range, its traffic phases shaded (the first, normal traffic, not)."""
    for phase in snapshot.get("phases", []):
        if phase["name"] in PHASE_COLORS:
            ax.axvspan(_unix_to_num(phase["start"]), _unix_to_num(phase["end"]), color=PHASE_COLORS[phase["name"]],
                       alpha=0.13, lw=0, zorder=0)
    span = snapshot.get("range")
    if span:
        ax.set_xlim(_unix_to_num(span["start"]), _unix_to_num(span["end"]))


def style_axes(ax, unit: str) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: unit_text(v, unit)))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7, tz=dt.UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.UTC))
    ax.tick_params(labelsize=8, length=2, colors="#444444")
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#bbbbbb")


def draw_stat(ax, panel: dict, recorded: dict) -> None:
    """One stat panel: the last non-null value of each series (Grafana's lastNotNull), coloured by threshold."""
    defaults = panel["fieldConfig"]["defaults"]
    unit, steps = defaults.get("unit", "short"), defaults.get("thresholds", {}).get("steps", [])
    mappings = {key: option for mapping in defaults.get("mappings", []) for key, option in
                mapping.get("options", {}).items()}
    colors = {"green": "#56A64B", "red": "#E02F44"}
    ax.set_axis_off()
    shown = []
    for target in recorded.get("targets", []):
        for name, _, values in series(target):
            finite = values[np.isfinite(values)]
            if len(finite):
                shown.append((name, float(finite[-1])))
    if not shown:
        return _no_data(ax)
    for k, (name, value) in enumerate(shown):
        color = colors.get(steps[0]["color"], "#56A64B") if steps else "#56A64B"
        if len(steps) > 1 and value >= steps[1]["value"]:
            color = colors.get(steps[1]["color"], color)
        mapped = mappings.get(f"{value:g}")
        if mapped:
            text, color = mapped["text"], colors.get(mapped.get("color"), color)
        elif panel.get("options", {}).get("textMode") == "name":
            text = name
        else:
            text = unit_text(value, unit)
        y = 0.5 + (len(shown) / 2 - k - 0.5) / len(shown) * 0.8
        inches = ax.get_position().width * ax.figure.get_figwidth()
        ax.text(0.5, y, text, ha="center", va="center", fontsize=min(24, 0.9 * inches * 72 / (0.62 * len(text))),
                color=color, weight="bold", transform=ax.transAxes)


def render(board: dict, snapshot: dict) -> Figure:
    """The figure: the dashboard's rows and panels on its 24-column grid, one subplot per panel (labelled
    ``panel <id>``), each drawn from the recorded answers to its queries."""
    recorded_by_title = {panel["title"]: panel for panel in snapshot.get("panels", [])}
    layout = list(check._panels(board["panels"]))  # rows and panels
    grid_height = max(item["gridPos"]["y"] + item["gridPos"]["h"] for item in layout)
    width, height = dashboard.GRID_WIDTH * COLUMN_UNIT + 2 * MARGIN, HEADER + grid_height * ROW_UNIT + MARGIN
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")

    def box(left: float, top: float, box_width: float, box_height: float) -> list[float]:
        """Inches from the top-left corner -> a figure rectangle [left, bottom, width, height]."""
        return [left / width, 1 - (top + box_height) / height, box_width / width, box_height / height]

    model, span = snapshot.get("model", {}), snapshot.get("range")
    when = dt.datetime.fromtimestamp(span["end"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if span else "?"
    figure.text(MARGIN / width, 1 - 0.45 / height, f"{board.get('title', 'Dashboard')}: the dashboard's queries "
                f"on Prometheus, {when}", fontsize=15, weight="bold", va="baseline")
    phases = ", ".join(f"{p['name']} {dt.datetime.fromtimestamp(p['start'], dt.UTC):%H:%M:%S}"
                       for p in snapshot.get("phases", []))
    figure.text(MARGIN / width, 1 - 0.6 / height,
                f"Model {model.get('name', '?')} {model.get('version', '')}, synthetic traffic in phases: "
                f"{phases or 'none recorded'} (shaded as in the legend).\n$__rate_interval = "
                f"{snapshot.get('variables', {}).get('__rate_interval', '?')}. {training_text(snapshot)}",
                fontsize=9.5, linespacing=1.5, color="#555555", va="top")
    patches = [Patch(color=color, alpha=0.3, label=name) for name, color in PHASE_COLORS.items()]
    figure.legend(handles=patches, loc="upper right", bbox_to_anchor=(1 - MARGIN / width, 1 - 0.1 / height),
                  ncol=len(patches), fontsize=9, frameon=False)
    for item in layout:
        pos = item["gridPos"]
        left, top = MARGIN + pos["x"] * COLUMN_UNIT, HEADER + pos["y"] * ROW_UNIT
        panel_width, panel_height = pos["w"] * COLUMN_UNIT - GAP, pos["h"] * ROW_UNIT - GAP
        if item["type"] == "row":
            figure.text(left / width, 1 - (top + 0.26) / height, item["title"], fontsize=13, weight="bold",
                        va="baseline")
            continue
        figure.add_artist(FancyBboxPatch((left / width, 1 - (top + panel_height) / height), panel_width / width,
                                         panel_height / height, boxstyle="square,pad=0", facecolor="#fafafa",
                                         edgecolor="#d0d0d0", lw=0.8, transform=figure.transFigure, zorder=-1))
        figure.text((left + 0.12) / width, 1 - (top + 0.24) / height, item["title"], fontsize=10,
                    weight="bold", va="baseline")
        recorded = recorded_by_title.get(item["title"], {})
        if item["type"] == "stat":
            ax = figure.add_axes(box(left, top + 0.35, panel_width, panel_height - 0.4), label=f"panel {item['id']}")
            draw_stat(ax, item, recorded)
            continue
        lines = timeseries_lines(recorded)
        plot_width = panel_width - AXIS_LEFT - 0.2
        names = [name for name, _, values in lines if np.isfinite(values).any()]
        columns, rows = _legend_layout(names, plot_width + AXIS_LEFT - 0.2)
        bottom = 0.32 + rows * LEGEND_ROW
        ax = figure.add_axes(box(left + AXIS_LEFT, top + 0.4, plot_width, panel_height - 0.4 - bottom),
                             label=f"panel {item['id']}")
        ax.set_facecolor("#fafafa")
        draw_timeseries(ax, item, lines, snapshot)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, loc="upper left", ncol=columns, fontsize=8, frameon=False,
                      handlelength=1.2, columnspacing=1.0, borderaxespad=0, handletextpad=0.4,
                      bbox_to_anchor=((left + 0.12) / width, 1 - (top + panel_height - bottom + 0.3) / height),
                      bbox_transform=figure.transFigure)
    return figure


def training_text(snapshot: dict) -> str:
    """The header's sentence on the Training row: the pipeline run whose pushes it shows, if any."""
    run = snapshot.get("training")
    if not run:
        return "The Training row reads what the pipeline pushes to a Pushgateway; this run has none."
    return (f"The Training row: what one pipeline run ({', '.join(run['steps'])}) pushed to a Pushgateway just "
            f"before the traffic:\n{run['seconds']:g} s on {run['data']}, {run['network']}, {run['epochs']} epochs, "
            f"{run['noise']['kind']} noise at rate {run['noise']['rate']:g}, gate bar {run['gate_min_accuracy']:.0%}; "
            "that run's model is not the one served.")


def save(figure: Figure, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=figure.dpi, facecolor=figure.get_facecolor())
    return output


# the run


def take(release: Path, seconds: float, *, name: str = MODEL_NAME, rate_interval: str = RATE_INTERVAL,
         data: Path = DATA, workdir: Path | None = None, log: Callable[[str], None] = print, pipeline: bool = True,
         pipeline_images: int = PIPELINE_IMAGES, pipeline_epochs: int = PIPELINE_EPOCHS) -> dict:
    """Serve ``release``, run the pipeline once (unless not ``pipeline``), drive the traffic for ``seconds``, query
    Prometheus: the snapshot (JSON-ready)."""
    began = time.monotonic()

    def say(message: str) -> None:
        log(f"snapshot [{time.monotonic() - began:5.1f} s]: {message}")

    try:
        loaded = load_release(release)
    except ReleaseError as error:
        raise SnapshotError(f"release: {error}") from None
    images = load_images(loaded.spec, data)
    say(f"serving {release} ({loaded.version}); inputs: {images.source}")
    board = dashboard.build()
    with tempfile.TemporaryDirectory(prefix="mlnt-snapshot-") as folder:
        logs = Path(workdir or folder)
        try:
            port = free_port()  # known before the predictor starts, so that both start at once
            config = local.prometheus_config([f"127.0.0.1:{port}"], job_name=PODMONITOR_JOB_NAME, job=PODMONITOR_JOB)
            with contextlib.ExitStack() as servers:
                gateway = servers.enter_context(pushgateway(logs / "pushgateway")) if pipeline else None
                prom = servers.enter_context(
                    prometheus_scraping(gateway, logs / "prometheus", config=config) if gateway
                    else prometheus(f"127.0.0.1:{port}", logs / "prometheus"))
                url = servers.enter_context(predictor(release, logs / "predictor.log", port=port, model_name=name,
                                                      drift_window=DRIFT_WINDOW))
                client = servers.enter_context(httpx.Client(timeout=30))
                say(f"predictor {url}, prometheus {prom}" + (f" and pushgateway {gateway}" if gateway else "")
                    + " ready")
                training = None
                if gateway:
                    say(f"the pipeline ({' .. '.join((PIPELINE[0], PIPELINE[-1]))}, {pipeline_epochs} epochs) "
                        f"pushing to {gateway}")
                    training = run_pipeline(logs / "pipeline", gateway, images=pipeline_images,
                                            epochs=pipeline_epochs, data=data)
                    say(f"the pipeline ran in {training['seconds']:g} s on {training['data']}")
                    wait_for(client, prom, f'count(mlnt_training_duration_seconds{{job="{PUSHGATEWAY_JOB}"}}) '
                             f">= {len(PUSHING_STEPS)}", "scraped the pipeline's pushes from the pushgateway")
                wait_for_scrape(client, prom, PODMONITOR_JOB)
                start = time.time() - 2
                traffic = Traffic(client, url, name, images, len(loaded.spec.class_names))
                phases = drive(traffic, seconds, say)
                time.sleep(2.5)  # the last requests scraped and the rules evaluated on them
                end = time.time()
                step = max(1.0, math.ceil((end - start) / MAX_POINTS))
                variables = check.VARIABLES | {"model": name, "__rate_interval": rate_interval,
                                               "__interval": f"{step:g}s", "__range": f"{round(end - start)}s"}
                recorded = collect(client, prom, board, start=start, end=end, step=step, variables=variables)
                say(f"{sum(len(panel['targets']) for panel in recorded)} queries answered; stopping the servers")
        except LocalError as error:
            raise SnapshotError(str(error)) from None
    say("stopped")
    return {"title": board["title"], "taken_at": dt.datetime.fromtimestamp(end, dt.UTC).isoformat(timespec="seconds"),
            "model": {"name": name, "version": loaded.version, "release": str(release)},
            "prometheus": {"scrape_interval": "1s", "evaluation_interval": "1s", "job": PODMONITOR_JOB,
                           "rules": "monitoring/rules/mlnt.rules.yml",
                           "pushgateway": {"job_name": PUSHGATEWAY_SCRAPE_JOB, "honor_labels": True} if training
                           else None},
            "predictor": {"drift_window": DRIFT_WINDOW}, "training": training, "inputs": images.source,
            "range": {"start": start, "end": end, "step": step}, "variables": variables, "phases": phases,
            "sent": dict(sorted(traffic.sent.items())), "panels": recorded}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m monitoring.snapshot", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="the release folder to serve (model.onnx, model_card.json)")
    source.add_argument("--from-json", type=Path, help="render a snapshot.json again, without any server")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--json", type=Path, help="where the query results go (default: snapshot.json beside it)")
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--minutes", type=float, help="traffic duration (default 3)")
    duration.add_argument("--seconds", type=float, help="traffic duration in seconds")
    parser.add_argument("--model-name", default=MODEL_NAME, help="the served model's name")
    parser.add_argument("--rate-interval", default=RATE_INTERVAL, help="what $__rate_interval becomes")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the Fashion-MNIST folder (test images for the traffic, a subset for the pipeline run)")
    parser.add_argument("--pipeline-images", type=int, default=PIPELINE_IMAGES,
                        help=f"training images of the pipeline run (default {PIPELINE_IMAGES}; a quarter as many "
                             "test images, at least 100)")
    parser.add_argument("--pipeline-epochs", type=int, default=PIPELINE_EPOCHS,
                        help=f"epochs of the run's baseline and MLNT (default {PIPELINE_EPOCHS})")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="no pipeline run and no Pushgateway: the Training row stays empty")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes if args.minutes is not None else 3)
    if not 5 <= seconds <= MAX_SECONDS:
        print(f"monitoring.snapshot: expected 5 to {MAX_SECONDS} seconds of traffic, found {seconds:g}",
              file=sys.stderr)
        return 2
    try:
        if args.from_json:
            snapshot = json.loads(args.from_json.read_text())
        else:
            snapshot = take(args.model, seconds, name=args.model_name, rate_interval=args.rate_interval,
                            data=args.data, pipeline=not args.no_pipeline, pipeline_images=args.pipeline_images,
                            pipeline_epochs=args.pipeline_epochs)
            out = args.json or args.output.with_name("snapshot.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(snapshot, indent=1) + "\n")
            print(f"wrote {out}")
    except (SnapshotError, OSError, ValueError) as error:
        print(f"monitoring.snapshot: {error}", file=sys.stderr)
        return 1
    print(f"wrote {save(render(dashboard.build(), snapshot), args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
