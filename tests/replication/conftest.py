"""Fixtures of the replication suite: one real local cluster (etcd, two PostgreSQL nodes under
Patroni, synchronous mode strict) for the session; every test leaves it healthy again."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from matchcore.persistence.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster():
    base = Path(tempfile.mkdtemp(prefix="matchcore-cluster-"))
    base.chmod(0o755)  # as root, Patroni runs as the server user, who must enter it
    cluster = LocalCluster(base / "cluster")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.kill()  # thrown away: no clean shutdown needed
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def cluster(local_cluster: LocalCluster):
    """The session's cluster, healthy at the start and (waited for) at the end of the test."""
    local_cluster.wait_for(local_cluster.healthy, 60, "a healthy cluster before the test")
    yield local_cluster
    for name in local_cluster.names:
        local_cluster.start_node(name)
    local_cluster.wait_for(local_cluster.healthy, 90, "a healthy cluster after the test")


@pytest.fixture
def cluster_dsn(cluster: LocalCluster) -> str:
    """The application role's multi-host DSN of a new database on the cluster."""
    return cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")
