"""``matchcore-bench failover`` (also ``matchcore bench failover``): a failover drill on real processes.

A local cluster (etcd, two PostgreSQL nodes under Patroni, synchronous mode strict), an active
matchcore on the primary and a hot standby (``serve --standby``) on the synchronous standby.
Trading clients (the shipped client library, both endpoints given) send orders and record
every event they receive. Then the active matchcore and its PostgreSQL are killed with
SIGKILL at once (``--kill postgres``: the postmaster and its backends, Patroni stays and
hands over; ``--kill machine``: Patroni too, so the leader key must expire, ``ttl`` = 20 s).
Patroni promotes the standby, the standby matchcore takes the journal over, the clients
reconnect to it and resume by event sequence number.

Checked and printed (``--json``: one object):
- ``acked_events_lost``: events a client received that the new primary's journal does not
  give back, byte for byte (each client logs in again from event 1 and compares). Must be 0.
- ``gaps``, ``duplicates``: seen by the clients across the failover. Must be 0.
- ``failover_s``: from the kill to the first acknowledgement by the new active.
- ``replay_verified``: the new primary's journal replays from seq 1 with identical events.
- ``old_primary_fenced``: a writer of the old epoch cannot append to the new primary.
- ``old_primary_rejoined``: the old node restarted comes back as a streaming standby.
- ``commit_latency_us_p99_sync`` / ``_local``: the p99 of one journal-sized commit on the
  primary with its synchronous standby, and with ``synchronous_commit = local`` (the same
  server and disk, no wait for the standby), interleaved in the same run.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from matchcore.bench.machine import print_header
from matchcore.core.codes import EventKind, OrderType, Side, StpMode, TimeInForce

__all__ = ["run_failover_bench", "commit_latencies"]

INSTRUMENT = 0  # the one instrument of bench.e2e_bench.set_up_market(..., instruments=1)
ADMIN = 0
START_TIMEOUT_S = 90.0
#: the longest wait for the first acknowledgement after the kill (machine: ttl and more)
FAILOVER_WAIT_MAX_S = 90.0


class _Server:
    """One ``matchcore serve`` process (active or standby) on a fixed port."""

    def __init__(self, dsn: str, port: int, folder: Path, name: str, standby: bool, settings: dict) -> None:
        self.port = port
        self.ready = folder / f"{name}.ready"
        command = [sys.executable, "-m", "matchcore.cli", "serve", "--dsn", dsn, "--port", str(port),
                   "--metrics-port", "-1", "--ready-file", str(self.ready),
                   "--log-level", "info" if standby else "warning"]  # the standby's: the timeline
        if standby:
            command.append("--standby")
        for key, value in settings.items():
            command += ["--set", f"{key}={value}"]
        self.log = folder / f"{name}.log"
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"matchcore exited with {self.process.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"matchcore not listening after {timeout_s} s; see {self.log}")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _register_keys(dsn: str, accounts: list[int]) -> dict[int, tuple[int, bytes]]:
    from matchcore.client import keys as client_keys
    from matchcore.gateway.key_store import PgKeyRegistry

    registry = await PgKeyRegistry.connect(dsn)
    try:
        out = {}
        for account in accounts:
            key = client_keys.generate_key()
            record = await registry.add(account, key.public_key, admin=account == ADMIN, label="failover")
            out[account] = (record.key_id, key.private_bytes_raw())
        return out
    finally:
        await registry.close()


def _client(keys: dict, account: int, endpoints: list[tuple[str, int]], **kwargs):
    from matchcore.client import keys as client_keys
    from matchcore.client.connection import Client

    key_id, raw = keys[account]
    host, port = endpoints[0]
    return Client(host, port, account_id=account, key_id=key_id, private_key=client_keys.load_private_key(raw),
                  endpoints=endpoints, **kwargs)


async def _set_up_market(keys: dict, endpoints: list, traders: list[int]) -> None:
    from matchcore.bench.e2e_bench import set_up_market

    async with _client(keys, ADMIN, endpoints) as admin:
        await set_up_market(admin, traders, instruments=1)


class _Trader:
    """Sends orders at ``rate`` per second, keeps every event frame it receives (by event
    seq), reconnects through the endpoints when its server is lost."""

    def __init__(self, client, rate: float, seed: int) -> None:
        self.client = client
        self.rate = rate
        self.rng = np.random.default_rng(seed)
        self.frames: dict[int, bytes] = {}
        self.duplicates = 0
        self.kinds: dict[int, int] = {}  # event kind -> events received
        #: the new active's port: the first event received from it is the failover's end
        self.new_port = 0

    async def run(self, until: list[float], kill_time: list[float], acked_after_kill: list[float]) -> None:
        """Trade while the loop's time is below ``until[0]`` (moved once the failover ended)."""
        from matchcore import protocol as p
        from matchcore.client.connection import ConnectionLost

        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_send = loop.time()
        receiver = asyncio.ensure_future(self._receive(kill_time, acked_after_kill))
        try:
            while loop.time() < until[0]:
                if not self.client.connected:
                    try:
                        await self.client.reconnect()
                    except ConnectionLost:
                        continue
                    receiver.cancel()
                    receiver = asyncio.ensure_future(self._receive(kill_time, acked_after_kill))
                side = Side.BUY if self.rng.integers(0, 2) else Side.SELL
                price = int(1000 + self.rng.integers(-5, 6))
                self.client.send(p.NewOrder(side, OrderType.LIMIT, TimeInForce.GTC, StpMode.CANCEL_TAKER,
                                            self.client.account_id, INSTRUMENT, self.client.next_client_id(),
                                            price, int(self.rng.integers(1, 10))))
                next_send += interval
                await asyncio.sleep(max(0.0, next_send - loop.time()))
            await asyncio.sleep(1.0)  # the last answers
        finally:
            receiver.cancel()

    async def _receive(self, kill_time: list[float], acked_after_kill: list[float]) -> None:
        from matchcore.client.connection import ConnectionLost

        while True:
            try:
                event = await self.client.next_event()
            except ConnectionLost:
                return
            if event.event_seq in self.frames:
                self.duplicates += 1
            self.kinds[event.kind] = self.kinds.get(event.kind, 0) + 1
            self.frames[event.event_seq] = event.encode()
            if kill_time and not acked_after_kill and self.client.port == self.new_port:
                acked_after_kill.append(time.monotonic())


