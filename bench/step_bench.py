"""``matchcore-bench step``: what driving the engine one command at a time from Python costs.

On the seeded mixed workload, in one run: ``apply()`` of the whole measured part as one batch
(the per-command time of the engine itself), then ``Engine.stepper`` stepping through the
same commands one ``step(index)`` call each (the per-call time, the Python loop included),
then ``apply()`` of one-record arrays (the way it was done before the stepper) on a prefix.
The figure is the overhead: per-call time minus per-command time in the big batch. Each is
the median of ``repeats`` runs on a fresh engine after the same set-up; the stepper's total
event count and final state hash are checked equal to the batch's, and its events byte for
byte on the prefix.
"""
from __future__ import annotations

import json
import statistics
import time
import zlib

import numpy as np

from matchcore.bench.machine import machine_info, print_header
from matchcore.bench.workload import mixed_workload
from matchcore.core import commands as c

__all__ = ["run_step_bench"]


def _fresh(engine_cls, workload, setup):
    engine = engine_cls(workload.config)
    engine.apply(setup)
    return engine


def _time_batch(engine_cls, workload, setup, measured):
    engine = _fresh(engine_cls, workload, setup)
    start = time.perf_counter()
    events = engine.apply(measured)
    return time.perf_counter() - start, events, engine


def _time_stepper(engine_cls, workload, setup, measured):
    engine = _fresh(engine_cls, workload, setup)
    step = engine.stepper(measured).step
    total = 0
    start = time.perf_counter()
    for index in range(len(measured)):
        total += step(index)
    return time.perf_counter() - start, total, engine


def _time_one_record_apply(engine_cls, workload, setup, measured):
    engine = _fresh(engine_cls, workload, setup)
    apply = engine.apply
    start = time.perf_counter()
    for index in range(len(measured)):
        apply(measured[index:index + 1])
    return time.perf_counter() - start


def _stepped_events(engine_cls, workload, setup, measured) -> np.ndarray:
    stepper = _fresh(engine_cls, workload, setup).stepper(measured)
    parts = []
    for index in range(len(measured)):
        parts.append(stepper.events[:stepper.step(index)].copy())
    return np.concatenate(parts)


def run_step_bench(commands: int = 200_000, seed: int = 1, apply_commands: int = 20_000,
                   repeats: int = 5, as_json: bool = False) -> dict:
    from matchcore.core import Engine

    workload = mixed_workload(commands, seed=seed)
    setup = c.number(workload.setup.copy(), first_seq=1)
    measured = c.number(workload.commands.copy(), first_seq=len(setup) + 1)
    apply_commands = min(apply_commands, commands)
    if not as_json:
        print_header("matchcore-bench step", {"workload": "mixed", "commands": commands,
                                              "seed": seed, "apply_commands": apply_commands,
                                              "repeats": repeats})
    # one batch's events alive at a time: apply() then reuses the freed block (warm pages)
    # instead of faulting in a fresh one, so the batch figure is apply() at its fastest
    batch_runs = []
    events = batch_engine = None
    for _ in range(repeats):
        events = batch_engine = None
        seconds, events, batch_engine = _time_batch(Engine, workload, setup, measured)
        batch_runs.append((seconds,))
    step_runs = [_time_stepper(Engine, workload, setup, measured) for _ in range(repeats)]
    _, stepped_total, step_engine = step_runs[-1]
    if stepped_total != len(events) or step_engine.state_hash() != batch_engine.state_hash():
        raise AssertionError("the stepper and apply() disagree on the benchmark workload")
    prefix = measured[:apply_commands]
    if _stepped_events(Engine, workload, setup, prefix).tobytes() != \
            _time_batch(Engine, workload, setup, prefix)[1].tobytes():
        raise AssertionError("the stepper's events differ from apply()'s")
    one_record_s = statistics.median(_time_one_record_apply(Engine, workload, setup, prefix)
                                     for _ in range(max(1, repeats // 2)))
    batch_us = statistics.median(run[0] for run in batch_runs) / commands * 1e6
    step_us = statistics.median(run[0] for run in step_runs) / commands * 1e6
    one_record_us = one_record_s / apply_commands * 1e6
    result = {
        "commands": commands, "seed": seed, "events": int(len(events)),
        "events_checksum": f"{zlib.crc32(events.tobytes()):08x}",
        "state_hash": f"{batch_engine.state_hash():016x}",
        "batch_us_per_command": batch_us, "step_us_per_call": step_us,
        "step_overhead_us": step_us - batch_us,
        "apply_one_record_us_per_call": one_record_us,
        "apply_one_record_overhead_us": one_record_us - batch_us,
        "machine": machine_info(),
    }
    if as_json:
        print(json.dumps(result))
    else:
        print(f"checksum: events={result['events']} crc32={result['events_checksum']} "
              f"state_hash={result['state_hash']}")
        print(f"apply(batch):        {batch_us:8.3f} us/command (median of {repeats})")
        print(f"stepper.step(i):     {step_us:8.3f} us/call, overhead {step_us - batch_us:.3f} us "
              f"(median of {repeats}, Python loop included)")
        print(f"apply(1-record):     {one_record_us:8.3f} us/call, overhead "
              f"{one_record_us - batch_us:.3f} us (first {apply_commands} commands)")
    return result
