# The pipeline of DESIGN.md between the gateway and the journal:
#
#   submit() --input ring--> core thread (Engine.apply_one, no GIL) --output ring--> drain()
#
# The input ring carries 96-byte Command records. The output ring carries 128-byte slots: each
# command (its 96 bytes, then the number of events that follow as a uint64 at offset 96, then
# 24 zero bytes) followed by the Event records it produced, so the journal writer sees every
# command next to its events and can tell whether it holds all of them. The kind byte at
# offset 16 tells the slots apart (commands 1-63, events 64-127).
#
# Waiting. With the input empty, the core thread spins briefly, then blocks on an eventfd of its
# own (`core_waiting` set, the ring re-checked, then poll with a PIPELINE_IDLE_WAIT_MS bound):
# submit() writes that fd once when the flag is set, and stop/pause/abort write it too. An idle
# core then costs nothing, and does not wake (and preempt the loop or PostgreSQL on a small
# machine) every few tens of microseconds. With the output full it spins, then sleeps
# PIPELINE_IDLE_SLEEP_NS at a time; it never blocks on Python. Backpressure: a full output ring
# stalls the core thread, the input ring then fills, and submit() returns fewer records than
# offered. The consumer (an asyncio task) is woken without busy-spinning the loop through an
# eventfd: it sets `consumer_waiting`, re-checks the ring, and only then waits on the fd; the
# core thread, after publishing, writes the fd once if the flag was set (and clears it).
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset
from posix.time cimport nanosleep, timespec
from atomics cimport (
    mc_cpu_relax, mc_exchange_int, mc_full_fence, mc_load_acquire_int, mc_load_relaxed_u64,
    mc_store_relaxed_u64, mc_store_release_int,
)
from engine cimport EventBuffer, event_buffer_clear, event_buffer_free, event_buffer_init
from pipeline cimport CoreControl

cdef extern from "unistd.h" nogil:
    ssize_t c_write "write" (int fd, const void* buf, size_t count)
    ssize_t c_read "read" (int fd, void* buf, size_t count)

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int c_poll "poll" (pollfd* fds, unsigned long nfds, int timeout)
    short POLLIN

# Tunables, units in the names.
cdef enum:
    PIPELINE_SLOT_BYTES = 128
    PIPELINE_INPUT_BATCH_RECORDS = 256
    PIPELINE_SPIN_COUNT = 64
    PIPELINE_IDLE_SLEEP_NS = 50000
    PIPELINE_IDLE_WAIT_MS = 10

# Why the core thread stopped. Numbers are never reused.
cdef enum CoreExit:
    CORE_EXIT_RUNNING = 0
    CORE_EXIT_STOPPED = 1
    CORE_EXIT_OUT_OF_MEMORY = 2
    CORE_EXIT_ABORTED = 3
    CORE_EXIT_INJECTED_FAULT = 4

import os as _os

from matchcore.errors import MatchcoreError as _MatchcoreError
import threading as _threading
import time as _time

import numpy as _np

from matchcore.core.records import KIND_OFFSET as _KIND_OFFSET

OUTPUT_SLOT_BYTES = PIPELINE_SLOT_BYTES
_EMPTY_SLOTS = _np.empty((0, PIPELINE_SLOT_BYTES), dtype=_np.uint8)
_EMPTY_SLOTS.flags.writeable = False


class CoreThreadError(_MatchcoreError, RuntimeError):
    """The core thread stopped on an error; the pipeline must not be used further."""


cdef inline void core_idle(uint64_t* spins) noexcept nogil:
    """Spin a little (cheap wake-up), then sleep (leave the core to the other threads)."""
    cdef timespec pause
    spins[0] += 1
    if spins[0] < PIPELINE_SPIN_COUNT:
        mc_cpu_relax()
        return
    pause.tv_sec = 0
    pause.tv_nsec = PIPELINE_IDLE_SLEEP_NS
    nanosleep(&pause, NULL)


