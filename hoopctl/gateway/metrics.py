"""Prometheus metrics for the gateway, read from its state when scraped.

Nothing is counted on the statement path: each session already counts its
statements (the recording does) and its masked values; a scrape adds up the
live sessions and what ended sessions left in ``Stats``. Served over HTTP by
prometheus-client (``metrics.listen`` in the config); off when not configured.

With ``limits.workers`` > 1 each worker serves its own numbers on the next port
(worker 0 on the configured one, worker 1 on port + 1, ...).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

log = logging.getLogger(__name__)

# Upper bounds of the statement-duration buckets, in ms (the last bucket is +Inf).
BUCKETS_MS = (0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Durations:
    """A session's statement durations, bucketed as they end (two additions each)."""

    __slots__ = ("counts", "total_ms")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_MS) + 1)
        self.total_ms = 0.0

    def add(self, ms: float) -> None:
        self.counts[bisect_left(BUCKETS_MS, ms)] += 1
        self.total_ms += ms

    def merge(self, other: Durations) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total_ms += other.total_ms


@dataclass
class Stats:
    """Counts kept by the gateway (on its event loop) for what no live session holds."""

    sessions: Counter = field(default_factory=Counter)  # resource -> sessions opened
    statements: Counter = field(default_factory=Counter)  # (resource, verdict) -> ended sessions' count
    masked: Counter = field(default_factory=Counter)  # resource -> ended sessions' masked values
    refused_logins: Counter = field(default_factory=Counter)  # SQLSTATE -> logins refused
    durations: dict = field(default_factory=dict)  # resource -> Durations of ended sessions
    # Held while a session moves from the live set into these counts, and while a
    # scrape copies both: a session ending mid-scrape is counted once, not twice.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def session_ended(self, session: Any) -> None:
        resource = session.ctx.resource
        allowed, refused = _statements(session)
        self.statements[(resource, "allowed")] += allowed
        self.statements[(resource, "refused")] += refused
        self.masked[resource] += session.masked_values
        self.durations.setdefault(resource, Durations()).merge(session.durations)


def _statements(session: Any) -> tuple[int, int]:
    rec = session.ctx.recording
    total, refused = getattr(rec, "statements", 0), getattr(rec, "refused", 0)
    return total - refused, refused


class GatewayCollector:
    """Reads a running Gateway at scrape time (from the HTTP server's thread: it only
    copies containers, which the GIL makes atomic, and reads numbers)."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gw = self.gateway
        stats: Stats = gw.stats
        with stats.lock:
            live = list(gw.sessions)
            counts = Counter(dict(stats.statements))
            masked_counts = Counter(dict(stats.masked))
            opened_counts = dict(stats.sessions)
            durations: dict[str, Durations] = {}
            for r, d in stats.durations.items():
                durations.setdefault(r, Durations()).merge(d)
        resources = sorted(set(gw.config.resources) | {s.ctx.resource for s in live})

        active = GaugeMetricFamily("hoopctl_gateway_sessions", "Sessions open now", labels=["resource"])
        held = GaugeMetricFamily(
            "hoopctl_gateway_sessions_held",
            "Sessions with a statement waiting for a just-in-time approval",
            labels=["resource"],
        )
        opened = CounterMetricFamily(
            "hoopctl_gateway_sessions", "Sessions opened since the gateway started", labels=["resource"]
        )
        statements = CounterMetricFamily(
            "hoopctl_gateway_statements",
            "Statements judged, by verdict (refused: outside the caller's scope)",
            labels=["resource", "verdict"],
        )
        masked = CounterMetricFamily(
            "hoopctl_gateway_masked_values", "Values masked in results", labels=["resource"]
        )
        for s in live:
            allowed, refused = _statements(s)
            counts[(s.ctx.resource, "allowed")] += allowed
            counts[(s.ctx.resource, "refused")] += refused
            masked_counts[s.ctx.resource] += s.masked_values
            durations.setdefault(s.ctx.resource, Durations()).merge(s.durations)
        for r in resources:
            active.add_metric([r], sum(1 for s in live if s.ctx.resource == r))
            held.add_metric(
                [r], sum(1 for s in live if s.ctx.resource == r and s.held and s.awaiting is None)
            )
            opened.add_metric([r], opened_counts.get(r, 0))
            for verdict in ("allowed", "refused"):
                statements.add_metric([r, verdict], counts[(r, verdict)])
            masked.add_metric([r], masked_counts[r])
        yield from (active, held, opened, statements, masked)

        seconds = HistogramMetricFamily(
            "hoopctl_gateway_statement_seconds",
            "Time from forwarding a statement to its completion (the database's time included)",
            labels=["resource"],
        )
        for r in resources:
            d = durations.get(r, Durations())
            cumulative, buckets = 0, []
            for bound, n in zip((*BUCKETS_MS, float("inf")), d.counts, strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound / 1000), cumulative))
            seconds.add_metric([r], buckets, sum_value=d.total_ms / 1000)
        yield seconds

        logins = CounterMetricFamily(
            "hoopctl_gateway_logins_refused",
            "Connections refused before a session started, by SQLSTATE (28P01: bad credential)",
            labels=["sqlstate"],
        )
        for code, n in sorted(dict(stats.refused_logins).items()):
            logins.add_metric([code], n)
        yield logins

        catalog = GaugeMetricFamily(
            "hoopctl_gateway_catalog_up",
            "0 while the catalog of a resource is unreachable (masking withholds rows meanwhile)",
            labels=["resource"],
        )
        for name, cat in sorted(dict(gw._catalogs).items()):
            catalog.add_metric([name], 1 if cat.available() else 0)
        yield catalog

        recorder = gw.recorder
        yield GaugeMetricFamily(
            "hoopctl_gateway_recording_up",
            "0 once the recordings directory or journal failed: new sessions are refused",
            value=0 if getattr(recorder, "failed", False) else 1,
        )


def serve_metrics(gateway: Any, host: str, port: int) -> Any:
    """Start the HTTP endpoint in a thread; returns the server (``.shutdown()`` stops it)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server
