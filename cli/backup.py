"""``matchcore backup`` and ``matchcore restore``: the journal database to one archive and back
(persistence/backup.py; docs/operations.md shows the round trip with a verified replay)."""
from __future__ import annotations

import argparse

from matchcore.cli.database import add_database_options, database

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    backup = commands.add_parser("backup", help="a consistent archive of the journal database (pg_dump)")
    add_database_options(backup)
    backup.add_argument("--out", required=True, help="the archive to write (a new file)")
    backup.set_defaults(handler=backup_command)
    restore = commands.add_parser("restore", help="load an archive into a (new) database, then replay --verify it")
    add_database_options(restore)
    restore.add_argument("--from", dest="archive", required=True, help="an archive written by matchcore backup")
    restore.set_defaults(handler=restore_command)


def backup_command(args: argparse.Namespace) -> int:
    from matchcore.persistence.backup import backup

    with database(args) as dsn:
        path = backup(dsn, args.out)
    print(f"backup written: {path} ({path.stat().st_size:,} bytes)")
    return 0


def restore_command(args: argparse.Namespace) -> int:
    from matchcore.persistence.backup import restore

    with database(args) as dsn:
        restore(args.archive, dsn)
    print(f"restored {args.archive}; check it with: matchcore replay --verify (same --dsn or --data-dir)")
    return 0
