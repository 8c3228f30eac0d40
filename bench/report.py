"""``matchcore-bench report``: one Markdown page of where matchcore's figures stand.

    python -m matchcore.bench.report [--quick] [--output PATH] [--gate-latest PATH] [--skip STAGE ...]

It runs every stage's benchmark in this process (core, ring, pipeline, codec, journal,
durable core and replay, journal disk usage, memory), reads the latest run of the regression
gate (``ci/gate.py`` writes build/bench/gate-latest.json), and writes a page with two tables:
the figures against the targets named in the issues, and the gate's deterministic figures
against the committed baseline. A stage that cannot run here (no benchmark yet, no
PostgreSQL, an import error) is listed as not measured, with the reason; nothing is
estimated in its place. Wall-clock figures are from one run on whatever machine runs the
report, usually shared and noisy: read them as +-10-20%; the gate's counts are exact.

``--quick`` runs every stage at a small size (seconds; used by the tiny CI run so the report
cannot rot); its figures are not representative. The full run takes a few minutes.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import traceback
from pathlib import Path

__all__ = ["run_report", "TARGETS"]



def _root() -> Path:
    """The source checkout this file is in (an editable install), else the working directory."""
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "ci" / "gate.py").exists() else Path.cwd()


GATE_LATEST = _root() / "build" / "bench" / "gate-latest.json"
REPORT_PATH = _root() / "build" / "bench" / "report.md"

#: (stage, figure key, comparison, target, what, issue)
TARGETS = [
    ("core", "engine_cmds_per_s", ">=", 5_000_000, "Engine commands/s, mixed workload, one thread", 2),
    ("core", "speedup_vs_reference", ">=", 30, "Engine / ReferenceEngine, same run", 2),
    ("ring", "ring_records_per_s", ">=", 40_000_000, "records/s through the bare SPSC ring, 2 threads", 3),
    ("pipeline", "pipeline_cmds_per_s", ">=", 3_000_000, "commands/s, input ring -> core thread -> output ring", 3),
    ("journal", "journal_cmds_per_s", ">=", 1_000_000, "commands/s durably journaled (embedded PostgreSQL)", 4),
    ("replay", "replay_cmds_per_s", ">=", 3_000_000, "commands/s replayed from the journal, verified", 4),
    ("e2e", "e2e_cmds_per_s", ">=", 500_000, "durable commands/s, clients over TCP to ack", 5),
    ("e2e", "ack_latency_us_p99_at_100k", "<=", 5_000, "p99 ack latency (us) at 100,000 commands/s offered", 5),
    ("memory", "bytes_per_resting_order", "<=", 128, "bytes per resting order (all the core keeps)", 6),
    ("memory", "large_peak_rss_bytes", "<=", 2 * 1024**3, "peak RSS (bytes) with 10,000,000 resting orders", 6),
]

# stage -> (full size, quick size) of its main parameter
SIZES = {"core": (1_000_000, 20_000), "ring": (20_000_000, 200_000), "pipeline": (2_000_000, 20_000),
         "codec": (2_000_000, 20_000), "journal": (2_000_000, 40_960), "replay": (1_000_000, 20_000),
         "journal_disk": (1_000_000, 20_000), "memory": (1_000_000, 10_240), "e2e": (10, 1)}
E2E_OFFERED_PER_S = 100_000


def _quiet(function, *args, **kwargs):
    """Call a benchmark that prints its own report; keep only its return value."""
    with contextlib.redirect_stdout(io.StringIO()):
        return function(*args, **kwargs)


def _core(n: int) -> tuple[dict, str]:
    from matchcore.bench.core_bench import run_core_bench

    reference = min(n, 50_000)
    r = _quiet(run_core_bench, commands=n, reference_commands=reference, repeats=3, as_json=True)
    return r, f"matchcore-bench core --commands {n} --reference-commands {reference} --repeats 3"


def _ring(n: int) -> tuple[dict, str]:
    from matchcore.bench.ring_bench import run_ring_bench

    return (_quiet(run_ring_bench, n, 256, True, runs=3),
            f"matchcore-bench ring --records {n} --batch 256 --runs 3")


def _pipeline(n: int) -> tuple[dict, str]:
    from matchcore.bench.pipeline_bench import run_pipeline_bench

    return (_quiet(run_pipeline_bench, commands=n, repeats=3, as_json=True),
            f"matchcore-bench pipeline --commands {n} --repeats 3")


def _codec(n: int) -> tuple[dict, str]:
    from matchcore.bench.codec_bench import run_codec_bench

    return (_quiet(run_codec_bench, n, 65_536, 3, True),
            f"python -m matchcore.bench.codec_bench --messages {n} --repeats 3")


def _journal(n: int) -> tuple[dict, str]:
    from matchcore.bench.journal_bench import run_journal_bench

    return (_quiet(run_journal_bench, commands=n, batch=4096),
            f"python -m matchcore.bench.journal_bench --commands {n} --batch 4096")


def _replay(n: int) -> tuple[dict, str]:
    from matchcore.bench.replay_bench import run_replay_bench

    return (_quiet(run_replay_bench, commands=n),
            f"matchcore-bench journal --replay-commands {n} (the replay part)")


def _e2e(seconds: int) -> tuple[dict, str]:
    """Two runs of the whole system over loopback TCP: full load, then 100,000 commands/s offered."""
    try:
        from matchcore.bench.e2e_bench import run_e2e_bench
    except ImportError:
        raise LookupError("no end-to-end benchmark in this tree (issue 5: bench/e2e_bench.py); "
                          "the report does not estimate it") from None
    warmup_s = 2.0 if seconds >= 5 else 0.5
    full = _quiet(run_e2e_bench, seconds=seconds, warmup_s=warmup_s, as_json=True)
    paced = _quiet(run_e2e_bench, seconds=seconds, warmup_s=warmup_s, rate=E2E_OFFERED_PER_S,
                   as_json=True)
    figures = {key: value for key, value in full.items() if key not in ("machine", "parameters")}
    figures.update({"ack_latency_us_p50_at_100k": paced["ack_latency_us_p50"],
                    "ack_latency_us_p99_at_100k": paced["ack_latency_us_p99"],
                    "ack_latency_us_p999_at_100k": paced["ack_latency_us_p999"],
                    "e2e_cmds_per_s_at_100k": paced["e2e_cmds_per_s"]})
    return figures, (f"matchcore-bench e2e --seconds {seconds} --warmup {warmup_s:g}, then the same "
                     f"with --rate {E2E_OFFERED_PER_S}")


def _memory(n: int) -> tuple[dict, str]:
    from matchcore.bench.memory_bench import run_memory_bench

    large = 10_000_000 if n >= 1_000_000 else 0
    return (_quiet(run_memory_bench, n, True, large_orders=large),
            f"matchcore-bench memory --orders {n} --large-orders {large}")


async def _journal_disk_load(dsn: str, workload) -> dict:
    import asyncpg

    from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig

    connection = await asyncpg.connect(dsn)
    try:
        start_lsn = await connection.fetchval("SELECT pg_current_wal_lsn()")
        service = DurableCore(dsn, workload.config, config=DurableCoreConfig(snapshot_every_commands=0))
        await service.start()
        stream = workload.all()
        await service.submit_all(stream)
        await service.wait_released(len(stream), timeout_s=600)
        await service.stop()
        wal_bytes = await connection.fetchval(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)", start_lsn)
        row = await connection.fetchrow(
            "SELECT count(*) AS rows, sum(command_count) AS commands, sum(event_count) AS events,"
            " sum(octet_length(commands) + octet_length(events)) AS payload_bytes,"
            " pg_total_relation_size('journal') AS table_bytes FROM journal")
    finally:
        await connection.close()
    commands = int(row["commands"])
    per_million = 1_000_000 / commands
    return {"commands": commands, "events": int(row["events"]), "rows": int(row["rows"]),
            "events_per_command": int(row["events"]) / commands,
            "payload_bytes_per_million_commands": int(row["payload_bytes"]) * per_million,
            "table_bytes_per_million_commands": int(row["table_bytes"]) * per_million,
            "wal_bytes_per_million_commands": float(wal_bytes) * per_million}


def _journal_disk(n: int) -> tuple[dict, str]:
    """PostgreSQL bytes per million mixed-workload commands: payload, table (with TOAST and
    index), and WAL written, through the durable core (DurableCore) into the embedded server."""
    import uvloop

    from matchcore.bench.journal_bench import _server
    from matchcore.bench.replay_bench import _fresh
    from matchcore.bench.workload import mixed_workload

    workload = mixed_workload(n, seed=1)
    with _server(None, None) as admin_dsn:
        dsn = uvloop.run(_fresh(admin_dsn, "matchcore_disk_report"))
        figures = uvloop.run(_journal_disk_load(dsn, workload))
    return figures, f"python -m matchcore.bench.report (journal_disk stage, {n} mixed commands)"


STAGES = {"core": _core, "ring": _ring, "pipeline": _pipeline, "codec": _codec,
          "journal": _journal, "replay": _replay, "journal_disk": _journal_disk, "e2e": _e2e,
          "memory": _memory}


def collect(quick: bool, skip: set[str]) -> dict:
    """stage -> {"figures", "command", "seconds"} or {"error"}."""
    unknown = set(skip) - STAGES.keys()
    if unknown:
        raise ValueError(f"no such stage to skip: {', '.join(sorted(unknown))} "
                         f"(stages: {' '.join(STAGES)})")
    results = {}
    for stage, run in STAGES.items():
        if stage in skip:
            results[stage] = {"error": "skipped (--skip)"}
            continue
        size = SIZES.get(stage, (0, 0))[1 if quick else 0]
        started = time.perf_counter()
        try:
            figures, command = run(size)
            results[stage] = {"figures": figures, "command": command,
                              "seconds": time.perf_counter() - started}
        except LookupError as missing:
            results[stage] = {"error": str(missing)}
        except Exception as error:  # a stage that fails is reported, not hidden
            last = traceback.format_exception_only(type(error), error)[-1].strip()
            results[stage] = {"error": f"failed: {last}"}
    return results


def _latency_us(value: float | None) -> str:
    """A latency percentile from the load clients' histogram (None: beyond its 60 s range)."""
    from matchcore.bench.histogram import format_latency_us

    return format_latency_us(value)


