"""``matchcore-bench memory``: bytes per resting order, per account and per price level, and peak RSS.

    python -m matchcore.bench.memory_bench [--orders N] [--large-orders N] [--json]

How. Every measurement runs in a fresh child process, which reads its resident set size
(``VmRSS`` of /proc/self/status) after importing matchcore, builds an ``Engine`` with the
capacities under test, fills it, and reads RSS again and its peak (``VmHWM``). The Engine
allocates and faults in every table when it is built (``Engine._allocate``), so its memory
is a function of its configured capacities, not of what it holds; a figure "per X at
configured capacity" is therefore the slope of RSS against the capacity of X, measured
between a small and a large capacity with everything else equal (fixed costs cancel):

- ``bytes_per_resting_order``: max_orders = 1/10 of ``orders`` against max_orders =
  ``orders``, each filled with that many resting (non-crossing GTC limit) orders over
  1,000 accounts and 8 instruments; every order is checked ACCEPTED and resting. Everything
  the core keeps per order: the order pool slot, its free-list entry, its share of the
  client-order-id index (2 slots per order, rounded up to a power of two).
- ``bytes_per_account``: max_accounts 1,000 against 1,000,000, all added, at
  max_assets = 16 (EngineConfig's default): the account record plus 16 balances.
- ``bytes_per_price_level``: max_price_levels 1,024 against 65,536 per book side, 8
  instruments: bytes per level of one side of one book.
- ``peak_rss_bytes``: the whole process's peak RSS (Python, numpy, the engine, the command
  chunks) holding ``orders`` resting orders; the same with ``large_orders`` (default
  10,000,000), and whether that fits in 2 GiB.
- ``snapshot_bytes_per_resting_order``: ``Engine.snapshot()`` of the filled engine, per
  order (what a snapshot row in PostgreSQL costs), taken after the RSS readings.

Targets (issue 6): <= 128 bytes per resting order; 10,000,000 resting orders in <= 2 GiB.
Caveats: RSS counts pages, so a slope is exact only to a page per table (negligible at
these sizes); with transparent huge pages a table is faulted in 2 MiB at a time.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

__all__ = ["run_memory_bench", "BYTES_PER_RESTING_ORDER_TARGET", "LARGE_ORDERS_BYTES_TARGET"]

BYTES_PER_RESTING_ORDER_TARGET = 128
LARGE_ORDERS_BYTES_TARGET = 2 * 1024**3
FILL_ACCOUNTS = 1_000
FILL_INSTRUMENTS = 8
FILL_LEVELS_PER_SIDE = 1_000
CHUNK_COMMANDS = 65_536
ACCOUNT_CHUNK_COMMANDS = 1_000
MID_PRICE_TICKS = 1_000_000
FUNDS = 10**15


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _setup_commands(accounts: int, instruments: int):
    from matchcore.core import commands as c

    records = [c.add_asset(0)] + [c.add_asset(1 + i) for i in range(instruments)]
    records += [c.add_account(a) for a in range(1, accounts + 1)]
    records += [c.add_instrument(i, 1 + i, 0, tick_size=1, lot_size=1, max_order_lots=1_000)
                for i in range(instruments)]
    records += [c.deposit(a, asset, FUNDS, 1 + asset)
                for a in range(1, accounts + 1) for asset in range(instruments + 1)]
    return c.pack(records)


def _resting_orders(start: int, stop: int, first_seq: int) -> np.ndarray:
    """Orders start..stop-1 of the fill: GTC limit buys below and sells above the mid, spread
    over accounts, instruments and levels, never crossing; client ids rise per account."""
    from matchcore.core.codes import CommandKind, OrderType, Side, StpMode, TimeInForce
    from matchcore.core.records import COMMAND_DTYPE

    index = np.arange(start, stop, dtype=np.int64)
    out = np.zeros(len(index), COMMAND_DTYPE)
    side = np.where(index % 2 == 0, Side.BUY, Side.SELL)
    level = (index // 16) % FILL_LEVELS_PER_SIDE
    out["seq"] = np.arange(first_seq, first_seq + len(index), dtype=np.uint64)
    out["kind"] = CommandKind.NEW_ORDER
    out["account_id"] = index % FILL_ACCOUNTS + 1
    out["client_id"] = index // FILL_ACCOUNTS + 1
    out["instrument_id"] = (index // 7) % FILL_INSTRUMENTS
    out["side"] = side
    out["order_type"] = OrderType.LIMIT
    out["time_in_force"] = TimeInForce.GTC
    out["stp_mode"] = StpMode.CANCEL_TAKER
    out["price"] = np.where(side == Side.BUY, MID_PRICE_TICKS - 1 - level, MID_PRICE_TICKS + 1 + level)
    out["quantity"] = 1
    return out


def _child_orders(max_orders: int, fill: int, snapshot: int = 0) -> dict:
    from matchcore.core import Engine, EngineConfig, commands as c
    from matchcore.core.codes import EventKind

    rss_start = _status_bytes("VmRSS")
    config = EngineConfig(max_accounts=FILL_ACCOUNTS + 1, max_assets=FILL_INSTRUMENTS + 1,
                          max_instruments=FILL_INSTRUMENTS, max_orders=max_orders,
                          max_price_levels=FILL_LEVELS_PER_SIDE + 24)
    engine = Engine(config)
    rss_built = _status_bytes("VmRSS")
    setup = c.number(_setup_commands(FILL_ACCOUNTS, FILL_INSTRUMENTS), first_seq=1)
    engine.apply(setup)
    seq = len(setup) + 1
    started = time.perf_counter()
    for start in range(0, fill, CHUNK_COMMANDS):
        chunk = _resting_orders(start, min(fill, start + CHUNK_COMMANDS), seq)
        events = engine.apply(chunk)
        if len(events) != len(chunk) or np.any(events["kind"] != EventKind.ACCEPTED):
            raise AssertionError("a fill order was not simply accepted to rest")
        seq += len(chunk)
        del chunk, events
    fill_seconds = time.perf_counter() - started
    if engine.live_order_count() != fill:
        raise AssertionError(f"{engine.live_order_count()} orders rest, expected {fill}")
    result = {"rss_start": rss_start, "rss_built": rss_built, "rss_filled": _status_bytes("VmRSS"),
              "peak_rss": _status_bytes("VmHWM"), "resting_orders": fill,
              "fill_seconds": fill_seconds}
    if snapshot:   # after the RSS readings: the snapshot's bytes are not the engine's
        result["snapshot_bytes"] = len(engine.snapshot())
    return result


def _child_accounts(max_accounts: int) -> dict:
    from matchcore.core import Engine, EngineConfig
    from matchcore.core.codes import CommandKind, EventKind
    from matchcore.core.records import COMMAND_DTYPE

    rss_start = _status_bytes("VmRSS")
    engine = Engine(EngineConfig(max_accounts=max_accounts, max_orders=1024, max_instruments=1,
                                 max_price_levels=16))
    # Chunks of one size for every capacity: apply() keeps its largest event buffer (2 MiB
    # or more) for reuse, which would otherwise count as per-account memory.
    for start in range(1, max_accounts, ACCOUNT_CHUNK_COMMANDS):
        chunk = np.zeros(min(max_accounts, start + ACCOUNT_CHUNK_COMMANDS) - start, COMMAND_DTYPE)
        chunk["seq"] = np.arange(start, start + len(chunk))
        chunk["kind"] = CommandKind.ADD_ACCOUNT
        chunk["account_id"] = chunk["seq"]
        if np.any(engine.apply(chunk)["kind"] != EventKind.COMMAND_DONE):
            raise AssertionError("an account was not added")
    return {"rss_start": rss_start, "rss_filled": _status_bytes("VmRSS"),
            "peak_rss": _status_bytes("VmHWM")}


def _child_levels(max_price_levels: int) -> dict:
    from matchcore.core import Engine, EngineConfig

    rss_start = _status_bytes("VmRSS")
    engine = Engine(EngineConfig(max_accounts=16, max_orders=1024, max_instruments=FILL_INSTRUMENTS,
                                 max_price_levels=max_price_levels))
    assert engine.live_order_count() == 0
    return {"rss_start": rss_start, "rss_filled": _status_bytes("VmRSS"),
            "peak_rss": _status_bytes("VmHWM")}


def _run_child(*arguments: str) -> dict:
    completed = subprocess.run([sys.executable, "-m", "matchcore.bench.memory_bench", "--child",
                                *arguments], capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"memory child {arguments} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _slope(small: dict, large: dict, small_count: int, large_count: int) -> float:
    """Bytes per unit of capacity: the growth of the engine's RSS between two capacities."""
    small_bytes = small["rss_filled"] - small["rss_start"]
    large_bytes = large["rss_filled"] - large["rss_start"]
    return (large_bytes - small_bytes) / (large_count - small_count)


