"""``matchcore-bench ...``: every benchmark, each printing the machine, the versions, its
parameters and a checksum of the work before any figure (see docs/benchmarks.md), and
``matchcore-bench demo`` (a server, an embedded PostgreSQL and load clients). A command of its
own, owned by the benchmark package: the production command line (``matchcore``) imports no
benchmark code."""
from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matchcore-bench", description=__doc__)
    benches = parser.add_subparsers(dest="bench", required=True)
    _add_demo(benches)
    _add_core(benches)
    _add_step(benches)
    _add_session(benches)
    _add_ring(benches)
    _add_pipeline(benches)
    _add_journal(benches)
    _add_e2e(benches)
    _add_marketdata(benches)
    _add_abuse(benches)
    _add_memory(benches)
    _add_report(benches)
    _add_gate(benches)
    _add_failover(benches)
    return parser


def _add_failover(benches: argparse._SubParsersAction) -> None:
    failover = benches.add_parser("failover", help="kill the active matchcore and its PostgreSQL primary under "
                                  "load: the hot standby takes over (a local Patroni cluster)")
    failover.add_argument("--clients", type=int, default=2)
    failover.add_argument("--rate", type=float, default=500.0, help="orders per second per client")
    failover.add_argument("--before-s", type=float, default=3.0, help="trading before the kill")
    failover.add_argument("--after-s", type=float, default=3.0, help="trading on the new active after the failover")
    failover.add_argument("--kill", choices=["postgres", "machine"], default="postgres",
                          help="postgres: the postmaster and backends (Patroni hands over); machine: Patroni "
                          "too (the leader key expires: ttl 20 s)")
    failover.add_argument("--commit-rounds", type=int, default=300, help="commits timed, sync and local each")
    failover.add_argument("--nodes", type=int, default=2, help="PostgreSQL nodes (--kill machine needs 3)")
    failover.add_argument("--json", action="store_true", help="print one JSON object")
    failover.set_defaults(handler=bench_failover)


def bench_failover(args: argparse.Namespace) -> int:
    from matchcore.bench.failover_bench import run_failover_bench

    result = run_failover_bench(clients=args.clients, rate=args.rate, before_s=args.before_s, after_s=args.after_s,
                                kill=args.kill, json_out=args.json, commit_rounds=args.commit_rounds,
                                nodes=args.nodes)
    ok = (result["acked_events_lost"] == 0 and result["gaps"] == 0 and result["duplicates"] == 0
          and result["replay_verified"] and result["old_primary_fenced"])
    return 0 if ok else 1


def _add_session(benches: argparse._SubParsersAction) -> None:
    session = benches.add_parser("session", help="what one frame costs a session, by kind (accepted, "
                                                 "refused, heartbeat, over-rate)")
    session.add_argument("--frames", type=int, default=20_000, help="frames of each kind per run")
    session.add_argument("--repeats", type=int, default=5, help="runs; the median is reported")
    session.add_argument("--json", action="store_true", help="print one JSON object")
    session.set_defaults(handler=bench_session)


def bench_session(args: argparse.Namespace) -> int:
    from matchcore.bench.session_bench import run_session_bench

    run_session_bench(args.frames, args.repeats, args.json)
    return 0


def _add_core(benches: argparse._SubParsersAction) -> None:
    core = benches.add_parser("core", help="Engine vs ReferenceEngine on the mixed (or deep-book) workload")
    core.add_argument("--workload", choices=("mixed", "deep"), default="mixed",
                      help="mixed: bench/workload.py; deep: one instrument, ~490 orders a level, "
                           "one account per order (bench/deep_workload.py)")
    core.add_argument("--commands", type=int, default=1_000_000, help="measured commands")
    core.add_argument("--seed", type=int, default=1)
    core.add_argument("--reference-commands", type=int, default=50_000,
                      help="prefix run through ReferenceEngine (it is ~100x slower)")
    core.add_argument("--repeats", type=int, default=5, help="runs; the median is reported")
    core.add_argument("--json", action="store_true", help="print one JSON object")
    core.set_defaults(handler=bench_core)


