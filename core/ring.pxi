# The SPSC record ring (declared with its hot-path helpers in ring.pxd): creation and
# destruction, the Python wrapper `Ring` for tests and benchmarks, and `ring_transfer`, which
# drives a ring from two real threads without the GIL (the ordering tests and `bench ring`).
# The fields of Ring and _TransferThread are declared in _core.pxd.
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memset
from posix.stdlib cimport posix_memalign
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ring cimport (
    RING_ARGUMENTS_OK, RING_CACHE_LINE_BYTES, RING_CAPACITY_ABOVE_MAXIMUM,
    RING_CAPACITY_BELOW_2, RING_CAPACITY_MAX_RECORDS, RING_CAPACITY_NOT_POWER_OF_TWO,
    RING_RECORD_SIZE_ABOVE_MAXIMUM, RING_RECORD_SIZE_MAX_BYTES,
    RING_RECORD_SIZE_NOT_MULTIPLE_OF_8, RING_RECORD_SIZE_NOT_POSITIVE, RecordRing,
    RingArgumentError, TransferSide, ring_claim, ring_depth, ring_peek, ring_pop_copy,
    ring_publish, ring_push_copy, ring_release,
)
from atomics cimport mc_check, mc_cpu_relax

import threading as _ring_threading

import numpy as _ring_np

cdef extern from "sched.h" nogil:
    int sched_yield() noexcept


# ---- creation -------------------------------------------------------------------------

cdef RingArgumentError ring_arguments_check(int64_t record_size_bytes,
                                            int64_t capacity_records) noexcept nogil:
    """The first reason the ring cannot be built with these arguments, or RING_ARGUMENTS_OK."""
    if record_size_bytes <= 0:
        return RING_RECORD_SIZE_NOT_POSITIVE
    if record_size_bytes % 8 != 0:
        return RING_RECORD_SIZE_NOT_MULTIPLE_OF_8
    if record_size_bytes > RING_RECORD_SIZE_MAX_BYTES:
        return RING_RECORD_SIZE_ABOVE_MAXIMUM
    if capacity_records < 2:
        return RING_CAPACITY_BELOW_2
    if capacity_records & (capacity_records - 1) != 0:
        return RING_CAPACITY_NOT_POWER_OF_TWO
    if capacity_records > RING_CAPACITY_MAX_RECORDS:
        return RING_CAPACITY_ABOVE_MAXIMUM
    return RING_ARGUMENTS_OK


cdef RecordRing* ring_create(int64_t record_size_bytes, int64_t capacity_records) noexcept nogil:
    """A new empty ring, or NULL when the arguments fail ring_arguments_check or memory is short.

    Header and records share one 64-byte aligned block, so destruction is one free. The
    whole block is written once here so its pages are faulted in now, not in the hot path.
    """
    if ring_arguments_check(record_size_bytes, capacity_records) != RING_ARGUMENTS_OK:
        return NULL
    cdef size_t records_bytes = <size_t>record_size_bytes * <size_t>capacity_records
    cdef size_t block_bytes = sizeof(RecordRing) + records_bytes
    cdef void* block = NULL
    if posix_memalign(&block, RING_CACHE_LINE_BYTES, block_bytes) != 0:
        return NULL
    memset(block, 0, block_bytes)
    cdef RecordRing* ring = <RecordRing*>block
    ring.records = <uint8_t*>block + sizeof(RecordRing)
    ring.capacity_records = capacity_records
    ring.index_mask = capacity_records - 1
    ring.record_size_bytes = record_size_bytes
    # always on (free: both sides are compile-time constants)
    mc_check(sizeof(RecordRing) % RING_CACHE_LINE_BYTES == 0, "header not whole lines")
    return ring


cdef void ring_destroy(RecordRing* ring) noexcept nogil:
    """Free a ring from ring_create; NULL is ignored. No thread may still be using it."""
    free(ring)


