"""Credentials against real servers: revoking a key ends its open sessions (NOTIFY, and the
periodic recheck when a notification is lost), sessions age out, a failed login tells the
client nothing but the log everything, failures are throttled per address, and keys are
made atomically (optionally passphrase-protected)."""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from matchcore import protocol as p
from matchcore.client import keys as client_keys
from matchcore.client.connection import Client, ConnectionLost, LoginRefused
from matchcore.protocol import SessionReason

from .conftest import ADMIN, ALICE, BASE, BOB, ServerProcess, env_without_matchcore, run

KEY_WATCH_APPLICATION = "matchcore-key-watch"


def _cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "matchcore.cli", *args], capture_output=True, text=True,
                          env=env_without_matchcore(), check=check, timeout=60, **kwargs)


async def _frame(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(2), 10)
    return head + await reader.readexactly((head[0] | head[1] << 8) - 2)


async def _raw_login(port: int, make_login) -> p.Message | None:
    """Connect, read CHALLENGE, send ``make_login(nonce)``; the answer, or None when the server
    closed the connection without one."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        challenge = p.decode(await _frame(reader))
        writer.write(make_login(challenge.nonce).encode())
        try:
            return p.decode(await _frame(reader))
        except asyncio.IncompleteReadError:
            return None
    finally:
        writer.close()


async def _add_key(dsn: str, account: int, *, admin: bool = False) -> tuple[int, client_keys.PrivateKey]:
    from matchcore.gateway.key_store import PgKeyRegistry

    registry = await PgKeyRegistry.connect(dsn)
    try:
        key = client_keys.generate_key()
        return (await registry.add(account, key.public_key, admin=admin)).key_id, key
    finally:
        await registry.close()


async def _logged_out_reason(client: Client, timeout_s: float) -> tuple[SessionReason, float]:
    """Wait for the server to end ``client``'s session; its reason and how long it took."""
    started = time.monotonic()
    with pytest.raises(ConnectionLost) as lost:
        while True:
            await client.next_event(timeout_s=timeout_s)
    return lost.value.reason, time.monotonic() - started


@pytest.fixture(scope="module")
def watched_server(pg_server):
    """A server that rechecks open sessions' keys every 300 ms and ends sessions after 4 s;
    three failed logins from one address, then one more every 1.5 s."""
    folder = Path(tempfile.mkdtemp(prefix="matchcore-e2e-cred-"))
    folder.chmod(0o755)
    process = ServerProcess(pg_server, folder, **{
        "limits.key_recheck_interval_ms": 300, "limits.session_age_ms_max": 4_000,
        "limits.login_failures_burst": 3, "limits.login_failure_refill_ms": 1_500}).start()
    try:
        run(process.market())
        yield process
    finally:
        process.drop()
        shutil.rmtree(folder, ignore_errors=True)


def test_revoking_a_key_logs_its_open_admin_session_out_at_once(shared_server):
    server = shared_server

    async def scenario():
        key_id, key = await _add_key(server.dsn, ADMIN, admin=True)
        async with Client("127.0.0.1", server.port, account_id=ADMIN, key_id=key_id, private_key=key) as admin:
            assert (await admin.request(p.Deposit(ALICE, BASE, 70_001, 5), timeout_s=10)).accepted
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: _cli("keys", "revoke", "--dsn", server.dsn, str(key_id)))
            reason, waited_s = await _logged_out_reason(admin, timeout_s=5)
            assert reason == SessionReason.SESSION_KEY_REVOKED
            assert waited_s < 3
            before = await server.journal_commands_from_clients()
            with pytest.raises(ConnectionLost):  # the revoked admin can no longer withdraw
                admin.send(p.Withdraw(BOB, BASE, 70_002, 1))
            await asyncio.sleep(0.3)
            assert await server.journal_commands_from_clients() == before

    run(scenario())
    assert '"reason":"SESSION_KEY_REVOKED"' in server.log()


