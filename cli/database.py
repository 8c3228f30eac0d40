"""The database options every subcommand that reads or writes the journal shares."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator

__all__ = ["add_database_options", "database"]


def add_database_options(command: argparse.ArgumentParser) -> None:
    """``--dsn`` and ``--data-dir`` on ``command``."""
    command.add_argument("--dsn", default=None, help="PostgreSQL address (or MATCHCORE_DSN; "
                         "default: the embedded server)")
    command.add_argument("--data-dir", default=None, help="embedded server's data folder")


@contextlib.contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    """The DSN of --dsn or MATCHCORE_DSN, else of the embedded server (stopped after, if this
    command started it)."""
    dsn = args.dsn or os.environ.get("MATCHCORE_DSN")
    if args.dsn:
        from matchcore.gateway.logs import dsn_has_password

        if dsn_has_password(args.dsn):
            print("matchcore: warning: --dsn carries a password; a password on the command line is visible "
                  "to every local user: use a passfile (PGPASSFILE) or the environment", file=sys.stderr)
    if dsn:
        yield dsn
        return
    from matchcore.persistence.embedded import EmbeddedPostgres

    with EmbeddedPostgres(args.data_dir) as server:
        yield server.dsn
