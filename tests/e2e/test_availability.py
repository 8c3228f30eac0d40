"""The server keeps serving through database faults and abusive input: every connection comes
back after PostgreSQL restarts, a login while it is down gets a typed refusal, SIGTERM and
SIGHUP always finish, cancel-on-disconnect survives kill -9, an embedded PostgreSQL left by a
killed server is adopted, and a burst bigger than the receive buffer is backpressure."""
from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from matchcore import protocol as p
from matchcore.client import LoginRefused
from matchcore.client import keys as client_keys
from matchcore.core.codes import EventKind, Side
from matchcore.persistence.embedded import EmbeddedPostgres

from .conftest import ALICE, BOB, INSTRUMENT, ServerProcess, run

#: the server's own bound on the database part of a stop (gateway/app.py STOP_DATABASE_BOUND_S)
STOP_DATABASE_BOUND_S = 10.0


async def _fetchval(dsn: str, query: str):
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def _orders(server: ServerProcess, account: int, first_client_id: int, count: int, price: int) -> None:
    async with server.client(account) as client:
        for client_id in range(first_client_id, first_client_id + count):
            outcome = await client.new_order(INSTRUMENT, Side.BUY, price, 1, client_order_id=client_id,
                                             timeout_s=30)
            assert outcome.accepted, outcome


async def _all_events(server: ServerProcess, account: int) -> list[p.EventMessage]:
    async with server.client(account, next_event_seq=1) as client:
        events = []
        while True:
            try:
                events.append(await client.next_event(timeout_s=3))
            except asyncio.TimeoutError:
                return events


def _tracebacks(log: str) -> list[str]:
    """The log lines that carry a traceback, cut short."""
    return [line[:600] for line in log.splitlines() if "Traceback" in line]


def _restart_postgres(pg: EmbeddedPostgres) -> None:
    pg.stop("fast")
    time.sleep(0.5)
    pg.start()


@pytest.fixture
def faulty_server(pg_server, work_dir):
    """A server that checkpoints and snapshots often and keeps almost no event in memory, so
    every connection of its own is in use; PostgreSQL is running again after the test."""
    process = ServerProcess(pg_server, work_dir, recent_event_frames=4, stream_checkpoint_every_commands=5,
                            snapshot_every_commands=7, shutdown_grace_ms=500).start()
    try:
        run(process.market())
        yield process
    finally:
        if not pg_server.is_running():
            pg_server.start()
        process.drop()


def test_every_connection_comes_back_after_postgres_restarts(faulty_server, pg_server):
    server = faulty_server
    run(_orders(server, ALICE, 1, 10, 90))
    restarted_at_seq = run(server.journal_last_seq())
    _restart_postgres(pg_server)
    run(_orders(server, ALICE, 11, 10, 91))  # the writer reconnects: acknowledged
    # Catch-up from the journal (only 4 events are kept in memory) works again.
    events = run(_all_events(server, ALICE))
    assert [event.event_seq for event in events] == list(range(1, len(events) + 1))
    assert sum(event.kind == EventKind.ACCEPTED for event in events) == 20
    # Checkpoints and snapshots are written again after the restart.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        checkpoint = run(_fetchval(server.dsn, "SELECT max(seq) FROM gateway_stream_checkpoint"))
        snapshot = run(_fetchval(server.dsn, "SELECT max(seq) FROM snapshot"))
        if (checkpoint or 0) > restarted_at_seq and (snapshot or 0) > restarted_at_seq:
            break
        time.sleep(0.1)
    assert checkpoint > restarted_at_seq and snapshot > restarted_at_seq, (checkpoint, snapshot, restarted_at_seq)
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 10
    assert _tracebacks(server.log()) == []


def test_login_while_the_database_is_down_is_refused_unavailable(faulty_server, pg_server):
    server = faulty_server
    pg_server.stop("fast")
    try:
        with pytest.raises(LoginRefused) as refused:
            run(_orders(server, BOB, 1, 1, 90))
        assert refused.value.reason == p.SessionReason.UNAVAILABLE
    finally:
        pg_server.start()
    run(_orders(server, BOB, 1, 1, 90))
    assert server.alive()
    assert _tracebacks(server.log()) == []


def test_sigterm_finishes_while_the_database_is_down(faulty_server, pg_server):
    server = faulty_server
    run(_orders(server, ALICE, 1, 3, 90))

    async def unacknowledged() -> None:
        async with server.client(ALICE) as alice:
            pg_server.stop("fast")
            alice.send(p.NewOrder(1, 1, 1, 1, ALICE, INSTRUMENT, 100, 90, 1, 0, 0))
            await asyncio.sleep(0.3)

    run(unacknowledged())
    started = time.monotonic()
    assert server.stop() in (0, 1)
    elapsed = time.monotonic() - started
    assert elapsed < 0.5 + STOP_DATABASE_BOUND_S + 5, elapsed
    log = server.log()
    assert '"stopping"' in log and '"stopped"' in log
    assert "never acknowledged" in log or "not written" in log


