"""Gateway session layer: the per-connection state machine, limits and the asyncio adapter.

Pieces of the server that do not depend on the pipeline (the asyncpg layering: a pure
state machine that knows nothing of asyncio, then a thin adapter):

- ``GatewayLimits``: every limit of a connection, typed, each with its unit, validated.
- ``TokenBucket``: the per-session message rate, in integer arithmetic (no floats).
- ``SessionSlots``: the logged-in sessions: at most so many in all, per key and per account,
  with slots kept for admin keys (``SessionSlotClaim`` is one session's slot,
  ``AdminKeyMemo`` tells it whether the key just authenticated is an admin's).
- ``Session``: one connection from CHALLENGE to close. It is fed bytes and clock readings
  (``on_data``, ``on_tick``) and answers through a ``Transport`` (``write``, ``close``);
  decoded commands go to a ``CommandSink`` (``admission.Admission``). Login
  authentication is async (the key registry), so a LOGIN is handed out by
  ``take_login()`` and the answer comes back through ``complete_login()``.
- ``SessionProtocol`` / ``SessionTable``: the asyncio adapter and the clock that ticks
  every session (login timeout, heartbeats, idle timeout). ``PendingLogins`` caps the
  connections before login (all, and per source address): one more is closed before its
  CHALLENGE. ``TlsHandshakes`` counts the TLS handshakes under way.

The pieces behind it are in their own modules: ``admission`` (the ``CommandSink`` in front
of the core's input ring, with backpressure), ``durable_core`` (the core thread and the
journal writer), ``dispatch`` (durable events to sessions, numbering and replay, with
``streams``), ``order_view``, ``keys`` and ``key_store`` (the login check; keys in
PostgreSQL), ``metrics``, ``logs``, ``config``, and ``app`` (``matchcore serve``: all of it
wired together).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import socket
import struct
import time
from typing import Awaitable, Callable, Protocol

import msgspec
import numpy as np

from matchcore.core.commands import mass_cancels
from matchcore.core.records import COMMAND_DTYPE
from matchcore.protocol import _codec
from matchcore.gateway import keys
from matchcore.gateway.login_throttle import LoginThrottle
from matchcore import protocol as p
from matchcore.protocol import DecodeStatus, SessionReason
from matchcore.persistence.journal import DATABASE_ERRORS

__all__ = ["GatewayLimits", "TokenBucket", "SessionSlots", "SessionSlotClaim", "AdminKeyMemo", "PendingLogins",
           "TlsHandshakes", "SessionState", "Transport", "CommandSink",
           "Session", "SessionProtocol", "SessionTable"]

_log = logging.getLogger("matchcore.gateway.sessions")

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000
#: Heartbeat intervals without anything received after which a peer is gone.
IDLE_HEARTBEATS = 3


class GatewayLimits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-connection and per-server limits. Units are in the names."""

    max_sessions: int = 1_000
    login_timeout_ms: int = 5_000
    frame_size_bytes_max: int = p.MAX_FRAME_SIZE
    rate_messages_per_s: int = 100_000
    burst_messages: int = 10_000
    heartbeat_interval_ms_min: int = 100
    heartbeat_interval_ms_max: int = 60_000
    #: Unprocessed bytes a connection may hold: before the login completes a connection that
    #: sends more is closed; after it, reading stops until the backlog is handled (backpressure).
    receive_buffer_bytes_max: int = 1 << 20
    #: Commands decoded per codec call (the preallocated record batch of a session).
    decode_batch_records: int = 1_024
    #: Heartbeat intervals with nothing received after which a session is closed IDLE_TIMEOUT.
    idle_timeout_heartbeats: int = IDLE_HEARTBEATS
    #: Bytes queued for a client that does not read; beyond it: LOGOUT SLOW_CONSUMER, close.
    output_buffer_bytes_max: int = 64 << 20
    #: Events sent per step while a session catches up (replay), before yielding to the loop.
    replay_chunk_frames: int = 8_192
    #: Frames one session handles per turn of the event loop; the rest wait for its next turn,
    #: so every session gets the loop in turn however much one of them sends.
    frames_per_turn_max: int = 1_024
    #: Frames refused RATE_LIMITED in one second after which the session is closed
    #: (LOGOUT RATE_EXCEEDED): every frame costs a token, and a client that keeps sending
    #: past its rate only costs the venue the refusals up to this bound.
    rate_limited_frames_per_s_max: int = 1_000
    #: A catch-up replay (events the client asked for again) that makes no progress this long
    #: (the client reads nothing, the journal stays unreadable) ends the session.
    catch_up_stall_ms_max: int = 30_000
    #: After LOGOUT SLOW_CONSUMER the connection is given this long to flush, then aborted.
    slow_consumer_linger_ms: int = 2_000
    #: ORDER_STATUS queries of one session waiting for the order view; while that many wait,
    #: the session's later frames wait too (backpressure).
    order_status_in_flight_max: int = 16
    #: The credit window: commands of one session the server has read and not yet answered
    #: (their batch is not released yet), at most; announced in LOGIN_ACCEPTED. A session at
    #: its window is not read further until answers come back (TCP backpressure on it alone).
    commands_in_flight_max: int = 4_096
    #: Market data subscriptions one session may hold at once (an instrument, or every one).
    md_subscriptions_max: int = 64
    #: A market data subscriber whose socket has more than this queued (or half of
    #: output_buffer_bytes_max, if less) is conflated: its increments are dropped until half
    #: of it is read, then it gets a fresh snapshot.
    md_conflate_bytes: int = 4 << 20
    #: Conflated more often than this in a minute: LOGOUT SLOW_CONSUMER.
    md_conflations_per_minute_max: int = 10
    #: A market-data-only session on plain TCP that subscribes to every instrument gets its feed
    #: (and all its output) written by the replica's thread, not the event loop.
    md_direct: bool = True
    #: MD_SUBSCRIBEs (each makes a snapshot) one session may send a second; beyond: RATE_LIMITED.
    md_snapshots_per_s_max: int = 10
    #: The kernel's send buffer of each client socket (SO_SNDBUF), bytes; 0: the system's
    #: (autotuned up to net.ipv4.tcp_wmem's maximum, 4 MiB here). Bounds kernel memory per
    #: connection, and how much a slow reader takes before output_buffer_bytes_max and
    #: md_conflate_bytes see it.
    socket_send_buffer_bytes: int = 0
    #: Orders in one OPEN_ORDERS answer at most (a page; QUERY_DONE says where the next starts).
    open_orders_page_max: int = 500
    # credentials (gateway/key_watch.py, gateway/login_throttle.py)
    #: A session is logged out SESSION_AGE_EXCEEDED this long after its login.
    session_age_ms_max: int = 86_400_000
    #: The keys of open sessions are read again this often (a revocation whose NOTIFY was lost).
    key_recheck_interval_ms: int = 5_000
    #: Failed logins one source address may make at once, then one more per refill.
    login_failures_burst: int = 20
    login_failure_refill_ms: int = 3_000
    #: Source addresses the login throttle remembers (the least recently seen is forgotten).
    login_throttle_addresses_max: int = 65_536
    #: Logged-in sessions of one key, and of one account (all its keys), at once; beyond
    #: them a login gets LOGIN_REJECTED TOO_MANY_SESSIONS.
    max_sessions_per_key: int = 64
    max_sessions_per_account: int = 128
    #: Of ``max_sessions``, this many only sessions of admin keys may take: traders together
    #: hold at most ``max_sessions - admin_reserved_sessions``, so they cannot lock out operators.
    admin_reserved_sessions: int = 4
    #: Connections not logged in yet (from accept, or the end of the TLS handshake, until
    #: LOGIN_ACCEPTED or close), all together and from one source address. Beyond either, a
    #: new connection is closed at once, before its CHALLENGE (counted by reason).
    max_pending_logins: int = 256
    max_pending_logins_per_address: int = 32

    def validate(self) -> "GatewayLimits":
        """Raise ValueError on an impossible limit; returns self."""
        checks = [
            (self.max_sessions > 0, "max_sessions must be positive"),
            (self.login_timeout_ms > 0, "login_timeout_ms must be positive"),
            (p.HEADER_SIZE < self.frame_size_bytes_max <= p.MAX_FRAME_SIZE,
             f"frame_size_bytes_max must be in ({p.HEADER_SIZE}, {p.MAX_FRAME_SIZE}]"),
            (self.frame_size_bytes_max >= max(p.FRAME_SIZES.values()),
             "frame_size_bytes_max is below the largest message"),
            (self.rate_messages_per_s > 0, "rate_messages_per_s must be positive"),
            (self.burst_messages > 0, "burst_messages must be positive"),
            (0 < self.heartbeat_interval_ms_min <= self.heartbeat_interval_ms_max,
             "heartbeat interval bounds are inverted"),
            (self.receive_buffer_bytes_max >= self.frame_size_bytes_max,
             "receive_buffer_bytes_max is below one frame"),
            (self.decode_batch_records > 0, "decode_batch_records must be positive"),
            (self.idle_timeout_heartbeats >= 2, "idle_timeout_heartbeats must be at least 2"),
            (self.output_buffer_bytes_max >= 1 << 16, "output_buffer_bytes_max must be at least 64 KiB"),
            (self.replay_chunk_frames > 0, "replay_chunk_frames must be positive"),
            (0 < self.max_sessions_per_key <= self.max_sessions_per_account,
             "max_sessions_per_key must be positive and at most max_sessions_per_account"),
            (0 <= self.admin_reserved_sessions < self.max_sessions,
             "admin_reserved_sessions must be in [0, max_sessions)"),
            (0 < self.max_pending_logins_per_address <= self.max_pending_logins,
             "max_pending_logins_per_address must be positive and at most max_pending_logins"),
            (self.frames_per_turn_max > 0, "frames_per_turn_max must be positive"),
            (self.rate_limited_frames_per_s_max > 0, "rate_limited_frames_per_s_max must be positive"),
            (self.catch_up_stall_ms_max > 0, "catch_up_stall_ms_max must be positive"),
            (self.slow_consumer_linger_ms >= 0, "slow_consumer_linger_ms must be >= 0"),
            (self.order_status_in_flight_max > 0, "order_status_in_flight_max must be positive"),
            (self.md_subscriptions_max > 0, "md_subscriptions_max must be positive"),
            (1 <= self.commands_in_flight_max <= 1 << 24, "commands_in_flight_max must be in 1..16777216"),
            (self.md_conflate_bytes > 0, "md_conflate_bytes must be positive"),
            (self.socket_send_buffer_bytes == 0 or 4096 <= self.socket_send_buffer_bytes <= 1 << 30,
             "socket_send_buffer_bytes must be 0 or in 4096..2**30"),
            (self.md_conflations_per_minute_max > 0, "md_conflations_per_minute_max must be positive"),
            (self.md_snapshots_per_s_max > 0, "md_snapshots_per_s_max must be positive"),
            (0 < self.open_orders_page_max <= 10_000, "open_orders_page_max must be in 1..10000"),
        ] + self._credential_checks()
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self

    def _credential_checks(self) -> list[tuple[bool, str]]:
        return [
            (1_000 <= self.session_age_ms_max <= 30 * 86_400_000,
             "session_age_ms_max must be in [1000, 30 days]"),
            (100 <= self.key_recheck_interval_ms <= 600_000, "key_recheck_interval_ms must be in [100, 600000]"),
            (self.login_failures_burst > 0, "login_failures_burst must be positive"),
            (100 <= self.login_failure_refill_ms <= 3_600_000, "login_failure_refill_ms must be in [100, 3600000]"),
            (self.login_throttle_addresses_max > 0, "login_throttle_addresses_max must be positive"),
        ]


