"""The embedded server's DSN is a least-privilege role (no COPY ... FROM PROGRAM, no CREATE ROLE),
a real ``matchcore serve`` connects only as it, and starting as root never writes through a
symlink planted in the server user's folder."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import pytest

from matchcore.persistence.embedded import EmbeddedPostgres


def _admin_dsn(server: EmbeddedPostgres) -> str:
    return getattr(server, "admin_dsn", server.dsn)


async def _fetch(dsn: str, sql: str, *args):
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


def test_the_dsn_role_cannot_run_programs_or_make_roles(pg_server):
    dsn = pg_server.dsn

    async def scenario():
        connection = await asyncpg.connect(dsn)
        try:
            assert await connection.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False
            await connection.execute("CREATE TEMP TABLE loot (line text)")
            for statement in ("COPY loot FROM PROGRAM 'id'", "CREATE ROLE intruder SUPERUSER LOGIN",
                              "CREATE DATABASE intruder", "CREATE TABLE public.planted (x int)",
                              "ALTER ROLE current_user SUPERUSER"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await connection.execute(statement)
            role = await connection.fetchrow(
                "SELECT rolcreaterole, rolcreatedb, rolreplication, rolbypassrls FROM pg_roles "
                "WHERE rolname = current_user")
            assert not any(role.values())
        finally:
            await connection.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def fresh_folder():
    base = Path(tempfile.mkdtemp(prefix="matchcore-role-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        EmbeddedPostgres(base / "pg").stop("immediate")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the root -> server OS user case needs root")
def test_a_symlink_planted_in_pgdata_is_not_followed(fresh_folder):
    server = EmbeddedPostgres(fresh_folder / "pg")
    server.start()
    server.stop()
    victim = fresh_folder / "victim"  # a root-owned file the server user must not get
    victim.write_text("root's own\n")
    victim.chmod(0o644)
    planted = server.pgdata / "matchcore.conf"  # as the server user could: it owns pgdata
    planted.unlink(missing_ok=True)
    planted.symlink_to(victim)
    dsn = server.start()
    assert victim.read_text() == "root's own\n"
    assert victim.stat().st_uid == 0 and (victim.stat().st_mode & 0o777) == 0o644
    rows = asyncio.run(_fetch(dsn, "SELECT current_setting('listen_addresses') AS listen, "
                                   "current_setting('port') AS port, current_setting('fsync') AS fsync"))
    assert dict(rows[0]) == {"listen": "127.0.0.1", "port": str(server.port), "fsync": "on"}


def test_serve_on_the_embedded_server_connects_as_the_application_role(fresh_folder):
    ready = fresh_folder / "ready.json"
    command = [sys.executable, "-m", "matchcore.cli", "serve", "--data-dir", str(fresh_folder / "pg"),
               "--port", "0", "--metrics-port", "-1", "--ready-file", str(ready)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MATCHCORE_")}
    log = open(fresh_folder / "serve.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
    log.close()
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert process.poll() is None, (fresh_folder / "serve.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        json.loads(ready.read_text())
        server = EmbeddedPostgres(fresh_folder / "pg")
        server.start()  # attaches: for its admin DSN
        rows = asyncio.run(_fetch(_admin_dsn(server),
                                  "SELECT a.application_name, a.usename, r.rolsuper FROM pg_stat_activity a "
                                  "JOIN pg_roles r ON r.rolname = a.usename WHERE a.application_name LIKE 'matchcore%'"))
        assert {row["application_name"] for row in rows} >= {"matchcore-keys", "matchcore-key-watch"}
        assert all(not row["rolsuper"] for row in rows), [dict(row) for row in rows]
        tables = asyncio.run(_fetch(_admin_dsn(server),
                                    "SELECT tablename, tableowner FROM pg_tables WHERE tablename IN "
                                    "('journal', 'snapshot', 'meta', 'gateway_key', 'gateway_stream_checkpoint')"))
        assert len(tables) == 5 and {row["tableowner"] for row in tables} == {rows[0]["usename"]}
    finally:
        process.terminate()
        assert process.wait(30) == 0


def test_tables_of_an_older_matchcore_move_to_the_application_role(pg_server):
    from matchcore.persistence.app_role import APP_ROLE, APP_SCHEMA

    async def scenario():
        admin = await asyncpg.connect(pg_server.admin_dsn)
        try:
            await admin.execute("CREATE DATABASE legacy_role_test")
        finally:
            await admin.close()
        head, _, _ = pg_server.admin_dsn.rpartition("/")
        old = await asyncpg.connect(f"{head}/legacy_role_test")
        try:  # as a matchcore before the role: the superuser's tables in public
            await old.execute("CREATE TABLE public.gateway_key (key_id bigserial PRIMARY KEY, account_id bigint)")
            await old.execute("INSERT INTO public.gateway_key (account_id) VALUES (7)")
        finally:
            await old.close()
        await asyncio.get_running_loop().run_in_executor(None, pg_server.grant, "legacy_role_test")
        app = await asyncpg.connect(pg_server.dsn_for("legacy_role_test"))
        try:
            assert await app.fetchval("INSERT INTO gateway_key (account_id) VALUES (8) RETURNING key_id") == 2
            owners = await app.fetch("SELECT n.nspname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
                                     "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE 'gateway_key%'")
            assert {(row["nspname"], row["owner"]) for row in owners} == {(APP_SCHEMA, APP_ROLE)}
        finally:
            await app.close()
            admin = await asyncpg.connect(pg_server.admin_dsn)
            await admin.execute("DROP DATABASE legacy_role_test WITH (FORCE)")
            await admin.close()

    asyncio.run(scenario())
