"""Builders of command records, for tests, benchmarks, tools and the client library.

Each builder returns one ``COMMAND_DTYPE`` record as a tuple-compatible numpy scalar;
``pack`` turns a list of them into an array. ``seq`` and ``timestamp_ns`` are left 0
unless given: the gateway (or ``number``) assigns them.
"""
from __future__ import annotations

import numpy as np

from matchcore.core.codes import ALL_INSTRUMENTS, CommandKind, OrderType, Side, StpMode, TimeInForce
from matchcore.core.records import COMMAND_DTYPE

__all__ = [
    "command", "pack", "number", "add_asset", "add_account", "add_instrument", "set_price_band",
    "set_fees", "halt", "resume", "deposit", "withdraw", "limit", "market", "cancel", "replace",
    "mass_cancel", "BUY", "SELL",
]


def command(kind: int, **fields: int) -> np.void:
    """One command record of ``kind`` with the given fields (others zero)."""
    record = np.zeros((), dtype=COMMAND_DTYPE)
    record["kind"] = kind
    for name, value in fields.items():
        record[name] = value
    return record[()]


def pack(records: list) -> np.ndarray:
    """An array of command records."""
    out = np.zeros(len(records), dtype=COMMAND_DTYPE)
    for index, record in enumerate(records):
        out[index] = record
    return out


def number(commands: np.ndarray, first_seq: int = 1, timestamp_ns: int = 0) -> np.ndarray:
    """Stamp consecutive sequence numbers (and one time stamp) in place; returns the array."""
    commands["seq"] = np.arange(first_seq, first_seq + len(commands), dtype=np.uint64)
    commands["timestamp_ns"] = timestamp_ns
    return commands


def add_asset(asset_id: int, decimals: int = 2) -> np.void:
    return command(CommandKind.ADD_ASSET, asset_id=asset_id, quantity=decimals)


def add_account(account_id: int) -> np.void:
    return command(CommandKind.ADD_ACCOUNT, account_id=account_id)


def add_instrument(instrument_id: int, base_asset: int, quote_asset: int, tick_size: int = 1,
                   lot_size: int = 1, max_order_lots: int = 1_000_000) -> np.void:
    return command(CommandKind.ADD_INSTRUMENT, instrument_id=instrument_id, asset_id=base_asset,
                   client_id=quote_asset, price=tick_size, quantity=lot_size, limit=max_order_lots)


def set_price_band(instrument_id: int, price_min: int, price_max: int) -> np.void:
    return command(CommandKind.SET_PRICE_BAND, instrument_id=instrument_id, price=price_min,
                   limit=price_max)


def set_fees(instrument_id: int, maker_bps: int, taker_bps: int) -> np.void:
    return command(CommandKind.SET_FEES, instrument_id=instrument_id, price=maker_bps,
                   quantity=taker_bps)


def halt(instrument_id: int) -> np.void:
    return command(CommandKind.HALT_INSTRUMENT, instrument_id=instrument_id)


def pause(instrument_id: int) -> np.void:
    """Stop trading, keep the book (cancels still allowed); ``resume`` ends it."""
    return command(CommandKind.PAUSE_INSTRUMENT, instrument_id=instrument_id)


def clock() -> np.void:
    """The gateway's clock: nothing but its stamp (GTD orders due at it expire)."""
    return command(CommandKind.CLOCK)


def resume(instrument_id: int) -> np.void:
    return command(CommandKind.RESUME_INSTRUMENT, instrument_id=instrument_id)


def deposit(account_id: int, asset_id: int, amount: int, transfer_id: int) -> np.void:
    return command(CommandKind.DEPOSIT, account_id=account_id, asset_id=asset_id,
                   quantity=amount, client_id=transfer_id)


def withdraw(account_id: int, asset_id: int, amount: int, transfer_id: int) -> np.void:
    return command(CommandKind.WITHDRAW, account_id=account_id, asset_id=asset_id,
                   quantity=amount, client_id=transfer_id)


def limit(account_id: int, instrument_id: int, client_id: int, side: int, price: int,
          quantity: int, tif: int = TimeInForce.GTC, post_only: bool = False,
          stp: int = StpMode.CANCEL_TAKER, expire_time_ns: int = 0,
          display_quantity: int = 0) -> np.void:
    """A limit order; ``expire_time_ns`` makes it GTD (``tif`` then defaults to GTD),
    ``display_quantity`` an iceberg."""
    if expire_time_ns and tif == TimeInForce.GTC:
        tif = TimeInForce.GTD
    return command(CommandKind.NEW_ORDER, account_id=account_id, instrument_id=instrument_id,
                   client_id=client_id, side=side, order_type=OrderType.LIMIT, time_in_force=tif,
                   flags=1 if post_only else 0, stp_mode=stp, price=price, quantity=quantity,
                   expire_time_ns=expire_time_ns, display_quantity=display_quantity)


def market(account_id: int, instrument_id: int, client_id: int, side: int, quantity: int,
           worst_price: int = 0, max_cost: int = 0, tif: int = TimeInForce.IOC,
           stp: int = StpMode.CANCEL_TAKER) -> np.void:
    return command(CommandKind.NEW_ORDER, account_id=account_id, instrument_id=instrument_id,
                   client_id=client_id, side=side, order_type=OrderType.MARKET, time_in_force=tif,
                   stp_mode=stp, price=worst_price, quantity=quantity, limit=max_cost)


def cancel(account_id: int, client_id: int) -> np.void:
    return command(CommandKind.CANCEL, account_id=account_id, client_id=client_id)


def replace(account_id: int, client_id: int, price: int, quantity: int) -> np.void:
    return command(CommandKind.REPLACE, account_id=account_id, client_id=client_id, price=price,
                   quantity=quantity)


def mass_cancel(account_id: int, instrument_id: int = ALL_INSTRUMENTS) -> np.void:
    return command(CommandKind.MASS_CANCEL, account_id=account_id, instrument_id=instrument_id)


def mass_cancels(account_ids, instrument_id: int = ALL_INSTRUMENTS) -> np.ndarray:
    """MASS_CANCEL records for many accounts at once (cancel-on-disconnect, shutdown)."""
    out = np.zeros(len(account_ids), dtype=COMMAND_DTYPE)
    out["kind"] = CommandKind.MASS_CANCEL
    out["account_id"] = account_ids
    out["instrument_id"] = instrument_id
    return out


BUY, SELL = Side.BUY, Side.SELL
