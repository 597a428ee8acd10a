/*
 * Tests of the CRC-32 the loader verifies model files with
 * (libyolo/src/crc32.c): every implementation this CPU runs agrees with
 * zlib's crc32 on random buffers of every length up to a few KB, on a few
 * MB, at every misalignment and when continued across pieces; a one-bit
 * flip changes it; and the folding constants are regenerated here from
 * x^n mod P independently of the library's tables.
 */
#include "testutil.h"

#include <zlib.h>

#include "cpu.h"
#include "internal.h"

#define POLY_NORMAL 0x04C11DB7u /* P without its x^32 term, normal bit order */

static const crc32_impl impls[] = {CRC32_IMPL_ZLIB, CRC32_IMPL_PCLMUL, CRC32_IMPL_VPCLMUL};
static const char *const impl_names[] = {"zlib", "pclmul", "vpclmul"};

static uint8_t *rand_bytes(size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        b[i] = (uint8_t)(s >> 24);
    }
    return b;
}

static uint32_t zlib_crc(uint32_t crc, const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(crc, p, (uInt)n);
}

/* x^n mod P in the normal order (term x^d at bit d), by shifting. */
static uint32_t xpow_mod(int n)
{
    uint64_t r = 1;
    for (int i = 0; i < n; i++) {
        r <<= 1;
        if (r >> 32)
            r ^= (1ull << 32) | POLY_NORMAL;
    }
    return (uint32_t)r;
}

static uint64_t reflect(uint64_t v, int bits)
{
    uint64_t r = 0;
    for (int i = 0; i < bits; i++)
        if (v >> i & 1)
            r |= 1ull << (bits - 1 - i);
    return r;
}

static int available(int k)
{
    int a = crc32_impl_available(impls[k]);
    if (!a)
        print_message("(%s not run: this CPU lacks it)\n", impl_names[k]);
    return a;
}

/* Every length 0..4200 (all tails and block counts of both folding widths)
 * at offsets 0..7 of a random buffer. */
static void test_lengths_alignments(void **state)
{
    (void)state;
    const size_t max = 4200;
    uint8_t *buf = rand_bytes(max + 64, 1);
    for (int k = 0; k < 3; k++) {
        if (!available(k))
            continue;
        for (size_t off = 0; off < 8; off++)
            for (size_t n = 0; n <= max; n += off ? 7 : 1) {
                uint32_t want = zlib_crc(0, buf + off, n);
                uint32_t got = crc32_ieee_with(impls[k], 0, buf + off, n);
                if (got != want)
                    fail_msg("%s: length %zu offset %zu: 0x%08x, zlib 0x%08x", impl_names[k], n,
                             off, got, want);
            }
    }
    free(buf);
}

/* A few MB, a start value other than 0 (continuing), and the same data in
 * pieces of odd sizes; crc32_ieee (the dispatcher) too. */
static void test_large_and_continued(void **state)
{
    (void)state;
    const size_t n = ((size_t)5 << 20) + 77;
    uint8_t *buf = rand_bytes(n, 2);
    uint32_t want = zlib_crc(0, buf, n);
    uint32_t want_cont = zlib_crc(0x12345678u, buf + 3, n - 3);
    for (int k = 0; k < 3; k++) {
        if (!available(k))
            continue;
        assert_int_equal(crc32_ieee_with(impls[k], 0, buf, n), want);
        assert_int_equal(crc32_ieee_with(impls[k], 0x12345678u, buf + 3, n - 3), want_cont);
        uint32_t c = 0;
        size_t pieces[] = {1, 63, 64, 65, 255, 257, 4096, 100003};
        size_t at = 0;
        for (int i = 0; at < n; i = (i + 1) % 8) {
            size_t len = pieces[i] < n - at ? pieces[i] : n - at;
            c = crc32_ieee_with(impls[k], c, buf + at, len);
            at += len;
        }
        assert_int_equal(c, want);
    }
    assert_int_equal(crc32_ieee(0, buf, n), want);
    free(buf);
}

/* A one-bit flip anywhere (first byte, inside the folded blocks, the tail)
 * changes the CRC. */
