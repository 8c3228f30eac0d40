"""Every order type over the wire against a real server process and PostgreSQL: fills reach
both counterparties, and every session's stream equals what Engine gives for the journal's commands."""
from __future__ import annotations

from matchcore.core.codes import (CancelReason, EventKind, OrderType, RejectReason, Side, StpMode,
                                  TimeInForce)
from matchcore import protocol as p

from .conftest import ADMIN, ALICE, BOB, CAROL, INSTRUMENT, run
from .streams import comparable, drain, expected_streams, quiet

I = INSTRUMENT


def test_every_order_type_and_the_streams_equal_the_engine(server):
    async def scenario():
        clients = {a: server.client(a, next_event_seq=1) for a in (ALICE, BOB, CAROL)}
        for client in clients.values():
            await client.connect()
        alice, bob, carol = clients[ALICE], clients[BOB], clients[CAROL]
        try:
            sell = await bob.new_order(I, Side.SELL, 100, 5, timeout_s=10)
            assert sell.accepted and sell.event.kind == EventKind.ACCEPTED
            ioc = await alice.new_order(I, Side.BUY, 100, 2, time_in_force=TimeInForce.IOC, timeout_s=10)
            assert ioc.accepted
            fok_short = await alice.new_order(I, Side.BUY, 100, 10, time_in_force=TimeInForce.FOK, timeout_s=10)
            assert fok_short.accepted  # accepted, then canceled FOK_UNFILLED
            fok = await alice.new_order(I, Side.BUY, 100, 3, time_in_force=TimeInForce.FOK, timeout_s=10)
            assert fok.accepted
            post = await bob.new_order(I, Side.SELL, 105, 4, post_only=True, timeout_s=10)
            assert post.accepted
            crossing = await alice.new_order(I, Side.BUY, 105, 1, post_only=True, timeout_s=10)
            assert crossing.reason == RejectReason.POST_ONLY_WOULD_CROSS
            market_buy = await carol.new_order(I, Side.BUY, 0, 1, order_type=OrderType.MARKET,
                                               time_in_force=TimeInForce.IOC, max_notional=1000, timeout_s=10)
            assert market_buy.accepted
            replaced = await bob.replace(post.event.client_id, 106, 2, timeout_s=10)
            assert replaced.accepted and replaced.event.kind == EventKind.REPLACED
            bid = await alice.new_order(I, Side.BUY, 90, 3, timeout_s=10)
            assert bid.accepted
            market_sell = await carol.new_order(I, Side.SELL, 80, 2, order_type=OrderType.MARKET,
                                                time_in_force=TimeInForce.IOC, timeout_s=10)
            assert market_sell.accepted
            canceled = await alice.cancel(bid.event.client_id, timeout_s=10)
            assert canceled.accepted and canceled.event.reason == CancelReason.USER
            own = await bob.new_order(I, Side.BUY, 95, 1, timeout_s=10)
            assert own.accepted
            stp = await bob.new_order(I, Side.SELL, 95, 1, time_in_force=TimeInForce.IOC,
                                      stp_mode=StpMode.CANCEL_TAKER, timeout_s=10)
            assert stp.accepted
            status = await bob.order_status(own.event.client_id, timeout_s=10)
            assert status.state == p.OrderState.OPEN and status.open_quantity == 1
            mass = await bob.mass_cancel(timeout_s=10)
            assert mass.accepted and mass.event.kind == EventKind.COMMAND_DONE and mass.event.quantity == 2
            status = await bob.order_status(own.event.client_id, timeout_s=10)
            assert status.state == p.OrderState.NOT_OPEN

            expected = await expected_streams(server.dsn)
            for account, client in clients.items():
                got = await drain(client, len(expected[account]))
                assert [comparable(m) for m in got] == [comparable(m) for m in expected[account]], account
                assert await quiet(client) == []
            kinds = {account: [m.kind for m in expected[account]] for account in clients}
            # fills reached both sides: taker and maker views of every trade
            fills = {account: [m for m in expected[account] if m.kind == EventKind.FILL] for account in clients}
            trades_alice = {m.trade_id for m in fills[ALICE]}
            trades_bob = {m.trade_id for m in fills[BOB]}
            assert trades_alice & trades_bob and all(m.liquidity == p.Liquidity.TAKER for m in fills[ALICE]
                                                     if m.trade_id in trades_bob)
            assert {m.liquidity for m in fills[BOB]} == {p.Liquidity.MAKER}
            assert EventKind.CANCELED in kinds[ALICE] and EventKind.REPLACED in kinds[BOB]
            reasons = {m.reason for m in expected[BOB] if m.kind == EventKind.CANCELED}
            assert {CancelReason.SELF_TRADE, CancelReason.MASS_CANCEL} <= reasons
            # the admin's stream holds the outcomes of its set-up commands
            assert len(expected[ADMIN]) == 12
        finally:
            for client in clients.values():
                await client.close()

    run(scenario())
    assert server.stop() == 0
