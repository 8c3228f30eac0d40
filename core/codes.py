"""Every code of the matchcore contract: command and event kinds, order fields, reasons.

This module is the single source of truth. ``core/records.pxd`` repeats the numbers for
Cython and a unit test proves the two agree; ``docs/engine.md`` documents them. Numbers
are explicit and never reused: a retired code keeps its number, commented out.

Reject reasons are grouped in numeric ranges by the subsystem that produces them and
ordered by precedence inside a range: validation (1-99), reference data (100-199),
order state (200-299), risk (300-399), capacity (400-499).
"""
from enum import IntEnum

__all__ = [
    "CONTRACT_VERSION",
    "ALL_INSTRUMENTS",
    "BookChangeKind",
    "CancelReason",
    "CommandKind",
    "EventKind",
    "Flags",
    "InstrumentState",
    "OrderType",
    "RejectReason",
    "Side",
    "StpMode",
    "TimeInForce",
    "BPS_DENOMINATOR",
]

#: The engine contract these codes, the records and both engines implement. A journal records
#: the contract that wrote it; another contract refuses it (docs/operations.md, "Contract
#: versions"). 2: per-account rising transfer ids, pause, STP decrement, 128-byte events.
CONTRACT_VERSION = 2
#: ``instrument_id`` of a MASS_CANCEL that covers every instrument of the account.
ALL_INSTRUMENTS = 0xFFFFFFFF
#: Fees are in basis points of the notional: fee = notional * bps // 10_000 (floor).
BPS_DENOMINATOR = 10_000


class CommandKind(IntEnum):
    """Kinds 1-63 are commands; 64-127 are events (so one byte tells the record apart)."""

    ADD_ASSET = 1
    ADD_ACCOUNT = 2
    ADD_INSTRUMENT = 3
    SET_PRICE_BAND = 4
    SET_FEES = 5
    HALT_INSTRUMENT = 6
    RESUME_INSTRUMENT = 7
    DEPOSIT = 8
    WITHDRAW = 9
    NEW_ORDER = 10
    CANCEL = 11
    REPLACE = 12
    MASS_CANCEL = 13
    #: contract 2: stop trading but keep the book (cancels allowed); RESUME_INSTRUMENT ends it
    PAUSE_INSTRUMENT = 14
    #: contract 2: the gateway's clock: applies nothing but time (GTD expiry) when no other
    #: command carries it; not a client message
    CLOCK = 15


class EventKind(IntEnum):
    ACCEPTED = 64
    REJECTED = 65
    FILL = 66
    CANCELED = 67
    REPLACED = 68
    TRANSFER_DONE = 69
    TRANSFER_REJECTED = 70
    #: A command with no other outcome completed: reference data changed (asset, account,
    #: instrument, band, fees, halt, resume) or a mass cancel finished.
    COMMAND_DONE = 71
    #: contract 2: a stop order's trigger price was reached: it now enters as a market
    #: (STOP_MARKET) or limit (STOP_LIMIT) order; its fills and end follow
    TRIGGERED = 72


class BookChangeKind(IntEnum):
    """Kinds of ``BOOK_CHANGE_DTYPE`` records (what a replica engine records for market data)."""

    #: a price level's shown quantity or order count changed (0 lots: the level is gone)
    LEVEL = 1
    #: the best bid and offer after a command that changed any level of the instrument
    TOP = 2
    #: the instrument's state, band or fees after an admin command changed them
    STATUS = 3


class Side(IntEnum):
    BUY = 1
    SELL = 2


class OrderType(IntEnum):
    LIMIT = 1
    MARKET = 2
    #: contract 2: held until the last trade price reaches ``trigger_price`` (a buy: at or
    #: above, a sell: at or below), then a market order with ``price`` as its worst price
    STOP_MARKET = 3
    #: contract 2: the same, then a limit order at ``price``
    STOP_LIMIT = 4