def _add_step(benches: argparse._SubParsersAction) -> None:
    step = benches.add_parser("step", help="one command per call: Engine.stepper().step() and "
                                           "apply() of one record against apply() of a batch")
    step.add_argument("--commands", type=int, default=200_000, help="measured commands")
    step.add_argument("--seed", type=int, default=1)
    step.add_argument("--apply-commands", type=int, default=20_000,
                      help="prefix run through apply() one record at a time (slow)")
    step.add_argument("--repeats", type=int, default=5, help="runs; the median is reported")
    step.add_argument("--json", action="store_true", help="print one JSON object")
    step.set_defaults(handler=bench_step)


def bench_step(args: argparse.Namespace) -> int:
    from matchcore.bench.step_bench import run_step_bench

    run_step_bench(commands=args.commands, seed=args.seed, apply_commands=args.apply_commands,
                   repeats=args.repeats, as_json=args.json)
    return 0


def _add_ring(benches: argparse._SubParsersAction) -> None:
    ring = benches.add_parser("ring", help="records/s through the bare SPSC ring, two threads")
    ring.add_argument("--records", type=int, default=20_000_000, help="records per run")
    ring.add_argument("--batch", type=int, default=256, help="records per claim and per peek")
    ring.add_argument("--capacity", type=int, default=4096, help="ring capacity in records")
    ring.add_argument("--runs", type=int, default=5, help="measured runs; the median is reported")
    ring.add_argument("--json", action="store_true", help="print one JSON object")
    ring.set_defaults(handler=bench_ring)


def _add_pipeline(benches: argparse._SubParsersAction) -> None:
    pipeline = benches.add_parser("pipeline", help="commands/s through input ring, core thread, output ring")
    pipeline.add_argument("--commands", type=int, default=2_000_000)
    pipeline.add_argument("--seed", type=int, default=1)
    pipeline.add_argument("--repeats", type=int, default=3, help="runs; the median is reported")
    pipeline.add_argument("--json", action="store_true", help="print one JSON object")
    pipeline.set_defaults(handler=bench_pipeline)


def _add_journal(benches: argparse._SubParsersAction) -> None:
    journal = benches.add_parser("journal", help="durable journaling, core + journal, and replay speed")
    journal.add_argument("--commands", type=int, default=2_000_000, help="synthetic journal commands")
    journal.add_argument("--batch", type=int, default=4096, help="commands per journal row")
    journal.add_argument("--replay-commands", type=int, default=1_000_000,
                         help="mixed-workload commands through the durable core, then replayed")
    journal.add_argument("--replay-repeats", type=int, default=5,
                         help="replays of that journal; the median is reported")
    journal.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded)")
    journal.add_argument("--json", action="store_true", help="print one JSON object")
    journal.set_defaults(handler=bench_journal)


def _add_e2e(benches: argparse._SubParsersAction) -> None:
    e2e = benches.add_parser("e2e", help="durable commands/s and ack latency over TCP, server and "
                                         "clients in separate processes")
    e2e.add_argument("--clients", type=int, default=2, help="load client processes")
    e2e.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after warm-up)")
    e2e.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not measured")
    e2e.add_argument("--rate", type=float, default=0.0,
                     help="offered commands/s, all clients together (0: as fast as acks allow)")
    e2e.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded, in a temp folder)")
    e2e.add_argument("--data-dir", default=None, help="embedded server's data folder (default: a temp folder)")
    e2e.add_argument("--commands-in-flight-max", type=int, default=None,
                     help="the server's credit window per session (limits.commands_in_flight_max; "
                          "default: the server's)")
    e2e.add_argument("--rows-in-flight", type=int, default=None,
                     help="journal rows on the wire at once (journal_rows_in_flight_max; default: the server's)")
    e2e.add_argument("--journal-reference", type=int, default=0, metavar="COMMANDS",
                     help="first run bench journal (COMMANDS, with its warm-up) on the same PostgreSQL and "
                          "print e2e / journal (0: skip)")
    e2e.add_argument("--json", action="store_true", help="print one JSON object")
    e2e.set_defaults(handler=bench_e2e)


