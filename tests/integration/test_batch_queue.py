"""BatchQueue bounds batches by records and delay, splits only between commands, and pushes back when full (no database)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from matchcore.persistence import BatchQueue, SequenceGapError
from matchcore.bench.synthetic import synthetic_chunk


def test_batches_are_bounded_and_split_between_commands() -> None:
    async def scenario() -> None:
        rng = np.random.default_rng(10)
        queue = BatchQueue(capacity_records=1 << 20, next_seq=1)
        commands, events = synthetic_chunk(rng, 1, 10_000)
        await queue.put(commands, events)
        queue.close()
        out = []
        while (batch := await queue.next_batch(1_000, 0.0)) is not None:
            out.append(batch.validate())
        assert all(b.record_count <= 1_000 for b in out)
        assert all(b.record_count > 1_000 - 10 for b in out[:-1])  # filled, bar one command
        assert np.concatenate([b.commands for b in out]).tobytes() == commands.tobytes()
        assert np.concatenate([b.events for b in out]).tobytes() == events.tobytes()
        assert queue.pending_records == 0

    asyncio.run(scenario())


def test_one_command_larger_than_the_bound_goes_alone() -> None:
    async def scenario() -> None:
        commands, events = synthetic_chunk(np.random.default_rng(11), 1, 3)
        big = np.repeat(events[:1], 50)  # 50 events of command 1
        queue = BatchQueue(next_seq=1)
        await queue.put(commands[:1], big)
        await queue.put(commands[1:], events[events["seq"] > 1])
        first = await queue.next_batch(10, 0.0)
        assert (first.first_seq, first.last_seq, first.event_count) == (1, 1, 50)
        second = await queue.next_batch(10, 0.0)
        assert (second.first_seq, second.last_seq) == (2, 3)

    asyncio.run(scenario())


def test_delay_bound_and_coalescing() -> None:
    async def scenario() -> None:
        rng = np.random.default_rng(12)
        queue = BatchQueue(next_seq=1)

        async def trickle() -> None:
            seq = 1
            for _ in range(5):
                chunk = synthetic_chunk(rng, seq, 10)
                await queue.put(*chunk)
                seq += 10
                await asyncio.sleep(0.002)

        producer = asyncio.create_task(trickle())
        loop = asyncio.get_running_loop()
        started = loop.time()
        batch = await queue.next_batch(10_000, 0.05)  # waits for more, up to 50 ms
        assert (batch.first_seq, batch.last_seq) == (1, 50)  # five chunks, one batch
        assert loop.time() - started >= 0.05
        await producer

    asyncio.run(scenario())


def test_full_queue_pushes_back_and_gaps_are_refused() -> None:
    async def scenario() -> None:
        rng = np.random.default_rng(13)
        queue = BatchQueue(capacity_records=300, next_seq=1)
        first = synthetic_chunk(rng, 1, 200)
        assert queue.put_nowait(*first)
        second = synthetic_chunk(rng, 201, 200)
        assert not queue.put_nowait(*second)  # full: nothing queued
        put = asyncio.create_task(queue.put(*second))
        await asyncio.sleep(0.01)
        assert not put.done()  # the producer waits
        await queue.next_batch(10_000, 0.0)
        await asyncio.wait_for(put, 1)
        with pytest.raises(SequenceGapError) as caught:
            queue.put_nowait(*synthetic_chunk(rng, 500, 5))
        assert caught.value.seq == 401

    asyncio.run(scenario())


def test_a_cancelled_take_gives_everything_back() -> None:
    async def scenario() -> None:
        rng = np.random.default_rng(14)
        queue = BatchQueue(next_seq=1)
        commands, events = synthetic_chunk(rng, 1, 100)
        queue.put_nowait(commands, events)
        waiting = asyncio.create_task(queue.next_batch(10_000, 10.0))  # takes, then waits
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert queue.pending_records == 100 + len(events)
        batch = await queue.next_batch(10_000, 0.0)
        assert batch.commands.tobytes() == commands.tobytes()

    asyncio.run(scenario())
