"""TLS end to end, the metrics endpoint, JSON log lines without secrets, configuration errors at start."""
from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request

from matchcore.core.codes import Side

from ..tls import write_self_signed
from .conftest import ALICE, INSTRUMENT, ServerProcess, env_without_matchcore, run


def test_tls_metrics_and_logs(pg_server, work_dir):
    server = ServerProcess(pg_server, work_dir)
    server.tls = write_self_signed(work_dir)
    server.start()
    try:
        context = ssl.create_default_context(cafile=server.tls[0])

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
    password = pg_server.dsn.split(":")[2].split("@")[0]
    assert password not in server.log()
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)


def test_a_bad_configuration_is_refused_at_start(tmp_path):
    config = tmp_path / "server.toml"
    config.write_text("listen_port = 7401\n[limits]\nmax_sessions = 0\n")
    result = subprocess.run([sys.executable, "-m", "matchcore.cli", "serve", "--config", str(config)],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=60)
    assert result.returncode == 2 and "max_sessions must be positive" in result.stderr
