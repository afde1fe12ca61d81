"""Who sent a request, and how much feedback each client may send.

A client is an address (an IPv6 one is its /64: one subscriber holds a whole /64, so rotating addresses inside it
does not make more clients). By default it is the peer address of the connection (``scope["client"]``, set by
``serving.middleware.Guard`` for the request's task): headers are the client's own words and are not trusted.

Behind reverse proxies the peer is the last proxy, the same address for every request, and all traffic would be one
client. ``ClientIdentity(header, hops)`` (``--client-header x-forwarded-for --trusted-proxy-hops N``) makes the
client the address that the N-th trusted proxy, counted from the predictor, appended to that header. Every proxy
appends the address it received the request from on the right, so the N right-most entries are the words of our N
proxies and everything further left is the client's: the N-th entry from the right is the address the outermost
trusted proxy saw, and no entry left of it is ever read, so forged left-most entries change nothing. This holds only
if every request comes through those N proxies (in the cluster: the NetworkPolicy admits only the gateway's
namespaces; docs/serving.md, "Who is a client"). A request whose header is missing, has fewer than N entries or no
address in the N-th (a probe, ``kubectl port-forward``, a proxy configured otherwise) counts as its peer: counted in
``ClientIdentity.fallbacks`` by reason (``REASONS``), handed to the predictor's metric (``ClientIdentity.export``,
``mlnt_client_identity_fallbacks_total``) and logged once per reason.

gRPC requests carry no peer into KServe's data plane: they count as the one client ``grpc``, or, with
``--client-header``, as the address the same header in the call's metadata names (``serving.dataplane``).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextvars import ContextVar

from monitoring.metrics import FALLBACK_REASONS

log = logging.getLogger(__name__)

GRPC = "grpc"  # every gRPC request without a client header: KServe's data plane is not given the peer
CLIENT: ContextVar[str] = ContextVar("client", default=GRPC)
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
PORT = re.compile(r"[0-9]{1,5}")
# Why a request's client is its peer although a client header is configured: the header is missing, has fewer entries
# than the trusted hops, or no address at the trusted entry. The keys of ClientIdentity.fallbacks, a metric's labels
# (the contract's, which the rules and the dashboard are checked against).
REASONS = FALLBACK_REASONS


def address(text: str) -> str | None:
    """The client an address names: an IPv4 address, the /64 network of an IPv6 one (the IPv4 address of an
    IPv4-mapped one), a port after it dropped (``1.2.3.4:80``, ``[2001:db8::1]:80``); ``None`` when ``text`` is no
    address (``unknown``, a name, empty)."""
    host = text.strip()
    if host.startswith("["):  # [v6] or [v6]:port
        host, _, port = host[1:].partition("]")
        if port and not (port.startswith(":") and PORT.fullmatch(port[1:])):
            return None
    elif host.count(":") == 1:  # v4:port
        host, port = host.split(":")
        if not PORT.fullmatch(port):
            return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))  # a zone (%eth0) or not


def peer(scope: dict) -> str:
    """The client of an ASGI ``scope`` by its connection: the host of its peer address (``client``, an IPv6 one as
    its /64), or ``unknown`` when the server gives none."""
    client = scope.get("client")
    if not client:
        return "unknown"
    return address(str(client[0])) or str(client[0])


class ClientIdentity:
    """Who a request's client is: its peer (``header`` ``None``, the default), or the address the ``hops``-th
    trusted proxy appended to ``header`` (see the module docstring); ``fallbacks`` counts the requests that fell back
    to their peer, by reason (``REASONS``), and ``export`` hands each of them to a metric too."""

    def __init__(self, header: str | None = None, hops: int = 1):
        if header is not None and not HEADER_NAME.fullmatch(header):
            raise ValueError(f"client header: expected a header name (letters, digits and hyphens), found {header!r}")
        if hops < 1:
            raise ValueError(f"trusted proxy hops: expected at least 1, found {hops}")
        self.header, self.hops = (header.lower() if header else None), hops
        self.fallbacks: Counter[str] = Counter()
        self.exported: Callable[[str], None] | None = None

    def export(self, count: Callable[[str], None]) -> None:
        """Call ``count(reason)`` (one of ``REASONS``) for every request that falls back to its peer from now on,
        in place of the one given before: the predictor's ``mlnt_client_identity_fallbacks_total``."""
        self.exported = count

    def describe(self) -> str:
        """One sentence for the start-up log: how clients are told apart."""
        if self.header is None:
            return "clients are told apart by their connection's peer address (no --client-header)"
        return (f"clients are told apart by the address the trusted proxy {self.hops} hop(s) from the predictor "
                f"appended to {self.header} (--client-header, --trusted-proxy-hops): entry {self.hops} from the right")

    def of(self, scope: dict) -> str:
        """The client of an ASGI ``scope``: ``peer(scope)``, or with a header the address it names. The header's
        lines are joined in order, as HTTP defines a repeated list header."""
        if self.header is None:
            return peer(scope)
        name = self.header.encode("latin-1")  # ASGI header names are lower-case bytes
        lines = [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]
        return self.resolve(",".join(lines) if lines else None, peer(scope))

    def of_metadata(self, metadata: dict[str, str] | None) -> str:
        """The client of a gRPC call from its metadata (KServe's ``to_headers``, lower-case keys): ``GRPC``, or with
        a header the address it names (``GRPC`` when it names none)."""
        if self.header is None:
            return GRPC
        return self.resolve((metadata or {}).get(self.header), GRPC)

    def resolve(self, value: str | None, fallback: str) -> str:
        """The address entry ``hops`` from the right of the header's ``value`` names; ``fallback`` (the peer) when
        there is no header, fewer entries or no address there."""
        if value is None:
            return self.fall_back("missing", f"a request without {self.header}", fallback)
        entries = value.split(",")
        if len(entries) < self.hops:
            return self.fall_back("short", f"expected {self.header} with at least {self.hops} entries "
                                           f"(--trusted-proxy-hops), found {len(entries)}", fallback)
        client = address(entries[-self.hops])
        if client is None:
            return self.fall_back("malformed", f"expected an address as entry {self.hops} from the right of "
                                               f"{self.header}, found {entries[-self.hops].strip()[:64]!r}", fallback)
        return client

    def fall_back(self, reason: str, what: str, fallback: str) -> str:
        """Count one request that falls back to ``fallback`` in ``fallbacks`` and the exported metric; the first of
        each reason is logged."""
        self.fallbacks[reason] += 1
        if self.exported is not None:
            self.exported(reason)
        if self.fallbacks[reason] == 1:
            log.warning("client identity: %s: counted as its peer %s, as are all such requests (did it come through "
                        "the trusted proxies? logged once)", what, fallback)
        return fallback


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
