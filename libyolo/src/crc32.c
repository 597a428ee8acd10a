/*
 * CRC-32 of the model file (zlib's: IEEE polynomial, reflected 0xEDB88320,
 * pre- and post-inverted), fast enough to verify ~150 MB of weights at load
 * time: carry-less multiplication folds the data 64 bytes (PCLMULQDQ) or
 * 256 bytes (VPCLMULQDQ) per step, chosen at run time; zlib's crc32 for
 * short inputs, tails, and CPUs without the instructions. The results are
 * zlib's bit for bit, so the file format does not change.
 *
 * The math (over GF(2); P = x^32 + 0x04C11DB7's terms):
 *  - The CRC register s after a message M of m bits is
 *    s = (S0 x^m + M x^32) mod P, S0 = the initial register (~crc). In the
 *    reflected order bit 0 of byte 0 is M's highest term, so a 128-bit
 *    little-endian load X has bit k <-> x^(127-k).
 *  - Writing poly_s(v) = sum v_k x^(s-k) for the bits v_k of a value, a
 *    64x64 carry-less product c = clmul(a, b) satisfies
 *    poly_(s+t)(c) = poly_s(a) poly_t(b): the anchors add.
 *  - Folding X forward by D bits (X x^D + next block, kept congruent mod P
 *    and below degree 128): X's low lane is poly_63(lo) x^64, its high lane
 *    poly_63(hi). clmul(lo, k) with poly_63(k) = x^(D+63) mod P gives
 *    poly_126 = lo x^(D+63), i.e. poly_127 = lo x^(D+64) as a 128-bit value;
 *    clmul(hi, k') with poly_63(k') = x^(D-1) mod P gives hi x^D. So a
 *    constant is K(n) = bitreverse32(x^n mod P) << 32 (term x^d at bit
 *    63 - d), for n = D + 63 and n = D - 1. The folding distances used:
 *    D = 2048 (4 x 512-bit registers), 512 (4 x 128 lanes, and one 512-bit
 *    register into the next), 384, 256, 128 (lanes into one).
 *  - Finishing: s = X x^32 mod P. X x^32 = lo x^96 + hi x^32, so
 *    T = clmul(lo, K(95)) + (hi moved 32 bits down) has degree < 96; then
 *    U = clmul(T's top 32 terms, K(63)) + T's low 64 terms has degree < 64.
 *  - Barrett: with mu = floor(x^64 / P), q = floor(floor(U / x^32) mu / x^32)
 *    is exactly floor(U / P) for deg U < 64, and s = (U + q P) mod x^32.
 *    In the reflected order: poly_31(u & 0xffffffff) = U / x^32,
 *    poly_32(MU33) = mu, poly_31(low 32 bits of the product) = q,
 *    poly_32(P33) = P, and s is bits 32..63 of q P + u.
 * test_crc regenerates every constant from x^n mod P and compares the
 * results with zlib on many lengths and alignments.
 */
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "cpu.h"
#include "internal.h"

/* Constants K(n) (see above). */
#define K2111 0x7cc8e1e700000000ull
#define K2047 0x03f9f86300000000ull
#define K575 0x653d982200000000ull
#define K511 0xcad38e8f00000000ull
#define K447 0x69ccfc0d00000000ull
#define K383 0x2a28386200000000ull
#define K319 0x9570d49500000000ull
#define K255 0x01b5fd1d00000000ull
#define K191 0x65673b4600000000ull
#define K127 0x9ba54c6f00000000ull
#define K95 0xccaa009e00000000ull
#define K63 0xb8bc676500000000ull

const crc32_constant crc32_constants[] = {
    {2111, K2111}, {2047, K2047}, {575, K575}, {511, K511}, {447, K447}, {383, K383},
    {319, K319},   {255, K255},   {191, K191}, {127, K127}, {95, K95},   {63, K63},
};
const int crc32_n_constants = (int)(sizeof crc32_constants / sizeof crc32_constants[0]);

