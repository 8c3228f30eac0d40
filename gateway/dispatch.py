"""The dispatcher: durable events out to the sessions they belong to, in order, with replay.

``on_release(batch)`` is called by DurableCore on the loop, in seq order, only after the
batch is committed. ``AccountStreams.append`` numbers each recipient's events and encodes
their frames once (into the ring of recent frames); the dispatcher writes each account's
frames of the batch to that account's live sessions in one write: one write per session
per batch, and batches are released once per loop iteration at most.

A session that is behind (it logged in asking for older events, or it could not be sent
some) catches up in a task: frames from memory while the ring still holds them, else re-made
from the journal, a chunk at a time, pausing while the client's socket buffer is full; live
frames wait meanwhile (they are in the ring), so the client sees no gap and no repeat.

ORDER_STATUS queries are answered by ``replica.Replica``, which the dispatcher feeds
every released batch.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator, Callable


from matchcore import protocol as p
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.replica import Replica
from matchcore.gateway.sessions import Session, SessionState
from matchcore.gateway.streams import AccountStreams
from matchcore.persistence.journal import DATABASE_ERRORS

__all__ = ["Dispatcher"]

_log = logging.getLogger("matchcore.gateway.dispatch")
#: while a client's socket buffer holds more than this, a catch-up waits
_CATCH_UP_BUFFER_BYTES_MAX = 4 << 20
#: catch-ups reading the journal at once (each holds a connection of the gateway's pool)
CATCH_UP_JOURNAL_READERS_MAX = 2
#: a catch-up whose journal read failed tries again after this, doubling up to the max
CATCH_UP_RETRY_S, CATCH_UP_RETRY_S_MAX = 0.05, 1.0


class Dispatcher:
    """Released batches -> account streams -> sessions. See the module docstring."""

    def __init__(self, streams: AccountStreams, metrics: GatewayMetrics,
                 journal_batches: Callable[[int], AsyncIterator], *, replay_chunk_frames: int = 8192,
                 order_view: Replica | None = None, catch_up_stall_ms_max: int = 30_000) -> None:
        self.streams = streams
        self.metrics = metrics
        self.journal_batches = journal_batches
        self.replay_chunk_frames = replay_chunk_frames
        self.order_view = order_view
        self.subscribers: dict[int, list[Session]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._now_ns = 0
        self._journal_readers = asyncio.Semaphore(CATCH_UP_JOURNAL_READERS_MAX)
        #: a catch-up that makes no progress this long (the client does not read, the
        #: database stays down) ends the session: bounded in time, and so in memory
        self.catch_up_stall_s_max = catch_up_stall_ms_max / 1000
        self.on_released: Callable[[object], None] | None = None  # extra hook (tests, demo)

    # ------------------------------------------------------------------ sessions

    def attach(self, session: Session) -> None:
        """A session logged in: send it what it asked for, then live events."""
        self.subscribers.setdefault(session.account_id, []).append(session)
        if session.last_event_seq_sent < self.streams.last_event_seq(session.account_id):
            self._start_catch_up(session)

    def detach(self, session: Session) -> None:
        sessions = self.subscribers.get(session.account_id)
        if sessions and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self.subscribers[session.account_id]

    def order_status(self, account_id: int, client_order_id: int,
                     reply: Callable[[p.OrderStatus | None], object]) -> None:
        """ORDER_STATUS from released state, answered off the loop through ``reply``."""
        if self.order_view is None:
            reply(None)
            return
        self.order_view.query(account_id, client_order_id, self.streams.last_event_seq(account_id), reply)

    # ------------------------------------------------------------------ release

    def on_release(self, batch) -> None:
        now_ns = time.time_ns()
        self._now_ns = now_ns
        commands, events = batch.commands, batch.events
        self.streams.append(commands, events, self._deliver)
        self.metrics.batch_released(commands, events, time.time_ns())
        if self.order_view is not None:
            self.order_view.released(commands, events)
        if self.on_released is not None:
            self.on_released(batch)

    def _deliver(self, account: int, first_event_seq: int, last_event_seq: int, frames: memoryview) -> None:
        sessions = self.subscribers.get(account)
        if not sessions:
            return
        data = None
        for session in sessions:
            if session.state != SessionState.ACTIVE:
                continue
            if session.catching_up or session.last_event_seq_sent != first_event_seq - 1:
                self._start_catch_up(session)
                continue
            if data is None:
                data = bytes(frames)
            session.send_frames(data, last_event_seq, self._now_ns)
            self.metrics.events_sent["live"] += last_event_seq - first_event_seq + 1

    # ------------------------------------------------------------------ catch-up

    def _start_catch_up(self, session: Session) -> None:
        if session.catching_up:
            return
        session.catching_up = True
        task = asyncio.get_running_loop().create_task(self._catch_up(session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, session: Session) -> None:
        account = session.account_id
        try:
            while session.state == SessionState.ACTIVE:
                wanted = session.last_event_seq_sent + 1
                if wanted > self.streams.last_event_seq(account):
                    return
                found = self.streams.recent(account, wanted, self.replay_chunk_frames)
                source = "memory"
                if found is None:
                    source = "journal"
                    found = await self._from_journal(session, wanted)
                    if found is None:
                        return
                frames, through = found
                if session.state != SessionState.ACTIVE or session.last_event_seq_sent + 1 != wanted:
                    return
                if through < wanted:
                    _log.error("catch-up found no events", extra={"account_id": account, "from_event_seq": wanted})
                    return
                session.send_frames(frames, through, time.time_ns())
                self.metrics.events_sent[source] += through - wanted + 1
                await self._drained(session)
        except Exception:
            _log.exception("catch-up failed", extra={"session_id": session.session_id, "account_id": account})
            session.drop(time.time_ns())
        finally:
            session.catching_up = False

    async def _from_journal(self, session: Session, wanted: int) -> tuple[bytes, int] | None:
        """Frames from ``wanted`` re-made from the journal. While the database is away it
        tries again with a back-off; past the stall bound the session ends (None)."""
        loop = asyncio.get_running_loop()
        give_up, retry_s = loop.time() + self.catch_up_stall_s_max, CATCH_UP_RETRY_S
        while session.state == SessionState.ACTIVE:
            try:
                async with self._journal_readers:
                    return await self.streams.from_journal(self.journal_batches, session.account_id, wanted,
                                                           self.replay_chunk_frames)
            except DATABASE_ERRORS as error:
                if loop.time() + retry_s > give_up:
                    _log.warning("catch-up abandoned: the journal stayed unreadable", extra={
                        "session_id": session.session_id, "account_id": session.account_id, "error": repr(error)})
                    session.logout(p.SessionReason.SERVER_SHUTDOWN, time.time_ns())
                    return None
                _log.info("catch-up waits for the journal", extra={
                    "session_id": session.session_id, "error": repr(error), "retry_in_s": retry_s})
                await asyncio.sleep(retry_s)
                retry_s = min(retry_s * 2, CATCH_UP_RETRY_S_MAX)
        return None

    async def _drained(self, session: Session) -> None:
        """Wait while the client's socket buffer is full; a client that reads nothing for the
        stall bound is a slow consumer (LOGOUT SLOW_CONSUMER)."""
        size = getattr(session.transport, "get_write_buffer_size", None)
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        give_up, least = loop.time() + self.catch_up_stall_s_max, None
        while size is not None and session.state == SessionState.ACTIVE and size() > _CATCH_UP_BUFFER_BYTES_MAX:
            if least is None or size() < least:  # the client read something: progress
                least, give_up = size(), loop.time() + self.catch_up_stall_s_max
            elif loop.time() > give_up:
                _log.info("catch-up ended: the client does not read", extra={"session_id": session.session_id})
                session.logout(p.SessionReason.SLOW_CONSUMER, time.time_ns())
                return
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
