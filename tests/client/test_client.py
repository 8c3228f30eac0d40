"""The client library over real TCP (plain and TLS, asyncio and uvloop) against the session layer and an in-memory Engine."""
from __future__ import annotations

import asyncio
import contextlib
import ssl

import pytest

pytest.importorskip("cryptography", reason="cryptography is a gateway dependency")

from matchcore.core.codes import CancelReason, EventKind, RejectReason, Side, TimeInForce  # noqa: E402
from matchcore.client import keys as client_keys  # noqa: E402
from matchcore.gateway import keys as server_keys  # noqa: E402
from matchcore.gateway import sessions  # noqa: E402
from matchcore import protocol as p  # noqa: E402
from matchcore.client.connection import Client, ConnectionLost, LoginRefused  # noqa: E402
from matchcore.protocol import SessionReason  # noqa: E402

from ..tls import write_self_signed  # noqa: E402
from tests.gateway.venue import EngineSink  # noqa: E402

ADMIN, ALICE, BOB = 1, 7, 8
BASE, QUOTE, INSTRUMENT = 0, 1, 0


class Venue:
    def __init__(self, limits: sessions.GatewayLimits | None = None) -> None:
        self.sink = EngineSink()
        self.registry = server_keys.MemoryKeyRegistry()
        self.table = sessions.SessionTable(limits or sessions.GatewayLimits(), self.sink, self.registry,
                                         last_event_seq_of=self.sink.last_event_seq_of,
                                         on_active=self.sink.on_active)
        self.keys: dict[int, tuple[client_keys.PrivateKey, int]] = {}
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        for account, admin in ((ADMIN, True), (ALICE, False), (BOB, False)):
            key = client_keys.generate_key()
            record = await self.registry.add(account, key.public_key, admin=admin)
            self.keys[account] = (key, record.key_id)
        self.server = await asyncio.get_running_loop().create_server(
            self.table.protocol_factory, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        self.clock = asyncio.create_task(self.table.run_clock(tick_ms=20))

    async def stop(self) -> None:
        self.clock.cancel()
        self.server.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self.clock

    def client(self, account: int, **kw) -> Client:
        key, key_id = self.keys[account]
        return Client("127.0.0.1", self.port, account_id=account, key_id=key_id, private_key=key, **kw)

    async def market(self) -> None:
        """Assets, accounts, an instrument and funds, through an admin session."""
        async with self.client(ADMIN) as admin:
            for message in (p.AddAsset(BASE, 2, 1), p.AddAsset(QUOTE, 2, 2), p.AddAccount(ALICE, 3),
                            p.AddAccount(BOB, 4), p.AddInstrument(INSTRUMENT, BASE, QUOTE, 1, 1, 10_000)):
                assert (await admin.request(message, timeout_s=5)).accepted, message
            for account in (ALICE, BOB):
                for asset in (BASE, QUOTE):
                    outcome = await admin.request(p.Deposit(account, asset, admin.next_client_id(), 10**9), 5)
                    assert outcome.event.kind == EventKind.TRANSFER_DONE


def venue_test(coroutine_function, *, use_uvloop: bool = False, **venue_kw):
    async def main():
        venue = Venue(**venue_kw)
        await venue.start()
        try:
            await asyncio.wait_for(coroutine_function(venue), 20)
        finally:
            await venue.stop()

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


@pytest.mark.parametrize("use_uvloop", [False, True], ids=["asyncio", "uvloop"])
def test_orders_fill_and_both_counterparties_see_it(use_uvloop):
    async def scenario(venue: Venue):
        await venue.market()
        async with venue.client(ALICE, next_event_seq=1) as alice, venue.client(BOB) as bob:
            sell = await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=5, client_order_id=11, timeout_s=5)
            assert sell.accepted and sell.event.kind == EventKind.ACCEPTED and sell.event.client_id == 11
            buy = await bob.new_order(INSTRUMENT, Side.BUY, price=101, quantity=3, client_order_id=21,
                                      time_in_force=TimeInForce.IOC, timeout_s=5)
            assert buy.accepted
            bob_fill = await _next_of(bob, EventKind.FILL)
            alice_fill = await _next_of(alice, EventKind.FILL)
            assert (bob_fill.liquidity, bob_fill.side, bob_fill.client_id, bob_fill.price, bob_fill.quantity) == (
                p.Liquidity.TAKER, Side.BUY, 21, 100, 3)
            # contract 2: the wire gives each side its own client order id and open lots
            assert (alice_fill.liquidity, alice_fill.side, alice_fill.client_id, alice_fill.quantity,
                    alice_fill.leaves) == (p.Liquidity.MAKER, Side.SELL, 11, 3, 2)
            assert bob_fill.leaves == 0
            assert alice_fill.trade_id == bob_fill.trade_id
            replaced = await alice.replace(11, price=102, quantity=1, timeout_s=5)
            assert replaced.event.kind == EventKind.REPLACED
            canceled = await alice.cancel(11, timeout_s=5)
            assert canceled.event.kind == EventKind.CANCELED and canceled.event.reason == CancelReason.USER
            duplicate = await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=1, client_order_id=11,
                                              timeout_s=5)
            assert duplicate.reason == RejectReason.DUPLICATE_CLIENT_ORDER_ID
            done = await alice.mass_cancel(timeout_s=5)
            assert done.event.kind == EventKind.COMMAND_DONE

    venue_test(scenario, use_uvloop=use_uvloop)


