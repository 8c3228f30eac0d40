"""``matchcore replay`` and ``matchcore export``: the journal, read back."""
from __future__ import annotations

import argparse

from matchcore.cli.database import add_database_options, database

__all__ = ["register"]

#: the columns of ``export trades`` CSV, in order (EVENT_DTYPE names)
TRADE_COLUMNS = ["seq", "timestamp_ns", "trade_id", "instrument_id", "side", "price", "quantity",
                 "account_id", "order_id", "fee", "counter_account_id", "counter_order_id",
                 "counter_fee"]


def register(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="rebuild the state from the journal")
    add_database_options(replay)
    replay.add_argument("--from", dest="from_seq", type=int, default=None,
                        help="start from the newest snapshot before this seq, so every command "
                             "from it on is applied (and checked with --verify); default: the "
                             "newest snapshot at or before --to")
    replay.add_argument("--to", type=int, default=None, help="stop after this seq")
    replay.add_argument("--verify", action="store_true", help="re-derive and compare every event")
    replay.set_defaults(handler=replay_command)
    export = commands.add_parser("export", help="export journal data")
    exports = export.add_subparsers(dest="export", required=True)
    trades = exports.add_parser("trades", help="every fill, as CSV or .npy")
    add_database_options(trades)
    trades.add_argument("--out", required=True, help="FILE.csv or FILE.npy")
    trades.add_argument("--from", dest="from_seq", type=int, default=None)
    trades.add_argument("--to", type=int, default=None)
    trades.set_defaults(handler=export_trades_command)


def replay_command(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    with database(args) as dsn, Journal(dsn) as journal:
        result = replay(journal, until_seq=args.to, verify=args.verify, from_seq=args.from_seq)
    print(f"replayed {result.commands} commands in {result.batches} batches "
          f"(from snapshot at seq {result.snapshot_seq}) to seq {result.last_seq}")
    print(f"state_hash {result.engine.state_hash():016x}" + (" verified" if args.verify else ""))
    return 0


def export_trades_command(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from matchcore.persistence import Journal

    with database(args) as dsn, Journal(dsn) as journal:
        trades = journal.trades(args.from_seq, args.to)
    if args.out.endswith(".npy"):
        np.save(args.out, trades)
    else:
        with open(args.out, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(TRADE_COLUMNS)
            writer.writerows(zip(*(trades[name].tolist() for name in TRADE_COLUMNS)))
    print(f"{len(trades)} trades written to {args.out}")
    return 0
