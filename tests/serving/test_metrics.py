"""The predictor's collectors (``serving.metrics``) on their own."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry

from serving.drift import DriftWindow
from serving.metrics import PredictorMetrics


def test_a_confidence_that_is_not_finite_is_not_observed():
    """The model refuses NaN probabilities before they are counted; should one get here all the same, it must not
    make the confidence sum NaN for the life of the process (MlntLowConfidence reads sum / count)."""
    registry = CollectorRegistry()
    metrics = PredictorMetrics("m", "v1", ("a", "b"), DriftWindow([0.5, 0.5], 4), registry=registry)
    metrics.predicted(np.array([[0.25, 0.75], [np.nan, np.nan], [np.inf, 0.0]], np.float32))

    def confidence(part: str) -> float:
        return registry.get_sample_value(f"mlnt_prediction_confidence_{part}", {"model": "m"})

    assert (confidence("sum"), confidence("count")) == (0.75, 1)
