"""Admission: the one door from the sessions into the core's input ring.

Sessions hand it their decoded commands (``submit``); it writes them into the input ring of
``DurableCore``, which stamps the global sequence number and the time. A full ring is
backpressure, never a drop: what the ring did not take is kept here (``hold``, a copy) in
arrival order, the session stops reading its socket, and a retry timer offers the held
commands again, oldest first, until the ring takes them all; then the session reads again
(``Session.on_input_released``). While anything is held, new commands queue behind it, so
the order in which the gateway received commands is the order of their sequence numbers.

Commands the server makes itself (cancel-on-disconnect's MASS_CANCEL) go the same way
(``submit_system``) and are never dropped either.

Credit (the per-session window, ``limits.commands_in_flight_max``): every command a session
hands in counts in its ``commands_in_flight`` until the batch holding it is released
(``released(last_seq)``, called after each release, once its events are on their way).
What the ring takes is remembered as (seq of its last command, session, count), in seq
order (one submit takes consecutive seqs), so a release pays one step per submission it
reaches, not per command, and a submission split over two batches is credited in two; a session
at its window (it stopped decoding) is told when credit comes back (``Session.on_credit``).
"""
from __future__ import annotations

import asyncio
import collections
import time
from typing import Protocol

import numpy as np

from matchcore.gateway.sessions import Session, SessionState
from matchcore.gateway.streams import stamp_sender

__all__ = ["Admission", "Core", "ADMISSION_TURN_RECORDS"]

#: commands of one session offered to a full input ring before the next held session's turn
ADMISSION_TURN_RECORDS = 256


class Core(Protocol):
    #: the seq the next command submitted gets (the last one taken: next_seq - 1)
    next_seq: int

    def submit(self, commands: np.ndarray) -> int: ...


class Admission:
    """CommandSink with backpressure in front of a ``Core`` (a DurableCore)."""

    __slots__ = ("core", "retry_s", "_held", "_retry", "_loop", "commands_taken", "held_max_records",
                 "_held_records", "_unreleased", "in_flight_max_seen")

    def __init__(self, core: Core, *, retry_s: float = 0.0002) -> None:
        self.core = core
        self.retry_s = retry_s
        self._held: collections.deque[tuple[Session | None, np.ndarray]] = collections.deque()
        self._retry: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self.commands_taken = 0
        self._held_records = 0
        #: the most commands held at once (a gauge of backpressure)
        self.held_max_records = 0
        #: (seq of the last command, session, commands) of each submission not yet released
        self._unreleased: collections.deque[tuple[int, Session, int]] = collections.deque()
        #: the most commands one session had in flight (bounded by its credit window)
        self.in_flight_max_seen = 0

    @property
    def held_records(self) -> int:
        return self._held_records

    def submit(self, session: Session, commands: np.ndarray) -> int:
        """Offer a session's commands; returns how many the ring took (a prefix)."""
        if session.admin:
            stamp_sender(commands, session.account_id)
        session.commands_in_flight += len(commands)  # taken now or held: received, not answered
        self.in_flight_max_seen = max(self.in_flight_max_seen, session.commands_in_flight)
        if self._held:
            return 0  # others wait already: keep the arrival order
        taken = self.core.submit(commands)
        self._taken(session, taken)
        return taken

    def _taken(self, session: Session | None, taken: int) -> None:
        self.commands_taken += taken
        if taken and session is not None:
            self._unreleased.append((self.core.next_seq - 1, session, taken))

    def released(self, last_seq: int) -> None:
        """Every command up to ``last_seq`` is released: give its session the credit back."""
        unreleased = self._unreleased
        if not unreleased or unreleased[0][0] - unreleased[0][2] >= last_seq:
            return
        now_ns = time.time_ns()
        while unreleased:
            seq, session, count = unreleased[0]
            done = min(count, last_seq - (seq - count))  # a submission's seqs are consecutive
            if done <= 0:
                break
            if done == count:
                unreleased.popleft()
            else:  # the rest of it is in a later batch
                unreleased[0] = (seq, session, count - done)
            session.commands_in_flight -= done
            assert session.commands_in_flight >= 0
            session.on_credit(now_ns)  # a session that was at its window reads again

    def hold(self, session: Session | None, commands: np.ndarray) -> None:
        """Keep commands the ring did not take; offered again, oldest first."""
        self._held.append((session, commands.copy()))
        self._held_records += len(commands)
        self.held_max_records = max(self.held_max_records, self._held_records)
        self._schedule()

    def submit_system(self, commands: np.ndarray) -> None:
        """Commands of the server itself: taken now or held, never dropped."""
        taken = 0 if self._held else self.core.submit(commands)
        self._taken(None, taken)
        if taken < len(commands):
            self.hold(None, commands[taken:])

    def _schedule(self) -> None:
        if self._retry is None:
            self._retry = self._loop.call_later(self.retry_s, self._drain)

    def _drain(self) -> None:
        """Offer the held commands again, in turns: at most ``ADMISSION_TURN_RECORDS`` of one
        session at a time, so one session's large backlog does not keep the others waiting
        behind all of it (each session's own commands keep their order: a held session
        decodes nothing more until all of its commands are taken)."""
        self._retry = None
        while self._held:
            session, commands = self._held[0]
            offered = commands[:ADMISSION_TURN_RECORDS] if session is not None else commands
            taken = self.core.submit(offered)
            self._taken(session, taken)
            self._held_records -= taken
            if taken < len(offered):
                self._held[0] = (session, commands[taken:])
                self._schedule()
                return
            self._held.popleft()
            if taken < len(commands):  # its turn is over: to the back of the line
                self._held.append((session, commands[taken:]))
                continue
            if session is not None and session.state == SessionState.ACTIVE:
                session.on_input_released(time.time_ns())
