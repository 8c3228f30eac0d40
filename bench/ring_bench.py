"""bench ring: records per second through the bare SPSC ring, one producer and one consumer thread.

Both threads run inside the extension without the GIL (``ring_transfer``): the producer claims
up to ``batch`` slots, writes every 8-byte word of each record and publishes; the consumer
peeks up to ``batch`` records, checks every word and releases. So each figure includes writing
and reading the whole record, not only moving the indices. A warm-up run comes first, then
``runs`` measured runs; the figure is their median. Every run is verified (no loss, duplicate,
reorder or torn record) and its checksum compared with the one predicted for the parameters.

Caveats: on a 2-core machine the two threads own both cores, so anything else running
(another build, another benchmark) lowers the figures; compare medians, not single runs.
"""
from __future__ import annotations

import argparse
import json as json_module
import statistics
import sys

from matchcore.bench.machine import machine_info

RING_RECORDS_PER_S_TARGET = 40_000_000
RECORD_SIZE_BYTES = 64
CAPACITY_RECORDS = 4096
RUNS = 5

# The pattern ring_transfer writes: word 0 = s, word k >= 1 = s * MULTIPLIER + k (mod 2**64).
PATTERN_MULTIPLIER = 0x9E3779B97F4A7C15
WORD_MASK = 2**64 - 1


def expected_checksum(records_total: int, record_size_bytes: int) -> int:
    """Sum of every word of records 0..records_total-1, mod 2**64."""
    words = record_size_bytes // 8
    sequence_sum = records_total * (records_total - 1) // 2
    pattern_sum = (words - 1) * PATTERN_MULTIPLIER * sequence_sum
    offsets_sum = records_total * (words - 1) * words // 2
    return (sequence_sum + pattern_sum + offsets_sum) & WORD_MASK


def measure(records: int, batch: int, capacity: int, record_size_bytes: int) -> dict:
    """One verified transfer; raises if anything arrived wrong."""
    from matchcore.core._core import Ring, ring_transfer

    ring = Ring(record_size_bytes, capacity)
    result = ring_transfer(ring, records, [batch], [batch], timeout_s=600)
    if result["timed_out"] or result["bad_records"] or result["records_consumed"] != records:
        raise RuntimeError(f"ring transfer went wrong: {result}")
    if result["checksum"] != expected_checksum(records, record_size_bytes):
        raise RuntimeError(f"checksum {result['checksum']} is not the predicted one")
    return result


def run_ring_bench(records: int, batch: int, json: bool, *, capacity: int = CAPACITY_RECORDS,
                   runs: int = RUNS, record_size: int = RECORD_SIZE_BYTES) -> dict:
    """Measure and print; return the report, whose headline is ``ring_records_per_s`` (median).

    records: per run; batch: records per claim and per peek; capacity: ring size in records;
    runs: measured runs after one warm-up; record_size: bytes per record. With json, the
    report is printed as one JSON object instead of text.
    """
    if records < 1 or batch < 1 or runs < 1:
        raise ValueError("records, batch and runs must be at least 1")
    parameters = {"records": records, "batch": batch, "capacity_records": capacity,
                  "record_size_bytes": record_size, "runs": runs, "threads": 2}
    measure(min(records, 1_000_000), batch, capacity, record_size)  # warm-up
    results = [measure(records, batch, capacity, record_size) for _ in range(runs)]
    rates = [records * 1e9 / result["elapsed_ns"] for result in results]
    report = {
        "benchmark": "ring",
        "machine": machine_info(),
        "parameters": parameters,
        "checksum": results[0]["checksum"],
        "ring_records_per_s": statistics.median(rates),
        "ring_records_per_s_runs": rates,
        "ring_bytes_per_s": statistics.median(rates) * record_size,
        "producer_full_waits": [result["producer_full_waits"] for result in results],
        "consumer_empty_waits": [result["consumer_empty_waits"] for result in results],
        "target_records_per_s": RING_RECORDS_PER_S_TARGET,
    }
    print(json_module.dumps(report) if json else format_report(report))
    return report


def format_report(report: dict) -> str:
    lines = ["bench ring: records through the bare SPSC ring, producer thread -> consumer thread"]
    lines += [f"  {key}: {value}" for key, value in report["machine"].items()]
    lines += [f"  {key}: {value}" for key, value in report["parameters"].items()]
    lines.append(f"  checksum: {report['checksum']:#018x} (verified, every run)")
    rates = report["ring_records_per_s_runs"]
    lines.append("  runs (records/s): " + ", ".join(f"{rate:,.0f}" for rate in rates))
    lines.append(f"  ring_records_per_s (median): {report['ring_records_per_s']:,.0f}"
                 f"  ({report['ring_bytes_per_s'] / 1e9:.2f} GB/s)")
    lines.append(f"  min / max: {min(rates):,.0f} / {max(rates):,.0f}")
    verdict = "met" if report["ring_records_per_s"] >= report["target_records_per_s"] else "MISSED"
    lines.append(f"  target {report['target_records_per_s']:,} records/s: {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000_000, help="records per run")
    parser.add_argument("--batch", type=int, default=256, help="records per claim and per peek")
    parser.add_argument("--capacity", type=int, default=CAPACITY_RECORDS, help="ring size, records")
    parser.add_argument("--runs", type=int, default=RUNS, help="measured runs after a warm-up")
    parser.add_argument("--record-size", type=int, default=RECORD_SIZE_BYTES, help="bytes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    run_ring_bench(args.records, args.batch, args.json, capacity=args.capacity, runs=args.runs,
                   record_size=args.record_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
