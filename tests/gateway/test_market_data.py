"""Market data fan-out and its limits on the loop side, with a real replica thread and engine: a
subscriber gets a snapshot then every increment, a subscriber of one instrument only its own, a
hostile client is bounded (subscriptions, snapshot rate), and a subscriber whose socket is
behind is conflated, then re-snapshotted, then logged out when it keeps falling behind."""
from __future__ import annotations

import asyncio

import numpy as np

from matchcore import protocol as p
from matchcore.core import Engine, EngineConfig, commands as c
from matchcore.core.codes import ALL_INSTRUMENTS, Side
from matchcore.gateway.market_data import MarketData
from matchcore.gateway.metrics import GatewayMetrics
from matchcore.gateway.replica import Replica
from matchcore.persistence.marketdata import MarketDataFeed

CONFIG = EngineConfig(max_accounts=8, max_assets=4, max_instruments=4, max_orders=1000, max_price_levels=64)
SETUP = [c.add_asset(0), c.add_asset(1), c.add_account(1), c.add_account(2),
         c.add_instrument(0, 0, 1), c.add_instrument(1, 0, 1),
         c.deposit(1, 0, 10**9, 1), c.deposit(1, 1, 10**9, 2), c.deposit(2, 0, 10**9, 1), c.deposit(2, 1, 10**9, 2)]


class FakeSession:
    def __init__(self) -> None:
        self.active = True
        self.account_id = 1
        self.session_id = id(self)
        self.market_data_only = False
        self.redirect = None
        self.written = bytearray()
        self.queued = 0
        self.refused: list[tuple[int, int]] = []
        self.logged_out = None

    def send_market_data(self, frames: bytes) -> None:
        self.written += frames

    def refuse_request(self, type_, reason, request_id) -> None:
        self.refused.append((int(type_), int(reason)))

    def queued_bytes(self) -> int:
        return self.queued

    def logout(self, reason, now_ns) -> None:
        self.logged_out = reason
        self.active = False

    def messages(self) -> list[p.Message]:
        out = list(p.iter_messages(bytes(self.written)))
        self.written.clear()
        return out


class Venue:
    def __init__(self, **limits) -> None:
        self.seq = 0
        self.metrics = GatewayMetrics()
        self.core = Engine(CONFIG)  # the events the core would have journaled, in step with the replica
        self.replica = Replica(MarketDataFeed(Engine(CONFIG)), self._output, checkpoint_every_commands=0)
        self.md = MarketData(self.replica, self.metrics, **limits)
        self.release(SETUP)

    def _output(self, kind, *payload) -> None:
        if kind == "frames":
            self.md.on_frames(*payload)

    def release(self, records) -> None:
        commands = c.number(c.pack(records), first_seq=self.seq + 1, timestamp_ns=1)
        self.seq += len(commands)
        self.replica.released(commands, self.core.apply(commands))

    async def settle(self) -> None:
        for _ in range(200):
            await asyncio.sleep(0.005)
            if self.replica.lag_batches == 0 and not self.replica._out and not self.replica._queries:
                await asyncio.sleep(0.01)
                return


def test_snapshot_then_increments_and_per_instrument_subscriptions():
    async def scenario():
        venue = Venue()
        every, one = FakeSession(), FakeSession()
        venue.release([c.limit(1, 0, 1, Side.BUY, 10, 5)])
        await venue.settle()
        venue.md.subscribe(every, p.MdSubscribe(ALL_INSTRUMENTS, 0, 7))
        venue.md.subscribe(one, p.MdSubscribe(1, 0, 8))
        await venue.settle()
        snapshot = every.messages()
        assert [type(m).__name__ for m in snapshot] == ["MdSnapshot", "MdLevel", "MdSnapshot", "QueryDone"]
        assert snapshot[1].price == 10 and snapshot[1].snapshot == 1 and snapshot[-1].count == 2
        assert [type(m).__name__ for m in one.messages()] == ["MdSnapshot", "QueryDone"]
        venue.release([c.limit(2, 0, 1, Side.SELL, 12, 3), c.limit(2, 1, 2, Side.SELL, 30, 1)])
        await venue.settle()
        got = every.messages()
        assert {m.instrument_id for m in got} == {0, 1}
        mine = one.messages()
        assert mine and {m.instrument_id for m in mine} == {1}
        # md_seq continues from the snapshot's
        first_of_0 = [m for m in got if m.instrument_id == 0][0]
        assert first_of_0.md_seq == snapshot[0].md_seq + 1
        venue.replica.stop()

    asyncio.run(scenario())


