"""Durable core and replay figures on the real embedded PostgreSQL.

``service_cmds_per_s``: the mixed workload through DurableCore (input ring, core thread,
output ring, journal writer, commit, release), from the first submit to the release of the
last command: every command durable before it counts. ``replay_cmds_per_s``: the same journal
read back and replayed through a fresh Engine with every batch's events verified byte for
byte (what recovery and ``matchcore replay --verify`` do), median of ``repeats`` replays; the
time includes building the Engine. The first replay after the load is the slowest: PostgreSQL
reads the fresh rows for the first time (and sets their hint bits); the median is the figure
of a journal at rest, which is what a quant replays.
"""
from __future__ import annotations

import statistics
import time

import uvloop

from matchcore.bench.journal_bench import _fresh_database, _server
from matchcore.bench.workload import mixed_workload
from matchcore.persistence import Journal
from matchcore.persistence.replay import replay
from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig

__all__ = ["run_replay_bench"]


async def _load(dsn: str, workload) -> dict:
    service = DurableCore(dsn, workload.config, config=DurableCoreConfig(snapshot_every_commands=0))
    await service.start()
    stream = workload.all()
    start = time.perf_counter()
    await service.submit_all(stream)
    await service.wait_released(len(stream), timeout_s=600)
    elapsed = time.perf_counter() - start
    live_hash = service.engine.state_hash()
    await service.stop()
    return {"service_cmds_per_s": len(stream) / elapsed, "state_hash": f"{live_hash:016x}"}


def run_replay_bench(commands: int = 1_000_000, seed: int = 1, dsn: str | None = None,
                     repeats: int = 5) -> dict:
    """Load the mixed workload through DurableCore, then replay it ``repeats`` times (median)."""
    workload = mixed_workload(commands, seed=seed)
    with _server(dsn, None) as admin_dsn:
        bench_dsn = uvloop.run(_fresh_database(admin_dsn, "matchcore_replay_bench"))
        loaded = uvloop.run(_load(bench_dsn, workload))
        seconds = []
        with Journal(bench_dsn) as journal:
            for _ in range(repeats):
                start = time.perf_counter()
                result = replay(journal, verify=True)
                seconds.append(time.perf_counter() - start)
        elapsed = statistics.median(seconds)
        if f"{result.engine.state_hash():016x}" != loaded["state_hash"]:
            raise AssertionError("replay did not reproduce the live state hash")
    return {"replay_commands": len(workload.all()), **loaded,
            "replay_cmds_per_s": result.commands / elapsed, "replayed_batches": result.batches,
            "replay_cmds_per_s_runs": [result.commands / s for s in seconds]}