cdef str ring_argument_error_text(RingArgumentError error, Py_ssize_t record_size,
                                  Py_ssize_t capacity):
    if error == RING_RECORD_SIZE_NOT_POSITIVE:
        return f"record_size must be positive, got {record_size}"
    if error == RING_RECORD_SIZE_NOT_MULTIPLE_OF_8:
        return f"record_size must be a multiple of 8 bytes, got {record_size}"
    if error == RING_RECORD_SIZE_ABOVE_MAXIMUM:
        return f"record_size must be at most {RING_RECORD_SIZE_MAX_BYTES} bytes, got {record_size}"
    if error == RING_CAPACITY_BELOW_2:
        return f"capacity must be at least 2 records, got {capacity}"
    if error == RING_CAPACITY_NOT_POWER_OF_TWO:
        return f"capacity must be a power of two, got {capacity}"
    if error == RING_CAPACITY_ABOVE_MAXIMUM:
        return f"capacity must be at most {RING_CAPACITY_MAX_RECORDS} records, got {capacity}"
    return f"invalid ring arguments (error {<int>error})"


def ring_layout():
    """Size and field offsets of the C ring header, in bytes (the cache-line layout test)."""
    cdef RecordRing ring
    cdef char* base = <char*>&ring
    return {
        "header_size": sizeof(RecordRing),
        "cache_line_size": RING_CACHE_LINE_BYTES,
        "capacity_records": <char*>&ring.capacity_records - base,
        "write_index": <char*>&ring.write_index - base,
        "read_index_cached": <char*>&ring.read_index_cached - base,
        "read_index": <char*>&ring.read_index - base,
        "write_index_cached": <char*>&ring.write_index_cached - base,
    }


# ---- the Python wrapper ------------------------------------------------------------------

cdef object ring_records_as_bytes(object records, uint64_t record_size_bytes):
    """A flat uint8 view of a C-contiguous array of whole records, after checking its shape.

    Accepted: 1-D with itemsize == record size (COMMAND_DTYPE, EVENT_DTYPE), or 2-D whose
    rows are one record each (for example (n, 64) uint8 or (n, 8) uint64 for 64 bytes).
    """
    if not isinstance(records, _ring_np.ndarray):
        raise TypeError(f"records must be a numpy array, got {type(records).__name__}")
    if records.dtype.hasobject:
        raise TypeError("records must not hold Python objects")
    if not records.flags.c_contiguous:
        raise ValueError("records must be C-contiguous")
    if records.ndim == 1:
        row_bytes = records.dtype.itemsize
    elif records.ndim == 2:
        row_bytes = records.shape[1] * records.dtype.itemsize
    else:
        raise ValueError(f"records must be 1-D or 2-D, got {records.ndim}-D")
    if row_bytes != record_size_bytes:
        raise ValueError(f"records are {row_bytes} bytes wide, the ring's are {record_size_bytes}")
    return records.reshape(-1).view(_ring_np.uint8)