/* zlib's crc32 takes a uInt length: feed it in chunks. */
static uint32_t crc32_zlib(uint32_t crc, const uint8_t *p, size_t n)
{
    uLong c = crc;
    while (n > 0) {
        uInt chunk = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return (uint32_t)c;
}

#if defined(__x86_64__)

#include <immintrin.h>

#define TARGET_PCLMUL __attribute__((target("pclmul,sse4.1")))
#define TARGET_VPCLMUL __attribute__((target("vpclmulqdq,pclmul,avx512f,avx512vl,sse4.1")))

/* Below these sizes folding does not pay (setup and reduction). */
#define PCLMUL_MIN 64
#define VPCLMUL_MIN 512

/* x forward by the distance whose constants k holds (low lane K(D+63),
 * high lane K(D-1)), plus the next block. */
TARGET_PCLMUL static inline __m128i fold128(__m128i x, __m128i k, __m128i next)
{
    __m128i a = _mm_clmulepi64_si128(x, k, 0x00);
    __m128i b = _mm_clmulepi64_si128(x, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(a, b), next);
}

/* The CRC register from the folded 128 bits: s = X x^32 mod P (file
 * comment: the two reductions, then Barrett). */
TARGET_PCLMUL static uint32_t reduce128(__m128i x)
{
    const __m128i k95 = _mm_set_epi64x(0, (long long)K95);
    const __m128i k63 = _mm_set_epi64x(0, (long long)K63);
    __m128i t = _mm_xor_si128(_mm_clmulepi64_si128(x, k95, 0x00),
                              _mm_slli_si128(_mm_srli_si128(x, 8), 4));
    __m128i u = _mm_xor_si128(_mm_clmulepi64_si128(t, k63, 0x00), t);
    uint64_t u64 = (uint64_t)_mm_extract_epi64(u, 1);
    __m128i hi = _mm_set_epi64x(0, (long long)(u64 & 0xffffffffu));
    __m128i q = _mm_clmulepi64_si128(hi, _mm_set_epi64x(0, (long long)CRC32_MU33), 0x00);
    q = _mm_and_si128(q, _mm_set_epi64x(0, 0xffffffffll));
    __m128i qp = _mm_clmulepi64_si128(q, _mm_set_epi64x(0, (long long)CRC32_P33), 0x00);
    uint64_t r = (uint64_t)_mm_cvtsi128_si64(qp) ^ u64;
    return (uint32_t)(r >> 32);
}

/* 4 x 128-bit lanes, 64 bytes per step, then lanes into one and the
 * remaining 16-byte blocks; the last n % 16 bytes through zlib. */
TARGET_PCLMUL static uint32_t crc32_pclmul(uint32_t crc, const uint8_t *p, size_t n)
{
    if (n < PCLMUL_MIN)
        return crc32_zlib(crc, p, n);
    const __m128i k512 = _mm_set_epi64x((long long)K511, (long long)K575);
    const __m128i k128 = _mm_set_epi64x((long long)K127, (long long)K191);
    __m128i x0 = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i x1 = _mm_loadu_si128((const __m128i *)(const void *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(const void *)(p + 32));
    __m128i x3 = _mm_loadu_si128((const __m128i *)(const void *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)~crc)); /* S0 x^m: into M's first bits */
    p += 64;
    n -= 64;
    for (; n >= 64; p += 64, n -= 64) {
        x0 = fold128(x0, k512, _mm_loadu_si128((const __m128i *)(const void *)p));
        x1 = fold128(x1, k512, _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
        x2 = fold128(x2, k512, _mm_loadu_si128((const __m128i *)(const void *)(p + 32)));
        x3 = fold128(x3, k512, _mm_loadu_si128((const __m128i *)(const void *)(p + 48)));
    }
    __m128i x = fold128(fold128(fold128(x0, k128, x1), k128, x2), k128, x3);
    for (; n >= 16; p += 16, n -= 16)
        x = fold128(x, k128, _mm_loadu_si128((const __m128i *)(const void *)p));
    return crc32_zlib(~reduce128(x), p, n);
}

TARGET_VPCLMUL static inline __m512i fold512(__m512i x, __m512i k, __m512i next)
{
    __m512i a = _mm512_clmulepi64_epi128(x, k, 0x00);
    __m512i b = _mm512_clmulepi64_epi128(x, k, 0x11);
    return _mm512_ternarylogic_epi64(a, b, next, 0x96); /* a ^ b ^ next */
}

TARGET_VPCLMUL static inline __m512i load512(const uint8_t *p)
{
    return _mm512_loadu_si512((const void *)p);
}

/* The four 128-bit lanes of z (lane 0 first in the message) into one:
 * lanes 0..2 forward by 384, 256, 128 bits, added to lane 3. */
TARGET_VPCLMUL static __m128i lanes_to_one(__m512i z)
{
    const __m512i k = _mm512_set_epi64(0, 0, (long long)K127, (long long)K191, (long long)K255,
                                       (long long)K319, (long long)K383, (long long)K447);
    __m512i a = _mm512_clmulepi64_epi128(z, k, 0x00);
    __m512i b = _mm512_clmulepi64_epi128(z, k, 0x11);
    /* lane 3 of a and b is zero (zero constants): put z's lane 3 there */
    __m512i s = _mm512_ternarylogic_epi64(a, b, _mm512_maskz_mov_epi64(0xC0, z), 0x96);
    __m256i h = _mm256_xor_si256(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
    return _mm_xor_si128(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 4 x 512-bit registers (16 lanes), 256 bytes per step; the rest as the
 * 128-bit version does. */
TARGET_VPCLMUL static uint32_t crc32_vpclmul(uint32_t crc, const uint8_t *p, size_t n)
{
    if (n < VPCLMUL_MIN)
        return crc32_pclmul(crc, p, n);
    const __m512i k2048 = _mm512_set_epi64((long long)K2047, (long long)K2111, (long long)K2047,
                                           (long long)K2111, (long long)K2047, (long long)K2111,
                                           (long long)K2047, (long long)K2111);
    const __m512i k512 = _mm512_set_epi64((long long)K511, (long long)K575, (long long)K511,
                                          (long long)K575, (long long)K511, (long long)K575,
                                          (long long)K511, (long long)K575);
    __m512i z0 = load512(p), z1 = load512(p + 64), z2 = load512(p + 128), z3 = load512(p + 192);
    z0 = _mm512_xor_si512(z0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)~crc)));
    p += 256;
    n -= 256;
    for (; n >= 256; p += 256, n -= 256) {
        z0 = fold512(z0, k2048, load512(p));
        z1 = fold512(z1, k2048, load512(p + 64));
        z2 = fold512(z2, k2048, load512(p + 128));
        z3 = fold512(z3, k2048, load512(p + 192));
    }
    __m512i z = fold512(fold512(fold512(z0, k512, z1), k512, z2), k512, z3);
    for (; n >= 64; p += 64, n -= 64)
        z = fold512(z, k512, load512(p));
    __m128i x = lanes_to_one(z);
    const __m128i k128 = _mm_set_epi64x((long long)K127, (long long)K191);
    for (; n >= 16; p += 16, n -= 16)
        x = fold128(x, k128, _mm_loadu_si128((const __m128i *)(const void *)p));
    return crc32_zlib(~reduce128(x), p, n);
}

int crc32_impl_available(crc32_impl impl)
{
    switch (impl) {
    case CRC32_IMPL_ZLIB:
        return 1;
    case CRC32_IMPL_PCLMUL:
        return cpu_has(CPU_PCLMUL | CPU_SSE41);
    case CRC32_IMPL_VPCLMUL:
        return cpu_has(CPU_PCLMUL | CPU_SSE41 | CPU_VPCLMUL | CPU_AVX512F | CPU_AVX512VL);
    }
    return 0;
}

uint32_t crc32_ieee_with(crc32_impl impl, uint32_t crc, const void *data, size_t n)
{
    const uint8_t *p = data;
    if (impl == CRC32_IMPL_VPCLMUL && crc32_impl_available(impl))
        return crc32_vpclmul(crc, p, n);
    if (impl == CRC32_IMPL_PCLMUL && crc32_impl_available(impl))
        return crc32_pclmul(crc, p, n);
    return crc32_zlib(crc, p, n);
}

#else /* not x86-64: zlib only */

int crc32_impl_available(crc32_impl impl)
{
    return impl == CRC32_IMPL_ZLIB;
}

uint32_t crc32_ieee_with(crc32_impl impl, uint32_t crc, const void *data, size_t n)
{
    (void)impl;
    return crc32_zlib(crc, data, n);
}

#endif

uint32_t crc32_ieee(uint32_t crc, const void *data, size_t n)
{
    crc32_impl best = crc32_impl_available(CRC32_IMPL_VPCLMUL)  ? CRC32_IMPL_VPCLMUL
                      : crc32_impl_available(CRC32_IMPL_PCLMUL) ? CRC32_IMPL_PCLMUL
                                                                : CRC32_IMPL_ZLIB;
    return crc32_ieee_with(best, crc, data, n);
}
