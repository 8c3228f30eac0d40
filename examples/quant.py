"""A quant's first look at a matchcore journal, notebook style (cells split by ``# %%``: run
it in VS Code/Jupyter cell by cell, or as a script).

    python examples/quant.py --dsn postgresql://... [--seq N] [--bar-seconds 1] [--no-plot]

The DSN comes from ``--dsn`` or ``MATCHCORE_DSN`` (``matchcore-bench demo --keep`` prints one).
It rebuilds the books at a past seq, makes OHLCV bars from the trades (numpy; a pandas
DataFrame too if pandas is installed), reads one account's balance history, and plots the
closes and the balance when matplotlib is installed, unless ``--no-plot`` or
``MATCHCORE_NO_PLOT=1``. ``--save FILE.npz`` keeps every array it made.

Prices are in ticks and quantities in lots (int64); nothing here turns them into floats
before the plot.
"""
# %% Settings: the journal and what to look at
from __future__ import annotations

import argparse
import os

import numpy as np

from matchcore.core.codes import Side
from matchcore.persistence import Journal
from matchcore.persistence.replay import replay

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dsn", default=os.environ.get("MATCHCORE_DSN"), help="the journal's PostgreSQL")
parser.add_argument("--seq", type=int, default=None, help="rebuild the books after this seq "
                    "(default: halfway through the journal)")
parser.add_argument("--bar-seconds", type=float, default=1.0, help="bar length, seconds")
parser.add_argument("--account", type=int, default=None, help="whose balances (default: the "
                    "account in the most trades)")
parser.add_argument("--asset", type=int, default=0, help="which asset's balance")
parser.add_argument("--levels", type=int, default=10, help="book levels shown per side")
parser.add_argument("--no-plot", action="store_true", default=bool(os.environ.get("MATCHCORE_NO_PLOT")),
                    help="skip the plot (or MATCHCORE_NO_PLOT=1)")
parser.add_argument("--save", default=None, help="FILE.npz: keep the arrays made here")
args, _ = parser.parse_known_args()  # known only: a notebook kernel adds arguments of its own
if not args.dsn:
    parser.error("give --dsn or set MATCHCORE_DSN")
journal = Journal(args.dsn)
last_seq = journal.last_seq()
print(f"journal: seqs 1..{last_seq}")

# %% The books at a past seq: replay from the nearest snapshot, then read the depth
book_seq = args.seq if args.seq is not None else last_seq // 2
past = replay(journal, until_seq=book_seq, verify=False)
trades = journal.trades()
instruments = np.unique(trades["instrument_id"]).tolist()
books = {instrument: (past.engine.depth(instrument, Side.BUY, args.levels),
                      past.engine.depth(instrument, Side.SELL, args.levels))
         for instrument in instruments}
for instrument, (bids, asks) in books.items():
    best_bid = bids[0, 0] if len(bids) else None
    best_ask = asks[0, 0] if len(asks) else None
    print(f"book of instrument {instrument} at seq {past.last_seq}: best bid {best_bid}, "
          f"best ask {best_ask}, {len(bids)} bid and {len(asks)} ask levels shown")

# %% Bars: OHLCV per instrument and time bucket, from the trades (one FILL event per trade)
BAR_DTYPE = np.dtype([("instrument_id", "<u4"), ("start_ns", "<i8"), ("open", "<i8"),
                      ("high", "<i8"), ("low", "<i8"), ("close", "<i8"), ("volume", "<i8"),
                      ("trades", "<i8")])


def make_bars(trades: np.ndarray, bar_ns: int) -> np.ndarray:
    """One row per (instrument, bucket) holding a trade; buckets are ``bar_ns`` long from
    the epoch. Trades are in seq order, so in time order within each instrument."""
    order = np.argsort(trades["instrument_id"], kind="stable")
    instrument = trades["instrument_id"][order]
    bucket = trades["timestamp_ns"][order] // bar_ns
    price, quantity = trades["price"][order], trades["quantity"][order]
    if len(order) == 0:
        return np.empty(0, BAR_DTYPE)
    new_bar = np.ones(len(order), dtype=bool)
    new_bar[1:] = (instrument[1:] != instrument[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(new_bar)
    ends = np.append(starts[1:], len(order)) - 1
    bars = np.empty(len(starts), BAR_DTYPE)
    bars["instrument_id"] = instrument[starts]
    bars["start_ns"] = bucket[starts] * bar_ns
    bars["open"], bars["close"] = price[starts], price[ends]
    bars["high"] = np.maximum.reduceat(price, starts)
    bars["low"] = np.minimum.reduceat(price, starts)
    bars["volume"] = np.add.reduceat(quantity, starts)
    bars["trades"] = ends - starts + 1
    return bars


bars = make_bars(trades, int(args.bar_seconds * 1e9))
print(f"bars: {len(bars)} of {args.bar_seconds:g} s from {len(trades)} trades, "
      f"volume {int(bars['volume'].sum())} lots")
try:
    import pandas  # not a dependency: only a nicer view when it is there
except ImportError:
    pandas = None
if pandas is not None:
    bars_frame = pandas.DataFrame(bars)
    bars_frame["start"] = pandas.to_datetime(bars_frame["start_ns"], utc=True)
    print(bars_frame.head())

# %% One account's balance history: (seq, timestamp_ns, available, held) after each change
if args.account is not None:
    account = args.account
else:
    counts = np.bincount(np.concatenate([trades["account_id"], trades["counter_account_id"]]))
    account = int(counts.argmax()) if len(counts) else 0
balances = journal.balance_history(account, args.asset)
print(f"account {account}, asset {args.asset}: {len(balances)} balance changes"
      + (f", now available {balances['available'][-1]} held {balances['held'][-1]}" if len(balances) else ""))

# %% Keep the arrays
if args.save:
    np.savez(args.save, bars=bars, balances=balances, book_seq=past.last_seq, account=account,
             **{f"bids_{i}": bids for i, (bids, _) in books.items()},
             **{f"asks_{i}": asks for i, (_, asks) in books.items()})
    print(f"saved: {args.save}")
journal.close()

# %% A plot, when matplotlib is installed and not told to skip it
if not args.no_plot:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
        print("plot: skipped (pip install matplotlib to see one)")
    if plt is not None:
        figure, (prices, money) = plt.subplots(2, 1, figsize=(10, 6))
        for instrument in instruments:
            mine = bars[bars["instrument_id"] == instrument]
            prices.step(mine["start_ns"] / 1e9, mine["close"], where="post", label=f"instrument {instrument}")
        prices.set_ylabel("close (ticks)")
        prices.legend()
        money.step(balances["timestamp_ns"] / 1e9, balances["available"], where="post", label="available")
        money.step(balances["timestamp_ns"] / 1e9, balances["held"], where="post", label="held")
        money.set_xlabel("time (s since the epoch)")
        money.set_ylabel(f"account {account}, asset {args.asset}")
        money.legend()
        plt.show()