cdef class Ring:
    """A single-producer single-consumer ring of fixed-width records in C memory.

    Ring(record_size, capacity): record_size in bytes (a positive multiple of 8, at most
    4096), capacity in records (a power of two, 2 to 2**24). All memory is allocated here.
    One thread may push and one other thread may pop; the methods never block.
    """

    def __cinit__(self, Py_ssize_t record_size, Py_ssize_t capacity):
        cdef RingArgumentError error = ring_arguments_check(record_size, capacity)
        if error != RING_ARGUMENTS_OK:
            raise ValueError(ring_argument_error_text(error, record_size, capacity))
        self._ring = ring_create(record_size, capacity)
        if self._ring is NULL:
            raise MemoryError(f"cannot allocate a ring of {capacity} x {record_size} bytes")

    def __dealloc__(self):
        ring_destroy(self._ring)

    @property
    def record_size(self) -> int:
        """Bytes per record."""
        return self._ring.record_size_bytes

    @property
    def capacity(self) -> int:
        """Records the ring holds when full."""
        return self._ring.capacity_records

    @property
    def depth(self) -> int:
        """Records pushed and not yet popped (a snapshot when other threads are active)."""
        return ring_depth(self._ring)

    @property
    def transfer_running(self) -> bool:
        """True while ring_transfer's threads are producing into and consuming from it."""
        return self._transfer_running

    def __repr__(self):
        return (f"Ring(record_size={self.record_size}, capacity={self.capacity}, "
                f"depth={self.depth})")

    cdef int _check_idle(self) except -1:
        if self._transfer_running:
            raise RuntimeError("ring_transfer is using this ring; it has one producer and one consumer")
        return 0

    def try_push(self, records) -> int:
        """Copy the leading records that fit; return how many (0 when full). Never overwrites."""
        cdef const uint8_t[::1] source = ring_records_as_bytes(records, self._ring.record_size_bytes)
        self._check_idle()
        cdef uint64_t count = source.shape[0] // self._ring.record_size_bytes
        if count == 0:
            return 0
        return ring_push_copy(self._ring, &source[0], count)

    def pop(self, Py_ssize_t max_n, dtype=None):
        """Copy out up to max_n records, oldest first.

        Returns a 2-D uint8 array (n, record_size), or a 1-D array of dtype when one is given
        (its itemsize must equal record_size).
        """
        if max_n < 0:
            raise ValueError(f"max_n must not be negative, got {max_n}")
        if dtype is not None and _ring_np.dtype(dtype).itemsize != self._ring.record_size_bytes:
            raise ValueError(f"dtype {dtype!r} is not {self._ring.record_size_bytes} bytes wide")
        self._check_idle()
        cdef uint64_t count = min(<uint64_t>max_n, ring_depth(self._ring))
        records = _ring_np.empty((count, self._ring.record_size_bytes), dtype=_ring_np.uint8)
        cdef uint8_t[:, ::1] destination = records
        if count > 0:
            count = ring_pop_copy(self._ring, &destination[0, 0], count)
        if dtype is None:
            return records
        return records.reshape(-1).view(dtype)

    def pop_into(self, out) -> int:
        """Copy out as many records as out holds and the ring has; return how many."""
        cdef uint8_t[::1] destination = ring_records_as_bytes(out, self._ring.record_size_bytes)
        self._check_idle()
        cdef uint64_t count = destination.shape[0] // self._ring.record_size_bytes
        if count == 0:
            return 0
        return ring_pop_copy(self._ring, &destination[0], count)


# ---- two threads, no GIL: ring_transfer -----------------------------------------------------
#
# The producer writes records 0, 1, 2, ... in a pattern that makes every 8-byte word
# checkable: word 0 is the sequence number s, word k >= 1 is s * RING_PATTERN_MULTIPLIER + k
# (mod 2**64). The consumer checks every word, so loss, duplication, reordering and torn or
# overwritten records all show, and sums all words into a checksum the caller can predict.

cdef extern from *:
    """
    #define MC_RING_PATTERN_MULTIPLIER 0x9E3779B97F4A7C15ULL
    """
    uint64_t RING_PATTERN_MULTIPLIER "MC_RING_PATTERN_MULTIPLIER"

cdef enum:
    # Spin this many times with a pause hint before yielding the core: on this 2-core
    # machine the other side may be descheduled, and spinning would only delay it.
    TRANSFER_SPINS_BEFORE_YIELD = 256
    # While records flow, read the clock once per this many batches (a power of two).
    TRANSFER_BATCHES_PER_CLOCK_CHECK = 4096

cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return <int64_t>now.tv_sec * 1000000000 + now.tv_nsec


cdef bint transfer_wait(uint64_t* spins, int64_t deadline_ns) noexcept nogil:
    """Wait a little for the other side; true once the deadline has passed."""
    spins[0] += 1
    if spins[0] < TRANSFER_SPINS_BEFORE_YIELD:
        mc_cpu_relax()
        return False
    sched_yield()
    return monotonic_ns() > deadline_ns


