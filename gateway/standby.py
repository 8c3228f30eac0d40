"""``matchcore serve --standby``: a hot standby beside a PostgreSQL standby.

It follows the journal on its own PostgreSQL (a streaming replica of the primary) and keeps
warm everything the server would otherwise rebuild at start: the core's engine (verified
replay of each new row), the market data replica and its feed state, and every account's
event counter. It serves nothing: no trading port is open, since anything a client could ask
would need the primary. When its PostgreSQL becomes the primary (Patroni promoted it), it

1. takes the journal (``take_journal``: the fence's epoch goes up, under the lock every
   journal write takes, so an old active can append nothing more),
2. applies the rows written before that (the old active's last ones),
3. starts the server from the warm state (``GatewayServer.start(warm=...)``), which checks
   that the replica and the core agree before the port opens, cancels the orders of
   cancel-on-disconnect sessions left open, and accepts clients, who resume by event
   sequence number (docs/protocol.md, "Failover").

One active matchcore at a time: whichever sits with the primary. A standby refuses to start
on a PostgreSQL that is already the primary (``matchcore serve`` is for that).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time

import asyncpg

from matchcore.core import EngineConfig
from matchcore.errors import MatchcoreError
from matchcore.gateway import checkpoints
from matchcore.gateway.config import ServerConfig
from matchcore.gateway.streams import AccountStreams
from matchcore.persistence.journal import AsyncJournal
from matchcore.persistence.marketdata import MarketDataFeed, advance_feed, feed_from_journal_async
from matchcore.persistence.replay import (CONFIG_META_KEY, ConfigEpoch, ReplayResult, apply_epochs,
                                          read_epochs_async, replay_async)
from matchcore.persistence.writer import TRANSIENT_ERRORS, take_journal

__all__ = ["WarmState", "StandbyRefused", "follow", "load_warm", "advance", "takeover", "refuse_a_standby"]

_log = logging.getLogger("matchcore.gateway.standby")

#: journal rows applied per read while following (bounds the memory of one catch-up step)
FOLLOW_ROWS_PER_STEP = 256
#: one statement of the standby (a read, or the takeover waiting for a synchronous standby)
TAKEOVER_TIMEOUT_S = 10.0
#: the first wait after a failed read of the replica; doubles up to 1 s
RETRY_DELAY_S = 0.05


class StandbyRefused(MatchcoreError):
    """``serve --standby`` on a PostgreSQL that is not a standby, or ``serve`` on one that is."""


async def refuse_a_standby(dsn: str) -> None:
    """``matchcore serve`` (active) on a PostgreSQL in recovery: StandbyRefused, one line,
    before anything tries to write there (an old primary that re-joined as a standby)."""
    try:
        connection = await asyncpg.connect(dsn, timeout=10)
    except (*TRANSIENT_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError):
        return  # unreachable: the usual start-up errors say so
    try:
        standby = bool(await connection.fetchval("SELECT pg_is_in_recovery()"))
    finally:
        await connection.close()
    if standby:
        raise StandbyRefused("serve: its PostgreSQL is a standby (in recovery), which cannot take the journal; "
                             "run `matchcore serve --standby` there, or give --dsn the primary")


class WarmState:
    """What a standby keeps at the journal's end: the core's replay, the market data feed,
    the event counters (each with the last seq applied to it), and, after ``takeover``,
    the fence's epoch."""

    __slots__ = ("core", "feed", "streams", "streams_seq", "streams_checkpointed_seq", "epochs", "epoch",
                 "engine_config")

    def __init__(self, core: ReplayResult, feed: MarketDataFeed, streams: AccountStreams, streams_seq: int,
                 epochs: list[ConfigEpoch], engine_config: EngineConfig) -> None:
        self.core = core
        self.feed = feed
        self.streams = streams
        self.streams_seq = streams_seq
        self.streams_checkpointed_seq = streams_seq
        self.epochs = epochs
        self.epoch: int | None = None
        #: the configured engine, for a journal no core has written to yet
        self.engine_config = engine_config

    @property
    def last_seq(self) -> int:
        return min(self.core.last_seq, self.feed.last_seq, self.streams_seq)


async def _epochs(journal: AsyncJournal, engine_config: EngineConfig) -> list[ConfigEpoch]:
    if await journal.read_meta(CONFIG_META_KEY) is None:  # no core has written here yet
        return [ConfigEpoch(from_seq=1, config=engine_config)]
    return await read_epochs_async(journal)


async def load_warm(journal: AsyncJournal, config: ServerConfig) -> WarmState:
    """The state at the journal's end as the replica has it now: snapshot and replay (the
    core), checkpoint and replay (the feed, the counters)."""
    epochs = await _epochs(journal, config.engine)
    core = await replay_async(journal, epochs=epochs)
    feed = await feed_from_journal_async(journal, config=config.engine)
    streams = AccountStreams(config.recent_event_frames)
    streams_seq = 0
    async with journal.acquire() as connection:
        exists = await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", checkpoints.CHECKPOINT_TABLE)
        checkpoint = await checkpoints.read_latest(connection, core.last_seq) if exists else None
    if checkpoint is not None:
        streams_seq, accounts, counts = checkpoint
        streams.load_counters(accounts, counts, streams_seq)
    warm = WarmState(core, feed, streams, streams_seq, epochs, config.engine)
    await advance(warm, journal)
    return warm