def measure(orders: int, large_orders: int) -> dict:
    small_orders = max(orders // 10, 1024)
    orders_small = _run_child("orders", str(small_orders), str(small_orders))
    orders_full = _run_child("orders", str(orders), str(orders), "1")
    accounts_small, accounts_large = _run_child("accounts", "1000"), _run_child("accounts", "1000000")
    levels_small, levels_large = _run_child("levels", "1024"), _run_child("levels", "65536")
    result = {
        "bytes_per_resting_order": _slope(orders_small, orders_full, small_orders, orders),
        "bytes_per_resting_order_all_in": (orders_full["rss_filled"] - orders_full["rss_start"]) / orders,
        "bytes_per_account": _slope(accounts_small, accounts_large, 1000, 1_000_000),
        "bytes_per_price_level": _slope(levels_small, levels_large, 1024 * 2 * FILL_INSTRUMENTS,
                                        65536 * 2 * FILL_INSTRUMENTS),
        "resting_orders": orders,
        "peak_rss_bytes": orders_full["peak_rss"],
        "engine_built_then_filled_rss_growth_bytes": orders_full["rss_filled"] - orders_full["rss_built"],
        "fill_orders_per_s": orders / orders_full["fill_seconds"],
        "snapshot_bytes": orders_full["snapshot_bytes"],
        "snapshot_bytes_per_resting_order": orders_full["snapshot_bytes"] / orders,
    }
    if large_orders:
        large = _run_child("orders", str(large_orders), str(large_orders))
        result.update({"large_resting_orders": large_orders, "large_peak_rss_bytes": large["peak_rss"],
                       "large_fits_2_gib": large["peak_rss"] <= LARGE_ORDERS_BYTES_TARGET})
    return result


def run_memory_bench(orders: int = 1_000_000, as_json: bool = False, *,
                     large_orders: int = 10_000_000) -> dict:
    """Measure and print (text, or one JSON object with ``as_json``); return the figures.
    ``large_orders`` = 0 skips the 10-million-order run."""
    from matchcore.bench.machine import machine_info, print_header

    if orders < 10_240:
        raise ValueError("orders must be at least 10,240 (the slope needs two capacities)")
    parameters = {"orders": orders, "large_orders": large_orders, "accounts": FILL_ACCOUNTS,
                  "instruments": FILL_INSTRUMENTS, "levels_per_side": FILL_LEVELS_PER_SIDE}
    if not as_json:
        print_header("matchcore-bench memory", parameters)
    result = measure(orders, large_orders)
    result.update({"machine": machine_info(), "parameters": parameters,
                   "target_bytes_per_resting_order": BYTES_PER_RESTING_ORDER_TARGET,
                   "target_large_bytes": LARGE_ORDERS_BYTES_TARGET})
    if as_json:
        print(json.dumps(result))
    else:
        print(format_report(result))
    return result


def format_report(result: dict) -> str:
    met = result["bytes_per_resting_order"] <= BYTES_PER_RESTING_ORDER_TARGET
    lines = [
        f"checksum: {result['resting_orders']:,} orders accepted and resting (checked)",
        f"bytes per resting order:     {result['bytes_per_resting_order']:8.1f}  "
        f"(target <= {BYTES_PER_RESTING_ORDER_TARGET}: {'met' if met else 'MISSED'}; "
        f"all-in incl. fixed tables {result['bytes_per_resting_order_all_in']:.1f})",
        f"bytes per account:           {result['bytes_per_account']:8.1f}  (max_assets = 16)",
        f"bytes per price level:       {result['bytes_per_price_level']:8.1f}  (per book side)",
        f"peak RSS, {result['resting_orders']:,} resting orders: "
        f"{result['peak_rss_bytes'] / 2**20:,.0f} MiB (whole process)",
        f"snapshot: {result['snapshot_bytes'] / 2**20:,.1f} MiB, "
        f"{result['snapshot_bytes_per_resting_order']:.1f} bytes per resting order",
        f"filling then grew RSS by {result['engine_built_then_filled_rss_growth_bytes'] / 2**20:,.1f} "
        f"MiB: tables are faulted in when the engine is built",
    ]
    if "large_resting_orders" in result:
        fits = "fits" if result["large_fits_2_gib"] else "does NOT fit"
        lines.append(f"peak RSS, {result['large_resting_orders']:,} resting orders: "
                     f"{result['large_peak_rss_bytes'] / 2**20:,.0f} MiB: {fits} in 2 GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        kind, numbers = argv[1], [int(a) for a in argv[2:]]
        child = {"orders": _child_orders, "accounts": _child_accounts, "levels": _child_levels}[kind]
        print(json.dumps(child(*numbers)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000, help="resting orders")
    parser.add_argument("--large-orders", type=int, default=10_000_000,
                        help="resting orders of the 2 GiB check; 0 skips it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    run_memory_bench(args.orders, args.json, large_orders=args.large_orders)
    return 0


if __name__ == "__main__":
    sys.exit(main())
