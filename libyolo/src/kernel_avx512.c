/*
 * AVX-512 microkernel of the FAST convolution (conv_fast.c) and its fused
 * activations. Compiled with function target attributes, so the rest of
 * the library keeps the Makefile's baseline flags; conv_fast.c calls these
 * only after checking the CPU (__builtin_cpu_supports).
 *
 * Tile: CONVF_MR = 8 output channels x CONVF_NR = 48 pixels = 8 x 3 zmm
 * accumulators (24 of the 32 registers). Per k: three loads of the B row
 * (ldb floats apart) and eight broadcast weights, 24 FMAs. The activations
 * and their exp are in simd_avx512.h.
 */
#if defined(__x86_64__) || defined(__i386__)

#include "simd_avx512.h"

#if CONVF_MR != 8 || CONVF_NR != 48
#error "kernel_avx512.c is written for 8 x 48 tiles"
#endif

void convf_kernel_avx512(const convf_tile *t);
void convf_activate_avx512(float *x, size_t n, yolo_activation act, float alpha);
void convf_sigmoid_avx512(float *x, size_t n);
void convf_copy2_avx512(float *dst, const float *src, int n);

/* Accumulators c<row><vector>; nv (1..3) of the three vectors are live, a
 * constant in each specialization below, so the others compile away. */
#define ACC_ROW(m) __m512 c##m##0, c##m##1 = _mm512_setzero_ps(), c##m##2 = _mm512_setzero_ps()

#define INIT_ROW(m)                                                                    \
    do {                                                                               \
        if (m >= t->m_valid) {                                                         \
            c##m##0 = c##m##1 = c##m##2 = _mm512_setzero_ps();                         \
        } else if (t->first) {                                                         \
            c##m##0 = t->bias ? _mm512_set1_ps(t->bias[m]) : _mm512_setzero_ps();      \
            c##m##1 = c##m##2 = c##m##0;                                               \
        } else {                                                                       \
            const float *r_ = t->c + (size_t)(m) * t->ldc;                             \
            c##m##0 = _mm512_maskz_loadu_ps(k0, r_);                                   \
            if (nv > 1)                                                                \
                c##m##1 = _mm512_maskz_loadu_ps(k1, r_ + 16);                          \
            if (nv > 2)                                                                \
                c##m##2 = _mm512_maskz_loadu_ps(k2, r_ + 32);                          \
        }                                                                              \
    } while (0)

#define FMA_ROW(m)                                                                     \
    do {                                                                               \
        __m512 a_ = _mm512_set1_ps(a[m]);                                              \
        c##m##0 = _mm512_fmadd_ps(a_, b0, c##m##0);                                    \
        if (nv > 1)                                                                    \
            c##m##1 = _mm512_fmadd_ps(a_, b1, c##m##1);                                \
        if (nv > 2)                                                                    \
            c##m##2 = _mm512_fmadd_ps(a_, b2, c##m##2);                                \
    } while (0)

