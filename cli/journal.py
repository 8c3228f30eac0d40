"""``matchcore replay`` and ``matchcore export``: the journal, read back."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from matchcore.cli.database import add_database_options, database

from matchcore.errors import MatchcoreError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ExportError", "register"]

#: the columns of ``export trades`` CSV, in order (EVENT_DTYPE names)
TRADE_COLUMNS = ["seq", "timestamp_ns", "trade_id", "instrument_id", "side", "price", "quantity",
                 "account_id", "order_id", "fee", "counter_account_id", "counter_order_id",
                 "counter_fee"]


def register(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser("replay", help="rebuild the state from the journal")
    add_database_options(replay)
    replay.add_argument("--from", dest="from_seq", type=int, default=None,
                        help="start from the newest snapshot before this seq, so every command "
                             "from it on is applied (and checked with --verify); default: seq 1 "
                             "with --verify, else the newest snapshot at or before --to")
    replay.add_argument("--to", type=int, default=None, help="stop after this seq")
    replay.add_argument("--verify", action="store_true", help="re-derive and compare every event")
    replay.set_defaults(handler=replay_command)
    export = commands.add_parser("export", help="export journal data")
    exports = export.add_subparsers(dest="export", required=True)
    trades = exports.add_parser("trades", help="every fill, as CSV, .npy or Parquet")
    add_database_options(trades)
    trades.add_argument("--out", required=True, help="FILE.csv, FILE.npy or FILE.parquet (needs "
                        "pyarrow: pip install 'matchcore[quant]'); the suffix picks the format")
    trades.add_argument("--from", dest="from_seq", type=int, default=None)
    trades.add_argument("--to", type=int, default=None)
    trades.set_defaults(handler=export_trades_command)


def replay_command(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    # --verify checks the whole journal unless told where to start: from the newest snapshot
    # it would check only the commands after it (none, right after a snapshot)
    from_seq = 1 if args.verify and args.from_seq is None else args.from_seq
    with database(args) as dsn, Journal(dsn) as journal:
        result = replay(journal, until_seq=args.to, verify=args.verify, from_seq=from_seq)
    print(f"replayed {result.commands} commands in {result.batches} batches "
          f"(from snapshot at seq {result.snapshot_seq}) to seq {result.last_seq}")
    line = f"state_hash {result.engine.state_hash():016x}"
    if args.verify and result.commands == 0:
        line += f" (nothing verified: no command after seq {result.snapshot_seq})"
    elif args.verify:
        line += (f" verified seq {result.snapshot_seq + 1}..{result.last_seq} "
                 f"({result.commands} commands, every event byte for byte)")
    print(line)
    return 0


class ExportError(MatchcoreError):
    """An export that cannot be written as asked (unknown format, missing optional package)."""


#: output suffix -> format name
EXPORT_FORMATS = {".csv": "csv", ".npy": "npy", ".parquet": "parquet"}


def export_format(out: str) -> str:
    """The format ``out``'s suffix names; ExportError for any other suffix (never a silent CSV)."""
    suffix = Path(out).suffix.lower()
    if suffix not in EXPORT_FORMATS:
        raise ExportError(f"cannot tell the format of {out!r}: name it .csv, .npy or .parquet")
    return EXPORT_FORMATS[suffix]


def export_trades_command(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal

    kind = export_format(args.out)
    writer = {"csv": write_csv, "npy": write_npy, "parquet": write_parquet}[kind]
    if kind == "parquet":
        require_pyarrow()  # before the database is read: fail fast
    with database(args) as dsn, Journal(dsn) as journal:
        trades = journal.trades(args.from_seq, args.to)
    writer(trades, args.out)
    print(f"{len(trades)} trades written to {args.out} ({kind})")
    return 0


def require_pyarrow() -> None:
    """ExportError naming the extra when pyarrow cannot be imported."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as error:
        raise ExportError(f"writing Parquet needs pyarrow ({error}): "
                          f"pip install 'matchcore[quant]'") from None


def write_npy(trades: np.ndarray, out: str) -> None:
    import numpy as np

    np.save(out, trades)


def write_csv(trades: np.ndarray, out: str) -> None:
    import csv

    with open(out, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(TRADE_COLUMNS)
        writer.writerows(zip(*(trades[name].tolist() for name in TRADE_COLUMNS)))


def write_parquet(trades: np.ndarray, out: str) -> None:
    """One column per TRADE_COLUMNS name, with the EVENT_DTYPE field's integer type."""
    import numpy as np
    import pyarrow
    import pyarrow.parquet

    table = pyarrow.table({name: np.ascontiguousarray(trades[name]) for name in TRADE_COLUMNS})
    pyarrow.parquet.write_table(table, out)