def test_sighup_runs_the_stop_sequence(faulty_server):
    server = faulty_server
    assert server.stop(signal.SIGHUP) == 0
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(line.get("event") == "stop requested" and line.get("reason") == "SIGHUP" for line in lines)
    assert any(line.get("event") == "stopped" for line in lines)


def test_cancel_on_disconnect_survives_kill_9(server):
    async def rest_and_crash() -> None:
        alice = server.client(ALICE, cancel_on_disconnect=True)
        await alice.connect()
        outcome = await alice.new_order(INSTRUMENT, Side.BUY, 50, 1, client_order_id=77, timeout_s=10)
        assert outcome.accepted
        server.stop(signal.SIGKILL)  # the session dies with the server: no MASS_CANCEL sent
        await alice._drop()

    run(rest_and_crash())
    server.start()

    async def status() -> p.OrderStatus:
        async with server.client(ALICE) as alice:
            return await alice.order_status(77, timeout_s=10)

    assert run(status()).state == p.OrderState.NOT_OPEN
    events = run(_all_events(server, ALICE))
    canceled = [e for e in events if e.kind == EventKind.CANCELED and e.client_id == 77]
    assert len(canceled) == 1


def test_a_burst_larger_than_the_receive_buffer_is_backpressure(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.receive_buffer_bytes_max": 4096}).start()
    try:
        run(server.market())

        async def burst() -> list[p.Message]:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            head = await reader.readexactly(2)
            challenge = p.decode(head + await reader.readexactly((head[0] | head[1] << 8) - 2))
            key_id, key = server.keys[BOB]
            writer.write(client_keys.signed_login(key, account_id=BOB, key_id=key_id,
                                                  nonce=challenge.nonce).encode())
            queries = b"".join(p.OrderStatusQuery(client_order_id).encode() for client_order_id in range(300))
            assert len(queries) > 4096
            writer.write(queries)
            await writer.drain()
            frames, data = [], bytearray()
            deadline = time.monotonic() + 20
            while sum(isinstance(m, p.OrderStatus) for m in frames) < 300 and time.monotonic() < deadline:
                chunk = await asyncio.wait_for(reader.read(65536), 20)
                if not chunk:
                    break
                data += chunk
                complete, used = p.split_frames(data)
                del data[:used]
                frames += [p.decode(frame) for frame in complete]
            writer.close()
            return frames

        messages = run(burst())
        assert not [m for m in messages if isinstance(m, p.Logout)]
        assert sorted(m.client_order_id for m in messages if isinstance(m, p.OrderStatus)) == list(range(300))
    finally:
        server.drop()


def _serve_embedded(data_dir: Path, ready: Path, log: Path) -> subprocess.Popen:
    ready.unlink(missing_ok=True)
    command = [sys.executable, "-m", "matchcore.cli", "serve", "--data-dir", str(data_dir), "--port", "0",
               "--metrics-port", "-1", "--ready-file", str(ready)]
    with open(log, "ab") as handle:
        return subprocess.Popen(command, stdout=handle, stderr=handle, stdin=subprocess.DEVNULL)


def _wait_ready(process: subprocess.Popen, ready: Path, log: Path) -> None:
    deadline = time.monotonic() + 90
    while not ready.exists():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def test_an_embedded_postgres_left_by_kill_9_is_adopted_and_stopped():
    base = Path(tempfile.mkdtemp(prefix="matchcore-adopt-"))
    base.chmod(0o755)
    data_dir, ready, log = base / "pg", base / "ready", base / "serve.log"
    first = _serve_embedded(data_dir, ready, log)
    try:
        _wait_ready(first, ready, log)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert EmbeddedPostgres(data_dir).is_running()  # left behind
        second = _serve_embedded(data_dir, ready, log)
        _wait_ready(second, ready, log)
        # A second live server on the same folder is refused, naming the holder.
        third = subprocess.run([sys.executable, "-m", "matchcore.cli", "serve", "--data-dir", str(data_dir),
                                "--port", "0", "--metrics-port", "-1"], capture_output=True, text=True, timeout=60)
        assert third.returncode == 2 and f"pid {second.pid}" in third.stderr
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
        assert not EmbeddedPostgres(data_dir).is_running(), log.read_text()
        assert "adopted a running embedded PostgreSQL" in log.read_text()
    finally:
        for process in (first,):
            if process.poll() is None:
                process.kill()
        leftover = EmbeddedPostgres(data_dir)
        if leftover.is_running():
            leftover.stop("immediate")
        import shutil

        shutil.rmtree(base, ignore_errors=True)
