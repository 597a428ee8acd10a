/*
 * AVX2 + FMA microkernel of the FAST convolution (conv_fast.c) and its
 * fused activations, for x86 CPUs without AVX-512. Function target
 * attributes keep the Makefile's baseline flags; conv_fast.c calls these
 * only after checking the CPU.
 *
 * With 16 ymm registers an 8 x 48 tile is done as four blocks of 4 channels
 * x 24 pixels (12 accumulators, 3 B vectors, 1 broadcast): 7 loads per 12
 * multiply-adds, within the two loads per cycle of every AVX2 core. The
 * blocks run channel-half by channel-half, so the second 24 columns follow
 * the first while the weights of the half are in L1.
 *
 * The activations and their exp are in simd_avx2.h (shared with
 * winograd_avx2.c).
 */
#if defined(__x86_64__) || defined(__i386__)

#include "simd_avx2.h"

#if CONVF_MR != 8 || CONVF_NR != 48
#error "kernel_avx2.c is written for 8 x 48 tiles"
#endif

void convf_kernel_avx2(const convf_tile *t);
void convf_activate_avx2(float *x, size_t n, yolo_activation act, float alpha);
void convf_sigmoid_avx2(float *x, size_t n);
void convf_copy2_avx2(float *dst, const float *src, int n);

/* Lanes [0, n) set (n clamped to 0..8). */
TARGET_AVX2 static inline __m256i lane_mask8(int n)
{
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
}

/* One block: channels [r0, r0+4) x pixels [j0, j0 + 8*nvec) of the tile,
 * with nvec (1..3) of its three 8-pixel vectors live, a constant in each
 * caller so the others compile away: at most 12 accumulators c<row><vector>,
 * 3 B vectors and 1 broadcast weight = the 16 ymm registers. `full` (also a
 * constant) means all 8*nvec pixels are valid: C is loaded and stored with
 * plain moves. Masked moves only serve the last vector of a partial tile:
 * vmaskmovps stores are microcoded on AMD cores up to Zen 3, where a masked
 * store of every accumulator cost more than a tenth of the tile's
 * multiply-adds. */
#define ACC_ROW(m) __m256 c##m##0, c##m##1 = _mm256_setzero_ps(), c##m##2 = _mm256_setzero_ps()

/* Vector v (0..2) of row pointer q_: loaded, stored (masked by k<v> unless
 * full). */
