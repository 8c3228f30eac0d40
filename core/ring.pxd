# A single-producer single-consumer ring of fixed-width records in C memory: the input ring
# (gateway -> core) and the output ring (core -> journal writer) of DESIGN.md.
#
# The record size and the power-of-two capacity are fixed at creation (ring_create in
# ring.pxi); the only allocation happens there. One thread produces, one thread consumes;
# neither takes a lock or touches a Python object, so every function here runs nogil.
#
# Producer:  count = ring_claim(ring, count_max, &first)   contiguous free slots at first
#            ... write count records at first ...
#            ring_publish(ring, count)                      the consumer may now see them
# Consumer:  count = ring_peek(ring, count_max, &first)     contiguous records at first
#            ... read count records at first ...
#            ring_release(ring, count)                      the producer may now reuse them
#
# A run never wraps past the end of the buffer: claim and peek return the contiguous part,
# and a caller wanting more loops (ring_push_copy and ring_pop_copy show the loop). Claiming
# or peeking again before publishing or releasing returns the same slots. Each side keeps a
# cached copy of the other side's index and pays the cross-core load only when that copy
# says the ring is full (producer) or empty (consumer).
#
# Indices count records since creation and are never reduced; the slot is index & index_mask.
# At 10^9 records/s a uint64_t index wraps after 584 years, so wrap-around is not handled.
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcpy

from atomics cimport (
    mc_check, mc_cpu_relax, mc_load_acquire_u64, mc_load_relaxed_u64, mc_store_release_u64,
)

# Limits, checked by ring_arguments_check before anything is allocated.
cdef enum:
    RING_CACHE_LINE_BYTES = 64
    RING_RECORD_SIZE_MAX_BYTES = 4096
    RING_CAPACITY_MAX_RECORDS = 1 << 24

# Why ring_create refused its arguments; 0 means it did not. Numbers are never reused.
cdef enum RingArgumentError:
    RING_ARGUMENTS_OK = 0
    RING_RECORD_SIZE_NOT_POSITIVE = 1
    RING_RECORD_SIZE_NOT_MULTIPLE_OF_8 = 2
    RING_RECORD_SIZE_ABOVE_MAXIMUM = 3
    RING_CAPACITY_BELOW_2 = 4
    RING_CAPACITY_NOT_POWER_OF_TWO = 5
    RING_CAPACITY_ABOVE_MAXIMUM = 6

# 192 bytes, allocated 64-byte aligned so each group below owns one cache line: the
# producer's stores never invalidate the consumer's line and the other way round.
ctypedef struct RecordRing:
    # Line 0: set by ring_create, read-only afterwards, so both cores keep it cached.
    uint8_t* records              # capacity_records * record_size_bytes, 64-byte aligned
    uint64_t capacity_records     # a power of two
    uint64_t index_mask           # capacity_records - 1: slot = index & index_mask
    uint64_t record_size_bytes    # a multiple of 8, so every record is 8-byte aligned
    uint8_t padding_config[32]
    # Line 1: written by the producer only.
    uint64_t write_index          # records published; release-stored by ring_publish
    uint64_t read_index_cached    # the producer's last acquire-load of read_index
    uint8_t padding_producer[48]
    # Line 2: written by the consumer only.
    uint64_t read_index           # records released; release-stored by ring_release
    uint64_t write_index_cached   # the consumer's last acquire-load of write_index
    uint8_t padding_consumer[48]


cdef inline uint64_t ring_claim(RecordRing* ring, uint64_t count_max,
                                uint8_t** first) noexcept nogil:
    """Producer: up to count_max free slots in one contiguous run at first[0]; how many."""
    cdef uint64_t write_index = mc_load_relaxed_u64(&ring.write_index)
    cdef uint64_t slot = write_index & ring.index_mask
    cdef uint64_t free_count = ring.capacity_records - (write_index - ring.read_index_cached)
    if free_count == 0:
        # Only a full cached view is worth a load of the consumer's (contended) line.
        ring.read_index_cached = mc_load_acquire_u64(&ring.read_index)
        free_count = ring.capacity_records - (write_index - ring.read_index_cached)
    cdef uint64_t count = ring.capacity_records - slot
    if free_count < count:
        count = free_count
    if count_max < count:
        count = count_max
    first[0] = ring.records + slot * ring.record_size_bytes
    return count


