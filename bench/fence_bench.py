"""``python -m matchcore.bench.fence_bench``: what the journal's fence costs a write.

The same kind of journal rows written on one connection of the embedded PostgreSQL,
alternately by a plain ``INSERT ... ON CONFLICT DO NOTHING`` (the writer before schema 4)
and by ``journal_append`` (the fence: an advisory lock taken shared, the epoch read after it,
then the same INSERT), so both see the same server, disk and moment. Prints the machine,
versions, parameters, a checksum of the rows, then p50 / mean / p99 of each and their ratio.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from matchcore.bench.machine import print_header

__all__ = ["run_fence_bench"]

_PLAIN = ("INSERT INTO journal (first_seq, last_seq, command_count, event_count, commands, events, checksum, "
          "checksum_kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (first_seq) DO NOTHING RETURNING 1")
_FENCED = "SELECT journal_append($1, $2, $3, $4, $5, $6, $7, $8, $9)"


async def _measure(dsn: str, rows: int, commands: int) -> tuple[dict[str, list[float]], int]:
    import asyncpg

    from matchcore.bench.synthetic import synthetic_chunk
    from matchcore.persistence import Batch, apply_schema, take_journal
    from matchcore.persistence.batch import CRC32C

    connection = await asyncpg.connect(dsn)
    try:
        await apply_schema(connection)
        epoch = await take_journal(connection, "fence bench")
        rng, seq, checksum = np.random.default_rng(1), 1, 0
        timings: dict[str, list[float]] = {"plain": [], "fenced": []}
        for _ in range(rows):
            for kind in ("plain", "fenced"):
                batch = Batch(*synthetic_chunk(rng, seq, commands))
                checksum = zlib.crc32(batch.checksum.to_bytes(8, "little"), checksum)
                values = (batch.first_seq, batch.last_seq, batch.command_count, batch.event_count, batch.commands,
                          batch.events, batch.checksum, CRC32C)
                started = time.perf_counter()
                if kind == "plain":
                    await connection.fetchval(_PLAIN, *values)
                else:
                    await connection.fetchval(_FENCED, epoch, *values)
                timings[kind].append((time.perf_counter() - started) * 1e6)
                seq += commands
        return timings, checksum
    finally:
        await connection.close()


def run_fence_bench(rows: int = 400, commands: int = 4096) -> dict[str, float]:
    from matchcore.persistence.embedded import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="matchcore-fence-"))
    base.chmod(0o755)  # as root, the server's OS user must enter it
    server = EmbeddedPostgres(base / "pg")
    server.start()
    try:
        timings, checksum = asyncio.run(_measure(server.create_database("fence"), rows, commands))
    finally:
        server.stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
    print_header("journal fence: plain INSERT vs journal_append, interleaved", {"rows": rows, "commands": commands})
    print(f"checksum: {checksum:08x}")
    out: dict[str, float] = {}
    for kind, values in timings.items():
        for name, value in (("p50", np.percentile(values, 50)), ("mean", np.mean(values)),
                            ("p99", np.percentile(values, 99))):
            out[f"{kind}_us_{name}"] = round(float(value), 1)
    out["fenced_over_plain_mean"] = round(out["fenced_us_mean"] / out["plain_us_mean"], 4)
    for key, value in out.items():
        print(f"{key:>24}: {value}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=400, help="rows of each kind")
    parser.add_argument("--commands", type=int, default=4096, help="commands a row")
    args = parser.parse_args()
    run_fence_bench(args.rows, args.commands)


if __name__ == "__main__":
    main()
