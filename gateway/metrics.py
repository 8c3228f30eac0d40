"""Prometheus metrics of the server, served over HTTP on their own port (prometheus-client).

The hot path never touches a prometheus-client object: counts are added per batch into numpy
arrays (``np.bincount`` of kinds and reasons, bucket counts of latency histograms) and a
custom collector turns them into metric families when Prometheus scrapes. Gauges (sessions,
ring depths) are read at scrape time from the objects that own them.

Every family, its type and HELP text are in ``METRICS`` (below); docs/operations.md tables
the same, and a test keeps the two equal. ``registry()`` adds prometheus-client's process and
platform collectors and ``matchcore_build_info``.
"""
from __future__ import annotations

import bisect
from typing import Callable, Iterable

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from matchcore.core.codes import CommandKind, RejectReason
from matchcore.protocol import SessionReason

__all__ = ["Histogram", "GatewayMetrics", "LATENCY_BUCKETS_S", "BATCH_BUCKETS", "METRICS", "build_labels"]

#: fine between 1 and 20 ms, where commits and acks lie (a percentile read from these buckets
#: is within a quarter of a millisecond or so there: matchcore-bench e2e reads them)
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.00125, 0.0015, 0.00175, 0.002, 0.0025,
                     0.003, 0.0035, 0.004, 0.005, 0.006, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03,
                     0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
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
        self.md_frames_made = 0     # market data frames the replica made (all subscribers share them)
        self.md_frames_sent = 0     # market data frames written to subscribers
        self.md_conflations = 0     # subscribers conflated (increments dropped, then a fresh snapshot)
        self.md_subscribers: Callable[[], int] = lambda: 0
        #: () -> (frames sent, conflations) of the subscribers the replica's thread writes to
        self.md_direct: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.batch_commands = Histogram(BATCH_BUCKETS)
        self.commit_latency_s = Histogram(LATENCY_BUCKETS_S)
        self.ack_latency_s = Histogram(LATENCY_BUCKETS_S)
        #: read at scrape time: () -> int
        self.connections: Callable[[], int] = lambda: 0
        self.sessions: Callable[[], int] = lambda: 0
        self.ring_depths: Callable[[], tuple[int, int]] = lambda: (0, 0)
        #: () -> {"pending_logins": n, "tls_handshakes": n, "refused_pending_logins": n, ...}
        self.door: Callable[[], dict[str, int]] = lambda: {}
        #: () -> {"released_seq", "lag_commands", "commit_age_s", "writer_retries", "order_view_lag_batches"}
        self.journal: Callable[[], dict[str, float]] = lambda: {}

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
        commands = _counter("matchcore_commands", labels=["kind"])
        for kind in CommandKind:
            commands.add_metric([kind.name], int(self.commands_by_kind[kind]))
        yield commands
        yield _by_reason("matchcore_engine_rejects", self.rejects_by_reason, RejectReason)
        yield _by_reason("matchcore_session_rejects", self.session_rejects_by_reason, SessionReason)
        yield _by_reason("matchcore_session_closes", self.session_closes_by_reason, SessionReason)
        sent = _counter("matchcore_events_sent", labels=["source"])
        for source, count in self.events_sent.items():
            sent.add_metric([source], count)
        yield sent
        yield _counter("matchcore_md_frames_made", value=self.md_frames_made)
        direct_sent, direct_conflations = self.md_direct()
        yield _counter("matchcore_md_frames_sent", value=self.md_frames_sent + direct_sent)
        yield _counter("matchcore_md_conflations", value=self.md_conflations + direct_conflations)
        yield _gauge("matchcore_md_subscribers", self.md_subscribers())
        yield _gauge("matchcore_connections", self.connections())
        yield _gauge("matchcore_sessions", self.sessions())
        yield from _door_families(self.door())
        depth = _gauge("matchcore_ring_depth_records", labels=["ring"])
        input_depth, output_depth = self.ring_depths()
        depth.add_metric(["input"], input_depth)
        depth.add_metric(["output"], output_depth)
        yield depth
        yield from self._journal_families()
        yield self.batch_commands.family("matchcore_journal_batch_commands", METRICS["matchcore_journal_batch_commands"][1])
        yield self.commit_latency_s.family("matchcore_commit_latency_seconds",
                                           METRICS["matchcore_commit_latency_seconds"][1])
        yield self.ack_latency_s.family("matchcore_ack_latency_seconds", METRICS["matchcore_ack_latency_seconds"][1])

    def _journal_families(self):
        journal = self.journal()
        yield _gauge("matchcore_released_seq", journal.get("released_seq", 0))
        yield _gauge("matchcore_journal_lag_commands", journal.get("lag_commands", 0))
        yield _gauge("matchcore_journal_commit_age_seconds", journal.get("commit_age_s", 0.0))
        yield _counter("matchcore_journal_writer_retries", value=journal.get("writer_retries", 0))
        yield _gauge("matchcore_order_view_lag_batches", journal.get("order_view_lag_batches", 0))
        yield _gauge("matchcore_session_commands_in_flight_max", journal.get("commands_in_flight_max_seen", 0))

    def registry(self) -> CollectorRegistry:
        """A registry of this collector, the process and platform collectors and build_info."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        registry.register(_BuildInfo())
        return registry


class _BuildInfo(Collector):
    def collect(self):
        family = _gauge("matchcore_build_info", labels=["version", "python", "numpy", "build"])
        family.add_metric(list(build_labels().values()), 1)
        yield family


def build_labels() -> dict[str, str]:
    """What ``matchcore_build_info`` says of the running build."""
    import importlib.metadata
    import platform

    from matchcore.core import _core

    try:
        version = importlib.metadata.version("matchcore")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"version": version, "python": platform.python_version(), "numpy": np.__version__,
            "build": "debug" if _core.DEBUG_BUILD else "release"}


#: Every metric family the server exports (counters without their ``_total``): name -> (type,
#: HELP text). The collectors take their texts from here and docs/operations.md tables the same
#: rows (tests/gateway/test_metrics_doc.py compares them). prometheus-client's own process_*
#: and python_* families come besides.
METRICS: dict[str, tuple[str, str]] = {
    "matchcore_build_info": ("gauge", "The running build (always 1): matchcore version, Python, numpy, release or debug core"),
    "matchcore_commands": ("counter", "Durable commands (journaled and released), by kind"),
    "matchcore_engine_rejects": ("counter", "Engine rejects (REJECTED and TRANSFER_REJECTED events), by reason"),
    "matchcore_session_rejects": ("counter", "SESSION_REJECT frames sent by the gateway, by reason"),
    "matchcore_session_closes": ("counter", "Connections ended, by reason"),
    "matchcore_events_sent": ("counter", "Event frames sent, by source: live, or replayed from memory or the journal"),
    "matchcore_md_frames_made": ("counter", "Market data frames made from released batches (the feed)"),
    "matchcore_md_frames_sent": ("counter", "Market data frames written to subscribers (increments; snapshots aside)"),
    "matchcore_md_conflations": ("counter", "Market data subscribers conflated: increments dropped until they read, then a fresh snapshot"),
    "matchcore_md_subscribers": ("gauge", "Sessions subscribed to market data"),
    "matchcore_connections": ("gauge", "Open connections of the trading port"),
    "matchcore_sessions": ("gauge", "Logged-in sessions"),
    "matchcore_pending_logins": ("gauge", "Connections not logged in yet"),
    "matchcore_tls_handshakes": ("gauge", "TLS handshakes under way"),
    "matchcore_connections_refused": ("counter", "Connections closed at once, before CHALLENGE, by the limit reached"),
    "matchcore_tls_handshakes_unfinished": ("counter", "TLS handshakes that failed or timed out"),
    "matchcore_status_http_refused": ("counter", "Metrics-port connections closed at once (over the limit)"),
    "matchcore_status_http_collections": ("counter", "Collections of the metrics text (at most one per metrics_cache_ms)"),
    "matchcore_ring_depth_records": ("gauge", "Records waiting in a ring of the core, by ring"),
    "matchcore_session_commands_in_flight_max": ("gauge", "The most commands one session has had read and not yet answered, since start (its credit window bounds it)"),
    "matchcore_released_seq": ("gauge", "Seq of the last command whose journal row is committed and released"),
    "matchcore_journal_lag_commands": ("gauge", "Commands the core applied that are not journaled and released yet"),
    "matchcore_journal_commit_age_seconds": ("gauge", "Seconds since the journal writer's last commit returned"),
    "matchcore_journal_writer_retries": ("counter", "Failed journal writes or connects, each retried"),
    "matchcore_order_view_lag_batches": ("gauge", "Released batches the replica (order status, queries, market data) has not applied yet"),
    "matchcore_journal_batch_commands": ("histogram", "Commands per journal row"),
    "matchcore_commit_latency_seconds": ("histogram", "Per journal row: from the writer's INSERT until PostgreSQL acknowledged its commit"),
    "matchcore_ack_latency_seconds": ("histogram", "Per command: from the gateway's stamp at decode to the release of its events (durable)"),
}


def _counter(name: str, *, labels: list[str] | None = None, value: float | None = None) -> CounterMetricFamily:
    kind, documentation = METRICS[name]
    assert kind == "counter", name
    return CounterMetricFamily(name, documentation, labels=labels, value=value)


def _gauge(name: str, value: float | None = None, *, labels: list[str] | None = None) -> GaugeMetricFamily:
    kind, documentation = METRICS[name]
    assert kind == "gauge", name
    return GaugeMetricFamily(name, documentation, labels=labels, value=value)


def _door_families(door: dict[str, int]):
    """The connection limits in front of login and of the metrics port."""
    yield _gauge("matchcore_pending_logins", door.get("pending_logins", 0))
    yield _gauge("matchcore_tls_handshakes", door.get("tls_handshakes", 0))
    refused = _counter("matchcore_connections_refused", labels=["reason"])
    refused.add_metric(["pending_logins"], door.get("refused_pending_logins", 0))
    refused.add_metric(["pending_logins_per_address"], door.get("refused_pending_logins_per_address", 0))
    yield refused
    yield _counter("matchcore_tls_handshakes_unfinished", value=door.get("tls_handshakes_unfinished", 0))
    yield _counter("matchcore_status_http_refused", value=door.get("status_http_refused", 0))
    yield _counter("matchcore_status_http_collections", value=door.get("status_http_collections", 0))


def _by_reason(name: str, counts: np.ndarray, enum) -> CounterMetricFamily:
    family = _counter(name, labels=["reason"])
    for member in enum:
        if member.value < len(counts) and (counts[member.value] or member.value):
            family.add_metric([member.name], int(counts[member.value]))
    return family
