"""The session state machine: login, limits, heartbeats, timeouts, refusals and rate limit, on a fake transport and clock."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("cryptography", reason="cryptography is a gateway dependency")

from matchcore.core.records import COMMAND_DTYPE  # noqa: E402
from matchcore.client import keys as client_keys  # noqa: E402
from matchcore.gateway import keys as server_keys  # noqa: E402
from matchcore import protocol as p  # noqa: E402
from matchcore.gateway import sessions  # noqa: E402
from matchcore.protocol import SessionReason  # noqa: E402

from .venue import FakeTransport  # noqa: E402

MS = 1_000_000
T0 = 1_000_000_000_000


class RecordingSink:
    def __init__(self, capacity: int = 1 << 30) -> None:
        self.capacity = capacity
        self.commands: list = []

    def submit(self, session, commands: np.ndarray) -> int:
        taken = commands[: self.capacity]
        self.commands += [dict(zip(COMMAND_DTYPE.names, record.tolist())) for record in taken]
        return len(taken)


KEY = client_keys.generate_key()
ADMIN_KEY = client_keys.generate_key()
REGISTRY = server_keys.MemoryKeyRegistry()
USER_RECORD = asyncio.run(REGISTRY.add(7, KEY.public_key))
ADMIN_RECORD = asyncio.run(REGISTRY.add(1, ADMIN_KEY.public_key, admin=True))


def make(limits: sessions.GatewayLimits | None = None, sink=None, slots=None, **kw):
    limits = (limits or sessions.GatewayLimits(login_timeout_ms=1000)).validate()
    transport, sink = FakeTransport(), sink or RecordingSink()
    session = sessions.Session(1, transport, limits, sink, slots or sessions.SessionSlots(limits.max_sessions), **kw)
    session.on_connect(T0)
    challenge = transport.take()[0]
    assert isinstance(challenge, p.Challenge) and challenge.nonce == session.nonce
    return session, transport, sink


def login(session, transport, key=KEY, record=USER_RECORD, now=T0, **fields):
    message = client_keys.signed_login(key, account_id=record.account_id, key_id=record.key_id, nonce=session.nonce,
                                **fields)
    session.on_data(message.encode(), now)
    pending = session.take_login()
    assert pending == message
    reason, found = asyncio.run(server_keys.authenticate(REGISTRY, pending, session.nonce))
    session.complete_login(reason, found, now)
    return transport.take()


def test_login_accepted_states_the_session():
    session, transport, _ = make(last_event_seq_of=lambda account: 41)
    [accepted] = login(session, transport, next_event_seq=40, heartbeat_interval_ms=500, login_flags=1)
    assert isinstance(accepted, p.LoginAccepted)
    assert (accepted.account_id, accepted.next_event_seq, accepted.last_event_seq) == (7, 40, 41)
    assert accepted.session_flags == p.SessionFlags.CANCEL_ON_DISCONNECT
    assert accepted.heartbeat_interval_ms == 500
    assert session.state == sessions.SessionState.ACTIVE


def test_bad_logins_get_typed_rejects_and_close():
    session, transport, _ = make()
    [answer] = login(session, transport, key=client_keys.generate_key())
    assert answer == p.LoginRejected(SessionReason.AUTH_FAILED) and transport.closed
    session, transport, _ = make(last_event_seq_of=lambda account: 5)
    assert login(session, transport, next_event_seq=7) == [p.LoginRejected(SessionReason.INVALID_EVENT_SEQ)]
    session, transport, _ = make()
    assert login(session, transport, heartbeat_interval_ms=10) == [
        p.LoginRejected(SessionReason.INVALID_HEARTBEAT_INTERVAL)]


def test_max_sessions_refuses_the_next_login_and_frees_slots_on_close():
    slots = sessions.SessionSlots(1)
    first, first_transport, _ = make(slots=slots)
    login(first, first_transport)
    second, second_transport, _ = make(slots=slots)
    assert login(second, second_transport) == [p.LoginRejected(SessionReason.TOO_MANY_SESSIONS)]
    first.on_connection_lost(T0)
    third, third_transport, _ = make(slots=slots)
    assert isinstance(login(third, third_transport)[0], p.LoginAccepted)
    assert slots.in_use == 1


def test_login_timeout_and_frames_before_login():
    session, transport, _ = make()
    session.on_tick(T0 + 999 * MS)
    assert not transport.closed
    session.on_tick(T0 + 1001 * MS)
    assert transport.take() == [p.Logout(SessionReason.LOGIN_TIMEOUT)] and transport.closed
    session, transport, _ = make()
    session.on_data(p.Cancel(7, 1).encode(), T0)
    assert transport.take() == [p.Logout(SessionReason.UNEXPECTED_MESSAGE)] and transport.closed
    session, transport, _ = make()
    session.on_data(b"\xff\xff", T0)
    assert transport.take() == [p.Logout(SessionReason.FRAME_TOO_LARGE)]


def test_heartbeats_and_idle_timeout():
    session, transport, _ = make()
    login(session, transport, heartbeat_interval_ms=100)
    session.on_tick(T0 + 50 * MS)
    assert transport.take() == []
    session.on_tick(T0 + 100 * MS)
    assert transport.take() == [p.Heartbeat(0, T0 + 100 * MS)]
    session.on_data(p.Heartbeat().encode(), T0 + 250 * MS)
    session.on_tick(T0 + 540 * MS)
    assert not transport.closed
    session.on_tick(T0 + 551 * MS)
    assert transport.take()[-1] == p.Logout(SessionReason.IDLE_TIMEOUT) and transport.closed


def test_commands_carry_the_session_account_and_refusals_change_nothing():
    session, transport, sink = make()
    login(session, transport)
    frames = [p.NewOrder(1, 1, 1, 1, 7, 0, 5, 100, 3), p.NewOrder(1, 1, 1, 1, 8, 0, 6, 100, 3),
              p.Deposit(7, 0, 9, 1000), p.Cancel(7, 5)]
    session.on_data(b"".join(m.encode() for m in frames), T0)
    assert [c["kind"] for c in sink.commands] == [10, 11]
    assert all(c["account_id"] == 7 for c in sink.commands)
    assert transport.take() == [p.SessionReject(10, SessionReason.WRONG_ACCOUNT, 6),
                                p.SessionReject(8, SessionReason.NOT_AUTHORIZED, 9)]
    assert session.state == sessions.SessionState.ACTIVE


def test_admin_session_may_send_admin_commands_for_any_account():
    session, transport, sink = make()
    login(session, transport, key=ADMIN_KEY, record=ADMIN_RECORD)
    session.on_data(p.Deposit(7, 0, 9, 1000).encode(), T0)
    assert sink.commands[0]["kind"] == 8 and sink.commands[0]["account_id"] == 7


def test_rate_limit_refuses_over_the_bucket_and_refills():
    limits = sessions.GatewayLimits(rate_messages_per_s=10, burst_messages=3)
    session, transport, sink = make(limits)
    login(session, transport)
    session.on_data(b"".join(p.Cancel(7, i).encode() for i in range(1, 6)), T0)
    assert [c["client_id"] for c in sink.commands] == [1, 2, 3]
    assert transport.take() == [p.SessionReject(11, SessionReason.RATE_LIMITED, 4),
                                p.SessionReject(11, SessionReason.RATE_LIMITED, 5)]
    session.on_data(p.Cancel(7, 6).encode(), T0 + 100 * MS)  # one token back after 100 ms
    assert sink.commands[-1]["client_id"] == 6


def test_a_full_sink_refuses_busy():
    session, transport, sink = make(sink=RecordingSink(capacity=1))
    login(session, transport)
    session.on_data(p.Cancel(7, 1).encode() + p.Cancel(7, 2).encode(), T0)
    assert [c["client_id"] for c in sink.commands] == [1]
    assert transport.take() == [p.SessionReject(11, SessionReason.BUSY, 2)]
    assert session.state == sessions.SessionState.ACTIVE


def test_malformed_frame_closes_with_a_reason_and_cancel_on_disconnect_cancels():
    session, transport, sink = make()
    login(session, transport, login_flags=int(p.LoginFlags.CANCEL_ON_DISCONNECT))
    session.on_data(p.Cancel(7, 1).encode() + b"\x10\x00\x0b\x01" + bytes(12), T0)
    assert transport.take() == [p.Logout(SessionReason.MALFORMED_FRAME)] and transport.closed
    assert [c["kind"] for c in sink.commands] == [11, 13]
    assert sink.commands[-1]["account_id"] == 7 and sink.commands[-1]["instrument_id"] == p.ALL_INSTRUMENTS
    session.on_connection_lost(T0)  # the adapter's call after close: nothing twice
    assert len(sink.commands) == 2


def test_order_status_and_logout():
    session, transport, _ = make()
    login(session, transport)
    session.on_data(p.OrderStatusQuery(5).encode() + p.Logout().encode(), T0)
    status, = transport.take()
    assert status.state == p.OrderState.NOT_OPEN and status.client_order_id == 5
    assert transport.closed and session.close_reason == SessionReason.CLIENT_LOGOUT


def test_token_bucket_is_exact_and_bounded():
    bucket = sessions.TokenBucket(rate_per_s=3, burst=2, now_ns=0)
    assert bucket.take(2, 0) and not bucket.take(1, 0)
    assert bucket.available(333_333_333) == 0 and bucket.available(333_333_334) == 1
    assert bucket.available(10**12) == 2
    assert bucket.available(0) == 2  # a clock going back refills nothing and breaks nothing


def test_limits_are_validated():
    with pytest.raises(ValueError):
        sessions.GatewayLimits(frame_size_bytes_max=64).validate()  # LOGIN is 128 bytes
    with pytest.raises(ValueError):
        sessions.GatewayLimits(burst_messages=0).validate()


class BufferedTransport(FakeTransport):
    """A transport whose client reads nothing: everything written stays queued."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return len(self.written)

    def abort(self) -> None:
        self.aborted = True


