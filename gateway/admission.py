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
    def submit(self, commands: np.ndarray) -> int: ...


class Admission:
    """CommandSink with backpressure in front of a ``Core`` (a DurableCore)."""

    __slots__ = ("core", "retry_s", "_held", "_retry", "_loop", "commands_taken", "held_max_records",
                 "_held_records")

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

    @property
    def held_records(self) -> int:
        return self._held_records

    def submit(self, session: Session, commands: np.ndarray) -> int:
        """Offer a session's commands; returns how many the ring took (a prefix)."""
        if session.admin:
            stamp_sender(commands, session.account_id)
        if self._held:
            return 0  # others wait already: keep the arrival order
        taken = self.core.submit(commands)
        self.commands_taken += taken
        return taken

    def hold(self, session: Session | None, commands: np.ndarray) -> None:
        """Keep commands the ring did not take; offered again, oldest first."""
        self._held.append((session, commands.copy()))
        self._held_records += len(commands)
        self.held_max_records = max(self.held_max_records, self._held_records)
        self._schedule()

    def submit_system(self, commands: np.ndarray) -> None:
        """Commands of the server itself: taken now or held, never dropped."""
        taken = 0 if self._held else self.core.submit(commands)
        self.commands_taken += taken
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
            self.commands_taken += taken
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
