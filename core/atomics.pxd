# Cython's view of core/atomics.h: the atomics of the ring indices and of the pipeline's
# control flags, the spin hint, and the checks. Which check is which:
#
#   mc_check        always on, release build included: cheap checks of arguments and
#                   invariants (one compare and a never-taken branch each).
#   MC_DEBUG_BUILD  1 only in the debug build (MATCHCORE_DEBUG=1 pip install .); guards the
#                   expensive checks, e.g. Engine.check_invariants after every command of
#                   Engine.apply. A plain `if MC_DEBUG_BUILD:` is folded away by the C compiler.
#
# A failed check prints what broke and aborts the process.
from libc.stdint cimport uint64_t

cdef extern from "atomics.h" nogil:
    uint64_t mc_load_acquire_u64(const uint64_t* index) noexcept
    uint64_t mc_load_relaxed_u64(const uint64_t* value) noexcept
    void mc_store_release_u64(uint64_t* index, uint64_t value) noexcept
    void mc_store_relaxed_u64(uint64_t* value, uint64_t new_value) noexcept
    int mc_load_acquire_int(const int* flag) noexcept
    void mc_store_release_int(int* flag, int value) noexcept
    int mc_exchange_int(int* flag, int value) noexcept
    void mc_full_fence() noexcept
    void mc_cpu_relax() noexcept
    bint MC_DEBUG_BUILD
    void mc_check(bint condition, const char* what) noexcept
