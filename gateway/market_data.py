"""Market data subscriptions and fan-out, and the account and venue queries, on the loop
(docs/protocol.md sections 10 and 11).

The replica makes the feed's frames from released batches (``replica.py``); this module sends
each subscriber its share. A session subscribes per instrument (or to every instrument); the
answer is an MD_SNAPSHOT at an md_seq, and the increments after it follow. Frames are encoded
once per batch: a subscriber of every instrument gets the batch's frames as one write, one of
some instruments a numpy selection of them.

A slow subscriber never delays anyone: before each write its socket's send queue is looked at;
beyond ``md_conflate_bytes`` it is *conflated*: its increments are dropped until the queue falls
under half of that, then it gets a fresh snapshot (request_id 0) of everything it subscribes to,
and increments after it. Conflated more than ``md_conflations_per_minute_max`` times in a
minute: LOGOUT SLOW_CONSUMER. Each subscription costs a token like any frame, and a session
holds at most ``md_subscriptions_max`` of them.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

import numpy as np

from matchcore import protocol as p
from matchcore.core.codes import ALL_INSTRUMENTS
from matchcore.gateway import queries
from matchcore.persistence.marketdata import frame_instruments

if TYPE_CHECKING:
    from matchcore.gateway.replica import Replica
    from matchcore.gateway.sessions import Session

__all__ = ["MarketData", "Subscription"]


class Subscription:
    """What one session listens to, and where its feed stands."""

    __slots__ = ("every", "every_depth", "instruments", "waiting", "stale", "conflations", "asked")

    def __init__(self) -> None:
        self.every = False                 # every instrument, now and added later
        self.every_depth = 0
        self.instruments: dict[int, int] = {}  # instrument -> depth_levels of its snapshots
        #: instruments (ALL_INSTRUMENTS: the every-subscription) whose snapshot is on its way:
        #: their increments are dropped until it is sent (it is at a later md_seq)
        self.waiting: set[int] = set()
        self.stale = False                 # conflated: nothing until the queue drains
        self.conflations: list[float] = []  # monotonic seconds of the recent ones
        self.asked: list[float] = []        # monotonic seconds of the client's recent subscribes

    def count(self) -> int:
        return len(self.instruments) + int(self.every)


class MarketData:
    """Subscriptions of the sessions and the delivery of the replica's frames."""

    def __init__(self, replica: "Replica", metrics, *, subscriptions_max: int = 64,
                 conflate_bytes: int = 4 << 20, conflations_per_minute_max: int = 10,
                 open_orders_page_max: int = 500, snapshots_per_s_max: int = 10,
                 output_bytes_max: int = 64 << 20, direct: bool = True) -> None:
        self.replica = replica
        self.output_bytes_max = output_bytes_max
        #: market-data-only sessions on plain TCP get their feed from the replica's thread
        self.direct = direct
        self.direct_sessions: set["Session"] = set()
        self.snapshots_per_s_max = snapshots_per_s_max
        self.open_orders_page_max = open_orders_page_max
        self.metrics = metrics
        self.subscriptions_max = subscriptions_max
        self.conflate_bytes = conflate_bytes
        self.conflations_per_minute_max = conflations_per_minute_max
        self.subscribers: dict["Session", Subscription] = {}

    # ------------------------------------------------------------------ requests

    def _direct_capable(self, session: "Session", message: p.MdSubscribe) -> bool:
        """A market-data-only session on plain TCP subscribing to every instrument, with nothing
        queued on its transport: its output can move to the replica's thread."""
        if not (self.direct and session.market_data_only and message.instrument_id == ALL_INSTRUMENTS
                and session.redirect is None and session not in self.subscribers):
            return False
        transport = session.transport
        extra = getattr(transport, "get_extra_info", None)
        if extra is None or extra("sslcontext") is not None or extra("socket") is None:
            return False
        return session.queued_bytes() == 0

    def _subscribe_direct(self, session: "Session", message: p.MdSubscribe) -> None:
        replica, session_id = self.replica, session.session_id
        fd = os.dup(session.transport.get_extra_info("socket").fileno())
        session.redirect = lambda data: replica.direct_write(session_id, data)
        self.direct_sessions.add(session)
        replica.listening = True
        replica.direct_register(session, fd, message.depth_levels, message.request_id,
                                conflate_bytes=self.conflate_bytes, output_bytes_max=self.output_bytes_max,
                                conflations_per_minute_max=self.conflations_per_minute_max)

    def subscribe(self, session: "Session", message: p.MdSubscribe) -> None:
        """A client's MD_SUBSCRIBE. Each one makes a snapshot, so a session may ask for at most
        ``snapshots_per_s_max`` a second (then RATE_LIMITED): a snapshot of every instrument
        can be large, and the replica makes it for everyone's feed."""
        sub = self.subscribers.get(session)
        if session in self.direct_sessions:
            if message.instrument_id != ALL_INSTRUMENTS:  # a direct session has the whole feed already
                session.refuse_request(p.MessageType.MD_SUBSCRIBE, p.SessionReason.TOO_MANY_SUBSCRIPTIONS,
                                       message.request_id)
                return
            self.replica.direct_unsubscribe(session.session_id, True)
            self.replica.direct_resnapshot(session.session_id, message.request_id)
            return
        if self._direct_capable(session, message):
            self._subscribe_direct(session, message)
            return
        if sub is not None:
            now = time.monotonic()
            sub.asked = [t for t in sub.asked if now - t < 1.0]
            if len(sub.asked) >= self.snapshots_per_s_max:
                session.refuse_request(p.MessageType.MD_SUBSCRIBE, p.SessionReason.RATE_LIMITED, message.request_id)
                return
            sub.asked.append(now)
        self._subscribe(session, message)

    def _subscribe(self, session: "Session", message: p.MdSubscribe) -> None:
        sub = self.subscribers.get(session)
        every = message.instrument_id == ALL_INSTRUMENTS
        known = sub is not None and (sub.every if every else message.instrument_id in sub.instruments)
        if not known and (sub.count() if sub else 0) >= self.subscriptions_max:
            session.refuse_request(p.MessageType.MD_SUBSCRIBE, p.SessionReason.TOO_MANY_SUBSCRIPTIONS,
                                   message.request_id)
            return
        if sub is None:
            sub = self.subscribers[session] = Subscription()
            self.replica.listening = True
        key = ALL_INSTRUMENTS if every else message.instrument_id
        if key in sub.waiting:
            return  # its snapshot is already on its way
        sub.waiting.add(key)

        def answer(feed):
            ids = feed.engine.instrument_ids() if every else [message.instrument_id]
            return queries.snapshots(feed, ids, message.depth_levels, message.request_id)

        def reply(frames: bytes | None) -> None:
            self._snapshot_arrived(session, message, key, frames)

        self.replica.ask(answer, reply)

    def _snapshot_arrived(self, session: "Session", message: p.MdSubscribe, key: int, frames: bytes | None) -> None:
        sub = self.subscribers.get(session)
        if sub is None or not session.active:
            return
        sub.waiting.discard(key)
        if frames is None:  # an unknown instrument (or the replica cannot answer)
            session.refuse_request(p.MessageType.MD_SUBSCRIBE, p.SessionReason.UNKNOWN_INSTRUMENT, message.request_id)
            if sub.count() == 0 and not sub.waiting:
                self.forget(session)
            return
        if key == ALL_INSTRUMENTS:
            sub.every, sub.every_depth = True, message.depth_levels
        else:
            sub.instruments[key] = message.depth_levels
        session.send_market_data(frames)

    def unsubscribe(self, session: "Session", message: p.MdUnsubscribe) -> None:
        if session in self.direct_sessions and message.instrument_id == ALL_INSTRUMENTS:
            self.replica.direct_unsubscribe(session.session_id, False)
            return
        sub = self.subscribers.get(session)
        every = message.instrument_id == ALL_INSTRUMENTS
        if sub is None or not (sub.every if every else message.instrument_id in sub.instruments):
            session.refuse_request(p.MessageType.MD_UNSUBSCRIBE, p.SessionReason.UNKNOWN_INSTRUMENT, message.request_id)
            return
        if every:
            sub.every = False
        else:
            del sub.instruments[message.instrument_id]
        if sub.count() == 0 and not sub.waiting:
            self.forget(session)

    def forget(self, session: "Session") -> None:
        self.subscribers.pop(session, None)
        if session in self.direct_sessions:
            self.direct_sessions.discard(session)
            self.replica.direct_release(session.session_id)
        self.replica.listening = bool(self.subscribers or self.direct_sessions)

    # ------------------------------------------------------------------ delivery

    def on_frames(self, last_seq: int, frames: np.ndarray) -> None:
        """A released batch's frames (n, 72): each subscriber's share. The common case (a
        subscriber of every instrument, not conflated) costs one size check and one write."""
        if not self.subscribers:
            return
        whole: bytes | None = None
        instruments: np.ndarray | None = None
        conflate = self.conflate_bytes
        sent = 0
        for session, sub in list(self.subscribers.items()):
            if not sub.stale and sub.every and ALL_INSTRUMENTS not in sub.waiting and session.active:
                if session.queued_bytes() <= conflate:
                    if whole is None:
                        whole = frames.tobytes()
                    session.send_market_data(whole)
                    sent += len(frames)
                    continue
            if not session.active:
                self.forget(session)
                continue
            if self._conflated(session, sub):
                continue
            # not conflated and not served above: its instruments one by one (an every-instrument
            # subscription whose snapshot is on its way gets nothing yet)
            wanted = [i for i in sub.instruments if i not in sub.waiting]
            if not wanted:
                continue
            if instruments is None:
                instruments = frame_instruments(frames)
            chosen = frames[np.isin(instruments, wanted)]
            if len(chosen):
                session.send_market_data(chosen.tobytes())
                sent += len(chosen)
        self.metrics.md_frames_sent += sent

    def check_conflated(self) -> None:
        """The clock's tick: a conflated subscriber that has read its queue gets its fresh
        snapshot even when no new frames come (a quiet market)."""
        for session, sub in list(self.subscribers.items()):
            if sub.stale and session.active:
                self._conflated(session, sub)

    async def run_clock(self, tick_ms: int = 50) -> None:
        while True:
            await asyncio.sleep(tick_ms / 1000)
            self.check_conflated()

    def _conflated(self, session: "Session", sub: Subscription) -> bool:
        """True while the subscriber's increments are dropped (its socket is behind)."""
        queued = session.queued_bytes()
        if not sub.stale:
            if queued <= self.conflate_bytes:
                return False
            sub.stale = True
            now = time.monotonic()
            sub.conflations = [t for t in sub.conflations if now - t < 60.0] + [now]
            self.metrics.md_conflations += 1
            if len(sub.conflations) > self.conflations_per_minute_max:
                session.logout(p.SessionReason.SLOW_CONSUMER, time.time_ns())
                self.forget(session)
            return True
        if queued > self.conflate_bytes // 2:
            return True
        # drained: a fresh snapshot of everything it listens to, then increments again
        sub.stale = False
        for instrument_id, depth in list(sub.instruments.items()):
            self._subscribe(session, p.MdSubscribe(instrument_id, depth, 0))
        if sub.every:
            self._subscribe(session, p.MdSubscribe(ALL_INSTRUMENTS, sub.every_depth, 0))
        return True

    # ------------------------------------------------------------------ queries

    def query(self, session: "Session", message: p.Message, reply) -> None:
        """An account or venue query, answered by the replica (``reply(frames or None)``)."""
        account_id, page_max = session.account_id, self.open_orders_page_max
        if isinstance(message, p.BalancesQuery):
            self.replica.ask(lambda feed: queries.balances(feed, account_id, message.request_id), reply)
        elif isinstance(message, p.OpenOrdersQuery):
            self.replica.ask(lambda feed: queries.open_orders(feed, account_id, message, page_max), reply)
        elif isinstance(message, p.InstrumentsQuery):
            self.replica.ask(lambda feed: queries.instruments(feed, message.request_id), reply)
        elif isinstance(message, p.TransferQuery):
            self.replica.ask(lambda feed: queries.transfer(feed, message), reply)
        else:
            raise TypeError(f"not a query: {message!r}")
