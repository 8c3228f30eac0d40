/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as iSCSI, ext4 and PostgreSQL's
 * WAL use it. On x86-64 with SSE4.2 the crc32 instruction does the work, three independent
 * streams at a time (the instruction's latency is three cycles, its throughput one per
 * cycle), joined by a table-driven shift; elsewhere, slice-by-8 tables.
 *
 * mc_crc32c(crc, data, n) continues a CRC the way zlib.crc32 does: start with 0, pass the
 * previous result to continue over more data. mc_crc32c_init() must run once first.
 */
#ifndef MATCHCORE_CRC32C_H
#define MATCHCORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MC_CRC32C_X86 1
#include <nmmintrin.h>
#endif

#define MC_CRC32C_POLY 0x82F63B78u
/* Bytes per stream in one round of the three-stream loop (a multiple of 8). */
#define MC_CRC32C_LANE 512

static uint32_t mc_crc32c_table[8][256];   /* [k][b]: byte b followed by k zero bytes */
static uint32_t mc_crc32c_shift[4][256];   /* register advanced over LANE zero bytes */
static int mc_crc32c_hardware = 0;

/* The raw register (no pre/post inversion) advanced over one zero byte, bit by bit. */
static uint32_t mc_crc32c_zero_byte(uint32_t reg) {
    for (int bit = 0; bit < 8; bit++)
        reg = (reg >> 1) ^ (MC_CRC32C_POLY & (0u - (reg & 1u)));
    return reg;
}

static uint32_t mc_crc32c_software(uint32_t crc, const uint8_t* p, size_t n) {
    uint32_t reg = ~crc;
    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        reg = mc_crc32c_table[0][(reg ^ *p++) & 0xffu] ^ (reg >> 8);
        n--;
    }
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        word ^= reg;
        reg = mc_crc32c_table[7][word & 0xffu] ^ mc_crc32c_table[6][(word >> 8) & 0xffu]
            ^ mc_crc32c_table[5][(word >> 16) & 0xffu] ^ mc_crc32c_table[4][(word >> 24) & 0xffu]
            ^ mc_crc32c_table[3][(word >> 32) & 0xffu] ^ mc_crc32c_table[2][(word >> 40) & 0xffu]
            ^ mc_crc32c_table[1][(word >> 48) & 0xffu] ^ mc_crc32c_table[0][word >> 56];
        p += 8;
        n -= 8;
    }
#endif
    while (n > 0) {
        reg = mc_crc32c_table[0][(reg ^ *p++) & 0xffu] ^ (reg >> 8);
        n--;
    }
    return ~reg;
}

#ifdef MC_CRC32C_X86
static inline uint32_t mc_crc32c_shift_lane(uint32_t reg) {
    return mc_crc32c_shift[0][reg & 0xffu] ^ mc_crc32c_shift[1][(reg >> 8) & 0xffu]
         ^ mc_crc32c_shift[2][(reg >> 16) & 0xffu] ^ mc_crc32c_shift[3][reg >> 24];
}

__attribute__((target("sse4.2")))
static uint32_t mc_crc32c_sse42(uint32_t crc, const uint8_t* p, size_t n) {
    uint64_t reg = (uint32_t)~crc;
    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        reg = _mm_crc32_u8((uint32_t)reg, *p++);
        n--;
    }
    /* The register is linear in (initial value, data): the CRC of A|B|C is that of A
     * shifted over B and C, xor that of B (from 0) shifted over C, xor that of C (from 0). */
    while (n >= 3 * MC_CRC32C_LANE) {
        uint64_t reg1 = 0, reg2 = 0, word0, word1, word2;
        for (size_t i = 0; i < MC_CRC32C_LANE; i += 8) {
            memcpy(&word0, p + i, 8);
            memcpy(&word1, p + MC_CRC32C_LANE + i, 8);
            memcpy(&word2, p + 2 * MC_CRC32C_LANE + i, 8);
            reg = _mm_crc32_u64(reg, word0);
            reg1 = _mm_crc32_u64(reg1, word1);
            reg2 = _mm_crc32_u64(reg2, word2);
        }
        reg = mc_crc32c_shift_lane((uint32_t)reg) ^ (uint32_t)reg1;
        reg = mc_crc32c_shift_lane((uint32_t)reg) ^ (uint32_t)reg2;
        p += 3 * MC_CRC32C_LANE;
        n -= 3 * MC_CRC32C_LANE;
    }
    while (n >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        reg = _mm_crc32_u64(reg, word);
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        reg = _mm_crc32_u8((uint32_t)reg, *p++);
        n--;
    }
    return ~(uint32_t)reg;
}
#endif

static void mc_crc32c_init(void) {
    for (uint32_t b = 0; b < 256; b++)
        mc_crc32c_table[0][b] = mc_crc32c_zero_byte(b);
    for (uint32_t b = 0; b < 256; b++)
        for (int k = 1; k < 8; k++) {
            uint32_t prior = mc_crc32c_table[k - 1][b];
            mc_crc32c_table[k][b] = mc_crc32c_table[0][prior & 0xffu] ^ (prior >> 8);
        }
    /* shift[i][b]: the register (b << 8i) advanced over LANE zero bytes; the shift of any
     * register is the xor of its four bytes' entries, as the advance is linear. */
    for (int i = 0; i < 4; i++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t reg = b << (8 * i);
            for (int zero = 0; zero < MC_CRC32C_LANE; zero++)
                reg = mc_crc32c_table[0][reg & 0xffu] ^ (reg >> 8);
            mc_crc32c_shift[i][b] = reg;
        }
#ifdef MC_CRC32C_X86
    __builtin_cpu_init();
    mc_crc32c_hardware = __builtin_cpu_supports("sse4.2");
#endif
}

static inline uint32_t mc_crc32c(uint32_t crc, const uint8_t* p, size_t n) {
#ifdef MC_CRC32C_X86
    if (mc_crc32c_hardware)
        return mc_crc32c_sse42(crc, p, n);
#endif
    return mc_crc32c_software(crc, p, n);
}

#endif
