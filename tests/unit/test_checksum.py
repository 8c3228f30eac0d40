"""CRC-32C: the published check values, the hardware path equal to the portable one on any
length and alignment, continuation like zlib.crc32, and the batch checksum kinds."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.persistence.batch import CRC32, CRC32C, Batch, batch_checksum
from matchcore.persistence._checksum import crc32c, crc32c_software
from matchcore.persistence.errors import ChecksumError


@pytest.mark.parametrize("data, expected", [
    (b"", 0),
    (b"123456789", 0xE3069283),                        # the CRC-32C check value
    (bytes(32), 0x8A9136AA),                           # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),                        # ... of ones
    (bytes(range(32)), 0x46DD794E),                    # ... incrementing
    (bytes(range(31, -1, -1)), 0x113FDB5C),            # ... decrementing
])
def test_published_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_software(data) == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=6000), st.integers(0, 7), st.data())
def test_hardware_equals_portable_at_any_offset_and_split(data: bytes, offset: int, draw) -> None:
    view = memoryview(data)[min(offset, len(data)):]  # unaligned starts
    expected = crc32c_software(view)
    assert crc32c(view) == expected
    cut = draw.draw(st.integers(0, len(view)))
    assert crc32c(view[cut:], crc32c(view[:cut])) == expected


def test_long_buffers_cross_the_three_stream_path() -> None:
    rng = np.random.default_rng(5)
    for size in (1535, 1536, 1537, 3 * 512 * 7 + 5, 1 << 20):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc32c_software(data)


def test_buffers_numpy_and_refusals() -> None:
    records = np.arange(64, dtype=np.uint64)
    assert crc32c(records) == crc32c(records.tobytes())
    with pytest.raises(ValueError):
        crc32c(records[::2])  # not contiguous
    with pytest.raises(TypeError):
        crc32c("text")


def test_batch_rows_of_both_kinds_verify() -> None:
    commands = np.zeros(3, COMMAND_DTYPE)
    commands["seq"] = [10, 11, 12]
    events = np.zeros(2, EVENT_DTYPE)
    events["seq"] = [10, 12]
    c, e = commands.tobytes(), events.tobytes()
    new = batch_checksum(10, 12, c, e)
    old = batch_checksum(10, 12, c, e, CRC32)
    header = (10).to_bytes(8, "little") + (12).to_bytes(8, "little") + \
        (3).to_bytes(4, "little") + (2).to_bytes(4, "little")
    assert old == zlib.crc32(e, zlib.crc32(c, zlib.crc32(header)))
    assert new == crc32c(e, crc32c(c, crc32c(header)))
    assert Batch.from_row(10, 12, 3, 2, c, e, new, CRC32C).checksum == new
    assert Batch.from_row(10, 12, 3, 2, c, e, old, CRC32).checksum == new  # recomputed as C
    with pytest.raises(ChecksumError):
        Batch.from_row(10, 12, 3, 2, c, e, old, CRC32C)
    with pytest.raises(ChecksumError):
        Batch.from_row(10, 12, 3, 2, c, e, new, 7)
