"""``matchcore-bench e2e`` and ``matchcore-bench demo``: the whole system over loopback TCP.

Processes: PostgreSQL (embedded, in a temporary folder, unless ``--dsn``), the server
(``matchcore serve`` as a subprocess), and ``--clients`` load clients (``bench.loadgen``, one
process each). Every figure counts only commands whose ack arrived, and an ack is sent only
after the command's journal row is committed: all of them are durable.

Steps: a fresh database; an admin key and one key per client registered in the key table
(the private keys stay in this process and go to the clients through multiprocessing, never
on a command line); the server starts; an admin session creates the assets, accounts and
instruments and funds the accounts over the wire; the clients log in, wait at a barrier,
then run ``warmup + seconds``; acks that arrive in the measured ``seconds`` count for
``e2e_cmds_per_s``, and NEW_ORDERs sent in them give the ack latency histogram. The server
then stops (SIGTERM: drain, journal, LOGOUT), and ``demo`` replays the journal with
verification.

``demo --keep`` keeps the journal for analysis instead of dropping it: the database stays,
and with the embedded server so do its data folder and the server itself (left running, so
the printed DSN works at once). The kept database is handed to the application role (its
tables move into the role's schema, as for a journal of an older matchcore), so the DSN
printed is the least-privilege one. ``matchcore database stop|start --data-dir FOLDER``
stops the server and starts it again later.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path


from matchcore.bench import cpu_split
from matchcore.bench.histogram import RANGE_US_MAX, LatencyHistogram, format_latency_us
from matchcore.bench.loadgen import LoadResult, LoadSpec, run_load_client
from matchcore.bench.machine import machine_info, print_header
from matchcore.gateway.config import ServerConfig
from matchcore.gateway.sessions import GatewayLimits

__all__ = ["run_e2e_bench", "run_demo", "Venue", "set_up_market"]

INSTRUMENTS = 4
BASE_ASSET, QUOTE_ASSET = 0, 1
ADMIN_ACCOUNT = 0  # the fee account doubles as the operator's account
FUNDS_MINOR = 10**15


class Venue:
    """PostgreSQL + a server subprocess + the keys of an admin and ``clients`` traders."""

    def __init__(self, clients: int, *, dsn: str | None = None, data_dir: str | None = None,
                 server_settings: dict | None = None, log_path: str | None = None) -> None:
        self.clients = clients
        self.server_settings = server_settings or {}
        self._dsn_given = dsn
        self._data_dir_given = data_dir
        self.log_path = log_path
        self.temp_dir: Path | None = None
        self.embedded = None
        self.cluster_dsn = ""
        self.dsn = ""
        self.database = ""
        self.port = 0
        self.metrics_port = 0
        self.keys: dict[int, tuple[int, bytes]] = {}  # account -> (key_id, raw private key)
        self.process: subprocess.Popen | None = None
        self.kept = False  # close() leaves the database (and the embedded server) as they are

    def start_database(self) -> None:
        from matchcore.persistence.embedded import EmbeddedPostgres

        if self._dsn_given:
            self.cluster_dsn = self._dsn_given
        else:
            if self._data_dir_given:
                folder = Path(self._data_dir_given)
            else:
                self.temp_dir = Path(tempfile.mkdtemp(prefix="matchcore-e2e-"))
                self.temp_dir.chmod(0o755)  # as root, the server's OS user must enter it
                folder = self.temp_dir / "pg"
            self.embedded = EmbeddedPostgres(folder)
            self.embedded.start()
            self.cluster_dsn = self.embedded.admin_dsn  # it makes and drops the benchmark's database
        self.database = f"mc_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
        asyncio.run(_sql(self.cluster_dsn, f"CREATE DATABASE {self.database}"))
        head, _, _ = self.cluster_dsn.rpartition("/")
        self.dsn = f"{head}/{self.database}"

    def register_keys(self) -> None:
        asyncio.run(self._register_keys())

    async def _register_keys(self) -> None:
        from matchcore.client import keys as client_keys
        from matchcore.gateway.key_store import PgKeyRegistry

        registry = await PgKeyRegistry.connect(self.dsn)
        try:
            for account in [ADMIN_ACCOUNT] + self.trader_accounts():
                key = client_keys.generate_key()
                record = await registry.add(account, key.public_key, admin=account == ADMIN_ACCOUNT,
                                            label="e2e")
                self.keys[account] = (record.key_id, key.private_bytes_raw())
        finally:
            await registry.close()

    def trader_accounts(self) -> list[int]:
        return list(range(1, self.clients + 1))

    def start_server(self) -> None:
        ready = Path(tempfile.mkdtemp(prefix="matchcore-ready-")) / "ready.json"
        command = [sys.executable, "-m", "matchcore.cli", "serve", "--dsn", self.dsn, "--port", "0",
                   "--metrics-port", "0", "--ready-file", str(ready), "--log-level", "warning"]
        for key, value in self.server_settings.items():
            command += ["--set", f"{key}={value}"]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start within 60 s")
            time.sleep(0.05)
        ready_info = json.loads(ready.read_text())
        self.port, self.metrics_port = ready_info["port"], ready_info["metrics_port"]
        shutil.rmtree(ready.parent, ignore_errors=True)

    async def set_up_market(self) -> None:
        """Assets, accounts, instruments and deposits, through an admin session."""
        from matchcore.client import keys as client_keys
        from matchcore.client.connection import Client

        key_id, raw = self.keys[ADMIN_ACCOUNT]
        async with Client("127.0.0.1", self.port, account_id=ADMIN_ACCOUNT, key_id=key_id,
                          private_key=client_keys.load_private_key(raw)) as admin:
            await set_up_market(admin, self.trader_accounts(), INSTRUMENTS)

    def server_metrics(self) -> str:
        """The server's Prometheus text, or "" when it cannot be read."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            return ""

    def stop_server(self, timeout_s: float = 60) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def keep(self) -> str:
        """Keep the database (and the embedded server, running, and its folder) past close();
        the DSN to read the journal with: the application role's on the embedded server."""
        self.kept = True
        if self.embedded is None:
            return self.dsn
        self.embedded.grant(self.database)  # the journal's tables become the role's
        return self.embedded.dsn_for(self.database)

    @property
    def data_folder(self):
        """The embedded server's data folder (None on a given --dsn)."""
        return None if self.embedded is None else self.embedded.data_dir

    def close(self) -> None:
        self.stop_server()
        if self.kept:
            return
        # the bench's database goes, unless the whole (temporary) cluster goes with the folder
        if self.database and (self.embedded is None or self._data_dir_given):
            with contextlib.suppress(Exception):
                asyncio.run(_sql(self.cluster_dsn, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))
        if self.embedded is not None:
            with contextlib.suppress(Exception):  # stopped even when the DROP failed
                self.embedded.stop("fast")
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)


