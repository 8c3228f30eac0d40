"""DurableCore: the durable core. Engine + pipeline + journal writer, wired as DESIGN.md draws:

    submit --input ring--> core thread --output ring--> PipelineSource --> JournalWriter
                                                                        --> PostgreSQL
    on_release(batch) <---------------- only after the batch's row is committed

At start it recovers: newest snapshot + replay of the journal after it, each batch's events
checked byte for byte, then numbering continues after the last journaled command. Every
``snapshot_every_commands`` it parks the core thread between two commands just long enough to
copy the state, and stores that snapshot once the journal has committed up to its seq (a
snapshot is never ahead of the journal).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Callable

import msgspec

from matchcore.core import Engine, EngineConfig
from matchcore.core._core import Pipeline
from matchcore.persistence.batch import Batch
from matchcore.persistence.errors import PersistenceError
from matchcore.persistence.journal import AsyncJournal
from matchcore.persistence.pipeline_source import PipelineSource
from matchcore.persistence.replay import CONFIG_META_KEY, ReplayResult, config_from_meta, replay_async
from matchcore.persistence.writer import JournalWriter, WriterConfig

__all__ = ["DurableCore", "DurableCoreConfig"]

_log = logging.getLogger("matchcore.gateway.durable_core")


class DurableCoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Ring sizes and snapshot cadence of a DurableCore."""

    input_ring_capacity_records: int = 1 << 16
    output_ring_capacity_records: int = 1 << 18
    #: a snapshot after this many commands (0: never)
    snapshot_every_commands: int = 1_000_000
    #: snapshots kept in the database, newest first (0: keep all). Older ones only speed up
    #: replays to past seqs; the journal alone rebuilds any state.
    snapshots_kept: int = 8
    writer: WriterConfig = WriterConfig()


