"""``matchcore database start|stop``: the embedded PostgreSQL of an existing data folder, run on
its own (``serve``, ``replay`` and ``export`` start and stop it themselves). For a journal kept
by ``matchcore-bench demo --keep``, or to read a stopped venue's journal with ``--dsn``."""
from __future__ import annotations

import argparse

from matchcore.errors import MatchcoreError

__all__ = ["register"]


class NoDataFolderError(MatchcoreError):
    """``database start`` on a folder that holds no embedded server's data."""


def register(commands: argparse._SubParsersAction) -> None:
    database = commands.add_parser("database", help="start or stop the embedded PostgreSQL of a "
                                   "data folder (one kept by matchcore-bench demo --keep, say)")
    actions = database.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="start it, leave it running and print its DSN")
    start.add_argument("--data-dir", default=None, help="the data folder (default: serve's)")
    start.add_argument("--database", default=None, help="print the DSN of this database "
                       "(default: the server's default database)")
    start.set_defaults(handler=start_command)
    stop = actions.add_parser("stop", help="stop it (clean shutdown); nothing if it is not running")
    stop.add_argument("--data-dir", default=None, help="the data folder (default: serve's)")
    stop.set_defaults(handler=stop_command)


def start_command(args: argparse.Namespace) -> int:
    from matchcore.persistence.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(args.data_dir)
    if not (server.pgdata / "PG_VERSION").exists():
        raise NoDataFolderError(f"{server.data_dir} holds no embedded PostgreSQL (no "
                                f"pgdata/PG_VERSION): matchcore serve makes one")
    from matchcore.cli.database import _one_line_errors

    dsn = server.start()  # not stopped on return: that is the point
    if args.database is not None:
        dsn = server.dsn_for(args.database)
        with _one_line_errors(dsn):  # a database that is not there: one line, exit 2
            server.grant(args.database)
    print(f"running:  {server.data_dir} on 127.0.0.1:{server.port}")
    print(f"dsn:      {dsn}")
    return 0


def stop_command(args: argparse.Namespace) -> int:
    from matchcore.persistence.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(args.data_dir)
    was_running = server.is_running()
    server.stop("fast")
    print(f"stopped:  {server.data_dir}" if was_running else f"not running: {server.data_dir}")
    return 0
