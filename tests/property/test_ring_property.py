"""For any batch sizes, capacity and record width the ring loses, repeats, reorders and alters nothing."""
from __future__ import annotations

from collections import deque

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matchcore.bench.ring_bench import expected_checksum  # the words ring_transfer writes
from matchcore.core._core import Ring, ring_transfer

CAPACITIES = [2, 4, 8, 64, 1024]
RECORD_SIZES = [8, 64, 96]


batch_sizes = st.lists(st.integers(1, 2100), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    capacity=st.sampled_from(CAPACITIES),
    record_size=st.sampled_from(RECORD_SIZES),
    records_total=st.integers(0, 150_000),
    producer_sizes=batch_sizes,
    consumer_sizes=batch_sizes,
)
def test_two_threads_deliver_every_record_once_in_order(
    capacity, record_size, records_total, producer_sizes, consumer_sizes
):
    ring = Ring(record_size, capacity)
    result = ring_transfer(ring, records_total, producer_sizes, consumer_sizes, timeout_s=30)
    assert not result["timed_out"], result
    assert result["bad_records"] == 0, result
    assert result["records_produced"] == records_total, result
    assert result["records_consumed"] == records_total, result
    assert result["checksum"] == expected_checksum(records_total, record_size), result
    assert ring.depth == 0


operations = st.lists(
    st.tuples(st.sampled_from(["push", "pop", "pop_into"]), st.integers(0, 20)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.sampled_from([2, 4, 8, 16]), steps=operations)
def test_one_thread_matches_a_bounded_queue_model(capacity, steps):
    ring = Ring(16, capacity)
    model: deque[int] = deque()
    next_value = 0
    for operation, count in steps:
        if operation == "push":
            records = np.arange(next_value, next_value + count, dtype=np.uint64).repeat(2)
            written = ring.try_push(records.reshape(count, 2))
            assert written == min(count, capacity - len(model))
            model.extend(range(next_value, next_value + written))
            next_value += count
        elif operation == "pop":
            out = ring.pop(count).view(np.uint64)
            expected = [model.popleft() for _ in range(min(count, len(model)))]
            assert out[:, 0].tolist() == expected
            assert out[:, 1].tolist() == expected
        else:
            out = np.zeros((count, 2), np.uint64)
            read = ring.pop_into(out)
            expected = [model.popleft() for _ in range(min(count, len(model)))]
            assert read == len(expected)
            assert out[:read, 0].tolist() == expected
        assert ring.depth == len(model)
