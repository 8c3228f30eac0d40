"""Reading the journal back: batches as numpy arrays, trades, one account's history, snapshots.

``AsyncJournal`` is the asyncio API; ``Journal`` wraps it for plain (and notebook) code by
running it on a private event loop in a background thread. Both read rows page by page in seq
order (keyset pagination on the primary key, so memory stays bounded by the page, whatever
the journal's size) and check, for every row, its checksum and that it starts right after the
previous one: a bad checksum raises ``ChecksumError`` naming the row's first seq, a missing
seq ``SequenceGapError`` naming it. Journals start at seq ``FIRST_SEQ`` (1).

Arrays are ``np.frombuffer`` views of the fetched bytes: zero-copy and read-only.

Every read also takes a time range, ``since``/``until``: half-open, ``since <= t < until``,
each an aware ``datetime`` or int nanoseconds since the epoch (UTC), on the commands' stamps
(``timestamp_ns``, set by the gateway when it sequences a command; a command's events carry
its stamp). The range is turned into seqs by a binary search over seqs (``seq_range``): each
probe reads one command's 8-byte stamp out of its row (a ``substring`` of the out-of-line,
uncompressed payload, so PostgreSQL reads one TOAST chunk, not the row), about
log2(commands) probes in all, whatever the journal's size. It relies on stamps that do not go
down along seqs: they are the server's wall clock, so a clock stepped back makes the range's
ends one boundary among several. Given with seqs too, both apply (the intersection).

Snapshots are the engine's state after applying command ``seq``, with the engine's uint64
state hash (stored as two's complement in a bigint) and a CRC-32 of seq and state.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import threading
import zlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar, Union

import asyncpg
import numpy as np

from matchcore.core.codes import EventKind
from matchcore.core.records import COMMAND_DTYPE, EVENT_DTYPE
from matchcore.persistence.batch import Batch, seq_slice
from matchcore.persistence.errors import (
    ChecksumError,
    ConflictingBatchError,
    SequenceGapError,
    SequenceOverlapError,
)
from matchcore.persistence.schema import apply_schema, check_schema

__all__ = ["AccountHistory", "AsyncJournal", "DATABASE_ERRORS", "FIRST_SEQ", "Journal", "Snapshot",
           "TimePoint", "time_ns"]

#: What a statement can raise when the database is unreachable, goes away mid-way or refuses
#: it: the network, a timeout, an error from the server, and asyncpg's own errors about a
#: connection that broke under it (closed, or left mid-operation: InternalClientError).
#: Callers that keep going without the database (checkpoints, snapshots, queries) catch these.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
    asyncpg.InternalClientError)

#: The seq of the first command of every journal.
FIRST_SEQ = 1
#: Rows fetched per round trip when iterating (a row holds up to a few MB).
PAGE_ROWS = 16

_ROW_COLUMNS = ("first_seq, last_seq, command_count, event_count, commands, events, checksum, "
                "checksum_kind")
_START_ROW = "SELECT max(first_seq) FROM journal WHERE first_seq <= $1"
_PAGE = (f"SELECT {_ROW_COLUMNS} FROM journal WHERE first_seq >= $1 AND first_seq <= $2 "
         f"ORDER BY first_seq LIMIT $3")
_LAST_SEQ = "SELECT last_seq FROM journal ORDER BY first_seq DESC LIMIT 1"
# the stamp of command $1, read out of the row holding it (1-based substring offsets)
_STAMP_OFFSET = COMMAND_DTYPE.fields["timestamp_ns"][1]
_STAMP_AT = (f"SELECT first_seq, last_seq, substring(commands FROM "
             f"(($1 - first_seq) * {COMMAND_DTYPE.itemsize} + {_STAMP_OFFSET + 1})::integer FOR 8) "
             f"FROM journal WHERE first_seq <= $1 ORDER BY first_seq DESC LIMIT 1")
_UINT64 = 1 << 64
_INT64_MAX = (1 << 63) - 1


class Snapshot:
    """The engine state after command ``seq``."""

    __slots__ = ("seq", "state", "state_hash", "written_at")

    def __init__(self, seq: int, state: bytes, state_hash: int, written_at: datetime):
        self.seq = seq
        self.state = state
        #: the engine's uint64 state hash
        self.state_hash = state_hash
        self.written_at = written_at

    def __repr__(self) -> str:
        return f"Snapshot(seq={self.seq}, state_bytes={len(self.state)}, hash={self.state_hash:#x})"


class AccountHistory:
    """One account's commands, and the events that concern it (as owner or as counterparty)."""

    __slots__ = ("account_id", "commands", "events")

    def __init__(self, account_id: int, commands: np.ndarray, events: np.ndarray):
        self.account_id = account_id
        self.commands = commands
        self.events = events

    def __repr__(self) -> str:
        return (f"AccountHistory(account_id={self.account_id}, commands={len(self.commands)}, "
                f"events={len(self.events)})")


