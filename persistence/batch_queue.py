"""Chunks of commands and events in, bounded batches out: the journal writer's source.

The producer (the pipeline draining the core's output ring) puts chunks: consecutive commands
and the events they produced. The writer asks for the next batch, bounded by a record count
(commands + events) and by a delay counted from the moment the batch's first record was taken.
A chunk larger than the room left is split between two commands, never inside one command's
events; a single command whose events alone exceed the bound goes alone in its batch.

The queue holds at most ``capacity_records`` records (one chunk larger than that is accepted
only into an empty queue). When the database is away the writer stops taking, the queue fills,
and ``put`` waits: that is the backpressure that reaches the producer. Nothing is dropped.
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import numpy as np

from matchcore.persistence.batch import Batch, split_point
from matchcore.persistence.errors import PersistenceError, SequenceGapError, SequenceOverlapError

__all__ = ["BatchQueue", "BatchSource", "QueueClosedError"]


class QueueClosedError(PersistenceError, RuntimeError):
    """A chunk was put into a closed queue."""


class BatchSource(Protocol):
    """What the journal writer drains. The writer asks for the next batch as soon as a row
    goes out (forming it overlaps the commit), unless the source has a true ``cut_at_commit``
    (``PipelineSource``): then only when it can write the batch, so the batch is cut when a
    commit returns and holds everything that arrived meanwhile (group commit)."""

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        """The next batch, at most ``max_records`` records (except one command with more
        events), waiting at most ``max_delay_s`` after its first record for more; None when
        the source is closed and empty."""
        ...


class BatchQueue:
    """A bounded FIFO of chunks; see the module doc. One consumer; producers on the same loop."""

    __slots__ = ("capacity_records", "_chunks", "_pending_records", "_next_seq", "_closed",
                 "_readable", "_writable")

    def __init__(self, capacity_records: int = 1 << 20, *, next_seq: int | None = None):
        """``next_seq``: the seq the first chunk must start with (None: whatever comes first)."""
        if capacity_records < 1:
            raise ValueError(f"capacity_records={capacity_records} must be positive")
        self.capacity_records = capacity_records
        self._chunks: deque[Batch] = deque()
        self._pending_records = 0
        self._next_seq = next_seq
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()

    @property
    def pending_records(self) -> int:
        return self._pending_records

    @property
    def closed(self) -> bool:
        return self._closed

    def has_room(self, record_count: int) -> bool:
        return self._pending_records == 0 or \
            self._pending_records + record_count <= self.capacity_records

    def put_nowait(self, commands: np.ndarray, events: np.ndarray) -> bool:
        """Queue a chunk if there is room; False (nothing queued) if the queue is full."""
        chunk = self._checked(commands, events)
        if not self.has_room(chunk.record_count):
            return False
        self._append(chunk)
        return True

    async def put(self, commands: np.ndarray, events: np.ndarray) -> None:
        """Queue a chunk, waiting for room (backpressure)."""
        chunk = self._checked(commands, events)
        while not self.has_room(chunk.record_count):
            self._writable.clear()
            await self._writable.wait()
            if self._closed:
                raise QueueClosedError("the BatchQueue was closed while a put waited")
        self._append(chunk)

    def close(self) -> None:
        """No more chunks: the consumer drains what is queued, then gets None."""
        self._closed = True
        self._readable.set()
        self._writable.set()

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        if max_records < 1:
            raise ValueError(f"max_records={max_records} must be positive")
        while not self._chunks:
            if self._closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + max_delay_s
        pieces: list[Batch] = []
        record_count = 0
        try:
            while record_count < max_records:
                if self._chunks:
                    taken = self._take(max_records - record_count, first=not pieces)
                    if taken is None:
                        break
                    pieces.append(taken)
                    record_count += taken.record_count
                    continue
                remaining_s = deadline_s - loop.time()
                if self._closed or remaining_s <= 0:
                    break
                self._readable.clear()
                try:
                    await asyncio.wait_for(self._readable.wait(), remaining_s)
                except TimeoutError:
                    break
        except asyncio.CancelledError:
            self._chunks.extendleft(reversed(pieces))  # a cancelled take gives everything back
            raise
        self._pending_records -= record_count
        self._writable.set()
        if len(pieces) == 1:
            return pieces[0]
        return Batch(np.concatenate([piece.commands for piece in pieces]),
                     np.concatenate([piece.events for piece in pieces]))

    def _take(self, room_records: int, *, first: bool) -> Batch | None:
        """Take up to ``room_records`` records from the head chunk (at least one command when
        ``first``); None when nothing fits."""
        head = self._chunks[0]
        if head.record_count <= room_records:
            return self._chunks.popleft()
        command_count, event_count = split_point(head.commands, head.events, room_records)
        if command_count == 0:
            if not first:
                return None
            command_count = 1
            event_count = int(np.searchsorted(head.events["seq"], head.first_seq, side="right"))
        if command_count == head.command_count:
            return self._chunks.popleft()
        taken = Batch(head.commands[:command_count], head.events[:event_count])
        self._chunks[0] = Batch(head.commands[command_count:], head.events[event_count:])
        return taken

    def _checked(self, commands: np.ndarray, events: np.ndarray) -> Batch:
        if self._closed:
            raise QueueClosedError("put into a closed BatchQueue")
        chunk = Batch(commands, events).validate()
        if self._next_seq is None or chunk.first_seq == self._next_seq:
            return chunk
        if chunk.first_seq > self._next_seq:
            raise SequenceGapError(self._next_seq, f"chunk starts at seq {chunk.first_seq}; "
                                   f"seq {self._next_seq} is missing")
        raise SequenceOverlapError(chunk.first_seq, f"chunk starts at seq {chunk.first_seq}, "
                                   f"already queued (next is {self._next_seq})")

    def _append(self, chunk: Batch) -> None:
        # A put that waited re-checks continuity: another producer may have gone first.
        if self._next_seq is not None and chunk.first_seq != self._next_seq:
            self._checked(chunk.commands, chunk.events)
        self._chunks.append(chunk)
        self._pending_records += chunk.record_count
        self._next_seq = chunk.last_seq + 1
        self._readable.set()
