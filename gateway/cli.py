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


def _bench_journal(args: argparse.Namespace) -> int:
    import json

    from matchcore.bench.journal_bench import run_journal_bench
    from matchcore.bench.machine import machine_info, print_header
    from matchcore.bench.replay_bench import run_replay_bench

    if not args.json:
        print_header("matchcore bench journal", {"commands": args.commands, "batch": args.batch,
                                                 "replay_commands": args.replay_commands})
    journal = run_journal_bench(commands=args.commands, batch=args.batch, dsn=args.dsn)
    replayed = run_replay_bench(commands=args.replay_commands, dsn=args.dsn)
    result = {**{k: v for k, v in journal.items() if k != "machine"}, **replayed,
              "machine": machine_info()}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"journal:  {result['journal_cmds_per_s']:>12,.0f} commands/s durably journaled "
              f"(commit p50 {result['commit_latency_p50_ms']:.2f} ms, "
              f"p99 {result['commit_latency_p99_ms']:.2f} ms)")
        print(f"service:  {result['service_cmds_per_s']:>12,.0f} commands/s through core + journal, all durable")
        print(f"replay:   {result['replay_cmds_per_s']:>12,.0f} commands/s replayed and verified")
        print(f"checksum: state_hash={result['state_hash']}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    with Journal(_dsn(args)) as journal:
        result = replay(journal, until_seq=args.to, verify=args.verify)
    print(f"replayed {result.commands} commands in {result.batches} batches "
          f"(from snapshot at seq {result.snapshot_seq}) to seq {result.last_seq}")
    print(f"state_hash {result.engine.state_hash():016x}" + (" verified" if args.verify else ""))
    return 0


def _export_trades(args: argparse.Namespace) -> int:
    import numpy as np

    from matchcore.persistence import Journal

    with Journal(_dsn(args)) as journal:
        trades = journal.trades(args.from_seq, args.to)
    if args.out.endswith(".npy"):
        np.save(args.out, trades)
    else:
        columns = ["seq", "timestamp_ns", "trade_id", "instrument_id", "side", "price", "quantity",
                   "account_id", "order_id", "fee", "counter_account_id", "counter_order_id",
                   "counter_fee"]
        with open(args.out, "w") as handle:
            handle.write(",".join(columns) + "\n")
            for row in trades:
                handle.write(",".join(str(row[name]) for name in columns) + "\n")
    print(f"{len(trades)} trades written to {args.out}")
    return 0


def _dsn(args: argparse.Namespace) -> str:
    import os

    dsn = args.dsn or os.environ.get("MATCHCORE_DSN")
    if dsn:
        return dsn
    from matchcore.persistence.embedded import EmbeddedPostgres

    return EmbeddedPostgres(args.data_dir).start()


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
    journal = benches.add_parser("journal", help="durable journaling, core + journal, and replay speed")
    journal.add_argument("--commands", type=int, default=2_000_000, help="synthetic journal commands")
    journal.add_argument("--batch", type=int, default=4096, help="commands per journal row")
    journal.add_argument("--replay-commands", type=int, default=1_000_000,
                         help="mixed-workload commands through the durable core, then replayed")
    journal.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded)")
    journal.add_argument("--json", action="store_true", help="print one JSON object")
    journal.set_defaults(handler=_bench_journal)

    def database_options(command):
        command.add_argument("--dsn", default=None, help="PostgreSQL address (or MATCHCORE_DSN; "
                             "default: the embedded server)")
        command.add_argument("--data-dir", default=None, help="embedded server's data folder")

    replay = commands.add_parser("replay", help="rebuild the state from the journal")
    database_options(replay)
    replay.add_argument("--from", dest="from_seq", type=int, default=None,
                        help="(informative) replay starts at the newest snapshot at or before --to")
    replay.add_argument("--to", type=int, default=None, help="stop after this seq")
    replay.add_argument("--verify", action="store_true", help="re-derive and compare every event")
    replay.set_defaults(handler=_replay)
    export = commands.add_parser("export", help="export journal data")
    exports = export.add_subparsers(dest="export", required=True)
    trades = exports.add_parser("trades", help="every fill, as CSV or .npy")
    database_options(trades)
    trades.add_argument("--out", required=True, help="FILE.csv or FILE.npy")
    trades.add_argument("--from", dest="from_seq", type=int, default=None)
    trades.add_argument("--to", type=int, default=None)
    trades.set_defaults(handler=_export_trades)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
