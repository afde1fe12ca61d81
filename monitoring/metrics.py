"""The metric contract: every metric the predictor exports and the training steps push, declared once.

The predictor creates its collectors from these entries, for example::

    from prometheus_client import Counter, Histogram
    from monitoring.metrics import REQUESTS, REQUEST_DURATION

    requests = Counter(REQUESTS.name, REQUESTS.help, REQUESTS.labels, registry=registry)
    latency = Histogram(REQUEST_DURATION.name, REQUEST_DURATION.help, REQUEST_DURATION.labels,
                        buckets=REQUEST_DURATION.buckets, registry=registry)

The rules and the dashboard are checked against ``SERIES``, each metric's ``labels`` (with ``TARGET_LABELS``, and
``PUSHED_LABELS`` for the training metrics) and the label values of ``LABEL_VALUES`` (``monitoring.check``). Nothing
here touches prometheus_client: importing this module creates no collectors. ``KSERVE`` lists the metrics KServe
itself exports beside ours (``kserve/metrics.py``): the predictor does not create them, but the rules and the
dashboard read them, and the serving tests check that KServe still exports them under these names, types and labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

PUSHGATEWAY_JOB = "mlnt-pipeline"  # the job label the training steps push under
# The predictor's scrape job, as MlntPredictorDown selects it: the PodMonitor's job "<namespace>/<name>"
# (mlnt/mlnt-classifier, or mlnt/mlnt-predictor) or a static scrape config's job named mlnt-predictor.
PREDICTOR_JOB_REGEX = ".*mlnt-(predictor|classifier).*"

# Labels Prometheus adds to every scraped series: the target's job and instance, and those prometheus-operator sets
# for a PodMonitor's targets (k8s/base/monitoring/podmonitor.yaml).
TARGET_LABELS = ("job", "instance", "namespace", "pod", "container", "endpoint")
# Labels every training metric carries besides its own: the Pushgateway push's job and grouping key
# (components.common.telemetry pushes under job=PUSHGATEWAY_JOB, grouping_key={"pipeline": ..., "step": step}).
PUSHED_LABELS = ("job", "pipeline", "step")
# The Pushgateway's own scrape job, as MlntPushgatewayDown selects it: the prometheus-pushgateway chart's
# ServiceMonitor labels its target with the Service's name (prometheus-pushgateway); a static job: pushgateway.
PUSHGATEWAY_SCRAPE_JOB_REGEX = ".*pushgateway.*"

PROTOCOLS = ("v1", "v2", "grpc-v2")  # KServe's names: v1 and v2 over REST, v2 over gRPC
OUTCOMES = ("ok", "client_error", "server_error")
SPLITS = ("test", "val")
TRAINING_MODELS = ("teacher", "student", "baseline")
FALLBACK_REASONS = ("missing", "short", "malformed")  # serving.clients.REASONS: why a client header was not used

# Up to a minute: a quantile beyond the top finite bucket reads as that bucket's bound, so a 10 s top bucket showed
# a stalled predictor's 40 s requests as 10 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# prometheus_client's default buckets, which KServe's histograms use
KSERVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


@dataclass(frozen=True)
class Metric:
    """One metric: its full exposed name (counters end in ``_total``), type, help text and label names."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # histograms only

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names Prometheus stores for this metric."""
        if self.kind == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.name,)


# The predictor, scraped at /metrics; `model` is the served model's name.
REQUESTS = Metric("mlnt_requests_total", "counter", "Inference requests, by protocol and outcome.",
                  ("model", "protocol", "outcome"))
# By outcome, so that the latency rules can leave out client errors: refusals answered in a millisecond pulled a
# slow predictor's p95 under the alert's threshold.
REQUEST_DURATION = Metric("mlnt_request_duration_seconds", "histogram",
                          "Inference request latency in seconds, by protocol and outcome.",
                          ("model", "protocol", "outcome"), LATENCY_BUCKETS)
IN_FLIGHT = Metric("mlnt_requests_in_flight", "gauge", "Inference requests being answered now, by protocol.",
                   ("model", "protocol"))
BATCH_SIZE = Metric("mlnt_batch_size", "histogram", "Images per inference request.", ("model",), BATCH_SIZE_BUCKETS)
PREDICTIONS = Metric("mlnt_predictions_total", "counter", "Predictions, by predicted class name.", ("model", "class"))
PREDICTION_CONFIDENCE = Metric("mlnt_prediction_confidence", "histogram", "Top-1 probability of each prediction.",
                               ("model",), CONFIDENCE_BUCKETS)
PREDICTION_DRIFT = Metric("mlnt_prediction_drift", "gauge",
                          "Total-variation distance (0..1) between the predicted-class distribution over the recent "
                          "window (an identical image counted once, one client at most --drift-client-share of it, "
                          "empty slots as the reference) and the reference: the model's predicted-class distribution "
                          "on the test set, from the model card.", ("model",))
FEEDBACK = Metric("mlnt_feedback_total", "counter", "Labels posted back by users.", ("model",))
FEEDBACK_DISAGREEMENTS = Metric("mlnt_feedback_disagreements_total", "counter",
                                "Feedback labels that differ from the prediction.", ("model",))
MODEL_INFO = Metric("mlnt_model_info", "gauge", "The served model (always 1).", ("model", "version"))
# `reason` is one of FALLBACK_REASONS; counted only with --client-header.
CLIENT_FALLBACKS = Metric("mlnt_client_identity_fallbacks_total", "counter",
                          "Requests counted as their connection's peer although --client-header is set, by reason: "
                          "the header missing, fewer entries than --trusted-proxy-hops (short) or no address at the "
                          "trusted entry (malformed).", ("model", "reason"))

# KServe's own, scraped at the same /metrics: the time each stage of KServe's Model.__call__ takes, per request
# (gRPC and REST, v1 and v2, rejected requests included: a preprocess that raises is timed too). `model_name` is the
# served model's name, the same value as our `model`.
KSERVE_STAGES = ("preprocess", "predict", "postprocess")
PREPROCESS_DURATION = Metric("request_preprocess_seconds", "histogram", "pre-process request latency",
                             ("model_name",), KSERVE_BUCKETS)
PREDICT_DURATION = Metric("request_predict_seconds", "histogram", "predict request latency", ("model_name",),
                          KSERVE_BUCKETS)
POSTPROCESS_DURATION = Metric("request_postprocess_seconds", "histogram", "post-process request latency",
                              ("model_name",), KSERVE_BUCKETS)

# The training steps, pushed to a Pushgateway under job=PUSHGATEWAY_JOB; `step` is the pipeline step name.
TRAINING_ACCURACY = Metric("mlnt_training_accuracy", "gauge", "Accuracy of a trained network on a split.",
                           ("step", "split", "model"))
TRAINING_NOISE_RATE = Metric("mlnt_training_estimated_noise_rate", "gauge", "Estimated label-noise rate.")
TRAINING_DURATION = Metric("mlnt_training_duration_seconds", "gauge", "Wall-clock duration of a step.", ("step",))
GATE_PASSED = Metric("mlnt_gate_passed", "gauge", "1 if the last run passed the release gate, 0 if it failed.")
TRAINING_LAST_SUCCESS = Metric("mlnt_training_last_success_timestamp_seconds", "gauge",
                               "Unix time of the last pipeline run whose model passed the release gate.")

PREDICTOR: tuple[Metric, ...] = (REQUESTS, REQUEST_DURATION, IN_FLIGHT, BATCH_SIZE, PREDICTIONS, PREDICTION_CONFIDENCE,
                                 PREDICTION_DRIFT, FEEDBACK, FEEDBACK_DISAGREEMENTS, MODEL_INFO, CLIENT_FALLBACKS)
TRAINING: tuple[Metric, ...] = (TRAINING_ACCURACY, TRAINING_NOISE_RATE, TRAINING_DURATION, GATE_PASSED,
                                TRAINING_LAST_SUCCESS)
KSERVE: tuple[Metric, ...] = (PREPROCESS_DURATION, PREDICT_DURATION, POSTPROCESS_DURATION)  # in KSERVE_STAGES order
METRICS: tuple[Metric, ...] = PREDICTOR + KSERVE + TRAINING
BY_NAME: dict[str, Metric] = {metric.name: metric for metric in METRICS}
SERIES: frozenset[str] = frozenset(series for metric in METRICS for series in metric.series)
# The values a label takes, by metric and label, where the code fixes them: a query that selects another value
# (outcome="server-error") never matches anything. Labels not listed here (model, class, step, ...) take any value.
LABEL_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    REQUESTS.name: {"protocol": PROTOCOLS, "outcome": OUTCOMES},
    REQUEST_DURATION.name: {"protocol": PROTOCOLS, "outcome": OUTCOMES},
    IN_FLIGHT.name: {"protocol": PROTOCOLS},
    CLIENT_FALLBACKS.name: {"reason": FALLBACK_REASONS},
    **{metric.name: {"job": (PUSHGATEWAY_JOB,)} for metric in TRAINING},
    TRAINING_ACCURACY.name: {"job": (PUSHGATEWAY_JOB,), "split": SPLITS, "model": TRAINING_MODELS},
}
