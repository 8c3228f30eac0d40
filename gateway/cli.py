"""The ``matchcore`` command: ``matchcore bench core`` and, as they land, the server tools."""
from __future__ import annotations

import argparse
import sys


def _bench_core(args: argparse.Namespace) -> int:
    from matchcore.bench.core_bench import run_core_bench

    run_core_bench(commands=args.commands, seed=args.seed, reference_commands=args.reference_commands,
                   repeats=args.repeats, as_json=args.json)
    return 0


def _bench_ring(args: argparse.Namespace) -> int:
    from matchcore.bench.ring_bench import run_ring_bench

    run_ring_bench(records=args.records, batch=args.batch, json=args.json, capacity=args.capacity,
                   runs=args.runs)
    return 0


def _bench_pipeline(args: argparse.Namespace) -> int:
    from matchcore.bench.pipeline_bench import run_pipeline_bench

    run_pipeline_bench(commands=args.commands, seed=args.seed, repeats=args.repeats, as_json=args.json)
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
    ring = benches.add_parser("ring", help="records/s through the bare SPSC ring, two threads")
    ring.add_argument("--records", type=int, default=20_000_000, help="records per run")
    ring.add_argument("--batch", type=int, default=256, help="records per claim and per peek")
    ring.add_argument("--capacity", type=int, default=4096, help="ring capacity in records")
    ring.add_argument("--runs", type=int, default=5, help="measured runs; the median is reported")
    ring.add_argument("--json", action="store_true", help="print one JSON object")
    ring.set_defaults(handler=_bench_ring)
    pipeline = benches.add_parser("pipeline", help="commands/s through input ring, core thread, output ring")
    pipeline.add_argument("--commands", type=int, default=2_000_000)
    pipeline.add_argument("--seed", type=int, default=1)
    pipeline.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    pipeline.add_argument("--json", action="store_true", help="print one JSON object")
    pipeline.set_defaults(handler=_bench_pipeline)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