cdef inline bint transfer_overdue(TransferSide* side, uint64_t batch_index) noexcept nogil:
    """True, now and then, once the deadline has passed while records still flow."""
    if batch_index & (TRANSFER_BATCHES_PER_CLOCK_CHECK - 1) != 0:
        return False
    return monotonic_ns() > side.deadline_ns


cdef inline void pattern_fill(uint8_t* first, uint64_t count, uint64_t sequence,
                              uint64_t words_per_record) noexcept nogil:
    cdef uint64_t* word = <uint64_t*>first
    cdef uint64_t index, k, base
    for index in range(count):
        base = (sequence + index) * RING_PATTERN_MULTIPLIER
        word[0] = sequence + index
        for k in range(1, words_per_record):
            word[k] = base + k
        word += words_per_record


cdef inline uint64_t pattern_check(const uint8_t* first, uint64_t count, uint64_t sequence,
                                   uint64_t words_per_record, uint64_t* checksum) noexcept nogil:
    """How many of count records differ from the pattern of their sequence number."""
    cdef const uint64_t* word = <const uint64_t*>first
    cdef uint64_t bad_count = 0
    cdef uint64_t total = checksum[0]
    cdef uint64_t index, k, base, mismatch
    for index in range(count):
        base = (sequence + index) * RING_PATTERN_MULTIPLIER
        mismatch = word[0] ^ (sequence + index)
        total += word[0]
        for k in range(1, words_per_record):
            mismatch |= word[k] ^ (base + k)
            total += word[k]
        bad_count += mismatch != 0
        word += words_per_record
    checksum[0] = total
    return bad_count


cdef uint64_t pattern_first_bad(const uint8_t* first, uint64_t count, uint64_t sequence,
                                uint64_t words_per_record) noexcept nogil:
    """The sequence number whose record is the first bad one of a run known to hold one."""
    cdef uint64_t scratch = 0
    cdef uint64_t index
    for index in range(count):
        if pattern_check(first + index * words_per_record * 8, 1, sequence + index,
                         words_per_record, &scratch):
            return sequence + index
    return sequence + count


cdef inline uint64_t transfer_batch(TransferSide* side, uint64_t batch_index) noexcept nogil:
    """The next claim or peek size: the cycled batch size, capped by what remains."""
    cdef uint64_t size = side.batch_sizes[batch_index % side.batch_sizes_count]
    cdef uint64_t remaining = side.records_total - side.records_done
    return size if size < remaining else remaining


cdef void transfer_produce(TransferSide* side) noexcept nogil:
    cdef RecordRing* ring = side.ring
    cdef uint64_t words_per_record = ring.record_size_bytes // 8
    cdef uint64_t batch_index = 0, spins = 0, count
    cdef uint8_t* first
    side.started_ns = monotonic_ns()
    while side.records_done < side.records_total:
        count = ring_claim(ring, transfer_batch(side, batch_index), &first)
        if count == 0:
            side.waits += spins == 0
            if transfer_wait(&spins, side.deadline_ns):
                side.timed_out = True
                break
            continue
        spins = 0
        batch_index += 1
        pattern_fill(first, count, side.records_done, words_per_record)
        ring_publish(ring, count)
        side.records_done += count
        if transfer_overdue(side, batch_index):
            side.timed_out = True
            break
    side.finished_ns = monotonic_ns()


cdef void transfer_consume(TransferSide* side) noexcept nogil:
    cdef RecordRing* ring = side.ring
    cdef uint64_t words_per_record = ring.record_size_bytes // 8
    cdef uint64_t batch_index = 0, spins = 0, count, bad_count
    cdef const uint8_t* first
    side.started_ns = monotonic_ns()
    while side.records_done < side.records_total:
        count = ring_peek(ring, transfer_batch(side, batch_index), &first)
        if count == 0:
            side.waits += spins == 0
            if transfer_wait(&spins, side.deadline_ns):
                side.timed_out = True
                break
            continue
        spins = 0
        batch_index += 1
        bad_count = pattern_check(first, count, side.records_done, words_per_record,
                                  &side.checksum)
        if bad_count != 0 and side.bad_records == 0:
            side.first_bad_sequence = pattern_first_bad(first, count, side.records_done,
                                                        words_per_record)
        side.bad_records += bad_count
        ring_release(ring, count)
        side.records_done += count
        if transfer_overdue(side, batch_index):
            side.timed_out = True
            break
    side.finished_ns = monotonic_ns()


