"""Checkpoints of the account event counters, so a start does not rescan the whole journal.

Each account's last event sequence number is a function of the journal (streams.py); a
checkpoint stores all of them as of a journal row's last seq, in a table the gateway owns.
At start the server loads the newest checkpoint at or before the journal's end and routes
only the rows after it. Checkpoints are written every ``stream_checkpoint_every_commands``
and at a clean stop; the newest ``KEPT`` are kept. A missing or unusable checkpoint only
means a longer start (a scan from seq 1), never a wrong number: a checkpoint is written
after the rows it covers are committed, and a checkpoint beyond the journal's end is ignored.

Replaying events older than a checkpoint from the journal still works: the per-account
index then starts at seq 1 for them, which is slower but exact.
"""
from __future__ import annotations

import asyncpg
import numpy as np

__all__ = ["CHECKPOINT_TABLE", "KEPT", "ensure_schema", "read_latest", "write"]

CHECKPOINT_TABLE = "gateway_stream_checkpoint"
KEPT = 4

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (
    seq         bigint PRIMARY KEY,
    accounts    bytea NOT NULL,
    counts      bytea NOT NULL,
    written_at  timestamptz NOT NULL DEFAULT now()
);
"""


async def ensure_schema(connection: asyncpg.Connection) -> None:
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(7400002)")
        await connection.execute(_SCHEMA)


async def read_latest(connection: asyncpg.Connection, at_most_seq: int) -> tuple[int, np.ndarray, np.ndarray] | None:
    """(seq, accounts u4, counts u8) of the newest checkpoint with seq <= at_most_seq."""
    row = await connection.fetchrow(
        f"SELECT seq, accounts, counts FROM {CHECKPOINT_TABLE} WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
        at_most_seq)
    if row is None:
        return None
    accounts = np.frombuffer(row["accounts"], "<u4")
    counts = np.frombuffer(row["counts"], "<u8")
    if len(accounts) != len(counts):
        return None
    return int(row["seq"]), accounts, counts


async def write(connection: asyncpg.Connection, seq: int, accounts: np.ndarray, counts: np.ndarray) -> None:
    """Store a checkpoint (idempotent per seq) and drop all but the newest ``KEPT``."""
    async with connection.transaction():
        await connection.execute(
            f"INSERT INTO {CHECKPOINT_TABLE} (seq, accounts, counts) VALUES ($1, $2, $3) "
            f"ON CONFLICT (seq) DO NOTHING", seq, accounts.astype("<u4").tobytes(), counts.astype("<u8").tobytes())
        await connection.execute(
            f"DELETE FROM {CHECKPOINT_TABLE} WHERE seq < (SELECT min(seq) FROM "
            f"(SELECT seq FROM {CHECKPOINT_TABLE} ORDER BY seq DESC LIMIT {KEPT}) AS newest)")
