"""``matchcore-bench core``: Engine against ReferenceEngine on the seeded mixed workload.

Both engines run in the same process and the same run; the figure that matters for CI is
the ratio, which does not drift with the machine's load the way a raw rate does. The
reference runs a prefix of the workload (it is ~100x slower) and its events are checked
equal to the engine's on that prefix, so the benchmark also proves it measured real work.
"""
from __future__ import annotations

import json
import statistics
import time
import zlib

from matchcore.bench.machine import machine_info, print_header
from matchcore.bench.workload import mixed_workload
from matchcore.core import commands as c
from matchcore.core.reference import ReferenceEngine

__all__ = ["run_core_bench"]


def _time_engine(engine_cls, workload, measured, repeats: int):
    """Median seconds to apply ``measured`` on a fresh engine that has run the setup."""
    seconds = []
    events = None
    for _ in range(repeats):
        engine = engine_cls(workload.config)
        engine.apply(workload_setup(workload))
        start = time.perf_counter()
        events = engine.apply(measured)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), events, engine


def workload_setup(workload):
    return c.number(workload.setup.copy(), first_seq=1)


def run_core_bench(commands: int = 1_000_000, seed: int = 1, reference_commands: int = 50_000,
                   repeats: int = 5, as_json: bool = False) -> dict:
    from matchcore.core import Engine

    workload = mixed_workload(commands, seed=seed)
    measured = c.number(workload.commands.copy(), first_seq=len(workload.setup) + 1)
    reference_commands = min(reference_commands, commands)
    if not as_json:
        print_header("matchcore-bench core", {"commands": commands, "seed": seed,
                                              "reference_commands": reference_commands,
                                              "repeats": repeats})
    engine_s, events, engine = _time_engine(Engine, workload, measured, repeats)
    prefix = measured[:reference_commands]
    reference_s, reference_events, _ = _time_engine(ReferenceEngine, workload, prefix, 1)
    _, engine_prefix_events, _ = _time_engine(Engine, workload, prefix, 1)
    if reference_events.tobytes() != engine_prefix_events.tobytes():
        raise AssertionError("Engine and ReferenceEngine disagree on the benchmark workload")
    result = {
        "commands": commands,
        "seed": seed,
        "events": int(len(events)),
        "events_checksum": f"{zlib.crc32(events.tobytes()):08x}",
        "state_hash": f"{engine.state_hash():016x}",
        "engine_cmds_per_s": commands / engine_s,
        "reference_cmds_per_s": reference_commands / reference_s,
        "machine": machine_info(),
    }
    result["speedup_vs_reference"] = result["engine_cmds_per_s"] / result["reference_cmds_per_s"]
    if as_json:
        print(json.dumps(result))
    else:
        print(f"checksum: events={result['events']} crc32={result['events_checksum']} "
              f"state_hash={result['state_hash']}")
        print(f"engine:    {result['engine_cmds_per_s']:>14,.0f} commands/s (median of {repeats})")
        print(f"reference: {result['reference_cmds_per_s']:>14,.0f} commands/s")
        print(f"ratio:     {result['speedup_vs_reference']:>14.1f} x")
    return result
