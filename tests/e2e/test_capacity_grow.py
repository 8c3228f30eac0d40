"""Raising a capacity over real processes: a venue started with max_accounts=4 refuses a fifth
account, a restart with --set engine.max_accounts=8 accepts it, ``matchcore replay --verify``
from seq 1 gives the state hash the server stopped at, and a restart below what is in use
exits 2 with one line naming the field, the value asked and what is in use."""
from __future__ import annotations

import subprocess
import sys

import asyncpg

from matchcore import protocol as p
from matchcore.core.codes import RejectReason

from .conftest import ADMIN, ServerProcess, run


async def _add_account(server: ServerProcess, account: int):
    async with server.client(ADMIN) as admin:
        return await admin.request(p.AddAccount(account, 100 + account), timeout_s=10)


async def _last_snapshot_hash(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        signed = await connection.fetchval("SELECT state_hash FROM snapshot ORDER BY seq DESC LIMIT 1")
        return signed & ((1 << 64) - 1)
    finally:
        await connection.close()


def test_raise_max_accounts_on_an_existing_journal(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir, **{"engine.max_accounts": 4})
    try:
        server.start()
        run(server.market())  # accounts 0 (admin, fees), 1, 2, 3: full
        refused = run(_add_account(server, 4))
        assert not refused.accepted and refused.reason == RejectReason.ACCOUNT_CAPACITY
        assert server.stop() == 0
        server.settings["engine.max_accounts"] = 8
        server.start()
        assert run(_add_account(server, 4)).accepted
        assert server.stop() == 0
        live_hash = run(_last_snapshot_hash(server.admin_dsn))
        replayed = subprocess.run([sys.executable, "-m", "matchcore.cli", "replay", "--verify",
                                   "--dsn", server.dsn], capture_output=True, text=True, timeout=60)
        assert replayed.returncode == 0, replayed.stderr
        assert f"state_hash {live_hash:016x} verified seq 1.." in replayed.stdout
        # lowering below what is in use: exit 2, one line, nothing changed
        server.settings["engine.max_accounts"] = 3
        command = [sys.executable, "-m", "matchcore.cli", "serve", "--dsn", server.dsn, "--port", "0",
                   "--metrics-port", "0", "--log-level", "error"]
        for key, value in server.settings.items():
            command += ["--set", f"{key}={value}"]
        lowered = subprocess.run(command, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert lowered.returncode == 2, lowered.stderr
        lines = lowered.stderr.strip().splitlines()
        assert len(lines) == 1, lowered.stderr
        assert "engine.max_accounts=3" in lines[0] and "5 in use" in lines[0], lines[0]
    finally:
        server.drop()
