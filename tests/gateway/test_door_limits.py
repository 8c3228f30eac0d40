"""Session slots per key, per account and kept for admins; pending-login caps; the status server's readiness,
404s and metrics cache, in process (the real-server versions are tests/e2e/test_door.py)."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from matchcore.gateway import http_status, sessions


def test_slots_per_key_per_account_and_admin_reserve():
    slots = sessions.SessionSlots(8, max_sessions_per_key=2, max_sessions_per_account=3, admin_reserved_sessions=4)
    assert [slots.acquire_for(11, 1, False) for _ in range(3)] == [True, True, False]  # per key
    assert [slots.acquire_for(12, 1, False) for _ in range(2)] == [True, False]  # per account (3)
    assert slots.acquire_for(21, 2, False) and not slots.acquire_for(22, 3, False)  # traders: 8 - 4
    assert [slots.acquire_for(1 + i, 100 + i, True) for i in range(5)] == [True] * 4 + [False]  # admins: the rest
    slots.release_for(11, 1, False)
    assert slots.sessions_of_key(11) == 1 and slots.sessions_of_account(1) == 2
    assert slots.acquire_for(12, 1, False) and slots.in_use == 8 and slots.admin_in_use == 4


def test_limits_are_validated():
    for bad in ({"max_sessions_per_key": 0}, {"max_sessions_per_key": 9, "max_sessions_per_account": 8},
                {"admin_reserved_sessions": 1_000}, {"max_pending_logins_per_address": 0},
                {"max_pending_logins": 4, "max_pending_logins_per_address": 5}):
        with pytest.raises(ValueError):
            sessions.GatewayLimits(**bad).validate()


def test_pending_logins_cap_all_and_per_address():
    pending = sessions.PendingLogins(3, 2)
    for session_id, address in ((1, "a"), (2, "a")):
        assert pending.admit(address)
        pending.add(session_id, address)
    assert not pending.admit("a") and pending.refused_per_address == 1
    assert pending.admit("b")
    pending.add(3, "b")
    assert not pending.admit("c") and pending.refused_total == 1
    pending.settled(1)
    pending.settled(1)  # twice is harmless
    assert pending.count == 2 and pending.by_address == {"a": 1, "b": 1} and pending.admit("c")


def test_tls_handshakes_are_swept_after_the_timeout():
    handshakes = sessions.TlsHandshakes(1_000)
    first, second = object(), object()
    handshakes.started(first, 0)
    handshakes.started(second, 500)
    handshakes.finished(second)
    handshakes.expire(1_001)
    assert len(handshakes) == 0 and handshakes.expired_total == 1 and handshakes.completed_total == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


def test_status_server_readiness_database_and_cache():
    collections = []

    def collect() -> bytes:
        collections.append(1)
        return f"metric {len(collections)}\n".encode()

    samples = iter(range(1, 1_000_000))
    sampler = http_status.ReadinessSampler(
        lambda now_ns: http_status.ReadinessSample(now_ns, "", 0, next(samples)))
    # nothing listens on this port: the database check fails, so /readyz is 503
    check = http_status.DatabaseCheck(f"postgresql://u:p@127.0.0.1:{_free_port()}/x", 500)
    server = http_status.StatusServer(http_status.StatusConfig(metrics_cache_ms=60_000), collect, "text/plain",
                                      sampler, check)

    async def scenario():
        sampler.start(asyncio.get_running_loop())
        server.start()
        try:
            assert await _get(server.server_port, "/metrics") == (200, b"metric 1\n")
            assert await _get(server.server_port, "/metrics") == (200, b"metric 1\n")  # cached
            assert (await _get(server.server_port, "/livez"))[0] == 200
            status, body = await _get(server.server_port, "/readyz")
            assert status == 503 and b"database is not reachable" in body
            assert (await _get(server.server_port, "/nope"))[0] == 404
        finally:
            server.shutdown()

    started = time.monotonic()
    asyncio.run(scenario())
    assert len(collections) == 1 and time.monotonic() - started < 10