class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved. Tokens are counted in
    billionths so the refill is exact integer arithmetic on nanosecond clock readings."""

    __slots__ = ("rate_per_s", "burst", "_nano_tokens", "_last_ns")

    def __init__(self, rate_per_s: int, burst: int, now_ns: int) -> None:
        if rate_per_s <= 0 or burst <= 0:
            raise ValueError("rate_per_s and burst must be positive")
        self.rate_per_s, self.burst = rate_per_s, burst
        self._nano_tokens = burst * NS_PER_S
        self._last_ns = now_ns

    def available(self, now_ns: int) -> int:
        """Whole tokens available at ``now_ns`` (a clock that goes back refills nothing)."""
        if now_ns > self._last_ns:
            refill = (now_ns - self._last_ns) * self.rate_per_s
            self._nano_tokens = min(self.burst * NS_PER_S, self._nano_tokens + refill)
            self._last_ns = now_ns
        return self._nano_tokens // NS_PER_S

    def take(self, count: int, now_ns: int) -> bool:
        """Take ``count`` tokens if there are that many."""
        if self.available(now_ns) < count:
            return False
        self._nano_tokens -= count * NS_PER_S
        return True


class SessionSlots:
    """At most ``max_sessions`` logged-in sessions at a time; with ``acquire_for``, also at
    most ``max_sessions_per_key`` per key and ``max_sessions_per_account`` per account, and
    ``admin_reserved_sessions`` of the total kept for admin keys. ``acquire()`` (no key)
    counts against the total only."""

    __slots__ = ("max_sessions", "in_use", "max_sessions_per_key", "max_sessions_per_account",
                 "admin_reserved_sessions", "admin_in_use", "_by_key", "_by_account")

    def __init__(self, max_sessions: int, *, max_sessions_per_key: int | None = None,
                 max_sessions_per_account: int | None = None, admin_reserved_sessions: int = 0) -> None:
        assert max_sessions > 0
        assert 0 <= admin_reserved_sessions < max_sessions
        self.max_sessions, self.in_use = max_sessions, 0
        self.max_sessions_per_key = max_sessions_per_key or max_sessions
        self.max_sessions_per_account = max_sessions_per_account or max_sessions
        self.admin_reserved_sessions = admin_reserved_sessions
        self.admin_in_use = 0
        #: sessions per key id and per account; an entry goes when its count reaches 0, so
        #: each map holds at most ``in_use`` entries
        self._by_key: dict[int, int] = {}
        self._by_account: dict[int, int] = {}

    @classmethod
    def from_limits(cls, limits: GatewayLimits) -> "SessionSlots":
        return cls(limits.max_sessions, max_sessions_per_key=limits.max_sessions_per_key,
                   max_sessions_per_account=limits.max_sessions_per_account,
                   admin_reserved_sessions=limits.admin_reserved_sessions)

    def acquire(self) -> bool:
        if self.in_use >= self.max_sessions:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        assert self.in_use > 0
        self.in_use -= 1

    def acquire_for(self, key_id: int, account_id: int, admin: bool) -> bool:
        """A slot for a session of key ``key_id`` of ``account_id``, if every limit allows."""
        if self.in_use >= self.max_sessions:
            return False
        if not admin and self.in_use - self.admin_in_use >= self.max_sessions - self.admin_reserved_sessions:
            return False
        if self._by_key.get(key_id, 0) >= self.max_sessions_per_key:
            return False
        if self._by_account.get(account_id, 0) >= self.max_sessions_per_account:
            return False
        self.in_use += 1
        self.admin_in_use += 1 if admin else 0
        self._by_key[key_id] = self._by_key.get(key_id, 0) + 1
        self._by_account[account_id] = self._by_account.get(account_id, 0) + 1
        return True

    def release_for(self, key_id: int, account_id: int, admin: bool) -> None:
        """Give back a slot of ``acquire_for``."""
        assert self.in_use > 0
        assert self._by_key.get(key_id, 0) > 0
        assert self._by_account.get(account_id, 0) > 0
        self.in_use -= 1
        if admin:
            assert self.admin_in_use > 0
            self.admin_in_use -= 1
        _count_down(self._by_key, key_id)
        _count_down(self._by_account, account_id)

    def sessions_of_key(self, key_id: int) -> int:
        return self._by_key.get(key_id, 0)

    def sessions_of_account(self, account_id: int) -> int:
        return self._by_account.get(account_id, 0)


def _count_down(counts: dict, key) -> None:
    """One fewer for ``key``; the entry goes at 0 (so a map never outgrows what it counts)."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