#define LOAD_V(q_, v) (full ? _mm256_loadu_ps((q_) + 8 * (v)) : _mm256_maskload_ps((q_) + 8 * (v), k##v))
#define STORE_V(q_, v, x)                                                              \
    do {                                                                               \
        if (full)                                                                      \
            _mm256_storeu_ps((q_) + 8 * (v), x);                                       \
        else                                                                           \
            _mm256_maskstore_ps((q_) + 8 * (v), k##v, x);                              \
    } while (0)

#define INIT_ROW(m)                                                                    \
    do {                                                                               \
        if (r0 + m >= t->m_valid) {                                                    \
            c##m##0 = _mm256_setzero_ps();                                             \
        } else if (t->first) {                                                         \
            c##m##0 = t->bias ? _mm256_set1_ps(t->bias[r0 + m]) : _mm256_setzero_ps(); \
            c##m##1 = c##m##2 = c##m##0;                                               \
        } else {                                                                       \
            const float *q_ = c + (size_t)m * ldc;                                     \
            c##m##0 = LOAD_V(q_, 0);                                                   \
            if (nvec > 1)                                                              \
                c##m##1 = LOAD_V(q_, 1);                                               \
            if (nvec > 2)                                                              \
                c##m##2 = LOAD_V(q_, 2);                                               \
        }                                                                              \
    } while (0)

#define FMA_ROW(m)                                                                     \
    do {                                                                               \
        __m256 a_ = _mm256_broadcast_ss(a + m);                                        \
        c##m##0 = _mm256_fmadd_ps(a_, b0, c##m##0);                                    \
        if (nvec > 1)                                                                  \
            c##m##1 = _mm256_fmadd_ps(a_, b1, c##m##1);                                \
        if (nvec > 2)                                                                  \
            c##m##2 = _mm256_fmadd_ps(a_, b2, c##m##2);                                \
    } while (0)

#define STORE_ROW(m)                                                                   \
    do {                                                                               \
        if (r0 + m < t->m_valid) {                                                     \
            float *q_ = c + (size_t)m * ldc;                                           \
            if (t->last) {                                                             \
                c##m##0 = act256(c##m##0, t->act, alpha);                              \
                if (nvec > 1)                                                          \
                    c##m##1 = act256(c##m##1, t->act, alpha);                          \
                if (nvec > 2)                                                          \
                    c##m##2 = act256(c##m##2, t->act, alpha);                          \
            }                                                                          \
            STORE_V(q_, 0, c##m##0);                                                   \
            if (nvec > 1)                                                              \
                STORE_V(q_, 1, c##m##1);                                               \
            if (nvec > 2)                                                              \
                STORE_V(q_, 2, c##m##2);                                               \
        }                                                                              \
    } while (0)

TARGET_AVX2 static inline __attribute__((always_inline)) void block_4xn(const convf_tile *t,
                                                                        int r0, int j0,
                                                                        const int nvec,
                                                                        const int full)
{
    const int nv = t->n_valid - j0, kc = t->kc;
    const __m256i k0 = lane_mask8(nv), k1 = lane_mask8(nv - 8), k2 = lane_mask8(nv - 16);
    const __m256 alpha = _mm256_set1_ps(t->alpha);
    const size_t ldb = t->ldb, ldc = t->ldc;
    float *c = t->c + (size_t)r0 * ldc + j0;
    ACC_ROW(0);
    ACC_ROW(1);
    ACC_ROW(2);
    ACC_ROW(3);
    INIT_ROW(0);
    INIT_ROW(1);
    INIT_ROW(2);
    INIT_ROW(3);
    const float *a = t->a + r0, *b = t->b + j0;
    for (int k = 0; k < kc; k++, a += CONVF_MR, b += ldb) {
        const __m256 b0 = _mm256_loadu_ps(b);
        const __m256 b1 = nvec > 1 ? _mm256_loadu_ps(b + 8) : b0;
        const __m256 b2 = nvec > 2 ? _mm256_loadu_ps(b + 16) : b0;
        FMA_ROW(0);
        FMA_ROW(1);
        FMA_ROW(2);
        FMA_ROW(3);
    }
    STORE_ROW(0);
    STORE_ROW(1);
    STORE_ROW(2);
    STORE_ROW(3);
}

TARGET_AVX2 static void kernel_full(const convf_tile *t)
{
    for (int r0 = 0; r0 < t->m_valid; r0 += 4) {
        block_4xn(t, r0, 0, 3, 1);
        block_4xn(t, r0, 24, 3, 1);
    }
}

/* A tile with fewer than 48 valid pixels (the last tile of a layer, a
 * Winograd block of few tiles): whole 24-pixel blocks, then one block of
 * just the vectors the rest needs, masked only when it ends inside one. */
TARGET_AVX2 static void kernel_partial(const convf_tile *t)
{
    for (int r0 = 0; r0 < t->m_valid; r0 += 4) {
        int j0 = 0;
        for (; t->n_valid - j0 >= 24; j0 += 24)
            block_4xn(t, r0, j0, 3, 1);
        const int rest = t->n_valid - j0;
        if (rest > 16)
            block_4xn(t, r0, j0, 3, 0);
        else if (rest == 16)
            block_4xn(t, r0, j0, 2, 1);
        else if (rest > 8)
            block_4xn(t, r0, j0, 2, 0);
        else if (rest == 8)
            block_4xn(t, r0, j0, 1, 1);
        else if (rest > 0)
            block_4xn(t, r0, j0, 1, 0);
    }
}

TARGET_AVX2 void convf_kernel_avx2(const convf_tile *t)
{
    if (t->n_valid == CONVF_NR)
        kernel_full(t);
    else
        kernel_partial(t);
}

/* dst[i] = src[2i], i < n (the stride-2 rows of a 3x3/s2 gather): the even
 * floats of 16 by one in-lane shuffle and one cross-lane permute. The vector
 * loop stops while its last load (src[2i+15]) stays inside src[0 .. 2n-2]. */
TARGET_AVX2 void convf_copy2_avx2(float *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 < n; i += 8) {
        __m256 lo = _mm256_loadu_ps(src + 2 * i), hi = _mm256_loadu_ps(src + 2 * i + 8);
        __m256 even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
        _mm256_storeu_ps(dst + i, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                      _mm256_castps_pd(even), _MM_SHUFFLE(3, 1, 2, 0))));
    }
    for (; i < n; i++)
        dst[i] = src[2 * i];
}

/* Whole vectors with plain moves, the tail (n % 8) masked: masked stores are
 * slow on AMD (see block_4x24). */
TARGET_AVX2 void convf_activate_avx2(float *x, size_t n, yolo_activation act, float alpha)
{
    const __m256 av = _mm256_set1_ps(alpha);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, act256(_mm256_loadu_ps(x + i), act, av));
    if (i < n) {
        __m256i m = lane_mask8((int)(n - i));
        _mm256_maskstore_ps(x + i, m, act256(_mm256_maskload_ps(x + i, m), act, av));
    }
}

/* Detect's sigmoid 1 / (1 + e^-x), limits as with expf. */
TARGET_AVX2 static inline __m256 sigmoid256(__m256 v)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), v));
    return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

TARGET_AVX2 void convf_sigmoid_avx2(float *x, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, sigmoid256(_mm256_loadu_ps(x + i)));
    if (i < n) {
        __m256i m = lane_mask8((int)(n - i));
        _mm256_maskstore_ps(x + i, m, sigmoid256(_mm256_maskload_ps(x + i, m)));
    }
}

#endif
