"""Failover on real processes: the drill of ``matchcore-bench failover`` in a small size, a
standby that dies (writes stall, then resume, nothing acknowledged lost), and the refusals
of ``serve --standby``."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg

from matchcore.core.codes import Side
from matchcore.bench import failover_bench as drill
from matchcore.persistence.cluster import LocalCluster


def test_kill_the_active_and_its_primary_the_standby_takes_over(cluster: LocalCluster) -> None:
    result = drill.run_failover_bench(cluster=cluster, clients=2, rate=150, before_s=1.5, after_s=1.0,
                                      commit_rounds=10)
    assert result["acked_events_lost"] == 0
    assert result["events_received"] > 100 and result["fills"] > 0 and result["orders_rejected"] == 0
    assert result["gaps"] == 0 and result["gaps_detected_by_clients"] == 0 and result["duplicates"] == 0
    assert result["client_failovers"] == 2  # both clients ended on the other endpoint
    assert result["replay_verified"] is True
    assert result["old_primary_fenced"] is True
    assert result["old_primary_rejoined"] is True
    assert 0 < result["failover_s"] < drill.FAILOVER_WAIT_MAX_S
    assert result["promoted_seen_s"] <= result["journal_taken_s"] <= result["listening_s"]


def test_without_its_standby_the_primary_acknowledges_nothing_until_it_returns(cluster: LocalCluster) -> None:
    folder = Path(tempfile.mkdtemp(prefix="matchcore-stall-"))
    folder.chmod(0o755)
    database = f"stall_{uuid.uuid4().hex[:10]}"
    cluster.create_database(database)
    primary, standby = cluster.leader(), cluster.sync_standby()
    keys = asyncio.run(drill._register_keys(cluster.dsn(primary, database), [drill.ADMIN, 1]))
    server = drill._Server(cluster.dsn(primary, database), drill._free_port(), folder, "active", False,
                           {"engine_clock_ms": 0})
    try:
        server.wait_ready()
        endpoints = [("127.0.0.1", server.port)]
        asyncio.run(drill._set_up_market(keys, endpoints, [1]))

        async def scenario() -> list[int]:
            acked = []
            async with drill._client(keys, 1, endpoints) as client:
                first = await client.new_order(drill.INSTRUMENT, Side.BUY, 1000, 1, timeout_s=10)
                assert first.accepted
                acked.append(first.event.command_seq)
                cluster.kill_node(standby)
                cluster.wait_standbys_gone(primary)
                pending = asyncio.ensure_future(client.new_order(drill.INSTRUMENT, Side.BUY, 1001, 1))
                await asyncio.sleep(3.0)
                assert not pending.done(), "acknowledged without the synchronous standby"
                cluster.start_node(standby)
                outcome = await asyncio.wait_for(pending, 90)
                assert outcome.accepted
                acked.append(outcome.event.command_seq)
            return acked

        acked = asyncio.run(scenario())
        assert server.process.poll() is None  # it waited; it did not fail
    finally:
        server.stop()

    async def on_the_standby() -> list[tuple[int, int]]:
        connection = await asyncpg.connect(cluster.admin_dsn(standby, database))
        try:
            return [(row[0], row[1]) for row in
                    await connection.fetch("SELECT first_seq, last_seq FROM matchcore.journal")]
        finally:
            await connection.close()

    rows = asyncio.run(on_the_standby())
    # every acknowledged command is in a row the standby holds
    assert all(any(first <= seq <= last for first, last in rows) for seq in acked)


def test_serve_standby_refuses_a_primary_and_serve_refuses_a_standby(cluster: LocalCluster) -> None:
    command = [sys.executable, "-m", "matchcore.cli", "serve", "--standby", "--port", "0", "--metrics-port", "-1"]
    no_dsn = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert no_dsn.returncode == 2 and "--standby needs --dsn" in no_dsn.stderr
    database = f"refuse_{uuid.uuid4().hex[:10]}"
    cluster.create_database(database)
    on_primary = subprocess.run(command + ["--dsn", cluster.dsn(cluster.leader(), database)],
                                capture_output=True, text=True, timeout=60)
    assert on_primary.returncode == 2, on_primary.stderr
    assert "is the primary, not a standby" in on_primary.stderr
    active = [sys.executable, "-m", "matchcore.cli", "serve", "--port", "0", "--metrics-port", "-1"]
    on_standby = subprocess.run(active + ["--dsn", cluster.dsn(cluster.sync_standby(), database)],
                                capture_output=True, text=True, timeout=60)
    assert on_standby.returncode == 2, on_standby.stderr
    assert "its PostgreSQL is a standby" in on_standby.stderr


def test_cluster_status_names_the_primary_and_its_standby(cluster: LocalCluster) -> None:
    status = subprocess.run([sys.executable, "-m", "matchcore.cli", "cluster", "status", "--dir", str(cluster.folder)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    roles = {member["name"]: member["role"] for member in json.loads(status.stdout)["members"]}
    assert sorted(roles.values()) == ["leader", "sync_standby"]
