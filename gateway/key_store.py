"""The PostgreSQL key registry: client public keys in a table the gateway owns.

Only Ed25519 public keys are stored (32 bytes each), so nothing in the database lets anyone
log in. A key belongs to one account; the admin right belongs to the key. Revoking keeps the
row (``revoked_at``) so a key id is never reused. The table is created at start if missing
(``ensure_schema``); it lives beside the journal, in the same database.

Every login looks its key up in the table (no cache), so a revocation takes effect at the
next login; and a trigger sends ``pg_notify(KEY_CHANGED_CHANNEL, key_id)`` on every update
or delete of a key row, which ``key_watch.KeyWatch`` listens to so that the key's open
sessions end too. ``matchcore keys add|list|revoke`` uses the same class.
"""
from __future__ import annotations

import asyncpg

from matchcore.gateway.keys import PUBLIC_KEY_SIZE, KeyRecord, KeyRegistry, checked_new_key

__all__ = ["PgKeyRegistry", "ensure_schema", "KEY_TABLE", "KEY_CHANGED_CHANNEL"]

KEY_TABLE = "gateway_key"
#: NOTIFY channel of the key table's trigger; the payload is the key id (decimal text).
KEY_CHANGED_CHANNEL = "matchcore_key_changed"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {KEY_TABLE} (
    key_id      bigserial PRIMARY KEY,
    account_id  bigint NOT NULL CHECK (account_id BETWEEN 0 AND 4294967295),
    public_key  bytea NOT NULL UNIQUE CHECK (length(public_key) = {PUBLIC_KEY_SIZE}),
    admin       boolean NOT NULL DEFAULT false,
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS {KEY_TABLE}_account ON {KEY_TABLE} (account_id);
ALTER TABLE {KEY_TABLE} ADD COLUMN IF NOT EXISTS market_data_only boolean NOT NULL DEFAULT false;
CREATE OR REPLACE FUNCTION {KEY_TABLE}_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{KEY_CHANGED_CHANNEL}', coalesce(NEW.key_id, OLD.key_id)::text);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {KEY_TABLE}_changed ON {KEY_TABLE};
CREATE TRIGGER {KEY_TABLE}_changed AFTER UPDATE OR DELETE ON {KEY_TABLE}
    FOR EACH ROW EXECUTE FUNCTION {KEY_TABLE}_changed();
"""
_COLUMNS = "key_id, account_id, public_key, admin, revoked_at IS NOT NULL AS revoked, market_data_only"


async def ensure_schema(connection: asyncpg.Connection) -> None:
    """Create the key table if it is not there (idempotent, safe with concurrent starts)."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(7400001)")
        await connection.execute(_SCHEMA)


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(int(row["key_id"]), int(row["account_id"]), bytes(row["public_key"]),
                     bool(row["admin"]), bool(row["revoked"]), bool(row["market_data_only"]))


class PgKeyRegistry(KeyRegistry):
    """A ``KeyRegistry`` in PostgreSQL. ``await PgKeyRegistry.connect(dsn)``; ``close()``."""

    __slots__ = ("_pool",)

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, pool_size: int = 2, timeout_s: float = 10.0) -> "PgKeyRegistry":
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size, timeout=timeout_s,
                                         server_settings={"application_name": "matchcore-keys"})
        try:
            async with pool.acquire() as connection:
                await ensure_schema(connection)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def lookup(self, key_id: int) -> KeyRecord | None:
        if not 0 < key_id < 1 << 63:
            return None
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM {KEY_TABLE} WHERE key_id = $1", key_id)
        return None if row is None else _record(row)

    async def lookup_many(self, key_ids: list[int]) -> dict[int, KeyRecord]:
        wanted = [key_id for key_id in key_ids if 0 < key_id < 1 << 63]
        if not wanted:
            return {}
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM {KEY_TABLE} WHERE key_id = ANY($1::bigint[])",
                                      wanted)
        return {int(row["key_id"]): _record(row) for row in rows}

    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False,
                  label: str = "", market_data_only: bool = False) -> KeyRecord:
        public_key = checked_new_key(account_id, public_key)
        if admin and market_data_only:
            raise ValueError("a key is either admin or market-data-only")
        row = await self._pool.fetchrow(
            f"INSERT INTO {KEY_TABLE} (account_id, public_key, admin, label, market_data_only) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_COLUMNS}", account_id, public_key, admin, label,
            market_data_only)
        return _record(row)

    async def revoke(self, key_id: int) -> bool:
        if not 0 < key_id < 1 << 63:
            return False
        row = await self._pool.fetchrow(
            f"UPDATE {KEY_TABLE} SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1 "
            f"RETURNING key_id", key_id)
        return row is not None

    async def list(self, account_id: int | None = None) -> list[KeyRecord]:
        if account_id is None:
            rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM {KEY_TABLE} ORDER BY key_id")
        else:
            rows = await self._pool.fetch(
                f"SELECT {_COLUMNS} FROM {KEY_TABLE} WHERE account_id = $1 ORDER BY key_id", account_id)
        return [_record(row) for row in rows]
