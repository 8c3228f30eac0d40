/* The C the ring needs that Cython cannot say: index loads and stores with an explicit
 * memory order, a CPU pause hint for spin loops, and the debug-build invariant check.
 *
 * Indices are plain uint64_t fields accessed only through these functions (GCC/Clang
 * __atomic builtins, the C11 memory model without _Atomic types, which Cython cannot
 * declare). A 64-bit aligned load or store is a single instruction on x86-64 and arm64,
 * so acquire/release costs no fence on x86 and only ldar/stlr on arm64.
 */
#ifndef MC_RING_ATOMICS_H
#define MC_RING_ATOMICS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The other side's index: pairs with mc_store_release so the records it covers are visible. */
static inline uint64_t mc_load_acquire_u64(const uint64_t *index)
{
    return __atomic_load_n(index, __ATOMIC_ACQUIRE);
}

/* Our own index: no other thread writes it, so no ordering is needed to read it back. */
static inline uint64_t mc_load_relaxed_u64(const uint64_t *index)
{
    return __atomic_load_n(index, __ATOMIC_RELAXED);
}

/* Publish: every record write (producer) or read (consumer) before it happens-before
 * the other side's acquire load that sees the new value. */
static inline void mc_store_release_u64(uint64_t *index, uint64_t value)
{
    __atomic_store_n(index, value, __ATOMIC_RELEASE);
}

/* Tell the core we are spinning: frees pipeline resources for the sibling hyperthread and
 * avoids the memory-order mis-speculation penalty when the awaited line changes. */
static inline void mc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Internal invariants cost a branch in the hot path, so they are checked only in the debug
 * build (MATCHCORE_DEBUG=1, where setup.py leaves CYTHON_WITHOUT_ASSERTIONS undefined). A
 * broken ring invariant means memory is already wrong: abort rather than continue. */
#ifdef CYTHON_WITHOUT_ASSERTIONS
#define mc_ring_check(condition, what) ((void)(what)) /* keeps the message "used" */
#else
#define mc_ring_check(condition, what)                                              \
    do {                                                                            \
        if (!(condition)) {                                                         \
            fprintf(stderr, "matchcore ring invariant broken: %s (%s:%d)\n", (what), \
                    __FILE__, __LINE__);                                            \
            abort();                                                                \
        }                                                                           \
    } while (0)
#endif

#endif /* MC_RING_ATOMICS_H */
