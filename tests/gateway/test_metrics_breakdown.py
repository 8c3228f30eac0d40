"""The e2e bench reads the server's own histograms back from its Prometheus text: the share of
journal rows committed, and of commands released, within 1/2/5/10 ms, and commands a row."""
from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest

from matchcore.bench.e2e_bench import server_breakdown
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


def test_no_metrics_no_breakdown() -> None:
    assert server_breakdown("") == {"commit_within": {}, "release_within": {}, "commands_per_row": None}
