"""``matchcore-bench marketdata``: the e2e load with and without N market data subscribers.

Two runs in one invocation, each on a fresh database and server (``e2e_bench.Venue``): the e2e
load alone (``e2e_cmds_per_s_without_md``), then the same load with ``--subscribers`` sessions
of market-data-only keys subscribed to every instrument, spread over ``--subscriber-processes``
processes (``e2e_cmds_per_s``, ``md_messages_per_s``). ``--repeats`` alternates the two runs
and reports medians. Nothing is asserted: the figures are printed (``--json``: one object).

Latency (``md_latency_us_p*``): per read of a subscriber socket, the oldest increment in it
(its ``command_seq``) against the time its journal row was written (the row's ``written_at``,
PostgreSQL's ``now()`` of the writing transaction, taken just before the commit): so it is
commit-to-receipt plus the commit's own duration, an upper bound. The clocks are the same
machine's. Subscribers count frames without decoding them (72-byte increments).
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import statistics
import time

import numpy as np

from matchcore.bench.e2e_bench import ADMIN_ACCOUNT, INSTRUMENTS, Venue, _journal_last_seq, run_clients, \
    server_breakdown, server_settings, summarize
from matchcore.bench.histogram import format_latency_us
from matchcore.bench.machine import machine_info, print_header

__all__ = ["run_marketdata_bench"]

#: an account for the subscribers' keys (market data needs no engine account)
SUBSCRIBER_ACCOUNT = 1 << 30


def _subscriber_process(port: int, keys: list[tuple[int, bytes]], seconds: float, start_ns,
                        barrier, results) -> None:
    import uvloop
    try:
        results.put(uvloop.run(_subscribers(port, keys, seconds, start_ns, barrier)))
    except BaseException as error:  # handed to the parent
        results.put({"error": repr(error)})


async def _subscribers(port: int, keys: list[tuple[int, bytes]], seconds: float, start_ns,
                       barrier) -> dict:
    """The measured window starts at ``start_ns.value`` (set by the parent when the load
    clients start, plus their warm-up) and lasts ``seconds``."""
    loop = asyncio.get_running_loop()
    readers = [_Subscriber(key_id, raw) for key_id, raw in keys]
    await asyncio.gather(*(loop.create_connection(lambda r=r: r, "127.0.0.1", port) for r in readers))
    await asyncio.gather(*(r.subscribed for r in readers))
    await loop.run_in_executor(None, barrier.wait)
    while not start_ns.value:
        await asyncio.sleep(0.01)
    start, end = start_ns.value, start_ns.value + int(seconds * 1e9)
    for reader in readers:
        reader.window = (start, end)
    await asyncio.sleep(max(0.0, (end - time.time_ns()) / 1e9) + 0.5)
    return {"frames": sum(r.frames for r in readers), "bytes": sum(r.bytes for r in readers),
            "samples": np.concatenate([np.asarray(r.samples, np.int64).reshape(-1, 2) for r in readers]).tolist(),
            "logouts": sum(r.logouts for r in readers), "snapshots": sum(r.snapshots for r in readers)}


class _Subscriber(asyncio.Protocol):
    """Logs in with a market-data-only key, subscribes to everything, counts what arrives."""

    def __init__(self, key_id: int, raw: bytes) -> None:
        from matchcore.client import keys as client_keys
        self.key = client_keys.load_private_key(raw)
        self.key_id = key_id
        self.buffer = bytearray()
        self.logged_in = False
        self.subscribed = asyncio.get_running_loop().create_future()
        self.window = (1 << 62, 1 << 62)
        self.frames = self.bytes = self.logouts = self.snapshots = 0
        self.samples: list[tuple[int, int]] = []  # (command_seq of the oldest increment, receipt ns)
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        if not self.logged_in:
            return self._handshake(data)
        buffer = self.buffer
        if not buffer and len(data) >= 72 and data[0] == 72 and data[2] in _INCREMENTS:
            if self.window[0] <= now < self.window[1]:
                self.samples.append((int.from_bytes(data[24:32], "little"), now))
        buffer += data
        counted = self.window[0] <= now < self.window[1]
        whole = len(buffer) // 72
        if (whole and len(buffer) == whole * 72 and buffer[0] == 72 and buffer[2] in _INCREMENTS
                and buffer[-72] == 72 and buffer[-70] in _INCREMENTS):
            # the usual read: increments only (72 bytes each; a snapshot, 88 bytes, or QUERY_DONE,
            # 40, breaks the alignment and takes the walk below): counted in O(1)
            if counted:
                self.frames += whole
                self.bytes += whole * 72
            buffer.clear()
            return
        offset, end = 0, len(buffer)
        while end - offset >= 2:
            size = buffer[offset] | buffer[offset + 1] << 8
            if end - offset < size:
                break
            kind = buffer[offset + 2]
            if counted and kind in _INCREMENTS:
                self.frames += 1
                self.bytes += size
            elif kind == 139:
                self.snapshots += 1
            elif kind == 133:
                self.logouts += 1
            offset += size
        del buffer[:offset]

    def _handshake(self, data: bytes) -> None:
        from matchcore import protocol as p
        from matchcore.client import keys as client_keys
        self.buffer += data
        frames, used = p.split_frames(self.buffer)
        del self.buffer[:used]
        for index, frame in enumerate(frames):
            message = p.decode(frame)
            if isinstance(message, p.Challenge):
                login = client_keys.signed_login(self.key, account_id=SUBSCRIBER_ACCOUNT, key_id=self.key_id,
                                                 nonce=message.nonce, heartbeat_interval_ms=30_000)
                self.transport.write(login.encode())
            elif isinstance(message, p.LoginAccepted):
                self.logged_in = True
                self.transport.write(p.MdSubscribe(p.ALL_INSTRUMENTS, 0, 1).encode())
                self.subscribed.set_result(None)
                rest = b"".join(frames[index + 1:]) + bytes(self.buffer)
                self.buffer.clear()
                if rest:
                    self.data_received(rest)
                return
            elif isinstance(message, p.LoginRejected):
                self.subscribed.set_exception(RuntimeError(f"login refused: {message.reason}"))
                return


_INCREMENTS = frozenset((141, 142, 143, 144))


async def _register_subscriber_keys(venue: Venue, count: int) -> list[tuple[int, bytes]]:
    from matchcore.client import keys as client_keys
    from matchcore.gateway.key_store import PgKeyRegistry

    registry = await PgKeyRegistry.connect(venue.dsn)
    try:
        out = []
        for _ in range(count):
            key = client_keys.generate_key()
            record = await registry.add(SUBSCRIBER_ACCOUNT, key.public_key, market_data_only=True, label="md")
            out.append((record.key_id, key.private_bytes_raw()))
        return out
    finally:
        await registry.close()


async def _row_times(dsn: str) -> tuple[np.ndarray, np.ndarray]:
    import asyncpg
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT last_seq, (extract(epoch FROM written_at) * 1e9)::bigint AS at "
                                      "FROM journal ORDER BY first_seq")
    finally:
        await connection.close()
    return (np.array([r["last_seq"] for r in rows], np.int64), np.array([r["at"] for r in rows], np.int64))


def _one_run(subscribers: int, processes: int, *, clients: int, seconds: float, warmup_s: float, rate: float,
             window_commands: int, dsn: str | None) -> dict:
    settings = {**server_settings(clients), "limits.max_sessions_per_account": subscribers + 8,
                "limits.max_sessions_per_key": 4, "limits.max_sessions": subscribers + clients + 16,
                "limits.max_pending_logins": subscribers + 64, "limits.max_pending_logins_per_address": subscribers + 32}
    venue = Venue(clients, dsn=dsn, server_settings=settings)
    try:
        venue.start_database()
        venue.register_keys()
        keys = asyncio.run(_register_subscriber_keys(venue, subscribers)) if subscribers else []
        venue.start_server()
        asyncio.run(venue.set_up_market())
        context = multiprocessing.get_context("spawn")
        md_barrier = context.Barrier(processes + 1) if subscribers else None
        md_results = context.Queue()
        start_ns = context.Value("q", 0)
        workers = []
        for index in range(processes if subscribers else 0):
            share = keys[index::processes]
            worker = context.Process(target=_subscriber_process, args=(venue.port, share, seconds, start_ns,
                                                                      md_barrier, md_results), daemon=True)
            worker.start()
            workers.append(worker)
        if md_barrier is not None:
            md_barrier.wait(timeout=120)  # every subscriber has its snapshot
        def started() -> None:
            start_ns.value = time.time_ns() + int(warmup_s * 1e9)

        results = run_clients(venue, seconds=seconds, warmup_s=warmup_s, rate=rate, window_commands=window_commands,
                              started=started)
        md = [md_results.get(timeout=warmup_s + seconds + 120) for _ in workers]
        for worker in workers:
            worker.join(30)
        metrics = venue.server_metrics()
        venue.stop_server()
        summary = summarize(results, seconds)
        summary["journal_last_seq"] = _journal_last_seq(venue.dsn)
        summary["server"] = server_breakdown(metrics)
        summary["md_conflations"] = _scraped(metrics, "matchcore_md_conflations_total")
        errors = [m["error"] for m in md if "error" in m]
        if errors:
            raise RuntimeError(f"subscribers failed: {errors[:3]}")
        if subscribers:
            last_seqs, written = asyncio.run(_row_times(venue.dsn))
            samples = np.array([s for m in md for s in m["samples"]], np.int64).reshape(-1, 2)
            rows = np.searchsorted(last_seqs, samples[:, 0])
            latency_us = (samples[:, 1] - written[np.minimum(rows, len(written) - 1)]) / 1000
            # exact percentiles of every sample (no histogram ceiling)
            p50, p99 = np.percentile(latency_us, [50, 99]) if len(latency_us) else (0.0, 0.0)
            summary.update(md_messages_per_s=sum(m["frames"] for m in md) / seconds,
                           md_bytes_per_s=sum(m["bytes"] for m in md) / seconds,
                           md_latency_us_p50=float(p50), md_latency_us_p99=float(p99),
                           md_latency_samples=int(len(samples)),
                           md_snapshots=sum(m["snapshots"] for m in md),
                           md_logouts=sum(m["logouts"] for m in md))
        return summary
    finally:
        venue.close()


def _scraped(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _median_latency(runs: list[dict], key: str) -> float | None:
    """The median of a percentile over runs; one beyond the histogram's range (None) sorts
    above every value, and a median among those is None too."""
    values = sorted((r[key] for r in runs), key=lambda v: float("inf") if v is None else v)
    middle = values[len(values) // 2] if len(values) % 2 else None
    if len(values) % 2 == 0:
        low, high = values[len(values) // 2 - 1], values[len(values) // 2]
        middle = None if low is None or high is None else (low + high) / 2
    return middle


def run_marketdata_bench(*, subscribers: int = 100, subscriber_processes: int = 2, clients: int = 2,
                         seconds: float = 10.0, warmup_s: float = 2.0, rate: float = 0.0, repeats: int = 1,
                         window_commands: int = 20_000, dsn: str | None = None, as_json: bool = False) -> dict:
    parameters = {"subscribers": subscribers, "subscriber_processes": subscriber_processes, "clients": clients,
                  "seconds": seconds, "warmup_s": warmup_s, "rate": rate or "max", "repeats": repeats,
                  "instruments": INSTRUMENTS, "window_commands": window_commands}
    if not as_json:
        print_header("matchcore-bench marketdata", parameters)
    kw = dict(clients=clients, seconds=seconds, warmup_s=warmup_s, rate=rate, window_commands=window_commands,
              dsn=dsn)
    without, with_md = [], []
    for _ in range(repeats):  # alternated: the machine's noise falls on both
        without.append(_one_run(0, 0, **kw))
        with_md.append(_one_run(subscribers, max(1, subscriber_processes), **kw))
    median = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    result = {
        "e2e_cmds_per_s": median(with_md, "e2e_cmds_per_s"),
        "e2e_cmds_per_s_without_md": median(without, "e2e_cmds_per_s"),
        "md_messages_per_s": median(with_md, "md_messages_per_s"),
        "md_bytes_per_s": median(with_md, "md_bytes_per_s"),
        "md_latency_us_p50": median(with_md, "md_latency_us_p50"),
        "md_latency_us_p99": median(with_md, "md_latency_us_p99"),
        "md_latency_samples": median(with_md, "md_latency_samples"),
        "md_conflations": median(with_md, "md_conflations"),
        "md_snapshots": median(with_md, "md_snapshots"),
        "ack_latency_us_p99": _median_latency(with_md, "ack_latency_us_p99"),
        "ack_latency_us_p99_without_md": _median_latency(without, "ack_latency_us_p99"),
        "ack_latency_overflow_share": max(r["ack_latency_overflow_share"] for r in with_md + without),
        "runs": {"with_md": with_md, "without_md": without},
        "parameters": parameters, "machine": machine_info(),
    }
    result["e2e_ratio"] = result["e2e_cmds_per_s"] / result["e2e_cmds_per_s_without_md"]
    if as_json:
        print(json.dumps(result, default=str))
    else:
        checksum = " ".join(str(r["journal_last_seq"]) for r in without + with_md)
        print(f"checksum: journal_last_seq per run {checksum}")
        print(f"e2e:         {result['e2e_cmds_per_s']:>12,.0f} durable commands/s with {subscribers} subscribers, "
              f"{result['e2e_cmds_per_s_without_md']:,.0f} without ({result['e2e_ratio']:.1%})")
        print(f"market data: {result['md_messages_per_s']:>12,.0f} messages/s received by all subscribers "
              f"({result['md_bytes_per_s'] / 1e6:,.1f} MB/s); {result['md_conflations']:.0f} conflations, "
              f"{result['md_snapshots']:.0f} snapshots")
        print(f"md latency (journal row written -> subscriber read, us): p50 {result['md_latency_us_p50']:,.0f} "
              f"p99 {result['md_latency_us_p99']:,.0f} (exact, {result['md_latency_samples']:,.0f} reads)")
        print(f"ack p99 (us): {format_latency_us(result['ack_latency_us_p99'])} with, "
              f"{format_latency_us(result['ack_latency_us_p99_without_md'])} without "
              f"(at most {result['ack_latency_overflow_share']:.2%} of acks over 60 s in a run)")
    return result
