"""The database schema matchcore owns: versioned migrations, applied at start.

``schema_version`` holds one row per applied migration. ``apply_schema`` brings a database up
to ``SCHEMA_VERSION`` inside one transaction under an advisory lock (two processes starting
together apply it once) and refuses, with ``SchemaVersionError``, a database whose version is
newer than this code knows. ``check_schema`` only reads the version, for read-only clients.

Payload columns use ``STORAGE EXTERNAL``: out of line, uncompressed. The payloads are packed
binary records that compress poorly, and PostgreSQL's default compression cut the journal's
throughput about 7x when measured.

A retired migration keeps its number; a new one is appended with the next number.
"""
from __future__ import annotations

import asyncpg

from matchcore.persistence.errors import SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "apply_schema", "check_schema", "schema_version"]

# Key of the advisory lock held while migrating ("matchcor" in ASCII; fits a signed int64);
# the fence's is "mcfence!" (FENCE_LOCK_KEY).
_MIGRATION_LOCK_KEY = 0x6D61746368636F72
FENCE_LOCK_KEY = 7882256358658237729

_V1 = """
CREATE TABLE journal (
    first_seq     bigint      PRIMARY KEY,
    last_seq      bigint      NOT NULL,
    command_count integer     NOT NULL,
    event_count   integer     NOT NULL,
    commands      bytea       NOT NULL,
    events        bytea       NOT NULL,
    checksum      bigint      NOT NULL,
    written_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT journal_first_seq_positive CHECK (first_seq >= 1),
    CONSTRAINT journal_command_count_matches CHECK (command_count = last_seq - first_seq + 1),
    CONSTRAINT journal_event_count_not_negative CHECK (event_count >= 0)
);
ALTER TABLE journal
    ALTER COLUMN commands SET STORAGE EXTERNAL,
    ALTER COLUMN events SET STORAGE EXTERNAL;
COMMENT ON TABLE journal IS
    'matchcore journal: one row per batch of commands first_seq..last_seq and their events, '
    'packed COMMAND_DTYPE/EVENT_DTYPE records; checksum = CRC-32 (zlib) of header and payload';

CREATE TABLE snapshot (
    seq          bigint      PRIMARY KEY,
    state        bytea       NOT NULL,
    state_hash   bigint      NOT NULL,
    checksum     bigint      NOT NULL,
    state_bytes  bigint      NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshot_seq_not_negative CHECK (seq >= 0)
);
ALTER TABLE snapshot ALTER COLUMN state SET STORAGE EXTERNAL;
COMMENT ON TABLE snapshot IS
    'matchcore engine state after applying command seq; state_hash is the uint64 hash stored '
    'as two''s complement; checksum = CRC-32 (zlib) of seq and state';

CREATE TABLE meta (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE meta IS 'matchcore settings stored beside the journal (engine config, ...)';
"""

# Rows written from now on carry CRC-32C (kind 2, about 3x faster than zlib's CRC-32 here);
# rows already written keep kind 1 and are still checked with CRC-32. No default for new
# rows: the writer names the kind it computed.
_V2 = """
ALTER TABLE journal ADD COLUMN checksum_kind smallint NOT NULL DEFAULT 1;
ALTER TABLE journal ALTER COLUMN checksum_kind DROP DEFAULT;
ALTER TABLE journal ADD CONSTRAINT journal_checksum_kind_known CHECK (checksum_kind IN (1, 2));
COMMENT ON TABLE journal IS
    'matchcore journal: one row per batch of commands first_seq..last_seq and their events, '
    'packed COMMAND_DTYPE/EVENT_DTYPE records; checksum of header and payload: '
    'checksum_kind 1 = CRC-32 (zlib), 2 = CRC-32C (Castagnoli)';
"""

# Market data checkpoints: a replica engine's state and the feed's state (md_seq and the last
# BBO per instrument) after command seq, so the feed continues with the same numbering
# after a restart without replaying the journal from its start (docs/marketdata.md).
_V3 = """
CREATE TABLE marketdata_checkpoint (
    seq          bigint      PRIMARY KEY,
    engine_state bytea       NOT NULL,
    feed_state   bytea       NOT NULL,
    checksum     bigint      NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT marketdata_checkpoint_seq_not_negative CHECK (seq >= 0)
);
ALTER TABLE marketdata_checkpoint
    ALTER COLUMN engine_state SET STORAGE EXTERNAL,
    ALTER COLUMN feed_state SET STORAGE EXTERNAL;
COMMENT ON TABLE marketdata_checkpoint IS
    'matchcore market data feed state after command seq: engine snapshot words and the feed state '
    '(md_seqs u64, tops i64[4] per instrument); checksum = CRC-32 (zlib) of seq and both payloads';
"""

