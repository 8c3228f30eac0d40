"""The SPSC record ring keeps every record, in order, unchanged: one thread and two real threads."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from matchcore.bench.ring_bench import expected_checksum  # the words ring_transfer writes
from matchcore.core._core import Ring, ring_layout, ring_transfer
from matchcore.core.records import COMMAND_DTYPE, COMMAND_SIZE, EVENT_DTYPE


def numbered(first: int, count: int, dtype=COMMAND_DTYPE) -> np.ndarray:
    records = np.zeros(count, dtype)
    records["seq"] = np.arange(first, first + count)
    return records


def assert_clean(result: dict, records_total: int, record_size: int) -> None:
    assert not result["timed_out"], result
    assert result["bad_records"] == 0, result
    assert result["first_bad_sequence"] is None, result
    assert result["records_produced"] == records_total, result
    assert result["records_consumed"] == records_total, result
    assert result["checksum"] == expected_checksum(records_total, record_size), result


# ---- construction ---------------------------------------------------------------------------

def test_header_puts_each_side_on_its_own_cache_line():
    layout = ring_layout()
    line = layout["cache_line_size"]
    assert line == 64
    assert layout["header_size"] % line == 0
    assert layout["capacity_records"] // line == 0
    producer_line = layout["write_index"] // line
    consumer_line = layout["read_index"] // line
    assert producer_line == 1
    assert consumer_line == 2
    assert layout["read_index_cached"] // line == producer_line
    assert layout["write_index_cached"] // line == consumer_line


def test_properties_report_construction_arguments():
    ring = Ring(96, 16)
    assert ring.record_size == 96
    assert ring.capacity == 16
    assert ring.depth == 0
    assert not ring.transfer_running


@pytest.mark.parametrize(
    "record_size, capacity, message",
    [
        (0, 8, "record_size must be positive"),
        (-8, 8, "record_size must be positive"),
        (12, 8, "multiple of 8"),
        (4104, 8, "record_size must be at most 4096"),
        (64, 0, "at least 2"),
        (64, 1, "at least 2"),
        (64, -4, "at least 2"),
        (64, 3, "power of two"),
        (64, 96, "power of two"),
        (64, 2**25, "capacity must be at most"),
    ],
)
def test_invalid_arguments_raise_value_error(record_size, capacity, message):
    with pytest.raises(ValueError, match=message):
        Ring(record_size, capacity)


@pytest.mark.parametrize("record_size, capacity", [(64.0, 8), ("64", 8), (64, 8.0), (None, 8)])
def test_non_integer_arguments_raise_type_error(record_size, capacity):
    with pytest.raises(TypeError):
        Ring(record_size, capacity)


@pytest.mark.parametrize("record_size, capacity", [(8, 2), (4096, 2), (64, 1 << 16)])
def test_limits_are_inclusive(record_size, capacity):
    assert Ring(record_size, capacity).capacity == capacity


# ---- one thread -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [COMMAND_DTYPE, EVENT_DTYPE])
def test_records_come_out_byte_for_byte(dtype):
    rng = np.random.default_rng(3)
    records = np.frombuffer(rng.bytes(dtype.itemsize * 5), dtype=dtype)
    ring = Ring(dtype.itemsize, 8)
    assert ring.try_push(records) == 5
    out = ring.pop(10, dtype)
    assert out.dtype == dtype
    assert out.tobytes() == records.tobytes()
    assert ring.depth == 0


def test_order_is_kept_across_many_wrap_arounds():
    ring = Ring(COMMAND_SIZE, 4)
    for first in range(0, 300, 3):
        assert ring.try_push(numbered(first, 3)) == 3
        assert list(ring.pop(3, COMMAND_DTYPE)["seq"]) == [first, first + 1, first + 2]


def test_full_ring_refuses_more_and_overwrites_nothing():
    ring = Ring(COMMAND_SIZE, 8)
    assert ring.try_push(numbered(0, 10)) == 8
    assert ring.depth == 8
    assert ring.try_push(numbered(100, 1)) == 0
    assert ring.depth == 8
    assert list(ring.pop(3, COMMAND_DTYPE)["seq"]) == [0, 1, 2]
    # Three slots freed: the producer resumes, partially, and the ring is full again.
    assert ring.try_push(numbered(8, 5)) == 3
    assert ring.try_push(numbered(11, 2)) == 0
    assert list(ring.pop(100, COMMAND_DTYPE)["seq"]) == list(range(3, 11))
    assert ring.depth == 0


def test_pop_from_empty_ring_returns_no_records():
    ring = Ring(COMMAND_SIZE, 4)
    empty = ring.pop(5)
    assert empty.shape == (0, COMMAND_SIZE)
    assert empty.dtype == np.uint8
    assert ring.pop(0, COMMAND_DTYPE).shape == (0,)


def test_pop_into_fills_what_it_can_and_leaves_the_rest():
    ring = Ring(COMMAND_SIZE, 8)
    ring.try_push(numbered(0, 5))
    out = numbered(-1, 8)
    out["seq"] = 999
    assert ring.pop_into(out[:3]) == 3
    assert ring.pop_into(out[3:]) == 2
    assert list(out["seq"]) == [0, 1, 2, 3, 4, 999, 999, 999]
    assert ring.pop_into(out) == 0


def test_raw_two_dimensional_records_are_accepted():
    ring = Ring(COMMAND_SIZE, 8)
    words = np.arange(3 * COMMAND_SIZE // 8, dtype=np.uint64).reshape(3, COMMAND_SIZE // 8)
    assert ring.try_push(words) == 3
    out = np.zeros((3, COMMAND_SIZE // 8), np.uint64)
    assert ring.pop_into(out) == 3
    assert np.array_equal(out, words)


@pytest.mark.parametrize(
    "records, error",
    [
        ([1, 2, 3], TypeError),
        (np.zeros(4, EVENT_DTYPE), ValueError),            # 128 bytes into a 96-byte ring
        (np.zeros((4, 16), np.uint8), ValueError),
        (np.zeros((4, 2, 64), np.uint8), ValueError),
        (np.zeros((4, 128), np.uint8)[:, ::2], ValueError),  # not contiguous
        (np.zeros(4, object), TypeError),
    ],
)
def test_try_push_rejects_malformed_arrays(records, error):
    ring = Ring(COMMAND_SIZE, 8)
    with pytest.raises(error):
        ring.try_push(records)
    assert ring.depth == 0


def test_pop_rejects_bad_arguments():
    ring = Ring(COMMAND_SIZE, 8)
    with pytest.raises(ValueError, match="negative"):
        ring.pop(-1)
    with pytest.raises(ValueError, match=f"{COMMAND_SIZE} bytes wide"):
        ring.pop(1, EVENT_DTYPE)
    read_only = np.zeros(2, COMMAND_DTYPE)
    read_only.flags.writeable = False
    with pytest.raises(ValueError):
        ring.pop_into(read_only)


# ---- two real threads -------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [64, 1024])
def test_millions_of_records_arrive_in_order_across_wrap_arounds(capacity):
    records_total = 4_000_000
    rng = np.random.default_rng(capacity)
    producer_sizes = rng.integers(1, 2 * capacity, size=97)
    consumer_sizes = rng.integers(1, 2 * capacity, size=89)
    ring = Ring(64, capacity)
    result = ring_transfer(ring, records_total, producer_sizes, consumer_sizes, timeout_s=60)
    assert_clean(result, records_total, 64)
    assert records_total // capacity >= 3900  # wrap-arounds
    assert ring.depth == 0


@pytest.mark.parametrize("record_size", [8, 96, 4096])
def test_every_record_width_survives_two_threads(record_size):
    records_total = 200_000 if record_size < 4096 else 20_000
    ring = Ring(record_size, 64)
    result = ring_transfer(ring, records_total, [1, 7, 64, 3], [5, 64, 2], timeout_s=60)
    assert_clean(result, records_total, record_size)


def test_producer_waits_on_a_full_ring_then_resumes_without_overwriting():
    # A producer writing whole rings against a consumer taking one record at a time must
    # find the ring full again and again; every word is checked on arrival.
    records_total = 500_000
    ring = Ring(64, 64)
    result = ring_transfer(ring, records_total, [64], [1], timeout_s=60)
    assert_clean(result, records_total, 64)
    assert result["producer_full_waits"] > 100, result


def test_zero_records_is_a_clean_no_op():
    result = ring_transfer(Ring(64, 4), 0, [1], [1])
    assert_clean(result, 0, 64)


@pytest.mark.parametrize(
    "producer_sizes, consumer_sizes, error",
    [
        ([], [1], ValueError),
        ([1], [0], ValueError),
        ([1, -3], [1], ValueError),
        ([1.5], [1], TypeError),
        ([[1]], [1], ValueError),
    ],
)
def test_transfer_rejects_bad_batch_sizes(producer_sizes, consumer_sizes, error):
    with pytest.raises(error):
        ring_transfer(Ring(64, 4), 10, producer_sizes, consumer_sizes)


def test_transfer_needs_an_empty_ring_and_a_sane_count():
    ring = Ring(COMMAND_SIZE, 4)
    with pytest.raises(ValueError, match="negative"):
        ring_transfer(ring, -1, [1], [1])
    with pytest.raises(ValueError, match="timeout_s"):
        ring_transfer(ring, 1, [1], [1], timeout_s=0)
    ring.try_push(numbered(0, 1))
    with pytest.raises(ValueError, match="start empty"):
        ring_transfer(ring, 1, [1], [1])


def test_transfer_times_out_and_owns_both_sides_while_running():
    ring = Ring(64, 64)
    results = []
    worker = threading.Thread(
        target=lambda: results.append(ring_transfer(ring, 10**15, [64], [64], timeout_s=0.5))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not ring.transfer_running and worker.is_alive() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert ring.transfer_running
        with pytest.raises(RuntimeError):
            ring.try_push(np.zeros((1, 64), np.uint8))
        with pytest.raises(RuntimeError):
            ring.pop(1)
        with pytest.raises(RuntimeError):
            ring.pop_into(np.zeros((1, 64), np.uint8))
    finally:
        worker.join()
    (result,) = results
    assert result["timed_out"]
    assert result["bad_records"] == 0
    assert 0 < result["records_consumed"] <= result["records_produced"]
    assert not ring.transfer_running