class SessionSlotClaim:
    """The slot of one session, in the shape ``Session`` uses (``acquire()``, ``release()``):
    at login it asks ``SessionSlots.acquire_for`` with the LOGIN's key and account and the
    key's admin right (``admin_of(key_id)``, from the key just authenticated)."""

    __slots__ = ("slots", "session", "admin_of", "_held")

    def __init__(self, slots: SessionSlots, session: "Session", admin_of: Callable[[int], bool]) -> None:
        self.slots, self.session, self.admin_of = slots, session, admin_of
        self._held: tuple[int, int, bool] | None = None

    @property
    def in_use(self) -> int:
        return self.slots.in_use

    def acquire(self) -> bool:
        assert self._held is None
        login = self.session._login
        assert login is not None
        claim = (login.key_id, login.account_id, self.admin_of(login.key_id))
        if not self.slots.acquire_for(*claim):
            return False
        self._held = claim
        return True

    def release(self) -> None:
        assert self._held is not None
        self.slots.release_for(*self._held)
        self._held = None


class AdminKeyMemo(keys.KeyRegistry):
    """A key registry that remembers, for the session slots, whether each key it looked up
    holds the admin right (``admin_of``). The login check looks the key up just before the
    slot is taken; at most ``entries_max`` keys are remembered (the oldest go first), and a
    key not remembered counts as a trader's (never more rights than the key has)."""

    __slots__ = ("registry", "entries_max", "_admin")

    def __init__(self, registry: keys.KeyRegistry, entries_max: int) -> None:
        assert entries_max > 0
        self.registry, self.entries_max = registry, entries_max
        self._admin: dict[int, bool] = {}

    def admin_of(self, key_id: int) -> bool:
        return self._admin.get(key_id, False)

    async def lookup(self, key_id: int) -> keys.KeyRecord | None:
        record = await self.registry.lookup(key_id)
        if record is not None:
            self._admin.pop(key_id, None)
            self._admin[key_id] = record.admin and not record.revoked
            while len(self._admin) > self.entries_max:
                del self._admin[next(iter(self._admin))]
        return record

    async def add(self, account_id: int, public_key: bytes, *, admin: bool = False,
                  market_data_only: bool = False) -> keys.KeyRecord:
        return await self.registry.add(account_id, public_key, admin=admin, market_data_only=market_data_only)

    async def revoke(self, key_id: int) -> bool:
        return await self.registry.revoke(key_id)

    async def list(self, account_id: int | None = None) -> list[keys.KeyRecord]:
        return await self.registry.list(account_id)


class SessionState(enum.IntEnum):
    AWAIT_LOGIN = 1
    AUTHENTICATING = 2
    ACTIVE = 3
    CLOSED = 4


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...


class CommandSink(Protocol):
    def submit(self, session: "Session", commands: np.ndarray) -> int:
        """Take the session's decoded commands (COMMAND_DTYPE, in order); returns how many
        it took (a prefix). The rest are refused BUSY, unless the sink also has
        ``hold(session, rest)``: then it keeps them (a copy), the session stops reading, and
        the sink calls ``session.on_input_released(now_ns)`` once they are all taken."""
        ...


class SessionObserver(Protocol):
    """What the server wants to know of a session (metrics, logs, the dispatcher)."""

    def session_reject(self, session: "Session", reason: int, count: int = 1) -> None: ...
    def session_login(self, session: "Session", reason: SessionReason, record: keys.KeyRecord | None) -> None: ...
    def session_closed(self, session: "Session") -> None: ...


