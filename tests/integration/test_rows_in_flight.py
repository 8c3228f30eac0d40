"""Two journal rows in flight: they may be sent and worked on at once, but they commit in seq
order, so no reader ever sees a gap (schema 5's rule in ``journal_append``), and the writer
releases them in seq order."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import numpy as np
import pytest

from matchcore.bench.synthetic import synthetic_chunk
from matchcore.persistence import (Batch, Journal, JournalWriter, WriterConfig, apply_schema, insert_batch,
                                   take_journal)
from matchcore.persistence.errors import PredecessorMissingError


def _batch(first_seq: int, count: int, seed: int) -> Batch:
    return Batch(*synthetic_chunk(np.random.default_rng(seed), first_seq, count))


def test_a_row_waits_for_the_row_before_it_and_fails_if_that_one_aborts(db_dsn: str, run: Callable) -> None:
    async def scenario() -> None:
        first = await asyncpg.connect(db_dsn)
        second = await asyncpg.connect(db_dsn)
        try:
            await apply_schema(first)
            epoch = await take_journal(first, "test")
            assert await insert_batch(first, _batch(1, 10, seed=1), epoch=epoch) is True
            # row 11..20 in flight (its transaction open), row 21..30 sent after it
            transaction = first.transaction()
            await transaction.start()
            assert await insert_batch(first, _batch(11, 10, seed=2), epoch=epoch) is True
            later = asyncio.ensure_future(insert_batch(second, _batch(21, 10, seed=3), epoch=epoch))
            await asyncio.sleep(0.3)
            assert not later.done()  # it waits for the row before it
            await transaction.rollback()  # ... which never commits
            with pytest.raises(PredecessorMissingError):
                await asyncio.wait_for(later, 10)
            assert await first.fetchval("SELECT max(last_seq) FROM journal") == 10
            # a row whose predecessor is not there yet fails at once, and nothing is stored
            with pytest.raises(PredecessorMissingError):
                await insert_batch(second, _batch(21, 10, seed=3), epoch=epoch)
            # in order, both commit; the second one waited for the first's commit
            transaction = first.transaction()
            await transaction.start()
            assert await insert_batch(first, _batch(11, 10, seed=2), epoch=epoch) is True
            later = asyncio.ensure_future(insert_batch(second, _batch(21, 10, seed=3), epoch=epoch))
            await asyncio.sleep(0.3)
            assert not later.done()
            await transaction.commit()
            assert await asyncio.wait_for(later, 10) is True
            assert await first.fetchval("SELECT max(last_seq) FROM journal") == 30
        finally:
            await first.close()
            await second.close()

    run(scenario())


class _ListSource:
    """Batches as fast as the writer takes them."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = list(batches)

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        await asyncio.sleep(0)
        return self.batches.pop(0) if self.batches else None


def test_the_writer_keeps_two_rows_in_flight_and_releases_in_order(db_dsn: str, run: Callable) -> None:
    batches = [_batch(1 + 50 * i, 50, seed=10 + i) for i in range(40)]
    released: list[int] = []
    most_in_flight = 0

    async def scenario() -> JournalWriter:
        nonlocal most_in_flight
        writer = JournalWriter(db_dsn, _ListSource(batches), lambda b: released.append(b.last_seq),
                               config=WriterConfig(journal_rows_in_flight_max=2))
        task = asyncio.ensure_future(writer.run())
        while not task.done():
            most_in_flight = max(most_in_flight, writer.rows_in_flight)
            await asyncio.sleep(0)
        await task
        return writer

    writer = run(scenario())
    assert released == [b.last_seq for b in batches]
    assert most_in_flight == 2
    assert writer.stats.batches == 40 and writer.last_seq == 2000
    with Journal(db_dsn) as journal:
        assert journal.last_seq() == 2000
        assert sum(len(b.commands) for b in journal.batches()) == 2000


def test_a_queue_source_has_its_next_batch_taken_while_a_row_is_on_the_wire(db_dsn: str, run: Callable) -> None:
    """A source that is not cut at commit (BatchQueue) is asked for the next batch as soon as a
    row goes out, so forming and checksumming it (and the producer's refill) overlaps the
    commit instead of following it. The fence row is held locked so the first row cannot
    commit until the test lets it."""
    from matchcore.persistence import BatchQueue

    async def scenario() -> None:
        blocker = await asyncpg.connect(db_dsn)
        try:
            await apply_schema(blocker)
            queue = BatchQueue(next_seq=1)
            sizes = []
            for i in range(3):
                commands, events = synthetic_chunk(np.random.default_rng(20), 1 + 10 * i, 10)  # one shape
                sizes.append(len(commands) + len(events))
                await queue.put(commands, events)
            queue.close()
            assert len(set(sizes)) == 1
            chunk_records = sizes[0]  # one chunk a batch
            released: list[int] = []
            writer = JournalWriter(db_dsn, queue, lambda b: released.append(b.last_seq),
                                   config=WriterConfig(journal_batch_records_max=chunk_records))
            await writer.connect()
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("SELECT 1 FROM journal_fence WHERE id = 1 FOR UPDATE")
            task = asyncio.ensure_future(writer.run())
            for _ in range(200):
                if queue.pending_records <= sizes[2]:
                    break
                await asyncio.sleep(0.01)
            # row 1..10 waits for the fence; 11..20 is already taken from the queue
            assert released == [] and writer.rows_in_flight == 1
            assert queue.pending_records == sizes[2]
            await transaction.rollback()
            await asyncio.wait_for(task, 10)
            assert released == [10, 20, 30]
        finally:
            await blocker.close()

    run(scenario())