def test_gtd_stop_and_iceberg_orders_over_the_wire():
    """Contract 2's order fields reach the engine from the client library."""
    import time

    from matchcore.core.codes import OrderType

    async def scenario(venue: Venue):
        await venue.market()
        async with venue.client(ALICE) as alice, venue.client(BOB) as bob:
            iceberg = await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=9, display_quantity=2,
                                            timeout_s=5)
            gtd = await alice.new_order(INSTRUMENT, Side.SELL, price=105, quantity=1, time_in_force=TimeInForce.GTD,
                                        expire_time_ns=time.time_ns() + 60 * 10**9, timeout_s=5)
            stop = await bob.new_order(INSTRUMENT, Side.BUY, price=110, quantity=1, order_type=OrderType.STOP_LIMIT,
                                       trigger_price=100, timeout_s=5)
            assert iceberg.accepted and gtd.accepted and stop.accepted
            assert venue.sink.engine.depth(INSTRUMENT, Side.SELL).tolist() == [[100, 2, 1], [105, 1, 1]]
            await bob.new_order(INSTRUMENT, Side.BUY, price=100, quantity=1, time_in_force=TimeInForce.IOC,
                                timeout_s=5)
            triggered = await _next_of(bob, EventKind.TRIGGERED)
            assert triggered.client_id == stop.event.client_id
            bad = await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=1, time_in_force=TimeInForce.GTD,
                                        expire_time_ns=1, timeout_s=5)
            assert bad.reason == RejectReason.INVALID_EXPIRE_TIME

    venue_test(scenario, use_uvloop=True)


async def _next_of(client: Client, kind: int) -> p.EventMessage:
    while True:
        event = await client.next_event(timeout_s=5)
        if event.kind == kind:
            return event


def test_gateway_refusals_reach_the_client():
    async def scenario(venue: Venue):
        await venue.market()
        async with venue.client(ALICE) as alice:
            refused = await alice.request(p.Deposit(ALICE, QUOTE, 77, 10**6), timeout_s=5)
            assert refused.reject == p.SessionReject(p.MessageType.DEPOSIT, SessionReason.NOT_AUTHORIZED, 77)
            other = await alice.request(p.Cancel(BOB, 5), timeout_s=5)
            assert other.reason == SessionReason.WRONG_ACCOUNT
            status = await alice.order_status(5, timeout_s=5)
            assert status.state == p.OrderState.NOT_OPEN
        key, key_id = venue.keys[BOB]
        impostor = Client("127.0.0.1", venue.port, account_id=ALICE, key_id=key_id, private_key=key)
        with pytest.raises(LoginRefused) as refused_login:
            await impostor.connect()
        assert refused_login.value.reason == SessionReason.AUTH_FAILED  # ACCOUNT_MISMATCH, in the log only
        await venue.registry.revoke(venue.keys[BOB][1])
        with pytest.raises(LoginRefused) as revoked:
            await venue.client(BOB).connect()
        assert revoked.value.reason == SessionReason.AUTH_FAILED  # KEY_REVOKED, in the log only

    venue_test(scenario)