class DurableCore:
    """Commands in, durable events out. One instance per journal."""

    def __init__(self, dsn: str, engine_config: EngineConfig, *, config: DurableCoreConfig | None = None,
                 on_release: Callable[[Batch], object] | None = None,
                 on_commit: Callable[[Batch, float], object] | None = None):
        """``on_release(batch)``: after each batch's commit, in seq order. ``on_commit(batch,
        latency_s)``: just before it, with the writer's own commit latency (for metrics)."""
        self.dsn = dsn
        self.engine_config = engine_config.validate()
        self.config = config or DurableCoreConfig()
        self.on_release = on_release
        self.on_commit = on_commit
        self.engine: Engine | None = None
        self.pipeline: Pipeline | None = None
        self.released_seq = 0
        self.snapshots_written = 0
        self._journal: AsyncJournal | None = None
        self._source: PipelineSource | None = None
        self._writer: JournalWriter | None = None
        self._writer_task: asyncio.Task | None = None
        self._next_snapshot_seq = 0
        self._pending_snapshot: tuple[int, bytes, int] | None = None
        self._snapshot_task: asyncio.Task | None = None

    async def start(self) -> ReplayResult:
        """Recover from the journal and start the core thread and the writer."""
        self._journal = await AsyncJournal.connect(self.dsn, apply=True)
        stored = await self._journal.read_meta(CONFIG_META_KEY)
        if stored is None:
            await self._journal.write_meta(CONFIG_META_KEY, msgspec.structs.asdict(self.engine_config))
        elif config_from_meta(stored) != self.engine_config:
            raise PersistenceError(f"the journal was written with another engine config: {stored}")
        recovered = await replay_async(self._journal, self.engine_config)
        self.engine = recovered.engine
        self.released_seq = recovered.last_seq
        self.pipeline = Pipeline(self.engine, input_capacity=self.config.input_ring_capacity_records,
                                 output_capacity=self.config.output_ring_capacity_records,
                                 next_seq=recovered.last_seq + 1)
        self.pipeline.start()
        self._source = PipelineSource(self.pipeline, busy=lambda: self._writer.writing)
        self._writer = JournalWriter(self.dsn, self._source, self._released, config=self.config.writer,
                                     on_commit=self._committed)
        await self._writer.connect()
        self._writer_task = asyncio.create_task(self._writer.run(), name="matchcore-journal-writer")
        self._schedule_snapshot_after(recovered.last_seq)
        _log.info("recovered", extra={"last_seq": recovered.last_seq, "snapshot_seq": recovered.snapshot_seq,
                                      "replayed_commands": recovered.commands})
        return recovered

    @property
    def next_seq(self) -> int:
        return self.pipeline.next_seq

    def submit(self, commands) -> int:
        """Offer commands; returns how many the input ring took (the rest: retry later)."""
        self.check()
        return self.pipeline.submit(commands)

    async def submit_all(self, commands, poll_s: float = 0.0005) -> None:
        """Submit every command, yielding to the loop while the input ring is full."""
        done = 0
        while done < len(commands):
            done += self.submit(commands[done:])
            if done < len(commands):
                await asyncio.sleep(poll_s)

    async def wait_released(self, seq: int, timeout_s: float = 30.0) -> None:
        """Wait until every command up to ``seq`` is durable and released."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.released_seq < seq:
            self.check()
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"seq {seq} not released after {timeout_s} s (at {self.released_seq})")
            await asyncio.sleep(0.001)

    def check(self) -> None:
        """Raise if the core thread or the writer stopped on an error."""
        self.pipeline.check()
        if self._writer_task is not None and self._writer_task.done() and not self._writer_task.cancelled():
            error = self._writer_task.exception()
            if error is not None:
                raise error

    async def stop(self) -> None:
        """Apply and journal everything submitted, write a last snapshot, stop."""
        if self.pipeline is None:
            return
        self.pipeline.stop()
        self._source.close()
        try:
            await self._writer_task
        finally:
            self._source.detach()
        if self._snapshot_task is not None:
            await self._snapshot_task
        if self.config.snapshot_every_commands and self.released_seq > 0:
            await self._journal.write_snapshot(self.released_seq, self.engine.snapshot(),
                                               self.engine.state_hash())
            self.snapshots_written += 1
            if self.config.snapshots_kept:
                await self._journal.prune_snapshots(self.config.snapshots_kept)
        await self._journal.close()
        self.pipeline = None

    # ------------------------------------------------------------------ release and snapshots

    def _committed(self, batch: Batch, latency_s: float) -> None:
        self._source.wake()  # group commit: the next batch may be cut now
        if self.on_commit is not None:
            self.on_commit(batch, latency_s)

    def _released(self, batch: Batch) -> None:
        self.released_seq = batch.last_seq
        if self.on_release is not None:
            self.on_release(batch)
        pending = self._pending_snapshot
        if pending is not None and batch.last_seq >= pending[0] and self._snapshot_task is None:
            self._pending_snapshot = None
            self._snapshot_task = asyncio.ensure_future(self._write_snapshot(*pending))
        elif pending is None and self._next_snapshot_seq and batch.last_seq >= self._next_snapshot_seq:
            self._take_snapshot()

    def _schedule_snapshot_after(self, seq: int) -> None:
        every = self.config.snapshot_every_commands
        self._next_snapshot_seq = seq + every if every else 0

    def _take_snapshot(self) -> None:
        """Park the core between two commands only for the copy of the state."""
        seq = self.pipeline.pause()
        try:
            state, state_hash = self.engine.snapshot(), self.engine.state_hash()
        finally:
            self.pipeline.resume()
        self._pending_snapshot = (seq, state, state_hash)
        self._schedule_snapshot_after(seq)

    async def _write_snapshot(self, seq: int, state: bytes, state_hash: int) -> None:
        try:
            await self._journal.write_snapshot(seq, state, state_hash)
            self.snapshots_written += 1
            if self.config.snapshots_kept:
                await self._journal.prune_snapshots(self.config.snapshots_kept)
        finally:
            self._snapshot_task = None
