"""The journal on a real PostgreSQL: exact round trip, idempotent retries, outages, corruption named by seq."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import asyncpg
import numpy as np
import pytest
from faults import CuttingProxy

from matchcore.core.codes import EventKind
from matchcore.persistence import (
    AsyncJournal,
    Batch,
    BatchQueue,
    ChecksumError,
    ConflictingBatchError,
    Journal,
    JournalWriter,
    SCHEMA_VERSION,
    SchemaVersionError,
    SequenceGapError,
    WriterConfig,
    apply_schema,
    insert_batch,
    take_journal,
)
from matchcore.persistence.batch import CRC32, CRC32C, batch_checksum
from matchcore.persistence.journal import PAGE_ROWS
from matchcore.persistence.schema import _CREATE_VERSION_TABLE as SCHEMA_VERSION_TABLE
from matchcore.persistence.schema import MIGRATIONS
from matchcore.bench.synthetic import synthetic_chunk

FAST_RETRY = dict(retry_delay_initial_s=0.005, retry_delay_max_s=0.1)


def make_chunks(seed: int, command_count: int, chunk_max: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    chunks, seq = [], 1
    while seq <= command_count:
        size = min(int(rng.integers(1, chunk_max + 1)), command_count - seq + 1)
        chunks.append(synthetic_chunk(rng, seq, size))
        seq += size
    return chunks


def joined(chunks: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([c for c, _ in chunks]), np.concatenate([e for _, e in chunks])


async def write_through_writer(dsn: str, chunks: list[tuple[np.ndarray, np.ndarray]],
                               config: WriterConfig, release: Callable[[Batch], object]) -> JournalWriter:
    queue = BatchQueue(capacity_records=100_000, next_seq=1)
    writer = JournalWriter(dsn, queue, release, config=config)
    task = asyncio.create_task(writer.run())
    for commands, events in chunks:
        await queue.put(commands, events)
    queue.close()
    await asyncio.wait_for(task, 60)
    return writer


async def until_both_done(writer_task: asyncio.Task, other: asyncio.Task, timeout_s: float = 60) -> None:
    """Wait for both; if either fails (or time runs out), cancel the other and raise."""
    done, pending = await asyncio.wait({writer_task, other}, timeout=timeout_s,
                                       return_when=asyncio.FIRST_EXCEPTION)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()
    assert not pending, f"timed out after {timeout_s} s"


def assert_released_in_order(released: list[Batch], last_seq: int) -> None:
    expected = 1
    for batch in released:
        assert batch.first_seq == expected
        expected = batch.last_seq + 1
    assert expected == last_seq + 1


def test_round_trip_exact(db_dsn: str, run_on_loop: Callable) -> None:
    chunks = make_chunks(seed=1, command_count=60_000, chunk_max=3_000)
    commands, events = joined(chunks)
    released: list[Batch] = []
    config = WriterConfig(journal_batch_records_max=4_096, journal_batch_delay_ms_max=1.0)
    writer = run_on_loop(write_through_writer(db_dsn, chunks, config, released.append))

    assert_released_in_order(released, 60_000)
    assert all(b.record_count <= 4_096 or b.command_count == 1 for b in released)
    assert writer.stats.commands == 60_000 and writer.stats.events == len(events)
    with Journal(db_dsn) as journal:
        assert journal.last_seq() == 60_000
        stored = list(journal.batches())
        assert [(b.first_seq, b.last_seq) for b in stored] == \
            [(b.first_seq, b.last_seq) for b in released]
        for read, written in zip(stored, released):
            assert read.commands.tobytes() == written.commands.tobytes()
            assert read.events.tobytes() == written.events.tobytes()
            assert not read.commands.flags.writeable  # a view of the fetched bytes
        assert journal.commands().tobytes() == commands.tobytes()
        assert journal.events().tobytes() == events.tobytes()
        window = journal.commands(12_345, 23_456)
        assert window.tobytes() == commands[12_344:23_456].tobytes()
        fills = events[events["kind"] == EventKind.FILL]
        assert len(fills) > 1_000
        assert journal.trades().tobytes() == fills.tobytes()
        # a reader that stops mid-way (the next page's query in flight) frees the connection
        assert len(stored) > PAGE_ROWS + 1
        partial = journal.batches()
        assert [next(partial).first_seq for _ in range(PAGE_ROWS + 1)] == \
            [b.first_seq for b in stored[:PAGE_ROWS + 1]]
        partial.close()
        assert journal.last_seq() == 60_000
        history = journal.account_history(7)
        assert history.commands.tobytes() == commands[commands["account_id"] == 7].tobytes()
        mine = (events["account_id"] == 7) | (events["counter_account_id"] == 7)
        assert history.events.tobytes() == events[mine].tobytes()


class ReadySource:
    """A source with group commit: every queued chunk is ready at once."""

    def __init__(self, chunks: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.batches = [Batch(c, e) for c, e in chunks]

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        return self.ready_batch(max_records)

    def ready_batch(self, max_records: int) -> Batch | None:
        return self.batches.pop(0) if self.batches else None


def test_group_commit_releases_after_commit_while_the_next_row_is_written(db_dsn: str,
                                                                           run: Callable) -> None:
    """Each row is released in order, after its commit, and (when another row was ready)
    while that row is on the wire: the release overlaps the next commit."""
    chunks = make_chunks(seed=4, command_count=5_000, chunk_max=400)
    seen: list[tuple[int, int, bool]] = []

    async def scenario() -> None:
        writer: JournalWriter | None = None

        def release(batch: Batch) -> None:
            seen.append((batch.last_seq, writer.last_seq, writer.rows_in_flight > 0))

        writer = JournalWriter(db_dsn, ReadySource(chunks), release)
        await asyncio.wait_for(writer.run(), 60)

    run(scenario())
    last_seqs = [int(c[-1]["seq"]) for c, _ in chunks]
    assert [released for released, _, _ in seen] == last_seqs
    # the writer had committed at least this row when it was released
    assert all(committed >= released for released, committed, _ in seen)
    # every row but the last was released while the next one was being written
    assert [writing for _, _, writing in seen] == [True] * (len(seen) - 1) + [False]
    with Journal(db_dsn) as journal:
        assert journal.commands().tobytes() == joined(chunks)[0].tobytes()


def test_group_commit_stops_on_a_release_error(db_dsn: str, run: Callable) -> None:
    """A release that raises stops the writer (fail-stop), even when the loop ran it."""
    chunks = make_chunks(seed=5, command_count=2_000, chunk_max=300)

    def release(batch: Batch) -> None:
        if batch.first_seq > 1:
            raise RuntimeError(f"dispatch failed at {batch.first_seq}")

    async def scenario() -> None:
        writer = JournalWriter(db_dsn, ReadySource(chunks), release)
        with pytest.raises(RuntimeError, match="dispatch failed"):
            await asyncio.wait_for(writer.run(), 60)

    run(scenario())


def test_retry_is_idempotent_and_conflicts_are_errors(db_dsn: str, run: Callable) -> None:
    commands, events = synthetic_chunk(np.random.default_rng(2), 1, 500)
    batch = Batch(commands, events)

    async def scenario() -> None:
        connection = await asyncpg.connect(db_dsn)
        await apply_schema(connection)
        epoch = await take_journal(connection, "test")
        assert await insert_batch(connection, batch, epoch=epoch) is True
        assert await insert_batch(connection, batch, epoch=epoch) is False  # a retry after a lost reply
        assert await connection.fetchval("SELECT count(*) FROM journal") == 1
        other_events = events.copy()
        other_events[3]["price"] += 1
        with pytest.raises(ConflictingBatchError) as caught:
            await insert_batch(connection, Batch(commands, other_events), epoch=epoch)
        assert caught.value.seq == 1
        assert await connection.fetchval("SELECT count(*) FROM journal") == 1
        await connection.close()

    run(scenario())


def test_lost_reply_after_commit_is_resolved(db_dsn: str, run: Callable) -> None:
    """A reply cut after the server committed: the writer retries, finds its own row, goes on."""
    produced: list[tuple[np.ndarray, np.ndarray]] = []
    released: list[Batch] = []
    cuts = 4

    async def scenario() -> tuple[JournalWriter, CuttingProxy]:
        proxy = await CuttingProxy(db_dsn).start()
        queue = BatchQueue(capacity_records=50_000, next_seq=1)
        config = WriterConfig(journal_batch_records_max=2_048, journal_batch_delay_ms_max=0, **FAST_RETRY)
        writer = JournalWriter(proxy.dsn, queue, released.append, config=config)

        async def produce() -> None:
            rng, seq = np.random.default_rng(3), 1
            while proxy.responses_dropped < cuts or seq < 10_000:
                chunk = synthetic_chunk(rng, seq, int(rng.integers(1, 500)))
                await queue.put(*chunk)
                produced.append(chunk)
                seq += len(chunk[0])
                await asyncio.sleep(0.001)
            queue.close()

        async def cut() -> None:
            for _ in range(cuts):
                # Cut only in steady state: connected, and a batch released since the last
                # cut, so the reply dropped is an INSERT's (sent after its commit), not a login's.
                released_before = len(released)
                while len(released) <= released_before:
                    await asyncio.sleep(0.001)
                dropped_before = proxy.responses_dropped
                proxy.cut_on_next_response()
                while proxy.responses_dropped == dropped_before:
                    await asyncio.sleep(0.001)

        cutter = asyncio.create_task(cut())
        await until_both_done(asyncio.create_task(writer.run()), asyncio.create_task(produce()))
        await cutter
        await proxy.close()
        return writer, proxy

    writer, proxy = run(scenario())
    assert proxy.responses_dropped == cuts
    assert writer.stats.retries >= cuts
    assert writer.stats.conflicts_resolved >= 1, writer.stats  # cuts fell after commits
    commands, events = joined(produced)
    assert_released_in_order(released, int(commands[-1]["seq"]))
    with Journal(db_dsn) as journal:
        assert journal.commands().tobytes() == commands.tobytes()
        assert journal.events().tobytes() == events.tobytes()


def test_outage_loses_nothing_and_releases_nothing_early(pg_server, db_dsn: str, run: Callable) -> None:
    """``pg_ctl stop -m immediate`` twice under load: backpressure, no release while down,
    nothing lost or duplicated after the server comes back."""
    produced: list[tuple[np.ndarray, np.ndarray]] = []
    released: list[Batch] = []
    capacity_records = 40_000

    async def produce(queue: BatchQueue, stop: asyncio.Event) -> None:
        rng, seq = np.random.default_rng(4), 1
        while not stop.is_set():
            chunk = synthetic_chunk(rng, seq, int(rng.integers(1, 400)))
            await queue.put(*chunk)
            produced.append(chunk)
            seq += len(chunk[0])
            await asyncio.sleep(0.001)
        queue.close()

    async def outage(queue: BatchQueue) -> None:
        await asyncio.to_thread(pg_server.stop, "immediate")
        await asyncio.sleep(0.05)  # replies already on the socket are processed by now
        released_when_down = len(released)
        await asyncio.sleep(0.6)
        assert len(released) == released_when_down, "a batch was released while the server was down"
        assert queue.pending_records > capacity_records // 2, "the producer felt no backpressure"
        await asyncio.to_thread(pg_server.start)

    async def scenario() -> JournalWriter:
        queue = BatchQueue(capacity_records=capacity_records, next_seq=1)
        config = WriterConfig(journal_batch_records_max=4_096, journal_batch_delay_ms_max=1.0, **FAST_RETRY)
        writer = JournalWriter(db_dsn, queue, released.append, config=config)
        stop = asyncio.Event()

        async def control() -> None:
            producer = asyncio.create_task(produce(queue, stop))
            for _ in range(2):
                await asyncio.sleep(0.3)
                count_before = len(released)
                await outage(queue)
                await asyncio.sleep(0.3)
                assert len(released) > count_before, "the writer did not resume"
            stop.set()
            await producer

        await until_both_done(asyncio.create_task(writer.run()), asyncio.create_task(control()))
        return writer

    writer = run(scenario())
    assert writer.stats.retries >= 2
    commands, events = joined(produced)
    assert_released_in_order(released, int(commands[-1]["seq"]))
    with Journal(db_dsn) as journal:
        stored = [(b.first_seq, b.last_seq) for b in journal.batches()]
        assert stored == [(b.first_seq, b.last_seq) for b in released]
        assert journal.commands().tobytes() == commands.tobytes()
        assert journal.events().tobytes() == events.tobytes()


def write_rows(dsn: str, run: Callable, command_counts: list[int]) -> list[Batch]:
    rng, seq, batches = np.random.default_rng(5), 1, []
    for count in command_counts:
        batches.append(Batch(*synthetic_chunk(rng, seq, count)))
        seq += count

    async def scenario() -> None:
        connection = await asyncpg.connect(dsn)
        await apply_schema(connection)
        epoch = await take_journal(connection, "test")
        for batch in batches:
            await insert_batch(connection, batch, epoch=epoch)
        await connection.close()

    run(scenario())
    return batches


async def execute(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    await connection.execute(sql)
    await connection.close()


def test_export_trades_csv_and_npy(db_dsn: str, run: Callable, tmp_path) -> None:
    write_rows(db_dsn, run, [3_000, 2_000])
    with Journal(db_dsn) as journal:
        trades = journal.trades(1_000, 4_000)
    assert len(trades) > 100
    for out in (tmp_path / "trades.csv", tmp_path / "trades.npy"):
        done = subprocess.run([sys.executable, "-m", "matchcore.cli", "export", "trades", "--dsn",
                               db_dsn, "--from", "1000", "--to", "4000", "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"{len(trades)} trades written" in done.stdout
    assert np.load(tmp_path / "trades.npy").tobytes() == trades.tobytes()
    lines = (tmp_path / "trades.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == len(trades) + 1
    for line, trade in zip(lines[1:], trades):
        assert [int(v) for v in line.split(",")] == [int(trade[name]) for name in header]


def test_flipped_byte_is_a_checksum_error_naming_the_row(db_dsn: str, run: Callable) -> None:
    batches = write_rows(db_dsn, run, [100, 200, 300, 400])
    target = batches[2].first_seq
    run(execute(db_dsn, f"UPDATE journal SET events = set_byte(events, 777, get_byte(events, 777) # 1)"
                        f" WHERE first_seq = {target}"))
    with Journal(db_dsn) as journal:
        with pytest.raises(ChecksumError) as caught:
            list(journal.batches())
        assert caught.value.seq == target
        assert str(target) in str(caught.value)
        assert len(journal.commands(1, target - 1)) == target - 1  # rows before it still read


def test_missing_row_is_a_gap_error_naming_the_seq(db_dsn: str, run: Callable) -> None:
    batches = write_rows(db_dsn, run, [100, 200, 300, 400])
    missing = batches[1].first_seq
    run(execute(db_dsn, f"DELETE FROM journal WHERE first_seq = {missing}"))
    with Journal(db_dsn) as journal:
        with pytest.raises(SequenceGapError) as caught:
            journal.trades()
        assert caught.value.seq == missing
        with pytest.raises(SequenceGapError) as caught:
            journal.commands(150, 700)  # the range starts inside the missing row
        assert caught.value.seq == 150


def test_newer_schema_is_refused(db_dsn: str, run: Callable) -> None:
    async def scenario() -> None:
        connection = await asyncpg.connect(db_dsn)
        assert await apply_schema(connection) == 0
        assert await apply_schema(connection) == SCHEMA_VERSION  # idempotent
        await connection.execute("INSERT INTO schema_version (version, description) "
                                 f"VALUES ({SCHEMA_VERSION + 1}, 'from the future')")
        with pytest.raises(SchemaVersionError) as caught:
            await apply_schema(connection)
        assert (caught.value.found, caught.value.known) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)
        await connection.close()
        with pytest.raises(SchemaVersionError):
            await AsyncJournal.connect(db_dsn)
        writer = JournalWriter(db_dsn, BatchQueue(), lambda batch: None)
        with pytest.raises(SchemaVersionError):
            await writer.run()

    run(scenario())


def test_rows_written_before_crc32c_still_verify(db_dsn: str, run: Callable) -> None:
    """A version-1 journal (zlib CRC-32 rows) migrated to version 2: the old rows read back
    checked with CRC-32 (a flipped byte is still caught), new rows are written with CRC-32C."""
    rng = np.random.default_rng(9)
    old = [Batch(*synthetic_chunk(rng, 1, 300)), Batch(*synthetic_chunk(rng, 301, 200))]
    new = Batch(*synthetic_chunk(rng, 501, 250))

    async def scenario() -> None:
        connection = await asyncpg.connect(db_dsn)
        version, description, sql = MIGRATIONS[0]
        await connection.execute(SCHEMA_VERSION_TABLE)
        await connection.execute(sql)
        await connection.execute("INSERT INTO schema_version (version, description) "
                                 "VALUES ($1, $2)", version, description)
        for batch in old:  # as the version-1 writer wrote them
            await connection.execute(
                "INSERT INTO journal (first_seq, last_seq, command_count, event_count, commands, "
                "events, checksum) VALUES ($1, $2, $3, $4, $5, $6, $7)", batch.first_seq,
                batch.last_seq, batch.command_count, batch.event_count, batch.commands,
                batch.events, batch_checksum(batch.first_seq, batch.last_seq, batch.commands,
                                             batch.events, CRC32))
        assert await apply_schema(connection) == 1
        epoch = await take_journal(connection, "test")
        assert await insert_batch(connection, new, epoch=epoch) is True
        assert await insert_batch(connection, new, epoch=epoch) is False  # a retry, recognized
        kinds = await connection.fetch("SELECT checksum_kind FROM journal ORDER BY first_seq")
        assert [row[0] for row in kinds] == [CRC32, CRC32, CRC32C]
        await connection.close()

    run(scenario())
    with Journal(db_dsn) as journal:
        read = list(journal.batches())
        assert [b.commands.tobytes() for b in read] == [b.commands.tobytes() for b in old + [new]]
        assert [b.events.tobytes() for b in read] == [b.events.tobytes() for b in old + [new]]
    run(execute(db_dsn, "UPDATE journal SET commands = set_byte(commands, 5, get_byte(commands, 5)"
                        " # 4) WHERE first_seq = 301"))
    with Journal(db_dsn) as journal:
        with pytest.raises(ChecksumError) as caught:
            list(journal.batches())
        assert caught.value.seq == 301


def test_snapshots_and_meta(db_dsn: str, run: Callable) -> None:
    async def scenario() -> None:
        journal = await AsyncJournal.connect(db_dsn, apply=True)
        assert await journal.latest_snapshot() is None
        assert await journal.write_snapshot(100, b"state-100", 2**64 - 5) is True
        assert await journal.write_snapshot(100, b"state-100", 2**64 - 5) is False
        assert await journal.write_snapshot(250, b"state-250", 7) is True
        with pytest.raises(ConflictingBatchError):
            await journal.write_snapshot(250, b"other", 7)
        newest = await journal.latest_snapshot()
        assert (newest.seq, newest.state, newest.state_hash) == (250, b"state-250", 7)
        older = await journal.latest_snapshot(before_seq=249)
        assert (older.seq, older.state, older.state_hash) == (100, b"state-100", 2**64 - 5)
        assert await journal.latest_snapshot(before_seq=99) is None
        await execute(db_dsn, "UPDATE snapshot SET state = 'x' WHERE seq = 250")
        with pytest.raises(ChecksumError) as caught:
            await journal.latest_snapshot()
        assert caught.value.seq == 250
        await journal.write_meta("engine_config", {"max_accounts": 10})
        assert await journal.read_meta("engine_config") == {"max_accounts": 10}
        assert await journal.read_meta("absent") is None
        await journal.close()

    run(scenario())
