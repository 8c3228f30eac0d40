# The pipeline's shared C state (pipeline.pxi holds the code; the Pipeline class's fields are
# declared in _core.pxd). Python's threads and the core thread share it: the flags they signal
# each other with go through the atomics of atomics.h (acquire loads, release stores, the
# exchange that clears a waiting flag), the counters through relaxed 64-bit loads and stores.
from libc.stdint cimport uint64_t


cdef struct CoreControl:
    int stop_requested          # set by Python: finish the current input batch, then exit
    int abort_requested         # set by Python: leave even while waiting for output space
    int consumer_waiting        # set by the consumer before it sleeps on the eventfd
    int wake_fd                 # eventfd written to wake the consumer
    int core_waiting            # set by the core thread before it blocks on core_wake_fd
    int core_wake_fd            # eventfd written to wake the core thread
    int pause_requested         # set by Python: park between batches (for a snapshot)
    int paused                  # set by the core thread while parked
    uint64_t last_applied_seq   # seq of the last command applied (read while parked)
    uint64_t fault_after_commands  # test hook: fail after this many commands (0 = never)
    uint64_t commands_applied   # counters, relaxed: metrics only
    uint64_t events_emitted
