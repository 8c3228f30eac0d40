"""The order view: ORDER_STATUS answered from released (durable) state only.

A second Engine applies the durable batches in a thread of its own, so an answer never shows
what is not yet durable. The loop only appends each released batch to a deque; the replica's
thread wakes every ``ORDER_VIEW_APPLY_EVERY_S``, when ``ORDER_VIEW_WAKE_BATCHES`` batches
wait, or for a query (waking a thread per batch cost the loop about 100 us a batch: a
cross-CPU wake-up).
"""
from __future__ import annotations

import asyncio
import collections
import threading
from typing import Callable

import numpy as np

from matchcore import protocol as p
from matchcore.core import Engine

__all__ = ["OrderView", "ORDER_VIEW_APPLY_EVERY_S", "ORDER_VIEW_WAKE_BATCHES", "ORDER_VIEW_QUERIES_MAX"]

#: the order-status replica applies what was released at least this often...
ORDER_VIEW_APPLY_EVERY_S = 0.02
#: ... and as soon as this many batches wait (a query wakes it at once)
ORDER_VIEW_WAKE_BATCHES = 64
#: ORDER_STATUS queries waiting for the replica's thread, all sessions together; beyond it (or
#: when the replica failed) a query is answered None, which the session refuses BUSY
ORDER_VIEW_QUERIES_MAX = 4096


class OrderView:
    """Order state as of the released (durable) events: a replica Engine that a thread of its
    own keeps applying the released batches to (``Engine.apply`` runs without the GIL, so
    the loop is not held up); a query wakes it, and the thread answers once it has caught up
    (``query``): the loop never waits for it."""

    __slots__ = ("engine", "_pending", "_wake", "_condition", "_submitted", "_applied", "_thread",
                 "_error", "_queries")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: collections.deque = collections.deque()  # appends and pops are atomic
        self._wake = threading.Event()
        self._condition = threading.Condition()
        self._submitted = self._applied = 0
        self._error: BaseException | None = None
        #: ORDER_STATUS queries for the thread: (loop, reply, account, client order id, as of)
        self._queries: collections.deque = collections.deque()
        self._thread = threading.Thread(target=self._run, name="matchcore-order-view", daemon=True)
        self._thread.start()

    def released(self, commands: np.ndarray) -> None:
        self._submitted += 1
        self._pending.append(commands)
        if len(self._pending) >= ORDER_VIEW_WAKE_BATCHES:
            self._wake.set()

    @property
    def lag_batches(self) -> int:
        """Released batches not applied to the replica yet."""
        return self._submitted - self._applied

    def query(self, account_id: int, client_order_id: int, as_of_event_seq: int,
              reply: Callable[[p.OrderStatus | None], object]) -> None:
        """Answer ORDER_STATUS off the loop: the replica's thread applies every batch released
        so far, then calls ``reply(status)`` back on this loop (None: it cannot answer)."""
        if len(self._queries) >= ORDER_VIEW_QUERIES_MAX or self._error is not None:
            reply(None)
            return
        self._queries.append((asyncio.get_running_loop(), reply, account_id, client_order_id, as_of_event_seq))
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(ORDER_VIEW_APPLY_EVERY_S)
            self._wake.clear()
            while self._pending:
                commands = self._pending.popleft()
                if commands is None:
                    self._answer_queries()
                    return
                try:
                    with self._condition:
                        self.engine.apply(np.ascontiguousarray(commands))
                        self._applied += 1
                        self._condition.notify_all()
                except BaseException as error:  # surfaced to the next query
                    self._error = error
                    self._answer_queries()
                    return
            self._answer_queries()

    def _answer_queries(self) -> None:
        while self._queries:
            loop, reply, account_id, client_order_id, as_of = self._queries.popleft()
            status = None if self._error is not None else self._status_now(account_id, client_order_id, as_of)
            try:
                loop.call_soon_threadsafe(reply, status)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    def _status_now(self, account_id: int, client_order_id: int, as_of_event_seq: int) -> p.OrderStatus:
        with self._condition:
            order = self.engine.order(account_id, client_order_id)
        if order is None:
            return p.OrderStatus(p.OrderState.NOT_OPEN, 0, 0, client_order_id, 0, 0, 0, as_of_event_seq)
        return p.OrderStatus(p.OrderState.OPEN, order["side"], order["instrument_id"], client_order_id,
                             order["order_id"], order["price"], order["leaves"], as_of_event_seq)

    def stop(self) -> None:
        self._pending.append(None)
        self._wake.set()
        self._thread.join(10)
