"""The e2e bench reads the server's own histograms back from its Prometheus text: the share of
journal rows committed, and of commands released, within 1/2/5/10 ms, their p50/p99 as
Prometheus's histogram_quantile reads them, commands a row, and all of it between two scrapes."""
from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from matchcore.bench.e2e_bench import histogram_quantile, server_breakdown
from matchcore.gateway.metrics import GatewayMetrics


def test_breakdown_of_the_servers_histograms() -> None:
    metrics = GatewayMetrics()
    for latency_s in (0.0004, 0.0009, 0.0015, 0.0042, 0.03):  # 2 within 1 ms, 3 within 2 ms...
        metrics.commit_latency_s.observe(latency_s)
    metrics.ack_latency_s.observe_many(np.array([0.0008] * 6 + [0.0019] * 3 + [0.012]))
    metrics.batch_commands.observe_many(np.array([90, 110]))
    registry = CollectorRegistry()
    registry.register(metrics)
    breakdown = server_breakdown(generate_latest(registry).decode())
    assert breakdown["commit_within"] == {"1ms": 0.4, "2ms": 0.6, "5ms": 0.8, "10ms": 0.8}
    assert breakdown["release_within"] == {"1ms": 0.6, "2ms": 0.9, "5ms": 0.9, "10ms": 0.9}
    assert breakdown["commands_per_row"] == 100


def _text(metrics: GatewayMetrics) -> str:
    registry = CollectorRegistry()
    registry.register(metrics)
    return generate_latest(registry).decode()


def test_the_breakdown_of_a_window_is_the_difference_of_two_scrapes() -> None:
    metrics = GatewayMetrics()
    metrics.commit_latency_s.observe_many(np.array([0.5] * 10))  # the warm-up: slow
    before = _text(metrics)
    metrics.commit_latency_s.observe_many(np.array([0.0011] * 99 + [0.0045]))
    breakdown = server_breakdown(_text(metrics), before)
    assert breakdown["commit_within"]["2ms"] == 0.99
    assert 1.0 < breakdown["commit_latency_ms_p50"] <= 1.25
    assert 1.0 < breakdown["commit_latency_ms_p99"] <= 1.25  # rank 99 of 100: the 1.1 ms bucket
    whole = server_breakdown(_text(metrics))
    assert whole["commit_latency_ms_p99"] > 250


def test_histogram_quantile_interpolates_and_is_unknown_in_the_open_bucket() -> None:
    counts = {0.001: 50.0, 0.002: 100.0, float("inf"): 100.0}
    assert histogram_quantile(counts, 0.5) == 0.001
    assert abs(histogram_quantile(counts, 0.75) - 0.0015) < 1e-12
    assert histogram_quantile({0.001: 1.0, float("inf"): 2.0}, 0.99) is None
    assert histogram_quantile({}, 0.5) is None


def test_no_metrics_no_breakdown() -> None:
    breakdown = server_breakdown("")
    assert breakdown["commit_within"] == {} and breakdown["release_within"] == {}
    assert breakdown["commands_per_row"] is None and breakdown["commit_latency_ms_p99"] is None
