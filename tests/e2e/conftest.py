"""Fixtures of the end-to-end suite: one embedded PostgreSQL per session, real server processes.

``pg_server`` (tests/conftest.py) is the session's private PostgreSQL. ``ServerProcess`` runs ``matchcore serve`` as a
subprocess on a fresh database, with keys registered for an admin (account 0) and three
traders; ``market`` sets up assets, accounts, an instrument and deposits over the wire.
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
from typing import Iterator

import asyncpg
import pytest

from matchcore.client import keys as client_keys
from matchcore import protocol as p
from matchcore.client.connection import Client
from matchcore.gateway.key_store import PgKeyRegistry
from matchcore.persistence.embedded import EmbeddedPostgres

ADMIN, ALICE, BOB, CAROL = 0, 1, 2, 3
TRADERS = (ALICE, BOB, CAROL)
BASE, QUOTE, INSTRUMENT = 0, 1, 0
FUNDS = 10**12
ENGINE_SETTINGS = {"engine.max_accounts": 16, "engine.max_assets": 4, "engine.max_instruments": 4,
                   "engine.max_orders": 4096, "engine.max_price_levels": 256}


def run(coroutine):
    return asyncio.run(coroutine)


async def _execute(dsn: str, statement: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


class ServerProcess:
    """``matchcore serve`` on its own database; keys of ADMIN and TRADERS registered."""

    def __init__(self, pg: EmbeddedPostgres, folder: Path, **settings) -> None:
        self.pg = pg
        self.folder = folder
        self.settings = {**ENGINE_SETTINGS, **settings}
        self.database = f"e2e_{uuid.uuid4().hex[:12]}"
        self.dsn = pg.create_database(self.database)  # the application role's (least privilege)
        head, _, _ = pg.admin_dsn.rpartition("/")
        self.admin_dsn = f"{head}/{self.database}"  # the superuser's, for what a test does behind the server's back
        self.keys: dict[int, tuple[int, client_keys.PrivateKey]] = {}
        self.process: subprocess.Popen | None = None
        self.port = self.metrics_port = 0
        self.tls: tuple[str, str] | None = None
        #: what ``--dsn`` is given (None: ``dsn``), and extra environment for the server
        self.dsn_argument: str | None = None
        self.environment: dict[str, str] = {}
        self.log_path = folder / f"{self.database}.log"
        run(self._register())

    async def _register(self) -> None:
        registry = await PgKeyRegistry.connect(self.dsn)
        try:
            for account in (ADMIN, *TRADERS):
                key = client_keys.generate_key()
                record = await registry.add(account, key.public_key, admin=account == ADMIN)
                self.keys[account] = (record.key_id, key)
        finally:
            await registry.close()

    def start(self) -> "ServerProcess":
        ready = self.folder / f"{self.database}.ready"
        ready.unlink(missing_ok=True)
        command = [sys.executable, "-m", "matchcore.cli", "serve", "--dsn", self.dsn_argument or self.dsn, "--port", "0",
                   "--metrics-port", "0", "--ready-file", str(ready), "--log-level", "info"]
        if self.tls:
            command += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        for key, value in self.settings.items():
            command += ["--set", f"{key}={value}"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        env={**os.environ, **self.environment})
        log.close()
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert self.process.poll() is None, f"server exited at start:\n{self.log()}"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        info = json.loads(ready.read_text())
        self.port, self.metrics_port = info["port"], info["metrics_port"]
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, account: int, **kw) -> Client:
        key_id, key = self.keys[account]
        return Client("127.0.0.1", self.port, account_id=account, key_id=key_id, private_key=key, **kw)

    async def market(self) -> None:
        async with self.client(ADMIN) as admin:
            requests = [p.AddAsset(BASE, 2, 1), p.AddAsset(QUOTE, 2, 2)]
            requests += [p.AddAccount(account, 10 + account) for account in TRADERS]
            requests.append(p.AddInstrument(INSTRUMENT, BASE, QUOTE, 1, 1, 1_000_000))
            transfer_id = 1
            for account in TRADERS:
                for asset in (BASE, QUOTE):
                    requests.append(p.Deposit(account, asset, transfer_id, FUNDS))
                    transfer_id += 1
            for request in requests:
                outcome = await admin.request(request, timeout_s=10)
                assert outcome.accepted, (request, outcome)

    async def journal_commands_from_clients(self) -> int:
        """Journaled commands but the engine clock's CLOCK ticks (the server adds one after
        each engine_clock_ms without other commands)."""
        from matchcore.core.codes import CommandKind
        from matchcore.persistence import AsyncJournal

        journal = await AsyncJournal.connect(self.dsn)
        try:
            commands = await journal.commands()
        finally:
            await journal.close()
        return int((commands["kind"] != CommandKind.CLOCK).sum())

    async def journal_last_seq(self) -> int:
        connection = await asyncpg.connect(self.dsn)
        try:
            return int(await connection.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal") or 0)
        finally:
            await connection.close()

    def drop(self) -> None:
        self.stop()
        run(_execute(self.pg.admin_dsn, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))


@pytest.fixture
def work_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="matchcore-e2e-work-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def server(pg_server, work_dir) -> Iterator[ServerProcess]:
    """A running server with a funded market."""
    process = ServerProcess(pg_server, work_dir).start()
    try:
        run(process.market())
        yield process
    finally:
        process.drop()


@pytest.fixture(scope="module")
def shared_server(pg_server) -> Iterator[ServerProcess]:
    """One running server with a funded market for a whole module (tests that leave the
    state as they found it, or check only what they changed)."""
    folder = Path(tempfile.mkdtemp(prefix="matchcore-e2e-shared-"))
    folder.chmod(0o755)
    process = ServerProcess(pg_server, folder).start()
    try:
        run(process.market())
        yield process
    finally:
        process.drop()
        shutil.rmtree(folder, ignore_errors=True)


def env_without_matchcore() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MATCHCORE_")}