async def set_up_market(admin, traders: list[int], instruments: int) -> None:
    """Through an admin ``Client``: the two assets, the traders' accounts, ``instruments``
    instruments of them, and deposits of both assets to every trader."""
    from matchcore import protocol as p

    requests = [p.AddAsset(BASE_ASSET, 0, 1), p.AddAsset(QUOTE_ASSET, 2, 2)]
    requests += [p.AddAccount(account, 100 + account) for account in traders]
    requests += [p.AddInstrument(i, BASE_ASSET, QUOTE_ASSET, 1, 1, 1_000_000) for i in range(instruments)]
    transfer_id = 1
    for account in traders:
        for asset in (BASE_ASSET, QUOTE_ASSET):
            requests.append(p.Deposit(account, asset, transfer_id, FUNDS_MINOR))
            transfer_id += 1
    outcomes = await asyncio.gather(*(admin.request(r, timeout_s=30) for r in requests))
    refused = [(r, o.reason) for r, o in zip(requests, outcomes) if not o.accepted]
    if refused:
        raise RuntimeError(f"market set-up refused: {refused[:3]}")


async def _sql(dsn: str, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def server_settings(clients: int) -> dict:
    """Capacities for the benchmark: limits high enough that only the machine limits."""
    return {"engine.max_accounts": clients + 16, "engine.max_assets": 4, "engine.max_instruments": INSTRUMENTS,
            "engine.max_orders": 1 << 20, "engine.max_price_levels": 1024,
            "limits.rate_messages_per_s": 10_000_000, "limits.burst_messages": 1_000_000,
            "journal_batch_records_max": 16384, "journal_batch_delay_ms_max": 1.0,
            "snapshot_every_commands": 0,
            "metrics_cache_ms": 0}  # the window's two scrapes read the server's figures of that moment


def run_clients(venue: Venue, *, seconds: float, warmup_s: float, rate: float,
                window_commands: int, started=None) -> list[LoadResult]:
    """Run the load clients; ``started()`` is called the moment they start (warm-up first)."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(venue.clients + 1)
    results = context.Queue()
    processes = []
    for account in venue.trader_accounts():
        key_id, raw = venue.keys[account]
        spec = LoadSpec("127.0.0.1", venue.port, account, key_id, raw, instruments=INSTRUMENTS,
                        warmup_s=warmup_s, seconds=seconds, rate_per_s=rate / venue.clients if rate else 0.0,
                        window_commands=window_commands, seed=account)
        process = context.Process(target=run_load_client, args=(spec, barrier, results), daemon=True)
        process.start()
        processes.append(process)
    barrier.wait(timeout=120)
    if started is not None:
        started()
    collected = [results.get(timeout=warmup_s + seconds + 120) for _ in processes]
    for process in processes:
        process.join(30)
    errors = [r.error for r in collected if r.error]
    if errors:
        raise RuntimeError(f"load clients failed: {errors[:3]}")
    return collected


def summarize(results: list[LoadResult], seconds: float) -> dict:
    """The clients' figures together. A latency percentile that falls beyond the histogram's
    range (RANGE_US_MAX, 60 s) is None (JSON null): see ``ack_latency_overflow_share``."""
    histogram = LatencyHistogram()
    for result in results:
        histogram.merge(result.latency_histogram_us)
    acked_measured = sum(r.acked_measured for r in results)
    return {
        "e2e_cmds_per_s": acked_measured / seconds,
        "commands_acked_measured": acked_measured,
        "ack_latency_us_p50": histogram.percentile_us(0.50),
        "ack_latency_us_p99": histogram.percentile_us(0.99),
        "ack_latency_us_p999": histogram.percentile_us(0.999),
        "ack_latency_overflow_share": histogram.overflow_share,
        "ack_latency_range_us_max": RANGE_US_MAX,
        "latency_samples": histogram.total,
        "commands_sent": sum(r.sent for r in results),
        "commands_acked": sum(r.acked for r in results),
        "engine_rejects": sum(r.rejected for r in results),
        "session_rejects": sum(r.session_rejects for r in results),
        "fills": sum(r.fills for r in results),
    }


def run_e2e_bench(*, clients: int = 2, seconds: float = 10.0, rate: float = 0.0, warmup_s: float = 2.0,
                  as_json: bool = False, dsn: str | None = None, data_dir: str | None = None,
                  window_commands: int = 20_000, commands_in_flight_max: int | None = None,
                  rows_in_flight: int | None = None, journal_reference: int = 0) -> dict:
    """``window_commands``: the load clients' own bound on commands in flight; they keep to the
    server's credit window too (``commands_in_flight_max``, None: the server's default).
    ``journal_reference``: first run ``bench journal`` (that many commands, its own warm-up
    included) on the same PostgreSQL, so the e2e figure has its reference measured back to
    back in one run (``e2e_over_journal``); the journal's warm-up also leaves the server's WAL
    segments recycled, as in a server that has been running (0: no reference)."""
    settings = server_settings(clients)
    if commands_in_flight_max is not None:
        settings["limits.commands_in_flight_max"] = commands_in_flight_max
    if rows_in_flight is not None:
        settings["journal_rows_in_flight_max"] = rows_in_flight
    parameters = {"clients": clients, "seconds": seconds, "warmup_s": warmup_s, "rate": rate or "max",
                  "window_commands": window_commands,
                  "commands_in_flight_max": commands_in_flight_max or GatewayLimits().commands_in_flight_max,
                  "journal_rows_in_flight_max": rows_in_flight or ServerConfig().journal_rows_in_flight_max,
                  "instruments": INSTRUMENTS, "journal_reference_commands": journal_reference}
    if not as_json:
        print_header("matchcore-bench e2e", parameters)
    venue = Venue(clients, dsn=dsn, data_dir=data_dir, server_settings=settings)
    try:
        venue.start_database()
        reference = _journal_reference(venue.cluster_dsn, journal_reference) if journal_reference else None
        venue.register_keys()
        venue.start_server()
        asyncio.run(venue.set_up_market())
        scrapes = WindowScrapes(venue, warmup_s, seconds)
        results = run_clients(venue, seconds=seconds, warmup_s=warmup_s, rate=rate, window_commands=window_commands,
                              started=scrapes.started)
        server_side = scrapes.breakdown()
        exit_code = venue.stop_server()
        summary = summarize(results, seconds)
        summary["server"] = server_side
        summary["cpu"] = scrapes.cpu_breakdown(summary["commands_acked_measured"])
        summary["journal_last_seq"] = _journal_last_seq(venue.dsn)
        summary["journal_payload_bytes_per_command"] = asyncio.run(_payload_bytes_per_command(venue.dsn))
        summary["journal_payload_mb_per_s"] = summary["journal_payload_bytes_per_command"] * summary["e2e_cmds_per_s"] / 1e6
        summary["server_exit_code"] = exit_code
        if reference is not None:
            summary["journal_reference"] = reference
            summary["e2e_over_journal"] = summary["e2e_cmds_per_s"] / reference["journal_cmds_per_s"]
    finally:
        venue.close()
    result = {**summary, "parameters": parameters, "machine": machine_info()}
    if as_json:
        print(json.dumps(result, default=str))
    else:
        _print_summary(summary, rate)
    return result


def _journal_reference(admin_dsn: str, commands: int) -> dict:
    """``bench journal``'s measurement (warm-up, then ``commands`` journaled and read back) on
    the PostgreSQL of ``admin_dsn``, in uvloop as the journal bench runs it."""
    import uvloop

    from matchcore.bench.journal_bench import journal_figures

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        figures = runner.run(journal_figures(admin_dsn, commands))
    keys = ("warmup_cmds_per_s", "journal_cmds_per_s", "journal_payload_mb_per_s",
            "commit_latency_p50_ms", "commit_latency_p99_ms", "commands", "checksum")
    return {key: figures[key] for key in keys if key in figures}


class WindowScrapes:
    """The server's metrics read at the start and at the end of the clients' measured window
    (timers from ``started()``, the clients' start): ``breakdown()`` is what the server saw
    in that window only (``server_breakdown``)."""

    def __init__(self, venue: Venue, warmup_s: float, seconds: float) -> None:
        self.venue, self.warmup_s, self.seconds = venue, warmup_s, seconds
        self.texts: dict[str, str] = {}
        self.cpu: dict[str, cpu_split.CpuSnapshot] = {}
        self._timers: list[threading.Timer] = []

    def started(self) -> None:
        for name, delay_s in (("before", self.warmup_s), ("after", self.warmup_s + self.seconds)):
            timer = threading.Timer(delay_s, self._scrape, args=(name,))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def _scrape(self, name: str) -> None:
        self.cpu[name] = cpu_split.snapshot(self._cpu_groups())
        self.texts[name] = self.venue.server_metrics()

    def _cpu_groups(self) -> dict[str, cpu_split.Group]:
        server_pid, own_pid = self.venue.process.pid, os.getpid()
        return {"server": lambda pid, ppid, comm: pid == server_pid,
                "postgresql": lambda pid, ppid, comm: comm == "postgres",
                "clients": lambda pid, ppid, comm: ppid == own_pid,
                "bench": lambda pid, ppid, comm: pid == own_pid}

    def cpu_breakdown(self, commands: float) -> dict | None:
        """CPU a command acked in the measured window, by process group (``bench.cpu_split``)."""
        if "before" not in self.cpu or "after" not in self.cpu:
            return None
        return cpu_split.split(self.cpu["before"], self.cpu["after"], commands)

    def breakdown(self) -> dict:
        for timer in self._timers:
            timer.join(10)
        if "before" in self.texts and self.texts.get("after"):
            return {**server_breakdown(self.texts["after"], self.texts["before"]), "window": "measured"}
        return {**server_breakdown(self.venue.server_metrics()), "window": "whole run"}


#: bucket bounds (ms) at which the server's histograms are read for the breakdown
BREAKDOWN_MS = (1, 2, 5, 10)


def _scrape_histograms(metrics_text: str) -> tuple[dict[str, dict[float, float]], dict[str, float]]:
    """Cumulative bucket counts per histogram family, and the ``_sum``/``_count`` values."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        if "_bucket{" in name and 'le="' in name:
            family = name.split("_bucket{", 1)[0]
            bound = name.split('le="', 1)[1].split('"', 1)[0]
            buckets.setdefault(family, {})[float("inf") if bound == "+Inf" else float(bound)] = float(value)
        elif name.endswith(("_sum", "_count")) and "{" not in name:
            sums[name] = float(value)
    return buckets, sums


def histogram_quantile(counts: dict[float, float], fraction: float) -> float | None:
    """Prometheus's ``histogram_quantile``: linear inside the bucket the rank falls in (None
    when empty, or when it falls in the +Inf bucket)."""
    bounds = sorted(counts)
    total = counts.get(float("inf"), 0.0)
    if not total:
        return None
    rank, previous_bound, previous_count = fraction * total, 0.0, 0.0
    for bound in bounds:
        if counts[bound] >= rank:
            if bound == float("inf"):
                return None
            inside = counts[bound] - previous_count
            return previous_bound + (bound - previous_bound) * ((rank - previous_count) / inside if inside else 1.0)
        previous_bound, previous_count = bound, counts[bound]
    return None


def server_breakdown(metrics_text: str, before_text: str = "") -> dict:
    """From the server's own histograms, between two scrapes (``before_text``: the start of
    the measured window; empty: the whole run, warm-up included): the share of journal rows
    committed within each of BREAKDOWN_MS (INSERT to commit), of commands released within
    them (gateway stamp to release), their p50/p99 in ms (``histogram_quantile``), and the
    mean commands per row. Empty without metrics."""
    buckets, sums = _scrape_histograms(metrics_text)
    old_buckets, old_sums = _scrape_histograms(before_text)
    for family, counts in buckets.items():
        old = old_buckets.get(family, {})
        buckets[family] = {bound: value - old.get(bound, 0.0) for bound, value in counts.items()}
    sums = {name: value - old_sums.get(name, 0.0) for name, value in sums.items()}

    def within(family: str) -> dict[str, float]:
        counts = buckets.get(family, {})
        total = counts.get(float("inf"), 0.0)
        if not total:
            return {}
        return {f"{ms}ms": counts.get(ms / 1000, float("nan")) / total for ms in BREAKDOWN_MS}

    def quantile_ms(family: str, fraction: float) -> float | None:
        value = histogram_quantile(buckets.get(family, {}), fraction)
        return None if value is None else value * 1e3

    rows = sums.get("matchcore_journal_batch_commands_count", 0.0)
    commit, release = "matchcore_commit_latency_seconds", "matchcore_ack_latency_seconds"
    return {"commit_within": within(commit), "release_within": within(release),
            "commit_latency_ms_p50": quantile_ms(commit, 0.50), "commit_latency_ms_p99": quantile_ms(commit, 0.99),
            "release_latency_ms_p50": quantile_ms(release, 0.50), "release_latency_ms_p99": quantile_ms(release, 0.99),
            "journal_rows": rows,
            "commands_per_row": sums.get("matchcore_journal_batch_commands_sum", 0.0) / rows if rows else None}


def _print_summary(summary: dict, rate: float) -> None:
    offered = f" at {rate:,.0f} commands/s offered" if rate else " at full load"
    print(f"checksum: journal_last_seq={summary['journal_last_seq']} commands_acked={summary['commands_acked']} "
          f"fills={summary['fills']}")
    print(f"e2e:      {summary['e2e_cmds_per_s']:>12,.0f} durable commands/s acked{offered}")
    cpu = summary.get("cpu")
    if cpu:
        groups = ", ".join(f"{name} {us:.2f}" for name, us in cpu["cpu_us_per_command"].items())
        ceiling = cpu["ceiling_cmds_per_s"]
        print(f"cpu:      us a command acked, measured window: {groups}; machine {cpu['machine_cpu_us_per_command']:.2f} "
              f"({cpu['machine_busy_share']:.0%} of {cpu['cpus']} CPUs busy; at 100%: "
              f"{'n/a' if ceiling is None else f'{ceiling:,.0f}'} commands/s)")
    reference = summary.get("journal_reference")
    if reference:
        print(f"reference:{reference['journal_cmds_per_s']:>12,.0f} durable commands/s (bench journal on the same "
              f"server just before, {reference['commands']:,} commands, checksum {reference['checksum']}, "
              f"commit p99 {reference['commit_latency_p99_ms']:.2f} ms); e2e / journal = "
              f"{summary['e2e_over_journal']:.3f}")
    if summary.get("journal_payload_bytes_per_command"):
        print(f"journal:  {summary['journal_payload_bytes_per_command']:,.0f} payload bytes a command, "
              f"{summary['journal_payload_mb_per_s']:,.1f} MB/s committed")
    print(f"ack latency (NEW_ORDER, us): p50 {format_latency_us(summary['ack_latency_us_p50'])}  "
          f"p99 {format_latency_us(summary['ack_latency_us_p99'])}  "
          f"p99.9 {format_latency_us(summary['ack_latency_us_p999'])}  ({summary['latency_samples']:,} samples, "
          f"{summary['ack_latency_overflow_share']:.2%} over {RANGE_US_MAX // 1_000_000} s)")
    server = summary.get("server") or {}
    if server.get("commit_within") and server.get("release_within"):
        def shares(name: str) -> str:
            return " ".join(f"{limit} {share:.2%}" for limit, share in server[name].items())
        per_row = server.get("commands_per_row")
        print(f"server:   journal rows committed within {shares('commit_within')}; commands released "
              f"within {shares('release_within')}" + (f"; {per_row:,.0f} commands a row" if per_row else "")
              + f" (its own histograms, {server.get('window', 'whole run')})")
        commit_p99 = server.get("commit_latency_ms_p99")
        ack_p99 = summary["ack_latency_us_p99"]
        ratio = (f"; client ack p99 / commit p99 = {ack_p99 / 1e3 / commit_p99:.2f}"
                 if commit_p99 and ack_p99 is not None else "")
        print(f"server:   commit (INSERT to COMMIT) p50 {_ms(server.get('commit_latency_ms_p50'))} "
              f"p99 {_ms(commit_p99)} ms; release (stamp to events out) p50 "
              f"{_ms(server.get('release_latency_ms_p50'))} p99 {_ms(server.get('release_latency_ms_p99'))} ms"
              f" (histogram_quantile){ratio}")


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


async def _payload_bytes_per_command(dsn: str) -> float:
    """Journal payload (packed commands and events) per command, the whole run: what
    PostgreSQL writes for each (to compare with ``bench journal``'s synthetic rows)."""
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        commands, payload = await connection.fetchrow(
            "SELECT coalesce(sum(command_count), 0), coalesce(sum(octet_length(commands) + octet_length(events)), 0) "
            "FROM journal")
    finally:
        await connection.close()
    return float(payload) / commands if commands else 0.0


def _journal_last_seq(dsn: str) -> int:
    from matchcore.persistence import Journal

    with Journal(dsn) as journal:
        return journal.last_seq()


def run_demo(*, clients: int = 4, seconds: float = 5.0, data_dir: str | None = None, dsn: str | None = None,
             keep: bool = False) -> int:
    """``matchcore-bench demo``: see the module docstring; returns the process exit code."""
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    print_header("matchcore-bench demo", {"clients": clients, "seconds": seconds,
                                    "postgres": "given --dsn" if dsn else (data_dir or "embedded, temporary folder")})
    venue = Venue(clients, dsn=dsn, data_dir=data_dir, server_settings=server_settings(clients))
    try:
        started = time.perf_counter()
        venue.start_database()
        venue.register_keys()
        print(f"postgres: ready, database {venue.database}; {len(venue.keys)} keys registered "
              f"(1 admin, {clients} traders)")
        venue.start_server()
        print(f"server:   listening on 127.0.0.1:{venue.port} (pid {venue.process.pid})")
        asyncio.run(venue.set_up_market())
        print(f"market:   2 assets, {clients} accounts, {INSTRUMENTS} instruments, accounts funded over the wire")
        scrapes = WindowScrapes(venue, 1.0, seconds)
        results = run_clients(venue, seconds=seconds, warmup_s=1.0, rate=0.0, window_commands=20_000,
                              started=scrapes.started)
        server_side = scrapes.breakdown()
        exit_code = venue.stop_server()
        print(f"server:   stopped (exit code {exit_code}): everything acknowledged is journaled")
        summary = summarize(results, seconds)
        summary["server"] = server_side
        summary["cpu"] = scrapes.cpu_breakdown(summary["commands_acked_measured"])
        summary["journal_last_seq"] = _journal_last_seq(venue.dsn)
        _print_summary(summary, 0.0)
        verify_started = time.perf_counter()
        with Journal(venue.dsn) as journal:
            replayed = replay(journal, verify=True)
        verify_s = time.perf_counter() - verify_started
        print(f"replay:   {replayed.commands:,} commands from seq {replayed.snapshot_seq + 1} to {replayed.last_seq}, "
              f"every event re-derived and equal to the journal ({verify_s:.1f} s); "
              f"state_hash {replayed.engine.state_hash():016x}")
        ok = exit_code == 0 and replayed.last_seq == summary["journal_last_seq"]
        print(f"demo:     {'OK' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s")
        if keep:
            _print_kept(venue)
        return 0 if ok else 1
    finally:
        venue.close()


def _print_kept(venue: Venue) -> None:
    """``demo --keep``: where the journal is and how to read it (the DSN carries a password:
    the data folder's secrets are the user's own)."""
    kept_dsn = venue.keep()
    print(f"kept:     database {venue.database}")
    print(f"dsn:      {kept_dsn}")
    print(f"read it:  MATCHCORE_DSN='{kept_dsn}' matchcore export trades --out trades.csv "
          f"(or --dsn: it warns that a password on a command line is visible)")
    folder = venue.data_folder
    if folder is not None:
        print(f"server:   the embedded PostgreSQL on {folder} keeps running; "
              f"stop it: matchcore database stop --data-dir {folder}")
        print(f"later:    matchcore database start --data-dir {folder} --database {venue.database} "
              f"(prints the DSN again: the port can change); delete the folder when done")


if __name__ == "__main__":
    run_e2e_bench(clients=int(os.environ.get("CLIENTS", "4")), seconds=float(os.environ.get("SECONDS", "5")))
