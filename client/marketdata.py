"""Typed results of the client's queries and market data: a local L2 book kept from the feed.

``Book`` is one instrument's book as the feed describes it: an MD_SNAPSHOT (at an md_seq) and
then every MD_LEVEL / MD_BBO / MD_STATUS / MD_TRADE after it, each numbered md_seq + 1. A
message whose md_seq is not the next one is a gap: ``apply`` returns False and the client asks
for a fresh snapshot by itself. Quantities are the lots shown (an iceberg's peak only).
"""
from __future__ import annotations

import dataclasses

from matchcore import protocol as p
from matchcore.core.codes import CommandKind, InstrumentState, OrderType, RejectReason, Side, TimeInForce

__all__ = ["Balance", "OpenOrder", "Instrument", "TransferOutcome", "Trade", "Book", "Level"]


@dataclasses.dataclass(frozen=True, slots=True)
class Balance:
    """One asset of the session's account, as of journal seq ``as_of_seq``."""

    asset_id: int
    available: int   # minor units free to hold or withdraw
    held: int        # minor units reserved by open orders
    as_of_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class OpenOrder:
    order_id: int
    client_order_id: int
    instrument_id: int
    side: Side
    order_type: OrderType
    time_in_force: TimeInForce
    price: int               # ticks
    open_quantity: int       # lots
    shown_quantity: int      # lots on the book (an iceberg's peak; 0: an untriggered stop)
    trigger_price: int
    expire_time_ns: int
    display_quantity: int
    as_of_seq: int

    @classmethod
    def of(cls, m: p.OpenOrder, as_of_seq: int) -> "OpenOrder":
        return cls(m.order_id, m.client_order_id, m.instrument_id, Side(m.side), OrderType(m.order_type),
                   TimeInForce(m.time_in_force), m.price, m.open_quantity, m.shown_quantity, m.trigger_price,
                   m.expire_time_ns, m.display_quantity, as_of_seq)


@dataclasses.dataclass(frozen=True, slots=True)
class Instrument:
    instrument_id: int
    base_asset_id: int
    quote_asset_id: int
    tick_size: int
    lot_size: int
    max_order_lots: int
    band_min: int
    band_max: int
    maker_bps: int
    taker_bps: int
    state: InstrumentState
    last_price: int
    as_of_seq: int

    @classmethod
    def of(cls, m: p.InstrumentInfo, as_of_seq: int) -> "Instrument":
        return cls(m.instrument_id, m.base_asset_id, m.quote_asset_id, m.tick_size, m.lot_size, m.max_order_lots,
                   m.band_min, m.band_max, m.maker_bps, m.taker_bps, InstrumentState(m.state), m.last_price,
                   as_of_seq)


@dataclasses.dataclass(frozen=True, slots=True)
class TransferOutcome:
    transfer_id: int
    account_id: int
    state: p.TransferState
    kind: CommandKind | None       # DEPOSIT or WITHDRAW (DONE, REJECTED)
    reason: RejectReason | None    # REJECTED
    asset_id: int
    amount: int
    as_of_seq: int

    @classmethod
    def of(cls, m: p.TransferStatus) -> "TransferOutcome":
        return cls(m.transfer_id, m.account_id, p.TransferState(m.state), CommandKind(m.kind) if m.kind else None,
                   RejectReason(m.reason) if m.reason else None, m.asset_id, m.amount, m.as_of_seq)


@dataclasses.dataclass(frozen=True, slots=True)
class Trade:
    instrument_id: int
    trade_id: int
    price: int
    quantity: int
    aggressor_side: Side
    command_seq: int
    timestamp_ns: int
    md_seq: int

    @classmethod
    def of(cls, m: p.MdTrade) -> "Trade":
        return cls(m.instrument_id, m.trade_id, m.price, m.quantity, Side(m.aggressor_side), m.command_seq,
                   m.timestamp_ns, m.md_seq)


@dataclasses.dataclass(frozen=True, slots=True)
class Level:
    price: int
    quantity: int
    order_count: int


class Book:
    """One instrument's L2 book kept from its feed (see the module docstring)."""

    __slots__ = ("instrument_id", "md_seq", "command_seq", "depth_levels", "bids", "asks", "state",
                 "band_min", "band_max", "maker_bps", "taker_bps", "last_price", "synced", "bbo")

    def __init__(self, instrument_id: int, depth_levels: int = 0) -> None:
        self.instrument_id = instrument_id
        self.depth_levels = depth_levels
        self.md_seq = 0
        self.command_seq = 0
        self.bids: dict[int, Level] = {}
        self.asks: dict[int, Level] = {}
        self.state = InstrumentState.TRADING
        self.band_min = self.band_max = self.maker_bps = self.taker_bps = self.last_price = 0
        #: False until a snapshot is applied, and after a gap until the next one
        self.synced = False
        self.bbo: tuple[int, int, int, int] = (0, 0, 0, 0)

    def load(self, snapshot: p.MdSnapshot, levels: list[p.MdLevel]) -> None:
        self.bids = {m.price: Level(m.price, m.quantity, m.order_count) for m in levels if m.side == Side.BUY}
        self.asks = {m.price: Level(m.price, m.quantity, m.order_count) for m in levels if m.side == Side.SELL}
        self.md_seq, self.command_seq = snapshot.md_seq, snapshot.command_seq
        self.state = InstrumentState(snapshot.state)
        self.band_min, self.band_max = snapshot.band_min, snapshot.band_max
        self.maker_bps, self.taker_bps, self.last_price = snapshot.maker_bps, snapshot.taker_bps, snapshot.last_price
        self.depth_levels = snapshot.depth_levels
        self.synced = True

    def apply(self, message: p.Message) -> bool:
        """Apply one increment; False on a gap (the book is then not synced)."""
        if not self.synced or message.md_seq <= self.md_seq:
            return True  # before the snapshot it waits for, or already in it
        if message.md_seq != self.md_seq + 1:
            self.synced = False
            return False
        self.md_seq, self.command_seq = message.md_seq, message.command_seq
        if isinstance(message, p.MdLevel):
            side = self.bids if message.side == Side.BUY else self.asks
            if message.quantity == 0:
                side.pop(message.price, None)
            else:
                side[message.price] = Level(message.price, message.quantity, message.order_count)
        elif isinstance(message, p.MdBbo):
            self.bbo = (message.bid_price, message.bid_quantity, message.ask_price, message.ask_quantity)
        elif isinstance(message, p.MdStatus):
            self.state = InstrumentState(message.state)
            self.band_min, self.band_max = message.band_min, message.band_max
            self.maker_bps, self.taker_bps = message.maker_bps, message.taker_bps
        elif isinstance(message, p.MdTrade):
            self.last_price = message.price
        return True

    def best_bid(self) -> Level | None:
        return self.bids[max(self.bids)] if self.bids else None

    def best_ask(self) -> Level | None:
        return self.asks[min(self.asks)] if self.asks else None

    def mid(self) -> float | None:
        """The mid price in ticks (a float only for display and quoting decisions)."""
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid.price + ask.price) / 2

    def depth(self, side: Side, levels: int = 10) -> list[Level]:
        """Best first."""
        book = self.bids if side == Side.BUY else self.asks
        return [book[price] for price in sorted(book, reverse=side == Side.BUY)[:levels]]
