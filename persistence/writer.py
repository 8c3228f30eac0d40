"""The journal writer: batches to PostgreSQL, one row per batch, release only after commit.

The path of one batch::

    source.next_batch()      bounded by records and delay (BatchQueue, or the pipeline's own)
    continuity check         first_seq == last journaled seq + 1, else a typed error
    insert_batch()           ONE statement, autocommit: journal_append(epoch, ...), which checks
                             the fence (this writer's epoch still holds the journal, else
                             JournalFencedError) and INSERTs ... ON CONFLICT DO NOTHING;
                             a conflict is a retry of a write that did commit, if the stored row
                             has the same range, counts and checksum; otherwise an error
    on failure               drop the connection, wait (bounded exponential backoff), reconnect,
                             write the SAME batch again; forever, while the error is transient
    confirm, if unsure       the row was "already there", or the server warned that the wait
                             for the synchronous standby was cut short: the row may be on the
                             primary only. A later synchronous commit (journal_confirm) that
                             returns with no such warning proves it replicated (replication
                             is in order); retried like a write
    release(batch)           only now: the events are durable (on the synchronous standby too)

The epoch: ``JournalWriter(epoch=E)`` writes under an epoch its owner took (``take_journal``,
before reading the journal to recover); without one the writer takes the journal at its first
connect. An old active that comes back after a takeover is fenced at its next write.

Up to ``journal_rows_in_flight_max`` rows (default 1) are on the wire at once, each on a
connection of its own, so PostgreSQL works on the next row while the one before it commits.
They still commit in seq order (``journal_append`` makes a row wait for the one before it, and
refuses it with MC002 if that one is not there: the writer then sends it again once it is), so
no reader ever sees a gap, and they are released in seq order. While the database is away
nothing is released, the source fills up, and backpressure reaches the producer.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Callable

import asyncpg
import msgspec

from matchcore.persistence.batch import CRC32C, Batch
from matchcore.persistence.batch_queue import BatchSource
from matchcore.persistence.errors import (
    ConflictingBatchError,
    JournalFencedError,
    JournalIntegrityError,
    PredecessorMissingError,
    SequenceGapError,
    SequenceOverlapError,
)
from matchcore.persistence.schema import apply_schema

__all__ = ["JournalWriter", "WriterConfig", "WriterStats", "insert_batch", "take_journal", "TRANSIENT_ERRORS",
           "FENCED_SQLSTATE"]

_log = logging.getLogger("matchcore.persistence.writer")

#: Errors after which the same write is retried on a new connection: the network, the server
#: going down or starting up (57P0x), a cancel or timeout, a lack of resources (53xxx, disk
#: full included). Anything else (a schema problem, a conflict, a bug) stops the writer.
#: An asyncpg InterfaceError counts too when the connection is closed (the server ended it
#: while the writer was idle, e.g. an admin shutdown).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    # a node that became a standby: a multi-host DSN finds the new primary at the reconnect
    asyncpg.exceptions.ReadOnlySQLTransactionError,
)
#: what journal_append and journal_confirm raise when another writer holds the journal
FENCED_SQLSTATE = "MC001"
#: what journal_append raises for a row whose predecessor is not committed (nothing stored)
ORDER_SQLSTATE = "MC002"

_INSERT = "SELECT journal_append($1, $2, $3, $4, $5, $6, $7, $8, $9)"
_CONFIRM = "SELECT journal_confirm($1)"
_TAKE = "SELECT journal_take($1)"
_STORED = ("SELECT last_seq, command_count, event_count, checksum, checksum_kind FROM journal "
           "WHERE first_seq = $1")
_LAST_SEQ = "SELECT last_seq FROM journal ORDER BY first_seq DESC LIMIT 1"


class _ReplicationUnsure(Exception):
    """A confirmation whose own wait for the standby was cut short: retried like a failure."""


def _cut_short_replication(message) -> bool:
    """The server's WARNING that a commit's wait for the synchronous standby ended before the
    standby confirmed it ("canceling wait for synchronous replication ...", or "... and
    terminating connection"; detail "... might not have been replicated to the standby").
    The server's messages are English (the embedded and cluster servers use locale C)."""
    text = f"{getattr(message, 'message', '')} {getattr(message, 'detail', '')}"
    return "synchronous replication" in text or "not have been replicated" in text


class WriterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Tunables of the journal writer; units are in the names."""

    #: commands + events in one row (soft for one command whose events alone exceed it)
    journal_batch_records_max: int = 8192
    #: how long a batch waits for more records after its first one; 0: take what is there
    journal_batch_delay_ms_max: float = 1.0
    #: first wait after a failed write; doubles per failure up to retry_delay_max_s
    retry_delay_initial_s: float = 0.005
    retry_delay_max_s: float = 1.0
    connect_timeout_s: float = 5.0
    #: one write, from send to commit; past it the write counts as failed and is retried
    write_timeout_s: float = 60.0
    application_name: str = "matchcore-journal"
    #: rows on the wire at once, each on a connection of its own (1: one at a time). They
    #: commit and are released in seq order whatever the number.
    journal_rows_in_flight_max: int = 1

    def validate(self) -> "WriterConfig":
        if not 1 <= self.journal_batch_records_max <= 1 << 24:
            raise ValueError(f"journal_batch_records_max={self.journal_batch_records_max} is outside [1, 2**24]")
        if not 0 <= self.journal_batch_delay_ms_max <= 10_000:
            raise ValueError(f"journal_batch_delay_ms_max={self.journal_batch_delay_ms_max} is outside [0, 10000]")
        if not 0 < self.retry_delay_initial_s <= self.retry_delay_max_s <= 600:
            raise ValueError("need 0 < retry_delay_initial_s <= retry_delay_max_s <= 600")
        if not 1 <= self.journal_rows_in_flight_max <= 4:
            raise ValueError(f"journal_rows_in_flight_max={self.journal_rows_in_flight_max} is outside [1, 4]")
        if self.connect_timeout_s <= 0 or self.write_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        return self


class WriterStats:
    """Counters of one writer (rows, records, bytes, retries, connects), read by tests and benchmarks."""

    __slots__ = ("batches", "commands", "events", "payload_bytes", "retries", "connects",
                 "conflicts_resolved", "confirmations")

    def __init__(self) -> None:
        self.batches = 0
        self.commands = 0
        self.events = 0
        self.payload_bytes = 0
        #: failed write or connect attempts
        self.retries = 0
        self.connects = 0
        #: writes whose row was already stored by an earlier attempt that did commit
        self.conflicts_resolved = 0
        #: later synchronous commits awaited before a release (the row's replication unsure)
        self.confirmations = 0

    def __repr__(self) -> str:
        return "WriterStats(" + ", ".join(f"{name}={getattr(self, name)}"
                                          for name in self.__slots__) + ")"


async def take_journal(connection: asyncpg.Connection, holder: str) -> int:
    """Become the journal's one writer: bump the fence's epoch (waiting for writes in flight
    under the old one) and return the new epoch. Every later write of an older epoch fails."""
    return int(await connection.fetchval(_TAKE, holder))


def _fenced(error: asyncpg.PostgresError, epoch: int) -> JournalFencedError:
    return JournalFencedError(epoch, f"{error} (this writer stops: another one took the journal)")


async def insert_batch(connection: asyncpg.Connection, batch: Batch,
                       timeout_s: float | None = None, *, epoch: int) -> bool:
    """Write ``batch`` as one row in one autocommitted statement, under ``epoch``.

    True: the row was inserted. False: an identical row (range, counts, checksum) was already
    stored, by an earlier attempt. Raises ConflictingBatchError if a different row holds the key,
    JournalFencedError if a later epoch holds the journal, PredecessorMissingError (nothing
    stored) if the row ending just before it is not committed when this one is about to commit.
    """
    try:
        inserted = await connection.fetchval(
            _INSERT, epoch, batch.first_seq, batch.last_seq, batch.command_count, batch.event_count,
            batch.commands, batch.events, batch.checksum, CRC32C, timeout=timeout_s)
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) == FENCED_SQLSTATE:
            raise _fenced(error, epoch) from None
        if getattr(error, "sqlstate", None) == ORDER_SQLSTATE:
            raise PredecessorMissingError(batch.first_seq, str(error)) from None
        raise
    if inserted:
        return True
    stored = await connection.fetchrow(_STORED, batch.first_seq, timeout=timeout_s)
    expected = (batch.last_seq, batch.command_count, batch.event_count, batch.checksum, CRC32C)
    if stored is None:
        raise JournalIntegrityError(batch.first_seq, f"journal row {batch.first_seq} conflicted "
                                    f"on insert but cannot be read back")
    if tuple(stored) != expected:
        raise ConflictingBatchError(
            batch.first_seq,
            f"journal row {batch.first_seq} holds (last_seq, commands, events, checksum, kind) "
            f"{tuple(stored)}, the batch written has {expected}")
    return False


class _Slot:
    """One connection of the writer, carrying at most one row at a time."""

    __slots__ = ("connection", "unreplicated")

    def __init__(self) -> None:
        self.connection: asyncpg.Connection | None = None
        #: the server warned, during the statement in flight on this connection, that its wait
        #: for the synchronous standby was cut short: what it committed may be on the primary only
        self.unreplicated = False

    def on_server_message(self, connection: asyncpg.Connection, message) -> None:
        """A log listener, run before the statement's result reaches the writer (asyncpg
        schedules both on the loop, the message first)."""
        if _cut_short_replication(message):
            self.unreplicated = True
            _log.warning("the server cut a wait for the synchronous standby short",
                         extra={"server_message": getattr(message, "message", ""),
                                "server_detail": getattr(message, "detail", "")})


class _Row:
    """A row in flight: ``committed`` resolves at its commit, ``released`` once it and every
    row before it are released."""

    __slots__ = ("batch", "committed", "released")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.released: asyncio.Task | None = None


class JournalWriter:
    """Drains a BatchSource into the journal; see the module doc for the path of a batch."""

    __slots__ = ("_dsn", "_source", "_release", "config", "stats", "_on_commit", "_on_retry",
                 "_slots", "_idle", "_last_seq", "_cut_seq", "writing", "epoch", "_holder",
                 "_failure")

    def __init__(
        self,
        dsn: str,
        source: BatchSource,
        release: Callable[[Batch], object],
        *,
        config: WriterConfig | None = None,
        on_commit: Callable[[Batch, float], object] | None = None,
        on_retry: Callable[[int, BaseException, float], object] | None = None,
        epoch: int | None = None,
        holder: str | None = None,
    ):
        """``release(batch)`` is called once per batch, in seq order, after its commit.
        ``on_commit(batch, latency_s)``: latency from the first write attempt to the commit.
        ``on_retry(attempt, error, delay_s)``: a write or connect failed; retry after delay.
        ``epoch``: the fence's epoch this writer writes under (None: take the journal at the
        first connect, as ``holder``)."""
        self._dsn = dsn
        self._source = source
        self._release = release
        self.config = (config or WriterConfig()).validate()
        self.stats = WriterStats()
        self._on_commit = on_commit
        self._on_retry = on_retry
        self._slots = [_Slot() for _ in range(self.config.journal_rows_in_flight_max)]
        self._idle = list(reversed(self._slots))  # slot 0 first
        self._last_seq: int | None = None
        #: the last seq of the last row cut (written or in flight)
        self._cut_seq: int | None = None
        #: a row is in flight and no commit has returned since the last one was cut: a source
        #: may wait (up to its delay) before cutting the next row, instead of cutting at once
        self.writing = False
        self.epoch = epoch
        self._holder = holder or f"{self.config.application_name} pid {os.getpid()}"
        self._failure: asyncio.Future[None] | None = None

    @property
    def rows_in_flight(self) -> int:
        """Rows on the wire now (each holds a slot until its commit)."""
        return len(self._slots) - len(self._idle)

    @property
    def last_seq(self) -> int | None:
        """The last seq released (None before the first connect)."""
        return self._last_seq

    async def connect(self) -> None:
        """Connect and bring the schema up to date now, retrying while the database is away
        (``run`` does it otherwise); raises SchemaVersionError on a newer schema."""
        await self._retrying(self._slots[0], self._connect, self._slots[0])

    async def run(self) -> None:
        """Write batches until the source ends. Raises on a non-transient error."""
        self._failure = asyncio.get_running_loop().create_future()
        main = asyncio.ensure_future(self._run_rows())
        try:
            await asyncio.wait({main, self._failure}, return_when=asyncio.FIRST_COMPLETED)
            if self._failure.done():
                self._failure.result()  # raises the first row's error
            main.result()
        finally:
            main.cancel()
            # On an error the writer stops; rows in flight are cut off, and recovery starts
            # from the journal, which holds at least what was released (rows commit in order).
            await asyncio.gather(main, return_exceptions=True)
            for slot in self._slots:
                await self._disconnect(slot)

    async def _run_rows(self) -> None:
        """Up to ``journal_rows_in_flight_max`` rows on the wire, each on a connection of its
        own. The next row is cut when a slot is free: at once if a commit has just returned
        (group commit), else after the source's delay; it is written (and worked on by
        PostgreSQL) while the row before it commits, commits after it, and is released after it."""
        await self.connect()
        self._cut_seq = self._last_seq
        free = asyncio.Semaphore(len(self._slots))
        previous: _Row | None = None
        in_flight: set[asyncio.Task] = set()
        # A source cut at commit (the pipeline's) is asked when a slot is free; any other one
        # (BatchQueue) as soon as a row goes out, so forming and checksumming the next batch
        # overlaps the commit. The row's task is scheduled first: its INSERT leaves first.
        prefetch = not getattr(self._source, "cut_at_commit", False)
        next_batch: asyncio.Future | None = None
        try:
            while True:
                await free.acquire()
                batch = await (next_batch or self._prepare_next())
                next_batch = None
                if batch is None:
                    break
                self._check_continues(batch)
                self._cut_seq = batch.last_seq
                row = _Row(batch)
                row.released = asyncio.ensure_future(self._write_in_order(row, previous, free))
                in_flight.add(row.released)
                row.released.add_done_callback(in_flight.discard)
                self.writing = True
                previous = row
                if prefetch:
                    next_batch = asyncio.ensure_future(self._prepare_next())
            if previous is not None:
                await previous.released
        finally:
            # On an error the writer stops: a batch taken ahead is not written, and recovery
            # starts from the journal, which holds at least what was released.
            if next_batch is not None:
                next_batch.cancel()
                await asyncio.gather(next_batch, return_exceptions=True)
            for task in list(in_flight):
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)

    async def _write_in_order(self, row: _Row, previous: _Row | None, free: asyncio.Semaphore) -> None:
        slot = self._idle.pop()
        try:
            try:
                await self._write(slot, row.batch, previous)
            finally:
                self._idle.append(slot)
                free.release()
            row.committed.set_result(None)
            # Group commit: let the next row go out before this one is released, so the
            # release (the gateway's dispatch to sockets) runs while PostgreSQL works on the
            # next commit. The freed slot wakes the cutting loop first; it schedules the next
            # row's write, whose first step sends the INSERT; the second yield lets it run.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if previous is not None:
                await previous.released  # raises if that row failed: nothing after it is released
            self._last_seq = row.batch.last_seq
            self._release(row.batch)
        except asyncio.CancelledError:
            if not row.committed.done():
                row.committed.cancel()
            raise
        except BaseException as error:
            if not row.committed.done():
                row.committed.set_exception(error)
                row.committed.exception()  # retrieved here; the writer raises it from _failure
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(error)
            raise

    async def _prepare_next(self) -> Batch | None:
        batch = await self._source.next_batch(
            self.config.journal_batch_records_max, self.config.journal_batch_delay_ms_max / 1000)
        if batch is not None:
            batch.checksum  # computed once, cached on the batch
        return batch

    async def _write(self, slot: _Slot, batch: Batch, previous: _Row | None = None) -> None:
        """Insert and commit ``batch`` (retrying while errors are transient), and when its
        replication is unsure wait for a later synchronous commit; the caller releases it."""
        started_s = time.perf_counter()
        inserted = await self._retrying(slot, self._insert_once, slot, batch, previous)
        # "already there": an earlier attempt committed, perhaps on the primary only
        if not inserted or slot.unreplicated:
            await self._retrying(slot, self._confirm_once, slot)
        latency_s = time.perf_counter() - started_s
        self.writing = False
        stats = self.stats
        stats.batches += 1
        stats.commands += batch.command_count
        stats.events += batch.event_count
        stats.payload_bytes += batch.commands.nbytes + batch.events.nbytes
        stats.conflicts_resolved += 0 if inserted else 1
        if self._on_commit is not None:
            self._on_commit(batch, latency_s)

    async def _insert_once(self, slot: _Slot, batch: Batch, previous: _Row | None) -> bool:
        """One attempt. A row that reached its commit before the row ahead of it (MC002: that
        one was slower to arrive, or failed and is being written again) is sent again as
        soon as that one has committed."""
        slot.unreplicated = False
        try:
            return await insert_batch(self._required_connection(slot), batch, self.config.write_timeout_s,
                                      epoch=self._required_epoch())
        except PredecessorMissingError:
            if previous is None or previous.committed.done():
                raise  # nothing ahead of it is on its way: a gap, not a race
        await asyncio.shield(previous.committed)  # raises if that row failed for good
        return await self._insert_once(slot, batch, None)  # once more; refused again: a gap

    async def _confirm_once(self, slot: _Slot) -> None:
        """One later synchronous commit through the fence; a cut-short wait again is a failure
        (retried on a new connection): the batch is released only once one returns whole."""
        slot.unreplicated = False
        try:
            await self._required_connection(slot).fetchval(_CONFIRM, self._required_epoch(),
                                                            timeout=self.config.write_timeout_s)
        except asyncpg.PostgresError as error:
            if getattr(error, "sqlstate", None) == FENCED_SQLSTATE:
                raise _fenced(error, self._required_epoch()) from None
            raise
        if slot.unreplicated:
            raise _ReplicationUnsure("the wait for the synchronous standby was cut short again")
        self.stats.confirmations += 1

    def _required_epoch(self) -> int:
        assert self.epoch is not None
        return self.epoch

    def _check_continues(self, batch: Batch) -> None:
        assert self._cut_seq is not None
        expected = self._cut_seq + 1
        if batch.first_seq > expected:
            raise SequenceGapError(expected, f"batch {batch.first_seq}..{batch.last_seq} would "
                                   f"leave seq {expected} out of the journal")
        if batch.first_seq < expected:
            raise SequenceOverlapError(batch.first_seq, f"batch {batch.first_seq}..{batch.last_seq}"
                                       f" overlaps the journal, which ends at {self._cut_seq}")

    async def _retrying(self, slot: _Slot, attempt_once: Callable[..., object], *args: object) -> object:
        """Run ``attempt_once(*args)`` (a coroutine function) on ``slot``'s connection until it
        succeeds or fails for good."""
        attempt = 0
        delay_s = self.config.retry_delay_initial_s
        while True:
            try:
                if slot.connection is not None and slot.connection.is_closed():
                    await self._disconnect(slot)  # the server closed it while we were idle
                if slot.connection is None:
                    await self._connect(slot)
                return await attempt_once(*args)  # type: ignore[misc]
            except (*TRANSIENT_ERRORS, asyncpg.InterfaceError, _ReplicationUnsure) as error:
                if not self._is_transient(slot, error):
                    raise
                attempt += 1
                self.stats.retries += 1
                await self._disconnect(slot)
                _log.warning("journal write attempt %d failed (%s: %s); retrying in %.3f s",
                             attempt, type(error).__name__, error, delay_s)
                if self._on_retry is not None:
                    self._on_retry(attempt, error, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self.config.retry_delay_max_s)

    async def _connect(self, slot: _Slot) -> None:
        if slot.connection is not None:
            return
        connection = await asyncpg.connect(
            self._dsn, timeout=self.config.connect_timeout_s,
            server_settings={"application_name": self.config.application_name,
                             "synchronous_commit": "on"})
        try:
            if self._last_seq is None:
                await apply_schema(connection)
                if self.epoch is None:
                    self.epoch = await take_journal(connection, self._holder)
                self._last_seq = int(await connection.fetchval(_LAST_SEQ) or 0)
        except BaseException:
            connection.terminate()
            raise
        connection.add_log_listener(slot.on_server_message)
        slot.connection = connection
        self.stats.connects += 1

    def _is_transient(self, slot: _Slot, error: BaseException) -> bool:
        if isinstance(error, (TRANSIENT_ERRORS, _ReplicationUnsure)):
            return True
        # InterfaceError: transient only as "connection is closed" on the connection in use;
        # from connect (a bad DSN) or on an open connection (a misuse) it is not.
        return slot.connection is not None and slot.connection.is_closed()

    @staticmethod
    def _required_connection(slot: _Slot) -> asyncpg.Connection:
        assert slot.connection is not None
        return slot.connection

    @staticmethod
    async def _disconnect(slot: _Slot) -> None:
        connection, slot.connection = slot.connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()
