/*
 * Inline AVX-512 helpers shared by the AVX-512 kernels (kernel_avx512.c,
 * winograd_avx512.c): the fused activations, their exp, and lane masks.
 * Compiled with function target attributes, so only code that checked the
 * CPU (__builtin_cpu_supports) may call them.
 *
 * exp for SiLU: n = round(t / ln 2), r = t - n ln 2 (two-part ln 2, so r is
 * accurate), e^r by its degree-7 Taylor polynomial (|r| <= 0.347: truncation
 * below 1e-8 relative), and scalef multiplies by 2^n with IEEE overflow to
 * inf and underflow to 0, so SiLU(x) = x / (1 + e^-x) has the same limits
 * as with expf. test_kernels compares it with expf.
 */
#ifndef LIBYOLO_SIMD_AVX512_H
#define LIBYOLO_SIMD_AVX512_H

#include <immintrin.h>

#include "internal.h"

#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,fma")))

TARGET_AVX512 static inline __m512 exp512(__m512 t)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    const __m512 ln2_hi = _mm512_set1_ps(0.693359375f);
    const __m512 ln2_lo = _mm512_set1_ps(-2.12194440e-4f);
    t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, log2e),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, ln2_hi, t);
    r = _mm512_fnmadd_ps(n, ln2_lo, r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* LeakyReLU: x > 0 ? x : alpha*x (NaN takes the alpha*x branch, as in C).
 * SiLU: x / (1 + e^-x). */
TARGET_AVX512 static inline __m512 act512(__m512 x, yolo_activation act, __m512 alpha)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU: {
        __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGT_UQ);
        return _mm512_mask_mul_ps(x, neg, x, alpha);
    }
    case YOLO_ACT_SILU: {
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
        return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    }
    case YOLO_ACT_NONE:
        break;
    }
    return x;
}

static inline __mmask16 lane_mask(int n)
{
    if (n >= 16)
        return (__mmask16)0xffff;
    return n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

#endif
