"""Fixtures of the replication suite: one real local cluster (etcd, two PostgreSQL nodes under
Patroni, synchronous mode strict) for the session; every test leaves it healthy again.

The cluster takes about 10 s to start (two initdb/basebackup, Patroni's loops), so when the
run collects a replication test it is started in a thread as soon as collection ends, while
the tests before these run; the fixture waits for it."""
from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import pytest

from matchcore.persistence.cluster import LocalCluster

_FOLDER = Path(__file__).parent
_started: dict[str, object] = {}


def _start() -> None:
    base = Path(tempfile.mkdtemp(prefix="matchcore-cluster-"))
    base.chmod(0o755)  # as root, Patroni runs as the server user, who must enter it
    cluster = LocalCluster(base / "cluster")
    _started["base"], _started["cluster"] = base, cluster
    try:
        cluster.start()
    except BaseException as error:  # raised by the fixture, in the test that needs it
        _started["error"] = error


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(Path(str(item.fspath)).is_relative_to(_FOLDER) for item in session.items):
        thread = threading.Thread(target=_start, name="local-cluster-start", daemon=True)
        _started["thread"] = thread
        thread.start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    thread = _started.get("thread")
    if thread is None:
        return
    thread.join()
    _started["cluster"].kill()  # thrown away: no clean shutdown needed
    shutil.rmtree(_started["base"], ignore_errors=True)


@pytest.fixture(scope="session")
def local_cluster() -> LocalCluster:
    if "thread" not in _started:  # collected some other way: start it now
        _started["thread"] = threading.Thread(target=_start, daemon=True)
        _started["thread"].start()
    _started["thread"].join()
    if "error" in _started:
        raise _started["error"]
    return _started["cluster"]


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