def test_a_lost_notification_is_made_up_by_the_recheck_and_the_listener_reconnects(watched_server, pg_server):
    server = watched_server

    async def scenario():
        # a revocation whose trigger does not fire (a lost NOTIFY): the periodic recheck ends the session
        key_id, key = await _add_key(server.dsn, ALICE)
        async with Client("127.0.0.1", server.port, account_id=ALICE, key_id=key_id, private_key=key) as alice:
            connection = await asyncpg.connect(server.admin_dsn)
            try:
                await connection.execute("SET session_replication_role = replica")  # no triggers
                await connection.execute("UPDATE gateway_key SET revoked_at = now() WHERE key_id = $1", key_id)
            finally:
                await connection.close()
            reason, waited_s = await _logged_out_reason(alice, timeout_s=5)
            assert reason == SessionReason.SESSION_KEY_REVOKED and waited_s < 2
        # the listening connection is killed: the server listens again on a new one
        connection = await asyncpg.connect(server.admin_dsn)
        try:
            query = "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'"
            old = await connection.fetchval(query, KEY_WATCH_APPLICATION)
            assert old is not None
            await connection.execute("SELECT pg_terminate_backend($1)", old)
            deadline = time.monotonic() + 10
            while (await connection.fetchval(query, KEY_WATCH_APPLICATION)) in (None, old):
                assert time.monotonic() < deadline, "the key watch did not listen again"
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    run(scenario())
    assert server.alive()


def test_a_session_older_than_the_maximum_age_is_logged_out(watched_server):
    server = watched_server

    async def scenario():
        async with server.client(BOB) as bob:
            reason, waited_s = await _logged_out_reason(bob, timeout_s=10)
            assert reason == SessionReason.SESSION_AGE_EXCEEDED
            assert 3.5 < waited_s < 6
            await bob.reconnect()  # a fresh login is a fresh session
            assert bob.connected

    run(scenario())


def test_failed_logins_get_one_reason_and_the_log_keeps_the_exact_one(shared_server):
    server = shared_server
    alice_key_id, alice_key = server.keys[ALICE]
    bob_key_id, _ = server.keys[BOB]
    revoked_id, revoked_key = run(_add_key(server.dsn, ALICE))
    _cli("keys", "revoke", "--dsn", server.dsn, str(revoked_id))

    def zero_signature(key_id: int, account: int):
        return lambda nonce: p.Login(p.PROTOCOL_VERSION, 0, account, 1000, key_id, 0, nonce, bytes(64))

    def signed(key, key_id: int, account: int, **kw):
        return lambda nonce: client_keys.signed_login(key, account_id=account, key_id=key_id, nonce=nonce, **kw)

    async def scenario():
        attempts = {
            "UNKNOWN_KEY": zero_signature(987_654, ALICE),
            "KEY_REVOKED": signed(revoked_key, revoked_id, ALICE),
            "ACCOUNT_MISMATCH": zero_signature(bob_key_id, ALICE),
            "BAD_SIGNATURE": zero_signature(alice_key_id, ALICE),
            "STALE_CHALLENGE": lambda nonce: signed(alice_key, alice_key_id, ALICE)(bytes(32)),
        }
        for exact, make_login in attempts.items():
            answer = await _raw_login(server.port, make_login)
            assert answer == p.LoginRejected(SessionReason.AUTH_FAILED), exact
        # bits this protocol version does not define are refused, even with a valid signature
        answer = await _raw_login(server.port, signed(alice_key, alice_key_id, ALICE, login_flags=0x80))
        assert answer == p.LoginRejected(SessionReason.UNSUPPORTED_LOGIN_FLAGS)

    run(scenario())
    logged = server.log()
    for exact in ("UNKNOWN_KEY", "KEY_REVOKED", "ACCOUNT_MISMATCH", "BAD_SIGNATURE", "STALE_CHALLENGE"):
        assert f'"reason":"{exact}"' in logged, exact


