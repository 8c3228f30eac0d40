"""``bench/fence_bench.py`` stays runnable: a few rows of each kind on a temporary embedded
PostgreSQL; the figures of so few rows mean nothing, the run and its output are checked."""
from __future__ import annotations

from matchcore.bench.fence_bench import run_fence_bench


def test_fence_bench_runs(capsys):
    result = run_fence_bench(rows=3, commands=64)
    out = capsys.readouterr().out
    assert "checksum:" in out and "fenced_over_plain_mean" in out
    assert result["plain_us_p50"] > 0 and result["fenced_us_p50"] > 0
