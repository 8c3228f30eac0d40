"""The ``matchcore`` command: ``matchcore bench core`` and, as they land, the server tools."""
from __future__ import annotations

import argparse
import sys


def _bench_core(args: argparse.Namespace) -> int:
    from matchcore.bench.core_bench import run_core_bench

    run_core_bench(commands=args.commands, seed=args.seed, reference_commands=args.reference_commands,
                   repeats=args.repeats, as_json=args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matchcore", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    benches = bench.add_subparsers(dest="bench", required=True)
    core = benches.add_parser("core", help="Engine vs ReferenceEngine on the mixed workload")
    core.add_argument("--commands", type=int, default=1_000_000, help="measured commands")
    core.add_argument("--seed", type=int, default=1)
    core.add_argument("--reference-commands", type=int, default=50_000,
                      help="prefix run through ReferenceEngine (it is ~100x slower)")
    core.add_argument("--repeats", type=int, default=5, help="runs; the median is reported")
    core.add_argument("--json", action="store_true", help="print one JSON object")
    core.set_defaults(handler=_bench_core)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
