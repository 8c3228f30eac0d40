"""Revocation that bites: the open sessions of a revoked or changed key are logged out, and a
session older than the configured maximum age is logged out too.

Two paths, so a revocation takes effect within a bounded time whatever happens to one:

- **NOTIFY.** A trigger on the key table (``key_store``) sends ``pg_notify`` on
  ``KEY_CHANGED_CHANNEL`` with the key id whenever a key row is updated or deleted. The
  watch LISTENs on a connection of its own (``application_name = matchcore-key-watch``);
  a notification rechecks that key's open sessions at once (one query). If the connection
  drops it is made again (backoff from 0.1 s to 5 s), and every (re)connection is followed
  by a full recheck, which covers the notifications missed meanwhile.
- **Recheck.** Every ``key_recheck_interval_ms`` the keys of all open sessions are read
  again (one query), so a lost notification (a trigger disabled, a replica that does not
  fire it, the listener down) costs at most that long.

A session is logged out ``SESSION_KEY_REVOKED`` when its key is revoked, gone, or no longer
what it logged in with (another account, public key or admin right), and
``SESSION_AGE_EXCEEDED`` ``session_age_ms_max`` after its login; the age is checked every
``tick_ms``. The watch holds at most one entry per logged-in session.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Callable, Iterable

import asyncpg

from matchcore.gateway.keys import KeyRecord
from matchcore.protocol import SessionReason

__all__ = ["KeyWatch", "KEY_WATCH_APPLICATION"]

_log = logging.getLogger("matchcore.gateway.key_watch")

KEY_WATCH_APPLICATION = "matchcore-key-watch"
NS_PER_MS = 1_000_000
RECONNECT_DELAY_S_MIN = 0.1
RECONNECT_DELAY_S_MAX = 5.0


@dataclasses.dataclass(slots=True)
class _Watched:
    session: object  # a gateway.sessions.Session (logout(reason, now_ns), session_id)
    record: KeyRecord
    login_ns: int


class KeyWatch:
    """See the module docstring. ``await start()``, ``track``/``forget`` from the session
    observer, ``await stop()``."""

    __slots__ = ("dsn", "channel", "lookup_many", "recheck_interval_ns", "session_age_ns_max", "tick_ms",
                 "_clock", "_watched", "_by_key", "_listener", "_tasks", "_recheck_now", "_next_recheck_ns")

    def __init__(self, dsn: str, channel: str, lookup_many: Callable, *, recheck_interval_ms: int,
                 session_age_ms_max: int, clock: Callable[[], int] = time.time_ns) -> None:
        self.dsn, self.channel, self.lookup_many = dsn, channel, lookup_many
        self.recheck_interval_ns = recheck_interval_ms * NS_PER_MS
        self.session_age_ns_max = session_age_ms_max * NS_PER_MS
        self.tick_ms = min(recheck_interval_ms, 1_000)
        self._clock = clock
        self._watched: dict[int, _Watched] = {}
        self._by_key: dict[int, set[int]] = {}
        self._listener: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task] = []
        self._recheck_now = asyncio.Event()
        self._next_recheck_ns = 0

    # ------------------------------------------------------------------ sessions

    def track(self, session, record: KeyRecord, now_ns: int) -> None:
        """A session logged in with ``record``."""
        self._watched[session.session_id] = _Watched(session, record, now_ns)
        self._by_key.setdefault(record.key_id, set()).add(session.session_id)

    def forget(self, session) -> None:
        """A session ended."""
        watched = self._watched.pop(session.session_id, None)
        if watched is None:
            return
        sessions = self._by_key.get(watched.record.key_id)
        if sessions is not None:
            sessions.discard(session.session_id)
            if not sessions:
                del self._by_key[watched.record.key_id]

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        await self._connect()  # the first connection must work: a start that cannot listen fails
        self._tasks = [asyncio.create_task(self._keep_listening(), name="matchcore-key-listen"),
                       asyncio.create_task(self._run_clock(), name="matchcore-key-clock")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()

    async def _connect(self) -> None:
        self._listener = await asyncpg.connect(self.dsn, server_settings={"application_name": KEY_WATCH_APPLICATION})
        await self._listener.add_listener(self.channel, self._notified)
        self._recheck_now.set()  # whatever was notified while nobody listened

    async def _keep_listening(self) -> None:
        """Make the listening connection again whenever it is lost."""
        delay_s = RECONNECT_DELAY_S_MIN
        while True:
            await asyncio.sleep(self.tick_ms / 1000)
            if self._listener is not None and not self._listener.is_closed():
                continue
            try:
                await self._connect()
                _log.info("listening for key changes again")
                delay_s = RECONNECT_DELAY_S_MIN
            except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as error:
                _log.warning("key change listener down", extra={"error": str(error), "retry_s": delay_s})
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_DELAY_S_MAX)

    def _notified(self, connection, pid: int, channel: str, payload: str) -> None:
        try:
            key_id = int(payload)
        except ValueError:
            key_id = 0
        if key_id in self._by_key:
            asyncio.get_running_loop().create_task(self._recheck([key_id]))

    async def _run_clock(self) -> None:
        """Session ages every tick; every key at each recheck interval (or when asked)."""
        while True:
            try:
                await asyncio.wait_for(self._recheck_now.wait(), self.tick_ms / 1000)
            except asyncio.TimeoutError:
                pass
            now_ns = self._clock()
            self._expire(now_ns)
            if self._recheck_now.is_set() or now_ns >= self._next_recheck_ns:
                self._recheck_now.clear()
                self._next_recheck_ns = now_ns + self.recheck_interval_ns
                await self._recheck(list(self._by_key))

    # ------------------------------------------------------------------ checks

    def _expire(self, now_ns: int) -> None:
        for watched in [w for w in self._watched.values() if now_ns - w.login_ns >= self.session_age_ns_max]:
            self._end(watched, SessionReason.SESSION_AGE_EXCEEDED, now_ns)

    async def _recheck(self, key_ids: Iterable[int]) -> None:
        key_ids = list(key_ids)
        if not key_ids:
            return
        try:
            current = await self.lookup_many(key_ids)
        except Exception:  # the next recheck tries again
            _log.exception("key recheck failed", extra={"keys": len(key_ids)})
            return
        now_ns = self._clock()
        for key_id in key_ids:
            record = current.get(key_id)
            for session_id in list(self._by_key.get(key_id, ())):
                watched = self._watched[session_id]
                if not _still_valid(watched.record, record):
                    self._end(watched, SessionReason.SESSION_KEY_REVOKED, now_ns)

    def _end(self, watched: _Watched, reason: SessionReason, now_ns: int) -> None:
        _log.warning("session ended by the key watch", extra={
            "session_id": watched.session.session_id, "key_id": watched.record.key_id,
            "account_id": watched.record.account_id, "reason": reason.name})
        self.forget(watched.session)
        watched.session.logout(reason, now_ns)


def _still_valid(logged_in: KeyRecord, current: KeyRecord | None) -> bool:
    return (current is not None and not current.revoked and current.account_id == logged_in.account_id
            and current.public_key == logged_in.public_key and current.admin == logged_in.admin)