class Session:
    """One client connection, from CHALLENGE to close. See the module docstring."""

    __slots__ = ("session_id", "transport", "limits", "sink", "slots", "state", "account_id", "admin",
                 "cancel_on_disconnect", "heartbeat_interval_ns", "nonce", "next_event_seq",
                 "last_event_seq_sent", "close_reason", "_last_event_seq_of", "_order_status",
                 "_buffer", "_pending_login", "_login", "_decoder", "_bucket", "_batch", "_buffer_size",
                 "_connected_ns", "_last_received_ns", "_last_sent_ns", "_slot_held", "_on_active",
                 "observer", "catching_up", "_held", "_closed_notified", "peer", "_reading_paused",
                 "_turn", "_over_rate_second", "_over_rate_frames", "_status_in_flight", "_status_blocked",
                 "_replies", "market_data_only", "venue", "redirect", "commands_in_flight", "_window_full")

    def __init__(self, session_id: int, transport: Transport, limits: GatewayLimits, sink: CommandSink,
                 slots: SessionSlots, *, last_event_seq_of: Callable[[int], int] = lambda account: 0,
                 order_status: Callable[[int, int, Callable[[p.OrderStatus | None], object]], None] | None = None,
                 on_active: Callable[["Session"], None] | None = None, venue=None) -> None:
        self.session_id, self.transport, self.limits = session_id, transport, limits
        #: market data and queries (gateway.market_data.MarketData); None: not offered
        self.venue = venue
        self.market_data_only = False  # the key may not enter orders
        #: when set, every write of the session goes there instead of the transport (the
        #: replica's thread owns its output: direct_feed.py)
        self.redirect: Callable[[bytes], None] | None = None
        self.sink, self.slots = sink, slots
        self.state = SessionState.AWAIT_LOGIN
        self.account_id, self.admin, self.cancel_on_disconnect = 0, False, False
        self.heartbeat_interval_ns = 0
        self.nonce = b""
        self.next_event_seq = self.last_event_seq_sent = 0
        self.close_reason = SessionReason.NONE
        self._last_event_seq_of, self._order_status = last_event_seq_of, order_status
        self._buffer = bytearray()
        self._pending_login: p.Login | None = None
        self._login: p.Login | None = None
        self._decoder: _codec.CommandDecoder | None = None
        self._bucket: TokenBucket | None = None
        self._batch: np.ndarray | None = None  # the decode buffer, made at login
        #: the transport's send-buffer size, looked up once (a test transport may lack it)
        self._buffer_size: Callable[[], int] | None = getattr(transport, "get_write_buffer_size", None)
        self._connected_ns = self._last_received_ns = self._last_sent_ns = 0
        self._slot_held = False
        self._on_active = on_active  # the dispatcher's hook: replay from next_event_seq
        self.observer: SessionObserver | None = None
        #: the dispatcher is sending this session older events (replay); live ones wait
        self.catching_up = False
        self._held = False  # the sink holds commands of this session: do not decode more
        self._closed_notified = False
        self.peer = ""
        self._reading_paused = False  # the backlog is over receive_buffer_bytes_max
        self._turn: asyncio.Handle | None = None  # the next turn of a session with a backlog
        self._over_rate_second = 0  # the second (clock ns // 1e9) the count below is of
        self._over_rate_frames = 0
        self._status_in_flight = 0
        self._status_blocked = False  # the backlog waits for answers of the order view
        self._replies: bytearray | None = None  # the codec's SESSION_REJECTs, made at login
        #: commands the sink has of this session and not yet released (the sink counts them:
        #: admission.Admission); at limits.commands_in_flight_max nothing more is decoded
        self.commands_in_flight = 0
        self._window_full = False  # the credit window is used up: not read until credit returns

    # ------------------------------------------------------------------ events from the adapter

    def on_connect(self, now_ns: int) -> None:
        """Send the CHALLENGE."""
        self._connected_ns = self._last_received_ns = now_ns
        self.nonce = keys.new_nonce()
        self._write(p.Challenge(p.PROTOCOL_VERSION, self.limits.login_timeout_ms,
                                self.limits.frame_size_bytes_max, now_ns, self.nonce).encode(), now_ns)

    def on_data(self, data: bytes, now_ns: int) -> None:
        """Bytes from the client: decode what is complete, answer, pass commands on."""
        if self.state == SessionState.CLOSED:
            return
        self._last_received_ns = now_ns
        self._buffer += data
        if self.state == SessionState.ACTIVE:
            if self._turn is None:  # else its turn comes: frames keep their order
                self._process_active(now_ns)
            self._apply_backpressure()
            return
        if self.state == SessionState.AWAIT_LOGIN:
            self._process_login_frame(now_ns)  # a LOGIN with frames behind it in one read
        if len(self._buffer) > self.limits.receive_buffer_bytes_max:
            if self.state == SessionState.AUTHENTICATING:  # a pipelining client: wait for the check
                self._reading_paused = True
                pause = getattr(self.transport, "pause_reading", None)
                if pause is not None:
                    pause()
                return
            return self._close(SessionReason.UNEXPECTED_MESSAGE, now_ns)

    def take_login(self) -> p.Login | None:
        """The LOGIN to authenticate (once), or None."""
        login, self._pending_login = self._pending_login, None
        return login

    def complete_login(self, reason: SessionReason, record: keys.KeyRecord | None, now_ns: int) -> None:
        """The answer of ``keys.authenticate`` for the LOGIN handed out by ``take_login``."""
        if self.state != SessionState.AUTHENTICATING:
            return
        login = self._login
        if reason == SessionReason.NONE:
            reason = self._login_limits_check(login)
        if self.observer is not None:
            self.account_id = login.account_id
            self.observer.session_login(self, reason, record)
        if reason != SessionReason.NONE:  # the observer logged the exact reason; the client gets less
            self._write(p.LoginRejected(int(keys.public_reason(reason))).encode(), now_ns)
            return self._close(reason, now_ns, send_logout=False)
        self._slot_held = True
        self._activate(login, record, now_ns)

    def on_tick(self, now_ns: int) -> None:
        """Clock reading: login timeout, idle timeout, heartbeat."""
        if self.state in (SessionState.AWAIT_LOGIN, SessionState.AUTHENTICATING):
            if now_ns - self._connected_ns > self.limits.login_timeout_ms * NS_PER_MS:
                self._close(SessionReason.LOGIN_TIMEOUT, now_ns)
        elif self.state == SessionState.ACTIVE:
            if (self._held or self._reading_paused or self._turn is not None or self._status_blocked
                    or self._window_full):
                # The server is not reading this session (backpressure): its heartbeats wait
                # unread in the socket, so silence is not the client's.
                self._last_received_ns = now_ns
            elif now_ns - self._last_received_ns > self.limits.idle_timeout_heartbeats * self.heartbeat_interval_ns:
                self._close(SessionReason.IDLE_TIMEOUT, now_ns)
            elif now_ns - self._last_sent_ns >= self.heartbeat_interval_ns:
                self._write(p.Heartbeat(self.last_event_seq_sent, now_ns).encode(), now_ns)

    def on_connection_lost(self, now_ns: int) -> None:
        """The connection is gone: cancel-on-disconnect, free the slot."""
        was_active = self.state == SessionState.ACTIVE
        self.state = SessionState.CLOSED
        if was_active and self.cancel_on_disconnect:
            command = mass_cancels([self.account_id])
            submit_system = getattr(self.sink, "submit_system", None)
            if submit_system is not None:
                submit_system(command)  # never dropped, even when the input ring is full
            else:
                self.sink.submit(self, command)
        if self._slot_held:
            self._slot_held = False
            self.slots.release()
        if self.venue is not None:
            self.venue.forget(self)
        if not self._closed_notified:
            self._closed_notified = True
            if self.observer is not None:
                self.observer.session_closed(self)

    def send_events(self, events: np.ndarray, first_event_seq: int, now_ns: int) -> None:
        """Send ``events`` (EVENT_DTYPE) numbered from ``first_event_seq`` (the dispatcher
        owns the account's numbering and replay; it must not skip)."""
        if self.state != SessionState.ACTIVE:
            return
        assert first_event_seq == self.last_event_seq_sent + 1 or self.last_event_seq_sent == 0
        if len(events):
            frames = bytearray(len(events) * p.EVENT_FRAME_SIZE)
            _codec.encode_events(events, frames, 0, self.account_id, first_event_seq)
            self._write(bytes(frames), now_ns)
        self.last_event_seq_sent = first_event_seq + len(events) - 1 if len(events) else self.last_event_seq_sent

    def send_frames(self, frames: bytes, last_event_seq: int, now_ns: int) -> None:
        """Send event frames already encoded and numbered for this session's account, the
        last of them ``last_event_seq`` (the dispatcher guarantees they follow on)."""
        if self.state != SessionState.ACTIVE or not frames:
            return
        self._write(frames, now_ns)
        self.last_event_seq_sent = last_event_seq

    def on_credit(self, now_ns: int) -> None:
        """Commands of this session were answered (the sink lowered ``commands_in_flight``):
        a session at its credit window reads and decodes again."""
        if not self._window_full or self.commands_in_flight >= self.limits.commands_in_flight_max:
            return
        self._window_full = False
        if self.state != SessionState.ACTIVE:
            return
        if self._buffer and self._turn is None and not self._held:
            self._process_active(now_ns)
        self._apply_backpressure()

    def on_input_released(self, now_ns: int) -> None:
        """The sink took every command it held for this session: read and decode again."""
        self._held = False
        if self.state != SessionState.ACTIVE:
            return
        if self._buffer and self._turn is None:
            self._process_active(now_ns)
        self._apply_backpressure()

    # ------------------------------------------------------------------ login

    def _process_login_frame(self, now_ns: int) -> None:
        reason, size = _peek(self._buffer, self.limits.frame_size_bytes_max)
        if reason != SessionReason.NONE:
            return self._close(reason, now_ns)
        if size == 0:
            return  # not complete yet
        if self._buffer[2] != p.MessageType.LOGIN:
            return self._close(SessionReason.UNEXPECTED_MESSAGE, now_ns)
        try:
            login = p.Login.decode(self._buffer[:size])
        except p.ProtocolError as error:
            return self._close(error.reason, now_ns)
        del self._buffer[:size]
        self.state = SessionState.AUTHENTICATING
        self._pending_login = self._login = login

    def _login_limits_check(self, login: p.Login) -> SessionReason:
        limits = self.limits
        if not limits.heartbeat_interval_ms_min <= login.heartbeat_interval_ms <= limits.heartbeat_interval_ms_max:
            return SessionReason.INVALID_HEARTBEAT_INTERVAL
        if login.next_event_seq > self._last_event_seq_of(login.account_id) + 1:
            return SessionReason.INVALID_EVENT_SEQ
        if not self.slots.acquire():
            return SessionReason.TOO_MANY_SESSIONS
        return SessionReason.NONE

    def _activate(self, login: p.Login, record: keys.KeyRecord, now_ns: int) -> None:
        limits = self.limits
        self.state = SessionState.ACTIVE
        self.account_id, self.admin = login.account_id, record.admin
        self.market_data_only = bool(getattr(record, "market_data_only", False))
        self.cancel_on_disconnect = bool(login.login_flags & p.LoginFlags.CANCEL_ON_DISCONNECT)
        self.heartbeat_interval_ns = login.heartbeat_interval_ms * NS_PER_MS
        self._decoder = _codec.CommandDecoder(self.account_id, self.admin, limits.frame_size_bytes_max,
                                              order_entry=not self.market_data_only)
        self._bucket = TokenBucket(limits.rate_messages_per_s, limits.burst_messages, now_ns)
        self._batch = np.zeros(limits.decode_batch_records, COMMAND_DTYPE)
        self._replies = bytearray(_SESSION_REJECT.size * CODEC_REPLIES_MAX)
        last = self._last_event_seq_of(self.account_id)
        self.next_event_seq = login.next_event_seq or last + 1
        self.last_event_seq_sent = self.next_event_seq - 1
        flags = (p.SessionFlags.ADMIN if self.admin else 0) | (
            p.SessionFlags.CANCEL_ON_DISCONNECT if self.cancel_on_disconnect else 0)
        self._write(p.LoginAccepted(int(flags), p.PROTOCOL_VERSION, self.account_id, login.heartbeat_interval_ms,
                                    self.session_id, self.next_event_seq, last, limits.rate_messages_per_s,
                                    limits.burst_messages, limits.commands_in_flight_max).encode(), now_ns)
        self._last_received_ns = now_ns
        if self._on_active is not None:
            self._on_active(self)
        if self._buffer:
            self._process_active(now_ns)
        self._apply_backpressure()

    # ------------------------------------------------------------------ logged in

    def _process_active(self, now_ns: int) -> None:
        """Handle the backlog: at most ``frames_per_turn_max`` frames, then yield the loop to
        the other sessions (the rest is handled on a later turn). Every frame costs a token:
        commands, heartbeats, queries and refused frames alike. The codec runs in session
        mode: heartbeats and refusals are handled inside it, without a Python step a frame."""
        decoder, consumed, budget = self._decoder, 0, self.limits.frames_per_turn_max
        view = memoryview(self._buffer)
        try:
            while self.state == SessionState.ACTIVE and not self._held and budget > 0:
                if self._status_in_flight >= self.limits.order_status_in_flight_max:
                    self._status_blocked = True  # an answer coming back goes on (backpressure)
                    break
                # the credit window: commands beyond it are not decoded (frames before the
                # next command, heartbeats and queries, still are)
                credit = max(0, self.limits.commands_in_flight_max - self.commands_in_flight)
                tokens = self._bucket.available(now_ns)
                allowed = min(tokens, budget)
                status = decoder.decode(view[consumed:], self._batch, max_commands=min(budget, credit),
                                        max_frames=allowed, replies=self._replies)
                frame_offset = consumed + decoder.frame_offset
                consumed += decoder.consumed_bytes
                handled = decoder.frames_handled
                if handled:
                    budget -= handled
                    self._bucket.take(handled, now_ns)
                if decoder.replies_bytes:
                    self._answered_by_codec(decoder, now_ns)
                if decoder.commands_written:
                    self._submit(self._batch[:decoder.commands_written], now_ns)
                if status == DecodeStatus.OK:
                    break
                if status == DecodeStatus.FATAL:
                    self._close(SessionReason(decoder.reason), now_ns)
                    break
                if status == DecodeStatus.OUTPUT_FULL:
                    if handled == allowed and tokens < budget + handled and budget > 0:  # out of tokens
                        budget -= 1
                        size = view[consumed] | view[consumed + 1] << 8  # a whole, valid frame
                        self._over_rate(bytes(view[consumed:consumed + size]), now_ns)
                        consumed += size
                    elif decoder.commands_written >= credit and budget > 0:  # at the window
                        self._window_full = True  # answers coming back go on (on_credit)
                        break
                    continue
                budget -= 1
                frame = bytes(view[frame_offset:consumed])
                if not self._bucket.take(1, now_ns):
                    self._over_rate(frame, now_ns)
                elif status == DecodeStatus.REFUSED:  # the replies buffer was full
                    self._refuse(frame, SessionReason(decoder.reason), now_ns)
                else:
                    self._control(frame, now_ns)
        finally:
            view.release()
        del self._buffer[:consumed]
        if budget <= 0 and self._buffer and self.state == SessionState.ACTIVE and not self._held:
            try:
                self._turn = asyncio.get_running_loop().call_soon(self._next_turn)
            except RuntimeError:  # no loop (a test driving the session by hand): go on now
                self._next_turn()

    def _answered_by_codec(self, decoder: _codec.CommandDecoder, now_ns: int) -> None:
        """Send the SESSION_REJECTs the codec wrote, and count them."""
        if self.observer is not None:
            for reason, count in ((SessionReason.NOT_AUTHORIZED, decoder.refused_not_authorized),
                                  (SessionReason.WRONG_ACCOUNT, decoder.refused_wrong_account)):
                if count:
                    self.observer.session_reject(self, int(reason), count)
        self._write(bytes(self._replies[:decoder.replies_bytes]), now_ns)

    def _next_turn(self) -> None:
        self._turn = None
        if self.state == SessionState.ACTIVE and self._buffer and not self._held:
            self._process_active(time.time_ns())
        self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        """Stop reading while the backlog exceeds ``receive_buffer_bytes_max`` (or the sink
        holds this session's commands, or its credit window is used up); read again once it
        is handled."""
        over = len(self._buffer) > self.limits.receive_buffer_bytes_max or self._held or self._window_full
        if over != self._reading_paused and self.state == SessionState.ACTIVE:
            method = "pause_reading" if over else "resume_reading"
            self._reading_paused = over
            switch = getattr(self.transport, method, None)
            if switch is not None:
                try:
                    switch()
                except RuntimeError:  # already closing
                    pass

    def _over_rate(self, frame: bytes, now_ns: int) -> None:
        """A frame beyond the session's rate: SESSION_REJECT RATE_LIMITED, and a session that
        keeps over-running is closed (LOGOUT RATE_EXCEEDED)."""
        second = now_ns // NS_PER_S
        if second != self._over_rate_second:
            self._over_rate_second, self._over_rate_frames = second, 0
        self._over_rate_frames += 1
        if self._over_rate_frames > self.limits.rate_limited_frames_per_s_max:
            self._close(SessionReason.RATE_EXCEEDED, now_ns)
        else:
            self._refuse(frame, SessionReason.RATE_LIMITED, now_ns)

    def _submit(self, commands: np.ndarray, now_ns: int) -> None:
        taken = self.sink.submit(self, commands)
        if taken == len(commands):
            return
        hold = getattr(self.sink, "hold", None)
        if hold is not None:
            # Backpressure: the sink keeps the rest; stop reading until it has taken them.
            self._held = True
            hold(self, commands[taken:])
            self._apply_backpressure()
            return
        for index in range(taken, len(commands)):
            record = commands[index]
            self._write(_session_reject_frame(int(record["kind"]), SessionReason.BUSY, int(record["client_id"])),
                        now_ns)

    def _refuse(self, frame: bytes, reason: SessionReason, now_ns: int) -> None:
        """SESSION_REJECT for the (whole, valid) client frame at the start of ``frame``, read
        straight from its bytes: no message object is made for a refusal."""
        type_ = frame[2]
        if self.observer is not None:
            self.observer.session_reject(self, int(reason))
        self._write(_session_reject_frame(type_, int(reason), _frame_client_id(frame, type_)), now_ns)

    def _control(self, frame: bytes, now_ns: int) -> None:
        type_ = frame[2]
        if type_ == p.MessageType.HEARTBEAT:
            return  # its token is taken; receiving it has reset the idle clock
        if type_ == p.MessageType.LOGOUT:
            return self._close(SessionReason.CLIENT_LOGOUT, now_ns, send_logout=False)
        if type_ == p.MessageType.ORDER_STATUS_QUERY:
            return self._order_status_query(p.OrderStatusQuery.decode(frame), now_ns)
        if type_ in _VENUE_TYPES:
            return self._venue_request(p.decode(frame), type_, now_ns)
        self._close(SessionReason.UNEXPECTED_MESSAGE, now_ns)  # a second LOGIN

    def _venue_request(self, message: p.Message, type_: int, now_ns: int) -> None:
        """Market data (un)subscriptions and queries: handed to the venue; a query's answer
        comes back from the replica (its in-flight count holds the backlog like ORDER_STATUS)."""
        venue = self.venue
        request_id = getattr(message, "request_id", 0)
        if venue is None:
            return self.refuse_request(type_, SessionReason.BUSY, request_id)
        if type_ == p.MessageType.MD_SUBSCRIBE:
            return venue.subscribe(self, message)
        if type_ == p.MessageType.MD_UNSUBSCRIBE:
            return venue.unsubscribe(self, message)
        if type_ == p.MessageType.TRANSFER_QUERY and message.account_id != self.account_id and not self.admin:
            return self.refuse_request(type_, SessionReason.WRONG_ACCOUNT, request_id)
        venue.query(self, message, self._answer_for(type_, request_id))

    def _answer_for(self, type_: int, request_id: int) -> Callable[[bytes | None], None]:
        self._status_in_flight += 1

        def reply(frames: bytes | None) -> None:
            self._status_in_flight -= 1
            self._unblock_status()
            if self.state != SessionState.ACTIVE:
                return
            if frames is None:
                self.refuse_request(type_, SessionReason.BUSY, request_id)
            else:
                self._write(frames, time.time_ns())

        return reply

    def _unblock_status(self) -> None:
        if self._status_blocked and self.state == SessionState.ACTIVE:
            self._status_blocked = False
            if self._turn is None:
                self._turn = asyncio.get_running_loop().call_soon(self._next_turn)

    # ------------------------------------------------------------------ for the venue

    @property
    def active(self) -> bool:
        return self.state == SessionState.ACTIVE

    def refuse_request(self, type_: int, reason: SessionReason, request_id: int) -> None:
        if self.state == SessionState.ACTIVE:
            if self.observer is not None:
                self.observer.session_reject(self, int(reason))
            self._write(_session_reject_frame(int(type_), int(reason), request_id), time.time_ns())

    def send_market_data(self, frames: bytes) -> None:
        """Market data: the venue checked the send queue (conflation comes before the output
        bound), so this is one write; the heartbeat clock is not touched (market data does not
        count as the session's output for heartbeats)."""
        if self.state == SessionState.ACTIVE:
            self.transport.write(frames)

    def queued_bytes(self) -> int:
        """Bytes written to the socket that the client has not taken yet."""
        return self._buffer_size() if self._buffer_size is not None else 0

    def _order_status_query(self, query: p.OrderStatusQuery, now_ns: int) -> None:
        """Answered by the order view off the loop (``reply`` comes back on the loop); while
        ``order_status_in_flight_max`` of the session's wait, its backlog waits too."""
        if self._order_status is None:
            return self._answer_status(query.client_order_id, None)
        self._status_in_flight += 1
        client_order_id = query.client_order_id

        def reply(status: p.OrderStatus | None) -> None:
            self._status_in_flight -= 1
            self._unblock_status()
            if status is None:  # the order view cannot answer now (failed, or too many waiting)
                if self.state == SessionState.ACTIVE:
                    self._write(_session_reject_frame(p.MessageType.ORDER_STATUS_QUERY, SessionReason.BUSY,
                                                      client_order_id), time.time_ns())
                return
            self._answer_status(client_order_id, status)

        self._order_status(self.account_id, client_order_id, reply)

    def _answer_status(self, client_order_id: int, status: p.OrderStatus | None) -> None:
        """Write the answer; None (a venue without an order view) means not open."""
        if self.state != SessionState.ACTIVE:
            return
        if status is None:
            status = p.OrderStatus(p.OrderState.NOT_OPEN, 0, 0, client_order_id, 0, 0, 0, self.last_event_seq_sent)
        self._write(status.encode(), time.time_ns())

    # ------------------------------------------------------------------ output

    def _write(self, data: bytes, now_ns: int) -> None:
        self._last_sent_ns = now_ns
        if self.redirect is not None:  # its bound is the owner's (direct_feed.py)
            self.redirect(data)
            return
        self.transport.write(data)
        size = self._buffer_size
        if size is not None and self.state == SessionState.ACTIVE and size() > self.limits.output_buffer_bytes_max:
            self._close(SessionReason.SLOW_CONSUMER, now_ns)

    def logout(self, reason: SessionReason, now_ns: int) -> None:
        """End the session from the server's side: LOGOUT with ``reason``, then close."""
        self._close(reason, now_ns)

    def drop(self, now_ns: int) -> None:
        """End the session without a LOGOUT (the server cannot serve it: an internal error)."""
        self._close(SessionReason.NONE, now_ns, send_logout=False)

    def _close(self, reason: SessionReason, now_ns: int, send_logout: bool = True) -> None:
        if self.state == SessionState.CLOSED:
            return
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self.close_reason = reason
        if send_logout:  # straight to the transport: the output bound is not checked again
            self._last_sent_ns = now_ns
            logout = p.Logout(int(reason)).encode()
            if self.redirect is not None:
                self.redirect(logout)
            else:
                self.transport.write(logout)
        self.on_connection_lost(now_ns)
        self.transport.close()  # sends what is queued, then closes
        if reason == SessionReason.SLOW_CONSUMER:
            # The LOGOUT is queued behind what the client has not read: give it the linger
            # to read on, then let go of the memory (abort drops the queue).
            abort = getattr(self.transport, "abort", None)
            if abort is not None:
                try:
                    asyncio.get_running_loop().call_later(self.limits.slow_consumer_linger_ms / 1000, abort)
                except RuntimeError:  # no loop (a test's transport): at once
                    abort()


