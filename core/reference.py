"""ReferenceEngine: the plain, readable pure-Python model of the matchcore engine.

This module is the specification. The Cython ``Engine`` must give the same events, the
same state hash and the same snapshot bytes for every command stream; property tests
check that on random streams. Clarity wins over speed here: no clever data structures.

Units: prices in ticks (quote minor units per lot), quantities in lots, amounts in minor
units. Every product is checked against the int64 range.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from matchcore.core.codes import (
    ALL_INSTRUMENTS,
    BPS_DENOMINATOR,
    BookChangeKind,
    CancelReason,
    CommandKind,
    EventKind,
    Flags,
    InstrumentState,
    OrderType,
    RejectReason,
    Side,
    StpMode,
    TimeInForce,
)
from matchcore.core.config import EngineConfig
from matchcore.core.records import BOOK_CHANGE_DTYPE, COMMAND_DTYPE, EVENT_DTYPE
from matchcore.core.snapshot_format import SnapshotWriter, SnapshotReader, check_fits, hash_words

__all__ = ["ReferenceEngine"]

INT64_MAX = (1 << 63) - 1
_NEVER = 1 << 63  # after every int64 time stamp
#: admin commands whose COMMAND_DONE changes an instrument's public status
_STATUS_COMMANDS = frozenset(int(k) for k in (
    CommandKind.ADD_INSTRUMENT, CommandKind.SET_PRICE_BAND, CommandKind.SET_FEES,
    CommandKind.HALT_INSTRUMENT, CommandKind.RESUME_INSTRUMENT, CommandKind.PAUSE_INSTRUMENT))
DISPLAY_MAX = (1 << 31) - 1  # lots: an iceberg's largest peak
#: Snapshot words are read as int64; the uint64 fields (client order ids, transfer ids) are
#: masked back to their unsigned value on restore.
UINT64_MASK = (1 << 64) - 1
DECIMALS_MAX = 18


class _Overflow(Exception):
    """An amount left the int64 range (internal; becomes AMOUNT_OVERFLOW)."""


def _checked(value: int) -> int:
    if value > INT64_MAX or value < -INT64_MAX - 1:
        raise _Overflow
    return value


def fee_of(notional: int, bps: int) -> int:
    """Fee in quote minor units: floor(notional * bps / 10_000)."""
    return notional * bps // BPS_DENOMINATOR


@dataclass
class Order:
    order_id: int
    account_id: int
    instrument_id: int
    client_id: int
    side: int
    price: int
    leaves: int
    hold: int
    fee_cap_bps: int
    stp_mode: int
    flags: int
    order_type: int = OrderType.LIMIT
    expire_time_ns: int = 0  # GTD: the expiry, ns since the epoch; 0: none
    trigger_price: int = 0   # an untriggered stop order's trigger price; 0 otherwise
    display_quantity: int = 0  # an iceberg's peak (lots shown at a time); 0: not an iceberg
    visible: int = 0         # a resting iceberg's lots shown now; 0 otherwise
    time_in_force: int = TimeInForce.GTC


@dataclass
class Level:
    price: int
    orders: deque = field(default_factory=deque)


@dataclass
class Instrument:
    base_asset: int
    quote_asset: int
    tick_size: int
    lot_size: int
    max_order_lots: int
    band_min: int
    band_max: int
    maker_bps: int = 0
    taker_bps: int = 0
    state: int = InstrumentState.TRADING
    last_price: int = 0  # the last trade's price (ticks); 0 before the first trade
    # untriggered stop orders, ascending order id
    stops: list = field(default_factory=list)
    # best level first on both sides
    bids: list = field(default_factory=list)
    asks: list = field(default_factory=list)


@dataclass
class Transfer:
    """An account's last transfer and its outcome."""

    transfer_id: int
    kind: int
    asset_id: int
    amount: int
    event_kind: int
    reason: int


class ReferenceStepper:
    """``Engine.stepper``'s contract, written plainly: ``step(index)`` is ``apply`` of the
    one-record array ``commands[index:index + 1]``, its events copied to ``events[:n]``
    (``events`` replaced by a bigger array first when they do not fit); returns ``n``."""

    __slots__ = ("engine", "commands", "events")

    def __init__(self, engine: "ReferenceEngine", commands: np.ndarray,
                 events: np.ndarray | None = None):
        if commands.dtype != COMMAND_DTYPE or commands.ndim != 1:
            raise TypeError("commands must be a one-dimensional array of COMMAND_DTYPE")
        if not commands.flags.c_contiguous:
            raise TypeError("commands must be C-contiguous (the stepper reads it in place)")
        if events is None:
            events = np.zeros(STEPPER_EVENTS_DEFAULT, dtype=EVENT_DTYPE)
        if events.dtype != EVENT_DTYPE or events.ndim != 1 or len(events) == 0:
            raise TypeError("events must be a non-empty one-dimensional array of EVENT_DTYPE")
        if not (events.flags.c_contiguous and events.flags.writeable):
            raise TypeError("events must be C-contiguous and writeable")
        self.engine = engine
        self.commands = commands
        self.events = events

    def step(self, index: int = 0) -> int:
        """Apply ``commands[index]``; return how many events it produced (in ``events[:n]``)."""
        if not 0 <= index < len(self.commands):
            raise IndexError(f"command index {index} is outside [0, {len(self.commands)})")
        produced = self.engine.apply(self.commands[index:index + 1])
        count = len(produced)
        if count > len(self.events):
            self.events = np.zeros(max(count, 2 * len(self.events)), dtype=EVENT_DTYPE)
        self.events[:count] = produced
        return count


#: events array length of a stepper made without one (Engine's is the same)
STEPPER_EVENTS_DEFAULT = 64


