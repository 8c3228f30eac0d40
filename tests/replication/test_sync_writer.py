"""The journal writer on a synchronous cluster: nothing is released that the synchronous
standby may lack. A commit whose wait for the standby was cut short (cancelled, or the
connection ended) is visible on the primary without being replicated; the writer must then
wait for a later synchronous commit before it releases the batch."""
from __future__ import annotations

import asyncio

import asyncpg
import numpy as np
import pytest

from matchcore.bench.synthetic import synthetic_chunk
from matchcore.persistence import Batch, JournalWriter, WriterConfig
from matchcore.persistence.cluster import LocalCluster


class OneBatchSource:
    """Hands out the batches it is given, then ends when told."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch | None] = asyncio.Queue()

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        return await self.queue.get()


def _batch(first_seq: int, count: int, seed: int) -> Batch:
    commands, events = synthetic_chunk(np.random.default_rng(seed), first_seq, count)
    return Batch(commands, events)


async def _writer_backend_pid(admin: asyncpg.Connection, timeout_s: float = 20.0) -> int:
    """The writer's backend once it waits for the synchronous standby."""
    for _ in range(int(timeout_s / 0.05)):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'matchcore-journal' "
            "AND wait_event = 'SyncRep'")
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the writer never waited for the synchronous standby")


async def _standby_has(cluster: LocalCluster, node: str, database: str, first_seq: int) -> bool:
    connection = await asyncpg.connect(cluster.admin_dsn(node, database))
    try:
        return bool(await connection.fetchval(
            "SELECT EXISTS (SELECT FROM matchcore.journal WHERE first_seq = $1)", first_seq))
    finally:
        await connection.close()


@pytest.mark.parametrize("cut", ["cancel", "terminate"])
def test_a_cut_short_synchronous_wait_releases_nothing_until_the_standby_has_it(
        cluster: LocalCluster, cluster_dsn: str, cut: str) -> None:
    database = cluster_dsn.rsplit("/", 1)[1].split("?")[0]
    primary, standby = cluster.leader(), cluster.sync_standby()
    released: list[int] = []

    async def scenario() -> None:
        source = OneBatchSource()
        writer = JournalWriter(cluster.dsn(primary, database), source, lambda b: released.append(b.last_seq),
                               config=WriterConfig(retry_delay_initial_s=0.05, retry_delay_max_s=0.2))
        task = asyncio.ensure_future(writer.run())
        await source.queue.put(_batch(1, 200, seed=1))
        for _ in range(200):
            if released:
                break
            await asyncio.sleep(0.05)
        assert released == [200]
        cluster.kill_node(standby)  # strict synchronous mode: the primary's commits now wait
        cluster.wait_standbys_gone(primary)
        admin = await asyncpg.connect(cluster.admin_dsn(primary))
        try:
            await source.queue.put(_batch(201, 200, seed=2))
            pid = await _writer_backend_pid(admin)
            function = "pg_cancel_backend" if cut == "cancel" else "pg_terminate_backend"
            assert await admin.fetchval(f"SELECT {function}($1)", pid)
            await asyncio.sleep(1.5)
            # the row is on the primary, committed locally ...
            assert await _standby_has(cluster, primary, database, 201)
            # ... but not on any standby: it must not be released
            assert released == [200], "released a batch the synchronous standby does not have"
        finally:
            await admin.close()
        cluster.start_node(standby)
        for _ in range(1200):
            if len(released) == 2:
                break
            await asyncio.sleep(0.05)
        assert released == [200, 400]
        assert await _standby_has(cluster, standby, database, 201)
        await source.queue.put(None)
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
