"""Cancel-on-disconnect that survives a crash.

A session that logs in with CANCEL_ON_DISCONNECT has its account's orders canceled when it
ends. A clean end submits the MASS_CANCEL at once (``Session.on_connection_lost``); a crash
(kill -9, power) ends every session with no chance to submit anything. So the server writes a
row per open COD session into ``gateway_cancel_on_disconnect`` *before* it sends
LOGIN_ACCEPTED, and deletes it only once that session's MASS_CANCEL is journaled (seen in a
released batch). At start, before the port opens, every account with a row left is
mass-canceled (journaled like any command) and the rows are deleted: a COD session's orders
never outlive it, whatever ended it.

The table is in the journal's database, beside the journal: the rows are facts about the
sessions, not about the engine, so they are not engine commands.
"""
from __future__ import annotations

import secrets

import asyncpg

__all__ = ["COD_TABLE", "CancelOnDisconnectRows"]

COD_TABLE = "gateway_cancel_on_disconnect"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {COD_TABLE} (
    session_key text PRIMARY KEY,
    account_id  bigint NOT NULL CHECK (account_id BETWEEN 0 AND 4294967295),
    opened_at   timestamptz NOT NULL DEFAULT now()
);
"""


class CancelOnDisconnectRows:
    """The rows of one server instance (its ``boot`` prefix makes its session keys unique)."""

    __slots__ = ("pool", "boot", "_timeout_s")

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float = 5.0) -> None:
        self.pool = pool
        self.boot = secrets.token_hex(8)
        self._timeout_s = timeout_s

    def session_key(self, session_id: int) -> str:
        return f"{self.boot}:{session_id}"

    async def ensure_schema(self) -> None:
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(7400003)")
                await connection.execute(_SCHEMA)

    async def open(self, session_id: int, account_id: int) -> None:
        """Before LOGIN_ACCEPTED: this session's orders must be canceled if it dies."""
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            await connection.execute(
                f"INSERT INTO {COD_TABLE} (session_key, account_id) VALUES ($1, $2) "
                f"ON CONFLICT (session_key) DO NOTHING", self.session_key(session_id), account_id,
                timeout=self._timeout_s)

    async def closed(self, session_keys: list[str]) -> None:
        """These sessions' MASS_CANCELs are journaled: forget them."""
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            await connection.execute(f"DELETE FROM {COD_TABLE} WHERE session_key = ANY($1::text[])",
                                     session_keys, timeout=self._timeout_s)

    async def left_open(self) -> list[int]:
        """Accounts of COD sessions no MASS_CANCEL was journaled for (a crash), ascending."""
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            rows = await connection.fetch(f"SELECT DISTINCT account_id FROM {COD_TABLE} ORDER BY account_id")
        return [int(row["account_id"]) for row in rows]

    async def forget_mine(self) -> None:
        """A clean stop journaled this instance's MASS_CANCELs: its rows go."""
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            await connection.execute(f"DELETE FROM {COD_TABLE} WHERE session_key LIKE $1",
                                     f"{self.boot}:%", timeout=self._timeout_s)

    async def forget_all_but_mine(self) -> None:
        """After the start's MASS_CANCELs are journaled: the older instances' rows go."""
        async with self.pool.acquire(timeout=self._timeout_s) as connection:
            await connection.execute(f"DELETE FROM {COD_TABLE} WHERE session_key NOT LIKE $1",
                                     f"{self.boot}:%", timeout=self._timeout_s)