def _add_marketdata(benches: argparse._SubParsersAction) -> None:
    md = benches.add_parser("marketdata", help="the e2e load with and without N market data subscribers "
                                               "(throughput ratio, md messages/s, commit-to-subscriber latency)")
    md.add_argument("--subscribers", type=int, default=100, help="market data sessions, every instrument each")
    md.add_argument("--subscriber-processes", type=int, default=2, help="processes the subscribers run in")
    md.add_argument("--clients", type=int, default=2, help="load client processes")
    md.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after warm-up)")
    md.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not measured")
    md.add_argument("--rate", type=float, default=0.0, help="offered commands/s (0: full load)")
    md.add_argument("--repeats", type=int, default=1, help="alternated pairs of runs; medians reported")
    md.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded, in a temp folder)")
    md.add_argument("--json", action="store_true", help="print one JSON object")
    md.set_defaults(handler=bench_marketdata)


def bench_marketdata(args: argparse.Namespace) -> int:
    from matchcore.bench.marketdata_bench import run_marketdata_bench

    run_marketdata_bench(subscribers=args.subscribers, subscriber_processes=args.subscriber_processes,
                         clients=args.clients, seconds=args.seconds, warmup_s=args.warmup, rate=args.rate,
                         repeats=args.repeats, dsn=args.dsn, as_json=args.json)
    return 0


def _add_abuse(benches: argparse._SubParsersAction) -> None:
    abuse = benches.add_parser("abuse", help="a trader's order round trip while another client attacks "
                                             "(floods, refused frames, connection floods, scrapes)")
    abuse.add_argument("--samples", type=int, default=500, help="round trips per phase")
    abuse.add_argument("--phase-seconds", type=float, default=10.0, help="longest phase, seconds")
    abuse.add_argument("--attacks", nargs="*", default=None, help="some of the attacks (default: all)")
    abuse.add_argument("--dsn", default=None, help="a PostgreSQL to use (default: embedded, in a temp folder)")
    abuse.add_argument("--json", action="store_true", help="print one JSON object")
    abuse.set_defaults(handler=bench_abuse)


def _add_memory(benches: argparse._SubParsersAction) -> None:
    memory = benches.add_parser("memory", help="bytes per resting order, account and price level; peak RSS")
    memory.add_argument("--orders", type=int, default=1_000_000, help="resting orders")
    memory.add_argument("--large-orders", type=int, default=10_000_000,
                        help="resting orders of the 2 GiB check (0: skip it)")
    memory.add_argument("--json", action="store_true", help="print one JSON object")
    memory.set_defaults(handler=bench_memory)


def _add_report(benches: argparse._SubParsersAction) -> None:
    report = benches.add_parser("report", help="a Markdown page: latest figures against the baseline and the targets")
    report.add_argument("--output", default=None, help="the page (default: build/bench/report.md)")
    report.add_argument("--gate-latest", default=None,
                        help="the gate's latest figures (default: build/bench/gate-latest.json)")
    report.add_argument("--quick", action="store_true", help="tiny sizes, not representative")
    report.add_argument("--skip", nargs="*", default=[], help="stages not to run (core ring pipeline "
                        "codec journal replay journal_disk e2e memory)")
    report.set_defaults(handler=bench_report)


def _add_gate(benches: argparse._SubParsersAction) -> None:
    gate = benches.add_parser("gate", help="the CI performance gate: callgrind counts and a speed "
                                           "ratio against ci/baseline.json")
    gate.add_argument("--update-baseline", action="store_true", help="record this run as the baseline")
    gate.add_argument("--root", default=".", help="the matchcore checkout holding ci/gate.py")
    gate.set_defaults(handler=bench_gate)


