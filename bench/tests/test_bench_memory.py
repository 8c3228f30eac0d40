"""``bench memory`` stays runnable and honest: tiny by default (the figures of a tiny run are
not representative); MATCHCORE_BENCH_FULL=1 measures 1,000,000 and 10,000,000 resting orders
and holds them to the targets (<= 128 bytes per resting order, 10 million in <= 2 GiB).

Not in the default test run (``tests/`` is). Run: ``pytest bench/test_bench_memory.py``.
"""
from __future__ import annotations

import os

from matchcore.bench.memory_bench import run_memory_bench

FULL = os.environ.get("MATCHCORE_BENCH_FULL") == "1"


def test_memory_bench(capsys):
    # 102,400 (not the minimum 10,240): the slope then spans ~9 MB, far above the RSS noise
    result = run_memory_bench(1_000_000 if FULL else 102_400, True,
                              large_orders=10_000_000 if FULL else 0)
    assert '"bytes_per_resting_order"' in capsys.readouterr().out
    # everything the core keeps per order: at least the 72-byte order record, at most a few
    # hundred bytes even at tiny capacities where page rounding dominates
    assert 72 <= result["bytes_per_resting_order"] < 400
    assert result["bytes_per_account"] > 16 * 16      # 16 balances of 16 bytes each
    assert 31 <= result["bytes_per_price_level"] <= 33   # one 32-byte Level (it keeps its shown lots and order count)
    if FULL:
        assert result["bytes_per_resting_order"] <= 128
        assert result["large_fits_2_gib"]
