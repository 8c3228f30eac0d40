"""A seeded deep-book workload: one instrument, one account per order, long FIFOs.

The book starts with ``LEVELS_PER_SIDE`` price levels a side, ``ORDERS_PER_LEVEL`` resting
orders each (set-up, not measured). The measured commands are 60% passive limit adds, 10%
aggressive IOC orders that cross, 30% cancels of a live order picked uniformly (so most
cancels take an order out of the middle of a long FIFO). Every order, passive or aggressive,
has an account of its own, funded in set-up for what its order holds, so no two orders share
an account or a balance line: every new order touches cold account and balance memory.

The generator keeps a small model of the book (FIFOs of account ids and open lots), so each
cancel names an order that is still live and each aggressive order's size is what it takes
to fill a few makers (the last one partly): the book stays near its starting depth for any
run length. A passive add joins the shallowest level of its side (the nearest to the mid
on a tie), which refills the levels the aggressive orders eat.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from matchcore.core import commands as c
from matchcore.core.codes import CommandKind, OrderType, Side, StpMode, TimeInForce
from matchcore.core.config import EngineConfig
from matchcore.core.records import COMMAND_DTYPE
from matchcore.bench.workload import Workload

__all__ = ["deep_workload", "LEVELS_PER_SIDE", "ORDERS_PER_LEVEL"]

BASE_ASSET = 1
QUOTE_ASSET = 0
INSTRUMENT = 0
MID_PRICE_TICKS = 100_000
LEVELS_PER_SIDE = 10
ORDERS_PER_LEVEL = 490
PASSIVE_SHARE = 0.60
AGGRESSIVE_SHARE = 0.10      # the rest (30%) are cancels
QUANTITY_LOTS_MAX = 20       # passive adds: 1..20 lots
MAKERS_PER_TAKER = 3         # an aggressive order fills about this many makers
#: funds of each account: a buyer's quote covers any order of the run, a seller's base too
QUOTE_FUNDS = 10**12
BASE_FUNDS = 10**7


class _Book:
    """The generator's model of the book: per side and level, a FIFO of account ids. A
    cancel only forgets its order (a FIFO skips and drops forgotten ids when it reaches
    them), so it costs O(1) however long the FIFO."""

    def __init__(self):
        self.levels = {side: [deque() for _ in range(LEVELS_PER_SIDE)] for side in (Side.BUY, Side.SELL)}
        self.depth = {side: [0] * LEVELS_PER_SIDE for side in (Side.BUY, Side.SELL)}
        self.leaves: dict[int, int] = {}
        self.where: dict[int, tuple[int, int]] = {}   # account -> (side, level)
        self.live: list[int] = []                     # accounts of live orders, any order
        self.slot: dict[int, int] = {}                # account -> its place in live

    def add(self, account: int, side: int, level: int, quantity: int) -> None:
        self.levels[side][level].append(account)
        self.depth[side][level] += 1
        self.leaves[account] = quantity
        self.where[account] = (side, level)
        self.slot[account] = len(self.live)
        self.live.append(account)

    def shallowest(self, side: int) -> int:
        depth = self.depth[side]
        return depth.index(min(depth))

    def forget(self, account: int) -> None:
        slot = self.slot.pop(account)
        last = self.live.pop()
        if last != account:
            self.live[slot] = last
            self.slot[last] = slot
        del self.leaves[account]
        side, level = self.where.pop(account)
        self.depth[side][level] -= 1

    def taker_quantity(self, side: int, makers: int, partial: float) -> int:
        """Lots that fill ``makers`` makers of the opposite side, the last one partly."""
        opposite = Side.SELL if side == Side.BUY else Side.BUY
        total, last = 0, 0
        leaves = self.leaves
        for fifo in self.levels[opposite]:
            for account in fifo:
                if account not in leaves:
                    continue
                last = leaves[account]
                total += last
                makers -= 1
                if makers == 0:
                    return total - int(partial * last)
        return max(1, total)

    def take(self, side: int, quantity: int) -> None:
        opposite = Side.SELL if side == Side.BUY else Side.BUY
        leaves = self.leaves
        for fifo in self.levels[opposite]:
            while fifo and quantity > 0:
                account = fifo[0]
                if account not in leaves:
                    fifo.popleft()
                    continue
                traded = min(quantity, leaves[account])
                quantity -= traded
                leaves[account] -= traded
                if leaves[account] == 0:
                    fifo.popleft()
                    self.forget(account)
            if quantity == 0:
                return


def _price(side: int, level: int) -> int:
    return MID_PRICE_TICKS - 1 - level if side == Side.BUY else MID_PRICE_TICKS + 1 + level


def _order(record, account: int, side: int, price: int, quantity: int, tif: int) -> None:
    record["kind"] = CommandKind.NEW_ORDER
    record["account_id"] = account
    record["instrument_id"] = INSTRUMENT
    record["client_id"] = 1
    record["side"] = side
    record["order_type"] = OrderType.LIMIT
    record["time_in_force"] = tif
    record["stp_mode"] = StpMode.CANCEL_TAKER
    record["price"] = price
    record["quantity"] = quantity


def _set_up(sides: np.ndarray) -> np.ndarray:
    """Assets, the instrument, then each account (1..len(sides)) added and funded for its side."""
    head = c.pack([c.add_asset(QUOTE_ASSET), c.add_asset(BASE_ASSET),
                   c.add_instrument(INSTRUMENT, BASE_ASSET, QUOTE_ASSET, tick_size=1, lot_size=1,
                                    max_order_lots=1_000_000),
                   c.set_fees(INSTRUMENT, 1, 5)])
    accounts = np.arange(1, len(sides) + 1)
    body = np.zeros(2 * len(sides), dtype=COMMAND_DTYPE)
    body["kind"][0::2] = CommandKind.ADD_ACCOUNT
    body["account_id"][0::2] = accounts
    deposits = body[1::2]
    deposits["kind"] = CommandKind.DEPOSIT
    deposits["account_id"] = accounts
    buyer = sides == Side.BUY
    deposits["asset_id"] = np.where(buyer, QUOTE_ASSET, BASE_ASSET)
    deposits["quantity"] = np.where(buyer, QUOTE_FUNDS, BASE_FUNDS)
    deposits["client_id"] = 1
    return np.concatenate([head, body])


def deep_workload(commands: int, seed: int = 1) -> Workload:
    """``commands`` measured commands on a deep book (set-up: accounts, funds, the book)."""
    rng = np.random.default_rng(seed)
    prefill = 2 * LEVELS_PER_SIDE * ORDERS_PER_LEVEL
    draws = {"roll": rng.random(commands), "side": rng.integers(1, 3, commands + prefill),
             "quantity": rng.integers(1, QUANTITY_LOTS_MAX + 1, commands + prefill),
             "pick": rng.random(commands)}
    book = _Book()
    sides = np.zeros(prefill + commands, dtype=np.uint8)   # by account - 1
    book_orders = np.zeros(prefill, dtype=COMMAND_DTYPE)
    for index in range(prefill):
        side = Side.BUY if index % 2 == 0 else Side.SELL
        level = (index // 2) % LEVELS_PER_SIDE
        quantity = int(draws["quantity"][index])
        sides[index] = side
        book.add(index + 1, side, level, quantity)
        _order(book_orders[index], index + 1, side, _price(side, level), quantity, TimeInForce.GTC)
    columns, accounts = _measured(book, draws, prefill, sides)
    setup = np.concatenate([_set_up(sides[:accounts]), book_orders])
    config = EngineConfig(max_accounts=accounts + 1, max_assets=2, max_instruments=1,
                          max_orders=max(4 * prefill, 1024), max_price_levels=4 * LEVELS_PER_SIDE)
    return Workload(config, setup, _records(columns, sides), seed)


def _measured(book: _Book, draws: dict, prefill: int, sides: np.ndarray) -> tuple[dict, int]:
    """The measured commands as columns (kind, account, price, quantity, tif), generated
    against the model; also how many accounts the run uses. ``sides`` gets each new one's."""
    columns = {name: [] for name in ("kind", "account", "price", "quantity", "tif")}
    kinds, accounts, prices = columns["kind"], columns["account"], columns["price"]
    sizes, tifs = columns["quantity"], columns["tif"]
    account = prefill
    live = book.live
    for index, r in enumerate(draws["roll"]):
        if r >= PASSIVE_SHARE + AGGRESSIVE_SHARE and live:
            victim = live[int(draws["pick"][index] * len(live))]
            book.forget(victim)
            kinds.append(CommandKind.CANCEL)
            accounts.append(victim)
            prices.append(0)
            sizes.append(0)
            tifs.append(0)
            continue
        account += 1
        side = int(draws["side"][prefill + index])
        sides[account - 1] = side
        kinds.append(CommandKind.NEW_ORDER)
        accounts.append(account)
        if r < PASSIVE_SHARE or not live:
            level = book.shallowest(side)
            quantity = int(draws["quantity"][prefill + index])
            book.add(account, side, level, quantity)
            prices.append(_price(side, level))
            sizes.append(quantity)
            tifs.append(TimeInForce.GTC)
            continue
        # more makers per taker while the book is above its starting size, fewer below
        makers = min(12, max(1, MAKERS_PER_TAKER + (len(live) - prefill) // 50))
        quantity = book.taker_quantity(side, makers, float(draws["pick"][index]))
        book.take(side, quantity)
        prices.append(_price(Side.SELL if side == Side.BUY else Side.BUY, LEVELS_PER_SIDE - 1))
        sizes.append(quantity)
        tifs.append(TimeInForce.IOC)
    return columns, account


def _records(columns: dict, sides: np.ndarray) -> np.ndarray:
    """COMMAND_DTYPE records from the generator's columns."""
    kind = np.array(columns["kind"], dtype=np.uint8)
    account = np.array(columns["account"], dtype=np.uint32)
    out = np.zeros(len(kind), dtype=COMMAND_DTYPE)
    out["kind"] = kind
    out["account_id"] = account
    out["client_id"] = 1
    out["instrument_id"] = INSTRUMENT
    orders = kind == CommandKind.NEW_ORDER
    out["side"][orders] = sides[account[orders] - 1]
    out["order_type"][orders] = OrderType.LIMIT
    out["time_in_force"][orders] = np.array(columns["tif"], dtype=np.uint8)[orders]
    out["stp_mode"][orders] = StpMode.CANCEL_TAKER
    out["price"] = np.array(columns["price"], dtype=np.int64)
    out["quantity"] = np.array(columns["quantity"], dtype=np.int64)
    return out