def bench_core(args: argparse.Namespace) -> int:
    from matchcore.bench.core_bench import run_core_bench

    run_core_bench(commands=args.commands, seed=args.seed, reference_commands=args.reference_commands,
                   repeats=args.repeats, as_json=args.json, workload_name=args.workload)
    return 0


def bench_ring(args: argparse.Namespace) -> int:
    from matchcore.bench.ring_bench import run_ring_bench

    run_ring_bench(records=args.records, batch=args.batch, json=args.json, capacity=args.capacity,
                   runs=args.runs)
    return 0


def bench_pipeline(args: argparse.Namespace) -> int:
    from matchcore.bench.pipeline_bench import run_pipeline_bench

    run_pipeline_bench(commands=args.commands, seed=args.seed, repeats=args.repeats, as_json=args.json)
    return 0


def bench_journal(args: argparse.Namespace) -> int:
    import json

    from matchcore.bench.journal_bench import run_journal_bench
    from matchcore.bench.machine import machine_info, print_header
    from matchcore.bench.replay_bench import run_replay_bench

    if not args.json:
        print_header("matchcore-bench journal", {"commands": args.commands, "batch": args.batch,
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


def bench_e2e(args: argparse.Namespace) -> int:
    from matchcore.bench.e2e_bench import run_e2e_bench

    run_e2e_bench(clients=args.clients, seconds=args.seconds, rate=args.rate, warmup_s=args.warmup,
                  as_json=args.json, dsn=args.dsn, data_dir=args.data_dir,
                  commands_in_flight_max=args.commands_in_flight_max, rows_in_flight=args.rows_in_flight,
                  journal_reference=args.journal_reference)
    return 0


def bench_abuse(args: argparse.Namespace) -> int:
    from matchcore.bench.abuse_bench import ATTACKS, run_abuse_bench

    run_abuse_bench(samples=args.samples, phase_s=args.phase_seconds, attacks=tuple(args.attacks or ATTACKS),
                    as_json=args.json, dsn=args.dsn)
    return 0


def bench_memory(args: argparse.Namespace) -> int:
    from matchcore.bench.memory_bench import run_memory_bench

    run_memory_bench(args.orders, args.json, large_orders=args.large_orders)
    return 0


def bench_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from matchcore.bench.report import GATE_LATEST, REPORT_PATH, run_report

    output = Path(args.output) if args.output else REPORT_PATH
    gate_latest = Path(args.gate_latest) if args.gate_latest else GATE_LATEST
    print(run_report(output, quick=args.quick, gate_latest=gate_latest, skip=set(args.skip)))
    print(f"written: {output}")
    return 0


def bench_gate(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    gate = Path(args.root) / "ci" / "gate.py"
    if not gate.is_file():
        print(f"matchcore-bench gate: no {gate}; run it in a matchcore checkout or pass --root",
              file=sys.stderr)
        return 2
    command = [sys.executable, str(gate)] + (["--update-baseline"] if args.update_baseline else [])
    return subprocess.run(command).returncode


def _add_demo(benches: argparse._SubParsersAction) -> None:
    demo = benches.add_parser("demo", help="server + embedded PostgreSQL + load clients; prints figures "
                              "and a replay verification, then stops")
    demo.add_argument("--clients", type=int, default=4)
    demo.add_argument("--seconds", type=float, default=5.0)
    demo.add_argument("--dsn", default=None, help="PostgreSQL address (default: embedded, in a temp folder)")
    demo.add_argument("--data-dir", default=None, help="embedded server's data folder")
    demo.add_argument("--keep", action="store_true", help="keep the journal database (and the embedded "
                      "server, running, with its folder) and print its DSN, for matchcore export/replay")
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    from matchcore.bench.e2e_bench import run_demo

    return run_demo(clients=args.clients, seconds=args.seconds, data_dir=args.data_dir, dsn=args.dsn,
                    keep=args.keep)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from matchcore.errors import run_command

    return run_command(f"matchcore-bench {args.bench}", args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