cdef void core_wait_input(RecordRing* input, CoreControl* control, uint64_t* spins) noexcept nogil:
    """The input is empty: spin a little (a burst may follow), then block until submit (or
    stop, pause, abort) writes the core's eventfd, or PIPELINE_IDLE_WAIT_MS pass."""
    cdef const uint8_t* first
    cdef pollfd waiter
    cdef uint64_t counter
    spins[0] += 1
    if spins[0] < PIPELINE_SPIN_COUNT:
        mc_cpu_relax()
        return
    mc_store_release_int(&control.core_waiting, 1)
    mc_full_fence()  # the flag must be visible before we look at the ring (submit: the reverse)
    if (ring_peek(input, 1, &first) == 0 and not mc_load_acquire_int(&control.stop_requested)
            and not mc_load_acquire_int(&control.pause_requested)
            and not mc_load_acquire_int(&control.abort_requested)):
        waiter.fd = control.core_wake_fd
        waiter.events = POLLIN
        waiter.revents = 0
        c_poll(&waiter, 1, PIPELINE_IDLE_WAIT_MS)
        c_read(control.core_wake_fd, &counter, 8)  # non-blocking: empties the counter
    mc_store_release_int(&control.core_waiting, 0)
    spins[0] = 0


cdef inline void core_wake_core(CoreControl* control, bint always) noexcept nogil:
    """Producer side: wake the core thread if it is blocked (always: whatever the flag)."""
    cdef uint64_t one = 1
    mc_full_fence()  # the publish must be visible before we look at the flag
    if always or (mc_load_acquire_int(&control.core_waiting)
                  and mc_exchange_int(&control.core_waiting, 0)):
        c_write(control.core_wake_fd, &one, 8)


cdef inline void core_wake_consumer(CoreControl* control) noexcept nogil:
    cdef uint64_t one = 1
    mc_full_fence()  # the publish must be visible before we look at the flag
    if mc_load_acquire_int(&control.consumer_waiting):
        if mc_exchange_int(&control.consumer_waiting, 0):
            c_write(control.wake_fd, &one, 8)


cdef int core_push_slots(RecordRing* output, CoreControl* control, const uint8_t* source,
                         uint64_t count) noexcept nogil:
    """Copy count 128-byte slots into the output ring, waiting while it is full.
    Returns 0, or CORE_EXIT_ABORTED if an abort came while waiting."""
    cdef uint64_t written = 0
    cdef uint64_t run
    cdef uint64_t spins = 0
    while True:
        run = ring_push_copy(output, source + written * PIPELINE_SLOT_BYTES, count - written)
        written += run
        if written == count:
            return 0
        if run:
            spins = 0
        core_wake_consumer(control)
        if mc_load_acquire_int(&control.abort_requested):
            return CORE_EXIT_ABORTED
        core_idle(&spins)


cdef int core_emit_command(RecordRing* output, CoreControl* control, const Command* command,
                           EventBuffer* events) noexcept nogil:
    """The command's slot, then its events, into the output ring: written in place and
    published at once when the ring has them room in one run (the usual case), else slot by
    slot, waiting for room."""
    cdef uint64_t total = 1 + events.count
    cdef uint8_t* first
    if ring_claim(output, total, &first) == total:
        memcpy(first, command, sizeof(Command))
        (<uint64_t*>(first + sizeof(Command)))[0] = events.count
        memset(first + sizeof(Command) + sizeof(uint64_t), 0,
               PIPELINE_SLOT_BYTES - sizeof(Command) - sizeof(uint64_t))
        if events.count > 0:
            memcpy(first + PIPELINE_SLOT_BYTES, events.data, events.count * PIPELINE_SLOT_BYTES)
        ring_publish(output, total)
        return 0
    # at the ring's end or short of room: the claim is dropped (claiming again is harmless)
    cdef uint8_t slot[PIPELINE_SLOT_BYTES]
    memset(slot, 0, PIPELINE_SLOT_BYTES)
    memcpy(slot, command, sizeof(Command))
    (<uint64_t*>(slot + sizeof(Command)))[0] = events.count
    cdef int status = core_push_slots(output, control, slot, 1)
    if status != 0:
        return status
    if events.count > 0:
        status = core_push_slots(output, control, <const uint8_t*>events.data, events.count)
    return status


cdef void core_park(CoreControl* control) noexcept nogil:
    """Between batches: say so, and wait until Python lets go (or asks us to stop)."""
    cdef uint64_t spins = 0
    mc_store_release_int(&control.paused, 1)
    while mc_load_acquire_int(&control.pause_requested) and \
            not mc_load_acquire_int(&control.abort_requested):
        core_idle(&spins)
    mc_store_release_int(&control.paused, 0)


