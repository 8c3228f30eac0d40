"""A latency histogram whose range reaches a minute, with bounded relative error and an
explicit overflow count: what every load benchmark reports its percentiles from.

Buckets are log-linear (the HdrHistogram layout): values below ``2 * SUB_BUCKETS`` us have a
bucket each (exact); above, every power of two is cut into ``SUB_BUCKETS`` equal buckets, so
a bucket is never wider than ``1 / SUB_BUCKETS`` of its lower bound. A percentile is the
upper bound of the bucket its rank falls in: never below the true value, and above it by at
most ``RELATIVE_ERROR`` (0.78%) or, among the exact buckets, by less than 1 us.

Values above ``RANGE_US_MAX`` (60 s) are not put in any bucket: they are counted in
``overflow``. A percentile whose rank falls among them is unknown (``None``; printed
"> 60 s", ``null`` in JSON): the ceiling is never passed off as a value.
"""
from __future__ import annotations

import numpy as np

__all__ = ["LatencyHistogram", "SUB_BUCKETS", "RANGE_US_MAX", "RELATIVE_ERROR", "format_latency_us"]

#: buckets per power of two (and the exact range is [0, 2 * SUB_BUCKETS) us)
SUB_BUCKET_BITS = 7
SUB_BUCKETS = 1 << SUB_BUCKET_BITS
#: the largest value a bucket holds, microseconds; anything slower is overflow
RANGE_US_MAX = 60_000_000
#: a percentile is at most this much (relative) above the true value
RELATIVE_ERROR = 1 / SUB_BUCKETS


def _bucket_index(values_us: np.ndarray) -> np.ndarray:
    """Bucket of each value (int64, 0 <= value <= RANGE_US_MAX)."""
    values = np.asarray(values_us, np.int64)
    # bit length, exact for values below 2**53 (frexp gives value = mantissa * 2**exponent)
    _, bits = np.frexp(values.astype(np.float64))
    shift = np.maximum(bits.astype(np.int64) - (SUB_BUCKET_BITS + 1), 0)
    # shift 0: the exact buckets [0, 2 * SUB_BUCKETS); shift s >= 1: value >> s is in
    # [SUB_BUCKETS, 2 * SUB_BUCKETS), after the 2 * SUB_BUCKETS exact ones and s - 1 octaves
    return np.where(shift == 0, values,
                    2 * SUB_BUCKETS + (shift - 1) * SUB_BUCKETS + (values >> shift) - SUB_BUCKETS)


def _bucket_upper_us(index: np.ndarray) -> np.ndarray:
    """The largest value each bucket holds."""
    index = np.asarray(index, np.int64)
    octave = np.maximum(index - 2 * SUB_BUCKETS, -1) // SUB_BUCKETS + 1  # the shift; 0 below
    lower = np.where(octave == 0, index,
                     ((index - 2 * SUB_BUCKETS - (octave - 1) * SUB_BUCKETS + SUB_BUCKETS) << octave))
    return np.where(octave == 0, index, lower + (np.int64(1) << octave) - 1)


BUCKETS = int(_bucket_index(np.array([RANGE_US_MAX]))[0]) + 1


class LatencyHistogram:
    """Counts of latencies in microseconds: ``counts`` (BUCKETS buckets) and ``overflow``
    (values above RANGE_US_MAX). Picklable (it crosses process boundaries in results)."""

    __slots__ = ("counts", "overflow")

    def __init__(self) -> None:
        self.counts = np.zeros(BUCKETS, np.int64)
        self.overflow = 0

    def record(self, values_us: np.ndarray) -> None:
        """Add integer latencies (us); negative ones (clock steps) count as 0."""
        values = np.maximum(np.asarray(values_us, np.int64), 0)
        over = values > RANGE_US_MAX
        over_count = int(over.sum())
        if over_count:
            self.overflow += over_count
            values = values[~over]
        if len(values):
            self.counts += np.bincount(_bucket_index(values), minlength=BUCKETS)

    def merge(self, other: "LatencyHistogram") -> None:
        self.counts += other.counts
        self.overflow += other.overflow

    @property
    def total(self) -> int:
        """Observations, overflow included."""
        return int(self.counts.sum()) + self.overflow

    @property
    def overflow_share(self) -> float:
        """The share of observations above RANGE_US_MAX (0.0 with none)."""
        total = self.total
        return self.overflow / total if total else 0.0

    def percentile_us(self, fraction: float) -> float | None:
        """The upper bound of the bucket holding the ``fraction`` quantile (rank
        ceil(fraction * total)); None when that rank is in the overflow, NaN when empty."""
        total = self.total
        if total == 0:
            return float("nan")
        rank = max(1, int(np.ceil(fraction * total)))
        cumulative = np.cumsum(self.counts)
        if rank > cumulative[-1]:
            return None
        index = int(np.searchsorted(cumulative, rank))
        return float(min(int(_bucket_upper_us(np.array([index]))[0]), RANGE_US_MAX))


def format_latency_us(value: float | None) -> str:
    """A percentile for a report: "> 60 s" when it lies in the overflow."""
    if value is None:
        return f"> {RANGE_US_MAX // 1_000_000} s"
    return f"{value:,.0f}"
