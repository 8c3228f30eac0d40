"""The journal writer on a synchronous cluster: nothing is released that the synchronous
standby may lack. A commit whose wait for the standby was cut short (cancelled, or the
connection ended) is visible on the primary without being replicated; the writer must then
wait for a later synchronous commit before it releases the batch."""
from __future__ import annotations

import asyncio
import uuid

import asyncpg
import numpy as np

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


async def _writer_backend_pid(admin: asyncpg.Connection, application_name: str, timeout_s: float = 20.0) -> int:
    """The writer's backend once it waits for the synchronous standby."""
    for _ in range(int(timeout_s / 0.05)):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event = 'SyncRep'",
            application_name)
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


async def _until(condition, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


def test_a_cut_short_synchronous_wait_releases_nothing_until_the_standby_has_it(
        cluster: LocalCluster, cluster_dsn: str) -> None:
    """Both cuts at once, one writer each (a database each), under one loss of the standby:
    ``cancel`` (the server warns, the INSERT returns committed locally) and ``terminate``
    (the connection ends; the retry finds the row already there)."""
    databases = {"cancel": cluster_dsn.rsplit("/", 1)[1].split("?")[0], "terminate": f"t_{uuid.uuid4().hex[:16]}"}
    cluster.create_database(databases["terminate"])
    primary, standby = cluster.leader(), cluster.sync_standby()
    released: dict[str, list[int]] = {cut: [] for cut in databases}

    async def scenario() -> None:
        sources = {cut: OneBatchSource() for cut in databases}
        tasks = []
        for cut, database in databases.items():
            writer = JournalWriter(cluster.dsn(primary, database), sources[cut],
                                   lambda b, cut=cut: released[cut].append(b.last_seq),
                                   config=WriterConfig(retry_delay_initial_s=0.05, retry_delay_max_s=0.2,
                                                       application_name=f"writer-{cut}"))
            tasks.append(asyncio.ensure_future(writer.run()))
            await sources[cut].queue.put(_batch(1, 200, seed=1))
        await _until(lambda: all(released.values()), 10)
        assert released == {"cancel": [200], "terminate": [200]}
        cluster.kill_node(standby)  # strict synchronous mode: the primary's commits now wait
        cluster.wait_standbys_gone(primary)
        admin = await asyncpg.connect(cluster.admin_dsn(primary))
        try:
            for cut in databases:
                await sources[cut].queue.put(_batch(201, 200, seed=2))
                pid = await _writer_backend_pid(admin, f"writer-{cut}")
                function = "pg_cancel_backend" if cut == "cancel" else "pg_terminate_backend"
                assert await admin.fetchval(f"SELECT {function}($1)", pid)
            await asyncio.sleep(1.5)
            for cut, database in databases.items():
                # the row is on the primary, committed locally ...
                assert await _standby_has(cluster, primary, database, 201), cut
                # ... but not on any standby: it must not be released
                assert released[cut] == [200], f"{cut}: released a batch the synchronous standby does not have"
        finally:
            await admin.close()
        cluster.start_node(standby)
        await _until(lambda: all(len(seen) == 2 for seen in released.values()), 60)
        assert released == {"cancel": [200, 400], "terminate": [200, 400]}
        for cut, database in databases.items():
            assert await _standby_has(cluster, standby, database, 201), cut
            await sources[cut].queue.put(None)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    asyncio.run(scenario())
