"""Expected event streams: the journal's commands through a fresh Engine, routed per account."""
from __future__ import annotations

import asyncio

import numpy as np

from matchcore.core import Engine, EngineConfig
from matchcore import protocol as p
from matchcore.protocol import spec
from matchcore.client.connection import Client
from matchcore.gateway.streams import route
from matchcore.persistence.journal import AsyncJournal

from .conftest import ENGINE_SETTINGS


def engine_config() -> EngineConfig:
    return EngineConfig(**{key.split(".", 1)[1]: value for key, value in ENGINE_SETTINGS.items()})


async def journal_records(dsn: str) -> tuple[np.ndarray, np.ndarray]:
    journal = await AsyncJournal.connect(dsn)
    try:
        return await journal.commands(), await journal.events()
    finally:
        await journal.close()


async def expected_streams(dsn: str) -> dict[int, list[p.EventMessage]]:
    """Every account's stream as the protocol defines it, from an Engine fed the journal's
    commands; also checks that Engine gives exactly the journaled events."""
    commands, events = await journal_records(dsn)
    produced = Engine(engine_config()).apply(np.ascontiguousarray(commands))
    assert produced.tobytes() == events.tobytes(), "Engine gives other events than the server journaled"
    accounts, indexes = route(commands, produced)
    streams: dict[int, list[p.EventMessage]] = {}
    for account, index in zip(accounts.tolist(), indexes.tolist()):
        stream = streams.setdefault(account, [])
        stream.append(spec.event_to_message(produced[index], account, len(stream) + 1))
    return streams


def comparable(message: p.EventMessage) -> p.EventMessage:
    """The client library fills in a maker's client order id, which the wire leaves 0."""
    if message.liquidity == p.Liquidity.MAKER:
        import dataclasses

        return dataclasses.replace(message, client_id=0)
    return message


async def drain(client: Client, count: int, timeout_s: float = 10.0) -> list[p.EventMessage]:
    """The next ``count`` events of the client's stream."""
    return [await client.next_event(timeout_s) for _ in range(count)]


async def quiet(client: Client, wait_s: float = 0.3) -> list[p.EventMessage]:
    """Events that arrive within ``wait_s`` (to prove nothing more comes)."""
    extra = []
    while True:
        try:
            extra.append(await client.next_event(wait_s))
        except asyncio.TimeoutError:
            return extra
