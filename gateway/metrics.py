"""Prometheus metrics of the server, served over HTTP on their own port (prometheus-client).

The hot path never touches a prometheus-client object: counts are added per batch into numpy
arrays (``np.bincount`` of kinds and reasons, bucket counts of latency histograms) and a
custom collector turns them into metric families when Prometheus scrapes. Gauges (sessions,
ring depths) are read at scrape time from the objects that own them.

Metric names (all prefixed ``matchcore_``):

- ``commands_total{kind}``: durable commands, by CommandKind
- ``engine_rejects_total{reason}``: REJECTED and TRANSFER_REJECTED events, by RejectReason
- ``session_rejects_total{reason}``: SESSION_REJECT sent by the gateway, by SessionReason
- ``session_closes_total{reason}``: connections ended, by SessionReason
- ``events_sent_total{source}``: event frames sent: live, or replayed from memory or journal
- ``connections``, ``sessions``: open connections, logged-in sessions
- ``pending_logins``: connections not logged in yet; ``tls_handshakes``: TLS handshakes
  under way (accepted, not yet handed to the gateway)
- ``connections_refused_total{reason}``: connections closed at once, before any CHALLENGE:
  ``pending_logins`` (all in use) or ``pending_logins_per_address`` (that address's in use)
- ``tls_handshakes_unfinished_total``: TLS handshakes that failed or timed out
- ``status_http_refused_total``: metrics-port connections closed at once (over the limit);
  ``status_http_collections_total``: times the metrics text was made (at most one per
  ``metrics_cache_ms``, whatever the scrape rate)
- ``ring_depth_records{ring}``: input and output ring of the core
- ``journal_batch_commands``: histogram of commands per journal row
- ``commit_latency_seconds``: histogram, per journal row: the writer's INSERT until PostgreSQL
  acknowledged the commit (DurableCore's on_commit hook)
- ``ack_latency_seconds``: histogram, per command: from the gateway stamp (decode) to the
  release of its events to the sessions (end-to-end inside the server, durable)
"""
from __future__ import annotations

import bisect
from typing import Callable, Iterable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from matchcore.core.codes import CommandKind, RejectReason
from matchcore.protocol import SessionReason

__all__ = ["Histogram", "GatewayMetrics", "LATENCY_BUCKETS_S", "BATCH_BUCKETS"]

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02,
                     0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 4, 16, 64, 256, 1024, 2048, 4096, 8192, 16384)


class Histogram:
    """Cumulative-at-export bucket counts for many observations at once."""

    __slots__ = ("bounds", "_bound_tuple", "counts", "total", "observed")

    def __init__(self, bounds: Iterable[float]) -> None:
        self._bound_tuple = tuple(float(bound) for bound in bounds)  # for one value: bisect
        self.bounds = np.asarray(self._bound_tuple, dtype=np.float64)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last: +Inf
        self.total = 0.0
        self.observed = 0

    def observe_many(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        buckets = np.searchsorted(self.bounds, values, side="left")
        self.counts += np.bincount(buckets, minlength=len(self.counts))
        self.total += float(values.sum())
        self.observed += len(values)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bound_tuple, value)] += 1
        self.total += value
        self.observed += 1

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts)
        buckets = [(_bound_text(b), int(c)) for b, c in zip(self.bounds, cumulative[:-1])]
        buckets.append(("+Inf", int(cumulative[-1])))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


def _bound_text(bound: float) -> str:
    return repr(float(bound))