#: per client message type: (offset, width) of the id a SESSION_REJECT echoes (client order
#: id, transfer id or request id), read from the protocol's layouts once
_CLIENT_ID_FIELD: dict[int, tuple[int, int]] = {}
for _type, _layout in p.LAYOUTS.items():
    for _name in ("client_order_id", "transfer_id", "request_id"):
        if _name in _layout.names:
            _field_dtype, _field_offset = _layout.fields[_name][:2]
            _CLIENT_ID_FIELD[_type] = (_field_offset, _field_dtype.itemsize)
            break
#: session frames the venue (market data, queries) handles
_VENUE_TYPES = frozenset(int(t) for t in (p.MessageType.MD_SUBSCRIBE, p.MessageType.MD_UNSUBSCRIBE)) | p.QUERY_TYPES
#: SESSION_REJECTs the codec writes in one call (then it stops REFUSED and Python answers)
CODEC_REPLIES_MAX = 256
#: SESSION_REJECT: frame_size, type, reserved, refused_type, reserved, reason, client_id
_SESSION_REJECT = struct.Struct("<HBBBBHQ")
assert _SESSION_REJECT.size == p.FRAME_SIZES[p.MessageType.SESSION_REJECT]


def _frame_client_id(frame: bytes, type_: int) -> int:
    field = _CLIENT_ID_FIELD.get(type_)
    if field is None:
        return 0
    offset, width = field
    return int.from_bytes(frame[offset:offset + width], "little")


