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
import os
import time
from typing import Callable

import asyncpg
import msgspec

from matchcore.core import Engine, EngineConfig, commands
from matchcore.core._core import CoreThreadError, Pipeline
from matchcore.persistence.batch import Batch
from matchcore.persistence.errors import PersistenceError
from matchcore.persistence.journal import DATABASE_ERRORS, AsyncJournal
from matchcore.persistence.pipeline_source import PipelineSource
from matchcore.core.snapshot_format import SnapshotError
from matchcore.errors import ConfigError
from matchcore.persistence.replay import (CONFIG_META_KEY, EPOCHS_META_KEY, ConfigEpoch, ReplayResult,
                                          config_to_meta, epochs_to_meta, read_epochs_async, replay_async,
                                          resize)
from matchcore.persistence.writer import JournalWriter, WriterConfig, take_journal

__all__ = ["DurableCore", "DurableCoreConfig"]

_log = logging.getLogger("matchcore.gateway.durable_core")
#: while a snapshot waits for the core to park, the loop looks again this often
PAUSE_POLL_S = 0.0005
#: one query of the core's journal connections (recovery pages, snapshots) may take this long
JOURNAL_QUERY_TIMEOUT_S = 60.0
#: at stop without a deadline, the core thread gets this long to apply what was submitted
PIPELINE_STOP_S = 10.0


def _remaining(loop: asyncio.AbstractEventLoop, deadline: float | None, default: float | None = None) -> float | None:
    """Seconds left until ``deadline`` (loop time; None: ``default``), never negative."""
    if deadline is None:
        return default
    return max(0.0, deadline - loop.time())


class DurableCoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Ring sizes and snapshot cadence of a DurableCore."""

    input_ring_capacity_records: int = 1 << 16
    output_ring_capacity_records: int = 1 << 18
    #: a snapshot after this many commands (0: never)
    snapshot_every_commands: int = 1_000_000
    #: snapshots kept in the database, newest first (0: keep all). Older ones only speed up
    #: replays to past seqs; the journal alone rebuilds any state.
    snapshots_kept: int = 8
    #: a CLOCK command when nothing was submitted for this long, so GTD orders expire without
    #: other flow (0: never; they then expire at the next command)
    clock_interval_ms: int = 1000
    writer: WriterConfig = WriterConfig()


class DurableCore:
    """Commands in, durable events out. One instance per journal."""

    def __init__(self, dsn: str, engine_config: EngineConfig, *, config: DurableCoreConfig | None = None,
                 on_release: Callable[[Batch], object] | None = None,
                 on_commit: Callable[[Batch, float], object] | None = None,
                 on_failure: Callable[[BaseException], object] | None = None,
                 epoch: int | None = None):
        """``on_release(batch)``: after each batch's commit, in seq order. ``on_commit(batch,
        latency_s)``: just before it, with the writer's own commit latency (for metrics).
        ``on_failure(error)``: the journal writer stopped on an error (it is logged too): the
        core can no longer make anything durable, so its owner must stop (fail-stop).
        ``epoch``: the journal fence's epoch its owner took (None: ``start`` takes the journal
        before it reads it); a writer fenced out later is such a failure."""
        self.dsn = dsn
        self.engine_config = engine_config.validate()
        self.config = config or DurableCoreConfig()
        self.on_release = on_release
        self.on_commit = on_commit
        self.on_failure = on_failure
        self.epoch = epoch
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
        self._clock_task: asyncio.Task | None = None
        self._pause_poll: asyncio.TimerHandle | None = None
        #: after stop(): True when everything submitted was journaled and released
        self.stopped_cleanly = False
        #: time.monotonic() of the writer's last commit (its start until the first one)
        self.last_commit_monotonic_s = time.monotonic()
        #: the seq a config change at start happened after (None: no change): the old
        #: config's snapshot there stays, so no snapshot of the new one is written at that seq
        self._config_changed_at_seq: int | None = None

    async def start(self, warm: ReplayResult | None = None) -> ReplayResult:
        """Take the journal (unless given an epoch), recover from it (or continue from
        ``warm``, a standby's engine at the journal's end) and start the core thread and the
        writer."""
        self._journal = await AsyncJournal.connect_pool(
            self.dsn, apply=True, connections_max=2, application_name="matchcore-core",
            command_timeout_s=JOURNAL_QUERY_TIMEOUT_S)
        try:
            if self.epoch is None:
                async with self._journal.acquire() as connection:
                    self.epoch = await take_journal(connection, f"matchcore core pid {os.getpid()}")
            recovered = await self._recover(warm)
        except BaseException:
            await self._journal.close()
            raise
        self.engine = recovered.engine
        self.released_seq = recovered.last_seq
        self.pipeline = Pipeline(self.engine, input_ring_capacity_records=self.config.input_ring_capacity_records,
                                 output_ring_capacity_records=self.config.output_ring_capacity_records,
                                 next_seq=recovered.last_seq + 1)
        self.pipeline.start()
        self._source = PipelineSource(self.pipeline, busy=lambda: self._writer.writing)
        self._writer = JournalWriter(self.dsn, self._source, self._released, config=self.config.writer,
                                     on_commit=self._committed, epoch=self.epoch)
        await self._writer.connect()
        self._writer_task = asyncio.create_task(self._writer.run(), name="matchcore-journal-writer")
        self._writer_task.add_done_callback(self._writer_done)
        self._schedule_snapshot_after(recovered.last_seq)
        if self.config.clock_interval_ms > 0:
            self._clock_task = asyncio.create_task(self._clock(), name="matchcore-engine-clock")
        _log.info("recovered", extra={"last_seq": recovered.last_seq, "snapshot_seq": recovered.snapshot_seq,
                                      "replayed_commands": recovered.commands})
        return recovered

    async def _recover(self, warm: ReplayResult | None = None) -> ReplayResult:
        """Replay the journal in its config epochs (or take ``warm``), then move to the
        configured one."""
        if await self._journal.read_meta(CONFIG_META_KEY) is None:
            await self._journal.write_meta(CONFIG_META_KEY, config_to_meta(self.engine_config))
        epochs = await read_epochs_async(self._journal)
        recovered = warm if warm is not None else await replay_async(self._journal, epochs=epochs)
        if epochs[-1].config != self.engine_config:
            recovered.engine = await self._change_config(recovered, epochs)
        return recovered

    async def _change_config(self, recovered: ReplayResult, epochs: list[ConfigEpoch]) -> Engine:
        """Resize the recovered engine into the configured capacities and journal the change
        (a new epoch from the next seq) before any command is accepted under it. ConfigError
        (one line: the field, the value asked and what is in use) when the state does not fit
        or the fee account would change; nothing is written then."""
        try:
            engine = resize(recovered.engine, self.engine_config)
        except SnapshotError as error:
            raise ConfigError(f"engine config refused for this journal: engine.{error}") from None
        from_seq = recovered.last_seq + 1
        # a start that changed the config but applied nothing under it is superseded
        kept = [e for e in epochs if e.from_seq < from_seq] or [ConfigEpoch(from_seq=1, config=self.engine_config)]
        if kept[-1].from_seq < from_seq:
            kept.append(ConfigEpoch(from_seq=from_seq, config=self.engine_config))
        await self._journal.write_meta(EPOCHS_META_KEY, epochs_to_meta(kept))
        self._config_changed_at_seq = recovered.last_seq
        _log.warning("engine config changed", extra={
            "from_seq": from_seq, "old": msgspec.structs.asdict(epochs[-1].config),
            "new": msgspec.structs.asdict(self.engine_config)})
        return engine

    async def _clock(self) -> None:
        """Submit a CLOCK command after each interval in which nothing else was submitted:
        the engine reads time only from command stamps, so this is how GTD orders expire on a
        quiet market. A full input ring skips the tick (that flow carries the time)."""
        interval_s = self.config.clock_interval_ms / 1000
        clock = commands.pack([commands.clock()])
        seen = self.pipeline.next_seq
        while self.pipeline is not None:
            await asyncio.sleep(interval_s)
            pipeline = self.pipeline
            if pipeline is None:
                return
            if pipeline.next_seq == seen:
                try:
                    self.submit(clock)
                except Exception as error:  # the core or writer failed: their owner stops us
                    _log.error("engine clock stopped", extra={"error": repr(error)})
                    return
            seen = pipeline.next_seq

    def journal_figures(self) -> dict[str, float]:
        """For metrics: released seq, commands applied but not released, seconds since the
        last commit, the writer's retries."""
        pipeline, writer = self.pipeline, self._writer
        applied = pipeline.last_applied_seq if pipeline is not None else self.released_seq
        return {"released_seq": self.released_seq, "lag_commands": max(0, applied - self.released_seq),
                "commit_age_s": time.monotonic() - self.last_commit_monotonic_s,
                "writer_retries": writer.stats.retries if writer is not None else 0}

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

    async def stop(self, timeout_s: float | None = None) -> None:
        """Apply and journal everything submitted, write a last snapshot, stop.

        With ``timeout_s``, stop within about that long whatever the database does: what is
        not journaled by then was never acknowledged (and is not lost: no client saw it), and
        a snapshot not written only makes the next start replay longer. Each is logged."""
        if self.pipeline is None:
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        self._cancel_pause()
        if self._clock_task is not None:
            self._clock_task.cancel()
            await asyncio.gather(self._clock_task, return_exceptions=True)
            self._clock_task = None
        # The core thread may need output ring room to finish: the loop keeps draining it
        # while another thread waits for the core.
        pipeline = self.pipeline
        try:
            await loop.run_in_executor(None, lambda: pipeline.stop(_remaining(loop, deadline, PIPELINE_STOP_S)))
        except CoreThreadError as error:
            _log.error("core thread did not finish", extra={"error": str(error)})
        self._source.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._writer_task), _remaining(loop, deadline))
            self.stopped_cleanly = self.released_seq == pipeline.last_applied_seq
        except asyncio.TimeoutError:
            self._writer_task.cancel()
            self.stopped_cleanly = False
            _log.error("stopped before everything was journaled", extra={
                "released_seq": self.released_seq, "applied_seq": pipeline.last_applied_seq,
                "reason": "the database did not commit in time; those commands were never acknowledged"})
        except Exception:  # already logged by _writer_done
            pass
        finally:
            self._source.detach()
        await self._final_snapshot(loop, deadline)
        await self._journal.close(timeout_s=min(5.0, _remaining(loop, deadline, 5.0)))
        self.pipeline = None

    async def _final_snapshot(self, loop, deadline: float | None) -> None:
        try:
            if self._snapshot_task is not None:
                await asyncio.wait_for(asyncio.shield(self._snapshot_task), _remaining(loop, deadline))
            if (self.config.snapshot_every_commands and self.released_seq > 0 and not self._writer_failed()
                    and self.released_seq != self._config_changed_at_seq):
                await asyncio.wait_for(self._write_snapshot(self.released_seq, self.engine.snapshot(),
                                                            self.engine.state_hash()), _remaining(loop, deadline))
        except (asyncio.TimeoutError, Exception) as error:
            _log.warning("last snapshot not written", extra={"seq": self.released_seq, "error": repr(error),
                                                             "effect": "the next start replays more of the journal"})

    def _writer_failed(self) -> bool:
        task = self._writer_task
        return task is not None and task.done() and (task.cancelled() or task.exception() is not None)

    def _writer_done(self, task: asyncio.Task) -> None:
        """The writer never dies silently: its error is logged and handed to ``on_failure``."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        _log.critical("journal writer stopped: nothing more can be made durable", extra={
            "released_seq": self.released_seq, "error": repr(error)}, exc_info=error)
        if self.on_failure is not None:
            self.on_failure(error)

    # ------------------------------------------------------------------ release and snapshots

    def _committed(self, batch: Batch, latency_s: float) -> None:
        self.last_commit_monotonic_s = time.monotonic()
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
        """Park the core between two commands only for the copy of the state. The loop never
        waits for the core: it asks for the pause and looks again on later iterations (the
        core may first need output ring room that only the loop's writer makes)."""
        if self._pause_poll is not None:
            return
        self._next_snapshot_seq = 0  # until this one is taken
        self.pipeline.request_pause()
        self._poll_pause()

    def _poll_pause(self) -> None:
        self._pause_poll = None
        pipeline = self.pipeline
        if pipeline is None:
            return
        if not pipeline.paused:
            self._pause_poll = asyncio.get_running_loop().call_later(PAUSE_POLL_S, self._poll_pause)
            return
        try:
            seq = pipeline.last_applied_seq
            state, state_hash = self.engine.snapshot(), self.engine.state_hash()
        finally:
            pipeline.resume()
        self._pending_snapshot = (seq, state, state_hash)
        self._schedule_snapshot_after(seq)

    def _cancel_pause(self) -> None:
        if self._pause_poll is not None:
            self._pause_poll.cancel()
            self._pause_poll = None
            self.pipeline.resume()

    async def _write_snapshot(self, seq: int, state: bytes, state_hash: int) -> None:
        """Store a snapshot; a failure is logged (the next one, or a longer replay, makes up
        for it) and never stops the writer."""
        try:
            await self._journal.write_snapshot(seq, state, state_hash)
            self.snapshots_written += 1
            if self.config.snapshots_kept:
                await self._journal.prune_snapshots(self.config.snapshots_kept)
        except (*DATABASE_ERRORS, PersistenceError) as error:
            _log.warning("snapshot not written", extra={"seq": seq, "error": repr(error)})
        finally:
            self._snapshot_task = None
