"""The client's side of the credit window (docs/protocol.md 3.4).

The server announces in LOGIN_ACCEPTED how many commands of a session it holds read and not
yet answered (``commands_in_flight_max``); beyond that it stops reading the connection until
answers come back. ``CreditWindow`` keeps a client within it: a command takes a credit before
it is written (``acquire``, which waits while none is left) and gives it back when its
outcome arrives (``release``), so the client is never the one its own backlog slows, and
whoever waits for credit waits in order of arrival.
"""
from __future__ import annotations

import asyncio
import collections

__all__ = ["CreditWindow"]


class CreditWindow:
    """At most ``size`` commands in flight (0: no bound known yet, before the first login)."""

    __slots__ = ("size", "in_flight", "_waiters")

    def __init__(self, size: int = 0) -> None:
        if size < 0:
            raise ValueError("size must not be negative")
        self.size = size
        self.in_flight = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def available(self) -> int | None:
        """Credits left (None: no bound known)."""
        return max(0, self.size - self.in_flight) if self.size else None

    def resize(self, size: int) -> None:
        """The window of a new session (each LOGIN_ACCEPTED announces it)."""
        if size < 0:
            raise ValueError("size must not be negative")
        self.size = size
        self._wake()

    def _room(self) -> bool:
        return not self.size or self.in_flight < self.size

    async def acquire(self) -> None:
        """Take a credit, waiting (first come, first served) while none is left."""
        if self._room() and not self._waiters:
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # _wake hands the credit over with the wake-up
        except BaseException:
            if waiter.done() and not waiter.cancelled():  # handed a credit, then cancelled
                self.release()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self, _future: object = None) -> None:
        """Give a credit back (a done callback of the command's outcome future fits)."""
        assert self.in_flight > 0
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand the credits there are to the oldest waiters."""
        while self._waiters and self._room():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)
