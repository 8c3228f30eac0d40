"""``matchcore replay`` and ``matchcore export``: the journal, read back.

Both take a seq range (``--from``/``--to``, inclusive) and a time range (``--since``/``--until``,
ISO 8601 with a zone, half-open: ``since <= stamp < until``, on the commands' stamps); given
together, both apply (the intersection). A time without a zone is refused: it would be a
guess between the machine's zone and UTC."""
from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from matchcore.cli.database import add_database_options, database

from matchcore.errors import MatchcoreError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ExportError", "TimeArgumentError", "parse_time", "register"]

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
    replay.add_argument("--since", default=None, help="as --from, at the first command stamped "
                        "at or after this ISO 8601 time (with a zone: 2026-12-01T10:00:00Z)")
    replay.add_argument("--until", default=None, help="the state as of this ISO 8601 time: every "
                        "command stamped before it applied, none at or after it")
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
    trades.add_argument("--since", default=None, help="only commands stamped at or after this "
                        "ISO 8601 time (with a zone: 2026-12-01T10:00:00Z)")
    trades.add_argument("--until", default=None, help="only commands stamped before this time")
    trades.set_defaults(handler=export_trades_command)


def replay_command(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    since, until = time_arguments(args)
    with database(args) as dsn, Journal(dsn) as journal:
        from_seq, to_seq = args.from_seq, args.to
        if since is not None or until is not None:
            first, last = journal.seq_range(from_seq, to_seq, since=since, until=until)
            if first > last:
                raise TimeArgumentError(f"no command in the range asked for (seq {first}..{last})")
            from_seq = first if since is not None or from_seq is not None else None
            to_seq = last
        # --verify checks the whole journal unless told where to start: from the newest
        # snapshot it would check only the commands after it (none, right after a snapshot)
        if args.verify and from_seq is None:
            from_seq = 1
        if from_seq is not None and to_seq is not None and from_seq > to_seq:
            raise TimeArgumentError(f"--from {from_seq} is after --to {to_seq}")
        result = replay(journal, until_seq=to_seq, verify=args.verify, from_seq=from_seq)
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


class TimeArgumentError(MatchcoreError):
    """A --since/--until that is no ISO 8601 time with a zone, or a range with no command."""


# a fraction of a second: up to 9 digits kept (datetime holds 6)
_FRACTION = re.compile(r"[.,](\d+)")


def parse_time(option: str, text: str) -> int:
    """An ISO 8601 time with a zone (``Z`` or ``+01:00``) as int nanoseconds since the epoch;
    TimeArgumentError, naming ``option``, for anything else."""
    from matchcore.persistence.journal import time_ns

    example = "for example 2026-12-01T10:00:00Z"
    extra_ns, match = 0, _FRACTION.search(text)
    if match and len(match.group(1)) > 6:
        digits = match.group(1)
        if len(digits) > 9:
            raise TimeArgumentError(f"{option} {text!r}: at most 9 digits of a second")
        extra_ns = int(digits[6:].ljust(3, "0"))
        text = text[:match.start(1) + 6] + text[match.end(1):]
    try:
        point = datetime.fromisoformat(text)
    except ValueError:
        raise TimeArgumentError(f"{option} {text!r} is not an ISO 8601 time ({example})") from None
    if point.tzinfo is None:
        raise TimeArgumentError(f"{option} {text!r} has no time zone: add Z for UTC or an "
                                f"offset such as +01:00 ({example})")
    return time_ns(point) + extra_ns


def time_arguments(args: argparse.Namespace) -> tuple[int | None, int | None]:
    """``--since`` and ``--until`` as nanoseconds (None when not given)."""
    since = None if args.since is None else parse_time("--since", args.since)
    until = None if args.until is None else parse_time("--until", args.until)
    return since, until


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
    since, until = time_arguments(args)
    with database(args) as dsn, Journal(dsn) as journal:
        trades = journal.trades(args.from_seq, args.to, since=since, until=until)
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
