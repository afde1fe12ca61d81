"""telemetry: a training step's final metrics, pushed to a Prometheus Pushgateway when one is configured.

Set ``MLNT_PUSHGATEWAY=host:port`` (or a URL) and call, at the end of a successful step::

    push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.88, "student": 0.87}},
                                   "estimated_noise_rate": 0.49, "duration_seconds": 312.5})

The metrics (names, help and labels from ``monitoring.metrics``) go under job ``mlnt-pipeline`` with the grouping
key ``step``, replacing that step's previous push: ``mlnt_training_accuracy{step,split,model}``,
``mlnt_training_estimated_noise_rate``, ``mlnt_training_duration_seconds{step}``, ``mlnt_gate_passed`` and
``mlnt_training_last_success_timestamp_seconds`` (the time of the push). Without the variable nothing is sent; a push
that fails is a warning, never a failed step. Unknown keys, splits or models are a ``ValueError`` either way.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from monitoring import metrics as contract

PUSHGATEWAY_ENV = "MLNT_PUSHGATEWAY"
KEYS = ("accuracy", "estimated_noise_rate", "duration_seconds", "gate_passed")
log = logging.getLogger(__name__)


def push_training_metrics(step: str, metrics: dict, *, gateway: str | None = None, timeout: float = 5.0) -> bool:
    """Push ``metrics`` (keys: ``KEYS``; ``accuracy`` is ``{split: {model: value}}``) for ``step``; True if sent."""
    registry = training_registry(step, metrics)
    gateway = gateway or os.environ.get(PUSHGATEWAY_ENV)
    if not gateway or os.environ.get("RANK", "0") != "0":  # under torchrun, the main process speaks for all
        return False
    try:
        push_to_gateway(gateway, job=contract.PUSHGATEWAY_JOB, registry=registry, grouping_key={"step": step},
                        timeout=timeout)
    except OSError as exc:  # refused, unreachable, timed out, or an HTTP error status (urllib's errors)
        log.warning("telemetry: could not push the %s step's metrics to the Pushgateway at %s (%s); the step "
                    "itself succeeded", step, gateway, exc)
        return False
    return True


def reports(step: str, summarise: Callable[[dict], dict]) -> Callable:
    """Decorate a step's ``run`` so that each successful call pushes ``summarise(result)`` and its duration."""

    def decorate(run: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(run)
        def timed(*args, **kwargs) -> dict:
            started = time.monotonic()
            result = run(*args, **kwargs)
            push_training_metrics(step, {**summarise(result), "duration_seconds": time.monotonic() - started})
            return result
        return timed

    return decorate


def training_registry(step: str, metrics: dict) -> CollectorRegistry:
    """A registry holding ``metrics`` as the contract's gauges; ``ValueError`` for anything outside it."""
    unknown = sorted(set(metrics) - set(KEYS))
    if unknown:
        raise ValueError(f"telemetry: unknown metric keys {unknown}. Valid: {', '.join(KEYS)}")
    registry = CollectorRegistry()

    def gauge(metric: contract.Metric) -> Gauge:
        return Gauge(metric.name, metric.help, metric.labels, registry=registry)

    accuracy = gauge(contract.TRAINING_ACCURACY)
    for split, by_model in metrics.get("accuracy", {}).items():
        for model, value in by_model.items():
            _check(split, contract.SPLITS, "split")
            _check(model, contract.TRAINING_MODELS, "model")
            accuracy.labels(step=step, split=split, model=model).set(float(value))
    if "estimated_noise_rate" in metrics:
        gauge(contract.TRAINING_NOISE_RATE).set(float(metrics["estimated_noise_rate"]))
    if "duration_seconds" in metrics:
        gauge(contract.TRAINING_DURATION).labels(step=step).set(float(metrics["duration_seconds"]))
    if "gate_passed" in metrics:
        gauge(contract.GATE_PASSED).set(1.0 if metrics["gate_passed"] else 0.0)
    gauge(contract.TRAINING_LAST_SUCCESS).set(time.time())
    return registry


def _check(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"telemetry: unknown {what} {value!r}. Valid: {', '.join(valid)}")
