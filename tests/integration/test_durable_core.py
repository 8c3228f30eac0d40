"""The durable core end to end on a real PostgreSQL: commands through pipeline and writer are
journaled exactly, replay rebuilds the live state (at the end and at past seqs, from
snapshots), a restart recovers and continues numbering, and a tampered event is named."""
import asyncio

import asyncpg
import numpy as np
import pytest
import uvloop

from matchcore.bench.workload import mixed_workload
from matchcore.core import Engine, commands as c
from matchcore.core.records import EVENT_DTYPE
from matchcore.persistence import Journal
from matchcore.persistence.batch import batch_checksum
from matchcore.persistence.replay import ReplayMismatchError, replay
from matchcore.gateway.durable_core import DurableCore, DurableCoreConfig
from matchcore.persistence.writer import WriterConfig


def workload(commands=30_000, seed=11):
    return mixed_workload(commands, seed=seed, accounts=100, instruments=3)


async def serve(dsn, w, stream, *, snapshot_every=10_000, released=None, kept=8, chunk=None):
    service = DurableCore(dsn, w.config, config=DurableCoreConfig(
        snapshot_every_commands=snapshot_every, snapshots_kept=kept,
        writer=WriterConfig(journal_batch_records_max=2048)),
        on_release=None if released is None else released.append)
    recovered = await service.start()
    for start in range(0, len(stream), chunk or len(stream)):
        await service.submit_all(stream[start:start + (chunk or len(stream))])
        await service.wait_released(service.next_seq - 1)
    live_hash = service.engine.state_hash()
    await service.stop()
    return service, recovered, live_hash


def test_round_trip_replay_and_restart(db_dsn):
    w = workload()
    stream = w.all()
    released = []
    first_part = stream[:20_000]
    service, recovered, live_hash = uvloop.run(serve(db_dsn, w, first_part, released=released))
    assert recovered.last_seq == 0
    assert service.snapshots_written >= 2
    # what was released is exactly what a plain Engine gives for the same commands
    released_commands = np.concatenate([b.commands for b in released])
    released_events = np.concatenate([b.events for b in released])
    twin = Engine(w.config)
    expected_events = twin.apply(released_commands.copy())
    assert released_events.tobytes() == expected_events.tobytes()
    assert twin.state_hash() == live_hash
    with Journal(db_dsn) as journal:
        assert journal.last_seq() == 20_000
        assert journal.commands().tobytes() == released_commands.tobytes()
        full = replay(journal)
        assert full.last_seq == 20_000 and full.engine.state_hash() == live_hash
        past = replay(journal, until_seq=12_345)
        twin_past = Engine(w.config)
        twin_past.apply(released_commands[:12_345].copy())
        assert past.engine.state_hash() == twin_past.state_hash()
        assert past.snapshot_seq <= 12_345
        # --from: start before a given seq, so everything from it on is re-derived and checked
        whole = replay(journal, from_seq=1)
        assert (whole.snapshot_seq, whole.commands) == (0, 20_000)
        assert whole.engine.state_hash() == live_hash
        window = replay(journal, until_seq=12_345, from_seq=9_000)
        assert window.snapshot_seq < 9_000 <= window.snapshot_seq + window.commands
        assert window.engine.state_hash() == twin_past.state_hash()
        with pytest.raises(ValueError):
            replay(journal, until_seq=100, from_seq=200)
    # restart: recovery from the newest snapshot, numbering continues, replay verifies
    service2, recovered2, live_hash2 = uvloop.run(serve(db_dsn, w, stream[20_000:], released=[]))
    assert recovered2.last_seq == 20_000 and recovered2.snapshot_seq > 0

    async def snapshot_count():
        connection = await asyncpg.connect(db_dsn)
        try:
            return await connection.fetchval("SELECT count(*) FROM snapshot")
        finally:
            await connection.close()

    assert asyncio.run(snapshot_count()) <= DurableCoreConfig().snapshots_kept + 1
    everything = Engine(w.config)
    everything.apply(c.number(stream.copy()))
    assert live_hash2 == everything.state_hash()
    with Journal(db_dsn) as journal:
        assert replay(journal).engine.state_hash() == everything.state_hash()