async def advance(warm: WarmState, journal: AsyncJournal) -> int:
    """Apply the rows after the state to all three parts; returns the rows read."""
    rows = 0
    while True:
        batches = []
        async for batch in journal.batches(from_seq=warm.last_seq + 1):
            batches.append(batch)
            if len(batches) >= FOLLOW_ROWS_PER_STEP:
                break
        if not batches:
            return rows
        rows += len(batches)
        warm.epochs = await _epochs(journal, warm.engine_config)  # an active's restart may add one
        core = warm.core
        core.engine, last, commands, applied = apply_epochs(core.engine, batches, core.last_seq, warm.epochs,
                                                            None, True)
        core.last_seq, core.commands, core.batches = last, core.commands + commands, core.batches + applied
        advance_feed(warm.feed, [b for b in batches if b.last_seq > warm.feed.last_seq], warm.epochs)
        for batch in batches:
            if batch.first_seq > warm.streams_seq:
                warm.streams.rebuild_from(batch.commands, batch.events)
                warm.streams_seq = batch.last_seq
        if len(batches) < FOLLOW_ROWS_PER_STEP:
            return rows


async def in_recovery(journal: AsyncJournal) -> bool:
    async with journal.acquire() as connection:
        return bool(await connection.fetchval("SELECT pg_is_in_recovery()"))


async def _until_reached(attempt, errors: tuple, stop: asyncio.Event):
    """``await attempt()`` until it returns (its value) or ``stop`` is set (None); ``errors``
    mean the database is not there yet: wait (doubling, up to 1 s) and try again."""
    delay_s = RETRY_DELAY_S
    while not stop.is_set():
        try:
            return await attempt()
        except errors as error:
            _log.info("standby waits for its database", extra={"error": repr(error)})
        try:
            await asyncio.wait_for(stop.wait(), delay_s)
        except asyncio.TimeoutError:
            pass
        delay_s = min(delay_s * 2, 1.0)
    return None


async def _is_standby(dsn: str, stop: asyncio.Event) -> bool:
    """Whether the PostgreSQL of ``dsn`` is in recovery, once it can be reached."""
    async def ask() -> bool:
        connection = await asyncpg.connect(dsn, timeout=10)
        try:
            return bool(await connection.fetchval("SELECT pg_is_in_recovery()"))
        finally:
            await connection.close()

    return bool(await _until_reached(ask, (*TRANSIENT_ERRORS, asyncpg.InterfaceError,
                                           asyncpg.exceptions.CannotConnectNowError), stop))


async def _connect(dsn: str, stop: asyncio.Event) -> AsyncJournal | None:
    """The replica's journal, once it is reachable and holds matchcore's schema (a standby
    may start before any active has written)."""
    return await _until_reached(
        lambda: AsyncJournal.connect_pool(dsn, connections_max=2, application_name="matchcore-standby",
                                          command_timeout_s=TAKEOVER_TIMEOUT_S),
        (*TRANSIENT_ERRORS, asyncpg.PostgresError, MatchcoreError), stop)


async def follow(config: ServerConfig, stop: asyncio.Event) -> WarmState | None:
    """Follow the journal until the standby's PostgreSQL is the primary; then take over and
    return the warm state (with its epoch). None when ``stop`` was set first."""
    if not await _is_standby(config.dsn, stop):
        if stop.is_set():
            return None
        raise StandbyRefused("serve --standby: its PostgreSQL is the primary, not a standby; "
                             "run `matchcore serve` there (a standby follows a replica)")
    journal = await _connect(config.dsn, stop)
    if journal is None:
        return None
    try:
        started = time.perf_counter()
        warm = await load_warm(journal, config)
        _log.info("standby following", extra={"last_seq": warm.last_seq,
                                              "seconds": round(time.perf_counter() - started, 3)})
        if not await _follow_until_promoted(journal, warm, config, stop):
            return None
        await takeover(journal, warm)
        return warm
    finally:
        await journal.close()


async def _follow_until_promoted(journal: AsyncJournal, warm: WarmState, config: ServerConfig,
                                 stop: asyncio.Event) -> bool:
    poll_s, delay_s = config.standby_poll_ms / 1000, RETRY_DELAY_S
    while not stop.is_set():
        try:
            await advance(warm, journal)
            if not await in_recovery(journal):
                _log.warning("standby: its PostgreSQL is the primary now; taking over",
                             extra={"last_seq": warm.last_seq})
                return True
            delay_s = RETRY_DELAY_S
            wait_s = poll_s
        except (*TRANSIENT_ERRORS, asyncpg.InterfaceError, asyncpg.exceptions.QueryCanceledError) as error:
            # the replica restarting, or a conflict with its recovery: read again later
            _log.info("standby read failed; retrying", extra={"error": repr(error), "retry_in_s": delay_s})
            wait_s, delay_s = delay_s, min(delay_s * 2, 1.0)
        try:
            await asyncio.wait_for(stop.wait(), wait_s)
        except asyncio.TimeoutError:
            pass
    return False


async def takeover(journal: AsyncJournal, warm: WarmState) -> None:
    """Take the journal, then apply what was written before the fence went up. The takeover
    is a synchronous commit: without a synchronous standby (strict mode) it waits, retried,
    for one to come back (a bumped epoch that did commit is only bumped again)."""
    holder = f"matchcore {socket.gethostname()} pid {os.getpid()} (standby takeover)"
    delay_s = RETRY_DELAY_S
    while True:
        try:
            async with journal.acquire() as connection:
                warm.epoch = await take_journal(connection, holder)
            break
        except (*TRANSIENT_ERRORS, asyncpg.InterfaceError) as error:
            _log.warning("standby: taking the journal failed (no synchronous standby yet?); retrying",
                         extra={"error": repr(error), "retry_in_s": delay_s})
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)
    await advance(warm, journal)
    _log.warning("standby took the journal", extra={"epoch": warm.epoch, "last_seq": warm.last_seq})


def stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)


def clear_signals() -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(signum)