def _session_reject_frame(refused_type: int, reason: int, client_id: int) -> bytes:
    return _SESSION_REJECT.pack(_SESSION_REJECT.size, p.MessageType.SESSION_REJECT, 0, refused_type, 0,
                                reason, client_id)


def _peek(buffer: bytearray, frame_size_bytes_max: int) -> tuple[SessionReason, int]:
    """Header checks of the frame at the start of ``buffer``: (reason, size of the complete
    frame or 0 while incomplete)."""
    if len(buffer) < 2:
        return SessionReason.NONE, 0
    size = buffer[0] | buffer[1] << 8
    if size > frame_size_bytes_max:
        return SessionReason.FRAME_TOO_LARGE, 0
    if size < p.HEADER_SIZE:
        return SessionReason.MALFORMED_FRAME, 0
    if len(buffer) >= 3:
        type_ = buffer[2]
        if type_ not in p.MESSAGE_CLASSES:
            return SessionReason.UNKNOWN_MESSAGE_TYPE, 0
        if size != p.FRAME_SIZES[type_]:
            return SessionReason.MALFORMED_FRAME, 0
    return SessionReason.NONE, size if len(buffer) >= size else 0


# ---------------------------------------------------------------------------- asyncio adapter


class SessionTable:
    """The server's sessions, the slots, the connections still before login, and the clock
    that ticks them (``run_clock``)."""

    __slots__ = ("limits", "sink", "registry", "slots", "sessions", "last_event_seq_of", "order_status",
                 "on_active", "observer", "_next_session_id", "before_accept", "login_throttle", "pending",
                 "handshakes", "venue")

    def __init__(self, limits: GatewayLimits, sink: CommandSink, registry: keys.KeyRegistry, *,
                 last_event_seq_of: Callable[[int], int] = lambda account: 0,
                 order_status: Callable[[int, int, Callable[[p.OrderStatus | None], object]], None] | None = None,
                 on_active: Callable[[Session], None] | None = None,
                 observer: SessionObserver | None = None,
                 before_accept: Callable[[Session, p.Login], Awaitable[None]] | None = None) -> None:
        self.limits = limits.validate()
        #: awaited after a login is authenticated and before it is accepted (a failure to do
        #: it, the database being away, refuses the login UNAVAILABLE)
        self.before_accept = before_accept
        self.sink = sink
        # Twice the pending logins: every key looked up for a login still pending fits.
        self.registry = AdminKeyMemo(registry, 2 * limits.max_pending_logins)
        self.slots = SessionSlots.from_limits(limits)
        self.sessions: dict[int, Session] = {}
        self.last_event_seq_of, self.order_status = last_event_seq_of, order_status
        self.venue = None  # market data and queries (the server sets it once its replica runs)
        self.on_active = on_active
        self.observer = observer
        self._next_session_id = 1
        self.login_throttle = LoginThrottle(limits.login_failures_burst, limits.login_failure_refill_ms,
                                            limits.login_throttle_addresses_max)
        self.pending = PendingLogins(limits.max_pending_logins, limits.max_pending_logins_per_address)
        #: TLS connections accepted whose handshake is under way (None: plain TCP)
        self.handshakes: TlsHandshakes | None = None

    def expect_tls(self, handshake_timeout_ms: int) -> None:
        """The listener does TLS with this handshake timeout: count the handshakes."""
        self.handshakes = TlsHandshakes(handshake_timeout_ms * NS_PER_MS)

    def protocol_factory(self) -> "SessionProtocol":
        protocol = SessionProtocol(self)
        if self.handshakes is not None:  # called at accept, before the TLS handshake
            self.handshakes.started(protocol, time.monotonic_ns())
        return protocol

    def new_session(self, transport: Transport) -> Session:
        session = Session(self._next_session_id, transport, self.limits, self.sink, self.slots,
                          last_event_seq_of=self.last_event_seq_of, order_status=self.order_status,
                          on_active=self._session_active, venue=self.venue)
        session.slots = SessionSlotClaim(self.slots, session, self.registry.admin_of)
        session.observer = self.observer
        self._next_session_id += 1
        self.sessions[session.session_id] = session
        return session

    def _session_active(self, session: Session) -> None:
        self.pending.settled(session.session_id)
        if self.on_active is not None:
            self.on_active(session)

    async def run_clock(self, tick_ms: int = 50) -> None:
        """Tick every session every ``tick_ms`` until cancelled."""
        while True:
            await asyncio.sleep(tick_ms / 1000)
            now_ns = time.time_ns()
            for session in list(self.sessions.values()):
                session.on_tick(now_ns)
            if self.handshakes is not None:
                self.handshakes.expire(time.monotonic_ns())


