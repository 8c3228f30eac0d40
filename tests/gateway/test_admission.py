"""The sequencer: a full input ring holds commands (in arrival order) and pauses the socket, never
drops; cancel-on-disconnect's MASS_CANCEL is never lost either."""
from __future__ import annotations

import asyncio

import numpy as np

from matchcore.core.codes import CommandKind
from matchcore.client import keys as client_keys
from matchcore.gateway import keys as server_keys
from matchcore.gateway import sessions
from matchcore import protocol as p
from matchcore.gateway.admission import Admission

from .venue import FakeTransport

ACCOUNT = 7


class SmallCore:
    """An input ring that takes ``room`` records until ``free`` is called."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.taken: list[np.ndarray] = []
        self.next_seq = 1  # the seq the next command taken gets, as the pipeline's

    def submit(self, commands: np.ndarray) -> int:
        count = min(self.room, len(commands))
        if count:
            self.taken.append(commands[:count].copy())
            self.room -= count
            self.next_seq += count
        return count


class PausableTransport(FakeTransport):
    def __init__(self) -> None:
        super().__init__()
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def _session(sink, limits=None) -> sessions.Session:
    transport = PausableTransport()
    session = sessions.Session(1, transport, limits or sessions.GatewayLimits(), sink, sessions.SessionSlots(10))
    session.on_connect(0)
    login = client_keys.signed_login(client_keys.generate_key(), account_id=ACCOUNT, key_id=1, nonce=session.nonce)
    session.on_data(login.encode(), 1)
    session.take_login()
    session.complete_login(p.SessionReason.NONE, server_keys.KeyRecord(1, ACCOUNT, b"\0" * 32), 2)
    transport.take()
    return session


def _orders(count: int, first_client_id: int = 1) -> bytes:
    return b"".join(p.NewOrder(1, 1, 1, 1, ACCOUNT, 0, first_client_id + i, 100, 1, 0, 0).encode()
                    for i in range(count))


def test_a_full_ring_holds_commands_pauses_the_socket_and_keeps_their_order():
    async def scenario():
        core = SmallCore(room=3)
        sequencer = Admission(core, retry_s=0.001)
        session = _session(sequencer)
        session.on_data(_orders(10), 10)
        assert session.transport.paused and sequencer.held_records == 7
        session.on_data(_orders(2, first_client_id=11), 11)  # arrives while held: buffered
        assert session.transport.take() == []  # no BUSY, nothing refused
        core.room = 100
        await asyncio.sleep(0.02)
        assert not session.transport.paused and sequencer.held_records == 0
        ids = np.concatenate(core.taken)["client_id"].tolist()
        assert ids == list(range(1, 13))

    asyncio.run(scenario())


def test_cancel_on_disconnect_is_held_not_dropped():
    async def scenario():
        core = SmallCore(room=0)
        sequencer = Admission(core, retry_s=0.001)
        session = _session(sequencer)
        session.cancel_on_disconnect = True
        session.on_connection_lost(20)
        assert sequencer.held_records == 1
        core.room = 1
        await asyncio.sleep(0.02)
        (taken,) = core.taken
        assert taken["kind"][0] == CommandKind.MASS_CANCEL and taken["account_id"][0] == ACCOUNT

    asyncio.run(scenario())


def _session_with_id(sink, session_id: int, account: int, limits=None) -> sessions.Session:
    transport = PausableTransport()
    session = sessions.Session(session_id, transport, limits or sessions.GatewayLimits(), sink, sessions.SessionSlots(10))
    session.on_connect(0)
    login = client_keys.signed_login(client_keys.generate_key(), account_id=account, key_id=session_id,
                                     nonce=session.nonce)
    session.on_data(login.encode(), 1)
    session.take_login()
    session.complete_login(p.SessionReason.NONE, server_keys.KeyRecord(session_id, account, b"\0" * 32), 2)
    transport.take()
    return session


def test_one_sessions_backlog_does_not_keep_another_waiting_behind_all_of_it():
    """Fairness: held commands are offered in turns, so a session that holds one command is
    served after at most one turn of a session that holds a thousand (before: after all)."""
    async def scenario():
        core = SmallCore(room=0)
        admission = Admission(core, retry_s=0.001)
        big = _session_with_id(admission, 1, ACCOUNT)
        small = _session_with_id(admission, 2, ACCOUNT + 1)
        big.on_data(_orders(1000), 10)
        small.on_data(b"".join(p.NewOrder(1, 1, 1, 1, ACCOUNT + 1, 0, 5000, 100, 1, 0, 0).encode()
                               for _ in range(1)), 11)
        assert admission.held_records == 1001
        core.room = 10_000
        await asyncio.sleep(0.02)
        order = np.concatenate(core.taken)["account_id"].tolist()
        assert len(order) == 1001
        assert order.index(ACCOUNT + 1) <= 256  # one turn of the big session at most

    asyncio.run(scenario())


def test_a_held_session_is_not_closed_idle_while_the_server_does_not_read_it():
    """Its heartbeats wait unread in the socket: the silence is the server's, not the client's."""
    core = SmallCore(room=0)

    async def scenario():
        admission = Admission(core, retry_s=0.001)
        session = _session_with_id(admission, 1, ACCOUNT)
        session.on_data(_orders(5), 10)
        assert session.transport.paused
        heartbeat_ns = session.heartbeat_interval_ns
        for tick in range(1, 20):  # far past idle_timeout_heartbeats intervals
            session.on_tick(10 + tick * heartbeat_ns)
        assert session.state == sessions.SessionState.ACTIVE
        core.room = 100
        await asyncio.sleep(0.02)
        assert not session.transport.paused

    asyncio.run(scenario())