async def _stream_again(keys: dict, account: int, endpoints: list, last: int) -> dict[int, bytes]:
    """Every event 1..last of ``account`` as the (new) active sends it from its journal."""
    frames: dict[int, bytes] = {}
    async with _client(keys, account, endpoints, next_event_seq=1) as client:
        while len(frames) < last:
            event = await client.next_event(timeout_s=30)
            frames[event.event_seq] = event.encode()
    return frames


async def commit_latencies(dsn: str, rounds: int = 300, commands: int = 256) -> dict[str, float]:
    """p50/p99 (us) of one journal-sized row committed with the synchronous standby and
    with ``synchronous_commit = local``, interleaved, on a scratch table of the same server."""
    import asyncpg

    payload = os.urandom(commands * 96 + commands * 2 * 128)
    sync = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "on"})
    local = await asyncpg.connect(dsn, server_settings={"synchronous_commit": "local"})
    try:
        table = f"commit_probe_{uuid.uuid4().hex[:8]}"
        await sync.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, payload bytea)")
        await sync.execute(f"ALTER TABLE {table} ALTER COLUMN payload SET STORAGE EXTERNAL")
        timings: dict[str, list[float]] = {"sync": [], "local": []}
        for index in range(rounds):
            for name, connection in (("sync", sync), ("local", local)):
                started = time.perf_counter()
                await connection.execute(f"INSERT INTO {table} VALUES ($1, $2)", index * 2 + (name == "local"),
                                         payload)
                timings[name].append((time.perf_counter() - started) * 1e6)
        await sync.execute(f"DROP TABLE {table}")
    finally:
        await sync.close()
        await local.close()
    out = {}
    for name, values in timings.items():
        out[f"commit_latency_us_p50_{name}"] = round(float(np.percentile(values, 50)), 1)
        out[f"commit_latency_us_p99_{name}"] = round(float(np.percentile(values, 99)), 1)
    return out


