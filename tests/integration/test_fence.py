"""The journal's fence: one writer at a time. A takeover bumps the epoch; a writer of an older
epoch (an old active that came back) can neither write a row nor release anything."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import numpy as np
import pytest

from matchcore.bench.synthetic import synthetic_chunk
from matchcore.persistence import (Batch, Journal, JournalFencedError, JournalWriter, apply_schema, insert_batch,
                                   take_journal)


class QueueSource:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue()

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        return await self.queue.get()


def _batch(first_seq: int, count: int, seed: int) -> Batch:
    return Batch(*synthetic_chunk(np.random.default_rng(seed), first_seq, count))


def test_an_old_writer_is_fenced_after_a_takeover(db_dsn: str, run: Callable) -> None:
    released: list[int] = []

    async def scenario() -> None:
        source = QueueSource()
        old = JournalWriter(db_dsn, source, lambda b: released.append(b.last_seq), holder="old active")
        task = asyncio.ensure_future(old.run())
        await source.queue.put(_batch(1, 100, seed=1))
        while not released:
            await asyncio.sleep(0.01)
        connection = await asyncpg.connect(db_dsn)
        try:
            new_epoch = await take_journal(connection, "new active")
            assert new_epoch == old.epoch + 1
            await source.queue.put(_batch(101, 100, seed=2))
            with pytest.raises(JournalFencedError, match="new active"):
                await asyncio.wait_for(task, 30)
            assert released == [100]  # nothing more released
            assert await connection.fetchval("SELECT max(last_seq) FROM journal") == 100
            # the new writer appends where the journal ends
            assert await insert_batch(connection, _batch(101, 50, seed=3), epoch=new_epoch) is True
            with pytest.raises(JournalFencedError):
                await insert_batch(connection, _batch(151, 50, seed=4), epoch=old.epoch)
        finally:
            await connection.close()

    run(scenario())
    with Journal(db_dsn) as journal:
        assert journal.last_seq() == 150


def test_a_takeover_waits_for_the_write_in_flight(db_dsn: str, run: Callable) -> None:
    """The takeover's exclusive lock waits for a write that holds it shared, so that write
    commits under the old epoch before the new one exists, never after."""

    async def scenario() -> None:
        writer_connection = await asyncpg.connect(db_dsn)
        taker = await asyncpg.connect(db_dsn)
        try:
            await apply_schema(writer_connection)
            epoch = await take_journal(writer_connection, "first")
            transaction = writer_connection.transaction()
            await transaction.start()
            assert await insert_batch(writer_connection, _batch(1, 10, seed=5), epoch=epoch) is True
            takeover = asyncio.ensure_future(take_journal(taker, "second"))
            await asyncio.sleep(0.3)
            assert not takeover.done()  # blocked behind the write in flight
            await transaction.commit()
            assert await asyncio.wait_for(takeover, 10) == epoch + 1
            with pytest.raises(JournalFencedError):
                await insert_batch(writer_connection, _batch(11, 10, seed=6), epoch=epoch)
        finally:
            await writer_connection.close()
            await taker.close()

    run(scenario())
