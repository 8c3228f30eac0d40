"""Recovery over real processes: a client that drops mid-stream and reconnects gets exactly the
events it missed (from memory, and from the journal after a restart, a kill -9 included); a resend
after a reconnect is a duplicate, never a second order; cancel-on-disconnect cancels through the
journal."""
from __future__ import annotations

import asyncio
import json
import signal

from matchcore.core.codes import CancelReason, EventKind, RejectReason, Side
from matchcore import protocol as p
from matchcore.client.connection import ConnectionLost

from .conftest import ALICE, BOB, INSTRUMENT, run
from .streams import comparable, drain, expected_streams, quiet


def _drop(client) -> None:
    """Cut the connection without a LOGOUT, as a network failure would."""
    client._writer.transport.abort()


async def _stream_of(server, account: int) -> list[p.EventMessage]:
    """The account's whole stream, as a fresh session replays it."""
    async with server.client(account, next_event_seq=1) as client:
        last = client.session.last_event_seq
        return await drain(client, last)


def test_reconnect_receives_exactly_the_missed_events_and_a_resend_is_a_duplicate(server):
    async def scenario():
        alice = server.client(ALICE, next_event_seq=1)
        await alice.connect()
        seen = await drain(alice, alice.session.last_event_seq)
        async with server.client(BOB) as bob:
            resting = [await alice.new_order(INSTRUMENT, Side.SELL, 100 + i, 2, timeout_s=10) for i in range(5)]
            assert all(o.accepted for o in resting)
            seen += await drain(alice, 5)
            _drop(alice)
            # while Alice is away: Bob trades against her resting orders, one at a time
            for i in range(5):
                assert (await bob.new_order(INSTRUMENT, Side.BUY, 104, 1, timeout_s=10)).accepted
            # a resend: an order sent, the connection lost before its ack, the order sent again
            await alice.reconnect()
            seen += await drain(alice, 5)  # the 5 missed maker fills, replayed
            order = p.NewOrder(Side.SELL, 1, 1, 1, ALICE, INSTRUMENT, alice.next_client_id(), 200, 1, 0, 0)
            alice.send(order)
            await asyncio.sleep(0.3)
            _drop(alice)
            await alice.reconnect()
            seen += await drain(alice, 1)  # the original ACCEPTED, replayed
            assert seen[-1].kind == EventKind.ACCEPTED and seen[-1].client_id == order.client_order_id
            again = await alice.request(order, timeout_s=10)
            assert again.reason == RejectReason.DUPLICATE_CLIENT_ORDER_ID
            seen += await drain(alice, 1)  # the REJECTED
            status = await alice.order_status(order.client_order_id, timeout_s=10)
            assert status.state == p.OrderState.OPEN and status.open_quantity == 1
        await alice.close()
        expected = await expected_streams(server.dsn)
        assert [comparable(m) for m in seen] == [comparable(m) for m in expected[ALICE]]
        assert [m.event_seq for m in seen] == list(range(1, len(seen) + 1))
        accepted = [m for m in seen if m.kind == EventKind.ACCEPTED and m.client_id == order.client_order_id]
        assert len(accepted) == 1

    run(scenario())


def test_after_a_restart_and_a_kill_the_streams_come_back_from_the_journal(server):
    async def trade():
        async with server.client(ALICE) as alice, server.client(BOB) as bob:
            for i in range(20):
                assert (await alice.new_order(INSTRUMENT, Side.SELL, 100, 1, timeout_s=10)).accepted
                assert (await bob.new_order(INSTRUMENT, Side.BUY, 100, 1, timeout_s=10)).accepted

    run(trade())
    before = run(_stream_of(server, ALICE))
    assert server.stop() == 0
    server.settings["recent_event_frames"] = 4  # nearly nothing in memory: replay reads the journal
    server.start()
    rebuilt = [json.loads(line) for line in server.log().splitlines() if '"event streams rebuilt"' in line]
    assert rebuilt[-1]["checkpoint_seq"] > 0 and rebuilt[-1]["journal_rows"] == 0  # from the stop's checkpoint
    assert run(_stream_of(server, ALICE)) == before
    run(trade())
    expected_before_kill = run(_stream_of(server, BOB))
    server.stop(signal.SIGKILL)
    server.start()
    after = run(_stream_of(server, BOB))
    assert after == expected_before_kill
    expected = run(expected_streams(server.dsn))
    assert [comparable(m) for m in after] == [comparable(m) for m in expected[BOB]]


def test_cancel_on_disconnect_cancels_resting_orders_through_the_journal(server):
    async def scenario():
        alice = server.client(ALICE, cancel_on_disconnect=True)
        await alice.connect()
        assert alice.session.session_flags & p.SessionFlags.CANCEL_ON_DISCONNECT
        orders = [await alice.new_order(INSTRUMENT, Side.BUY, 90 - i, 1, timeout_s=10) for i in range(3)]
        assert all(o.accepted for o in orders)
        last_seen = alice.last_event_seq
        _drop(alice)
        try:
            await alice.next_event(5)
        except ConnectionLost:
            pass
        await asyncio.sleep(0.5)
        async with server.client(ALICE, next_event_seq=last_seen + 1) as observer:
            events = await drain(observer, 4)
            canceled = [e for e in events if e.kind == EventKind.CANCELED]
            assert len(canceled) == 3 and {e.reason for e in canceled} == {CancelReason.MASS_CANCEL}
            assert events[-1].kind == EventKind.COMMAND_DONE and events[-1].quantity == 3
            for order in orders:
                status = await observer.order_status(order.event.client_id, timeout_s=10)
                assert status.state == p.OrderState.NOT_OPEN
            assert await quiet(observer) == []
        commands = (await expected_streams(server.dsn))  # Engine agrees with the journal
        assert commands[ALICE][-1].kind == EventKind.COMMAND_DONE

    run(scenario())
