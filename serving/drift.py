"""Prediction drift: how far the classes predicted recently are from the classes the model was trained on, measured
on a window that no one client can fill.

The window holds the predicted classes of the most recent ``size`` images, with three rules against a client that
wants to pin the gauge (or hide a real shift) by sending the same images, or many images, itself:

* one client holds at most ``client_share`` of the window's slots: its new predictions replace its own oldest;
* an image already in the window (the same normalised tensor, by digest) is counted once;
* a slot not yet filled counts as the reference distribution (the model's own predicted shares on the test set),
  so the distance is ``filled / size x TV(window, reference)``: a client alone, or a window still filling, moves
  it by at most the share of the slots it holds.

So with the default share 0.1 one client moves the gauge by at most 0.1, under the 0.2 of the drift alert, while a
shift in the whole population moves it all the way. Who a client is decides both (``serving.clients``): behind
reverse proxies every connection comes from the last proxy, so the predictor must be told which header the proxies
append the client's address to (``--client-header``, ``--trusted-proxy-hops``), or all traffic is one client and
the gauge never passes the share.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque

import numpy as np


class DriftWindow:
    """The recent predictions and their total-variation distance to ``reference`` (the model's predicted class
    shares on the test set, from its card): half the L1 distance, 0 = same shares, 1 = disjoint; a window not yet
    full is completed with ``reference``."""

    def __init__(self, reference: tuple[float, ...] | list[float], size: int = 1000, *, client_share: float = 1.0):
        if size < 1:
            raise ValueError(f"drift window: expected at least 1 prediction, found {size}")
        if not 0 < client_share <= 1:
            raise ValueError(f"drift window: expected a client share in (0, 1], found {client_share}")
        self.reference = np.asarray(reference, dtype=np.float64)
        self.size, self.cap = size, max(1, math.floor(client_share * size))
        self.entries: OrderedDict[int, tuple[str, bytes | None, int]] = OrderedDict()  # serial -> client, digest, class
        self.by_client: dict[str, deque[int]] = {}  # each client's serials, oldest first
        self.digests: dict[bytes, int] = {}
        self.counts = np.zeros(len(self.reference), dtype=np.int64)
        self.serial = 0

    def add(self, classes: np.ndarray | list[int], *, client: str = "",
            digests: list[bytes] | None = None) -> float:
        """Slide the window over ``classes`` (class indices) predicted for ``client``; ``digests`` identify the
        images, so that one already in the window is not counted again. Returns the distance."""
        for k, c in enumerate(classes):
            digest = None if digests is None else digests[k]
            if digest is not None and digest in self.digests:
                continue
            mine = self.by_client.get(client)
            if mine is not None and len(mine) >= self.cap:
                self._evict(mine[0])
            elif len(self.entries) >= self.size:
                self._evict(next(iter(self.entries)))
            self.serial += 1
            self.entries[self.serial] = (client, digest, int(c))
            self.by_client.setdefault(client, deque()).append(self.serial)
            if digest is not None:
                self.digests[digest] = self.serial
            self.counts[int(c)] += 1
        return self.distance()

    def _evict(self, serial: int) -> None:
        """Drop one entry: the oldest of the window, or its client's oldest (the head of that client's queue)."""
        client, digest, c = self.entries.pop(serial)
        queue = self.by_client[client]
        queue.popleft()
        if not queue:
            del self.by_client[client]
        if digest is not None:
            del self.digests[digest]
        self.counts[c] -= 1

    def distance(self) -> float:
        """The window's total-variation distance to ``reference``, its empty slots counted as the reference: half the
        sum of ``|counts / size - filled / size * reference|``."""
        filled = len(self.entries)
        return float(0.5 * np.abs(self.counts / self.size - filled / self.size * self.reference).sum())
