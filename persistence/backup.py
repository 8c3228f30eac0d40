"""Backups of the journal database, and their restore, with the PostgreSQL tools the
pip-installed server ships (``pg_dump``, ``pg_restore``).

A backup is one ``pg_dump --format=custom`` archive of the application schema (the journal,
snapshots, meta, keys, checkpoints, cancel-on-disconnect rows): pg_dump reads everything in
one repeatable-read transaction, so the archive is one consistent point of the journal even
while the server writes (a batch is in it whole or not at all). A restore loads it into a
database whose application schema is then replaced by the archive's; ``matchcore replay
--verify`` of the restored copy re-derives every event and gives the state hash.

Passwords never go on a command line (``/proc/PID/cmdline``): the tools get the DSN without
its password and the password in ``PGPASSWORD``; a ``PGPASSFILE`` works as well.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from matchcore.persistence.app_role import APP_SCHEMA
from matchcore.persistence.embedded import POSTGRES_BIN_PATH
from matchcore.persistence.errors import PersistenceError

__all__ = ["BackupError", "backup", "restore"]

#: how long one pg_dump or pg_restore may run
TOOL_TIMEOUT_S = 3600


class BackupError(PersistenceError):
    """pg_dump or pg_restore failed; the message carries the tool's own words."""


def _tool_call(dsn: str) -> tuple[str, dict[str, str]]:
    """(the DSN without its password, an environment holding it as PGPASSWORD)."""
    environment = dict(os.environ)
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise BackupError("backups take a postgresql:// URL (the password may come from PGPASSFILE)")
    if parts.password:
        environment["PGPASSWORD"] = parts.password
        host = parts.hostname or ""
        netloc = f"{parts.username}@{host}" if parts.username else host
        if parts.port:
            netloc += f":{parts.port}"
        dsn = urlunsplit(parts._replace(netloc=netloc))
    return dsn, environment


def _run(tool: str, arguments: list[str], environment: dict[str, str]) -> None:
    try:
        result = subprocess.run([str(Path(POSTGRES_BIN_PATH) / tool), *arguments], env=environment,
                                capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BackupError(f"{tool} could not run: {error}") from error
    if result.returncode != 0:
        words = (result.stderr or result.stdout).strip().splitlines()
        raise BackupError(f"{tool} failed (exit {result.returncode}): " + " / ".join(words[-3:]))


def backup(dsn: str, out: str | os.PathLike[str]) -> Path:
    """Write a consistent archive of the application schema of ``dsn``'s database to ``out``
    (a new file; an existing one is refused); its path."""
    path = Path(out)
    if path.exists():
        raise BackupError(f"{path} exists: a backup never overwrites a file")
    dsn, environment = _tool_call(dsn)
    partial = path.with_name(path.name + ".partial")
    try:
        _run("pg_dump", ["--format=custom", f"--schema={APP_SCHEMA}", "--no-owner", "--no-privileges",
                         f"--file={partial}", f"--dbname={dsn}"], environment)
        os.replace(partial, path)  # a file at ``out`` is always a whole archive
    finally:
        partial.unlink(missing_ok=True)
    return path


def restore(archive: str | os.PathLike[str], dsn: str) -> None:
    """Load ``archive`` into ``dsn``'s database: its application schema becomes the
    archive's, in one transaction (all or nothing). The role of ``dsn`` owns what it makes."""
    path = Path(archive)
    if not path.is_file():
        raise BackupError(f"no backup at {path}")
    dsn, environment = _tool_call(dsn)
    listing = subprocess.run([str(Path(POSTGRES_BIN_PATH) / "pg_restore"), "--list", str(path)],
                             capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    if listing.returncode != 0:
        raise BackupError(f"{path} is not a pg_dump archive: {listing.stderr.strip()}")
    # The schema itself stays (the role may not create one: least privilege); its contents
    # are replaced, all in one transaction.
    entries = [line for line in listing.stdout.splitlines()
               if not line.startswith(";") and " SCHEMA - " not in line]
    with tempfile.NamedTemporaryFile("w", prefix="matchcore-restore-", suffix=".list") as chosen:
        chosen.write("\n".join(entries) + "\n")
        chosen.flush()
        _run("pg_restore", ["--no-owner", "--no-privileges", "--clean", "--if-exists", "--single-transaction",
                            "--exit-on-error", f"--use-list={chosen.name}", f"--dbname={dsn}", str(path)],
             environment)
