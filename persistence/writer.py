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

One batch is in flight at a time, so batches commit and are released in seq order. While the
database is away nothing is released, the source fills up, and backpressure reaches the producer.
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

    def validate(self) -> "WriterConfig":
        if not 1 <= self.journal_batch_records_max <= 1 << 24:
            raise ValueError(f"journal_batch_records_max={self.journal_batch_records_max} is outside [1, 2**24]")
        if not 0 <= self.journal_batch_delay_ms_max <= 10_000:
            raise ValueError(f"journal_batch_delay_ms_max={self.journal_batch_delay_ms_max} is outside [0, 10000]")
        if not 0 < self.retry_delay_initial_s <= self.retry_delay_max_s <= 600:
            raise ValueError("need 0 < retry_delay_initial_s <= retry_delay_max_s <= 600")
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
    JournalFencedError if a later epoch holds the journal.
    """
    try:
        inserted = await connection.fetchval(
            _INSERT, epoch, batch.first_seq, batch.last_seq, batch.command_count, batch.event_count,
            batch.commands, batch.events, batch.checksum, CRC32C, timeout=timeout_s)
    except asyncpg.PostgresError as error:
        if getattr(error, "sqlstate", None) == FENCED_SQLSTATE:
            raise _fenced(error, epoch) from None
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


class JournalWriter:
    """Drains a BatchSource into the journal; see the module doc for the path of a batch."""

    __slots__ = ("_dsn", "_source", "_release", "config", "stats", "_on_commit", "_on_retry",
                 "_connection", "_last_seq", "writing", "epoch", "_holder", "_unreplicated")

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
        self._connection: asyncpg.Connection | None = None
        self._last_seq: int | None = None
        #: a batch is on the wire; a source may use it to cut the next batch only when the
        #: writer is free (group commit) instead of after a fixed delay
        self.writing = False
        self.epoch = epoch
        self._holder = holder or f"{self.config.application_name} pid {os.getpid()}"
        #: the server warned, during the statement in flight, that its wait for the
        #: synchronous standby was cut short: what it committed may be on the primary only
        self._unreplicated = False

    @property
    def last_seq(self) -> int | None:
        """The last seq known committed (None before the first connect)."""
        return self._last_seq

    async def connect(self) -> None:
        """Connect and bring the schema up to date now, retrying while the database is away
        (``run`` does it otherwise); raises SchemaVersionError on a newer schema."""
        await self._retrying(self._connect)

    async def run(self) -> None:
        """Write batches until the source ends. Raises on a non-transient error."""
        try:
            await self.connect()
            ready_batch = getattr(self._source, "ready_batch", None)
            if ready_batch is not None:
                await self._run_group_commit(ready_batch)
            else:
                await self._run_prefetching()
        finally:
            await self._disconnect()

    async def _run_prefetching(self) -> None:
        """Batches bounded by records and delay: the next one is formed (and checksummed)
        while this one is on the wire."""
        next_batch: asyncio.Future[Batch | None] | None = None
        try:
            next_batch = asyncio.ensure_future(self._prepare_next())
            while True:
                batch = await next_batch
                if batch is None:
                    return
                next_batch = asyncio.ensure_future(self._prepare_next())
                self.writing = True
                try:
                    await self._write(batch)
                finally:
                    self.writing = False
                self._release(batch)
        finally:
            # On an error the writer stops; a batch taken by the prefetch is not written, and
            # recovery starts from the journal, which holds exactly what was released.
            if next_batch is not None:
                if not next_batch.done():
                    next_batch.cancel()
                elif not next_batch.cancelled():
                    next_batch.exception()  # retrieved: no "never retrieved" warning

    async def _run_group_commit(self, ready_batch: Callable[[int], Batch | None]) -> None:
        """Group commit: the next batch is what the source holds when a commit returns (or,
        if nothing, the first whole commands to arrive). Its INSERT goes out before the
        committed batch is released, so the release (the gateway's dispatch) runs while
        PostgreSQL works on the next commit instead of delaying it."""
        loop = asyncio.get_running_loop()
        failed: list[BaseException] = []  # an error of a release run by the loop

        def release_later(batch: Batch) -> None:
            try:
                self._release(batch)
            except BaseException as error:  # raised by the writer as soon as it resumes
                failed.append(error)

        batch = await self._prepare_next()
        committed: Batch | None = None  # committed, its release not yet scheduled
        while batch is not None:
            write = asyncio.ensure_future(self._write(batch))  # its first step sends the INSERT
            if committed is not None:
                loop.call_soon(release_later, committed)  # after that step: ready queue is FIFO
                committed = None
            self.writing = True
            try:
                await write
            except BaseException:
                write.cancel()  # we are cancelled: so is the write (a no-op once it is done)
                raise
            finally:
                self.writing = False
            if failed:
                raise failed[0]
            following = ready_batch(self.config.journal_batch_records_max)
            if following is None:
                self._release(batch)
                batch = await self._prepare_next()
            else:
                following.checksum
                committed, batch = batch, following

    async def _prepare_next(self) -> Batch | None:
        batch = await self._source.next_batch(
            self.config.journal_batch_records_max, self.config.journal_batch_delay_ms_max / 1000)
        if batch is not None:
            batch.checksum  # computed once, cached on the batch
        return batch

    async def _write(self, batch: Batch) -> None:
        """Insert and commit ``batch`` (retrying while errors are transient), and when its
        replication is unsure wait for a later synchronous commit; the caller releases it."""
        self._check_continues(batch)
        started_s = time.perf_counter()
        inserted = await self._retrying(self._insert_once, batch)
        # "already there": an earlier attempt committed, perhaps on the primary only
        if not inserted or self._unreplicated:
            await self._retrying(self._confirm_once)
        latency_s = time.perf_counter() - started_s
        self._last_seq = batch.last_seq
        stats = self.stats
        stats.batches += 1
        stats.commands += batch.command_count
        stats.events += batch.event_count
        stats.payload_bytes += batch.commands.nbytes + batch.events.nbytes
        stats.conflicts_resolved += 0 if inserted else 1
        if self._on_commit is not None:
            self._on_commit(batch, latency_s)

    async def _insert_once(self, batch: Batch) -> bool:
        self._unreplicated = False
        return await insert_batch(self._required_connection(), batch, self.config.write_timeout_s,
                                  epoch=self._required_epoch())

    async def _confirm_once(self) -> None:
        """One later synchronous commit through the fence; a cut-short wait again is a failure
        (retried on a new connection): the batch is released only once one returns whole."""
        self._unreplicated = False
        try:
            await self._required_connection().fetchval(_CONFIRM, self._required_epoch(),
                                                        timeout=self.config.write_timeout_s)
        except asyncpg.PostgresError as error:
            if getattr(error, "sqlstate", None) == FENCED_SQLSTATE:
                raise _fenced(error, self._required_epoch()) from None
            raise
        if self._unreplicated:
            raise _ReplicationUnsure("the wait for the synchronous standby was cut short again")
        self.stats.confirmations += 1

    def _on_server_message(self, connection: asyncpg.Connection, message) -> None:
        """A log listener, run before the statement's result reaches the writer (asyncpg
        schedules both on the loop, the message first)."""
        if _cut_short_replication(message):
            self._unreplicated = True
            _log.warning("the server cut a wait for the synchronous standby short",
                         extra={"server_message": getattr(message, "message", ""),
                                "server_detail": getattr(message, "detail", "")})

    def _required_epoch(self) -> int:
        assert self.epoch is not None
        return self.epoch

    def _check_continues(self, batch: Batch) -> None:
        assert self._last_seq is not None
        expected = self._last_seq + 1
        if batch.first_seq > expected:
            raise SequenceGapError(expected, f"batch {batch.first_seq}..{batch.last_seq} would "
                                   f"leave seq {expected} out of the journal")
        if batch.first_seq < expected:
            raise SequenceOverlapError(batch.first_seq, f"batch {batch.first_seq}..{batch.last_seq}"
                                       f" overlaps the journal, which ends at {self._last_seq}")

    async def _retrying(self, attempt_once: Callable[..., object], *args: object) -> object:
        """Run ``attempt_once(*args)`` (a coroutine function) until it succeeds or fails for good."""
        attempt = 0
        delay_s = self.config.retry_delay_initial_s
        while True:
            try:
                if self._connection is not None and self._connection.is_closed():
                    await self._disconnect()  # the server closed it while we were idle
                if self._connection is None:
                    await self._connect()
                return await attempt_once(*args)  # type: ignore[misc]
            except (*TRANSIENT_ERRORS, asyncpg.InterfaceError, _ReplicationUnsure) as error:
                if not self._is_transient(error):
                    raise
                attempt += 1
                self.stats.retries += 1
                await self._disconnect()
                _log.warning("journal write attempt %d failed (%s: %s); retrying in %.3f s",
                             attempt, type(error).__name__, error, delay_s)
                if self._on_retry is not None:
                    self._on_retry(attempt, error, delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, self.config.retry_delay_max_s)

    async def _connect(self) -> None:
        if self._connection is not None:
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
        connection.add_log_listener(self._on_server_message)
        self._connection = connection
        self.stats.connects += 1

    def _is_transient(self, error: BaseException) -> bool:
        if isinstance(error, (TRANSIENT_ERRORS, _ReplicationUnsure)):
            return True
        # InterfaceError: transient only as "connection is closed" on the connection in use;
        # from connect (a bad DSN) or on an open connection (a misuse) it is not.
        return self._connection is not None and self._connection.is_closed()

    def _required_connection(self) -> asyncpg.Connection:
        assert self._connection is not None
        return self._connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()