async def _old_epoch_fenced(dsn: str, old_epoch: int) -> bool:
    import asyncpg

    from matchcore.persistence import Batch, JournalFencedError, insert_batch
    from matchcore.bench.synthetic import synthetic_chunk

    connection = await asyncpg.connect(dsn)
    try:
        last = int(await connection.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal"))
        batch = Batch(*synthetic_chunk(np.random.default_rng(1), last + 1, 10))
        try:
            await insert_batch(connection, batch, epoch=old_epoch)
        except JournalFencedError:
            return int(await connection.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal")) == last
        return False
    finally:
        await connection.close()


async def _epoch(dsn: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval("SELECT epoch FROM journal_fence"))
    finally:
        await connection.close()


_TIMELINE = {"standby: its PostgreSQL is the primary now; taking over": "promoted_seen_s",
             "standby took the journal": "journal_taken_s", "listening": "listening_s"}


def _timeline(log: Path, kill_wall_s: float) -> dict[str, float]:
    from datetime import datetime

    out: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        key = _TIMELINE.get(record.get("event"))
        if key is not None and key not in out and "ts" in record:
            out[key] = round(datetime.fromisoformat(record["ts"]).timestamp() - kill_wall_s, 3)
    return out


def _frames_checksum(runners: list) -> int:
    import zlib

    checksum = 0
    for runner in sorted(runners, key=lambda r: r.client.account_id):
        for seq in sorted(runner.frames):
            checksum = zlib.crc32(runner.frames[seq], checksum)
    return checksum


def _replay_verified(dsn: str) -> tuple[bool, int]:
    from matchcore.persistence import Journal
    from matchcore.persistence.replay import replay

    with Journal(dsn) as journal:
        result = replay(journal, verify=True)
        return result.last_seq == journal.last_seq(), result.last_seq


def run_failover_bench(*, clients: int = 2, rate: float = 500.0, before_s: float = 3.0, after_s: float = 3.0,
                       kill: str = "postgres", cluster=None, json_out: bool = False,
                       commit_rounds: int = 300, nodes: int = 2) -> dict:
    """The drill; returns the figures (see the module doc). ``cluster``: a running
    LocalCluster to use (a test's); else one is made in a temporary folder and removed."""
    from matchcore.persistence.cluster import LocalCluster

    if kill not in ("postgres", "machine"):
        raise ValueError("kill must be 'postgres' or 'machine'")
    if kill == "machine" and nodes < 3:
        # strict synchronous mode: with the old primary's machine gone, a 2-node cluster has no
        # standby left, so every commit (the takeover's too) waits until that machine returns
        raise ValueError("--kill machine needs --nodes 3: two nodes stall writes until the lost one returns")
    folder = Path(tempfile.mkdtemp(prefix="matchcore-failover-"))
    folder.chmod(0o755)
    own_cluster = cluster is None
    servers: list[_Server] = []
    try:
        if own_cluster:
            cluster = LocalCluster(folder / "cluster", nodes=nodes)
            cluster.start()
        cluster.wait_for(cluster.healthy, 60, "a healthy cluster")
        result = _drill(cluster, folder, servers, clients=clients, rate=rate, before_s=before_s, after_s=after_s,
                        kill=kill, commit_rounds=commit_rounds)
    except BaseException:
        for log in sorted(folder.glob("*.log")):
            print(f"--- {log.name} (last lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:]),
                  file=sys.stderr)
        raise
    finally:
        for server in servers:
            server.stop()
        if own_cluster and cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)
    if json_out:
        print(json.dumps(result))
    else:
        print_header("failover drill", {"clients": clients, "rate_per_client": rate, "before_s": before_s,
                                         "after_s": after_s, "kill": kill, "nodes": nodes})
        for key, value in result.items():
            print(f"{key:>34}: {value}")
    return result


async def _trade_through_failover(keys: dict, traders: list[int], endpoints: list, rate: float, before_s: float,
                                  after_s: float, kill, new_port: int):
    """Trade ``before_s``, ``kill()``, trade until the first acknowledgement from the new
    active and ``after_s`` more; (traders, kill monotonic, kill wall clock, first ack)."""
    kill_time: list[float] = []
    kill_wall: list[float] = []
    acked_after: list[float] = []
    runners = [_Trader(_client(keys, account, endpoints, failover_timeout_s=60, next_event_seq=1), rate,
                       seed=account) for account in traders]
    for runner in runners:
        runner.new_port = new_port
        await runner.client.connect()
    loop = asyncio.get_running_loop()
    until = [loop.time() + before_s + FAILOVER_WAIT_MAX_S]  # the failover's end moves it
    tasks = [asyncio.ensure_future(r.run(until, kill_time, acked_after)) for r in runners]
    await asyncio.sleep(before_s)
    kill_time.append(time.monotonic())
    kill_wall.append(time.time())
    kill()
    while not acked_after and loop.time() < until[0]:
        await asyncio.sleep(0.01)
    until[0] = min(until[0], loop.time() + after_s)  # then trade on the new active
    await asyncio.gather(*tasks)
    for runner in runners:
        await runner.client.close()
    return runners, kill_time, kill_wall, acked_after


def _drill(cluster, folder: Path, servers: list, *, clients: int, rate: float, before_s: float, after_s: float,
           kill: str, commit_rounds: int) -> dict:
    database = f"failover_{uuid.uuid4().hex[:10]}"
    cluster.create_database(database)
    primary, standby = cluster.leader(), cluster.sync_standby()
    traders = list(range(1, clients + 1))
    keys = asyncio.run(_register_keys(cluster.dsn(primary, database), [ADMIN] + traders))
    settings = {"engine_clock_ms": 0, "snapshot_every_commands": 0}
    active = _Server(cluster.dsn(primary, database), _free_port(), folder, "active", False, settings)
    servers.append(active)
    active.wait_ready()
    hot = _Server(cluster.dsn(standby, database), _free_port(), folder, "standby", True, settings)
    servers.append(hot)
    endpoints = [("127.0.0.1", active.port), ("127.0.0.1", hot.port)]
    asyncio.run(_set_up_market(keys, endpoints, traders))
    latencies = asyncio.run(commit_latencies(cluster.dsn(primary, database), rounds=commit_rounds))
    old_epoch = asyncio.run(_epoch(cluster.dsn(primary, database)))

    runners, kill_time, kill_wall, acked_after = asyncio.run(_trade_through_failover(
        keys, traders, endpoints, rate, before_s, after_s,
        kill=lambda: (active.kill(), (cluster.kill_postgres if kill == "postgres" else cluster.kill_node)(primary)),
        new_port=hot.port))
    hot.wait_ready(5)
    if not acked_after:
        raise RuntimeError(f"no acknowledgement after the kill within {FAILOVER_WAIT_MAX_S} s: see {hot.log}")
    failover_s = acked_after[0] - kill_time[0]
    new_dsn = cluster.dsn(None, database)
    lost = 0
    for runner in runners:
        last = max(runner.frames, default=0)
        again = asyncio.run(_stream_again(keys, runner.client.account_id, endpoints[1:], last))
        lost += sum(1 for seq, frame in runner.frames.items() if again.get(seq) != frame)
    verified, last_seq = _replay_verified(new_dsn)
    cluster.start_node(primary)  # the old primary comes back ...
    rejoined = bool(cluster.wait_for(lambda: cluster.streaming(primary), 90, "the old primary rejoining"))
    fenced = asyncio.run(_old_epoch_fenced(new_dsn, old_epoch))
    return {
        "acked_events_lost": lost,
        "events_received": sum(len(r.frames) for r in runners),
        "orders_accepted": sum(r.kinds.get(EventKind.ACCEPTED, 0) for r in runners),
        "orders_rejected": sum(r.kinds.get(EventKind.REJECTED, 0) for r in runners),
        "fills": sum(r.kinds.get(EventKind.FILL, 0) for r in runners),
        "gaps": sum(1 for r in runners for s in range(1, max(r.frames, default=0) + 1) if s not in r.frames),
        "gaps_detected_by_clients": sum(r.client.gaps for r in runners),
        "duplicates": sum(r.duplicates for r in runners),
        "failover_s": round(failover_s, 3),
        # seconds from the kill, read from the standby's log: PostgreSQL promoted (as the
        # standby saw it), journal taken, port open
        **_timeline(hot.log, kill_wall[0]),
        "client_failovers": sum(r.client.failovers for r in runners),
        "journal_last_seq": last_seq,
        "replay_verified": verified,
        "old_primary_fenced": fenced,
        "old_primary_rejoined": rejoined,
        "new_primary": cluster.leader(),
        # the work: every event frame received, in (account, event seq) order
        "checksum": f"{_frames_checksum(runners):08x}",
        **latencies,
    }
