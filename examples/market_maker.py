"""A market-making bot on matchcore's public feed: quotes around the live mid, re-quotes on fills,
and keeps its balances from the server's queries (not from its own arithmetic).

    python examples/market_maker.py --port 7400 --account 7 --key-id 3 --key-file mm.key \\
        [--instrument 0] [--spread-ticks 2] [--size-lots 5] [--seconds 30] [--reference-price 100]

What it does, in order: reads the instrument's reference data (tick size, status), subscribes to
its book (the client keeps it up to date from snapshot + increments, re-snapshotting by itself
after a gap), asks for its balances, then loops: whenever the book or its fills move, it keeps
one bid and one ask ``spread_ticks`` ticks around the mid (the reference price while the book
has no mid), replacing a quote rather than canceling it, sizes each side from what the balances
allow, and asks for its balances again after each fill and every second. At the end it cancels
its quotes (mass cancel) and prints what it did.

Prices are in ticks and quantities in lots, as on the wire.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time

from matchcore.client import Client, load_private_key
from matchcore.core.codes import EventKind, InstrumentState, Side

__all__ = ["MarketMaker", "MakerSummary", "main"]


@dataclasses.dataclass
class MakerSummary:
    quotes_sent: int = 0      # new orders and replaces
    fills: int = 0
    lots_bought: int = 0
    lots_sold: int = 0
    balance_queries: int = 0
    balances: dict = dataclasses.field(default_factory=dict)  # asset id -> (available, held)


class MarketMaker:
    """One instrument, one bid and one ask."""

    def __init__(self, client: Client, instrument_id: int, *, spread_ticks: int = 2, size_lots: int = 5,
                 reference_price: int = 100, balance_every_s: float = 1.0) -> None:
        self.client = client
        self.instrument_id = instrument_id
        self.spread_ticks = spread_ticks
        self.size_lots = size_lots
        self.reference_price = reference_price
        self.balance_every_s = balance_every_s
        self.summary = MakerSummary()
        self.quotes: dict[Side, tuple[int, int, int] | None] = {Side.BUY: None, Side.SELL: None}  # id, price, lots
        self.tick = 1
        self.lot_size = 1
        self.base = self.quote_asset = 0
        self.balances = {}

    async def start(self) -> None:
        (info,) = [i for i in await self.client.instruments(timeout_s=10) if i.instrument_id == self.instrument_id]
        self.tick, self.lot_size = info.tick_size, info.lot_size
        self.base, self.quote_asset = info.base_asset_id, info.quote_asset_id
        await self.client.subscribe(self.instrument_id, timeout_s=10)
        await self.refresh_balances()

    async def refresh_balances(self) -> None:
        self.balances = await self.client.balances(timeout_s=10)
        self.summary.balance_queries += 1
        self.summary.balances = {a: (b.available, b.held) for a, b in self.balances.items()}

    def mid_ticks(self) -> int:
        book = self.client.books[self.instrument_id]
        mid = book.mid()
        if mid is None:
            mid = book.last_price or self.reference_price
        return int(round(mid / self.tick)) * self.tick

    def sizes(self, bid: int) -> tuple[int, int]:
        """Lots each side can quote from the queried balances: the bot's own quotes hold the
        rest of what it has, and a replace moves that hold, so available + held counts (the
        bid keeps 10% aside for fees)."""
        quote, base = self.balances.get(self.quote_asset), self.balances.get(self.base)
        quote_minor = quote.available + quote.held if quote else 0
        base_lots = (base.available + base.held) // self.lot_size if base else 0
        return min(self.size_lots, int(quote_minor * 0.9) // max(bid, 1)), min(self.size_lots, base_lots)

    async def requote(self) -> None:
        book = self.client.books[self.instrument_id]
        if book.state != InstrumentState.TRADING:
            return
        mid = self.mid_ticks()
        bid, ask = mid - self.spread_ticks * self.tick, mid + self.spread_ticks * self.tick
        bid_lots, ask_lots = self.sizes(bid)
        for side, price, lots in ((Side.BUY, bid, bid_lots), (Side.SELL, ask, ask_lots)):
            if price <= 0 or lots <= 0:
                continue
            current = self.quotes[side]
            if current is not None and current[1:] == (price, lots):
                continue
            if current is None:
                outcome = await self.client.new_order(self.instrument_id, side, price, lots, timeout_s=10)
                if outcome.accepted:
                    self.quotes[side] = (outcome.event.client_id, price, lots)
            else:
                outcome = await self.client.replace(current[0], price, lots, timeout_s=10)
                self.quotes[side] = (current[0], price, lots) if outcome.accepted else None
            self.summary.quotes_sent += 1

    def on_event(self, event) -> bool:
        """Our fills and ends of our quotes; True when a quote must be made again."""
        if event.kind == EventKind.FILL:
            self.summary.fills += 1
            if event.side == Side.BUY:
                self.summary.lots_bought += event.quantity
            else:
                self.summary.lots_sold += event.quantity
            if event.leaves == 0:
                self._forget(event.client_id)
            return True
        if event.kind == EventKind.CANCELED:
            self._forget(event.client_id)
            return True
        return False

    def _forget(self, client_id: int) -> None:
        for side, quote in self.quotes.items():
            if quote is not None and quote[0] == client_id:
                self.quotes[side] = None

    async def run(self, seconds: float) -> MakerSummary:
        await self.start()
        deadline = time.monotonic() + seconds
        last_balances = time.monotonic()
        await self.requote()
        while time.monotonic() < deadline:
            filled = False
            try:
                await self.client.next_book_update(timeout_s=0.05)
            except asyncio.TimeoutError:
                pass
            while (event := self.client.poll_event()) is not None:  # our own fills and cancels
                filled |= self.on_event(event)
            if filled or time.monotonic() - last_balances > self.balance_every_s:
                await self.refresh_balances()
                last_balances = time.monotonic()
            await self.requote()
        await self.client.mass_cancel(self.instrument_id, timeout_s=10)
        await self.refresh_balances()
        return self.summary


async def main(argv: list[str] | None = None) -> MakerSummary:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--account", type=int, required=True)
    parser.add_argument("--key-id", type=int, required=True)
    parser.add_argument("--key-file", required=True, help="the account's private key (PEM)")
    parser.add_argument("--instrument", type=int, default=0)
    parser.add_argument("--spread-ticks", type=int, default=2)
    parser.add_argument("--size-lots", type=int, default=5)
    parser.add_argument("--reference-price", type=int, default=100, help="ticks: the mid while the book has none")
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    with open(args.key_file, "rb") as file:
        key = load_private_key(file.read())
    async with Client(args.host, args.port, account_id=args.account, key_id=args.key_id, private_key=key) as client:
        maker = MarketMaker(client, args.instrument, spread_ticks=args.spread_ticks, size_lots=args.size_lots,
                            reference_price=args.reference_price)
        summary = await maker.run(args.seconds)
    print(f"quotes sent {summary.quotes_sent}, fills {summary.fills} (bought {summary.lots_bought}, "
          f"sold {summary.lots_sold} lots), balance queries {summary.balance_queries}, balances {summary.balances}")
    return summary


if __name__ == "__main__":
    asyncio.run(main())
