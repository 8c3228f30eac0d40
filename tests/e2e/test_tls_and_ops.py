"""TLS end to end (1.3 preferred, 1.2 with AEAD suites only), the metrics endpoint, JSON log lines
without secrets (the password from a passfile, never on the command line; a DSN's password in
any form masked, and warned about), configuration errors at start."""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import urllib.request

from pathlib import Path

from matchcore.core.codes import Side

from ..tls import write_self_signed
from .conftest import ALICE, INSTRUMENT, ServerProcess, env_without_matchcore, run


def _split_password(dsn: str) -> tuple[str, str]:
    """``postgresql://user:pw@host:port/db`` -> (the DSN without the password, pw)."""
    head, _, rest = dsn.partition("://")
    credentials, _, location = rest.partition("@")
    user, _, password = credentials.partition(":")
    return f"{head}://{user}@{location}", password


async def _tls_version(port: int, context: ssl.SSLContext) -> str:
    """Handshake, read the CHALLENGE; the TLS version agreed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
    try:
        await asyncio.wait_for(reader.readexactly(4), 10)
        return writer.get_extra_info("ssl_object").version()
    finally:
        writer.close()


def _tls12_context(cafile: str, ciphers: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=cafile)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def test_tls_metrics_and_logs(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir)
    server.tls = write_self_signed(work_dir)
    server.dsn_argument, password = _split_password(server.dsn)  # the password comes from a passfile
    passfile = work_dir / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:{server.database}:*:{password}\n")
    passfile.chmod(0o600)
    server.environment = {"PGPASSFILE": str(passfile)}
    server.start()
    try:
        assert password not in (Path("/proc") / str(server.process.pid) / "cmdline").read_text()
        context = ssl.create_default_context(cafile=server.tls[0])
        assert run(_tls_version(server.port, context)) == "TLSv1.3"
        assert run(_tls_version(server.port, _tls12_context(server.tls[0], "ECDHE+AESGCM"))) == "TLSv1.2"
        for cbc in ("ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"):
            try:
                run(_tls_version(server.port, _tls12_context(server.tls[0], f"{cbc}:@SECLEVEL=0")))
                raise AssertionError(f"the server agreed to {cbc}")
            except (ssl.SSLError, ConnectionError):
                pass

        async def plain_tcp():
            async with server.client(0, connect_timeout_s=1.0):
                pass

        try:  # a plain-TCP client cannot log in to a TLS server
            run(plain_tcp())
            raise AssertionError("a plain-TCP client logged in to a TLS server")
        except Exception as error:
            assert not isinstance(error, AssertionError)

        async def over_tls():
            from matchcore import protocol as p

            async with server.client(0, ssl=context, server_hostname="localhost") as admin:
                for message in (p.AddAsset(0, 2, 1), p.AddAsset(1, 2, 2), p.AddAccount(ALICE, 3),
                                p.AddInstrument(INSTRUMENT, 0, 1, 1, 1, 1000), p.Deposit(ALICE, 1, 1, 10**9)):
                    assert (await admin.request(message, timeout_s=10)).accepted
            async with server.client(ALICE, ssl=context, server_hostname="localhost") as alice:
                assert (await alice.new_order(INSTRUMENT, Side.BUY, 10, 1, timeout_s=10)).accepted

        run(over_tls())
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        assert 'matchcore_commands_total{kind="NEW_ORDER"} 1.0' in text
        assert "matchcore_ack_latency_seconds_bucket" in text and "matchcore_commit_latency_seconds_count" in text
        assert 'matchcore_ring_depth_records{ring="input"}' in text and "matchcore_sessions " in text
    finally:
        assert server.stop() == 0
        server.drop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "listening" in events and "login accepted" in events and "stopped" in events
    assert password not in server.log()
    assert "dsn carries a password" not in server.log()
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)


def test_a_password_in_the_dsn_query_is_masked_and_warned_about(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir)
    without, password = _split_password(server.dsn)
    server.dsn_argument = f"{without}?password={password}&application_name=matchcore-test"
    server.start()
    try:
        assert server.alive()
    finally:
        assert server.stop() == 0
        server.drop()
    logged = server.log()
    assert password not in logged
    warnings = [json.loads(line) for line in logged.splitlines() if "dsn carries a password" in line]
    assert warnings and warnings[0]["level"] == "warning"


def test_a_bad_configuration_is_refused_at_start(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("listen_port = 7401\n[limits]\nmax_sessions = 0\n")
    result = subprocess.run([sys.executable, "-m", "matchcore.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=60)
    assert result.returncode == 2 and "max_sessions must be positive" in result.stderr
