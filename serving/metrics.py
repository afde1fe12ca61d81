"""The predictor's Prometheus collectors, made from the contract in ``monitoring.metrics`` (names, help, labels,
buckets declared once there), registered in prometheus_client's default registry so that KServe's ``/metrics``
shows them beside its own."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from monitoring import metrics as contract
from serving.clients import REASONS
from serving.drift import DriftWindow


def collector(metric: contract.Metric, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    """The prometheus_client Counter, Gauge or Histogram that the contract's ``metric`` declares (name, help, labels,
    buckets), registered in ``registry``."""
    kinds = {"counter": Counter, "gauge": Gauge, "histogram": Histogram}
    extra = {"buckets": metric.buckets} if metric.kind == "histogram" else {}
    return kinds[metric.kind](metric.name, metric.help, metric.labels, registry=registry, **extra)


class PredictorMetrics:
    """Every predictor metric for one served model; series that are counted later start at zero."""

    def __init__(self, model: str, version: str, class_names: tuple[str, ...], drift: DriftWindow,
                 registry: CollectorRegistry = REGISTRY):
        self.model, self.class_names, self.drift = model, class_names, drift
        made = {m.name: collector(m, registry) for m in contract.PREDICTOR}
        self.requests, self.duration = made[contract.REQUESTS.name], made[contract.REQUEST_DURATION.name]
        self.in_flight_gauge = made[contract.IN_FLIGHT.name]
        self.batch_size, self.predictions = made[contract.BATCH_SIZE.name], made[contract.PREDICTIONS.name]
        self.confidence = made[contract.PREDICTION_CONFIDENCE.name]
        self.drift_gauge = made[contract.PREDICTION_DRIFT.name]
        self.feedback, self.disagreements = made[contract.FEEDBACK.name], made[contract.FEEDBACK_DISAGREEMENTS.name]
        made[contract.MODEL_INFO.name].labels(model=model, version=version).set(1)
        self.fallbacks = made[contract.CLIENT_FALLBACKS.name]
        for reason in REASONS:
            self.fallbacks.labels(model=model, reason=reason)
        for protocol in contract.PROTOCOLS:
            self.in_flight_gauge.labels(model=model, protocol=protocol)
            for outcome in contract.OUTCOMES:
                self.requests.labels(model=model, protocol=protocol, outcome=outcome)
                self.duration.labels(model=model, protocol=protocol, outcome=outcome)
        for name in class_names:
            self.predictions.labels(model=model, **{"class": name})
        for per_model in (self.batch_size, self.confidence, self.feedback, self.disagreements):
            per_model.labels(model=model)
        self.drift_gauge.labels(model=model).set(drift.distance())

    def request(self, protocol: str, status: int, seconds: float) -> None:
        """One request answered with HTTP ``status``."""
        self.answered(protocol, "ok" if status < 400 else "client_error" if status < 500 else "server_error", seconds)

    def answered(self, protocol: str, outcome: str, seconds: float) -> None:
        """One request with its outcome (``contract.OUTCOMES``); gRPC has no HTTP status to derive it from."""
        self.requests.labels(model=self.model, protocol=protocol, outcome=outcome).inc()
        self.duration.labels(model=self.model, protocol=protocol, outcome=outcome).observe(seconds)

    def in_flight(self, protocol: str):
        """A context manager that counts one ``protocol`` request in ``mlnt_requests_in_flight`` while it runs."""
        return self.in_flight_gauge.labels(model=self.model, protocol=protocol).track_inprogress()

    def predicted(self, probabilities: np.ndarray, *, client: str = "", digests: list[bytes] | None = None) -> None:
        """Batch size, predicted classes, top-1 confidence (finite ones only) and drift for one batch ``[N, K]`` from
        ``client`` (``digests`` identify its images: the drift window counts an image once, ``serving.drift``)."""
        top = probabilities.argmax(axis=1)
        self.batch_size.labels(model=self.model).observe(len(top))
        for index, count in zip(*np.unique(top, return_counts=True), strict=True):
            self.predictions.labels(model=self.model, **{"class": self.class_names[index]}).inc(int(count))
        confidence = self.confidence.labels(model=self.model)
        for p in probabilities.max(axis=1):
            if math.isfinite(p):  # one NaN would make the sum NaN for good (the model refuses them before this)
                confidence.observe(float(p))
        self.drift_gauge.labels(model=self.model).set(self.drift.add(top, client=client, digests=digests))

    def fed_back(self, received: int, disagreements: int) -> None:
        """Count ``received`` feedback labels and the ``disagreements`` among them."""
        self.feedback.labels(model=self.model).inc(received)
        self.disagreements.labels(model=self.model).inc(disagreements)

    def fell_back(self, reason: str) -> None:
        """One request whose client is its peer although a client header is set, for ``reason`` (one of
        ``serving.clients.REASONS``; ``ClientIdentity.export``)."""
        self.fallbacks.labels(model=self.model, reason=reason).inc()
