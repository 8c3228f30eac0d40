"""The credit window: a session has at most limits.commands_in_flight_max commands read and not
yet answered; one that floods past it is not read further (its socket paused, its frames left
undecoded, in order) until answers give credit back, while other sessions are served; the
window is announced in LOGIN_ACCEPTED and the shipped client keeps to it."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from matchcore import protocol as p
from matchcore.client import keys as client_keys
from matchcore.client.window import CreditWindow
from matchcore.gateway import keys as server_keys
from matchcore.gateway import sessions
from matchcore.gateway.admission import Admission

from .test_admission import ACCOUNT, PausableTransport, SmallCore

WINDOW = 100


def _session(sink, session_id: int, account: int, window: int = WINDOW) -> tuple[sessions.Session, list]:
    transport = PausableTransport()
    limits = sessions.GatewayLimits(commands_in_flight_max=window)
    session = sessions.Session(session_id, transport, limits, sink, sessions.SessionSlots(10))
    session.on_connect(0)
    login = client_keys.signed_login(client_keys.generate_key(), account_id=account, key_id=session_id,
                                     nonce=session.nonce)
    session.on_data(login.encode(), 1)
    session.take_login()
    session.complete_login(p.SessionReason.NONE, server_keys.KeyRecord(session_id, account, b"\0" * 32), 2)
    return session, transport.take()


def _orders(account: int, count: int, first_client_id: int = 1) -> bytes:
    return b"".join(p.NewOrder(1, 1, 1, 1, account, 0, first_client_id + i, 100, 1, 0, 0).encode()
                    for i in range(count))


def test_the_window_is_announced_and_validated():
    async def scenario():
        return _session(Admission(SmallCore(room=10)), 1, ACCOUNT, window=777)

    _, (_challenge, accepted) = asyncio.run(scenario())
    assert isinstance(accepted, p.LoginAccepted) and accepted.commands_in_flight_max == 777
    for bad in (0, (1 << 24) + 1):
        with pytest.raises(ValueError, match="commands_in_flight_max"):
            sessions.GatewayLimits(commands_in_flight_max=bad).validate()


def test_a_flooding_session_is_not_read_past_its_window_until_answers_come_back_others_are_served():
    async def scenario():
        core = SmallCore(room=1_000_000)
        admission = Admission(core, retry_s=0.001)
        flood, _ = _session(admission, 1, ACCOUNT)
        other, _ = _session(admission, 2, ACCOUNT + 1)
        flood.on_data(_orders(ACCOUNT, 5 * WINDOW), 10)
        assert flood.commands_in_flight == WINDOW and flood.transport.paused
        assert len(np.concatenate(core.taken)) == WINDOW  # the rest waits, undecoded
        assert flood.transport.take() == []  # nothing refused: backpressure, not BUSY
        heartbeat_ns = flood.heartbeat_interval_ns
        for tick in range(1, 10):  # the server does not read it: not idle
            flood.on_tick(10 + tick * heartbeat_ns)
        assert flood.state == sessions.SessionState.ACTIVE

        other.on_data(_orders(ACCOUNT + 1, 10), 11)  # another session is read and served at once
        assert other.commands_in_flight == 10 and not other.transport.paused
        assert np.concatenate(core.taken)["account_id"].tolist()[-10:] == [ACCOUNT + 1] * 10

        admission.released(WINDOW // 2)  # half of the flood's first commands are answered
        assert flood.commands_in_flight == WINDOW and flood.transport.paused
        assert (np.concatenate(core.taken)["account_id"] == ACCOUNT).sum() == WINDOW + WINDOW // 2
        while flood.transport.paused:  # every answer gives credit: the flood goes on, in order
            admission.released(core.next_seq - 1)
        admission.released(core.next_seq - 1)
        assert flood.commands_in_flight == 0 and other.commands_in_flight == 0
        taken = np.concatenate(core.taken)
        ids = taken["client_id"][taken["account_id"] == ACCOUNT].tolist()
        assert ids == list(range(1, 5 * WINDOW + 1))
        assert admission.in_flight_max_seen == WINDOW

    asyncio.run(scenario())


def test_held_commands_count_in_the_window():
    """A full input ring holds commands: they are read, not answered, and take credit."""
    async def scenario():
        core = SmallCore(room=30)
        admission = Admission(core, retry_s=0.001)
        session, _ = _session(admission, 1, ACCOUNT)
        session.on_data(_orders(ACCOUNT, 3 * WINDOW), 10)
        assert session.commands_in_flight == WINDOW and admission.held_records == WINDOW - 30
        core.room = 10_000
        await asyncio.sleep(0.02)
        assert admission.held_records == 0 and session.commands_in_flight == WINDOW
        admission.released(core.next_seq - 1)
        assert session.commands_in_flight == WINDOW  # the next window's worth, read at once
        assert len(np.concatenate(core.taken)) == 2 * WINDOW

    asyncio.run(scenario())


def test_the_clients_window_waits_for_credit_in_order_and_survives_cancellation():
    async def scenario():
        window = CreditWindow()
        assert window.available is None
        for _ in range(5):
            await window.acquire()  # no bound before the login
        window.resize(3)
        assert window.available == 0
        order: list[int] = []

        async def command(index: int) -> None:
            await window.acquire()
            order.append(index)

        waiting = [asyncio.create_task(command(i)) for i in range(4)]
        cancelled = asyncio.create_task(command(99))
        await asyncio.sleep(0)
        cancelled.cancel()
        for _ in range(3):  # 5 in flight, window 3: the first answer that leaves room wakes one
            window.release()
        await asyncio.sleep(0)
        assert order == [0] and window.in_flight == 3
        for _ in range(3):
            window.release()
        await asyncio.gather(*waiting)
        assert order == [0, 1, 2, 3] and window.in_flight == 3 and window.available == 0

    asyncio.run(scenario())


def test_at_a_full_window_heartbeats_are_still_read_and_the_next_command_waits():
    async def scenario():
        core = SmallCore(room=1_000_000)
        admission = Admission(core, retry_s=0.001)
        session, _ = _session(admission, 1, ACCOUNT)
        session.on_data(_orders(ACCOUNT, WINDOW), 10)  # exactly the window: nothing waits
        assert session.commands_in_flight == WINDOW and not session.transport.paused
        session.on_data(p.Heartbeat(0, 0).encode(), 11)  # not a command: read at once
        assert not session.transport.paused and not session._buffer
        session.on_data(p.Heartbeat(0, 0).encode() + _orders(ACCOUNT, 1, WINDOW + 1) + p.Heartbeat(0, 0).encode(), 12)
        assert session.transport.paused  # the heartbeat before the command is read, the rest waits
        assert len(session._buffer) == len(_orders(ACCOUNT, 1)) + len(p.Heartbeat(0, 0).encode())
        admission.released(core.next_seq - 1)
        assert not session.transport.paused and not session._buffer and session.commands_in_flight == 1

    asyncio.run(scenario())