cdef inline void ring_publish(RecordRing* ring, uint64_t count) noexcept nogil:
    """Producer: make the first count claimed records visible to the consumer."""
    cdef uint64_t write_index = mc_load_relaxed_u64(&ring.write_index)
    # Always on (cheap: two compares on fields this line already holds): publishing more than
    # was claimed would hand the consumer records the producer never wrote.
    mc_check(write_index + count - ring.read_index_cached <= ring.capacity_records,
             "ring_publish beyond the claimed space")
    mc_check((write_index & ring.index_mask) + count <= ring.capacity_records,
             "ring_publish past the end of the claimed run")
    mc_store_release_u64(&ring.write_index, write_index + count)


cdef inline uint64_t ring_peek(RecordRing* ring, uint64_t count_max,
                               const uint8_t** first) noexcept nogil:
    """Consumer: up to count_max records in one contiguous run at first[0]; how many."""
    cdef uint64_t read_index = mc_load_relaxed_u64(&ring.read_index)
    cdef uint64_t slot = read_index & ring.index_mask
    cdef uint64_t available_count = ring.write_index_cached - read_index
    if available_count == 0:
        # Only an empty cached view is worth a load of the producer's (contended) line.
        ring.write_index_cached = mc_load_acquire_u64(&ring.write_index)
        available_count = ring.write_index_cached - read_index
    cdef uint64_t count = ring.capacity_records - slot
    if available_count < count:
        count = available_count
    if count_max < count:
        count = count_max
    first[0] = ring.records + slot * ring.record_size_bytes
    return count


cdef inline void ring_release(RecordRing* ring, uint64_t count) noexcept nogil:
    """Consumer: hand the first count peeked slots back to the producer."""
    cdef uint64_t read_index = mc_load_relaxed_u64(&ring.read_index)
    # Always on (cheap, as in ring_publish): releasing more than was peeked would let the
    # producer overwrite records the consumer has not read.
    mc_check(read_index + count <= ring.write_index_cached,
             "ring_release beyond the peeked records")
    mc_check((read_index & ring.index_mask) + count <= ring.capacity_records,
             "ring_release past the end of the peeked run")
    mc_store_release_u64(&ring.read_index, read_index + count)


cdef inline uint64_t ring_depth(RecordRing* ring) noexcept nogil:
    """Records published and not yet released; safe from any thread (metrics)."""
    # read_index first: it never passes write_index, so a later load of write_index is
    # never behind it. Both may move in between, hence the clamp to the capacity.
    cdef uint64_t read_index = mc_load_acquire_u64(&ring.read_index)
    cdef uint64_t write_index = mc_load_acquire_u64(&ring.write_index)
    cdef uint64_t depth_records = write_index - read_index
    if depth_records > ring.capacity_records:
        depth_records = ring.capacity_records
    return depth_records


cdef inline uint64_t ring_push_copy(RecordRing* ring, const uint8_t* source,
                                    uint64_t count_max) noexcept nogil:
    """Producer: copy up to count_max packed records in; how many fitted (0 when full)."""
    cdef uint64_t written_count = 0
    cdef uint64_t count
    cdef uint8_t* first
    while written_count < count_max:
        count = ring_claim(ring, count_max - written_count, &first)
        if count == 0:
            break
        memcpy(first, source + written_count * ring.record_size_bytes,
               count * ring.record_size_bytes)
        ring_publish(ring, count)
        written_count += count
    return written_count


cdef inline uint64_t ring_pop_copy(RecordRing* ring, uint8_t* destination,
                                   uint64_t count_max) noexcept nogil:
    """Consumer: copy up to count_max records out, packed; how many (0 when empty)."""
    cdef uint64_t read_count = 0
    cdef uint64_t count
    cdef const uint8_t* first
    while read_count < count_max:
        count = ring_peek(ring, count_max - read_count, &first)
        if count == 0:
            break
        memcpy(destination + read_count * ring.record_size_bytes, first,
               count * ring.record_size_bytes)
        ring_release(ring, count)
        read_count += count
    return read_count


# ring_transfer (ring.pxi): one thread's work and what it saw. Written by its thread only; read
# after join.
cdef struct TransferSide:
    RecordRing* ring
    uint64_t records_total
    const uint64_t* batch_sizes       # records per claim or peek, cycled
    uint64_t batch_sizes_count
    int64_t deadline_ns               # CLOCK_MONOTONIC; give up after it
    uint64_t records_done
    uint64_t waits                    # times the ring was found full (producer) or empty
    uint64_t bad_records              # consumer: records not matching their pattern
    uint64_t first_bad_sequence       # consumer: valid when bad_records > 0
    uint64_t checksum                 # consumer: sum of every word, mod 2**64
    int64_t started_ns
    int64_t finished_ns
    bint timed_out
