"""Prediction drift: how far the classes predicted recently are from the classes the model was trained on."""

from __future__ import annotations

from collections import deque

import numpy as np


class DriftWindow:
    """The predicted classes of the most recent ``size`` images and their total-variation distance to
    ``reference`` (the training labels' class shares): half the L1 distance, 0 = same shares, 1 = disjoint."""

    def __init__(self, reference: tuple[float, ...] | list[float], size: int = 1000):
        if size < 1:
            raise ValueError(f"drift window: expected at least 1 prediction, found {size}")
        self.reference = np.asarray(reference, dtype=np.float64)
        self.recent: deque[int] = deque(maxlen=size)
        self.counts = np.zeros(len(self.reference), dtype=np.int64)

    def add(self, classes: np.ndarray | list[int]) -> float:
        """Slide the window over ``classes`` (class indices) and return the distance."""
        for c in classes:
            if len(self.recent) == self.recent.maxlen:
                self.counts[self.recent[0]] -= 1
            self.recent.append(int(c))
            self.counts[int(c)] += 1
        return self.distance()

    def distance(self) -> float:
        if not self.recent:
            return 0.0
        return float(0.5 * np.abs(self.counts / len(self.recent) - self.reference).sum())