static void test_bit_flip(void **state)
{
    (void)state;
    const size_t n = 70000;
    uint8_t *buf = rand_bytes(n, 3);
    size_t where[] = {0, 1, 15, 16, 63, 64, 255, 256, 4097, n / 2, n - 17, n - 1};
    for (int k = 0; k < 3; k++) {
        if (!available(k))
            continue;
        uint32_t base = crc32_ieee_with(impls[k], 0, buf, n);
        assert_int_equal(base, zlib_crc(0, buf, n));
        for (size_t w = 0; w < sizeof where / sizeof where[0]; w++)
            for (int bit = 0; bit < 8; bit += 3) {
                buf[where[w]] ^= (uint8_t)(1u << bit);
                uint32_t c = crc32_ieee_with(impls[k], 0, buf, n);
                buf[where[w]] ^= (uint8_t)(1u << bit);
                if (c == base)
                    fail_msg("%s: flipping bit %d of byte %zu left the CRC at 0x%08x",
                             impl_names[k], bit, where[w], c);
            }
    }
    free(buf);
}

/* Known values: the standard check value of "123456789" and zeros. */
static void test_known_values(void **state)
{
    (void)state;
    const char *s = "123456789";
    assert_int_equal(crc32_ieee(0, s, 9), 0xCBF43926u);
    uint8_t *zeros = calloc(1, 1 << 16);
    assert_non_null(zeros);
    for (int k = 0; k < 3; k++)
        if (available(k))
            assert_int_equal(crc32_ieee_with(impls[k], 0, zeros, 1 << 16),
                             zlib_crc(0, zeros, 1 << 16));
    free(zeros);
}

/* The library's constants from first principles: K(n) =
 * bitreverse32(x^n mod P) << 32; mu = floor(x^64 / P) by long division;
 * P reflected to 33 bits. */
static void test_constants(void **state)
{
    (void)state;
    assert_true(crc32_n_constants >= 6);
    for (int i = 0; i < crc32_n_constants; i++) {
        uint64_t want = reflect(xpow_mod(crc32_constants[i].exponent), 32) << 32;
        if (crc32_constants[i].value != want)
            fail_msg("K(%d) is 0x%016llx, x^%d mod P gives 0x%016llx",
                     crc32_constants[i].exponent,
                     (unsigned long long)crc32_constants[i].value, crc32_constants[i].exponent,
                     (unsigned long long)want);
    }
    /* x^64 / P: the first step takes x^64 away with P x^32, leaving
     * POLY_NORMAL x^32 below degree 64; then one bit per lower degree. */
    uint64_t rem = (uint64_t)POLY_NORMAL << 32, q = 1ull << 32;
    for (int d = 63; d >= 32; d--)
        if (rem >> d & 1) {
            rem ^= (1ull << d) | ((uint64_t)POLY_NORMAL << (d - 32));
            q |= 1ull << (d - 32);
        }
    assert_true(rem < (1ull << 32));
    assert_int_equal(reflect(q, 33), CRC32_MU33);
    assert_int_equal(reflect((1ull << 32) | POLY_NORMAL, 33), CRC32_P33);
    assert_int_equal(reflect(POLY_NORMAL, 32), 0xEDB88320u);
}

/* The CRC asks cpu.c what the CPU has: with AVX-512 hidden by the test hook
 * VPCLMULQDQ is off and crc32_ieee still gives zlib's value; with PCLMULQDQ
 * hidden too only zlib's remains. */
static void test_hidden_features(void **state)
{
    (void)state;
    const size_t n = 100000;
    uint8_t *buf = rand_bytes(n, 4);
    const uint32_t want = zlib_crc(0, buf, n);
    cpu_mask_for_tests(CPU_AVX512F);
    assert_false(crc32_impl_available(CRC32_IMPL_VPCLMUL));
    assert_int_equal(crc32_ieee(0, buf, n), want);
    cpu_mask_for_tests(CPU_AVX512F | CPU_PCLMUL);
    assert_false(crc32_impl_available(CRC32_IMPL_PCLMUL));
    assert_true(crc32_impl_available(CRC32_IMPL_ZLIB));
    assert_int_equal(crc32_ieee(0, buf, n), want);
    cpu_mask_for_tests(0);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constants),
        cmocka_unit_test(test_known_values),
        cmocka_unit_test(test_lengths_alignments),
        cmocka_unit_test(test_large_and_continued),
        cmocka_unit_test(test_bit_flip),
        cmocka_unit_test(test_hidden_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
