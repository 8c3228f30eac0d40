"""``matchcore-bench demo`` and ``matchcore-bench e2e`` run small, so they cannot rot: the demo's replay
verifies, and the benchmark prints its keys."""
from __future__ import annotations

import json
import subprocess
import sys

from .conftest import env_without_matchcore


def test_demo_runs_and_its_replay_verifies(pg_server):
    result = subprocess.run([sys.executable, "-m", "matchcore.bench.cli", "demo", "--clients", "2",
                             "--seconds", "1", "--dsn", pg_server.admin_dsn],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every event re-derived and equal to the journal" in result.stdout
    assert "demo:     OK" in result.stdout


def test_bench_e2e_json_keys(pg_server):
    result = subprocess.run([sys.executable, "-m", "matchcore.bench.cli", "e2e", "--clients", "1",
                             "--seconds", "1", "--warmup", "0.5", "--rate", "2000", "--json", "--dsn", pg_server.admin_dsn],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("e2e_cmds_per_s", "ack_latency_us_p50", "ack_latency_us_p99", "ack_latency_us_p999", "machine"):
        assert key in figures
    assert figures["e2e_cmds_per_s"] > 0 and figures["commands_acked"] == figures["commands_sent"]


def test_the_client_package_reexports_the_client_library():
    import pytest

    client = pytest.importorskip("matchcore.client", reason="needs setup.py to map client/ to matchcore.client")
    from matchcore.client import connection as gateway_client

    assert client.Client is gateway_client.Client and client.load_private_key is not None
