"""A small journal written the way the server writes it (a real Engine's commands and events,
one row per batch, the engine config in meta, a snapshot), for the quants' tests."""
from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import numpy as np

from matchcore.bench.workload import mixed_workload
from matchcore.core import Engine
from matchcore.persistence import Batch, apply_schema, insert_batch, take_journal
from matchcore.persistence.journal import AsyncJournal
from matchcore.persistence.replay import CONFIG_META_KEY, config_to_meta

#: the first command's time stamp; each later command is STEP_NS later
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
STEP_NS = 1_000_000  # 1 ms


def write_engine_journal(dsn: str, commands: int = 3_000, batch_commands: int = 250,
                         snapshot_seq: int | None = None) -> Engine:
    """Journal ``commands`` mixed commands (after the workload's setup) in rows of
    ``batch_commands``; with ``snapshot_seq`` (a row's last seq), store a snapshot there.
    Returns the engine at the journal's end."""
    workload = mixed_workload(commands, seed=3, accounts=50, instruments=2)
    stream = np.concatenate([workload.setup, workload.commands])
    stream["seq"] = np.arange(1, len(stream) + 1, dtype=np.uint64)
    stream["timestamp_ns"] = START_NS + (stream["seq"].astype(np.int64) - 1) * STEP_NS
    engine = Engine(workload.config)

    async def scenario() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await apply_schema(connection)
            journal = AsyncJournal(connection)
            await journal.write_meta(CONFIG_META_KEY, config_to_meta(workload.config))
            epoch = await take_journal(connection, "quant fixture")
            for start in range(0, len(stream), batch_commands):
                chunk = stream[start:start + batch_commands].copy()
                await insert_batch(connection, Batch(chunk, engine.apply(chunk)), epoch=epoch)
                if snapshot_seq is not None and int(chunk["seq"][-1]) == snapshot_seq:
                    await journal.write_snapshot(snapshot_seq, engine.snapshot(), engine.state_hash())
        finally:
            await connection.close()

    asyncio.run(scenario())
    return engine
