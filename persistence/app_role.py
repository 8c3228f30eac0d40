"""The least-privilege database role matchcore connects as, and the SQL that sets it up.

The server needs, in its database: to create and use its own tables (journal, snapshot,
meta, schema_version, gateway_key with its sequence, trigger and trigger function,
gateway_stream_checkpoint), ``pg_advisory_xact_lock``, ``LISTEN``/``pg_notify`` (granted to
every role). Nothing more. So the application role:

- is ``NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS``, and has no
  membership of any role (``pg_execute_server_program``, ``pg_read_server_files``, ...):
  it cannot run ``COPY ... FROM PROGRAM``, read server files, or make roles;
- owns one schema, ``APP_SCHEMA``, in each database it uses (its tables live there and it
  finds them through its ``search_path``), and is granted ``CONNECT`` on that database;
  it cannot create anything in ``public`` (PostgreSQL 15+ default) or anywhere else.

The superuser is for set-up only: ``EmbeddedPostgres`` runs these statements as its bootstrap
superuser; on a PostgreSQL of your own (``--dsn``) a DBA runs the same ones (printed by
``python -m matchcore.persistence.app_role ROLE DATABASE``; docs/operations.md).
Tables left in ``public`` by a matchcore from before the role existed are moved into the
schema and given to the role (``legacy_statements``).
"""
from __future__ import annotations

import sys

__all__ = ["APP_ROLE", "APP_SCHEMA", "OWN_TABLES", "role_statements", "database_statements",
           "legacy_statements"]

#: The role of the embedded server's DSN.
APP_ROLE = "matchcore_app"
#: The schema, in each database, that the role owns and keeps its tables in.
APP_SCHEMA = "matchcore"
#: Every table matchcore creates (persistence/schema.py, gateway/key_store.py, gateway/checkpoints.py).
OWN_TABLES = ("schema_version", "journal", "snapshot", "meta", "gateway_key", "gateway_stream_checkpoint")


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def role_statements(role: str, password: str | None) -> list[str]:
    """Cluster-wide, idempotent: the role exists, can log in, has no attribute beyond LOGIN."""
    ident = _identifier(role)
    password_clause = f" PASSWORD {_literal(password)}" if password is not None else ""
    return [
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal(role)}) THEN "
        f"CREATE ROLE {ident} LOGIN; END IF; END $$",
        f"ALTER ROLE {ident} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        f"NOINHERIT{password_clause}",
        f"ALTER ROLE {ident} SET search_path = {_identifier(APP_SCHEMA)}",
    ]


def database_statements(role: str, database: str) -> list[str]:
    """Run connected to ``database``, idempotent: the role's schema there and CONNECT on it."""
    ident, schema = _identifier(role), _identifier(APP_SCHEMA)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {ident}",
        f"ALTER SCHEMA {schema} OWNER TO {ident}",
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {_identifier(database)} TO {ident}",
    ]


def legacy_statements(role: str) -> str:
    """Tables of an older matchcore in ``public`` (owned by the superuser) move to the
    role's schema and become the role's (their sequences and indexes go with them)."""
    tables = ", ".join(_literal(table) for table in OWN_TABLES)
    return (
        "DO $$ DECLARE t text; BEGIN "
        f"FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename IN ({tables}) "
        f"AND NOT EXISTS (SELECT FROM pg_tables o WHERE o.schemaname = {_literal(APP_SCHEMA)} "
        "AND o.tablename = pg_tables.tablename) LOOP "
        f"EXECUTE format('ALTER TABLE public.%I SET SCHEMA %I', t, {_literal(APP_SCHEMA)}); "
        f"EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', {_literal(APP_SCHEMA)}, t, {_literal(role)}); "
        "END LOOP; END $$"
    )


def main(argv: list[str]) -> int:
    """Print the set-up SQL for a role and database of your own PostgreSQL."""
    if len(argv) != 2:
        print("usage: python -m matchcore.persistence.app_role ROLE DATABASE", file=sys.stderr)
        return 2
    role, database = argv
    print(f"-- as a superuser (or a role with CREATEROLE), once; then set the password: \\password {role}")
    for statement in role_statements(role, None):
        print(statement + ";")
    print(f"-- connected to {database}, as its owner or a superuser")
    for statement in database_statements(role, database):
        print(statement + ";")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
