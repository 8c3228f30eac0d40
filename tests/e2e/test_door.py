"""The door holds against hostile clients, on real server processes: one trader key cannot take every session slot
(admins keep theirs), idle connections before login cannot lock out real logins, TLS handshakes are bounded, and
the metrics port cannot be made to spawn threads or answer made-up paths."""
from __future__ import annotations

import asyncio
import json
import resource
import socket
import ssl
import time
import urllib.error
import urllib.request

from matchcore import protocol as p
from matchcore.client import LoginRefused

from ..tls import write_self_signed
from .conftest import ADMIN, ALICE, BOB, ServerProcess, run


async def _log_in_until_refused(server: ServerProcess, account: int, attempts: int) -> tuple[list, int]:
    """Sessions of ``account`` logged in one after the other; (open clients, the refusal reason or 0)."""
    clients = []
    for _ in range(attempts):
        client = server.client(account, connect_timeout_s=5.0)
        try:
            await client.connect()
        except LoginRefused as refused:
            return clients, refused.reason
        clients.append(client)
    return clients, 0


def test_one_trader_key_cannot_take_the_admins_slots(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.max_sessions": 6}).start()
    try:
        async def scenario():
            alice, refused = await _log_in_until_refused(server, ALICE, 8)
            assert refused == p.SessionReason.TOO_MANY_SESSIONS, (len(alice), refused)
            assert len(alice) == 2  # 6 - the 4 kept for admin keys (the default)
            bob, refused = await _log_in_until_refused(server, BOB, 1)
            assert (len(bob), refused) == (0, p.SessionReason.TOO_MANY_SESSIONS)  # traders together
            admins, refused = await _log_in_until_refused(server, ADMIN, 5)
            assert (len(admins), refused) == (4, p.SessionReason.TOO_MANY_SESSIONS)  # the total holds
            await alice[0].close()
            await asyncio.sleep(0.2)
            bob, refused = await _log_in_until_refused(server, BOB, 1)
            assert (len(bob), refused) == (1, 0)  # a slot freed at close is taken again
            for client in alice[1:] + bob + admins:
                await client.close()

        run(scenario())
    finally:
        server.drop()


def _flood(address: str, port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        flood = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        flood.bind((address, 0))
        flood.settimeout(2.0)
        flood.connect(("127.0.0.1", port))
        sockets.append(flood)
    return sockets


def _answered(sockets: list[socket.socket]) -> tuple[int, int]:
    """(sockets that got a CHALLENGE, sockets closed by the server without one)."""
    challenged = closed = 0
    for flood in sockets:
        flood.setblocking(False)
        try:
            data = flood.recv(4096)
        except BlockingIOError:
            continue
        except ConnectionResetError:
            closed += 1
            continue
        if data and data[2] == p.MessageType.CHALLENGE:
            challenged += 1
        elif not data:
            closed += 1
    return challenged, closed


def _scrape(server: ServerProcess, path: str = "/metrics") -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}{path}", timeout=5).read().decode()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in the metrics")


def test_idle_connections_before_login_cannot_lock_out_real_logins(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # the server starts at 1,024
    try:
        server.start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    floods: list[socket.socket] = []
    try:
        floods = _flood("127.0.0.2", server.port, 1_100)  # ~1,050 idle sockets broke every login before
        started = time.monotonic()

        async def real_login():
            async with server.client(ALICE, connect_timeout_s=3.0):
                pass

        run(real_login())
        assert time.monotonic() - started < 3.0
        time.sleep(0.3)
        challenged, closed = _answered(floods)
        assert challenged == 32 and closed == 1_100 - 32, (challenged, closed)  # max_pending_logins_per_address
        for address in range(3, 13):  # 10 more addresses, 30 each: the 256 in all fill up
            floods += _flood(f"127.0.0.{address}", server.port, 30)
        time.sleep(0.3)
        text = _scrape(server)
        assert _metric(text, 'matchcore_connections_refused_total{reason="pending_logins_per_address"}') == 1_068
        assert _metric(text, 'matchcore_connections_refused_total{reason="pending_logins"}') == 32 + 300 - 256
        assert _metric(text, "matchcore_pending_logins") == 256
    finally:
        for flood in floods:
            flood.close()
        server.drop()
    [limit] = [json.loads(line) for line in server.log().splitlines()
               if line.startswith("{") and json.loads(line)["event"] == "open file limit"]
    assert limit["soft_at_start"] == min(1024, hard) and limit["soft"] == limit["hard"] == hard


def test_tls_handshakes_time_out_and_the_metrics_port_is_bounded(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"limits.login_timeout_ms": 1_000})
    server.tls = write_self_signed(work_dir)
    server.start()
    half_open: list[socket.socket] = []
    try:
        context = ssl.create_default_context(cafile=server.tls[0])

        async def over_tls():
            async with server.client(ADMIN, ssl=context, server_hostname="localhost"):
                pass

        run(over_tls())
        threads_before = _threads(server)
        for _ in range(200):  # unfinished requests: no thread each
            connection = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            half_open.append(connection)
        time.sleep(0.3)
        assert _threads(server) <= threads_before + 1
        # the probes get in (the longest-waiting unfinished request is evicted), and they are ok
        assert _scrape(server, "/livez") == "ok\n" and _scrape(server, "/readyz") == "ok\n"
        half_open[-1].settimeout(5)
        assert half_open[-1].recv(100).startswith(b"HTTP/1.1 408")  # the request timeout closed it
        for connection in half_open:
            connection.close()
        for path, status in (("/", 404), ("/metrics/../x", 404), ("/favicon.ico", 404)):
            try:
                _scrape(server, path)
                raise AssertionError(f"{path} answered")
            except urllib.error.HTTPError as error:
                assert error.code == status
        big = socket.create_connection(("127.0.0.1", server.metrics_port), timeout=5)
        big.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
        assert big.recv(100).startswith(b"HTTP/1.1 431")
        big.close()
        texts = [_scrape(server) for _ in range(20)]  # within metrics_cache_ms: one collection
        assert len(set(texts)) <= 2
        assert _metric(texts[-1], "matchcore_status_http_refused_total") > 0

        started = time.monotonic()
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)  # never sends a ClientHello
        assert silent.recv(10) == b""  # closed by the handshake timeout (login_timeout_ms), not after 60 s
        assert time.monotonic() - started < 2.5
        silent.close()
        time.sleep(1.1)  # past metrics_cache_ms, and the sweep of the handshake's entry
        later = _scrape(server)
        assert _metric(later, "matchcore_tls_handshakes_unfinished_total") == 1
        assert _metric(later, "matchcore_tls_handshakes") == 0
    finally:
        for connection in half_open:
            connection.close()
        server.drop()


def _threads(server: ServerProcess) -> int:
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")