#: A point in time: an aware datetime, or int nanoseconds since the epoch (UTC).
TimePoint = Union[datetime, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def time_ns(point: TimePoint) -> int:
    """``point`` as int nanoseconds since the epoch (UTC); ValueError for a naive datetime
    (its zone would be a guess)."""
    if isinstance(point, datetime):
        if point.tzinfo is None or point.utcoffset() is None:
            raise ValueError(f"{point.isoformat()} has no time zone: give an aware datetime "
                             f"(tzinfo=timezone.utc) or int nanoseconds since the epoch")
        delta = point - _EPOCH  # exact: integer days, seconds and microseconds
        return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    if isinstance(point, (int, np.integer)) and not isinstance(point, bool):
        return int(point)
    raise TypeError(f"a time must be a datetime or int nanoseconds, not {type(point).__name__}")


def snapshot_checksum(seq: int, state: bytes) -> int:
    """CRC-32 (zlib) of the little-endian u64 seq followed by the state bytes."""
    return zlib.crc32(state, zlib.crc32(struct.pack("<Q", seq)))


class AsyncJournal:
    """Read access to a journal (plus snapshots and meta). ``await AsyncJournal.connect(dsn)``.

    Over one connection (``connect``: a script's, closed by ``close``) or over a pool
    (``connect_pool``: a server's). A pool replaces a connection the database closed (a
    restart, a disk-full episode, an administrator's ``pg_terminate_backend``) at the next
    call, and lets several readers (catch-up replays) work at once: each call, and each
    ``batches`` iteration for as long as it runs, holds a connection of its own.
    """

    __slots__ = ("_connection", "_pool")

    def __init__(self, connection: asyncpg.Connection | None = None, *, pool: asyncpg.Pool | None = None):
        if (connection is None) == (pool is None):
            raise ValueError("give a connection or a pool")
        self._connection = connection
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, *, apply: bool = False, timeout_s: float = 10.0) -> "AsyncJournal":
        """Connect; check the schema version (or, with ``apply``, bring it up to date)."""
        connection = await asyncpg.connect(
            dsn, timeout=timeout_s, server_settings={"application_name": "matchcore-reader"})
        try:
            await (apply_schema(connection) if apply else check_schema(connection))
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    @classmethod
    async def connect_pool(cls, dsn: str, *, apply: bool = False, timeout_s: float = 10.0,
                           connections_max: int = 4, application_name: str = "matchcore-reader",
                           command_timeout_s: float | None = None) -> "AsyncJournal":
        """A pool of at most ``connections_max`` connections (opened when needed, each with
        ``timeout_s`` to connect); the schema is checked (or applied) once, now."""
        pool = await asyncpg.create_pool(
            dsn, min_size=0, max_size=connections_max, timeout=timeout_s,
            command_timeout=command_timeout_s, max_inactive_connection_lifetime=60.0,
            server_settings={"application_name": application_name})
        try:
            async with pool.acquire(timeout=timeout_s) as connection:
                await (apply_schema(connection) if apply else check_schema(connection))
        except BaseException:
            await pool.close()
            raise
        return cls(pool=pool)

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The pool (``connect_pool``), or None over a single connection."""
        return self._pool

    def acquire(self) -> "contextlib.AbstractAsyncContextManager[asyncpg.Connection]":
        """A connection for a few statements: the pool's (replaced if the database closed
        it), or the one connection."""
        if self._pool is not None:
            return self._pool.acquire()
        return contextlib.nullcontext(self._connection)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Close the connection (or the pool: waits up to ``timeout_s`` for calls in flight,
        then terminates what is left)."""
        if self._pool is None:
            await self._connection.close(timeout=timeout_s)
            return
        try:
            await asyncio.wait_for(self._pool.close(), timeout_s)
        except DATABASE_ERRORS:
            self._pool.terminate()

    async def __aenter__(self) -> "AsyncJournal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def last_seq(self) -> int:
        """The seq of the last journaled command; 0 for an empty journal."""
        async with self.acquire() as connection:
            return int(await connection.fetchval(_LAST_SEQ) or 0)

    async def batches(self, from_seq: int | None = None, to_seq: int | None = None, *,
                      verify: bool = True, read_ahead: bool = False) -> AsyncIterator[Batch]:
        """Whole rows covering ``from_seq..to_seq`` (default: all), in seq order, checked.

        With ``read_ahead`` the next page's query is in flight while the caller works on this
        page, so the connection is busy until the iteration ends or is closed: only for a
        caller that has the connection to itself and closes the iterator (``aclosing``)."""
        lower = FIRST_SEQ if from_seq is None else max(from_seq, FIRST_SEQ)
        async with contextlib.aclosing(self._pages(from_seq, to_seq, read_ahead)) as pages:
            async for rows in pages:
                for row in rows:
                    batch = Batch.from_row(*row, verify=verify)
                    if batch.last_seq >= lower:
                        yield batch

    async def _pages(self, from_seq: int | None, to_seq: int | None,
                     read_ahead: bool) -> AsyncIterator[list[asyncpg.Record]]:
        """The rows covering ``from_seq..to_seq`` a page at a time (keyset pagination on the
        primary key), each row checked to start right after the one before; checksums are
        the caller's. With ``read_ahead``, the next page is asked for before this one is
        handed out; closing the iterator waits for that query, so the connection is free."""
        lower = FIRST_SEQ if from_seq is None else max(from_seq, FIRST_SEQ)
        upper = _INT64_MAX if to_seq is None else min(to_seq, _INT64_MAX)
        async with self.acquire() as connection:
            # closed before the connection goes back: a read-ahead query is then finished
            async with contextlib.aclosing(self._pages_on(connection, lower, upper, read_ahead)) as pages:
                async for rows in pages:
                    yield rows

    async def _pages_on(self, connection: asyncpg.Connection, lower: int, upper: int,
                        read_ahead: bool) -> AsyncIterator[list[asyncpg.Record]]:
        start = await connection.fetchval(_START_ROW, lower)
        cursor = lower if start is None else int(start)
        expected: int | None = None  # the seq the next row must start with
        fetch = connection.fetch
        pending: asyncio.Future | None = None
        try:
            rows = await fetch(_PAGE, cursor, upper, PAGE_ROWS) if cursor <= upper else []
            while True:
                more = len(rows) == PAGE_ROWS
                if more:
                    cursor = int(rows[-1]["first_seq"]) + 1
                    more = cursor <= upper
                if more and read_ahead:
                    pending = asyncio.ensure_future(fetch(_PAGE, cursor, upper, PAGE_ROWS))
                for row in rows:
                    _check_continues(row["first_seq"], row["last_seq"], expected, lower)
                    expected = row["last_seq"] + 1
                if rows:
                    yield rows
                if not more:
                    return
                if pending is not None:
                    rows, pending = await pending, None
                else:
                    rows = await fetch(_PAGE, cursor, upper, PAGE_ROWS)
        finally:
            if pending is not None:  # let the query finish: the connection is then free
                try:
                    await pending
                except Exception:
                    pass

    async def seq_range(self, from_seq: int | None = None, to_seq: int | None = None, *,
                        since: TimePoint | None = None,
                        until: TimePoint | None = None) -> tuple[int, int]:
        """The seqs ``(first, last)`` (inclusive) of the commands in ``from_seq..to_seq`` that
        are stamped in ``[since, until)``; ``first > last`` when there is none. Without a time,
        the seq bounds as given (``to_seq`` default: the journal's last seq)."""
        lower = FIRST_SEQ if from_seq is None else max(from_seq, FIRST_SEQ)
        since_ns = None if since is None else time_ns(since)
        until_ns = None if until is None else time_ns(until)
        async with self.acquire() as connection:
            last = int(await connection.fetchval(_LAST_SEQ) or 0)
            upper = last if to_seq is None else to_seq
            searched_last = min(upper, last)  # the search reads only stored commands
            if since_ns is not None:
                lower = await _first_stamped_at(connection, since_ns, lower, searched_last)
            if until_ns is not None:
                upper = await _first_stamped_at(connection, until_ns, lower, searched_last) - 1
        return lower, upper

    async def _bounds(self, from_seq: int | None, to_seq: int | None, since: TimePoint | None,
                      until: TimePoint | None) -> tuple[int | None, int | None] | None:
        """The seq bounds of a read: as given without a time, else ``seq_range``'s; None when
        the range holds no command."""
        if since is None and until is None:
            return from_seq, to_seq
        lower, upper = await self.seq_range(from_seq, to_seq, since=since, until=until)
        return None if lower > upper else (lower, upper)

    async def commands(self, from_seq: int | None = None, to_seq: int | None = None, *,
                       since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        """The commands ``from_seq..to_seq`` stamped in ``[since, until)``, in one array (a copy)."""
        bounds = await self._bounds(from_seq, to_seq, since, until)
        if bounds is None:
            return np.empty(0, COMMAND_DTYPE)
        pieces = [seq_slice(b.commands, *bounds) async for b in self.batches(*bounds)]
        return _concatenate(pieces, COMMAND_DTYPE)

    async def events(self, from_seq: int | None = None, to_seq: int | None = None, *,
                     since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        """The events of commands ``from_seq..to_seq`` stamped in ``[since, until)``, in one
        array (a copy)."""
        bounds = await self._bounds(from_seq, to_seq, since, until)
        if bounds is None:
            return np.empty(0, EVENT_DTYPE)
        pieces = [seq_slice(b.events, *bounds) async for b in self.batches(*bounds)]
        return _concatenate(pieces, EVENT_DTYPE)

    async def trades(self, from_seq: int | None = None, to_seq: int | None = None, *,
                     since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        """The FILL events of commands ``from_seq..to_seq`` stamped in ``[since, until)``, one
        per trade."""
        bounds = await self._bounds(from_seq, to_seq, since, until)
        if bounds is None:
            return np.empty(0, EVENT_DTYPE)
        pieces = []
        async for batch in self.batches(*bounds):
            events = seq_slice(batch.events, *bounds)
            pieces.append(events[events["kind"] == EventKind.FILL])
        return _concatenate(pieces, EVENT_DTYPE)

    async def account_history(self, account_id: int, from_seq: int | None = None,
                              to_seq: int | None = None, *, since: TimePoint | None = None,
                              until: TimePoint | None = None) -> AccountHistory:
        """The account's commands, and events where it is the account or the counterparty
        (commands ``from_seq..to_seq`` stamped in ``[since, until)``)."""
        commands, events = [], []
        bounds = await self._bounds(from_seq, to_seq, since, until)
        if bounds is None:
            return AccountHistory(account_id, np.empty(0, COMMAND_DTYPE), np.empty(0, EVENT_DTYPE))
        async for batch in self.batches(*bounds):
            batch_commands = seq_slice(batch.commands, *bounds)
            batch_events = seq_slice(batch.events, *bounds)
            commands.append(batch_commands[batch_commands["account_id"] == account_id])
            concerned = (batch_events["account_id"] == account_id) | \
                (batch_events["counter_account_id"] == account_id)
            events.append(batch_events[concerned])
        return AccountHistory(account_id, _concatenate(commands, COMMAND_DTYPE),
                              _concatenate(events, EVENT_DTYPE))

    async def write_snapshot(self, seq: int, state: bytes, state_hash: int) -> bool:
        """Store the state after command ``seq``. True: stored; False: the same snapshot was
        already there. ConflictingBatchError if a different one is."""
        if not 0 <= state_hash < _UINT64:
            raise ValueError(f"state_hash={state_hash} is not a uint64")
        signed_hash = state_hash - _UINT64 if state_hash > _INT64_MAX else state_hash
        checksum = snapshot_checksum(seq, state)
        async with self.acquire() as connection:
            inserted = await connection.fetchval(
                "INSERT INTO snapshot (seq, state, state_hash, checksum, state_bytes) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (seq) DO NOTHING RETURNING 1",
                seq, state, signed_hash, checksum, len(state))
            if inserted is not None:
                return True
            stored = await connection.fetchrow(
                "SELECT state_hash, checksum FROM snapshot WHERE seq = $1", seq)
        if stored is None or tuple(stored) != (signed_hash, checksum):
            raise ConflictingBatchError(seq, f"a different snapshot is stored at seq {seq}")
        return False

    async def latest_snapshot(self, before_seq: int | None = None) -> Snapshot | None:
        """The newest snapshot with ``seq <= before_seq`` (inclusive; default: the newest)."""
        async with self.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT seq, state, state_hash, checksum, written_at FROM snapshot "
                "WHERE seq <= $1 ORDER BY seq DESC LIMIT 1",
                _INT64_MAX if before_seq is None else before_seq)
        if row is None:
            return None
        seq, state = int(row["seq"]), row["state"]
        if snapshot_checksum(seq, state) != row["checksum"]:
            raise ChecksumError(seq, f"snapshot at seq {seq} fails its checksum")
        return Snapshot(seq, state, int(row["state_hash"]) % _UINT64, row["written_at"])

    async def prune_snapshots(self, keep: int) -> int:
        """Delete all but the ``keep`` newest snapshots; returns how many were deleted."""
        if keep < 1:
            raise ValueError(f"keep={keep} must be at least 1")
        async with self.acquire() as connection:
            status = await connection.execute(
                "DELETE FROM snapshot WHERE seq < (SELECT seq FROM snapshot ORDER BY seq DESC "
                "OFFSET $1 LIMIT 1)", keep - 1)
        return int(status.split()[-1])

    async def write_marketdata_checkpoint(self, seq: int, engine_state: bytes, feed_state: bytes) -> None:
        """Store the market data feed's state after command ``seq`` (a repeat is ignored)."""
        checksum = zlib.crc32(feed_state, zlib.crc32(engine_state, zlib.crc32(seq.to_bytes(8, "little"))))
        async with self.acquire() as connection:
            await connection.execute(
                "INSERT INTO marketdata_checkpoint (seq, engine_state, feed_state, checksum) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (seq) DO NOTHING", seq, engine_state, feed_state, checksum)

    async def latest_marketdata_checkpoint(self, before_seq: int | None = None) -> tuple[int, bytes, bytes] | None:
        """(seq, engine_state, feed_state) of the newest checkpoint with ``seq <= before_seq``."""
        async with self.acquire() as connection:
            row = await connection.fetchrow(
                "SELECT seq, engine_state, feed_state, checksum FROM marketdata_checkpoint "
                "WHERE seq <= $1 ORDER BY seq DESC LIMIT 1", _INT64_MAX if before_seq is None else before_seq)
        if row is None:
            return None
        seq, engine_state, feed_state = int(row["seq"]), bytes(row["engine_state"]), bytes(row["feed_state"])
        if zlib.crc32(feed_state, zlib.crc32(engine_state, zlib.crc32(seq.to_bytes(8, "little")))) != row["checksum"]:
            raise ChecksumError(seq, f"market data checkpoint at seq {seq} fails its checksum")
        return seq, engine_state, feed_state

    async def prune_marketdata_checkpoints(self, keep: int) -> None:
        """Delete all but the ``keep`` newest market data checkpoints."""
        async with self.acquire() as connection:
            await connection.execute(
                "DELETE FROM marketdata_checkpoint WHERE seq < (SELECT seq FROM marketdata_checkpoint "
                "ORDER BY seq DESC OFFSET $1 LIMIT 1)", max(0, keep - 1))

    async def write_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serializable value under ``key`` (replacing any earlier one)."""
        async with self.acquire() as connection:
            await connection.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2::jsonb) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value, updated_at = now()", key, json.dumps(value))

    async def read_meta(self, key: str) -> Any:
        """The value stored under ``key``; None when there is none."""
        async with self.acquire() as connection:
            text = await connection.fetchval("SELECT value::text FROM meta WHERE key = $1", key)
        return None if text is None else json.loads(text)


async def _first_stamped_at(connection: asyncpg.Connection, at_ns: int, lower: int,
                            upper: int) -> int:
    """The first seq in ``lower..upper`` whose command is stamped at or after ``at_ns``;
    ``upper + 1`` when none is. A binary search over seqs (stamps do not go down along
    seqs), one stamp read a probe; at most 64 probes, as seqs are int64."""
    low, high = lower, upper + 1  # the answer is in [low, high]
    while low < high:
        middle = (low + high) // 2
        if await _stamp_at(connection, middle) >= at_ns:
            high = middle
        else:
            low = middle + 1
    return low


async def _stamp_at(connection: asyncpg.Connection, seq: int) -> int:
    """The stamp of command ``seq`` (read raw: the rows a read returns are checked then)."""
    row = await connection.fetchrow(_STAMP_AT, seq)
    if row is None or row["last_seq"] < seq:
        raise SequenceGapError(seq, f"the journal misses seq {seq}")
    return int.from_bytes(row[2], "little", signed=True)


def _check_continues(first_seq: int, last_seq: int, expected: int | None, lower: int) -> None:
    """The first row read must cover ``lower`` (or end before it); every later row must start
    right after the one before."""
    if expected is None:
        if first_seq > lower:
            raise SequenceGapError(lower, f"the journal misses seq {lower} (the first row "
                                   f"read covers {first_seq}..{last_seq})")
        return
    if first_seq > expected:
        missing = max(expected, lower)  # the first missing seq of the range asked for
        raise SequenceGapError(missing, f"the journal misses seq {missing} (the next row "
                               f"covers {first_seq}..{last_seq})")
    if first_seq < expected:
        raise SequenceOverlapError(first_seq, f"journal row {first_seq}..{last_seq} overlaps "
                                   f"the rows before it, which end at {expected - 1}")


def _concatenate(pieces: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    if not pieces:
        return np.empty(0, dtype)
    return np.concatenate(pieces)


_T = TypeVar("_T")


class Journal:
    """The blocking twin of AsyncJournal, for scripts, notebooks and the CLI.

    It owns a private event loop in a daemon thread, so it works where a loop is already
    running (Jupyter). Arguments and results are those of the AsyncJournal methods.
    """

    __slots__ = ("_loop", "_thread", "_journal")

    def __init__(self, dsn: str, *, apply: bool = False):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="matchcore-journal",
                                        daemon=True)
        self._thread.start()
        try:
            self._journal = self._call(AsyncJournal.connect(dsn, apply=apply))
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._journal.close())
        finally:
            self._stop_loop()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def last_seq(self) -> int:
        return self._call(self._journal.last_seq())

    def batches(self, from_seq: int | None = None, to_seq: int | None = None, *,
                verify: bool = True) -> Iterator[Batch]:
        """As AsyncJournal.batches. A page of rows crosses from the loop's thread per call,
        with the next page already asked for; the checksums are computed in the caller's
        thread (CRC-32C releases the GIL for payloads of 64 KiB and more), so they overlap
        the next page's arrival."""
        lower = FIRST_SEQ if from_seq is None else max(from_seq, FIRST_SEQ)
        pages = self._journal._pages(from_seq, to_seq, True)
        try:
            while True:
                try:
                    rows = self._call(pages.__anext__())
                except StopAsyncIteration:
                    return
                for row in rows:
                    batch = Batch.from_row(*row, verify=verify)
                    if batch.last_seq >= lower:
                        yield batch
        finally:
            self._call(pages.aclose())

    def seq_range(self, from_seq: int | None = None, to_seq: int | None = None, *,
                  since: TimePoint | None = None, until: TimePoint | None = None) -> tuple[int, int]:
        return self._call(self._journal.seq_range(from_seq, to_seq, since=since, until=until))

    def commands(self, from_seq: int | None = None, to_seq: int | None = None, *,
                 since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        return self._call(self._journal.commands(from_seq, to_seq, since=since, until=until))

    def events(self, from_seq: int | None = None, to_seq: int | None = None, *,
               since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        return self._call(self._journal.events(from_seq, to_seq, since=since, until=until))

    def trades(self, from_seq: int | None = None, to_seq: int | None = None, *,
               since: TimePoint | None = None, until: TimePoint | None = None) -> np.ndarray:
        return self._call(self._journal.trades(from_seq, to_seq, since=since, until=until))

    def account_history(self, account_id: int, from_seq: int | None = None,
                        to_seq: int | None = None, *, since: TimePoint | None = None,
                        until: TimePoint | None = None) -> AccountHistory:
        return self._call(self._journal.account_history(account_id, from_seq, to_seq,
                                                        since=since, until=until))

    def balance_history(self, account_id: int, asset_id: int, from_seq: int | None = None,
                        to_seq: int | None = None, *, since: TimePoint | None = None,
                        until: TimePoint | None = None) -> np.ndarray:
        """The account's balance of the asset after each command in range that changed it:
        a ``BALANCE_HISTORY_DTYPE`` array (seq, timestamp_ns, available, held). Replays the
        journal (from the newest snapshot before the range), so it is exact, holds and fees
        included. Blocking only: see ``persistence.balance_history``."""
        from matchcore.persistence.balance_history import balance_history

        return balance_history(self, account_id, asset_id, from_seq, to_seq, since=since,
                               until=until)

    def write_snapshot(self, seq: int, state: bytes, state_hash: int) -> bool:
        return self._call(self._journal.write_snapshot(seq, state, state_hash))

    def latest_snapshot(self, before_seq: int | None = None) -> Snapshot | None:
        return self._call(self._journal.latest_snapshot(before_seq))

    def latest_marketdata_checkpoint(self, before_seq: int | None = None) -> tuple[int, bytes, bytes] | None:
        return self._call(self._journal.latest_marketdata_checkpoint(before_seq))

    def write_meta(self, key: str, value: Any) -> None:
        self._call(self._journal.write_meta(key, value))

    def read_meta(self, key: str) -> Any:
        return self._call(self._journal.read_meta(key))
