"""``matchcore-bench core``: Engine against ReferenceEngine on a seeded workload.

Both engines run in the same process and the same run; the figure that matters for CI is
the ratio, which does not drift with the machine's load the way a raw rate does. The
reference runs fewer commands (it is ~100x slower) and its events are checked equal to the
engine's on them, so the benchmark also proves it measured real work.

``--workload mixed`` (default, ``bench/workload.py``): the reference runs a prefix of the
measured commands. ``--workload deep`` (``bench/deep_workload.py``): one instrument, ~490
orders a level, one account per order. Its set-up funds one account per order, so the
reference (whose set-up alone would take it minutes for a million commands) runs the same
generator at ``reference_commands`` measured commands instead of a prefix.
"""
from __future__ import annotations

import json
import statistics
import time
import zlib

from matchcore.bench.machine import machine_info, print_header
from matchcore.bench.deep_workload import deep_workload
from matchcore.bench.workload import mixed_workload
from matchcore.core import commands as c
from matchcore.core.reference import ReferenceEngine

__all__ = ["run_core_bench", "WORKLOADS"]

#: --workload name -> generator(commands, seed) of a Workload
WORKLOADS = {"mixed": mixed_workload, "deep": deep_workload}


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
                   repeats: int = 5, as_json: bool = False, workload_name: str = "mixed") -> dict:
    from matchcore.core import Engine

    generate = WORKLOADS[workload_name]
    workload = generate(commands, seed=seed)
    measured = c.number(workload.commands.copy(), first_seq=len(workload.setup) + 1)
    reference_commands = min(reference_commands, commands)
    if not as_json:
        print_header("matchcore-bench core", {"workload": workload_name, "commands": commands,
                                              "seed": seed, "setup_commands": len(workload.setup),
                                              "reference_commands": reference_commands,
                                              "repeats": repeats})
    engine_s, events, engine = _time_engine(Engine, workload, measured, repeats)
    if workload_name == "mixed":
        reference_workload, prefix = workload, measured[:reference_commands]
    else:
        reference_workload = generate(reference_commands, seed=seed)
        prefix = c.number(reference_workload.commands.copy(),
                          first_seq=len(reference_workload.setup) + 1)
    reference_s, reference_events, _ = _time_engine(ReferenceEngine, reference_workload, prefix, 1)
    _, engine_prefix_events, _ = _time_engine(Engine, reference_workload, prefix, 1)
    if reference_events.tobytes() != engine_prefix_events.tobytes():
        raise AssertionError("Engine and ReferenceEngine disagree on the benchmark workload")
    result = {
        "workload": workload_name,
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
