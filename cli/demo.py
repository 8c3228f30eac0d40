"""``matchcore demo``: the server, an embedded PostgreSQL and load clients, with figures."""
from __future__ import annotations

import argparse

from matchcore.cli.database import add_database_options

__all__ = ["register"]


def register(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="server + embedded PostgreSQL + load clients; prints figures "
                               "and a replay verification, then stops")
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--seconds", type=float, default=5.0)
    add_database_options(demo)
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from matchcore.bench.e2e_bench import run_demo

    return run_demo(clients=args.clients, seconds=args.seconds, data_dir=args.data_dir, dsn=args.dsn)