class PendingLogins:
    """Connections before login, all together and per source address, with the count of
    connections refused for each limit. Each address entry holds at least one connection,
    so the map has at most ``max_pending_logins`` entries."""

    __slots__ = ("max_pending_logins", "max_pending_logins_per_address", "count", "by_address",
                 "refused_total", "refused_per_address", "_address_of")

    def __init__(self, max_pending_logins: int, max_pending_logins_per_address: int) -> None:
        assert 0 < max_pending_logins_per_address <= max_pending_logins
        self.max_pending_logins = max_pending_logins
        self.max_pending_logins_per_address = max_pending_logins_per_address
        self.count = 0
        self.by_address: dict[str, int] = {}
        #: connections closed at once: all pending logins in use / the address's in use
        self.refused_total = self.refused_per_address = 0
        self._address_of: dict[int, str] = {}  # session id -> its source address

    def admit(self, address: str) -> bool:
        """Room for one more connection from ``address``? (counts a refusal)."""
        if self.count >= self.max_pending_logins:
            self.refused_total += 1
            return False
        if self.by_address.get(address, 0) >= self.max_pending_logins_per_address:
            self.refused_per_address += 1
            return False
        return True

    def add(self, session_id: int, address: str) -> None:
        assert session_id not in self._address_of
        self._address_of[session_id] = address
        self.by_address[address] = self.by_address.get(address, 0) + 1
        self.count += 1
        assert self.count <= self.max_pending_logins

    def settled(self, session_id: int) -> None:
        """The session logged in or closed (again is harmless)."""
        address = self._address_of.pop(session_id, None)
        if address is None:
            return
        self.count -= 1
        assert self.count >= 0
        _count_down(self.by_address, address)