class GatewayMetrics(Collector):
    """The server's counters and histograms; register with a CollectorRegistry."""

    def __init__(self) -> None:
        self.commands_by_kind = np.zeros(64, dtype=np.int64)
        self.rejects_by_reason = np.zeros(1 << 16, dtype=np.int64)
        self.session_rejects_by_reason = np.zeros(256, dtype=np.int64)
        self.session_closes_by_reason = np.zeros(256, dtype=np.int64)
        self.events_sent = {"live": 0, "memory": 0, "journal": 0}
        self.batch_commands = Histogram(BATCH_BUCKETS)
        self.commit_latency_s = Histogram(LATENCY_BUCKETS_S)
        self.ack_latency_s = Histogram(LATENCY_BUCKETS_S)
        #: read at scrape time: () -> int
        self.connections: Callable[[], int] = lambda: 0
        self.sessions: Callable[[], int] = lambda: 0
        self.ring_depths: Callable[[], tuple[int, int]] = lambda: (0, 0)
        #: () -> {"pending_logins": n, "tls_handshakes": n, "refused_pending_logins": n, ...}
        self.door: Callable[[], dict[str, int]] = lambda: {}

    # ------------------------------------------------------------------ recording

    def batch_released(self, commands: np.ndarray, events: np.ndarray, now_ns: int) -> None:
        """One durable journal row: counts by kind and reason, sizes and latencies."""
        kinds = np.bincount(commands["kind"])[:64]
        self.commands_by_kind[:len(kinds)] += kinds
        rejected = events["reason"][(events["kind"] == 65) | (events["kind"] == 70)]
        if len(rejected):
            reasons = np.bincount(rejected)
            self.rejects_by_reason[:len(reasons)] += reasons
        self.batch_commands.observe(len(commands))
        stamps = commands["timestamp_ns"]
        self.ack_latency_s.observe_many(np.maximum(now_ns - stamps, 0) / 1e9)

    def session_reject(self, reason: int, count: int = 1) -> None:
        self.session_rejects_by_reason[reason & 0xFF] += count

    def session_closed(self, reason: int) -> None:
        self.session_closes_by_reason[reason & 0xFF] += 1

    # ------------------------------------------------------------------ export

    def collect(self):
        commands = CounterMetricFamily("matchcore_commands", "Durable commands, by kind", labels=["kind"])
        for kind in CommandKind:
            commands.add_metric([kind.name], int(self.commands_by_kind[kind]))
        yield commands
        yield _by_reason("matchcore_engine_rejects", "Engine rejects (REJECTED, TRANSFER_REJECTED), by reason",
                         self.rejects_by_reason, RejectReason)
        yield _by_reason("matchcore_session_rejects", "SESSION_REJECT sent by the gateway, by reason",
                         self.session_rejects_by_reason, SessionReason)
        yield _by_reason("matchcore_session_closes", "Connections ended, by reason",
                         self.session_closes_by_reason, SessionReason)
        sent = CounterMetricFamily("matchcore_events_sent", "Event frames sent, by source", labels=["source"])
        for source, count in self.events_sent.items():
            sent.add_metric([source], count)
        yield sent
        yield GaugeMetricFamily("matchcore_connections", "Open connections", value=self.connections())
        yield GaugeMetricFamily("matchcore_sessions", "Logged-in sessions", value=self.sessions())
        yield from _door_families(self.door())
        depth = GaugeMetricFamily("matchcore_ring_depth_records", "Records waiting in a ring of the core",
                                  labels=["ring"])
        input_depth, output_depth = self.ring_depths()
        depth.add_metric(["input"], input_depth)
        depth.add_metric(["output"], output_depth)
        yield depth
        yield self.batch_commands.family("matchcore_journal_batch_commands", "Commands per journal row")
        yield self.commit_latency_s.family(
            "matchcore_commit_latency_seconds", "Journal row: the writer's INSERT until its commit returned")
        yield self.ack_latency_s.family(
            "matchcore_ack_latency_seconds", "Command: gateway stamp to the release of its events (durable)")

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return registry


def _door_families(door: dict[str, int]):
    """The connection limits in front of login and of the metrics port."""
    yield GaugeMetricFamily("matchcore_pending_logins", "Connections not logged in yet",
                            value=door.get("pending_logins", 0))
    yield GaugeMetricFamily("matchcore_tls_handshakes", "TLS handshakes under way",
                            value=door.get("tls_handshakes", 0))
    refused = CounterMetricFamily("matchcore_connections_refused", "Connections closed at once, before "
                                  "CHALLENGE, by the limit reached", labels=["reason"])
    refused.add_metric(["pending_logins"], door.get("refused_pending_logins", 0))
    refused.add_metric(["pending_logins_per_address"], door.get("refused_pending_logins_per_address", 0))
    yield refused
    yield CounterMetricFamily("matchcore_tls_handshakes_unfinished", "TLS handshakes that failed or timed out",
                              value=door.get("tls_handshakes_unfinished", 0))
    yield CounterMetricFamily("matchcore_status_http_refused", "Metrics-port connections closed at once",
                              value=door.get("status_http_refused", 0))
    yield CounterMetricFamily("matchcore_status_http_collections", "Collections of the metrics text",
                              value=door.get("status_http_collections", 0))


def _by_reason(name: str, documentation: str, counts: np.ndarray, enum) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for member in enum:
        if member.value < len(counts) and (counts[member.value] or member.value):
            family.add_metric([member.name], int(counts[member.value]))
    return family