cdef int core_loop(Engine engine, RecordRing* input, RecordRing* output,
                   CoreControl* control) noexcept nogil:
    """The core thread: apply commands in order until asked to stop. Returns a CoreExit."""
    cdef EventBuffer events
    cdef const uint8_t* first
    cdef const Command* command
    cdef uint64_t count, index, spins = 0
    # Counters only this thread writes: kept here, published once per input batch (plain
    # stores; a locked add per command bought nothing and cost two locked instructions).
    cdef uint64_t applied = control.commands_applied
    cdef uint64_t emitted = control.events_emitted
    cdef uint64_t last_seq = control.last_applied_seq
    cdef int status = CORE_EXIT_STOPPED
    if event_buffer_init(&events, 1024) != 0:
        return CORE_EXIT_OUT_OF_MEMORY
    while True:
        if mc_load_acquire_int(&control.pause_requested):
            core_park(control)
            continue
        count = ring_peek(input, PIPELINE_INPUT_BATCH_RECORDS, &first)
        if count == 0:
            if mc_load_acquire_int(&control.stop_requested):
                break
            core_wait_input(input, control, &spins)
            continue
        spins = 0
        for index in range(count):
            if control.fault_after_commands != 0 and applied + 1 >= control.fault_after_commands:
                status = CORE_EXIT_INJECTED_FAULT
                break
            command = <const Command*>(first + index * sizeof(Command))
            event_buffer_clear(&events)
            # the engine's own prefetch of later commands' orders hides cache misses
            engine.prefetch_ahead(<const Command*>first, count, index)
            if engine.apply_one(command, &events) != 0:
                status = CORE_EXIT_OUT_OF_MEMORY
                break
            status = core_emit_command(output, control, command, &events)
            if status != 0:
                break
            status = CORE_EXIT_STOPPED
            last_seq = command.seq
            applied += 1
            emitted += events.count
        # relaxed: pause() reads last_applied_seq after the release store of `paused`
        mc_store_relaxed_u64(&control.last_applied_seq, last_seq)
        mc_store_relaxed_u64(&control.commands_applied, applied)
        mc_store_relaxed_u64(&control.events_emitted, emitted)
        if status != CORE_EXIT_STOPPED:
            break
        ring_release(input, count)
        core_wake_consumer(control)
    event_buffer_free(&events)
    core_wake_consumer(control)
    return status