class TlsHandshakes:
    """TLS connections accepted whose handshake is under way. The event loop hands the
    connection to the protocol only after the handshake (``connection_made``) and tells it
    nothing when a handshake fails or times out, so an entry that outlives the handshake
    timeout is known to be gone and is swept (``expire``) and counted."""

    __slots__ = ("timeout_ns", "_started", "expired_total", "completed_total")

    def __init__(self, timeout_ns: int) -> None:
        assert timeout_ns > 0
        self.timeout_ns = timeout_ns
        self._started: dict[int, tuple[object, int]] = {}  # id -> (protocol, accepted at), oldest first
        self.expired_total = self.completed_total = 0

    def __len__(self) -> int:
        return len(self._started)

    def started(self, protocol: object, now_ns: int) -> None:
        self._started[id(protocol)] = (protocol, now_ns)

    def finished(self, protocol: object) -> None:
        if self._started.pop(id(protocol), None) is not None:
            self.completed_total += 1

    def expire(self, now_ns: int) -> None:
        """Forget handshakes older than the timeout (the loop has closed them)."""
        started = self._started
        while started:
            key = next(iter(started))
            if now_ns - started[key][1] <= self.timeout_ns:
                break
            del started[key]
            self.expired_total += 1


class SessionProtocol(asyncio.Protocol):
    """asyncio glue: bytes in, bytes out, and the async login check."""

    def __init__(self, table: SessionTable) -> None:
        self.table = table
        self.session: Session | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        table = self.table
        if table.handshakes is not None:
            table.handshakes.finished(self)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and len(peer) >= 2 else ""
        if not table.pending.admit(address):
            transport.abort()  # before any CHALLENGE work; connection_lost follows, no data
            return
        send_buffer = table.limits.socket_send_buffer_bytes
        sock = transport.get_extra_info("socket") if send_buffer else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
            except OSError:
                pass
        self.session = table.new_session(transport)  # type: ignore[arg-type]
        table.pending.add(self.session.session_id, address)
        self.session.peer = f"{peer[0]}:{peer[1]}" if address else ""
        self.session.on_connect(time.time_ns())

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.on_data(data, time.time_ns())
        login = session.take_login()
        if login is not None:
            asyncio.get_running_loop().create_task(self._authenticate(session, login))

    async def _authenticate(self, session: Session, login: p.Login) -> None:
        throttle, address = self.table.login_throttle, session.peer.rpartition(":")[0]
        if not throttle.allowed(address, time.time_ns()):
            return session.complete_login(SessionReason.LOGIN_THROTTLED, None, time.time_ns())
        limits = self.table.limits
        timeout_s = limits.login_timeout_ms / 1000
        try:
            reason, record = await asyncio.wait_for(keys.authenticate(
                self.table.registry, login, session.nonce,
                heartbeat_interval_ms_range=(limits.heartbeat_interval_ms_min, limits.heartbeat_interval_ms_max)),
                timeout_s)
            if reason == SessionReason.NONE and self.table.before_accept is not None:
                await asyncio.wait_for(self.table.before_accept(session, login), timeout_s)
        except DATABASE_ERRORS as error:
            # The key registry is unreachable: a typed answer (retry later), one log line.
            _log.warning("login not checked: key registry unavailable",
                         extra={"session_id": session.session_id, "error": repr(error)})
            reason, record = SessionReason.UNAVAILABLE, None
        if reason in keys.CREDENTIAL_REASONS:
            throttle.failed(address, time.time_ns())
            if not throttle.allowed(address, time.time_ns()):
                _log.warning("login throttled", extra={"peer_address": address, "addresses": len(throttle)})
        session.complete_login(reason, record, time.time_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        session = self.session
        if session is None:  # refused in connection_made
            return
        session.on_connection_lost(time.time_ns())
        self.table.sessions.pop(session.session_id, None)
        self.table.pending.settled(session.session_id)
