"""Who sent a request, and how much feedback each client may send.

A client is the peer address of the connection (``scope["client"]``), set by ``serving.middleware.Guard`` for the
request's task; forwarded-for headers are the client's own words and are not trusted. gRPC requests carry no peer
into KServe's data plane, so all of them count as the one client ``grpc``. Behind a proxy that does not keep the
address (a sidecar, an ingress without source-IP preservation), every REST request is one client too.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar

CLIENT: ContextVar[str] = ContextVar("client", default="grpc")


def peer(scope: dict) -> str:
    """The client of an ASGI ``scope``: the host of its peer address (``client``), or ``unknown`` when the server
    gives none."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimiter:
    """A token bucket per client: ``rate`` units a second, ``burst`` at most at once. The ``clients`` most recently
    seen are remembered; a client forgotten starts again with a full bucket."""

    def __init__(self, rate: float, burst: int, *, clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1 or clients < 1:
            raise ValueError(f"rate limiter: expected rate > 0, burst >= 1 and clients >= 1, found {rate}, {burst} "
                             f"and {clients}")
        self.rate, self.burst, self.clients, self.clock = rate, burst, clients, clock
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str, units: int) -> float:
        """Take ``units`` from ``client``'s bucket: 0.0 if they were there, else the seconds until they will be
        (``math.inf`` for more than ``burst``), and nothing is taken."""
        now = self.clock()
        tokens, at = self.buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0 if units <= tokens else math.inf if units > self.burst else (units - tokens) / self.rate
        self.buckets[client] = (tokens - units if wait == 0.0 else tokens, now)
        while len(self.buckets) > self.clients:
            self.buckets.popitem(last=False)
        return wait
