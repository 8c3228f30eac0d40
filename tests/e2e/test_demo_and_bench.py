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
                             "--seconds", "1", "--warmup", "0.5", "--rate", "2000", "--json", "--dsn", pg_server.admin_dsn,
                             "--journal-reference", "8192"],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("e2e_cmds_per_s", "ack_latency_us_p50", "ack_latency_us_p99", "ack_latency_us_p999",
                "ack_latency_overflow_share", "machine"):
        assert key in figures
    assert figures["e2e_cmds_per_s"] > 0 and figures["commands_acked"] == figures["commands_sent"]
    assert figures["server"]["window"] == "measured" and figures["server"]["commit_latency_ms_p99"] > 0
    # the reference ran on the same server first; the CPU split covers the measured window
    reference = figures["journal_reference"]
    assert reference["commands"] == 8192 and reference["journal_cmds_per_s"] > 0
    assert figures["e2e_over_journal"] == figures["e2e_cmds_per_s"] / reference["journal_cmds_per_s"]
    cpu = figures["cpu"]
    assert set(cpu["cpu_us_per_command"]) == {"server", "postgresql", "clients", "bench"}
    assert cpu["cpu_us_per_command"]["server"] > 0 and cpu["cpu_us_per_command"]["clients"] > 0
    assert 0 < cpu["machine_busy_share"] <= 1


def test_the_client_package_reexports_the_client_library():
    import pytest

    client = pytest.importorskip("matchcore.client", reason="needs setup.py to map client/ to matchcore.client")
    from matchcore.client import connection as gateway_client

    assert client.Client is gateway_client.Client and client.load_private_key is not None


def test_demo_keep_keeps_the_journal_for_export_and_restart(tmp_path):
    """``demo --keep``: the printed DSN reads the journal at once; after ``matchcore database
    stop`` an export is one line and exit 2; ``database start`` brings it back."""
    import re
    import shutil
    from pathlib import Path

    from matchcore.persistence.embedded import EmbeddedPostgres

    def matchcore(*arguments: str, dsn: str | None = None) -> subprocess.CompletedProcess:
        env = env_without_matchcore() | ({"MATCHCORE_DSN": dsn} if dsn else {})
        return subprocess.run([sys.executable, "-m", "matchcore.cli", *arguments], capture_output=True,
                              text=True, env=env, timeout=120)

    result = subprocess.run([sys.executable, "-m", "matchcore.bench.cli", "demo", "--clients", "2",
                             "--seconds", "1", "--keep"],
                            capture_output=True, text=True, env=env_without_matchcore(), timeout=180)
    folder_match = re.search(r"matchcore database stop --data-dir (\S+)", result.stdout)
    folder = Path(folder_match.group(1)) if folder_match else None
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        dsn = re.search(r"^dsn:\s+(\S+)$", result.stdout, re.M).group(1)
        database = re.search(r"^kept:\s+database (\S+)$", result.stdout, re.M).group(1)
        assert folder is not None and folder.is_dir()
        out = tmp_path / "trades.csv"
        exported = matchcore("export", "trades", "--dsn", dsn, "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        trades = int(exported.stdout.split()[0])
        assert trades > 0 and len(out.read_text().splitlines()) == trades + 1

        assert matchcore("database", "stop", "--data-dir", str(folder)).returncode == 0
        # (from the environment: --dsn with a password adds a warning line)
        refused = matchcore("export", "trades", "--out", str(out), dsn=dsn)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "journal database" in refused.stderr and "Traceback" not in refused.stderr

        missing = matchcore("database", "start", "--data-dir", str(folder), "--database", "nosuch")
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
        started = matchcore("database", "start", "--data-dir", str(folder), "--database", database)
        assert started.returncode == 0, started.stderr
        dsn_again = re.search(r"^dsn:\s+(\S+)$", started.stdout, re.M).group(1)
        again = matchcore("export", "trades", "--out", str(out), dsn=dsn_again)
        assert again.returncode == 0 and again.stdout.startswith(f"{trades} trades"), again.stderr
    finally:
        if folder is not None:
            EmbeddedPostgres(folder).stop("fast")
            shutil.rmtree(folder.parent if folder.name == "pg" else folder, ignore_errors=True)


def test_database_start_refuses_a_folder_without_a_server(tmp_path):
    result = subprocess.run([sys.executable, "-m", "matchcore.cli", "database", "start", "--data-dir",
                             str(tmp_path / "none")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "holds no embedded PostgreSQL" in result.stderr
    assert not (tmp_path / "none").exists()
