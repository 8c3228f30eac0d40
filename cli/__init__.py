"""The ``matchcore`` command: the server (``serve``), its keys (``keys``), ``demo``, replay,
exports, the admin commands (``admin``) and the benchmarks (``bench``). One module per subcommand registers its arguments and
holds its handler; nothing heavy is imported until a handler runs."""
from __future__ import annotations

import argparse
import sys

from matchcore.cli import admin, backup, bench, demo, journal, keys, serve

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matchcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (bench, journal, backup, serve, keys, demo, admin):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matchcore.errors import MatchcoreError

    try:
        return args.handler(args)
    except MatchcoreError as error:  # typed and already explained: one line, no traceback
        print(f"matchcore {args.command}: {error}", file=sys.stderr)
        return 2
