/*
 * Inline AVX2 + FMA helpers shared by the AVX2 code (kernel_avx2.c,
 * winograd_avx2.c): the fused activations and their exp. Compiled with
 * function target attributes, so only code that checked the CPU
 * (__builtin_cpu_supports) may call them.
 *
 * exp for SiLU as in simd_avx512.h, except that 2^n is built from the
 * exponent bits in two factors 2^(n/2) * 2^(n - n/2): each is a normal
 * float for every n the clamped input gives, and the product overflows to
 * inf or underflows to 0 exactly where expf does.
 */
#ifndef LIBYOLO_SIMD_AVX2_H
#define LIBYOLO_SIMD_AVX2_H

#include <immintrin.h>

#include "internal.h"

#define TARGET_AVX2 __attribute__((target("avx2,fma")))

TARGET_AVX2 static inline __m256 pow2i(__m256i n)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
}

TARGET_AVX2 static inline __m256 exp256(__m256 t)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440e-4f);
    t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(t, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, ln2_hi, t);
    r = _mm256_fnmadd_ps(n, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i n1 = _mm256_srai_epi32(ni, 1);
    __m256i n2 = _mm256_sub_epi32(ni, n1);
    return _mm256_mul_ps(_mm256_mul_ps(p, pow2i(n1)), pow2i(n2));
}

/* LeakyReLU: x > 0 ? x : alpha*x. SiLU: x / (1 + e^-x). */
TARGET_AVX2 static inline __m256 act256(__m256 x, yolo_activation act, __m256 alpha)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU: {
        __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
        return _mm256_blendv_ps(_mm256_mul_ps(x, alpha), x, pos);
    }
    case YOLO_ACT_SILU: {
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
        return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    case YOLO_ACT_NONE:
        break;
    }
    return x;
}

#endif
