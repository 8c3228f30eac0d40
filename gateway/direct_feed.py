"""Market data written by the replica's thread straight to the socket (never by the loop).

For a session of a market-data-only key on plain TCP that subscribes to every instrument, the
replica's thread owns the session's output: the loop redirects every write of that session
(heartbeats, answers, LOGOUT) into the thread's queue, and the thread sends them and the feed's
frames on its own descriptor of the socket (a ``dup``: closing the loop's transport cannot let
the thread write into a reused descriptor). The loop then spends nothing per batch on such a
subscriber. Conflation works as on the loop: beyond ``conflate_bytes`` unsent, increments are
dropped until half of it is sent, then a fresh snapshot; too many conflations in a minute, or
more than ``output_bytes_max`` unsent, end the session (the loop is asked to log it out).
"""
from __future__ import annotations

import socket
import time

__all__ = ["DirectSubscriber"]


class DirectSubscriber:
    """One session's output, owned by the replica's thread."""

    __slots__ = ("session", "sock", "pending", "subscribed", "depth_levels", "stale", "conflations", "dead",
                 "conflate_bytes", "output_bytes_max", "conflations_per_minute_max", "frames_sent")

    def __init__(self, session, fd: int, depth_levels: int, *, conflate_bytes: int, output_bytes_max: int,
                 conflations_per_minute_max: int) -> None:
        self.session = session
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)
        self.pending = bytearray()
        self.subscribed = True
        self.depth_levels = depth_levels
        self.stale = False
        self.conflations: list[float] = []
        self.dead = False
        self.conflate_bytes = conflate_bytes
        self.output_bytes_max = output_bytes_max
        self.conflations_per_minute_max = conflations_per_minute_max
        self.frames_sent = 0

    def write(self, data: bytes) -> None:
        """Bytes that must go (answers, heartbeats, snapshots, LOGOUT): never dropped."""
        if self.dead:
            return
        if self.pending:
            self.pending += data
            self.flush()
        else:
            sent = self._send(data)
            if sent < len(data):
                self.pending += memoryview(data)[sent:]

    def increments(self, data: bytes, frames: int) -> bool:
        """A batch's frames, unless conflated; True when the session must end (too slow)."""
        if self.dead or not self.subscribed:
            return False
        if self.stale:
            return False
        if len(self.pending) > self.conflate_bytes:
            self.stale = True
            now = time.monotonic()
            self.conflations = [t for t in self.conflations if now - t < 60.0] + [now]
            return len(self.conflations) > self.conflations_per_minute_max
        self.write(data)
        self.frames_sent += frames
        return len(self.pending) > self.output_bytes_max

    def drained(self) -> bool:
        """Conflated, and now half of it sent: time for a fresh snapshot."""
        return self.stale and len(self.pending) <= self.conflate_bytes // 2

    def flush(self) -> None:
        if self.pending and not self.dead:
            sent = self._send(self.pending)
            del self.pending[:sent]

    def _send(self, data) -> int:
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:  # the peer is gone: the loop sees it on its side and releases us
            self.dead = True
            self.pending.clear()
            return len(data)

    def close(self) -> None:
        self.flush()  # once, not blocking: what is left is dropped with the connection
        self.dead = True
        self.pending.clear()
        try:
            self.sock.close()
        except OSError:
            pass
