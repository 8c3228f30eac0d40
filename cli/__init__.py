"""The ``matchcore`` command: the server (``serve``), its keys (``keys``), the admin commands
(``admin``), replay, exports, backups, the embedded database on its own (``database``), a local
replicated PostgreSQL (``cluster``). One module per subcommand registers its arguments and
holds its handler; nothing heavy is imported until a handler runs. The benchmarks and the
demo are a command of their own, ``matchcore-bench`` (bench/cli.py), which this package
never loads."""
from __future__ import annotations

import argparse

from matchcore.cli import admin, backup, cluster, database_server, journal, keys, serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matchcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (journal, backup, serve, keys, admin, database_server, cluster):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matchcore.errors import run_command

    return run_command(f"matchcore {args.command}", args.handler, args)
