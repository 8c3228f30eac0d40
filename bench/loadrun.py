"""A durable core under a seeded load, as a process of its own: ``python -m
matchcore.bench.loadrun --dsn DSN``. Used by the crash tests and ``bench journal``.

The workload is deterministic (``bench.workload.mixed_workload``), so a restarted process
resumes it exactly: the command with seq s is ``workload.all()[s - 1]``. Each released batch
prints ``released <last_seq>`` on stdout (flushed), so a test that kills the process with
SIGKILL knows what had been acknowledged.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from matchcore.bench.workload import mixed_workload
from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig
from matchcore.persistence.writer import WriterConfig


def workload_for(commands: int, seed: int):
    return mixed_workload(commands, seed=seed, accounts=200, instruments=4)


async def run(dsn: str, commands: int, seed: int, snapshot_every: int, chunk: int,
              rate_per_s: float = 0.0) -> int:
    workload = workload_for(commands, seed)
    stream = workload.all()
    service = DurableCore(dsn, workload.config, config=DurableCoreConfig(
        snapshot_every_commands=snapshot_every, writer=WriterConfig(journal_batch_records_max=4096)),
        on_release=lambda batch: print(f"released {batch.last_seq}", flush=True))
    recovered = await service.start()
    print(f"recovered {recovered.last_seq} snapshot {recovered.snapshot_seq}", flush=True)
    position = recovered.last_seq
    loop = asyncio.get_running_loop()
    started_at, started_position = loop.time(), position
    while position < len(stream):
        await service.submit_all(stream[position:position + chunk])
        position = min(position + chunk, len(stream))
        due = started_at + (position - started_position) / rate_per_s if rate_per_s else 0.0
        await asyncio.sleep(max(0.0, due - loop.time()))
    await service.wait_released(len(stream))
    await service.stop()
    print(f"done {len(stream)} hash {service.engine.state_hash():016x}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--commands", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--snapshot-every", type=int, default=50_000)
    parser.add_argument("--chunk", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=0.0, help="commands/s offered (0: as fast as possible)")
    args = parser.parse_args(argv)
    return uvloop.run(run(args.dsn, args.commands, args.seed, args.snapshot_every, args.chunk,
                          args.rate))


if __name__ == "__main__":
    sys.exit(main())
