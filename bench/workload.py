"""Seeded, realistic mixed workloads for benchmarks and long differential tests.

The mix of ``mixed_workload``: about 60% passive limit adds, 25% cancels, 10% aggressive
orders that fill, 5% replaces, over many accounts and several instruments. Of the passive
adds, a few percent each use contract 2's order types (``CONTRACT_2_SHARE``): GTD (an expiry
after the run, so they rest like GTC), icebergs (a peak of a fifth), stop-limit orders
triggered a few ticks from the mid (some refused STOP_WOULD_TRIGGER, as in real flow) and
STP decrement. The generator tracks the orders it placed (not their fills), so a few cancels
and replaces target orders that already traded and are rejected, as in real flow.
"""
from __future__ import annotations

import numpy as np

from matchcore.core import commands as c
from matchcore.core.codes import CommandKind, OrderType, Side, StpMode, TimeInForce
from matchcore.core.config import EngineConfig
from matchcore.core.records import COMMAND_DTYPE

__all__ = ["Workload", "mixed_workload"]

QUOTE_ASSET = 0
MID_PRICE_TICKS = 100_000
FUNDS = 10**15
#: share of the passive adds that are GTD, icebergs, stop-limit orders, STP decrement (each)
CONTRACT_2_SHARE = 0.03
#: GTD expiry: after any stamp a run gets (2030-01-01), so nothing expires during it
GTD_EXPIRY_NS = 1_893_456_000_000_000_000


class Workload:
    """Setup commands, then the measured commands, and the config sized for them."""

    def __init__(self, config: EngineConfig, setup: np.ndarray, commands: np.ndarray, seed: int):
        self.config = config
        self.setup = setup
        self.commands = commands
        self.seed = seed

    def all(self) -> np.ndarray:
        return np.concatenate([self.setup, self.commands])


def _setup(accounts: int, instruments: int) -> list:
    records = [c.add_asset(QUOTE_ASSET)] + [c.add_asset(1 + i) for i in range(instruments)]
    records += [c.add_account(a) for a in range(1, accounts + 1)]
    for i in range(instruments):
        records.append(c.add_instrument(i, 1 + i, QUOTE_ASSET, tick_size=1, lot_size=1,
                                        max_order_lots=1_000_000))
        records.append(c.set_fees(i, 1, 5))
    for a in range(1, accounts + 1):
        for asset in range(instruments + 1):
            records.append(c.deposit(a, asset, FUNDS, 1 + asset))
    return records


def mixed_workload(commands: int, seed: int = 1, accounts: int = 1_000, instruments: int = 8) -> Workload:
    """A seeded mixed workload of ``commands`` measured commands (after setup)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(commands, dtype=COMMAND_DTYPE)
    roll = rng.random(commands)
    account_of = rng.integers(1, accounts + 1, commands)
    instrument_of = rng.integers(0, instruments, commands)
    side_of = rng.integers(1, 3, commands)
    offset_of = rng.integers(1, 60, commands)
    quantity_of = rng.integers(1, 100, commands)
    pick = rng.random(commands)
    variant = rng.random(commands)
    next_client = np.ones(accounts + 1, dtype=np.int64)
    live: list[tuple[int, int, int, int, int]] = []  # account, client, instrument, side, price
    for index in range(commands):
        r = roll[index]
        record = out[index]
        if (r < 0.25 or 0.95 <= r) and live:
            slot = int(pick[index] * len(live))
            account, client_id, instrument, side, price = live[slot]
            if r < 0.25:
                live[slot] = live[-1]
                live.pop()
                _fill(record, CommandKind.CANCEL, account, instrument, client_id, 0, 0, 0, 0)
            else:
                new_price = price - 1 if side == Side.BUY else price + 1
                live[slot] = (account, client_id, instrument, side, new_price)
                _fill(record, CommandKind.REPLACE, account, instrument, client_id, 0, 0, new_price,
                      int(quantity_of[index]))
            continue
        account = int(account_of[index])
        instrument = int(instrument_of[index])
        side = int(side_of[index])
        client_id = int(next_client[account])
        next_client[account] += 1
        aggressive = 0.85 <= r < 0.95
        offset = int(offset_of[index])
        if aggressive:
            price = MID_PRICE_TICKS + 20 if side == Side.BUY else MID_PRICE_TICKS - 20
            tif = TimeInForce.IOC
        else:
            price = MID_PRICE_TICKS - offset if side == Side.BUY else MID_PRICE_TICKS + offset
            tif = TimeInForce.GTC
            live.append((account, client_id, instrument, side, price))
        _fill(record, CommandKind.NEW_ORDER, account, instrument, client_id, side, tif, price,
              int(quantity_of[index]))
        if not aggressive:
            _contract_2_variant(record, float(variant[index]), side, offset)
    config = EngineConfig(max_accounts=accounts + 1, max_assets=instruments + 1,
                          max_instruments=instruments, max_orders=max(1024, commands),
                          max_price_levels=4096)
    return Workload(config, c.pack(_setup(accounts, instruments)), out, seed)


def _contract_2_variant(record, draw: float, side: int, offset: int) -> None:
    """Make a passive add one of contract 2's order types, each CONTRACT_2_SHARE of the time."""
    share = CONTRACT_2_SHARE
    if draw < share:
        record["time_in_force"] = TimeInForce.GTD
        record["expire_time_ns"] = GTD_EXPIRY_NS
    elif draw < 2 * share:
        record["display_quantity"] = max(1, int(record["quantity"]) // 5)
    elif draw < 3 * share:
        # a stop-limit a few ticks through the mid, its limit a little beyond the trigger
        trigger = MID_PRICE_TICKS + 1 + offset % 8 if side == Side.BUY else MID_PRICE_TICKS - 1 - offset % 8
        record["order_type"] = OrderType.STOP_LIMIT
        record["trigger_price"] = trigger
        record["price"] = trigger + 2 if side == Side.BUY else trigger - 2
    elif draw < 4 * share:
        record["stp_mode"] = StpMode.DECREMENT


def _fill(record, kind, account, instrument, client_id, side, tif, price, quantity) -> None:
    record["kind"] = kind
    record["account_id"] = account
    record["instrument_id"] = instrument
    record["client_id"] = client_id
    record["side"] = side
    record["order_type"] = OrderType.LIMIT if kind == CommandKind.NEW_ORDER else 0
    record["time_in_force"] = tif
    record["stp_mode"] = StpMode.CANCEL_TAKER if kind == CommandKind.NEW_ORDER else 0
    record["price"] = price
    record["quantity"] = quantity