#define STORE_ROW(m)                                                                   \
    do {                                                                               \
        if (m < t->m_valid) {                                                          \
            float *r_ = t->c + (size_t)(m) * t->ldc;                                   \
            if (t->last) {                                                             \
                c##m##0 = act512(c##m##0, t->act, alpha);                              \
                if (nv > 1)                                                            \
                    c##m##1 = act512(c##m##1, t->act, alpha);                          \
                if (nv > 2)                                                            \
                    c##m##2 = act512(c##m##2, t->act, alpha);                          \
            }                                                                          \
            _mm512_mask_storeu_ps(r_, k0, c##m##0);                                    \
            if (nv > 1)                                                                \
                _mm512_mask_storeu_ps(r_ + 16, k1, c##m##1);                           \
            if (nv > 2)                                                                \
                _mm512_mask_storeu_ps(r_ + 32, k2, c##m##2);                           \
        }                                                                              \
    } while (0)

/* The tile with nv of its three 16-pixel vectors: only the columns that
 * hold valid pixels are computed (a 4-tile last Winograd block, a 25-tile
 * layer, a row's tail), not the whole 48. */
TARGET_AVX512 static inline __attribute__((always_inline)) void kernel_nv(const convf_tile *t,
                                                                          const int nv)
{
    const __mmask16 k0 = lane_mask(t->n_valid), k1 = lane_mask(t->n_valid - 16),
                    k2 = lane_mask(t->n_valid - 32);
    const __m512 alpha = _mm512_set1_ps(t->alpha);
    ACC_ROW(0);
    ACC_ROW(1);
    ACC_ROW(2);
    ACC_ROW(3);
    ACC_ROW(4);
    ACC_ROW(5);
    ACC_ROW(6);
    ACC_ROW(7);
    INIT_ROW(0);
    INIT_ROW(1);
    INIT_ROW(2);
    INIT_ROW(3);
    INIT_ROW(4);
    INIT_ROW(5);
    INIT_ROW(6);
    INIT_ROW(7);
    const float *a = t->a, *b = t->b;
    for (int k = 0; k < t->kc; k++, a += CONVF_MR, b += t->ldb) {
        const __m512 b0 = _mm512_loadu_ps(b);
        const __m512 b1 = nv > 1 ? _mm512_loadu_ps(b + 16) : b0;
        const __m512 b2 = nv > 2 ? _mm512_loadu_ps(b + 32) : b0;
        FMA_ROW(0);
        FMA_ROW(1);
        FMA_ROW(2);
        FMA_ROW(3);
        FMA_ROW(4);
        FMA_ROW(5);
        FMA_ROW(6);
        FMA_ROW(7);
    }
    STORE_ROW(0);
    STORE_ROW(1);
    STORE_ROW(2);
    STORE_ROW(3);
    STORE_ROW(4);
    STORE_ROW(5);
    STORE_ROW(6);
    STORE_ROW(7);
}

TARGET_AVX512 static void kernel_16(const convf_tile *t)
{
    kernel_nv(t, 1);
}

TARGET_AVX512 static void kernel_32(const convf_tile *t)
{
    kernel_nv(t, 2);
}

TARGET_AVX512 static void kernel_48(const convf_tile *t)
{
    kernel_nv(t, 3);
}

TARGET_AVX512 void convf_kernel_avx512(const convf_tile *t)
{
    if (t->n_valid > 32)
        kernel_48(t);
    else if (t->n_valid > 16)
        kernel_32(t);
    else
        kernel_16(t);
}

TARGET_AVX512 void convf_activate_avx512(float *x, size_t n, yolo_activation act, float alpha)
{
    const __m512 av = _mm512_set1_ps(alpha);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = lane_mask(n - i >= 16 ? 16 : (int)(n - i));
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, act512(v, act, av));
    }
}

/* Detect's sigmoid 1 / (1 + e^-x): for x below about -88 e^-x is inf and
 * the result 0, as with expf. */
TARGET_AVX512 void convf_sigmoid_avx512(float *x, size_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = lane_mask(n - i >= 16 ? 16 : (int)(n - i));
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), v));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
}

/* dst[i] = src[2i], i < n: the even lanes of each 32 source floats by one
 * two-source permute. Reads only src[0 .. 2n-2] (the tail is masked). */
TARGET_AVX512 void convf_copy2_avx512(float *dst, const float *src, int n)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(src + 2 * i);
        __m512 b = _mm512_maskz_loadu_ps(lane_mask(2 * (n - i) - 1 - 16), src + 2 * i + 16);
        _mm512_storeu_ps(dst + i, _mm512_permutex2var_ps(a, even, b));
    }
    if (i < n) {
        int rest = 2 * (n - i) - 1; /* source floats needed */
        __m512 a = _mm512_maskz_loadu_ps(lane_mask(rest), src + 2 * i);
        __m512 b = _mm512_maskz_loadu_ps(lane_mask(rest - 16), src + 2 * i + 16);
        _mm512_mask_storeu_ps(dst + i, lane_mask(n - i), _mm512_permutex2var_ps(a, even, b));
    }
}

#endif
