"""The replica: a second Engine that applies released (durable) batches in a thread of its own.

It answers what must never show state that is not yet durable, off the event loop: ORDER_STATUS,
the account and venue queries (balances, open orders, instruments, a transfer's outcome) and
market data snapshots; and it makes the market data feed (``persistence.marketdata``: the same
function a replay of the journal runs) from each released batch.

The loop only appends each released batch to a deque and, while anyone listens to market data,
wakes the thread per batch (else every ``REPLICA_APPLY_EVERY_S`` or ``REPLICA_WAKE_BATCHES``
batches: a cross-CPU wake-up costs the loop about 100 us). Everything the thread makes (feed
frames, snapshots, answers, checkpoints) goes to the loop through one ordered deque, drained by
one callback: so a snapshot taken between two batches reaches its subscriber after the frames
of the batches before it and before those after it.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Callable

import numpy as np

from matchcore import protocol as p
from matchcore.gateway.direct_feed import DirectSubscriber
from matchcore.persistence.marketdata import MarketDataFeed

_log = logging.getLogger("matchcore.gateway.replica")

__all__ = ["Replica", "REPLICA_APPLY_EVERY_S", "REPLICA_WAKE_BATCHES", "REPLICA_QUERIES_MAX"]

#: the replica applies what was released at least this often...
REPLICA_APPLY_EVERY_S = 0.02
#: ... and as soon as this many batches wait (a query, or a market data listener, wakes it at once)
REPLICA_WAKE_BATCHES = 64
#: queries waiting for the replica's thread, all sessions together; beyond it (or when the
#: replica failed) a query is answered None, which the session refuses BUSY
REPLICA_QUERIES_MAX = 4096


class Replica:
    """See the module docstring. ``on_output(kind, *payload)`` is called on the loop, in order:
    ``("frames", last_seq, frames)`` per batch with market data, ``("checkpoint", seq,
    engine_state, feed_state)`` every ``checkpoint_every_commands``; query answers go to the
    ``reply`` each query gave."""

    __slots__ = ("feed", "listening", "checkpoint_every_commands", "_next_checkpoint", "_pending", "_wake",
                 "_submitted", "_applied", "_thread", "_error", "_queries", "_out", "_loop",
                 "_scheduled", "_on_output", "_control", "_direct", "direct_frames_sent", "direct_conflations")

    def __init__(self, feed: MarketDataFeed, on_output: Callable[..., None], *,
                 checkpoint_every_commands: int = 1_000_000) -> None:
        self.feed = feed
        #: sessions subscribed to market data (the loop keeps it): wake the thread per batch
        self.listening = False
        self.checkpoint_every_commands = checkpoint_every_commands
        self._next_checkpoint = feed.last_seq + checkpoint_every_commands if checkpoint_every_commands else 0
        self._pending: collections.deque = collections.deque()  # appends and pops are atomic
        self._wake = threading.Event()
        self._submitted = self._applied = 0
        self._error: BaseException | None = None
        self._queries: collections.deque = collections.deque()
        self._out: collections.deque = collections.deque()
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._on_output = on_output
        #: direct subscribers (direct_feed.py): the loop's requests, in order, and the thread's table
        self._control: collections.deque = collections.deque()
        self._direct: dict[int, DirectSubscriber] = {}
        self.direct_frames_sent = 0
        self.direct_conflations = 0
        self._thread = threading.Thread(target=self._run, name="matchcore-replica", daemon=True)
        self._thread.start()

    @property
    def engine(self):
        return self.feed.engine

    def released(self, commands: np.ndarray, events: np.ndarray) -> None:
        self._submitted += 1
        self._pending.append((commands, events))
        if self.listening or len(self._pending) >= REPLICA_WAKE_BATCHES:
            self._wake.set()

    @property
    def lag_batches(self) -> int:
        """Released batches not applied to the replica yet."""
        return self._submitted - self._applied

    def ask(self, answer: Callable[[MarketDataFeed], object], reply: Callable[[object], object]) -> None:
        """Run ``answer(feed)`` in the thread once it has applied every batch released so far;
        ``reply(result)`` comes back on the loop in order with the feed's frames (None: the
        replica cannot answer: it failed, or too many queries wait)."""
        if len(self._queries) >= REPLICA_QUERIES_MAX or self._error is not None:
            reply(None)
            return
        self._queries.append((answer, reply, self._submitted))
        self._wake.set()

    def query(self, account_id: int, client_order_id: int, as_of_event_seq: int,
              reply: Callable[[p.OrderStatus | None], object]) -> None:
        """ORDER_STATUS from released state (the order view's question)."""
        self.ask(lambda feed: _order_status(feed, account_id, client_order_id, as_of_event_seq), reply)

    # ------------------------------------------------------------------ direct subscribers (the loop's side)

    def direct_register(self, session, fd: int, depth_levels: int, request_id: int, **limits) -> None:
        """The session's output moves to this thread: a snapshot of every instrument, then the
        feed; from now on the loop hands its writes to ``direct_write``."""
        self._control_put("register", session, fd, depth_levels, request_id, limits)

    def direct_write(self, session_id: int, data: bytes) -> None:
        self._control_put("write", session_id, data)

    def direct_resnapshot(self, session_id: int, request_id: int) -> None:
        self._control_put("snapshot", session_id, request_id)

    def direct_unsubscribe(self, session_id: int, subscribed: bool) -> None:
        self._control_put("subscribed", session_id, subscribed)

    def direct_release(self, session_id: int) -> None:
        self._control_put("release", session_id)

    def _control_put(self, *item) -> None:
        """A request for the thread, carried out once the batches released so far are applied."""
        self._control.append((self._submitted, item))
        self._wake.set()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while True:
            waiting = any(d.pending for d in self._direct.values())
            self._wake.wait(0.001 if waiting else REPLICA_APPLY_EVERY_S)
            self._wake.clear()
            self._run_control()
            while self._pending:
                item = self._pending.popleft()
                if item is None:
                    self._answer_queries()
                    for direct in self._direct.values():
                        direct.close()
                    return
                try:
                    self._apply(*item)
                except BaseException as error:  # surfaced to every later query (BUSY)
                    self._error = error
                    _log.critical("the replica stopped: no more market data, queries refused BUSY", extra={
                        "error": repr(error), "released_batches": self._submitted, "applied_batches": self._applied},
                        exc_info=error)
                    self._answer_queries()
                    return
                self._answer_queries()
                self._run_control()
            self._answer_queries()
            self._flush_direct()

    def _apply(self, commands: np.ndarray, events: np.ndarray) -> None:
        feed = self.feed
        feed.engine.apply(np.ascontiguousarray(commands))
        frames = feed.frames_of(commands, events)
        self._applied += 1
        if len(frames):
            self._emit(("frames", feed.last_seq, frames))
            if self._direct:
                self._fan_out_direct(frames)
        if self._next_checkpoint and feed.last_seq >= self._next_checkpoint:
            self._next_checkpoint = feed.last_seq + self.checkpoint_every_commands
            self._emit(("checkpoint", feed.last_seq, feed.engine.snapshot(), feed.feed_state()))

    def _run_control(self) -> None:
        """The loop's requests about direct subscribers, in the order it made them, each once
        the batches released before it are applied (a snapshot is of what came before)."""
        control = self._control
        while control and control[0][0] <= self._applied:
            _, item = control.popleft()
            kind, session_id = item[0], (item[1].session_id if item[0] == "register" else item[1])
            if kind == "register":
                _, session, fd, depth_levels, request_id, limits = item
                direct = self._direct[session_id] = DirectSubscriber(session, fd, depth_levels, **limits)
                self._direct_snapshot(direct, request_id)
                continue
            direct = self._direct.get(session_id)
            if direct is None:
                continue
            if kind == "write":
                direct.write(item[2])
            elif kind == "snapshot":
                self._direct_snapshot(direct, item[2])
            elif kind == "subscribed":
                direct.subscribed = item[2]
            elif kind == "release":
                del self._direct[session_id]
                direct.close()

    def _direct_snapshot(self, direct: DirectSubscriber, request_id: int) -> None:
        from matchcore.gateway import queries
        feed = self.feed
        direct.write(queries.snapshots(feed, feed.engine.instrument_ids(), direct.depth_levels, request_id))
        direct.stale = False

    def _fan_out_direct(self, frames: np.ndarray) -> None:
        data, count = frames.tobytes(), len(frames)
        for direct in list(self._direct.values()):
            if direct.drained():
                self._direct_snapshot(direct, 0)
            was_stale, sent_before = direct.stale, direct.frames_sent
            if direct.increments(data, count):
                direct.subscribed = False  # no more increments; the loop logs it out (LOGOUT still goes)
                self._emit(("slow", direct.session))
            if direct.stale and not was_stale:
                self.direct_conflations += 1
            self.direct_frames_sent += direct.frames_sent - sent_before  # a counter: never goes down

    def _flush_direct(self) -> None:
        for direct in self._direct.values():
            direct.flush()
            if direct.drained():
                self._direct_snapshot(direct, 0)

    def _answer_queries(self) -> None:
        """Answer the queries whose batches are applied (a query waits for every batch released
        before it was asked)."""
        while self._queries and self._queries[0][2] <= self._applied:
            answer, reply, _ = self._queries.popleft()
            try:
                result = None if self._error is not None else answer(self.feed)
            except Exception as error:  # a bad question must not stop the replica
                self._error_logged(error)
                result = None
            self._emit(("reply", reply, result))

    def _error_logged(self, error: BaseException) -> None:
        _log.error("a replica query failed", extra={"error": repr(error)}, exc_info=error)

    def _emit(self, item) -> None:
        self._out.append(item)
        if not self._scheduled:
            self._scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _drain(self) -> None:
        """On the loop: hand everything made so far to its receiver, in order."""
        self._scheduled = False
        out = self._out
        frames: list = []  # the frames of consecutive batches go out as one (fewer writes when busy)
        last_seq = 0
        while out:
            item = out.popleft()
            if item[0] == "frames":
                frames.append(item[2])
                last_seq = item[1]
                continue
            if frames:
                self._on_output("frames", last_seq, frames[0] if len(frames) == 1 else np.concatenate(frames))
                frames = []
            if item[0] == "reply":
                item[1](item[2])
            else:
                self._on_output(*item)
        if frames:
            self._on_output("frames", last_seq, frames[0] if len(frames) == 1 else np.concatenate(frames))

    def stop(self) -> None:
        self._pending.append(None)
        self._wake.set()
        self._thread.join(10)


def _order_status(feed: MarketDataFeed, account_id: int, client_order_id: int, as_of_event_seq: int) -> p.OrderStatus:
    order = feed.engine.order(account_id, client_order_id)
    if order is None:
        return p.OrderStatus(p.OrderState.NOT_OPEN, 0, 0, client_order_id, 0, 0, 0, as_of_event_seq)
    return p.OrderStatus(p.OrderState.OPEN, order["side"], order["instrument_id"], client_order_id,
                         order["order_id"], order["price"], order["leaves"], as_of_event_seq)