def test_the_nonce_is_checked_before_the_key_table_is_read(shared_server):
    server = shared_server
    key_id, key = server.keys[ALICE]

    async def scenario():
        connection = await asyncpg.connect(server.admin_dsn)
        try:  # the key table is unreadable: any login that reached it would get no answer at all
            await connection.execute("ALTER TABLE gateway_key RENAME TO gateway_key_away")
            stale = await _raw_login(server.port, lambda nonce: client_keys.signed_login(
                key, account_id=ALICE, key_id=key_id, nonce=bytes(32)))
            fresh = await _raw_login(server.port, lambda nonce: client_keys.signed_login(
                key, account_id=ALICE, key_id=key_id, nonce=nonce))
        finally:
            await connection.execute("ALTER TABLE gateway_key_away RENAME TO gateway_key")
            await connection.close()
        assert stale == p.LoginRejected(SessionReason.AUTH_FAILED)
        assert fresh == p.LoginRejected(SessionReason.UNAVAILABLE)  # this one needed the table

    run(scenario())


def test_failed_logins_are_throttled_per_address(watched_server):
    server = watched_server
    key_id, _ = server.keys[ALICE]

    async def scenario():
        bad = lambda nonce: p.Login(p.PROTOCOL_VERSION, 0, ALICE, 1000, key_id, 0, nonce, bytes(64))  # noqa: E731
        for _ in range(3):
            assert await _raw_login(server.port, bad) == p.LoginRejected(SessionReason.AUTH_FAILED)
        with pytest.raises(LoginRefused) as refused:  # now even the right key is turned away
            await server.client(ALICE).connect()
        assert refused.value.reason == SessionReason.LOGIN_THROTTLED
        await asyncio.sleep(1.7)  # one more attempt allowed per login_failure_refill_ms
        async with server.client(ALICE) as alice:
            assert alice.connected

    run(scenario())
    assert '"event":"login throttled"' in server.log()



def test_keys_add_out_creates_the_file_first_and_registers_nothing_on_failure(shared_server, tmp_path):
    server = shared_server
    before = _cli("keys", "list", "--dsn", server.dsn).stdout.count("\n")
    existing = tmp_path / "existing.pem"
    existing.write_text("keep me\n")
    victim = tmp_path / "victim"
    victim.write_text("victim\n")
    planted = tmp_path / "planted.pem"
    planted.symlink_to(victim)
    dangling = tmp_path / "dangling.pem"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (existing, planted, dangling):
        result = _cli("keys", "add", "--dsn", server.dsn, "--account", str(ALICE), "--out", str(target),
                      check=False)
        assert result.returncode != 0, target
        assert "Traceback" not in result.stderr and str(target) in result.stderr
    assert existing.read_text() == "keep me\n" and victim.read_text() == "victim\n"
    assert not (tmp_path / "nowhere").exists()
    assert _cli("keys", "list", "--dsn", server.dsn).stdout.count("\n") == before  # no orphan key


def test_keys_add_writes_a_passphrase_protected_key(shared_server, tmp_path):
    server = shared_server
    passphrase = tmp_path / "passphrase"
    passphrase.write_text("correct horse battery staple\n")
    out = tmp_path / "alice.pem"
    added = _cli("keys", "add", "--dsn", server.dsn, "--account", str(ALICE), "--out", str(out),
                 "--passphrase-file", str(passphrase))
    key_id = int(added.stdout.split()[1])
    pem = out.read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (out.stat().st_mode & 0o777) == 0o600
    with pytest.raises((TypeError, ValueError)):
        client_keys.load_private_key(pem)
    key = client_keys.load_private_key(pem, password=b"correct horse battery staple")

    async def login():
        async with Client("127.0.0.1", server.port, account_id=ALICE, key_id=key_id, private_key=key) as client:
            return client.connected

    assert run(login())


def test_the_client_warns_when_it_connects_without_tls_beyond_this_machine(shared_server):
    import warnings

    from matchcore.client.connection import PlaintextWarning

    key_id, key = shared_server.keys[ALICE]

    async def scenario():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async with shared_server.client(ALICE) as alice:  # 127.0.0.1: loopback, no warning
                assert alice.connected
        assert not [w for w in caught if issubclass(w.category, PlaintextWarning)]
        remote = Client("192.0.2.1", shared_server.port, account_id=ALICE, key_id=key_id, private_key=key,
                        connect_timeout_s=0.2)  # TEST-NET-1: never answers
        with pytest.warns(PlaintextWarning, match="without TLS"):
            with pytest.raises((OSError, asyncio.TimeoutError)):
                await remote.connect()

    run(scenario())