cdef class Pipeline:
    """Input ring -> core thread -> output ring, around one Engine.

    ``submit`` stamps commands with the next sequence numbers and a time stamp and writes them
    into the input ring; ``drain`` reads output slots (each command followed by its events).
    One thread may submit and one (possibly another) may drain. Fields: _core.pxd.
    """

    def __cinit__(self, Engine engine, Py_ssize_t input_ring_capacity_records=1 << 16,
                  Py_ssize_t output_ring_capacity_records=1 << 18, uint64_t next_seq=1):
        cdef RingArgumentError error = ring_arguments_check(sizeof(Command), input_ring_capacity_records)
        if error != RING_ARGUMENTS_OK:
            raise ValueError(ring_argument_error_text(error, sizeof(Command), input_ring_capacity_records))
        error = ring_arguments_check(PIPELINE_SLOT_BYTES, output_ring_capacity_records)
        if error != RING_ARGUMENTS_OK:
            raise ValueError(ring_argument_error_text(error, PIPELINE_SLOT_BYTES, output_ring_capacity_records))
        if next_seq < 1:
            raise ValueError("next_seq must be >= 1")
        self.engine = engine
        self._input = ring_create(sizeof(Command), input_ring_capacity_records)
        self._output = ring_create(PIPELINE_SLOT_BYTES, output_ring_capacity_records)
        if self._input == NULL or self._output == NULL:
            raise MemoryError("cannot allocate the pipeline rings")
        memset(&self._control, 0, sizeof(CoreControl))
        self.wake_fd = _os.eventfd(0, _os.EFD_NONBLOCK | _os.EFD_CLOEXEC)
        self._control.wake_fd = self.wake_fd
        self._control.core_wake_fd = _os.eventfd(0, _os.EFD_NONBLOCK | _os.EFD_CLOEXEC)
        self.next_seq = next_seq
        self._control.last_applied_seq = next_seq - 1
        self._exit = CORE_EXIT_STOPPED
        self._thread = None

    def __dealloc__(self):
        if self._thread is not None and self._thread.is_alive():
            mc_store_release_int(&self._control.abort_requested, 1)
            mc_store_release_int(&self._control.stop_requested, 1)
            core_wake_core(&self._control, True)
            self._thread.join()
        if self._input != NULL:
            ring_destroy(self._input)
        if self._output != NULL:
            ring_destroy(self._output)
        if self.wake_fd > 0:
            _os.close(self.wake_fd)
        if self._control.core_wake_fd > 0:
            _os.close(self._control.core_wake_fd)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the core thread (again, after a stop)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the core thread is already running")
        self._raise_if_failed()
        mc_store_release_int(&self._control.stop_requested, 0)
        mc_store_release_int(&self._control.abort_requested, 0)
        self._exit = CORE_EXIT_RUNNING
        self._thread = _threading.Thread(target=self._run, name="matchcore-core", daemon=True)
        self._thread.start()

    def _run(self):
        cdef int status
        with nogil:
            status = core_loop(self.engine, self._input, self._output, &self._control)
        self._exit = status

    def stop(self, double timeout_s=10.0) -> None:
        """Apply everything submitted, then stop the core thread. If the output ring stays
        full (nobody drains) past timeout_s, abort the thread and raise CoreThreadError."""
        thread = self._thread  # one read: check() on another thread may clear the field
        if thread is None:
            return
        mc_store_release_int(&self._control.stop_requested, 1)
        core_wake_core(&self._control, True)
        thread.join(timeout_s)
        if thread.is_alive():
            mc_store_release_int(&self._control.abort_requested, 1)
            core_wake_core(&self._control, True)
            thread.join()
        self._thread = None
        self._raise_if_failed()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _raise_if_failed(self):
        if self._exit in (CORE_EXIT_RUNNING, CORE_EXIT_STOPPED):
            return
        names = {CORE_EXIT_OUT_OF_MEMORY: "out of memory growing the event buffer",
                 CORE_EXIT_ABORTED: "aborted while the output ring was full",
                 CORE_EXIT_INJECTED_FAULT: "injected fault (test hook)"}
        raise CoreThreadError(f"core thread stopped: {names.get(self._exit, self._exit)}")

    def check(self) -> None:
        """Raise CoreThreadError if the core thread died on an error."""
        if self._thread is not None and not self._thread.is_alive():
            self._thread = None
        if self._thread is None:
            self._raise_if_failed()

    def pause(self, double timeout_s=10.0) -> int:
        """Park the core thread between two commands; returns the seq of the last command it
        applied. While paused the engine may be read (snapshot) from this thread."""
        if not self.running:
            return self._control.last_applied_seq
        mc_store_release_int(&self._control.pause_requested, 1)
        core_wake_core(&self._control, True)
        deadline = _time.monotonic() + timeout_s
        while not mc_load_acquire_int(&self._control.paused):
            if not self.running:
                break
            if _time.monotonic() > deadline:
                mc_store_release_int(&self._control.pause_requested, 0)
                raise TimeoutError("the core thread did not pause")
            _time.sleep(0.00005)
        return self._control.last_applied_seq

    def resume(self) -> None:
        """Let a paused core thread go on."""
        mc_store_release_int(&self._control.pause_requested, 0)

    def request_pause(self) -> None:
        """Ask the core thread to park between two commands, and return at once: an event
        loop must not wait for the core (the core may be waiting for output ring room that
        only the loop makes). Poll ``paused``; then read the engine; then ``resume()``."""
        mc_store_release_int(&self._control.pause_requested, 1)
        core_wake_core(&self._control, True)

    @property
    def paused(self) -> bool:
        """True while the core thread is parked (after ``request_pause``), or not running:
        the engine may then be read from this thread, as of ``last_applied_seq``."""
        return not self.running or mc_load_acquire_int(&self._control.paused) != 0

    @property
    def last_applied_seq(self) -> int:
        """The seq of the last command the core thread applied (exact while ``paused``)."""
        return mc_load_relaxed_u64(&self._control.last_applied_seq)  # ordered by `paused`

    def inject_fault_after(self, uint64_t commands) -> None:
        """Test hook: make the core thread fail once it has applied this many commands."""
        self._control.fault_after_commands = commands

    # ------------------------------------------------------------------ producer side

    def submit(self, commands, int64_t timestamp_ns=-1) -> int:
        """Stamp and write commands into the input ring; returns how many fitted (the rest
        is backpressure: retry later). Sequence numbers continue from ``next_seq``."""
        cdef const uint8_t[::1] raw = _as_command_bytes(commands)
        cdef uint64_t offered = raw.shape[0] // sizeof(Command)
        cdef uint64_t written = 0, run, index
        cdef uint8_t* first
        cdef Command* command
        cdef int64_t stamp = _time.time_ns() if timestamp_ns < 0 else timestamp_ns
        # stamps never go down along seqs (GTD expiry and time-range reads rely on it): a
        # wall clock stepped back repeats the last stamp until it catches up
        if stamp < self.last_stamp_ns:
            stamp = self.last_stamp_ns
        self.check()
        with nogil:
            while written < offered:
                run = ring_claim(self._input, offered - written, &first)
                if run == 0:
                    break
                memcpy(first, &raw[written * sizeof(Command)], run * sizeof(Command))
                for index in range(run):
                    command = <Command*>(first + index * sizeof(Command))
                    command.seq = self.next_seq
                    command.timestamp_ns = stamp
                    self.next_seq += 1
                ring_publish(self._input, run)
                written += run
            if written:
                self.last_stamp_ns = stamp
                core_wake_core(&self._control, False)
        return written

    def submit_all(self, commands, double timeout_s=30.0) -> None:
        """Submit every command, waiting (sleeping, GIL released) while the input is full."""
        cdef Py_ssize_t done = 0
        cdef Py_ssize_t total = len(commands)
        deadline = _time.monotonic() + timeout_s
        while done < total:
            done += self.submit(commands[done:])
            if done < total:
                if _time.monotonic() > deadline:
                    raise TimeoutError(f"input ring full for {timeout_s} s")
                _time.sleep(0.0001)

    # ------------------------------------------------------------------ consumer side

    def drain(self, Py_ssize_t max_records=1 << 16):
        """Up to max_records output slots as a (n, 128) uint8 array (copy); see split_output."""
        if max_records <= 0:
            raise ValueError("max_records must be positive")
        # Size the copy by what is there (only this consumer removes records, so the depth is
        # a floor): an idle poll allocates nothing, a busy one no more than it returns.
        cdef uint64_t count = min(<uint64_t>max_records, ring_depth(self._output))
        if count == 0:
            self.check()
            return _EMPTY_SLOTS
        out = _np.empty((count, PIPELINE_SLOT_BYTES), dtype=_np.uint8)
        cdef uint8_t[:, ::1] view = out
        with nogil:
            count = ring_pop_copy(self._output, &view[0, 0], count)
        return out[:count]

    def arm_wakeup(self) -> int:
        """Consumer: ask to be woken through ``wake_fd``; returns the output depth after
        arming, so a caller that sees > 0 drains instead of waiting."""
        mc_store_release_int(&self._control.consumer_waiting, 1)
        mc_full_fence()
        return ring_depth(self._output)

    def clear_wakeup(self) -> None:
        """Consumer: after waking, empty the eventfd counter."""
        try:
            _os.eventfd_read(self.wake_fd)
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ metrics

    @property
    def input_depth(self) -> int:
        return ring_depth(self._input)

    @property
    def output_depth(self) -> int:
        return ring_depth(self._output)

    @property
    def input_ring_capacity_records(self) -> int:
        return self._input.capacity_records

    @property
    def output_ring_capacity_records(self) -> int:
        return self._output.capacity_records

    @property
    def commands_applied(self) -> int:
        return mc_load_relaxed_u64(&self._control.commands_applied)

    @property
    def events_emitted(self) -> int:
        return mc_load_relaxed_u64(&self._control.events_emitted)


cdef object _as_command_bytes(object commands):
    """A contiguous byte view of COMMAND_DTYPE records (or raw 96-byte records)."""
    array = _np.ascontiguousarray(commands)
    if array.dtype.itemsize != sizeof(Command) and array.dtype != _np.uint8:
        raise TypeError("commands must be COMMAND_DTYPE records")
    return array.view(_np.uint8).reshape(-1)


def split_slots(slots):
    """Split drained (n, 128) slots into (commands, events): COMMAND_DTYPE and EVENT_DTYPE
    arrays (copies)."""
    is_command = slots[:, _KIND_OFFSET] < 64
    commands = _np.ascontiguousarray(slots[is_command, :sizeof(Command)]).view(_ENGINE_COMMAND_DTYPE).reshape(-1)
    events = _np.ascontiguousarray(slots[~is_command]).view(_ENGINE_EVENT_DTYPE).reshape(-1)
    return commands, events


def split_output(slots):
    """``split_slots``, plus for each event the index of its command (for tests and tools;
    the journal needs only the two arrays)."""
    commands, events = split_slots(slots)
    is_command = slots[:, _KIND_OFFSET] < 64
    owner = _np.cumsum(is_command)[~is_command] - 1
    return commands, events, owner