# The journal's fence: one active writer at a time. ``journal_take`` bumps the epoch under the
# exclusive advisory lock FENCE_LOCK_KEY (it waits for writes in flight); every journal write
# (``journal_append``) and every confirmation (``journal_confirm``) takes the lock shared and
# checks the epoch with a snapshot taken after the lock (each statement of a volatile function
# has its own), so no write of an older epoch can commit after a takeover. A mismatch raises
# SQLSTATE MC001. ``journal_confirm`` writes (it counts itself in the fence row), so its commit
# waits for the synchronous standby like a journal row (a transaction that wrote no WAL does
# not wait: PostgreSQL's RecordTransactionCommit); see docs/operations.md.
_V4 = """
CREATE TABLE journal_fence (
    id        smallint    PRIMARY KEY,
    epoch     bigint      NOT NULL,
    holder    text        NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now(),
    confirmations bigint  NOT NULL DEFAULT 0,
    CONSTRAINT journal_fence_one_row CHECK (id = 1)
);
INSERT INTO journal_fence (id, epoch, holder) VALUES (1, 0, '');
COMMENT ON TABLE journal_fence IS
    'matchcore journal fence: the epoch of the one writer allowed to append (journal_take bumps it)';

CREATE FUNCTION journal_take(p_holder text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $fn$
DECLARE
    taken bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7882256358658237729);
    UPDATE journal_fence SET epoch = epoch + 1, holder = p_holder, taken_at = now()
        WHERE id = 1 RETURNING epoch INTO taken;
    RETURN taken;
END
$fn$;

CREATE FUNCTION journal_check_epoch(p_epoch bigint) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $fn$
DECLARE
    held bigint;
    held_by text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7882256358658237729);
    SELECT epoch, holder INTO held, held_by FROM journal_fence WHERE id = 1;
    IF held IS DISTINCT FROM p_epoch THEN
        RAISE EXCEPTION 'journal fenced: epoch % (%) holds the journal, this writer has epoch %',
            held, held_by, p_epoch USING ERRCODE = 'MC001';
    END IF;
END
$fn$;

CREATE FUNCTION journal_append(p_epoch bigint, p_first_seq bigint, p_last_seq bigint,
                               p_command_count integer, p_event_count integer, p_commands bytea,
                               p_events bytea, p_checksum bigint, p_checksum_kind smallint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $fn$
BEGIN
    PERFORM journal_check_epoch(p_epoch);
    INSERT INTO journal (first_seq, last_seq, command_count, event_count, commands, events,
                         checksum, checksum_kind)
    VALUES (p_first_seq, p_last_seq, p_command_count, p_event_count, p_commands, p_events,
            p_checksum, p_checksum_kind)
    ON CONFLICT (first_seq) DO NOTHING;
    RETURN FOUND;
END
$fn$;

CREATE FUNCTION journal_confirm(p_epoch bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $fn$
DECLARE
    done bigint;
BEGIN
    PERFORM journal_check_epoch(p_epoch);
    UPDATE journal_fence SET confirmations = confirmations + 1 WHERE id = 1
        RETURNING confirmations INTO done;
    RETURN done;
END
$fn$;
"""

# Rows commit in seq order, so that every reader sees a journal without gaps even while the
# writer keeps two rows in flight (on two connections). After its INSERT, a row locks the
# fence row (FOR NO KEY UPDATE): that waits for the commit (or abort) of a row in flight that
# locked it first, i.e. the row before it, whose INSERT work has overlapped this one's. Then
# (a new snapshot: each statement of a volatile function takes one) the row ending just
# before this one must be there; if not (it failed, or it has not reached its lock yet) the
# statement raises SQLSTATE MC002 and stores nothing: the writer sends it again once the row
# before it is committed. A retry whose row is already there returns false before the lock.
_V5 = """
CREATE OR REPLACE FUNCTION journal_append(p_epoch bigint, p_first_seq bigint, p_last_seq bigint,
                               p_command_count integer, p_event_count integer, p_commands bytea,
                               p_events bytea, p_checksum bigint, p_checksum_kind smallint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SET search_path FROM CURRENT AS $fn$
DECLARE
    previous bigint;
BEGIN
    PERFORM journal_check_epoch(p_epoch);
    INSERT INTO journal (first_seq, last_seq, command_count, event_count, commands, events,
                         checksum, checksum_kind)
    VALUES (p_first_seq, p_last_seq, p_command_count, p_event_count, p_commands, p_events,
            p_checksum, p_checksum_kind)
    ON CONFLICT (first_seq) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM journal_fence WHERE id = 1 FOR NO KEY UPDATE;
    IF p_first_seq > 1 THEN
        SELECT last_seq INTO previous FROM journal WHERE first_seq < p_first_seq
            ORDER BY first_seq DESC LIMIT 1;
        IF previous IS DISTINCT FROM p_first_seq - 1 THEN
            RAISE EXCEPTION 'journal row % reached its commit before the row ending at seq % '
                'was committed (the journal ends at %)', p_first_seq, p_first_seq - 1, previous
                USING ERRCODE = 'MC002';
        END IF;
    END IF;
    RETURN true;
END
$fn$;
"""

#: (version, description, SQL). Never edit an applied one; append.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "journal, snapshot and meta tables", _V1),
    (2, "journal rows name their checksum algorithm; CRC-32C from now on", _V2),
    (3, "market data checkpoints", _V3),
    (4, "the journal's fence: one writer's epoch, checked by every journal write", _V4),
    (5, "journal rows commit in seq order (two may be in flight)", _V5),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    description text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


async def schema_version(connection: asyncpg.Connection) -> int | None:
    """The database's schema version, or None when it has no matchcore schema."""
    exists = await connection.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return None
    version = await connection.fetchval("SELECT max(version) FROM schema_version")
    return None if version is None else int(version)


async def apply_schema(connection: asyncpg.Connection) -> int:
    """Bring the database to ``SCHEMA_VERSION``; return the version it was at (0: new).

    Raises SchemaVersionError if the database is newer than this code.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
        await connection.execute(_CREATE_VERSION_TABLE)
        found = await schema_version(connection) or 0
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(found, SCHEMA_VERSION)
        for version, description, sql in MIGRATIONS:
            if version <= found:
                continue
            await connection.execute(sql)
            await connection.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                version, description)
    return found


async def check_schema(connection: asyncpg.Connection) -> int:
    """Raise SchemaVersionError unless the database is exactly at ``SCHEMA_VERSION``."""
    found = await schema_version(connection)
    if found != SCHEMA_VERSION:
        raise SchemaVersionError(found, SCHEMA_VERSION)
    return found
