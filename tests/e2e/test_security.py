"""Security against a real server: wrong, unknown and revoked keys, a replayed login, orders for
another account and admin commands from a trader are all refused (a client is told only
AUTH_FAILED; the log says which check failed), and nothing reaches the journal."""
from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys

import pytest

from matchcore.core.codes import Side
from matchcore.client import keys as client_keys
from matchcore import protocol as wire
from matchcore import protocol as p
from matchcore.client.connection import Client, LoginRefused
from matchcore.protocol import SessionReason

from .conftest import ALICE, BASE, BOB, INSTRUMENT, env_without_matchcore, run


async def _raw_login(port: int, login_for_nonce) -> p.Message:
    """Connect, read CHALLENGE, send ``login_for_nonce(nonce)``, return the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        challenge = p.decode(await _frame(reader))
        writer.write(login_for_nonce(challenge.nonce).encode())
        return p.decode(await _frame(reader))
    finally:
        writer.close()


async def _frame(reader: asyncio.StreamReader) -> bytes:
    head = await asyncio.wait_for(reader.readexactly(2), 10)
    return head + await reader.readexactly((head[0] | head[1] << 8) - 2)


def test_bad_logins_are_refused_and_change_nothing(shared_server):
    server = shared_server

    async def scenario():
        before = await server.journal_commands_from_clients()
        alice_key_id, alice_key = server.keys[ALICE]
        bob_key_id, _ = server.keys[BOB]
        # a key that is not the registered one for this key id
        impostor = Client("127.0.0.1", server.port, account_id=ALICE, key_id=alice_key_id,
                          private_key=client_keys.generate_key())
        with pytest.raises(LoginRefused) as refused:
            await impostor.connect()
        assert refused.value.reason == SessionReason.AUTH_FAILED  # BAD_SIGNATURE in the log
        # another account's key id
        with pytest.raises(LoginRefused) as refused:
            await Client("127.0.0.1", server.port, account_id=ALICE, key_id=bob_key_id,
                         private_key=alice_key).connect()
        assert refused.value.reason == SessionReason.AUTH_FAILED  # ACCOUNT_MISMATCH in the log
        # a key id nobody registered
        with pytest.raises(LoginRefused) as refused:
            await Client("127.0.0.1", server.port, account_id=ALICE, key_id=9_999,
                         private_key=alice_key).connect()
        assert refused.value.reason == SessionReason.AUTH_FAILED  # UNKNOWN_KEY in the log
        # a login signed for another connection's challenge, replayed
        captured = {}

        def sign(nonce):
            captured["login"] = client_keys.signed_login(alice_key, account_id=ALICE, key_id=alice_key_id, nonce=nonce)
            return captured["login"]

        assert isinstance(await _raw_login(server.port, sign), p.LoginAccepted)
        answer = await _raw_login(server.port, lambda nonce: captured["login"])
        assert answer == p.LoginRejected(SessionReason.AUTH_FAILED)  # STALE_CHALLENGE
        # the same, with the new nonce pasted in but the old signature
        answer = await _raw_login(server.port, lambda nonce: dataclasses.replace(captured["login"], nonce=nonce))
        assert answer == p.LoginRejected(SessionReason.AUTH_FAILED)  # BAD_SIGNATURE
        await asyncio.sleep(0.3)
        assert await server.journal_commands_from_clients() == before

    run(scenario())
    assert server.alive()


def test_orders_for_another_account_and_admin_commands_are_refused(shared_server):
    server = shared_server

    async def scenario():
        before = await server.journal_commands_from_clients()
        async with server.client(ALICE) as alice:
            other = p.NewOrder(Side.BUY, 1, 1, 1, BOB, INSTRUMENT, alice.next_client_id(), 100, 1, 0, 0)
            outcome = await alice.request(other, timeout_s=10)
            assert outcome.reject.reason == SessionReason.WRONG_ACCOUNT
            for message in (p.Cancel(BOB, 1), p.MassCancel(BOB, p.ALL_INSTRUMENTS, 77)):
                assert (await alice.request(message, timeout_s=10)).reject.reason == SessionReason.WRONG_ACCOUNT
            for message in (p.Deposit(ALICE, BASE, 999, 10**6), p.AddAccount(9, 5), p.HaltInstrument(INSTRUMENT, 6),
                            p.Withdraw(BOB, BASE, 998, 1), p.SetFees(INSTRUMENT, 7, 100, 100)):
                outcome = await alice.request(message, timeout_s=10)
                assert outcome.reject is not None and outcome.reject.reason == SessionReason.NOT_AUTHORIZED
        await asyncio.sleep(0.3)
        assert await server.journal_commands_from_clients() == before

    run(scenario())


def test_keys_cli_add_list_revoke_and_a_revoked_key_is_refused(shared_server, tmp_path):
    server = shared_server
    env = env_without_matchcore()
    key_file = tmp_path / "carol2.pem"
    added = subprocess.run([sys.executable, "-m", "matchcore.cli", "keys", "add", "--dsn", server.dsn,
                            "--account", str(ALICE), "--out", str(key_file)],
                           capture_output=True, text=True, env=env, check=True)
    key_id = int(added.stdout.split()[1])
    assert (key_file.stat().st_mode & 0o777) == 0o600
    key = client_keys.load_private_key(key_file.read_bytes())
    assert "PRIVATE" not in added.stdout
    listed = subprocess.run([sys.executable, "-m", "matchcore.cli", "keys", "list", "--dsn", server.dsn],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert wire.fingerprint(key.public_key) in listed

    async def login():
        async with Client("127.0.0.1", server.port, account_id=ALICE, key_id=key_id, private_key=key) as client:
            return (await client.new_order(INSTRUMENT, Side.BUY, 1, 1, timeout_s=10)).accepted

    assert run(login())
    subprocess.run([sys.executable, "-m", "matchcore.cli", "keys", "revoke", "--dsn", server.dsn, str(key_id)],
                   capture_output=True, text=True, env=env, check=True)
    with pytest.raises(LoginRefused) as refused:
        run(login())
    assert refused.value.reason == SessionReason.AUTH_FAILED
    assert '"reason":"KEY_REVOKED"' in server.log()
    assert "PRIVATE KEY" not in server.log() and key_file.read_text().splitlines()[1] not in server.log()