class TimeInForce(IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    #: contract 2: good till ``expire_time_ns`` (limit orders)
    GTD = 4


class StpMode(IntEnum):
    """Self-trade prevention: what happens when a taker meets a resting order of its own account."""

    CANCEL_TAKER = 1
    CANCEL_MAKER = 2
    CANCEL_BOTH = 3
    #: contract 2: decrease the larger of the two by the smaller, cancel the smaller
    DECREMENT = 4


class Flags(IntEnum):
    POST_ONLY = 1


class RejectReason(IntEnum):
    # validation: the command is malformed, whatever the state
    UNKNOWN_COMMAND = 1
    INVALID_SIDE = 2
    INVALID_ORDER_TYPE = 3
    INVALID_TIME_IN_FORCE = 4
    INVALID_STP_MODE = 5
    INVALID_FLAGS = 6
    INVALID_QUANTITY = 7
    INVALID_PRICE = 8
    INVALID_LIMIT = 9
    INVALID_AMOUNT = 10
    INVALID_FEE = 11
    INVALID_INSTRUMENT_SPEC = 12
    INVALID_PRICE_BAND = 13
    POST_ONLY_NOT_ALLOWED = 14
    MARKET_PROTECTION_REQUIRED = 15
    #: GTD without an expiry after the command's stamp, or an expiry on another time in force
    INVALID_EXPIRE_TIME = 16
    #: a stop order without a positive trigger price, or a trigger price on another order type
    INVALID_TRIGGER_PRICE = 17
    #: a display quantity below 0 or above 2**31 - 1 lots, or one on an order that cannot rest
    #: (market, stop, IOC, FOK)
    INVALID_DISPLAY_QUANTITY = 18
    # reference data: ids and states of assets, accounts, instruments
    UNKNOWN_ACCOUNT = 100
    UNKNOWN_ASSET = 101
    UNKNOWN_INSTRUMENT = 102
    ACCOUNT_EXISTS = 103
    ASSET_EXISTS = 104
    INSTRUMENT_EXISTS = 105
    INSTRUMENT_HALTED = 106
    INSTRUMENT_NOT_HALTED = 107
    PRICE_OFF_TICK = 108
    PRICE_OUT_OF_BAND = 109
    QUANTITY_ABOVE_MAXIMUM = 110
    INSTRUMENT_PAUSED = 111
    # order state
    DUPLICATE_CLIENT_ORDER_ID = 200
    UNKNOWN_ORDER = 201
    POST_ONLY_WOULD_CROSS = 202
    REPLACE_NO_CHANGE = 203
    TRANSFER_ID_REUSED = 204
    #: a transfer id at or below the account's last one (transfer ids rise per account)
    DUPLICATE_TRANSFER_ID = 205
    #: a stop order whose trigger price the last trade price has already reached
    STOP_WOULD_TRIGGER = 206
    # risk
    INSUFFICIENT_FUNDS = 300
    AMOUNT_OVERFLOW = 301
    # capacity
    ORDER_CAPACITY = 400
    ACCOUNT_CAPACITY = 401
    ASSET_CAPACITY = 402
    INSTRUMENT_CAPACITY = 403
    PRICE_LEVEL_CAPACITY = 404
    # TRANSFER_CAPACITY = 405: retired in contract 2 (transfer ids no longer take memory)


class InstrumentState(IntEnum):
    """An instrument's trading state (a snapshot word)."""

    TRADING = 0
    #: HALT_INSTRUMENT: the book was canceled; new orders refused
    HALTED = 1
    #: PAUSE_INSTRUMENT: the book is kept; new orders and replaces refused, cancels allowed
    PAUSED = 2


class CancelReason(IntEnum):
    USER = 1
    IOC_REMAINDER = 2
    FOK_UNFILLED = 3
    SELF_TRADE = 4
    MASS_CANCEL = 5
    HALT = 6
    MARKET_PROTECTION = 7
    #: a GTD order reached its expiry (contract 2)
    EXPIRED = 8
    #: a triggered stop-limit order would need a new price level on a full book side
    BOOK_FULL = 9
