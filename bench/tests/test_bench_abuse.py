"""The abuse benchmark runs end to end in a tiny size (every attack, a few round trips each), so it cannot rot."""
from __future__ import annotations

from matchcore.bench.abuse_bench import ATTACKS, run_abuse_bench


def test_abuse_bench_tiny():
    result = run_abuse_bench(samples=10, phase_s=1.0, request_timeout_s=0.5, as_json=True)
    assert result["server_exit_code"] == 0
    assert result["baseline_p99_us"] > 0 and result["baseline"]["samples"] == 10
    assert set(result["attacks"]) == set(ATTACKS)
    for name, attack in result["attacks"].items():
        assert {"p99_us", "max_us", "trader_closed", "meets_target"} <= set(attack), name
        assert "error" not in attack["attacker"], (name, attack["attacker"])
    assert result["checksum"]["journal_last_seq"] > 0