def test_tampered_events_are_named_by_replay(db_dsn):
    w = workload(commands=5_000)
    uvloop.run(serve(db_dsn, w, w.all(), snapshot_every=0))

    async def tamper():
        connection = await asyncpg.connect(db_dsn)
        try:
            row = await connection.fetchrow("SELECT first_seq, events FROM journal ORDER BY first_seq OFFSET 1 LIMIT 1")
            events = np.frombuffer(row["events"], dtype=EVENT_DTYPE).copy()
            events[3]["quantity"] += 1
            commands = await connection.fetchval("SELECT commands FROM journal WHERE first_seq = $1", row["first_seq"])
            last = await connection.fetchval("SELECT last_seq FROM journal WHERE first_seq = $1", row["first_seq"])
            checksum = batch_checksum(row["first_seq"], last, commands, events.tobytes())
            await connection.execute("UPDATE journal SET events = $2, checksum = $3 WHERE first_seq = $1",
                                     row["first_seq"], events.tobytes(), checksum)
            return int(events[3]["seq"])
        finally:
            await connection.close()

    bad_seq = asyncio.run(tamper())
    with Journal(db_dsn) as journal:
        with pytest.raises(ReplayMismatchError) as error:
            replay(journal)
    assert error.value.seq == bad_seq


def test_old_snapshots_are_pruned(db_dsn):
    w = workload(commands=12_000)
    service, _, live_hash = uvloop.run(serve(db_dsn, w, w.all(), snapshot_every=1_000, kept=2,
                                                         chunk=500))
    assert service.snapshots_written >= 5

    async def snapshot_seqs():
        connection = await asyncpg.connect(db_dsn)
        try:
            return [r["seq"] for r in await connection.fetch("SELECT seq FROM snapshot ORDER BY seq")]
        finally:
            await connection.close()

    seqs = asyncio.run(snapshot_seqs())
    assert len(seqs) == 2 and seqs[-1] == service.released_seq
    with Journal(db_dsn) as journal:
        assert replay(journal).engine.state_hash() == live_hash


def test_database_outage_under_load_through_the_whole_core(pg_server, db_dsn):
    """pg_ctl stop -m immediate while the pipeline is loaded: nothing is released while the
    server is down, the rings fill (submit takes less), and after the restart the journal holds
    every submitted command exactly once, with the events a plain Engine gives."""
    w = workload(commands=40_000, seed=13)
    stream = w.all()
    released = []
    fast_retry = WriterConfig(journal_batch_records_max=2048, retry_delay_initial_s=0.005,
                              retry_delay_max_s=0.05)

    async def scenario():
        service = DurableCore(db_dsn, w.config, config=DurableCoreConfig(
            snapshot_every_commands=0, input_ring_capacity_records=1024, output_ring_capacity_records=4096,
            writer=fast_retry), on_release=released.append)
        await service.start()
        position = 0
        while position < 15_000:
            position += service.submit(stream[position:position + 500])
            await asyncio.sleep(0.001)
        await service.wait_released(position)
        await asyncio.to_thread(pg_server.stop, "immediate")
        await asyncio.sleep(0.05)
        released_when_down = service.released_seq
        offered_during_outage = 0
        for _ in range(100):
            taken = service.submit(stream[position:position + 500])
            position += taken
            offered_during_outage += 500 - taken
            await asyncio.sleep(0.005)
        assert service.released_seq == released_when_down, "released while the database was down"
        assert offered_during_outage > 0, "the producer felt no backpressure"
        await asyncio.to_thread(pg_server.start)
        await service.submit_all(stream[position:])
        await service.wait_released(len(stream), timeout_s=60)
        live_hash = service.engine.state_hash()
        await service.stop()
        return live_hash

    live_hash = uvloop.run(scenario())
    with Journal(db_dsn) as journal:
        commands = journal.commands()
        events = journal.events()
    assert len(commands) == len(stream)
    assert (commands["seq"] == np.arange(1, len(stream) + 1)).all()
    stamped = c.number(stream.copy())
    stamped["timestamp_ns"] = commands["timestamp_ns"]  # the gateway's stamps, journaled
    assert commands.tobytes() == stamped.tobytes()
    twin = Engine(w.config)
    assert events.tobytes() == twin.apply(stamped).tobytes()
    assert twin.state_hash() == live_hash
    released_seqs = np.concatenate([b.commands["seq"] for b in released])
    assert (released_seqs == np.arange(1, len(stream) + 1)).all()