cdef class _TransferThread:
    """One side of a ring_transfer; holds the objects whose memory its C loop uses."""

    def produce(self):
        with nogil:
            transfer_produce(&self.side)

    def consume(self):
        with nogil:
            transfer_consume(&self.side)


cdef object transfer_batch_sizes(object batch_sizes, str name):
    sizes = _ring_np.asarray(batch_sizes)
    if sizes.ndim != 1 or sizes.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of sizes")
    if sizes.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got {sizes.dtype}")
    if sizes.min() < 1:
        raise ValueError(f"{name} must all be at least 1, got {sizes.min()}")
    return _ring_np.ascontiguousarray(sizes, dtype=_ring_np.uint64)


cdef _TransferThread transfer_thread(Ring ring, uint64_t records_total, object batch_sizes,
                                     str name, int64_t deadline_ns):
    cdef _TransferThread thread = _TransferThread()
    cdef const uint64_t[::1] sizes
    thread.ring = ring
    thread.batch_sizes = transfer_batch_sizes(batch_sizes, name)
    sizes = thread.batch_sizes
    memset(&thread.side, 0, sizeof(TransferSide))
    thread.side.ring = ring._ring
    thread.side.records_total = records_total
    thread.side.batch_sizes = &sizes[0]
    thread.side.batch_sizes_count = sizes.shape[0]
    thread.side.deadline_ns = deadline_ns
    return thread


def ring_transfer(Ring ring not None, records_total, producer_batch_sizes,
                  consumer_batch_sizes, double timeout_s=60.0) -> dict:
    """Push records_total pattern records through an empty ring from one thread to another.

    Both threads run without the GIL. The producer claims and the consumer peeks in batches
    whose sizes cycle through the given sequences (capped by what remains and by the
    contiguous run). Every word of every record is checked on arrival. Returns a dict:
    records_produced, records_consumed, bad_records, first_bad_sequence (None if none),
    checksum (sum of all words mod 2**64), elapsed_ns (producer start to consumer end),
    producer_full_waits, consumer_empty_waits, timed_out. Both sides stop at timeout_s
    after the call, finished or not, so a broken ring fails a test instead of hanging it.
    """
    if records_total < 0:
        raise ValueError(f"records_total must not be negative, got {records_total}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    ring._check_idle()
    if ring.depth != 0:
        raise ValueError(f"the ring must start empty, it holds {ring.depth} records")
    cdef int64_t deadline_ns = monotonic_ns() + <int64_t>(timeout_s * 1e9)
    producer = transfer_thread(ring, records_total, producer_batch_sizes,
                               "producer_batch_sizes", deadline_ns)
    consumer = transfer_thread(ring, records_total, consumer_batch_sizes,
                               "consumer_batch_sizes", deadline_ns)
    threads = [
        _ring_threading.Thread(target=consumer.consume, name="ring-consumer"),
        _ring_threading.Thread(target=producer.produce, name="ring-producer"),
    ]
    ring._transfer_running = True
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        ring._transfer_running = False
    return transfer_result(&producer.side, &consumer.side)


cdef dict transfer_result(TransferSide* producer, TransferSide* consumer):
    return {
        "records_produced": producer.records_done,
        "records_consumed": consumer.records_done,
        "bad_records": consumer.bad_records,
        "first_bad_sequence": consumer.first_bad_sequence if consumer.bad_records else None,
        "checksum": consumer.checksum,
        "elapsed_ns": consumer.finished_ns - producer.started_ns,
        "producer_full_waits": producer.waits,
        "consumer_empty_waits": consumer.waits,
        "timed_out": bool(producer.timed_out or consumer.timed_out),
    }
