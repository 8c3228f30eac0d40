"""The market data benchmark runs end to end in a tiny size (two subscribers, one second), so it cannot rot."""
from __future__ import annotations

from matchcore.bench.marketdata_bench import run_marketdata_bench


def test_marketdata_bench_tiny():
    result = run_marketdata_bench(subscribers=2, subscriber_processes=1, clients=1, seconds=1.0, warmup_s=0.5,
                                  rate=20_000, as_json=True)
    for key in ("md_messages_per_s", "md_latency_us_p99", "e2e_cmds_per_s", "e2e_cmds_per_s_without_md"):
        assert key in result, key
    assert result["md_messages_per_s"] > 0 and result["e2e_cmds_per_s"] > 0
    assert result["e2e_cmds_per_s_without_md"] > 0 and result["md_latency_us_p99"] > 0
    (run,) = result["runs"]["with_md"]
    assert run["md_snapshots"] >= 2  # each subscriber's answer (one snapshot per instrument)
