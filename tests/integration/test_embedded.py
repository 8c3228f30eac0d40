"""The embedded server keeps its data between runs, listens on 127.0.0.1 only, and survives immediate stops."""
from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from matchcore.persistence.embedded import SERVER_OS_USER, EmbeddedPostgres, EmbeddedPostgresError


@pytest.fixture
def base_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="matchcore-embedded-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


async def query(dsn: str, sql: str) -> object:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql)
    finally:
        await connection.close()


def test_data_survives_restarts_and_immediate_stops(base_dir: Path) -> None:
    server = EmbeddedPostgres(base_dir / "pg")
    try:
        dsn = server.start()
        assert asyncio.run(query(dsn, "SHOW listen_addresses")) == "127.0.0.1"
        assert asyncio.run(query(server.admin_dsn, "SHOW unix_socket_directories")) == ""  # superuser only
        assert asyncio.run(query(dsn, "SHOW fsync")) == "on"
        asyncio.run(query(dsn, "CREATE TABLE kept AS SELECT 42 AS answer"))
        assert "***" in server.dsn_redacted and server.dsn.split(":")[2] not in server.dsn_redacted

        server.stop()
        assert not server.is_running()
        server.stop()  # stopping a stopped server is fine

        again = EmbeddedPostgres(base_dir / "pg")
        assert again.start() == dsn  # same folder, same password, same port
        assert EmbeddedPostgres(base_dir / "pg").start() == dsn  # attaches to the running one
        assert asyncio.run(query(dsn, "SELECT answer FROM kept")) == 42

        asyncio.run(query(dsn, "INSERT INTO kept VALUES (43)"))
        again.stop("immediate")  # a crash: WAL recovery on the next start
        again.start()
        assert asyncio.run(query(dsn, "SELECT count(*) FROM kept")) == 2
    finally:
        server.stop()


def test_folder_layout_and_ownership(base_dir: Path) -> None:
    with EmbeddedPostgres(base_dir / "pg") as server:
        assert server.is_running()
        password = base_dir / "pg" / "password"
        assert stat.S_IMODE(password.stat().st_mode) == 0o600
        assert stat.S_IMODE(server.pgdata.stat().st_mode) == 0o700
        if os.geteuid() == 0:
            assert server.pgdata.stat().st_uid == pwd.getpwnam(SERVER_OS_USER).pw_uid
    assert not server.is_running()  # the context manager stopped what it started


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another OS user")
def test_refuses_a_folder_the_server_user_cannot_enter(base_dir: Path) -> None:
    closed = base_dir / "closed"
    closed.mkdir(mode=0o700)
    closed.chmod(0o700)
    with pytest.raises(EmbeddedPostgresError, match="cannot enter"):
        EmbeddedPostgres(closed / "pg").start()
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700  # left as it was
