"""Scripted, synthetic traffic against a served model: the phases that move the dashboard's serving panels.

Reads Fashion-MNIST's test images (``DATA``; random normalised tensors if they are not there or do not fit the
model's input) and sends them to a predictor (``python -m serving``) over HTTP: v2 batches of 1 and 16, some v1
requests, label feedback, client errors. Writes nothing; ``Traffic.sent`` counts the requests by kind and status, and
``drive`` returns the phases it ran (``PHASES``: normal traffic, one class's images only, a burst of client errors,
feedback of which half disagrees), with their Unix start and end times.

The traffic is a population of ``USERS`` users behind a gateway, as in the cluster: every request comes from this one
process, and carries ``X-Forwarded-For`` with the address of a user drawn at random (documentation addresses,
``user_addresses``), as the cluster's ingress gateway appends it. A predictor started with ``PREDICTOR_OPTIONS``
(``--client-header x-forwarded-for --trusted-proxy-hops 1``, the ServingRuntime's) tells the users apart, so that a
shift in what all of them send moves the drift gauge past the alert's threshold while no one user could, and the
feedback rate limit holds per user.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import orjson

from components.formats.idx import FASHION_MNIST_CLASSES, IDX_IMAGES, IDX_LABELS, read_idx
from monitoring import ROOT
from serving.release import InputSpec

DATA = ROOT / "data" / "fashion-mnist"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
MAX_SECONDS = 240  # traffic; with the start and the stop, a snapshot stays under 5 minutes
TICK = 0.125  # seconds between two client actions: about 8 a second
SKEWED_CLASS = "Trouser"  # the one Fashion-MNIST class of the skewed phase
USERS = 200  # synthetic users behind the gateway: each holds at most 1/200 of the traffic, under the drift cap
CLIENT_HEADER = "x-forwarded-for"  # what the gateway appends each user's address to
# the predictor's options that make it read the header as the ServingRuntime does (k8s/base/serving)
PREDICTOR_OPTIONS = {"client_header": CLIENT_HEADER, "trusted_proxy_hops": 1}


@dataclass(frozen=True)
class Phase:
    """One part of the traffic: what the client sends during it, and for which share of the time."""

    name: str
    share: float  # of the traffic time
    description: str


PHASES = (
    Phase("normal", 0.30, "test images of every class (v2 batches of 1 and 16, some v1 requests); feedback with "
                          "their true labels"),
    Phase("skewed", 0.25, f"only one class's images ('{SKEWED_CLASS}'; with random inputs, one image repeated), from "
                          "every user: the predicted-class mix and the drift gauge move"),
    Phase("bad requests", 0.15, "normal traffic with a burst of client errors (wrong shape, wrong datatype, "
                                "malformed JSON, unknown model): 4xx"),
    Phase("disagreeing feedback", 0.30, "normal traffic; half of the feedback labels are wrong, as from a client "
                                        "that maps class names wrongly"),
)


# the inputs


@dataclass(frozen=True)
class Images:
    """The traffic's inputs, ready to send, and what they are (``source``, for the snapshot)."""

    x: np.ndarray  # float32 [N, C, H, W], normalised like the model's training inputs
    labels: np.ndarray | None  # the true class indices, if known
    skewed: np.ndarray  # the skewed phase's pool, indices into x: one class's images (or one image)
    source: str


def load_images(spec: InputSpec, data: Path = DATA, *, limit: int = 2000, seed: int = 0) -> Images:
    """Fashion-MNIST test images if they exist and fit the model's input (shape and classes), else random
    normalised tensors, whose skewed pool is a single image repeated (one predicted class). The images are
    normalised as the predictor normalises encoded ones (``serving.inputs.normalise``, the card's mean and std)."""
    from serving.inputs import normalise  # noqa: PLC0415 - it loads kserve (seconds): only to send traffic

    rng = np.random.default_rng(seed)
    images, labels = data / TEST_IMAGES, data / TEST_LABELS
    fits = spec.shape[0] == 1 and spec.shape[1:] == (28, 28) and spec.class_names == FASHION_MNIST_CLASSES
    if fits and images.is_file() and labels.is_file():
        pixels, y = read_idx(images, IDX_IMAGES)[..., None], read_idx(labels, IDX_LABELS).astype(np.int64)
        keep = rng.permutation(len(y))[:limit]
        x, y = normalise(pixels[keep], spec), y[keep]
        shown = images.relative_to(ROOT) if images.is_relative_to(ROOT) else images
        return Images(x, y, np.flatnonzero(y == spec.class_names.index(SKEWED_CLASS)),
                      f"{shown} ({len(y)} images; skewed phase: '{SKEWED_CLASS}' only)")
    x = rng.standard_normal((limit, *spec.shape)).astype(np.float32)
    return Images(x, None, np.zeros(1, np.int64),
                  f"random normalised tensors ({spec.shape}; skewed phase: one image repeated)")


# the traffic


def user_addresses(count: int = USERS) -> list[str]:
    """``count`` distinct user addresses from the documentation ranges (RFC 5737: 198.51.100.0/24, 203.0.113.0/24)."""
    pool = itertools.chain(*(ipaddress.ip_network(net).hosts() for net in ("198.51.100.0/24", "203.0.113.0/24")))
    found = [str(host) for host in itertools.islice(pool, count)]
    if not 1 <= count == len(found):
        raise ValueError(f"traffic: expected 1 to 508 users, found {count}")
    return found


class Traffic:
    """The requests of ``users`` users behind a gateway against the predictor, each with ``X-Forwarded-For`` naming
    a user drawn at random; ``sent`` counts them by kind and HTTP status."""

    def __init__(self, client: httpx.Client, url: str, name: str, images: Images, classes: int, *, seed: int = 0,
                 users: int = USERS):
        self.client, self.url, self.name, self.images, self.classes = client, url, name, images, classes
        self.rng = np.random.default_rng(seed)
        self.users, self.who = user_addresses(users), np.random.default_rng([seed, 1])  # who: which user sends
        self.sent: Counter[str] = Counter()
        self.kept: deque[tuple[int, int]] = deque(maxlen=64)  # (predicted, true label) awaiting feedback

    def post(self, kind: str, path: str, body: bytes) -> httpx.Response | None:
        """POST a JSON ``body`` to ``path`` as a user drawn at random, counted in ``sent`` as ``kind`` and the
        status (or the error); the answer, or ``None`` if none came."""
        headers = {"content-type": "application/json", CLIENT_HEADER: self.users[self.who.integers(len(self.users))]}
        try:
            answer = self.client.post(self.url + path, content=body, headers=headers)
        except httpx.HTTPError as error:
            self.sent[f"{kind} {type(error).__name__}"] += 1
            return None
        self.sent[f"{kind} {answer.status_code}"] += 1
        return answer

    def pick(self, batch: int, skewed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """``batch`` random images (of the skewed pool if ``skewed``) and their true labels, if known."""
        pool = self.images.skewed if skewed else np.arange(len(self.images.x))
        index = self.rng.choice(pool, batch)
        return self.images.x[index], None if self.images.labels is None else self.images.labels[index]

    def infer(self, batch: int, protocol: str, *, skewed: bool = False) -> None:
        """One inference request of ``batch`` images (``protocol`` "v1" or "v2"); its predictions are kept, with the
        true labels (or, for random inputs, the predictions themselves), for feedback."""
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
    """Whether an answer came and is a 200."""
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
