/* The C of matchcore.core that Cython cannot say, for threads and for checks: every atomic
 * load, store and fence of the ring indices and of the pipeline's control flags, a CPU pause
 * hint for spin loops, and the one family of checks (core/atomics.pxd declares them all).
 *
 * Atomics. Shared fields are plain integers accessed only through these functions (GCC/Clang
 * __atomic builtins, the C11 memory model without _Atomic types, which Cython cannot declare).
 * An aligned load or store of 32 or 64 bits is a single instruction on x86-64 and arm64, so
 * acquire/release costs no fence on x86 and only ldar/stlr on arm64.
 *
 * Checks (TigerBeetle's habit: assertions stay on in production).
 *   mc_check(condition, what)   always compiled in. For cheap checks of arguments and
 *                               invariants: a compare and a branch the predictor never misses.
 *   MC_DEBUG_BUILD              1 in the debug build (MATCHCORE_DEBUG=1 in setup.py defines
 *                               the macro MATCHCORE_DEBUG), 0 otherwise. Expensive checks (a
 *                               walk over the whole state) sit under `if MC_DEBUG_BUILD:` in
 *                               the Cython code; the C compiler drops them from release builds.
 * A failed check means the state is already wrong: print what broke and abort rather than
 * go on settling money on it.
 */
#ifndef MC_ATOMICS_H
#define MC_ATOMICS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- ring indices (uint64_t, see core/ring.pxd) ---------------------------------------- */

/* The other side's index: pairs with mc_store_release_u64 so the records it covers are
 * visible. */
static inline uint64_t mc_load_acquire_u64(const uint64_t *index)
{
    return __atomic_load_n(index, __ATOMIC_ACQUIRE);
}

/* Our own index, or a counter read for metrics: no ordering needed. */
static inline uint64_t mc_load_relaxed_u64(const uint64_t *value)
{
    return __atomic_load_n(value, __ATOMIC_RELAXED);
}

/* Publish: every record write (producer) or read (consumer) before it happens-before
 * the other side's acquire load that sees the new value. */
static inline void mc_store_release_u64(uint64_t *index, uint64_t value)
{
    __atomic_store_n(index, value, __ATOMIC_RELEASE);
}

/* A counter only one thread writes, read by others for metrics: untorn, no ordering. */
static inline void mc_store_relaxed_u64(uint64_t *value, uint64_t new_value)
{
    __atomic_store_n(value, new_value, __ATOMIC_RELAXED);
}

/* ---- pipeline control flags (int, see CoreControl in core/pipeline.pxd) ----------------- */

static inline int mc_load_acquire_int(const int *flag)
{
    return __atomic_load_n(flag, __ATOMIC_ACQUIRE);
}

static inline void mc_store_release_int(int *flag, int value)
{
    __atomic_store_n(flag, value, __ATOMIC_RELEASE);
}

/* Clear-and-test of a waiting flag: only one of two racing wakers sees it set. */
static inline int mc_exchange_int(int *flag, int value)
{
    return __atomic_exchange_n(flag, value, __ATOMIC_ACQ_REL);
}

/* Store-then-load across threads (flag, then ring; publish, then flag) needs a full fence:
 * acquire/release alone lets the load pass the store. */
static inline void mc_full_fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
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

/* ---- checks ------------------------------------------------------------------------------ */

#ifdef MATCHCORE_DEBUG
#define MC_DEBUG_BUILD 1
#else
#define MC_DEBUG_BUILD 0
#endif

/* Out of line and cold, so a check costs the hot path only its compare and branch. */
__attribute__((cold, noinline, noreturn, unused))
static void mc_check_failed(const char *what, const char *file, int line)
{
    fprintf(stderr, "matchcore invariant broken: %s (%s:%d)\n", what, file, line);
    abort();
}

#define mc_check(condition, what)                                   \
    do {                                                            \
        if (__builtin_expect(!(condition), 0))                      \
            mc_check_failed((what), __FILE__, __LINE__);            \
    } while (0)

#endif /* MC_ATOMICS_H */
