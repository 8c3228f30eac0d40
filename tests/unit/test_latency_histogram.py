"""The load benchmarks' latency histogram: percentiles of known inputs within its stated error,
a range up to 60 s, and what lies beyond it counted as overflow, never reported as a value."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from matchcore.bench.histogram import (BUCKETS, RANGE_US_MAX, RELATIVE_ERROR, LatencyHistogram,
                                       _bucket_index, _bucket_upper_us, format_latency_us)


def _exact_percentile(values: np.ndarray, fraction: float) -> int:
    ordered = np.sort(values)
    return int(ordered[max(1, int(np.ceil(fraction * len(ordered)))) - 1])


def test_buckets_tile_the_range_without_gaps_and_within_the_relative_error():
    uppers = _bucket_upper_us(np.arange(BUCKETS))
    assert uppers[0] == 0 and (np.diff(uppers) >= 1).all()
    values = np.unique(np.concatenate([np.arange(0, 5_000), np.geomspace(1, RANGE_US_MAX, 200_000).astype(np.int64),
                                       [RANGE_US_MAX]]))
    index = _bucket_index(values)
    assert (np.diff(index) >= 0).all() and index.max() == BUCKETS - 1
    upper = _bucket_upper_us(index)
    assert (upper >= values).all()
    lower = np.where(index > 0, _bucket_upper_us(np.maximum(index - 1, 0)) + 1, 0)
    assert (lower <= values).all()
    width = upper - lower + 1
    assert (width[values < 256] == 1).all()  # exact below 2 * SUB_BUCKETS us
    assert (width[values >= 256] / lower[values >= 256] <= RELATIVE_ERROR).all()


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99, 0.999])
def test_percentiles_of_known_inputs_are_within_the_error_and_never_below(fraction):
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(0, 300, 10_000), rng.lognormal(8, 2, 50_000).astype(np.int64)])
    values = values[values <= RANGE_US_MAX]
    histogram = LatencyHistogram()
    for part in np.array_split(values, 7):  # recorded in pieces, as the clients do
        histogram.record(part)
    exact = _exact_percentile(values, fraction)
    reported = histogram.percentile_us(fraction)
    assert exact <= reported <= max(exact * (1 + RELATIVE_ERROR), exact + 1)
    assert histogram.overflow == 0 and histogram.total == len(values)


def test_exact_small_values_and_seconds():
    histogram = LatencyHistogram()
    histogram.record(np.array([10] * 50 + [3_000_000] * 49 + [59_000_000]))
    assert histogram.percentile_us(0.5) == 10
    assert 3_000_000 <= histogram.percentile_us(0.99) <= 3_000_000 * (1 + RELATIVE_ERROR)
    assert 59_000_000 <= histogram.percentile_us(1.0) <= RANGE_US_MAX


def test_values_beyond_the_range_are_overflow_and_their_percentiles_unknown():
    histogram = LatencyHistogram()
    histogram.record(np.array([100] * 97 + [RANGE_US_MAX] + [RANGE_US_MAX + 1, 10**9]))
    assert histogram.overflow == 2 and histogram.total == 100
    assert histogram.overflow_share == pytest.approx(0.02)
    assert histogram.percentile_us(0.97) == 100
    assert histogram.percentile_us(0.98) == RANGE_US_MAX  # the last value inside the range
    assert histogram.percentile_us(0.99) is None and histogram.percentile_us(0.999) is None
    assert format_latency_us(None) == "> 60 s" and format_latency_us(1234.0) == "1,234"
    assert json.dumps({"p99": histogram.percentile_us(0.99)}) == '{"p99": null}'


def test_negative_readings_count_as_zero_merge_and_pickle():
    first, second = LatencyHistogram(), LatencyHistogram()
    first.record(np.array([-5, 0, 1]))
    second.record(np.array([RANGE_US_MAX * 2, 2]))
    first.merge(pickle.loads(pickle.dumps(second)))
    assert first.total == 5 and first.overflow == 1
    assert first.percentile_us(0.4) == 0 and first.percentile_us(0.8) == 2
    assert np.isnan(LatencyHistogram().percentile_us(0.5)) and LatencyHistogram().overflow_share == 0.0
