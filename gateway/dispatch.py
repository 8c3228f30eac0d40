"""The dispatcher: durable events out to the sessions they belong to, in order, with replay.

``on_release(batch)`` is called by CoreService on the loop, in seq order, only after the
batch is committed. ``AccountStreams.append`` numbers each recipient's events and encodes
their frames once (into the ring of recent frames); the dispatcher writes each account's
frames of the batch to that account's live sessions in one write: one write per session
per batch, and batches are released once per loop iteration at most.

A session that is behind (it logged in asking for older events, or it could not be sent
some) catches up in a task: frames from memory while the ring still holds them, else re-made
from the journal, a chunk at a time, pausing while the client's socket buffer is full; live
frames wait meanwhile (they are in the ring), so the client sees no gap and no repeat.

``OrderView`` answers ORDER_STATUS from released state only: a second Engine that applies
the durable batches in a thread of its own, so an answer never shows what is not yet
durable. The loop only appends each batch to a deque; the replica's thread wakes every
``ORDER_VIEW_APPLY_EVERY_S``, when ``ORDER_VIEW_WAKE_BATCHES`` batches wait, or for a query
(waking a thread per batch cost the loop ~100 us a batch on this VM: a cross-CPU wake-up).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import AsyncIterator, Callable

import numpy as np

from matchcore.core import Engine
from matchcore.gateway import protocol as p
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.server import Session, SessionState
from matchcore.gateway.streams import AccountStreams

__all__ = ["Dispatcher", "OrderView"]

_log = logging.getLogger("matchcore.gateway.dispatch")
#: while a client's socket buffer holds more than this, a catch-up waits
_CATCH_UP_BUFFER_BYTES_MAX = 4 << 20
#: the order-status replica applies what was released at least this often...
ORDER_VIEW_APPLY_EVERY_S = 0.02
#: ... and as soon as this many batches wait (a query wakes it at once)
ORDER_VIEW_WAKE_BATCHES = 64


class OrderView:
    """Order state as of the released (durable) events: a replica Engine that a thread of its
    own keeps applying the released batches to (``Engine.apply`` runs without the GIL, so
    the loop is not held up); a query wakes it and waits until it has caught up."""

    __slots__ = ("engine", "_pending", "_wake", "_condition", "_submitted", "_applied", "_thread",
                 "_error")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: collections.deque = collections.deque()  # appends and pops are atomic
        self._wake = threading.Event()
        self._condition = threading.Condition()
        self._submitted = self._applied = 0
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="matchcore-order-view", daemon=True)
        self._thread.start()

    def released(self, commands: np.ndarray) -> None:
        self._submitted += 1
        self._pending.append(commands)
        if len(self._pending) >= ORDER_VIEW_WAKE_BATCHES:
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(ORDER_VIEW_APPLY_EVERY_S)
            self._wake.clear()
            while self._pending:
                commands = self._pending.popleft()
                if commands is None:
                    return
                try:
                    with self._condition:
                        self.engine.apply(np.ascontiguousarray(commands))
                        self._applied += 1
                        self._condition.notify_all()
                except BaseException as error:  # surfaced to the next query
                    self._error = error
                    return

    def status(self, account_id: int, client_order_id: int, as_of_event_seq: int,
               timeout_s: float = 5.0) -> p.OrderStatus | None:
        """None when the replica cannot answer (it failed, or is far behind)."""
        submitted = self._submitted
        self._wake.set()
        with self._condition:
            if not self._condition.wait_for(lambda: self._applied >= submitted or self._error is not None,
                                            timeout_s) or self._error is not None:
                return None
            order = self.engine.order(account_id, client_order_id)
        if order is None:
            return p.OrderStatus(p.OrderState.NOT_OPEN, 0, 0, client_order_id, 0, 0, 0, as_of_event_seq)
        return p.OrderStatus(p.OrderState.OPEN, order["side"], order["instrument_id"], client_order_id,
                             order["order_id"], order["price"], order["leaves"], as_of_event_seq)

    def stop(self) -> None:
        self._pending.append(None)
        self._wake.set()
        self._thread.join(10)


class Dispatcher:
    """Released batches -> account streams -> sessions. See the module docstring."""

    def __init__(self, streams: AccountStreams, metrics: GatewayMetrics,
                 journal_batches: Callable[[int], AsyncIterator], *, replay_chunk_frames: int = 8192,
                 order_view: OrderView | None = None) -> None:
        self.streams = streams
        self.metrics = metrics
        self.journal_batches = journal_batches
        self.replay_chunk_frames = replay_chunk_frames
        self.order_view = order_view
        self.subscribers: dict[int, list[Session]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._now_ns = 0
        self._journal_lock = asyncio.Lock()  # one journal connection: one reader at a time
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

    def order_status(self, account_id: int, client_order_id: int) -> p.OrderStatus | None:
        if self.order_view is None:
            return None
        return self.order_view.status(account_id, client_order_id, self.streams.last_event_seq(account_id))

    # ------------------------------------------------------------------ release

    def on_release(self, batch) -> None:
        now_ns = time.time_ns()
        self._now_ns = now_ns
        commands, events = batch.commands, batch.events
        self.streams.append(commands, events, self._deliver)
        self.metrics.batch_released(commands, events, time.time_ns())
        if self.order_view is not None:
            self.order_view.released(commands)
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
                    async with self._journal_lock:
                        found = await self.streams.from_journal(self.journal_batches, account, wanted,
                                                                self.replay_chunk_frames)
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

    @staticmethod
    async def _drained(session: Session) -> None:
        size = getattr(session.transport, "get_write_buffer_size", None)
        await asyncio.sleep(0)
        while size is not None and session.state == SessionState.ACTIVE and size() > _CATCH_UP_BUFFER_BYTES_MAX:
            await asyncio.sleep(0.001)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