def test_reconnect_receives_exactly_the_missed_events():
    async def scenario(venue: Venue):
        await venue.market()
        alice = venue.client(ALICE, next_event_seq=1)
        await alice.connect()
        await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=10, client_order_id=1, timeout_s=5)
        seen = [e.event_seq async for e in _drain(alice)]
        await alice.close()
        last = alice.last_event_seq
        assert seen == list(range(1, last + 1))
        async with venue.client(BOB) as bob:  # trades against Alice's order while she is away
            for client_order_id in (1, 2):
                await bob.new_order(INSTRUMENT, Side.BUY, price=100, quantity=2, client_order_id=client_order_id,
                                    time_in_force=TimeInForce.IOC, timeout_s=5)
        accepted = await alice.reconnect()
        assert accepted.next_event_seq == last + 1 and accepted.last_event_seq == last + 2
        missed = [await alice.next_event(timeout_s=5) for _ in range(2)]
        assert [e.event_seq for e in missed] == [last + 1, last + 2]
        assert all(e.kind == EventKind.FILL and e.liquidity == p.Liquidity.MAKER for e in missed)
        # a resend after the reconnect is the duplicate reject, never a second order
        resend = await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=10, client_order_id=1, timeout_s=5)
        assert resend.reason == RejectReason.DUPLICATE_CLIENT_ORDER_ID
        await alice.close()

    venue_test(scenario)


async def _drain(client: Client):
    while True:
        try:
            yield await client.next_event(timeout_s=0.2)
        except asyncio.TimeoutError:
            return


def test_cancel_on_disconnect_cancels_resting_orders():
    async def scenario(venue: Venue):
        await venue.market()
        alice = venue.client(ALICE, cancel_on_disconnect=True)
        accepted = await alice.connect()
        assert accepted.session_flags & p.SessionFlags.CANCEL_ON_DISCONNECT
        await alice.new_order(INSTRUMENT, Side.SELL, price=100, quantity=4, client_order_id=1, timeout_s=5)
        alice._writer.transport.abort()  # the connection drops without a logout
        async with venue.client(ALICE, next_event_seq=1) as watcher:
            kinds = [(e.kind, e.reason) async for e in _drain(watcher)]
        assert (EventKind.CANCELED, CancelReason.MASS_CANCEL) in kinds
        await alice.close()

    venue_test(scenario)


def test_server_heartbeats_keep_a_quiet_client_alive_and_idle_peers_are_dropped():
    async def scenario(venue: Venue):
        async with venue.client(ALICE, heartbeat_interval_ms=100) as alice:
            await asyncio.sleep(0.6)  # 6 intervals, nothing sent by the application
            assert alice.connected
        # a raw connection that logs in and then says nothing is logged out IDLE_TIMEOUT
        reader, writer = await asyncio.open_connection("127.0.0.1", venue.port)
        challenge = p.decode(await reader.readexactly(p.FRAME_SIZES[p.MessageType.CHALLENGE]))
        key, key_id = venue.keys[BOB]
        writer.write(client_keys.signed_login(key, account_id=BOB, key_id=key_id, nonce=challenge.nonce,
                                       heartbeat_interval_ms=100).encode())
        assert isinstance(p.decode(await reader.readexactly(p.FRAME_SIZES[p.MessageType.LOGIN_ACCEPTED])), p.LoginAccepted)
        frames = p.split_frames(await asyncio.wait_for(reader.read(), 5))[0]
        assert p.decode(frames[-1]) == p.Logout(SessionReason.IDLE_TIMEOUT)
        writer.close()

    venue_test(scenario)


def test_garbage_on_one_connection_does_not_disturb_another():
    async def scenario(venue: Venue):
        await venue.market()
        async with venue.client(ALICE) as alice:
            reader, writer = await asyncio.open_connection("127.0.0.1", venue.port)
            await reader.readexactly(p.FRAME_SIZES[p.MessageType.CHALLENGE])
            writer.write(b"\x08\x00\xfe\x00garbage!")
            frames = p.split_frames(await asyncio.wait_for(reader.read(), 5))[0]
            assert p.decode(frames[-1]) == p.Logout(SessionReason.UNKNOWN_MESSAGE_TYPE)
            outcome = await alice.new_order(INSTRUMENT, Side.BUY, price=90, quantity=1, timeout_s=5)
            assert outcome.accepted and alice.connected

    venue_test(scenario)


def test_tls(tmp_path):
    write_self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client_context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))

    async def main():
        venue = Venue()
        await venue.start(ssl_context=server_context)
        try:
            async with venue.client(ALICE, ssl=client_context, server_hostname="localhost") as alice:
                assert alice.session.account_id == ALICE
                status = await alice.order_status(1, timeout_s=5)
                assert status.state == p.OrderState.NOT_OPEN
            plain = venue.client(ALICE)
            with pytest.raises((ConnectionError, OSError, asyncio.IncompleteReadError, p.ProtocolError,
                                asyncio.TimeoutError, ConnectionLost)):
                plain.connect_timeout_s = 2
                await plain.connect()
        finally:
            await venue.stop()

    asyncio.run(main())
