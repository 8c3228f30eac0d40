"""The journal writer's source over the pipeline's output ring (a BatchSource).

The core thread writes each command's slot (with the number of events that follow it) and then
its event slots; ``next_batch`` drains slots, keeps back the trailing command whose events are
not all published yet, and cuts batches only between commands. It waits on the pipeline's
eventfd (armed, then re-checked, then awaited), so an idle core costs the event loop nothing.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import numpy as np

from matchcore.core._core import OUTPUT_SLOT_BYTES, split_slots
from matchcore.core.records import COMMAND_SIZE, KIND_OFFSET
from matchcore.persistence.batch import Batch

__all__ = ["PipelineSource", "complete_prefix"]

_EMPTY = np.empty((0, OUTPUT_SLOT_BYTES), dtype=np.uint8)


def complete_prefix(slots: np.ndarray) -> int:
    """How many leading slots form whole commands (each with all its events)."""
    if len(slots) == 0:
        return 0
    command_rows = np.flatnonzero(slots[:, KIND_OFFSET] < 64)
    if len(command_rows) == 0:
        raise AssertionError("output slots do not start with a command")
    last = int(command_rows[-1])
    event_count = int(slots[last, COMMAND_SIZE:COMMAND_SIZE + 8].view(np.uint64)[0])
    return len(slots) if last + 1 + event_count <= len(slots) else last


class PipelineSource:
    """Batches of whole commands from a running Pipeline; ``close`` ends them."""

    __slots__ = ("_pipeline", "_carry", "_closed", "_woken", "_loop", "_busy")

    #: the writer asks for the next batch only when it can write it: the batch is cut when a
    #: commit returns (group commit), so it holds everything that arrived meanwhile
    cut_at_commit = True

    def __init__(self, pipeline, busy: Callable[[], bool] | None = None) -> None:
        self._pipeline = pipeline
        self._busy = busy
        self._carry = _EMPTY
        self._closed = False
        self._woken = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pipeline.wake_fd, self._on_wake)

    def _on_wake(self) -> None:
        self._pipeline.clear_wakeup()
        self._woken.set()

    def wake(self) -> None:
        """Re-check now (the writer became free)."""
        self._woken.set()

    def close(self) -> None:
        """No more batches once what the core has produced is drained."""
        self._closed = True
        self._woken.set()

    def detach(self) -> None:
        self._loop.remove_reader(self._pipeline.wake_fd)

    def _fill(self, slots: np.ndarray, complete: int, max_records: int) -> tuple[np.ndarray, int]:
        """Drain what fits after ``slots``; (slots, how many leading slots are whole commands).
        Without one whole command yet, drain past the bound: one command's events may."""
        room = max_records - len(slots) if complete else max(max_records, 1 << 12)
        if room > 0:
            fresh = self._pipeline.drain(room)
            if len(fresh):
                slots = np.concatenate([slots, fresh]) if len(slots) else fresh
                complete = complete_prefix(slots)
        return slots, complete

    def _keep(self, slots: np.ndarray) -> None:
        self._carry = slots
        return None

    def _cut(self, slots: np.ndarray, complete: int) -> Batch:
        self._carry = slots[complete:]
        commands, events = split_slots(slots[:complete])
        return Batch(commands, events)

    async def next_batch(self, max_records: int, max_delay_s: float) -> Batch | None:
        slots = self._carry
        complete = complete_prefix(slots)
        first_at = time.monotonic() if len(slots) else None
        while True:
            had = len(slots)
            slots, complete = self._fill(slots, complete, max_records)
            if len(slots) > had:
                first_at = first_at or time.monotonic()
            if complete and (len(slots) >= max_records or
                             time.monotonic() - first_at >= max_delay_s or
                             (self._busy is not None and not self._busy())):
                break
            if self._closed and not self._pipeline.running and self._pipeline.output_depth == 0:
                if complete == 0:
                    return self._keep(slots)
                break
            remaining_s = None if first_at is None else max_delay_s - (time.monotonic() - first_at)
            if complete and self._busy is not None and not self._closed:
                # Whole commands are here and the writer is busy: nothing to do until its
                # commit returns (wake) or the delay bound. New records can wait in the ring;
                # watching them would only keep the loop from handling that commit.
                await self._wait_for_writer(remaining_s)
            else:
                await self._wait(remaining_s)
        return self._cut(slots, complete)

    async def _wait_for_writer(self, timeout_s: float) -> None:
        self._woken.clear()
        if timeout_s <= 0:
            return
        try:
            await asyncio.wait_for(self._woken.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def _wait(self, timeout_s: float | None) -> None:
        self._woken.clear()
        if self._pipeline.arm_wakeup() > 0:
            await asyncio.sleep(0)  # always let the loop run: the commit reply may be waiting
            return
        if timeout_s is not None and timeout_s <= 0:
            return
        try:
            await asyncio.wait_for(self._woken.wait(), timeout_s if timeout_s is not None else 0.05)
        except asyncio.TimeoutError:
            pass
