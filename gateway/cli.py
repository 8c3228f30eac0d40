"""The ``matchcore`` command: the server (``serve``), its keys (``keys``), ``demo``, replay,
exports and the benchmarks (``bench``)."""
from __future__ import annotations

import argparse
import contextlib
import os
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
                                                 "replay_commands": args.replay_commands,
                                                 "replay_repeats": args.replay_repeats})
    journal = run_journal_bench(commands=args.commands, batch=args.batch, dsn=args.dsn)
    replayed = run_replay_bench(commands=args.replay_commands, dsn=args.dsn,
                                repeats=args.replay_repeats)
    result = {**{k: v for k, v in journal.items() if k != "machine"}, **replayed,
              "machine": machine_info()}
    if args.json:
        print(json.dumps(result, default=str))
    else:
        print(f"journal:  {result['journal_cmds_per_s']:>12,.0f} commands/s durably journaled "
              f"(commit p50 {result['commit_latency_p50_ms']:.2f} ms, "
              f"p99 {result['commit_latency_p99_ms']:.2f} ms)")
        print(f"service:  {result['service_cmds_per_s']:>12,.0f} commands/s through core + journal, all durable")
        runs = ", ".join(f"{rate / 1e6:.2f}M" for rate in result["replay_cmds_per_s_runs"])
        print(f"replay:   {result['replay_cmds_per_s']:>12,.0f} commands/s replayed and verified "
              f"(median; runs {runs})")
        print(f"checksum: state_hash={result['state_hash']}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    with _database(args) as dsn, Journal(dsn) as journal:
        result = replay(journal, until_seq=args.to, verify=args.verify, from_seq=args.from_seq)
    print(f"replayed {result.commands} commands in {result.batches} batches "
          f"(from snapshot at seq {result.snapshot_seq}) to seq {result.last_seq}")
    print(f"state_hash {result.engine.state_hash():016x}" + (" verified" if args.verify else ""))
    return 0


def _export_trades(args: argparse.Namespace) -> int:
    import csv

    import numpy as np

    from matchcore.persistence import Journal

    with _database(args) as dsn, Journal(dsn) as journal:
        trades = journal.trades(args.from_seq, args.to)
    if args.out.endswith(".npy"):
        np.save(args.out, trades)
    else:
        columns = ["seq", "timestamp_ns", "trade_id", "instrument_id", "side", "price", "quantity",
                   "account_id", "order_id", "fee", "counter_account_id", "counter_order_id",
                   "counter_fee"]
        with open(args.out, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(zip(*(trades[name].tolist() for name in columns)))
    print(f"{len(trades)} trades written to {args.out}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from matchcore.gateway import logs
    from matchcore.gateway.app import run_server
    from matchcore.gateway.config import ConfigError, load_config, parse_value

    overrides = {"listen_host": args.host, "listen_port": args.port, "metrics_host": args.metrics_host,
                 "metrics_port": args.metrics_port, "dsn": args.dsn, "data_dir": args.data_dir,
                 "tls_cert": args.tls_cert, "tls_key": args.tls_key, "log_level": args.log_level}
    for assignment in args.set or ():
        key, _, value = assignment.partition("=")
        overrides[key.strip()] = parse_value(value.strip())
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as error:
        print(f"matchcore serve: {error}", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    return run_server(config, ready_file=args.ready_file)


def _keys(args: argparse.Namespace) -> int:
    import asyncio

    with _database(args) as dsn:
        return asyncio.run(_keys_async(args, dsn))


async def _keys_async(args: argparse.Namespace, dsn: str) -> int:
    from matchcore.gateway import auth
    from matchcore.gateway.keystore import PgKeyRegistry

    registry = await PgKeyRegistry.connect(dsn)
    try:
        if args.keys == "add":
            key = auth.generate_key()
            record = await registry.add(args.account, key.public_key, admin=args.admin, label=args.label or "")
            secret = key.private_pem()
            if args.out:
                descriptor = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(secret)
                print(f"key_id {record.key_id} account {record.account_id} admin {record.admin} "
                      f"fingerprint {record.fingerprint}; private key written to {args.out} (mode 0600)")
            else:
                print(f"key_id {record.key_id} account {record.account_id} admin {record.admin} "
                      f"fingerprint {record.fingerprint}")
                print("private key (shown once, not stored by the server):")
                sys.stdout.write(secret.decode())
        elif args.keys == "list":
            records = await registry.list(args.account)
            print(f"{'key_id':>8} {'account':>10} {'admin':>5} {'revoked':>7}  fingerprint")
            for record in records:
                print(f"{record.key_id:>8} {record.account_id:>10} {str(record.admin):>5} "
                      f"{str(record.revoked):>7}  {record.fingerprint}")
        else:
            if not await registry.revoke(args.key_id):
                print(f"no key {args.key_id}", file=sys.stderr)
                return 1
            print(f"key {args.key_id} revoked")
    finally:
        await registry.close()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from matchcore.bench.e2e_bench import run_demo

    return run_demo(clients=args.clients, seconds=args.seconds, data_dir=args.data_dir, dsn=args.dsn)


def _bench_e2e(args: argparse.Namespace) -> int:
    from matchcore.bench.e2e_bench import run_e2e_bench

    run_e2e_bench(clients=args.clients, seconds=args.seconds, rate=args.rate, warmup_s=args.warmup,
                  as_json=args.json, dsn=args.dsn, data_dir=args.data_dir)
    return 0


@contextlib.contextmanager
def _database(args: argparse.Namespace):
    """The DSN of --dsn or MATCHCORE_DSN, else of the embedded server (stopped after, if this
    command started it)."""
    dsn = args.dsn or os.environ.get("MATCHCORE_DSN")
    if dsn:
        yield dsn
        return
    from matchcore.persistence.embedded import EmbeddedPostgres

    with EmbeddedPostgres(args.data_dir) as server:
        yield server.dsn


def _bench_memory(args: argparse.Namespace) -> int:
    from matchcore.bench.memory_bench import run_memory_bench

    run_memory_bench(args.orders, args.json, large_orders=args.large_orders)
    return 0


def _bench_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matchcore.bench.report import GATE_LATEST, REPORT_PATH, run_report

    output = Path(args.output) if args.output else REPORT_PATH
    gate_latest = Path(args.gate_latest) if args.gate_latest else GATE_LATEST
    print(run_report(output, quick=args.quick, gate_latest=gate_latest, skip=set(args.skip)))
    print(f"written: {output}")
    return 0


def _bench_gate(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    gate = Path(args.root) / "ci" / "gate.py"
    if not gate.is_file():
        print(f"matchcore bench gate: no {gate}; run it in a matchcore checkout or pass --root",
              file=sys.stderr)
        return 2
    command = [sys.executable, str(gate)] + (["--update-baseline"] if args.update_baseline else [])
    return subprocess.run(command).returncode


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
    journal.add_argument("--replay-repeats", type=int, default=5,
                         help="replays of that journal; the median is reported")
    journal.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded)")
    journal.add_argument("--json", action="store_true", help="print one JSON object")
    journal.set_defaults(handler=_bench_journal)

    e2e = benches.add_parser("e2e", help="durable commands/s and ack latency over TCP, server and "
                                         "clients in separate processes")
    e2e.add_argument("--clients", type=int, default=2, help="load client processes")
    e2e.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after warm-up)")
    e2e.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not measured")
    e2e.add_argument("--rate", type=float, default=0.0,
                     help="offered commands/s, all clients together (0: as fast as acks allow)")
    e2e.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded, in a temp folder)")
    e2e.add_argument("--data-dir", default=None, help="embedded server's data folder (default: a temp folder)")
    e2e.add_argument("--json", action="store_true", help="print one JSON object")
    e2e.set_defaults(handler=_bench_e2e)
    memory = benches.add_parser("memory", help="bytes per resting order, account and price level; peak RSS")
    memory.add_argument("--orders", type=int, default=1_000_000, help="resting orders")
    memory.add_argument("--large-orders", type=int, default=10_000_000,
                        help="resting orders of the 2 GiB check (0: skip it)")
    memory.add_argument("--json", action="store_true", help="print one JSON object")
    memory.set_defaults(handler=_bench_memory)
    report = benches.add_parser("report", help="a Markdown page: latest figures against the baseline and the targets")
    report.add_argument("--output", default=None, help="the page (default: build/bench/report.md)")
    report.add_argument("--gate-latest", default=None,
                        help="the gate's latest figures (default: build/bench/gate-latest.json)")
    report.add_argument("--quick", action="store_true", help="tiny sizes, not representative")
    report.add_argument("--skip", nargs="*", default=[], help="stages not to run (core ring pipeline "
                        "codec journal replay journal_disk e2e memory)")
    report.set_defaults(handler=_bench_report)
    gate = benches.add_parser("gate", help="the CI performance gate: callgrind counts and a speed "
                                           "ratio against ci/baseline.json")
    gate.add_argument("--update-baseline", action="store_true", help="record this run as the baseline")
    gate.add_argument("--root", default=".", help="the matchcore checkout holding ci/gate.py")
    gate.set_defaults(handler=_bench_gate)

    def database_options(command):
        command.add_argument("--dsn", default=None, help="PostgreSQL address (or MATCHCORE_DSN; "
                             "default: the embedded server)")
        command.add_argument("--data-dir", default=None, help="embedded server's data folder")

    replay = commands.add_parser("replay", help="rebuild the state from the journal")
    database_options(replay)
    replay.add_argument("--from", dest="from_seq", type=int, default=None,
                        help="start from the newest snapshot before this seq, so every command "
                             "from it on is applied (and checked with --verify); default: the "
                             "newest snapshot at or before --to")
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

    serve = commands.add_parser("serve", help="run the server (embedded PostgreSQL unless --dsn)")
    serve.add_argument("--config", default=None, help="a TOML file (see docs/operations.md)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="trading port (default 7400; 0: any)")
    serve.add_argument("--metrics-host", default=None)
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9400; -1: off)")
    database_options(serve)
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain: TLS on")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    serve.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="any configuration field, e.g. limits.max_sessions=100 (repeatable)")
    serve.add_argument("--ready-file", default=None, help="write {port, metrics_port, pid} here once listening")
    serve.set_defaults(handler=_serve)

    keys = commands.add_parser("keys", help="client keys: add, list, revoke")
    key_commands = keys.add_subparsers(dest="keys", required=True)
    add = key_commands.add_parser("add", help="make a key pair for an account; store the public key")
    database_options(add)
    add.add_argument("--account", type=int, required=True)
    add.add_argument("--admin", action="store_true", help="the key may send admin commands")
    add.add_argument("--label", default=None, help="a note stored with the key")
    add.add_argument("--out", default=None, help="write the private key (PEM) to this new file, mode 0600, "
                     "instead of printing it")
    add.set_defaults(handler=_keys)
    listing = key_commands.add_parser("list", help="registered keys (public fingerprints only)")
    database_options(listing)
    listing.add_argument("--account", type=int, default=None)
    listing.set_defaults(handler=_keys)
    revoke = key_commands.add_parser("revoke", help="revoke a key (logins with it are refused)")
    database_options(revoke)
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(handler=_keys)

    demo = commands.add_parser("demo", help="server + embedded PostgreSQL + load clients; prints figures "
                               "and a replay verification, then stops")
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--seconds", type=float, default=5.0)
    database_options(demo)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matchcore.persistence.errors import PersistenceError

    try:
        return args.handler(args)
    except PersistenceError as error:  # typed and already explained: one line, no traceback
        print(f"matchcore {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