def test_a_slow_consumer_is_told_before_it_is_cut():
    limits = sessions.GatewayLimits(login_timeout_ms=1000, output_buffer_bytes_max=1 << 16).validate()
    transport, sink = BufferedTransport(), RecordingSink()
    session = sessions.Session(1, transport, limits, sink, sessions.SessionSlots(10))
    session.on_connect(T0)
    login(session, transport)
    event_frame = bytes(p.EVENT_FRAME_SIZE)
    for index in range(1000):  # ~88 KB of events that nobody reads
        session.send_frames(event_frame, index + 1, T0)
    assert session.close_reason == SessionReason.SLOW_CONSUMER and transport.closed
    last = p.decode(bytes(transport.written[-p.FRAME_SIZES[p.MessageType.LOGOUT]:]))
    assert last == p.Logout(SessionReason.SLOW_CONSUMER)  # the last frame queued
    assert transport.aborted  # no loop in this test: the linger is cut short


def test_every_frame_costs_a_token_and_a_session_that_keeps_over_running_is_closed():
    limits = sessions.GatewayLimits(login_timeout_ms=1000, rate_messages_per_s=10, burst_messages=10,
                                    rate_limited_frames_per_s_max=50)
    session, transport, sink = make(limits)
    login(session, transport)
    session.on_data(p.Heartbeat(0, 0).encode() * 30, T0)  # 10 taken, 20 refused
    refused = [m for m in transport.take() if isinstance(m, p.SessionReject)]
    assert len(refused) == 20 and {m.reason for m in refused} == {SessionReason.RATE_LIMITED}
    order = p.NewOrder(1, 1, 1, 1, 7, 0, 1, 100, 1, 0, 0).encode()
    session.on_data(order, T0)
    assert sink.commands == []  # the heartbeats used the tokens up
    session.on_data(p.Heartbeat(0, 0).encode() * 40, T0)  # past 50 refusals within the second
    assert session.close_reason == SessionReason.RATE_EXCEEDED
    assert transport.take()[-1] == p.Logout(SessionReason.RATE_EXCEEDED)
