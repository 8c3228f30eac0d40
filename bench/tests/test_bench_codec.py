"""pytest-benchmark: the gateway codec decoding client frames into command records, tiny by
default (MATCHCORE_BENCH_FULL=1 for full size); asserts the records encode back to the frames.

Not in the default test run (``tests/`` is). Run: ``pytest bench/test_bench_codec.py``.
"""
from __future__ import annotations

import os

import numpy as np

from matchcore.core.records import COMMAND_DTYPE
from matchcore.protocol import _codec
from matchcore.protocol import DecodeStatus, NewOrder
from matchcore.bench.codec_bench import ACCOUNT, decode_run, order_entry_commands, run_codec_bench

MESSAGES = 2_000_000 if os.environ.get("MATCHCORE_BENCH_FULL") == "1" else 20_000


def decode_all(stream: bytes) -> np.ndarray:
    """Every record of the stream, decoded in one pass into one array (the check)."""
    out = np.zeros(MESSAGES, COMMAND_DTYPE)
    decoder = _codec.CommandDecoder(ACCOUNT)
    status = decoder.decode(stream, out, first_seq=1)
    assert status == DecodeStatus.OK and decoder.commands_written == MESSAGES
    return out


def test_codec_decode(benchmark):
    commands = order_entry_commands(MESSAGES)
    frames = bytearray(MESSAGES * NewOrder.LAYOUT.itemsize)  # the largest order-entry frame
    count, written = _codec.encode_commands(commands, frames)
    assert count == MESSAGES
    stream = bytes(frames[:written])
    out = np.zeros(4096, COMMAND_DTYPE)
    decoded, _, _ = benchmark.pedantic(decode_run, args=(stream, 65_536, out), rounds=3)
    assert decoded == MESSAGES
    out = decode_all(stream)
    again = bytearray(len(frames))   # the work was real: decoded records encode back to the stream
    assert _codec.encode_commands(out, again) == (MESSAGES, written)
    assert bytes(again[:written]) == stream
    assert np.array_equal(out["seq"], np.arange(1, MESSAGES + 1))
    assert np.array_equal(out["kind"], commands["kind"])
    benchmark.extra_info["messages"] = MESSAGES


def test_codec_bench_reports_its_headline(capsys):
    result = run_codec_bench(min(MESSAGES, 20_000), 65_536, 1, True)
    assert result["decode_msgs_per_s"] > 0 and result["encode_events_per_s"] > 0
    assert '"decode_msgs_per_s"' in capsys.readouterr().out