def test_hostile_clients_are_bounded_by_subscriptions_and_snapshot_rate():
    async def scenario():
        venue = Venue(subscriptions_max=1, snapshots_per_s_max=2)
        session = FakeSession()
        venue.md.subscribe(session, p.MdSubscribe(0, 0, 1))
        await venue.settle()
        venue.md.subscribe(session, p.MdSubscribe(1, 0, 2))  # a second instrument: over the limit
        for request in range(5):  # re-asking for snapshots of the same instrument
            venue.md.subscribe(session, p.MdSubscribe(0, 0, 10 + request))
            await venue.settle()
        reasons = [reason for _, reason in session.refused]
        assert reasons.count(p.SessionReason.TOO_MANY_SUBSCRIPTIONS) == 1
        assert reasons.count(p.SessionReason.RATE_LIMITED) >= 3
        venue.md.subscribe(session, p.MdSubscribe(3, 0, 99))  # unknown: still refused politely
        venue.replica.stop()

    asyncio.run(scenario())


def test_a_subscriber_behind_is_conflated_then_resnapshotted_then_logged_out():
    async def scenario():
        venue = Venue(conflate_bytes=1000, conflations_per_minute_max=2)
        slow = FakeSession()
        venue.md.subscribe(slow, p.MdSubscribe(ALL_INSTRUMENTS, 0, 1))
        await venue.settle()
        slow.messages()
        client_id = 10
        for round_ in range(3):
            slow.queued = 5000  # its socket is behind
            venue.release([c.limit(1, 0, client_id, Side.BUY, 20 + round_, 1)])
            client_id += 1
            await venue.settle()
            assert slow.messages() == []  # increments dropped
            if round_ == 2:
                break
            slow.queued = 0  # it read
            venue.md.check_conflated()
            await venue.settle()
            fresh = slow.messages()
            assert isinstance(fresh[0], p.MdSnapshot) and fresh[0].request_id == 0
            assert isinstance(fresh[-1], p.QueryDone)
        assert slow.logged_out == p.SessionReason.SLOW_CONSUMER
        assert venue.metrics.md_conflations == 3
        venue.replica.stop()

    asyncio.run(scenario())


class _SocketTransport:
    def __init__(self, sock) -> None:
        self.sock = sock

    def get_extra_info(self, name):
        return {"socket": self.sock, "sslcontext": None}.get(name)


def _read_all(sock, wanted_types: set[int], timeout_s: float = 5.0) -> list[p.Message]:
    """Messages from the peer socket until one of ``wanted_types`` has arrived."""
    import time
    sock.settimeout(0.05)
    data, deadline = bytearray(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            chunk = b""
        data += chunk
        frames, used = p.split_frames(data)
        messages = [p.decode(f) for f in frames]
        if any(m.frame_type() in wanted_types for m in messages):
            return messages
    raise AssertionError("nothing came")


def test_a_market_data_only_session_is_fed_by_the_replica_thread_in_order():
    import socket

    async def scenario():
        venue = Venue()
        ours, peer = socket.socketpair()
        session = FakeSession()
        session.market_data_only = True
        session.transport = _SocketTransport(ours)
        venue.md.subscribe(session, p.MdSubscribe(ALL_INSTRUMENTS, 0, 5))
        assert session.redirect is not None and session in venue.md.direct_sessions
        await venue.settle()
        got = await asyncio.get_running_loop().run_in_executor(None, _read_all, peer, {int(p.MessageType.QUERY_DONE)})
        assert isinstance(got[0], p.MdSnapshot) and got[-1].request_id == 5
        session.redirect(p.Heartbeat(0, 1).encode())  # the loop's writes go through the thread, in order
        venue.release([c.limit(1, 0, 1, Side.BUY, 10, 5)])
        await venue.settle()
        got = await asyncio.get_running_loop().run_in_executor(None, _read_all, peer, {int(p.MessageType.MD_BBO)})
        assert isinstance(got[0], p.Heartbeat) and isinstance(got[1], p.MdLevel) and got[1].price == 10
        assert venue.replica.direct_frames_sent >= 2
        venue.md.forget(session)  # the session closed: the thread lets go of its descriptor
        await venue.settle()
        assert not venue.replica._direct
        venue.replica.stop()
        ours.close()
        peer.close()

    asyncio.run(scenario())
