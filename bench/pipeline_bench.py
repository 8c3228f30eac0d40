"""``matchcore-bench pipeline``: commands/s through input ring -> core thread -> output ring.

One Python thread alternates between submitting (stamping sequence numbers into the input
ring) and draining the output ring; the core thread applies the commands without the GIL.
The figure is commands per second from the first submit until the last command's slot has
been drained, median of ``repeats`` runs on the mixed workload of ``bench core``. The same
workload through ``Engine.apply`` is measured in the same run, as the reference figure the
pipeline should approach (the core thread does the same work plus the ring traffic).
"""
from __future__ import annotations

import json
import statistics
import time

import numpy as np

from matchcore.bench.machine import machine_info, print_header
from matchcore.bench.workload import mixed_workload
from matchcore.core import commands as c
from matchcore.core.records import KIND_OFFSET

__all__ = ["run_pipeline_bench", "pump"]


def pump(pipeline, commands: np.ndarray, chunk: int = 8192, drain_max: int = 1 << 16,
         collect: list | None = None, timestamp_ns: int = 0):
    """Submit all commands and drain until every command's slot came out.
    Returns (seconds, a 64-bit checksum of all drained slots, number of slots); with ``collect``, the
    drained slot arrays are appended to it."""
    total = len(commands)
    submitted = 0
    seen_commands = 0
    checksum = 0
    slots_count = 0
    start = time.perf_counter()
    while seen_commands < total:
        if submitted < total:
            submitted += pipeline.submit(commands[submitted:submitted + chunk],
                                         timestamp_ns=timestamp_ns)
        slots = pipeline.drain(drain_max)
        if len(slots):
            seen_commands += int(np.count_nonzero(slots[:, KIND_OFFSET] < 64))
            # a cheap checksum: the sum of the slots' 64-bit words (vectorized; crc32 here
            # cost the consumer half its time). Order is proven by tests/unit/test_pipeline.py.
            checksum = (checksum + int(slots.view(np.uint64).sum(dtype=np.uint64))) & (2**64 - 1)
            slots_count += len(slots)
            if collect is not None:
                collect.append(slots)
        elif submitted >= total:
            time.sleep(0)
    return time.perf_counter() - start, checksum, slots_count


def run_pipeline_bench(commands: int = 2_000_000, seed: int = 1, repeats: int = 3,
                       as_json: bool = False) -> dict:
    from matchcore.core import Engine
    from matchcore.core._core import Pipeline

    workload = mixed_workload(commands, seed=seed)
    setup = c.number(workload.setup.copy())
    measured = workload.commands
    if not as_json:
        print_header("matchcore-bench pipeline", {"commands": commands, "seed": seed,
                                                  "repeats": repeats, "input_ring_capacity_records": 1 << 16,
                                                  "output_ring_capacity_records": 1 << 18})
    rates, checksums = [], set()
    for _ in range(repeats):
        engine = Engine(workload.config)
        engine.apply(setup)
        pipeline = Pipeline(engine, next_seq=len(setup) + 1)
        pipeline.start()
        seconds, checksum, slots = pump(pipeline, measured)
        pipeline.stop()
        rates.append(commands / seconds)
        checksums.add((checksum, slots))
    if len(checksums) != 1:
        raise AssertionError("pipeline runs produced different outputs")
    stamped = c.number(measured.copy(), first_seq=len(setup) + 1)
    apply_rates = []
    for _ in range(repeats):
        direct = Engine(workload.config)
        direct.apply(setup)
        start = time.perf_counter()
        direct.apply(stamped)
        apply_rates.append(commands / (time.perf_counter() - start))
    apply_rate = statistics.median(apply_rates)
    (checksum, slots), = checksums
    result = {
        "commands": commands, "seed": seed, "output_slots": slots, "output_checksum": f"{checksum:016x}",
        "pipeline_cmds_per_s": statistics.median(rates), "pipeline_cmds_per_s_runs": rates,
        "engine_apply_cmds_per_s": apply_rate, "machine": machine_info(),
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"checksum: slots={slots} checksum={checksum:016x}")
        print(f"pipeline:     {result['pipeline_cmds_per_s']:>14,.0f} commands/s (median of {repeats})")
        print(f"Engine.apply: {apply_rate:>14,.0f} commands/s (same workload, one thread, no rings)")
    return result
