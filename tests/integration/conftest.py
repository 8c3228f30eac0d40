"""Fixtures of the integration suite: a fresh database per test on the session's private
PostgreSQL (``pg_server`` in tests/conftest.py, started from the same pip-installed package
matchcore embeds); no test assumes a server is already running.
"""
from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import asyncpg
import pytest
import uvloop

from matchcore.persistence.embedded import EmbeddedPostgres

_T = TypeVar("_T")


def database_dsn(server_dsn: str, database: str) -> str:
    """The server's DSN pointed at another database."""
    head, _, _ = server_dsn.rpartition("/")
    return f"{head}/{database}"


@pytest.fixture
def db_dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """The application role's DSN of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = pg_server.admin_dsn

    async def run(sql: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    dsn = pg_server.create_database(name)
    try:
        yield dsn
    finally:
        if not pg_server.is_running():
            pg_server.start()
        asyncio.run(run(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@pytest.fixture(params=sorted(LOOPS))
def run_on_loop(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """Runs a coroutine to completion on plain asyncio, then (second parameter) on uvloop."""
    factory = LOOPS[request.param]

    def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)

    return run


@pytest.fixture
def run() -> Callable[[Coroutine[Any, Any, _T]], _T]:
    """Runs a coroutine to completion on a new plain asyncio loop."""
    return asyncio.run


def pytest_report_header() -> str:
    return f"matchcore integration: embedded PostgreSQL, uid {os.geteuid()}"
