"""The database options every subcommand that reads or writes the journal shares."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Iterator

from matchcore.errors import MatchcoreError

__all__ = ["DatabaseUnavailableError", "add_database_options", "database"]


class DatabaseUnavailableError(MatchcoreError):
    """The journal database could not be reached or refused the command (a connection
    refused, a timeout, a wrong password or database name): the CLI prints it as one line."""


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
        with _one_line_errors(dsn):
            yield dsn
        return
    from matchcore.persistence.embedded import EmbeddedPostgres

    with EmbeddedPostgres(args.data_dir) as server, _one_line_errors(server.dsn):
        yield server.dsn


@contextlib.contextmanager
def _one_line_errors(dsn: str) -> Iterator[None]:
    """asyncpg's errors and OSError (refused, unreachable, timed out) inside the block become
    DatabaseUnavailableError naming the (redacted) address; other errors pass unchanged."""
    import asyncpg

    from matchcore.gateway.logs import redact_dsn

    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DatabaseUnavailableError(f"the journal database {redact_dsn(dsn)}: "
                                       f"{type(error).__name__}: {reason}") from error