def test_a_snapshot_due_while_the_output_ring_is_full_never_stalls_the_loop(db_dsn):
    """The core is much faster than the writer, so with a tiny output ring it is nearly always
    waiting for ring room when a snapshot falls due: the loop must go on draining (before, a
    blocking pause held the loop up to 10 s, then the writer died of the TimeoutError)."""
    w = workload(6_000, seed=5)
    stream = w.all()

    async def go() -> tuple[float, int, int]:
        loop = asyncio.get_running_loop()
        service = DurableCore(db_dsn, w.config, config=DurableCoreConfig(
            input_ring_capacity_records=8192, output_ring_capacity_records=128, snapshot_every_commands=500,
            writer=WriterConfig(journal_batch_records_max=64)))
        await service.start()
        lag_s, running = 0.0, True

        async def monitor() -> None:
            nonlocal lag_s
            while running:
                before = loop.time()
                await asyncio.sleep(0.001)
                lag_s = max(lag_s, loop.time() - before)

        watcher = asyncio.create_task(monitor())
        await service.submit_all(stream)
        await service.wait_released(service.next_seq - 1, timeout_s=60)
        running = False
        await watcher
        snapshots, released = service.snapshots_written, service.released_seq
        await service.stop()
        return lag_s, snapshots, released

    lag_s, snapshots, released = uvloop.run(go())
    assert released == len(stream)
    assert snapshots >= 5
    assert lag_s < 0.5, lag_s


def test_a_journal_of_engine_contract_1_is_refused_naming_both_versions(db_dsn):
    """Contract 1 stored its engine config without a contract number (and with the retired
    max_transfers): the server and the quants' replay refuse it with both versions named,
    before reading a command."""
    from matchcore.core.codes import CONTRACT_VERSION
    from matchcore.persistence import ContractVersionError
    from matchcore.persistence.replay import CONFIG_META_KEY

    w = workload(commands=100)
    contract_1 = {"max_accounts": 101, "max_assets": 4, "max_instruments": 3, "max_orders": 1024,
                  "max_price_levels": 4096, "max_transfers": 416, "fee_account_id": 0}
    with Journal(db_dsn, apply=True) as journal:
        journal.write_meta(CONFIG_META_KEY, contract_1)
        with pytest.raises(ContractVersionError, match=f"engine contract 1; this matchcore runs engine "
                                                       f"contract {CONTRACT_VERSION}"):
            replay(journal)
    with pytest.raises(ContractVersionError, match="contract 1"):
        uvloop.run(serve(db_dsn, w, w.all()))


def test_the_engine_clock_expires_gtd_orders_on_a_quiet_market(db_dsn):
    """No other flow: the core's CLOCK command (journaled) carries the time at which a GTD
    order expires; replay gives the same events, and the pipeline's stamps never go down."""
    import time

    from matchcore.core import EngineConfig
    from matchcore.core.codes import CancelReason, CommandKind, EventKind

    async def run():
        service = DurableCore(db_dsn, EngineConfig(max_accounts=4, max_orders=16, max_price_levels=8),
                              config=DurableCoreConfig(clock_interval_ms=20))
        await service.start()
        setup = c.pack([c.add_asset(0), c.add_asset(1), c.add_account(1), c.add_instrument(0, 0, 1),
                        c.deposit(1, 1, 10_000, 1)])
        await service.submit_all(setup)
        await service.wait_released(service.next_seq - 1)
        expiry = time.time_ns() + 150_000_000
        await service.submit_all(c.pack([c.limit(1, 0, 1, c.BUY, 10, 5, expire_time_ns=expiry)]))
        order_seq = service.next_seq - 1
        await asyncio.sleep(0.6)
        await service.wait_released(service.next_seq - 1)
        live = service.engine.live_order_count()
        await service.stop()
        return order_seq, expiry, live

    order_seq, expiry, live = uvloop.run(run())
    assert live == 0
    with Journal(db_dsn) as journal:
        commands, events = journal.commands(), journal.events()
        assert replay(journal).engine.live_order_count() == 0  # replay verifies every event
    later = commands[commands["seq"] > order_seq]
    assert len(later) >= 2 and set(later["kind"].tolist()) == {CommandKind.CLOCK}
    assert (np.diff(commands["timestamp_ns"].astype(np.int64)) >= 0).all()
    expired = events[(events["kind"] == EventKind.CANCELED) & (events["reason"] == CancelReason.EXPIRED)]
    assert len(expired) == 1 and int(expired[0]["client_id"]) == 1
    # it expired at the first clock stamped at or after its expiry, not before, not later
    assert int(expired[0]["timestamp_ns"]) >= expiry
    assert (later["timestamp_ns"][later["seq"] < expired[0]["seq"]].astype(np.int64) < expiry).all()