class ReferenceEngine:
    """Applies command records and returns event records, exactly like ``Engine``."""

    def __init__(self, config: EngineConfig | None = None):
        self.config = (config or EngineConfig()).validate()
        self.next_order_id = 1
        self.next_trade_id = 1
        self.assets: dict[int, int] = {}  # asset id -> decimals
        self.deposited: dict[int, int] = {}
        self.withdrawn: dict[int, int] = {}
        self.accounts: dict[int, int] = {}  # account id -> last accepted client order id
        self.balances: dict[tuple[int, int], list[int]] = {}  # (account, asset) -> [available, held]
        self.instruments: dict[int, Instrument] = {}
        self.orders: dict[tuple[int, int], Order] = {}  # live orders by (account, client id)
        self.transfers: dict[int, Transfer] = {}  # account id -> its last transfer
        self._events: list[tuple] = []
        #: no GTD order expires before this (a lower bound, to skip the scan): not state
        self._expiry_bound = _NEVER
        self._add_account(self.config.fee_account_id)
        #: book changes (enable_book_changes): None when off, else the records not taken yet
        self._book_changes: list[tuple] | None = None

    # ------------------------------------------------------------------ public API

    def apply(self, commands: np.ndarray) -> np.ndarray:
        """Apply command records in order; return the events they produced."""
        if commands.dtype != COMMAND_DTYPE:
            raise TypeError("commands must be an array of COMMAND_DTYPE")
        self._events = []
        for record in commands:
            cmd = _Cmd(record)
            if self._book_changes is None:
                self._apply_one(cmd)
            else:
                before = self._public_books()
                self._apply_one(cmd)
                self._record_book_changes(cmd, before)
        events = np.zeros(len(self._events), dtype=EVENT_DTYPE)
        for index, values in enumerate(self._events):
            events[index] = values
        self._events = []
        return events

    def stepper(self, commands: np.ndarray, events: np.ndarray | None = None) -> "ReferenceStepper":
        """The per-command path (``Engine.stepper``): ``step(index)`` applies one command of
        a caller-owned array and writes its events to the front of ``events``."""
        return ReferenceStepper(self, commands, events)

    def balance(self, account_id: int, asset_id: int) -> tuple[int, int]:
        """(available, held) of one account in one asset, in minor units."""
        available, held = self.balances.get((account_id, asset_id), (0, 0))
        return available, held

    def balances_array(self) -> np.ndarray:
        """int64 array [max_accounts, max_assets, 2] of (available, held)."""
        out = np.zeros((self.config.max_accounts, self.config.max_assets, 2), dtype=np.int64)
        for (account_id, asset_id), (available, held) in self.balances.items():
            out[account_id, asset_id] = (available, held)
        return out

    def order(self, account_id: int, client_id: int) -> dict | None:
        """State of a live order, or None when it is not open."""
        order = self.orders.get((account_id, client_id))
        if order is None:
            return None
        return {
            "order_id": order.order_id,
            "instrument_id": order.instrument_id,
            "side": order.side,
            "price": order.price,
            "leaves": order.leaves,
            "hold": order.hold,
        }

    def depth(self, instrument_id: int, side: int, levels_max: int = 10) -> np.ndarray:
        """Book depth best first: int64 array [n, 3] of (price, quantity, order count)."""
        instrument = self.instruments.get(instrument_id)
        if instrument is None:
            return np.zeros((0, 3), dtype=np.int64)
        book = instrument.bids if side == Side.BUY else instrument.asks
        rows = [(lv.price, sum(o.visible if o.display_quantity else o.leaves for o in lv.orders),
                 len(lv.orders)) for lv in book[:levels_max]]
        return np.array(rows, dtype=np.int64).reshape(-1, 3)

    def live_order_count(self) -> int:
        return len(self.orders)

    def enable_book_changes(self) -> None:
        """Record, after each command from now on, the changes of the public books it made
        (BOOK_CHANGE_DTYPE), for ``take_book_changes``. The reference finds them by comparing
        every book before and after each command."""
        if self._book_changes is None:
            self._book_changes = []

    def take_book_changes(self) -> np.ndarray:
        """The book changes recorded since the last call, in command order (then dropped)."""
        rows = self._book_changes or []
        out = np.zeros(len(rows), dtype=BOOK_CHANGE_DTYPE)
        for index, values in enumerate(rows):
            out[index] = values
        if self._book_changes is not None:
            self._book_changes = []
        return out

    def instrument_ids(self) -> list[int]:
        return sorted(self.instruments)

    def instrument(self, instrument_id: int) -> dict | None:
        i = self.instruments.get(instrument_id)
        if i is None:
            return None
        return {"instrument_id": instrument_id, "base_asset_id": i.base_asset,
                "quote_asset_id": i.quote_asset, "tick_size": i.tick_size, "lot_size": i.lot_size,
                "max_order_lots": i.max_order_lots, "band_min": i.band_min, "band_max": i.band_max,
                "maker_bps": i.maker_bps, "taker_bps": i.taker_bps, "state": int(i.state),
                "last_price": i.last_price}

    def open_orders(self, account_id: int, after_order_id: int = 0, limit: int = 100) -> list[dict]:
        mine = sorted((o for (a, _), o in self.orders.items() if a == account_id and o.order_id > after_order_id),
                      key=lambda o: o.order_id)
        out = []
        for o in mine[:max(0, limit)]:
            stop = o.order_type in (OrderType.STOP_MARKET, OrderType.STOP_LIMIT) and o.trigger_price != 0
            shown = 0 if stop else (o.visible if o.display_quantity else o.leaves)
            out.append({"order_id": o.order_id, "client_id": o.client_id, "instrument_id": o.instrument_id,
                        "side": o.side, "order_type": int(o.order_type), "time_in_force": int(o.time_in_force),
                        "price": o.price, "leaves": o.leaves, "shown": shown,
                        "display_quantity": o.display_quantity, "trigger_price": o.trigger_price if stop else 0,
                        "expire_time_ns": o.expire_time_ns, "hold": o.hold})
        return out

    def last_transfer(self, account_id: int) -> dict | None:
        t = self.transfers.get(account_id)
        if t is None:
            return None
        return {"transfer_id": t.transfer_id, "kind": int(t.kind), "asset_id": t.asset_id,
                "amount": t.amount, "event_kind": int(t.event_kind), "reason": int(t.reason)}

    def _public_books(self) -> dict:
        """instrument id -> (bids, asks), each {price: (shown lots, order count)}."""
        return {instrument_id: tuple({lv.price: (sum(o.visible if o.display_quantity else o.leaves
                                                     for o in lv.orders), len(lv.orders))
                                      for lv in book} for book in (i.bids, i.asks))
                for instrument_id, i in self.instruments.items()}

    def _record_book_changes(self, cmd, before: dict) -> None:
        after = self._public_books()
        out = self._book_changes
        for instrument_id in sorted(after):
            old_sides = before.get(instrument_id, ({}, {}))
            changed = False
            for side_index, (old, new) in enumerate(zip(old_sides, after[instrument_id])):
                best_first = sorted(set(old) | set(new), reverse=side_index == 0)
                for price in best_first:
                    quantity, count = new.get(price, (0, 0))
                    if (quantity, count) != old.get(price, (0, 0)):
                        out.append((cmd.seq, cmd.timestamp_ns, BookChangeKind.LEVEL, side_index + 1, 0, 0,
                                    instrument_id, count, 0, price, quantity, 0, 0))
                        changed = True
            if changed:
                instrument = self.instruments[instrument_id]
                bid = instrument.bids[0] if instrument.bids else None
                ask = instrument.asks[0] if instrument.asks else None
                shown = lambda lv: sum(o.visible if o.display_quantity else o.leaves for o in lv.orders)
                out.append((cmd.seq, cmd.timestamp_ns, BookChangeKind.TOP, 0, 0, 0, instrument_id, 0, 0,
                            bid.price if bid else 0, shown(bid) if bid else 0,
                            ask.price if ask else 0, shown(ask) if ask else 0))
        if (cmd.kind in _STATUS_COMMANDS and self._events
                and self._events[-1][2] == EventKind.COMMAND_DONE and self._events[-1][0] == cmd.seq):
            i = self.instruments[cmd.instrument_id]
            out.append((cmd.seq, cmd.timestamp_ns, BookChangeKind.STATUS, 0, int(i.state), 0,
                        cmd.instrument_id, 0, 0, i.band_min, i.band_max, i.maker_bps, i.taker_bps))

    def totals(self, asset_id: int) -> tuple[int, int]:
        """(deposited, withdrawn) in minor units over the engine's life."""
        return self.deposited.get(asset_id, 0), self.withdrawn.get(asset_id, 0)

    def state_hash(self) -> int:
        return hash_words(self._state_words())

    def snapshot(self) -> bytes:
        return self._state_words().to_bytes()

    @classmethod
    def restore(cls, data: bytes, *, config: EngineConfig | None = None) -> "ReferenceEngine":
        """An engine in the state of a snapshot, in its header's config or in ``config``
        (a resize: SnapshotError when the state does not fit, snapshot_format.check_fits)."""
        if config is not None:
            check_fits(data, config.validate())
        return _restore(cls, SnapshotReader(data), config)

    # ------------------------------------------------------------------ dispatch

    def _apply_one(self, cmd: "_Cmd") -> None:
        self._expire_due(cmd)
        handler = _HANDLERS.get(cmd.kind)
        if handler is None:
            self._reject(cmd, RejectReason.UNKNOWN_COMMAND)
            return
        handler(self, cmd)

    def _expire_due(self, cmd) -> None:
        """GTD orders whose expiry is at or before the command's stamp are canceled, reason
        EXPIRED, before the command: earliest expiry first, then ascending order id."""
        if cmd.timestamp_ns < self._expiry_bound:  # nothing can be due (a lower bound)
            return
        due = [o for o in self.orders.values() if 0 < o.expire_time_ns <= cmd.timestamp_ns]
        for order in sorted(due, key=lambda o: (o.expire_time_ns, o.order_id)):
            self._cancel_order(cmd, order, CancelReason.EXPIRED)
        self._expiry_bound = min((o.expire_time_ns for o in self.orders.values() if o.expire_time_ns),
                                 default=_NEVER)

    def _cmd_clock(self, cmd):
        self._done(cmd)

    # ------------------------------------------------------------------ events

    def _emit(self, cmd, kind, *, side=0, reason=0, instrument_id=0, account_id=0,
              counter_account_id=0, order_id=0, client_id=0, counter_order_id=0,
              trade_id=0, price=0, quantity=0, fee=0, counter_fee=0, counter_client_id=0,
              leaves=0, counter_leaves=0):
        self._events.append((cmd.seq, cmd.timestamp_ns, int(kind), side, int(reason), instrument_id,
                             account_id, counter_account_id, order_id, client_id, counter_order_id,
                             trade_id, price, quantity, fee, counter_fee, counter_client_id,
                             leaves, counter_leaves, 0))

    def _reject(self, cmd, reason):
        self._emit(cmd, EventKind.REJECTED, side=cmd.side, reason=reason,
                   instrument_id=cmd.instrument_id, account_id=cmd.account_id,
                   client_id=cmd.client_id, price=cmd.price, quantity=cmd.quantity)

    def _done(self, cmd, *, instrument_id=None, quantity=None):
        self._emit(cmd, EventKind.COMMAND_DONE,
                   instrument_id=cmd.instrument_id if instrument_id is None else instrument_id,
                   account_id=cmd.account_id, client_id=cmd.client_id, price=cmd.price,
                   quantity=cmd.quantity if quantity is None else quantity)

    def _emit_canceled(self, cmd, order: Order, reason):
        self._emit(cmd, EventKind.CANCELED, side=order.side, reason=reason,
                   instrument_id=order.instrument_id, account_id=order.account_id,
                   order_id=order.order_id, client_id=order.client_id, price=order.price,
                   quantity=order.leaves)

    # ------------------------------------------------------------------ reference data

    def _add_account(self, account_id):
        self.accounts[account_id] = 0

    def _cmd_add_asset(self, cmd):
        decimals = cmd.quantity
        if not 0 <= decimals <= DECIMALS_MAX:
            return self._reject(cmd, RejectReason.INVALID_QUANTITY)
        if cmd.asset_id in self.assets:
            return self._reject(cmd, RejectReason.ASSET_EXISTS)
        if cmd.asset_id >= self.config.max_assets:
            return self._reject(cmd, RejectReason.ASSET_CAPACITY)
        self.assets[cmd.asset_id] = decimals
        self.deposited[cmd.asset_id] = 0
        self.withdrawn[cmd.asset_id] = 0
        self._done(cmd, instrument_id=cmd.asset_id)

    def _cmd_add_account(self, cmd):
        if cmd.account_id in self.accounts:
            return self._reject(cmd, RejectReason.ACCOUNT_EXISTS)
        if cmd.account_id >= self.config.max_accounts:
            return self._reject(cmd, RejectReason.ACCOUNT_CAPACITY)
        self._add_account(cmd.account_id)
        self._done(cmd)

    def _cmd_add_instrument(self, cmd):
        tick_size, lot_size, max_order_lots = cmd.price, cmd.quantity, cmd.limit
        base_asset, quote_asset = cmd.asset_id, cmd.client_id
        if tick_size <= 0 or lot_size <= 0 or max_order_lots <= 0 or base_asset == quote_asset:
            return self._reject(cmd, RejectReason.INVALID_INSTRUMENT_SPEC)
        if base_asset not in self.assets or quote_asset not in self.assets:
            return self._reject(cmd, RejectReason.UNKNOWN_ASSET)
        if cmd.instrument_id in self.instruments:
            return self._reject(cmd, RejectReason.INSTRUMENT_EXISTS)
        if cmd.instrument_id >= self.config.max_instruments:
            return self._reject(cmd, RejectReason.INSTRUMENT_CAPACITY)
        self.instruments[cmd.instrument_id] = Instrument(
            base_asset=base_asset, quote_asset=quote_asset, tick_size=tick_size,
            lot_size=lot_size, max_order_lots=max_order_lots, band_min=tick_size,
            band_max=INT64_MAX)
        self._done(cmd)

    def _cmd_set_price_band(self, cmd):
        band_min, band_max = cmd.price, cmd.limit
        if band_min <= 0 or band_max < band_min:
            return self._reject(cmd, RejectReason.INVALID_PRICE_BAND)
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        instrument.band_min, instrument.band_max = band_min, band_max
        self._done(cmd)

    def _cmd_set_fees(self, cmd):
        maker_bps, taker_bps = cmd.price, cmd.quantity
        if not 0 <= maker_bps <= BPS_DENOMINATOR or not 0 <= taker_bps <= BPS_DENOMINATOR:
            return self._reject(cmd, RejectReason.INVALID_FEE)
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        instrument.maker_bps, instrument.taker_bps = maker_bps, taker_bps
        self._done(cmd)

    def _cmd_halt(self, cmd):
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        if instrument.state == InstrumentState.HALTED:
            return self._reject(cmd, RejectReason.INSTRUMENT_HALTED)
        canceled = 0
        for book in (instrument.bids, instrument.asks):
            for level in list(book):
                for order in list(level.orders):
                    self._cancel_order(cmd, order, CancelReason.HALT)
                    canceled += 1
        for order in list(instrument.stops):
            self._cancel_order(cmd, order, CancelReason.HALT)
            canceled += 1
        instrument.state = InstrumentState.HALTED
        self._done(cmd, quantity=canceled)

    def _cmd_pause(self, cmd):
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        if instrument.state != InstrumentState.TRADING:
            return self._reject(cmd, _NOT_TRADING[instrument.state])
        instrument.state = InstrumentState.PAUSED
        self._done(cmd)

    def _cmd_resume(self, cmd):
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        if instrument.state == InstrumentState.TRADING:
            return self._reject(cmd, RejectReason.INSTRUMENT_NOT_HALTED)
        instrument.state = InstrumentState.TRADING
        self._done(cmd)

    # ------------------------------------------------------------------ transfers

    def _cmd_transfer(self, cmd):
        amount = cmd.quantity
        if amount <= 0:
            return self._transfer_reject(cmd, RejectReason.INVALID_AMOUNT)
        if cmd.account_id not in self.accounts:
            return self._transfer_reject(cmd, RejectReason.UNKNOWN_ACCOUNT)
        if cmd.asset_id not in self.assets:
            return self._transfer_reject(cmd, RejectReason.UNKNOWN_ASSET)
        last = self.transfers.get(cmd.account_id)
        last_id = 0 if last is None else last.transfer_id
        if last is not None and cmd.client_id == last_id:
            if (last.kind, last.asset_id, last.amount) != (cmd.kind, cmd.asset_id, amount):
                return self._transfer_reject(cmd, RejectReason.TRANSFER_ID_REUSED)
            return self._transfer_event(cmd, last.event_kind, last.reason)
        if cmd.client_id <= last_id:
            return self._transfer_reject(cmd, RejectReason.DUPLICATE_TRANSFER_ID)
        reason = self._move_transfer(cmd, amount)
        event_kind = EventKind.TRANSFER_REJECTED if reason else EventKind.TRANSFER_DONE
        self.transfers[cmd.account_id] = Transfer(cmd.client_id, cmd.kind, cmd.asset_id, amount,
                                                  int(event_kind), int(reason))
        self._transfer_event(cmd, event_kind, reason)

    def _move_transfer(self, cmd, amount) -> int:
        balance = self.balances.setdefault((cmd.account_id, cmd.asset_id), [0, 0])
        if cmd.kind == CommandKind.DEPOSIT:
            if self.deposited[cmd.asset_id] + amount > INT64_MAX:
                return RejectReason.AMOUNT_OVERFLOW
            self.deposited[cmd.asset_id] += amount
            balance[0] += amount
            return 0
        if balance[0] < amount:
            return RejectReason.INSUFFICIENT_FUNDS
        self.withdrawn[cmd.asset_id] += amount
        balance[0] -= amount
        return 0

    def _transfer_reject(self, cmd, reason):
        self._transfer_event(cmd, EventKind.TRANSFER_REJECTED, reason)

    def _transfer_event(self, cmd, event_kind, reason):
        self._emit(cmd, event_kind, reason=reason, instrument_id=cmd.asset_id,
                   account_id=cmd.account_id, client_id=cmd.client_id, quantity=cmd.quantity)

    # ------------------------------------------------------------------ balances

    def _bal(self, account_id, asset_id) -> list[int]:
        return self.balances.setdefault((account_id, asset_id), [0, 0])

    def _hold_asset(self, instrument: Instrument, side: int) -> int:
        return instrument.quote_asset if side == Side.BUY else instrument.base_asset

    def _buy_hold_needed(self, price, leaves, fee_cap_bps) -> int:
        notional = _checked(price * leaves)
        return _checked(notional + fee_of(notional, fee_cap_bps))

    def _release_excess(self, order: Order, instrument: Instrument) -> None:
        """A resting buy holds exactly price * leaves plus its maximum fee; free the rest."""
        needed = self._buy_hold_needed(order.price, order.leaves, order.fee_cap_bps)
        self._release(order, instrument, order.hold - needed)

    def _release(self, order: Order, instrument: Instrument, amount: int) -> None:
        if amount == 0:
            return
        balance = self._bal(order.account_id, self._hold_asset(instrument, order.side))
        balance[1] -= amount
        balance[0] += amount
        order.hold -= amount

    # ------------------------------------------------------------------ new order

    def _validate_new_order(self, cmd) -> int:
        market = cmd.order_type in (OrderType.MARKET, OrderType.STOP_MARKET)
        stop = cmd.order_type in _STOPS
        if cmd.side not in (Side.BUY, Side.SELL):
            return RejectReason.INVALID_SIDE
        if cmd.order_type not in tuple(OrderType):
            return RejectReason.INVALID_ORDER_TYPE
        if cmd.time_in_force not in tuple(TimeInForce):
            return RejectReason.INVALID_TIME_IN_FORCE
        if market and cmd.time_in_force in _RESTING:
            return RejectReason.INVALID_TIME_IN_FORCE
        if cmd.stp_mode not in tuple(StpMode):
            return RejectReason.INVALID_STP_MODE
        if cmd.flags & ~Flags.POST_ONLY:
            return RejectReason.INVALID_FLAGS
        if cmd.quantity <= 0:
            return RejectReason.INVALID_QUANTITY
        if cmd.price < 0 or (not market and cmd.price == 0):
            return RejectReason.INVALID_PRICE
        if cmd.limit < 0 or (cmd.limit != 0 and not (cmd.order_type == OrderType.MARKET
                                                     and cmd.side == Side.BUY)):
            return RejectReason.INVALID_LIMIT
        if cmd.flags & Flags.POST_ONLY and (cmd.time_in_force not in _RESTING or stop):
            return RejectReason.POST_ONLY_NOT_ALLOWED
        if market and cmd.price == 0 and cmd.limit == 0:
            return RejectReason.MARKET_PROTECTION_REQUIRED
        gtd = cmd.time_in_force == TimeInForce.GTD
        if gtd != (cmd.expire_time_ns != 0) or (gtd and cmd.expire_time_ns <= cmd.timestamp_ns):
            return RejectReason.INVALID_EXPIRE_TIME
        if stop != (cmd.trigger_price != 0) or cmd.trigger_price < 0:
            return RejectReason.INVALID_TRIGGER_PRICE
        if not 0 <= cmd.display_quantity <= DISPLAY_MAX or (cmd.display_quantity and not (
                cmd.order_type == OrderType.LIMIT and cmd.time_in_force in _RESTING)):
            return RejectReason.INVALID_DISPLAY_QUANTITY
        if cmd.account_id not in self.accounts:
            return RejectReason.UNKNOWN_ACCOUNT
        instrument = self.instruments.get(cmd.instrument_id)
        if instrument is None:
            return RejectReason.UNKNOWN_INSTRUMENT
        if instrument.state != InstrumentState.TRADING:
            return _NOT_TRADING[instrument.state]
        if (cmd.price != 0 and cmd.price % instrument.tick_size != 0) or \
                cmd.trigger_price % instrument.tick_size != 0:
            return RejectReason.PRICE_OFF_TICK
        if cmd.price != 0 and not instrument.band_min <= cmd.price <= instrument.band_max:
            return RejectReason.PRICE_OUT_OF_BAND
        if cmd.quantity > instrument.max_order_lots:
            return RejectReason.QUANTITY_ABOVE_MAXIMUM
        if cmd.client_id <= self.accounts[cmd.account_id]:
            return RejectReason.DUPLICATE_CLIENT_ORDER_ID
        if cmd.flags & Flags.POST_ONLY and self._would_cross(instrument, cmd.side, cmd.price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        if stop and self._triggered(instrument, cmd.side, cmd.trigger_price):
            return RejectReason.STOP_WOULD_TRIGGER
        return 0

    @staticmethod
    def _triggered(instrument: Instrument, side: int, trigger_price: int) -> bool:
        """Has the last trade price reached a stop's trigger (none before the first trade)?"""
        if instrument.last_price == 0:
            return False
        return instrument.last_price >= trigger_price if side == Side.BUY else \
            instrument.last_price <= trigger_price

    def _limit_hold_needed(self, side, price, leaves, lot_size, fee_cap_bps) -> int:
        """What a resting limit order holds: a sell its base, a buy its quote with the
        maximum fee (may raise _Overflow, also when a sell's notional would: every order's
        price * size fits int64)."""
        if side == Side.SELL:
            if price > 0:
                _checked(price * leaves)
            return _checked(leaves * lot_size)
        return self._buy_hold_needed(price, leaves, fee_cap_bps)

    def _new_order_hold(self, cmd, instrument: Instrument, fee_cap_bps: int) -> int:
        """What the order must hold before it rests or matches (may raise _Overflow)."""
        if cmd.side == Side.SELL or cmd.order_type != OrderType.MARKET:
            return self._limit_hold_needed(cmd.side, cmd.price, cmd.quantity, instrument.lot_size,
                                           fee_cap_bps)
        caps = []
        if cmd.price > 0:
            caps.append(_checked(cmd.price * cmd.quantity))
        if cmd.limit > 0:
            caps.append(cmd.limit)
        notional_max = min(caps)
        return _checked(notional_max + fee_of(notional_max, fee_cap_bps))

    def _cmd_new_order(self, cmd):
        reason = self._validate_new_order(cmd)
        if reason:
            return self._reject(cmd, reason)
        instrument = self.instruments[cmd.instrument_id]
        fee_cap_bps = max(instrument.maker_bps, instrument.taker_bps)
        try:
            hold = self._new_order_hold(cmd, instrument, fee_cap_bps)
        except _Overflow:
            return self._reject(cmd, RejectReason.AMOUNT_OVERFLOW)
        balance = self._bal(cmd.account_id, self._hold_asset(instrument, cmd.side))
        if balance[0] < hold:
            return self._reject(cmd, RejectReason.INSUFFICIENT_FUNDS)
        if len(self.orders) >= self.config.max_orders:
            return self._reject(cmd, RejectReason.ORDER_CAPACITY)
        stop = cmd.order_type in _STOPS
        rests = cmd.order_type == OrderType.LIMIT and cmd.time_in_force in _RESTING
        if rests and self._level_missing_and_full(instrument, cmd.side, cmd.price):
            return self._reject(cmd, RejectReason.PRICE_LEVEL_CAPACITY)
        # pipeline: risk hold -> accept -> match -> settle -> rest or release
        balance[0] -= hold
        balance[1] += hold
        order = Order(order_id=self.next_order_id, account_id=cmd.account_id,
                      instrument_id=cmd.instrument_id, client_id=cmd.client_id, side=cmd.side,
                      price=cmd.price, leaves=cmd.quantity, hold=hold, fee_cap_bps=fee_cap_bps,
                      stp_mode=cmd.stp_mode, flags=cmd.flags, order_type=cmd.order_type,
                      expire_time_ns=cmd.expire_time_ns, trigger_price=cmd.trigger_price,
                      time_in_force=cmd.time_in_force, display_quantity=cmd.display_quantity)
        if cmd.expire_time_ns:
            self._expiry_bound = min(self._expiry_bound, cmd.expire_time_ns)
        self.next_order_id += 1
        self.accounts[cmd.account_id] = cmd.client_id
        self._emit(cmd, EventKind.ACCEPTED, side=cmd.side, instrument_id=cmd.instrument_id,
                   account_id=cmd.account_id, order_id=order.order_id, client_id=cmd.client_id,
                   price=cmd.price, quantity=cmd.quantity)
        if stop:  # held until triggered: live, off the book
            self.orders[(order.account_id, order.client_id)] = order
            instrument.stops.append(order)
            return
        if cmd.time_in_force == TimeInForce.FOK and not self._fok_fillable(order, instrument, cmd.limit):
            self._emit_canceled(cmd, order, CancelReason.FOK_UNFILLED)
            self._release(order, instrument, order.hold)
            return
        self.orders[(order.account_id, order.client_id)] = order
        self._take(cmd, order, instrument, cmd.limit, rests)
        self._trigger_stops(cmd, instrument)

    def _take(self, cmd, order: Order, instrument: Instrument, budget: int, rests: bool) -> None:
        """A live taker (in ``orders``, off the book) matches, then rests or ends."""
        end_reason = self._match(cmd, order, instrument, budget)
        if end_reason == 0 and order.leaves > 0 and not rests:
            end_reason = CancelReason.IOC_REMAINDER
        if end_reason:
            self._finish_taker(cmd, order, instrument, end_reason)
        elif order.leaves == 0:
            del self.orders[(order.account_id, order.client_id)]
            self._release(order, instrument, order.hold)
        else:
            self._rest(order, instrument)

    def _trigger_stops(self, cmd, instrument: Instrument) -> None:
        """Stops whose trigger the last trade price reached enter one at a time, the lowest
        order id first, each with its TRIGGERED event, fills and end; each may trade and
        trigger more (a cascade), so the choice is made again after each."""
        while True:
            order = next((o for o in instrument.stops
                          if self._triggered(instrument, o.side, o.trigger_price)), None)
            if order is None:
                return
            instrument.stops.remove(order)
            order.trigger_price = 0
            order.order_type = OrderType.MARKET if order.order_type == OrderType.STOP_MARKET \
                else OrderType.LIMIT
            self._emit(cmd, EventKind.TRIGGERED, side=order.side, instrument_id=order.instrument_id,
                       account_id=order.account_id, order_id=order.order_id,
                       client_id=order.client_id, price=order.price, quantity=order.leaves)
            rests = order.order_type == OrderType.LIMIT and order.time_in_force in _RESTING
            if rests and self._level_missing_and_full(instrument, order.side, order.price):
                self._finish_taker(cmd, order, instrument, CancelReason.BOOK_FULL)
            elif order.time_in_force == TimeInForce.FOK and not self._fok_fillable(order, instrument, 0):
                self._finish_taker(cmd, order, instrument, CancelReason.FOK_UNFILLED)
            else:
                self._take(cmd, order, instrument, 0, rests)

    def _finish_taker(self, cmd, order, instrument, reason):
        self._emit_canceled(cmd, order, reason)
        del self.orders[(order.account_id, order.client_id)]
        self._release(order, instrument, order.hold)

    # ------------------------------------------------------------------ book

    def _book(self, instrument, side) -> list:
        return instrument.bids if side == Side.BUY else instrument.asks

    @staticmethod
    def _better_or_equal(side, price, other) -> bool:
        """Does ``price`` rank at or ahead of ``other`` on a book of ``side``?"""
        return price >= other if side == Side.BUY else price <= other

    def _would_cross(self, instrument, side, price) -> bool:
        opposite = self._book(instrument, Side.SELL if side == Side.BUY else Side.BUY)
        if not opposite:
            return False
        best = opposite[0].price
        return best <= price if side == Side.BUY else best >= price

    def _level_missing_and_full(self, instrument, side, price) -> bool:
        book = self._book(instrument, side)
        if any(level.price == price for level in book):
            return False
        return len(book) >= self.config.max_price_levels

    def _rest(self, order: Order, instrument: Instrument) -> None:
        if order.display_quantity:  # an iceberg rests with a fresh peak
            order.visible = min(order.display_quantity, order.leaves)
        book = self._book(instrument, order.side)
        index = 0
        while index < len(book) and self._better_or_equal(order.side, book[index].price, order.price):
            if book[index].price == order.price:
                book[index].orders.append(order)
                return
            index += 1
        book.insert(index, Level(order.price, deque([order])))

    def _level_of(self, order: Order, instrument: Instrument) -> Level:
        return next(level for level in self._book(instrument, order.side) if level.price == order.price)

    def _unlink(self, order: Order, instrument: Instrument) -> None:
        """Take a resting order off its level (and the level off the book when empty), or
        an untriggered stop off the instrument's stops."""
        if order.trigger_price:
            instrument.stops.remove(order)
            return
        book = self._book(instrument, order.side)
        for index, level in enumerate(book):
            if level.price == order.price:
                level.orders.remove(order)
                if not level.orders:
                    del book[index]
                return
        raise AssertionError("resting order not found on its level")

    def _cancel_order(self, cmd, order: Order, reason) -> None:
        """Cancel a resting order: event, off the book, hold released."""
        instrument = self.instruments[order.instrument_id]
        self._emit_canceled(cmd, order, reason)
        self._unlink(order, instrument)
        del self.orders[(order.account_id, order.client_id)]
        self._release(order, instrument, order.hold)

    # ------------------------------------------------------------------ matching

    def _acceptable(self, taker: Order, level_price: int) -> bool:
        if taker.price == 0:
            return True
        return level_price <= taker.price if taker.side == Side.BUY else level_price >= taker.price

    def _fok_fillable(self, taker: Order, instrument: Instrument, budget: int) -> bool:
        """Walk the book as matching would; can the whole quantity fill?"""
        needed = taker.leaves
        opposite = self._book(instrument, Side.SELL if taker.side == Side.BUY else Side.BUY)
        for level in opposite:
            if not self._acceptable(taker, level.price):
                return False
            for maker in level.orders:
                if maker.account_id == taker.account_id:
                    if taker.stp_mode == StpMode.CANCEL_MAKER:
                        continue
                    return False
                quantity = min(needed, maker.leaves)
                if budget > 0:
                    affordable = budget // level.price
                    if affordable < quantity:
                        return False
                    budget -= quantity * level.price
                needed -= quantity
                if needed == 0:
                    return True
        return False

    def _match(self, cmd, taker: Order, instrument: Instrument, budget: int) -> int:
        """Match a taker against the opposite book. Returns a CancelReason ending the
        taker early (self-trade, market protection), or 0."""
        opposite = self._book(instrument, Side.SELL if taker.side == Side.BUY else Side.BUY)
        spent = 0
        while taker.leaves > 0 and opposite:
            level = opposite[0]
            if not self._acceptable(taker, level.price):
                break
            maker = level.orders[0]
            if maker.account_id == taker.account_id:
                if taker.stp_mode == StpMode.CANCEL_TAKER:
                    return CancelReason.SELF_TRADE
                if taker.stp_mode == StpMode.DECREMENT:
                    if taker.leaves < maker.leaves:  # the taker is the smaller: canceled
                        self._decrement(cmd, maker, instrument, taker.leaves)
                        return CancelReason.SELF_TRADE
                    smaller = maker.leaves
                    self._cancel_order(cmd, maker, CancelReason.SELF_TRADE)
                    if smaller == taker.leaves:  # equal: both canceled, maker first
                        return CancelReason.SELF_TRADE
                    self._decrement(cmd, taker, instrument, smaller)
                    continue
                self._cancel_order(cmd, maker, CancelReason.SELF_TRADE)
                if taker.stp_mode == StpMode.CANCEL_BOTH:
                    return CancelReason.SELF_TRADE
                continue
            # an iceberg trades at most its visible part before it refills
            quantity = min(taker.leaves, maker.visible if maker.display_quantity else maker.leaves)
            if budget > 0:
                quantity = min(quantity, (budget - spent) // level.price)
                if quantity == 0:
                    return CancelReason.MARKET_PROTECTION
            spent += quantity * level.price
            self._fill(cmd, taker, maker, instrument, level.price, quantity)
            if maker.leaves == 0:
                level.orders.popleft()
                if not level.orders:
                    opposite.pop(0)
                del self.orders[(maker.account_id, maker.client_id)]
                self._release(maker, instrument, maker.hold)
            elif maker.display_quantity and maker.visible == 0:
                # the peak is gone: refill it and go to the back of the level (new priority)
                maker.visible = min(maker.display_quantity, maker.leaves)
                level.orders.popleft()
                level.orders.append(maker)
        return 0

    def _decrement(self, cmd, order: Order, instrument: Instrument, quantity: int) -> None:
        """STP decrement: ``quantity`` fewer open lots, time priority kept; a REPLACED event
        (reason SELF_TRADE) with the new open quantity; the hold follows the leaves."""
        order.leaves -= quantity
        order.visible = min(order.visible, order.leaves)
        self._emit(cmd, EventKind.REPLACED, side=order.side, reason=CancelReason.SELF_TRADE,
                   instrument_id=order.instrument_id, account_id=order.account_id,
                   order_id=order.order_id, client_id=order.client_id, price=order.price,
                   quantity=order.leaves)
        if order.side == Side.SELL:
            self._release(order, instrument, quantity * instrument.lot_size)
        elif order.order_type == OrderType.LIMIT:
            self._release_excess(order, instrument)

    def _fill(self, cmd, taker: Order, maker: Order, instrument: Instrument, price, quantity):
        """Settle one trade by double entry: buyer, seller, fee account."""
        notional = price * quantity
        taker_fee = fee_of(notional, min(instrument.taker_bps, taker.fee_cap_bps))
        maker_fee = fee_of(notional, min(instrument.maker_bps, maker.fee_cap_bps))
        buyer, seller = (taker, maker) if taker.side == Side.BUY else (maker, taker)
        buyer_fee, seller_fee = (taker_fee, maker_fee) if buyer is taker else (maker_fee, taker_fee)
        base_amount = quantity * instrument.lot_size
        quote, base = instrument.quote_asset, instrument.base_asset
        self._bal(buyer.account_id, quote)[1] -= notional + buyer_fee
        buyer.hold -= notional + buyer_fee
        self._bal(buyer.account_id, base)[0] += base_amount
        self._bal(seller.account_id, base)[1] -= base_amount
        seller.hold -= base_amount
        self._bal(seller.account_id, quote)[0] += notional - seller_fee
        self._bal(self.config.fee_account_id, quote)[0] += taker_fee + maker_fee
        self._emit(cmd, EventKind.FILL, side=taker.side, instrument_id=taker.instrument_id,
                   account_id=taker.account_id, counter_account_id=maker.account_id,
                   order_id=taker.order_id, client_id=taker.client_id,
                   counter_order_id=maker.order_id, trade_id=self.next_trade_id, price=price,
                   quantity=quantity, fee=taker_fee, counter_fee=maker_fee,
                   counter_client_id=maker.client_id, leaves=taker.leaves - quantity,
                   counter_leaves=maker.leaves - quantity)
        self.next_trade_id += 1
        instrument.last_price = price
        taker.leaves -= quantity
        maker.leaves -= quantity
        if maker.display_quantity:
            maker.visible -= quantity
        if buyer.leaves > 0 and buyer.order_type == OrderType.LIMIT:
            self._release_excess(buyer, instrument)

    # ------------------------------------------------------------------ cancel, replace

    def _cmd_cancel(self, cmd):
        if cmd.account_id not in self.accounts:
            return self._reject(cmd, RejectReason.UNKNOWN_ACCOUNT)
        order = self.orders.get((cmd.account_id, cmd.client_id))
        if order is None:
            return self._reject(cmd, RejectReason.UNKNOWN_ORDER)
        self._cancel_order(cmd, order, CancelReason.USER)

    def _cmd_mass_cancel(self, cmd):
        if cmd.account_id not in self.accounts:
            return self._reject(cmd, RejectReason.UNKNOWN_ACCOUNT)
        if cmd.instrument_id != ALL_INSTRUMENTS and cmd.instrument_id not in self.instruments:
            return self._reject(cmd, RejectReason.UNKNOWN_INSTRUMENT)
        mine = [o for o in self.orders.values() if o.account_id == cmd.account_id
                and cmd.instrument_id in (ALL_INSTRUMENTS, o.instrument_id)]
        for order in sorted(mine, key=lambda o: o.order_id):
            self._cancel_order(cmd, order, CancelReason.MASS_CANCEL)
        self._done(cmd, quantity=len(mine))

    def _validate_replace(self, cmd) -> int:
        if cmd.quantity <= 0:
            return RejectReason.INVALID_QUANTITY
        if cmd.price <= 0:
            return RejectReason.INVALID_PRICE
        if cmd.account_id not in self.accounts:
            return RejectReason.UNKNOWN_ACCOUNT
        order = self.orders.get((cmd.account_id, cmd.client_id))
        if order is None:
            return RejectReason.UNKNOWN_ORDER
        instrument = self.instruments[order.instrument_id]
        if instrument.state == InstrumentState.PAUSED:
            return RejectReason.INSTRUMENT_PAUSED
        if cmd.price % instrument.tick_size != 0:
            return RejectReason.PRICE_OFF_TICK
        if not instrument.band_min <= cmd.price <= instrument.band_max:
            return RejectReason.PRICE_OUT_OF_BAND
        if cmd.quantity > instrument.max_order_lots:
            return RejectReason.QUANTITY_ABOVE_MAXIMUM
        if cmd.price == order.price and cmd.quantity == order.leaves:
            return RejectReason.REPLACE_NO_CHANGE
        if order.flags & Flags.POST_ONLY and self._would_cross(instrument, order.side, cmd.price):
            return RejectReason.POST_ONLY_WOULD_CROSS
        return 0

    def _cmd_replace(self, cmd):
        reason = self._validate_replace(cmd)
        if reason:
            return self._reject(cmd, reason)
        order = self.orders[(cmd.account_id, cmd.client_id)]
        instrument = self.instruments[order.instrument_id]
        try:
            needed = self._limit_hold_needed(order.side, cmd.price, cmd.quantity,
                                             instrument.lot_size, order.fee_cap_bps)
        except _Overflow:
            return self._reject(cmd, RejectReason.AMOUNT_OVERFLOW)
        balance = self._bal(order.account_id, self._hold_asset(instrument, order.side))
        if needed - order.hold > balance[0]:
            return self._reject(cmd, RejectReason.INSUFFICIENT_FUNDS)
        if order.trigger_price:  # an untriggered stop: off the book, nothing to match
            balance[0] -= needed - order.hold
            balance[1] += needed - order.hold
            order.hold, order.price, order.leaves = needed, cmd.price, cmd.quantity
            return self._emit(cmd, EventKind.REPLACED, side=order.side,
                              instrument_id=order.instrument_id, account_id=order.account_id,
                              order_id=order.order_id, client_id=order.client_id, price=cmd.price,
                              quantity=cmd.quantity)
        keeps_priority = cmd.price == order.price and cmd.quantity < order.leaves
        alone = len(self._level_of(order, instrument).orders) == 1
        # a full side refuses a new level, unless the order leaves a level it is alone on
        if not keeps_priority and cmd.price != order.price and not alone and \
                self._level_missing_and_full(instrument, order.side, cmd.price):
            return self._reject(cmd, RejectReason.PRICE_LEVEL_CAPACITY)
        # adjust the hold to exactly what the new price and size need
        balance[0] -= needed - order.hold
        balance[1] += needed - order.hold
        order.hold = needed
        self._emit(cmd, EventKind.REPLACED, side=order.side, instrument_id=order.instrument_id,
                   account_id=order.account_id, order_id=order.order_id,
                   client_id=order.client_id, price=cmd.price, quantity=cmd.quantity)
        if keeps_priority:
            order.leaves = cmd.quantity
            order.visible = min(order.visible, order.leaves)
            return
        self._unlink(order, instrument)
        order.price, order.leaves = cmd.price, cmd.quantity
        self._take(cmd, order, instrument, 0, True)
        self._trigger_stops(cmd, instrument)

    # ------------------------------------------------------------------ snapshot

    def _state_words(self) -> SnapshotWriter:
        """The canonical state, as the snapshot format defines it (snapshot_format.py)."""
        w = SnapshotWriter()
        c = self.config
        w.header(c, self.next_order_id, self.next_trade_id)
        w.count(len(self.assets))
        for asset_id in sorted(self.assets):
            w.words(asset_id, self.assets[asset_id], self.deposited[asset_id], self.withdrawn[asset_id])
        w.count(len(self.accounts))
        for account_id in sorted(self.accounts):
            w.words(account_id, self.accounts[account_id])
            t = self.transfers.get(account_id)
            w.words(*((0,) * 6 if t is None else
                      (t.transfer_id, t.kind, t.asset_id, t.amount, t.event_kind, t.reason)))
            for asset_id in sorted(self.assets):
                w.words(*self.balance(account_id, asset_id))
        w.count(len(self.instruments))
        for instrument_id in sorted(self.instruments):
            ins = self.instruments[instrument_id]
            w.words(instrument_id, ins.base_asset, ins.quote_asset, ins.tick_size, ins.lot_size,
                    ins.max_order_lots, ins.band_min, ins.band_max, ins.maker_bps, ins.taker_bps,
                    int(ins.state), ins.last_price)
            for book in (ins.bids, ins.asks):
                w.count(len(book))
                for level in book:
                    w.words(level.price, len(level.orders))
                    for o in level.orders:
                        w.words(o.order_id, o.account_id, o.client_id, o.leaves, o.hold,
                                o.fee_cap_bps, o.stp_mode, o.flags, o.expire_time_ns,
                                o.display_quantity, o.visible)
            w.count(len(ins.stops))
            for o in ins.stops:
                w.words(o.order_id, o.account_id, o.client_id, o.leaves, o.hold, o.fee_cap_bps,
                        o.stp_mode, o.flags, o.expire_time_ns, o.display_quantity, o.visible,
                        o.side, o.order_type,
                        o.time_in_force, o.price, o.trigger_price)
        return w


def _restore(cls, r: SnapshotReader, config: EngineConfig | None = None) -> ReferenceEngine:
    stored, next_order_id, next_trade_id = r.header()
    engine = cls(config or stored)
    engine.accounts.clear()
    engine.next_order_id, engine.next_trade_id = next_order_id, next_trade_id
    asset_ids = []
    for _ in range(r.count()):
        asset_id, decimals, deposited, withdrawn = r.words(4)
        engine.assets[asset_id] = decimals
        engine.deposited[asset_id], engine.withdrawn[asset_id] = deposited, withdrawn
        asset_ids.append(asset_id)
    for _ in range(r.count()):
        account_id, last_client_id = r.words(2)
        engine.accounts[account_id] = last_client_id & UINT64_MASK
        transfer_id, kind, asset_id, amount, event_kind, reason = r.words(6)
        if kind:
            engine.transfers[account_id] = Transfer(transfer_id & UINT64_MASK, kind, asset_id,
                                                    amount, event_kind, reason)
        for asset_id in asset_ids:
            available, held = r.words(2)
            if available or held:
                engine.balances[(account_id, asset_id)] = [available, held]
    for _ in range(r.count()):
        (instrument_id, base, quote, tick, lot, max_lots, band_min, band_max, maker, taker,
         state, last_price) = r.words(12)
        ins = Instrument(base, quote, tick, lot, max_lots, band_min, band_max, maker, taker,
                         InstrumentState(state), last_price)
        engine.instruments[instrument_id] = ins
        for side, book in ((Side.BUY, ins.bids), (Side.SELL, ins.asks)):
            for _ in range(r.count()):
                price, n_orders = r.words(2)
                level = Level(price)
                for _ in range(n_orders):
                    (order_id, account_id, client_id, leaves, hold, fee_cap, stp, flags,
                     expire_time_ns, display, visible) = r.words(11)
                    client_id &= UINT64_MASK
                    order = Order(order_id, account_id, instrument_id, client_id, int(side), price,
                                  leaves, hold, fee_cap, stp, flags, expire_time_ns=expire_time_ns,
                                  time_in_force=TimeInForce.GTD if expire_time_ns else TimeInForce.GTC,
                                  display_quantity=display, visible=visible)
                    level.orders.append(order)
                    engine.orders[(account_id, client_id)] = order
                book.append(level)
        for _ in range(r.count()):
            (order_id, account_id, client_id, leaves, hold, fee_cap, stp, flags, expire_time_ns,
             _display, _visible, side, order_type, tif, price, trigger) = r.words(16)
            client_id &= UINT64_MASK
            order = Order(order_id, account_id, instrument_id, client_id, side, price, leaves, hold,
                          fee_cap, stp, flags, order_type, expire_time_ns=expire_time_ns,
                          trigger_price=trigger, time_in_force=tif)
            ins.stops.append(order)
            engine.orders[(account_id, client_id)] = order
    r.finish()
    engine._expiry_bound = min((o.expire_time_ns for o in engine.orders.values() if o.expire_time_ns),
                               default=_NEVER)
    return engine


class _Cmd:
    """Plain-int view of one command record."""

    __slots__ = tuple(COMMAND_DTYPE.names)

    def __init__(self, record):
        for name in COMMAND_DTYPE.names:
            setattr(self, name, int(record[name]))


_HANDLERS = {
    CommandKind.ADD_ASSET: ReferenceEngine._cmd_add_asset,
    CommandKind.ADD_ACCOUNT: ReferenceEngine._cmd_add_account,
    CommandKind.ADD_INSTRUMENT: ReferenceEngine._cmd_add_instrument,
    CommandKind.SET_PRICE_BAND: ReferenceEngine._cmd_set_price_band,
    CommandKind.SET_FEES: ReferenceEngine._cmd_set_fees,
    CommandKind.HALT_INSTRUMENT: ReferenceEngine._cmd_halt,
    CommandKind.RESUME_INSTRUMENT: ReferenceEngine._cmd_resume,
    CommandKind.DEPOSIT: ReferenceEngine._cmd_transfer,
    CommandKind.WITHDRAW: ReferenceEngine._cmd_transfer,
    CommandKind.NEW_ORDER: ReferenceEngine._cmd_new_order,
    CommandKind.CANCEL: ReferenceEngine._cmd_cancel,
    CommandKind.REPLACE: ReferenceEngine._cmd_replace,
    CommandKind.MASS_CANCEL: ReferenceEngine._cmd_mass_cancel,
    CommandKind.PAUSE_INSTRUMENT: ReferenceEngine._cmd_pause,
    CommandKind.CLOCK: ReferenceEngine._cmd_clock,
}
#: times in force of orders that may rest
_RESTING = (TimeInForce.GTC, TimeInForce.GTD)
_STOPS = (OrderType.STOP_MARKET, OrderType.STOP_LIMIT)
#: the reject of a new order, a replace or a pause on an instrument that is not trading
_NOT_TRADING = {InstrumentState.HALTED: RejectReason.INSTRUMENT_HALTED,
                InstrumentState.PAUSED: RejectReason.INSTRUMENT_PAUSED}