def _value(value: float, key: str) -> str:
    if "latency_us" in key:
        return _latency_us(value)
    if key.endswith("_bytes"):
        return f"{value / 2**20:,.0f} MiB"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def targets_table(results: dict) -> list[str]:
    lines = ["| stage | figure | measured | target | status | measured with |",
             "|---|---|---:|---:|---|---|"]
    for stage, key, comparison, target, what, issue in TARGETS:
        result = results.get(stage, {"error": "not run"})
        figures = result.get("figures", {})
        if key not in figures:
            reason = result.get("error") or f"the benchmark does not report {key}"
            lines.append(f"| {stage} | {what} | not measured | {comparison} {_value(target, key)} "
                         f"| - | {reason} |")
            continue
        value = figures[key]
        if value is None:  # a latency beyond the histogram's range: known to be too slow
            met = comparison == ">="
        else:
            met = value >= target if comparison == ">=" else value <= target
        lines.append(f"| {stage} | {what} | {_value(value, key)} | {comparison} "
                     f"{_value(target, key)} | {'met' if met else '**missed**'} | "
                     f"`{result['command']}` |")
    return lines


def gate_table(gate_latest: Path) -> list[str]:
    if not gate_latest.exists():
        return [f"No gate run recorded at `{gate_latest}`: run `python ci/gate.py` first."]
    latest = json.loads(gate_latest.read_text())
    lines = [f"From `{gate_latest}` ({latest['time']}, baseline `{latest['baseline']}`, "
             f"compiler {latest['toolchain']['compiler']}).", "",
             "| figure | baseline | latest | change | limit | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for row in latest["rows"]:
        def number(v):
            return "-" if v is None else f"{v:,.1f}"

        def percent(v):
            return "-" if v is None else f"{v:+.2f}%"

        lines.append(f"| {row['figure']} | {number(row['baseline'])} | {number(row['current'])} | "
                     f"{percent(row['change_pct'])} | {percent(row['limit_pct'])} | {row['verdict']} |")
    return lines


def other_figures(results: dict) -> list[str]:
    """Figures without a target that the capacity plan uses."""
    lines = []
    core = results.get("core", {}).get("figures")
    if core:
        lines.append(f"- events per command, mixed workload: {core['events'] / core['commands']:.3f} "
                     f"({core['events']:,} events for {core['commands']:,} commands)")
    codec = results.get("codec", {}).get("figures")
    if codec:
        lines.append(f"- codec: {codec['decode_msgs_per_s']:,.0f} frames/s decoded, "
                     f"{codec['encode_events_per_s']:,.0f} event frames/s encoded")
    journal = results.get("journal", {}).get("figures")
    if journal:
        lines.append(f"- journal commit latency p50 {journal['commit_latency_p50_ms']:.2f} ms, p99 "
                     f"{journal['commit_latency_p99_ms']:.2f} ms (batches of 4,096 commands)")
    replay = results.get("replay", {}).get("figures")
    if replay:
        lines.append(f"- durable core (pipeline + journal, every command committed): "
                     f"{replay['service_cmds_per_s']:,.0f} commands/s")
    disk = results.get("journal_disk", {}).get("figures")
    if disk:
        lines.append(f"- journal in PostgreSQL, per million mixed-workload commands "
                     f"({disk['events_per_command']:.3f} events each): payload "
                     f"{disk['payload_bytes_per_million_commands'] / 1e6:,.1f} MB, table with TOAST "
                     f"and index {disk['table_bytes_per_million_commands'] / 1e6:,.1f} MB, WAL "
                     f"{disk['wal_bytes_per_million_commands'] / 1e6:,.1f} MB")
    e2e = results.get("e2e", {}).get("figures")
    if e2e:
        lines.append(f"- end to end at full load: ack latency p50 {_latency_us(e2e['ack_latency_us_p50'])} us, "
                     f"p99 {_latency_us(e2e['ack_latency_us_p99'])} us; at 100,000 commands/s offered: "
                     f"{e2e['e2e_cmds_per_s_at_100k']:,.0f} acked/s, p50 "
                     f"{_latency_us(e2e['ack_latency_us_p50_at_100k'])} us, p99.9 "
                     f"{_latency_us(e2e['ack_latency_us_p999_at_100k'])} us")
    memory = results.get("memory", {}).get("figures")
    if memory:
        lines.append(f"- memory: {memory['bytes_per_account']:.0f} bytes per account (16 assets), "
                     f"{memory['bytes_per_price_level']:.0f} bytes per price level, peak RSS "
                     f"{memory['peak_rss_bytes'] / 2**20:,.0f} MiB with "
                     f"{memory['resting_orders']:,} resting orders; a snapshot takes "
                     f"{memory['snapshot_bytes_per_resting_order']:.0f} bytes per resting order")
    return lines


def render(results: dict, gate_latest: Path, quick: bool) -> str:
    from matchcore.bench.machine import machine_info

    info = machine_info()
    lines = ["# matchcore: where the figures stand", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `matchcore-bench report"
             f"{' --quick' if quick else ''}` on {info['cpu']}, {info['cores']} cores "
             f"({info['platform']}); python {info['python']}, numpy {info['numpy']}, "
             f"cython {info['cython']}.", ""]
    if quick:
        lines += ["**Quick run: tiny sizes, the figures below are not representative.**", ""]
    lines += ["## Against the targets of the issues", ""] + targets_table(results)
    lines += ["", "Wall-clock figures, one run on a shared 2-core machine: read them as "
              "+-10-20%. Not measured means not measured: no figure is estimated.", ""]
    lines += ["## Other measured figures", ""] + (other_figures(results) or ["- none"])
    lines += ["", "## Regression gate (deterministic figures against ci/baseline.json)", ""]
    lines += gate_table(gate_latest)
    return "\n".join(lines) + "\n"


def run_report(output: Path = REPORT_PATH, *, quick: bool = False, gate_latest: Path = GATE_LATEST,
               skip: set[str] | None = None) -> str:
    """Measure, write the Markdown page to ``output``, return it."""
    results = collect(quick, skip or set())
    page = render(results, gate_latest, quick)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPORT_PATH, help="the Markdown page")
    parser.add_argument("--gate-latest", type=Path, default=GATE_LATEST,
                        help="the gate's latest figures (written by ci/gate.py)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI: keeps it from rotting)")
    parser.add_argument("--skip", nargs="*", default=[], choices=sorted(STAGES),
                        help="stages not to run (for example journal replay without PostgreSQL)")
    args = parser.parse_args(argv)
    print(run_report(args.output, quick=args.quick, gate_latest=args.gate_latest, skip=set(args.skip)))
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
