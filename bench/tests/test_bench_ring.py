"""bench ring stays runnable and correct: pytest-benchmark figures, tiny unless sized up by env.

Not in the default test run (``tests/`` is). Run: ``pytest bench/test_bench_ring.py``;
set MATCHCORE_BENCH_RING_RECORDS for a real measurement (for example 20000000).
"""
from __future__ import annotations

import os

import pytest

from matchcore.bench.ring_bench import expected_checksum, measure, run_ring_bench

RECORDS = int(os.environ.get("MATCHCORE_BENCH_RING_RECORDS", "100000"))


@pytest.mark.parametrize("batch", [1, 256])
def test_bench_ring_transfer(benchmark, batch):
    result = benchmark.pedantic(measure, args=(RECORDS, batch, 4096, 64), rounds=3,
                                warmup_rounds=1)
    assert result["checksum"] == expected_checksum(RECORDS, 64)
    benchmark.extra_info["ring_records_per_s"] = RECORDS * 1e9 / result["elapsed_ns"]


def test_bench_script_reports_its_headline(capsys):
    report = run_ring_bench(min(RECORDS, 50_000), 64, json=True, runs=1)
    assert report["ring_records_per_s"] > 0
    assert report["checksum"] == expected_checksum(min(RECORDS, 50_000), 64)
    assert '"ring_records_per_s"' in capsys.readouterr().out
