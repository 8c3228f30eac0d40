/* Overflow-checked int64 arithmetic, the fee formula and the hash mixer of the matching
 * engine (core/engine.pxd declares them for Cython). Its checks are in core/atomics.h.
 *
 * Every amount in matchcore is an int64 in minor units. The checked helpers return nonzero
 * when the exact result does not fit in int64 (GCC/Clang __builtin_*_overflow: one
 * instruction plus a flag test on x86-64 and arm64); *out is then unspecified.
 */
#ifndef MC_CHECKED_H
#define MC_CHECKED_H

#include <stdint.h>

/* The "no index" value of every uint32 link and slot of the engine: index 0 of the order
 * pool is never used, so zero-filled memory (calloc) is already a valid empty state. */
#define MC_NONE 0u

static inline int mc_mul_overflow(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_mul_overflow(a, b, out);
}

static inline int mc_add_overflow(int64_t a, int64_t b, int64_t *out)
{
    return __builtin_add_overflow(a, b, out);
}

/* fee = floor(notional * bps / 10000), exactly as Python's // computes it. The product
 * usually fits in 64 bits (and the division by a constant becomes a multiply); only when
 * it does not is the 128-bit product divided. The result always fits: |fee| <= |notional|
 * for 0 <= bps <= 10000, the only rates the engine accepts. */
static inline int64_t mc_fee(int64_t notional, int64_t bps)
{
    int64_t product, quotient;
    if (!__builtin_mul_overflow(notional, bps, &product)) {
        quotient = product / 10000;
        if (product % 10000 != 0 && product < 0)
            quotient -= 1;
        return quotient;
    }
    __int128 wide = (__int128)notional * (__int128)bps;
    __int128 wide_quotient = wide / 10000;
    if (wide % 10000 != 0 && wide < 0)
        wide_quotient -= 1;
    return (int64_t)wide_quotient;
}

/* splitmix64's finalizer: every input bit moves every output bit. */
static inline uint64_t mc_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 27;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x;
}

/* Hash of a (account, 64-bit id) key: client order ids and transfer ids. */
static inline uint64_t mc_key_hash(uint32_t account, uint64_t id)
{
    return mc_mix64(id ^ ((uint64_t)account * 0x9E3779B97F4A7C15ull));
}

/* Tag and home slot (tag & mask) of a client order id in the order index. Consecutive client
 * ids of one account (ids rise per account) get consecutive slots of one 64-byte line, so a
 * new order usually writes a line its account's previous orders already brought into cache
 * instead of missing on a random line of a table much bigger than the cache. */
static inline uint32_t mc_index_tag(uint32_t account, uint64_t client_id)
{
    return ((uint32_t)mc_key_hash(account, client_id >> 3) << 3) | (uint32_t)(client_id & 7);
}

/* The state hash of snapshot_format.py, one word at a time. */
static inline uint64_t mc_hash_word(uint64_t h, uint64_t word)
{
    h = (h ^ word) * 0x100000001B3ull;
    return h ^ (h >> 32);
}

#endif /* MC_CHECKED_H */
