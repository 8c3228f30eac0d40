"""``matchcore cluster start|stop|status``: a local replicated PostgreSQL (etcd and two
PostgreSQL nodes under Patroni, synchronous mode strict, on loopback) to try replication and
failover on one machine; ``matchcore serve --dsn`` and ``serve --standby --dsn`` then run on
its nodes (docs/operations.md, "Replication"). The processes keep running after ``start``."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

__all__ = ["register", "default_cluster_dir"]


def default_cluster_dir() -> Path:
    """Beside the embedded server's default folder: ``/var/lib/matchcore/cluster`` for root
    (the server user must enter it), else ``<user data dir>/matchcore/cluster``."""
    from matchcore.persistence.embedded import default_data_dir

    return default_data_dir().parent / "cluster"


def register(commands: argparse._SubParsersAction) -> None:
    cluster = commands.add_parser("cluster", help="a local replicated PostgreSQL: etcd and two nodes under "
                                  "Patroni (start, stop, status)")
    actions = cluster.add_subparsers(dest="action", required=True)
    for name, handler, text in (("start", start_command, "start it (initializing it the first time), wait "
                                 "for a primary and a synchronous standby, print the DSNs"),
                                ("stop", stop_command, "stop every node cleanly, then etcd"),
                                ("status", status_command, "each node's role and state (JSON)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--dir", default=None, help=f"the cluster folder (default {default_cluster_dir()})")
        action.set_defaults(handler=handler)


def _cluster(args: argparse.Namespace):
    from matchcore.persistence.cluster import LocalCluster

    return LocalCluster(args.dir or default_cluster_dir())


def start_command(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    dsn = cluster.start()
    print(f"running:  {cluster.folder} (primary {cluster.leader()}, synchronous standby {cluster.sync_standby()})")
    print(f"dsn:      {dsn}")
    for name in cluster.names:
        print(f"{name}:      {cluster.dsn(name)}")
    print("the DSNs carry the application role's password: keep them out of shell history "
          f"(it is in {cluster.folder / 'secrets.json'}, mode 0600)")
    return 0


def stop_command(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    cluster.stop()
    print(f"stopped:  {cluster.folder}")
    return 0


def status_command(args: argparse.Namespace) -> int:
    cluster = _cluster(args)
    if not (cluster.folder / "ports.json").exists():
        print(f"no cluster in {cluster.folder}")
        return 2
    members = [{key: member.get(key) for key in ("name", "role", "state", "port", "lag", "timeline")}
               for member in cluster.members()]
    print(json.dumps({"folder": os.fspath(cluster.folder), "members": members}, indent=1))
    return 0 if cluster.leader() is not None else 1
