"""``matchcore serve``: the server, on the embedded PostgreSQL unless given one."""
from __future__ import annotations

import argparse
import logging
import sys

from matchcore.cli.database import add_database_options

__all__ = ["register", "DSN_PASSWORD_WARNING"]

DSN_PASSWORD_WARNING = ("a password on the command line is visible to every local user (ps, /proc/PID/cmdline); "
                        "put it in a passfile (PGPASSFILE, ~/.pgpass) or the environment (PGPASSWORD, "
                        "MATCHCORE_DSN) instead")


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the server (embedded PostgreSQL unless --dsn)")
    serve.add_argument("--config", default=None, help="a TOML file (see docs/operations.md)")
    serve.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="trading port (default 7400; 0: any)")
    serve.add_argument("--metrics-host", default=None)
    serve.add_argument("--metrics-port", type=int, default=None, help="Prometheus port (default 9400; -1: off)")
    add_database_options(serve)
    serve.add_argument("--tls-cert", default=None, help="PEM certificate chain: TLS on")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    serve.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    serve.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="any configuration field, e.g. limits.max_sessions=100 (repeatable)")
    serve.add_argument("--ready-file", default=None, help="write {port, metrics_port, pid} here once listening")
    serve.add_argument("--standby", action="store_true",
                       help="a hot standby: follow the journal on --dsn (a PostgreSQL standby) and serve "
                       "only once that PostgreSQL is the primary (docs/operations.md, Replication)")
    serve.set_defaults(handler=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    from matchcore.errors import ConfigError
    from matchcore.gateway import logs
    from matchcore.gateway.app import run_server
    from matchcore.gateway.config import load_config, parse_value

    overrides = {"listen_host": args.host, "listen_port": args.port, "metrics_host": args.metrics_host,
                 "metrics_port": args.metrics_port, "dsn": args.dsn, "data_dir": args.data_dir,
                 "tls_cert": args.tls_cert, "tls_key": args.tls_key, "log_level": args.log_level}
    for assignment in args.set or ():
        key, _, value = assignment.partition("=")
        overrides[key.strip()] = parse_value(value.strip())
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as error:
        print(f"matchcore serve: {error}", file=sys.stderr)
        return 2
    if args.standby and not config.dsn:
        print("matchcore serve: --standby needs --dsn (its PostgreSQL standby); the embedded server "
              "has no replica", file=sys.stderr)
        return 2
    logs.configure(config.log_level)
    if args.dsn and logs.dsn_has_password(args.dsn):
        logging.getLogger("matchcore.cli").warning(
            "--dsn carries a password", extra={"detail": DSN_PASSWORD_WARNING})
    return run_server(config, ready_file=args.ready_file, standby=args.standby)
