"""examples/market_maker.py against a real server for a few seconds: it quotes around the live
mid, a taker trades with it, it sees its fills and re-quotes, and the balances it kept from its
queries are the engine's after the journal is replayed."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

from matchcore.core.codes import Side, TimeInForce
from matchcore.persistence.journal import Journal
from matchcore.persistence.replay import replay

from .conftest import ALICE, BOB, INSTRUMENT, run

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "market_maker.py"


def _example():
    spec = importlib.util.spec_from_file_location("market_maker_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_market_maker_quotes_trades_and_keeps_its_balances_from_queries(server):
    example = _example()

    async def scenario():
        async with server.client(ALICE) as maker_client, server.client(BOB) as taker:
            # someone else's book: a bid at 98 and an ask at 104, so the mid is 101
            assert (await taker.new_order(INSTRUMENT, Side.BUY, 98, 1, timeout_s=10)).accepted
            assert (await taker.new_order(INSTRUMENT, Side.SELL, 104, 1, timeout_s=10)).accepted
            maker = example.MarketMaker(maker_client, INSTRUMENT, spread_ticks=1, size_lots=3, reference_price=100)

            async def take():
                await asyncio.sleep(1.0)
                for _ in range(4):  # hit the maker's ask (102) and bid (100) in turn
                    await taker.new_order(INSTRUMENT, Side.BUY, 102, 1, time_in_force=TimeInForce.IOC, timeout_s=10)
                    await taker.new_order(INSTRUMENT, Side.SELL, 100, 1, time_in_force=TimeInForce.IOC, timeout_s=10)
                    await asyncio.sleep(0.2)

            summary, _ = await asyncio.gather(maker.run(3.5), take())
            return summary

    summary = run(scenario())
    assert summary.quotes_sent >= 2 and summary.fills >= 2
    assert summary.lots_bought >= 1 and summary.lots_sold >= 1  # hit on both sides (the mid moves with fills)
    assert summary.balance_queries >= 3
    with Journal(server.dsn) as journal:
        engine = replay(journal).engine
    for asset_id, (available, held) in summary.balances.items():
        assert (available, held) == engine.balance(ALICE, asset_id)
    assert all(held == 0 for _, held in summary.balances.values())  # its quotes were canceled at the end
