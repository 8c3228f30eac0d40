"""Benchmark of the gateway codec: client frames decoded into command records, event frames encoded.

``python -m matchcore.bench.codec_bench [--messages N] [--chunk-bytes B] [--repeats R] [--json]``
prints the machine, versions and parameters, a checksum of the decoded records, then the
median rates over ``repeats`` runs. The decode input is a realistic order-entry mix (70%
NEW_ORDER, 20% CANCEL, 10% REPLACE) cut into receive-sized chunks (``chunk_bytes``, a
partial frame carried over between chunks as a server would); each run decodes it into a
preallocated array of 4,096 records, flushed when full.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import zlib

import numpy as np

from matchcore.bench.machine import machine_info, print_header
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.protocol import _codec
from matchcore.protocol import EVENT_FRAME_SIZE, DecodeStatus, NewOrder

ACCOUNT = 7


def order_entry_commands(count: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    commands = np.zeros(count, COMMAND_DTYPE)
    kinds = rng.choice([10, 11, 12], size=count, p=[0.7, 0.2, 0.1])
    commands["kind"] = kinds
    commands["account_id"] = ACCOUNT
    commands["client_id"] = np.arange(1, count + 1)
    commands["side"] = rng.integers(1, 3, size=count)
    commands["order_type"] = 1
    commands["time_in_force"] = 1
    commands["stp_mode"] = 1
    commands["price"] = rng.integers(90, 111, size=count)
    commands["quantity"] = rng.integers(1, 100, size=count)
    return commands


def decode_run(stream: bytes, chunk_bytes: int, out: np.ndarray) -> tuple[int, float, int]:
    """(commands decoded, seconds, crc32 of the records) for one pass over ``stream``."""
    decoder = _codec.CommandDecoder(ACCOUNT)
    buffer = bytearray()
    decoded, checksum = 0, 0
    view = memoryview(stream)
    start = time.perf_counter()
    for offset in range(0, len(stream), chunk_bytes):
        buffer += view[offset:offset + chunk_bytes]
        consumed_total = 0
        while True:
            status = decoder.decode(memoryview(buffer)[consumed_total:], out, first_seq=decoded + 1)
            consumed_total += decoder.consumed_bytes
            decoded += decoder.commands_written
            if status != DecodeStatus.OUTPUT_FULL:
                break
        if status != DecodeStatus.OK:
            raise RuntimeError(f"decode stopped with {DecodeStatus(status).name}")
        del buffer[:consumed_total]
    seconds = time.perf_counter() - start
    checksum = zlib.crc32(out.tobytes())
    return decoded, seconds, checksum


def encode_run(events: np.ndarray, out: bytearray) -> float:
    start = time.perf_counter()
    count = _codec.encode_events(events, out, 0, ACCOUNT, 1)
    seconds = time.perf_counter() - start
    assert count == len(events)
    return seconds


def run_codec_bench(messages: int, chunk_bytes: int, repeats: int, as_json: bool) -> dict:
    commands = order_entry_commands(messages)
    stream_buffer = bytearray(messages * NewOrder.LAYOUT.itemsize)  # no message is larger
    count, written = _codec.encode_commands(commands, stream_buffer)
    assert count == messages
    stream = bytes(stream_buffer[:written])
    out = np.zeros(4096, COMMAND_DTYPE)
    decode_rates, checksum = [], 0
    decode_run(stream[: min(len(stream), 1 << 20)], chunk_bytes, out)  # warm-up
    for _ in range(repeats):
        decoded, seconds, checksum = decode_run(stream, chunk_bytes, out)
        assert decoded == messages
        decode_rates.append(decoded / seconds)
    events = np.zeros(min(messages, 1_000_000), EVENT_DTYPE)
    events["kind"] = 66
    events["account_id"] = ACCOUNT
    frames = bytearray(len(events) * EVENT_FRAME_SIZE)
    encode_rates = [len(events) / encode_run(events, frames) for _ in range(repeats)]
    result = {
        "machine": machine_info(),
        "parameters": {"messages": messages, "stream_bytes": len(stream), "chunk_bytes": chunk_bytes,
                       "repeats": repeats, "events": len(events)},
        "checksum_crc32": checksum,
        "decode_msgs_per_s": statistics.median(decode_rates),
        "encode_events_per_s": statistics.median(encode_rates),
    }
    if as_json:
        print(json.dumps(result))
    else:
        print_header("gateway codec", result["parameters"])
        print(f"checksum: crc32 {checksum:#010x} of the last output block")
        print(f"decode: {result['decode_msgs_per_s']:,.0f} messages/s (median of {repeats})")
        print(f"encode: {result['encode_events_per_s']:,.0f} event frames/s (median of {repeats})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--chunk-bytes", type=int, default=65_536, help="bytes per simulated receive")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    run_codec_bench(args.messages, args.chunk_bytes, args.repeats, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
