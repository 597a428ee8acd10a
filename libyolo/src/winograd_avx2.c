/*
 * AVX2 + FMA input and output transforms of the Winograd F(4x4,3x3) layers
 * (winograd.c holds the method, the matrices and the portable transforms;
 * winograd_avx512.c the AVX-512 ones), for x86 CPUs without AVX-512.
 *
 * One lane per tile, 8 tiles per ymm vector, CONVF_NR / 8 lane groups per
 * block. With 16 registers and no cross-lane byte shifts, each lane reads
 * its own patch: a patch row of lanes k and k + 4 is one ymm made of two
 * 4-float loads (floats c = 0..3 of lane k low, of lane k + 4 high), and
 * four such vectors (k = 0..3) become the six per-lane values of the row
 * by a 4x4 transpose within each 128-bit half: c = 0..3 from the loads at
 * the patch row's start, c = 4, 5 from a second set of loads two floats
 * further (half a transpose). So runs of tiles across tile rows need no
 * special case. The output does the reverse: A^T, bias and activation,
 * then each output row of the 8 tiles is transposed back into one 4-float
 * store per lane.
 *
 * Where each lane reads and writes is worked out once per block, per lane
 * group (a "plan"), and reused for every channel. Groups whose lanes all
 * lie inside the image (most of a large layer) use plain loads and
 * stores; the others masked loads (zero outside the image: the padding,
 * and for lanes past the block's tiles) and, for tiles clipped at the
 * right or bottom edge, masked stores of the rows inside.
 */
#if defined(__x86_64__) || defined(__i386__)

#include <stdint.h>
#include <string.h>

#include "simd_avx2.h"

#define LANES 8
#define GROUPS (CONVF_NR / LANES)
#define SIDE 6 /* input patch side */
#define OUT 4  /* output block side */

/* row + off as an address; off may lie outside the image when every lane
 * loaded or stored there is masked off (masked lanes never fault). */
static inline const float *at(const float *row, long off)
{
    return (const float *)((uintptr_t)row + (uintptr_t)(off * (long)sizeof(float)));
}

static inline float *at_mut(float *row, long off)
{
    return (float *)((uintptr_t)row + (uintptr_t)(off * (long)sizeof(float)));
}

/* Tile t0 + l's top-left output pixel (oy, ox). */
static void tile_origin(int tiles_x, int t, int *oy, int *ox)
{
    *oy = OUT * (t / tiles_x);
    *ox = OUT * (t % tiles_x);
}

/* Lane masks for the four floats from x of a row of w floats: those inside. */
static void col_mask(int x, int w, int32_t m[4])
{
    for (int c = 0; c < 4; c++)
        m[c] = x + c >= 0 && x + c < w ? -1 : 0;
}

/* ---- input ---------------------------------------------------------------------- */

/* One lane group's patch reads: for patch row r and lane l, the offset of
 * float c = 0 from the channel plane and the masks of c = 0..3 (m[..][0])
 * and c = 2..5 (m[..][1]); all zero for rows outside the image and lanes
 * past the block's tiles. interior: every lane's patch lies inside the
 * image (the masks are all ones and are not used). */
typedef struct {
    long off[SIDE][LANES];
    int32_t m[SIDE][LANES][2][4];
    int interior;
} in_plan;

static void plan_input(const conv_geom *g, int tiles_x, int t0, int n, in_plan *p)
{
    p->interior = n == LANES;
    for (int l = 0; l < LANES; l++) {
        int oy = 0, ox = 0;
        tile_origin(tiles_x, t0 + (l < n ? l : 0), &oy, &ox);
        const int y0 = oy - g->pad, x0 = ox - g->pad;
        if (y0 < 0 || x0 < 0 || y0 + SIDE > g->h || x0 + SIDE > g->w)
            p->interior = 0;
        for (int r = 0; r < SIDE; r++) {
            const int y = y0 + r, row_ok = l < n && y >= 0 && y < g->h;
            p->off[r][l] = row_ok ? (long)y * g->w + x0 : 0;
            col_mask(row_ok ? x0 : -OUT, g->w, p->m[r][l][0]);
            col_mask(row_ok ? x0 + 2 : -OUT, g->w, p->m[r][l][1]);
        }
    }
}

/* Floats o..o+3 of patch row r of lanes k (low half) and k + 4 (high). */
TARGET_AVX2 static inline __attribute__((always_inline)) __m256
lane_pair(const float *plane, const in_plan *p, int r, int k, int o, int masked)
{
    const float *lo = at(plane, p->off[r][k] + o), *hi = at(plane, p->off[r][k + 4] + o);
    __m128 a, b;
    if (masked) {
        a = _mm_maskload_ps(lo, _mm_loadu_si128((const __m128i *)p->m[r][k][o / 2]));
        b = _mm_maskload_ps(hi, _mm_loadu_si128((const __m128i *)p->m[r][k + 4][o / 2]));
    } else {
        a = _mm_loadu_ps(lo);
        b = _mm_loadu_ps(hi);
    }
    return _mm256_insertf128_ps(_mm256_castps128_ps256(a), b, 1);
}

/* q[c][l] = float c of lane l's patch row r, c = 0..5. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
patch_row(const float *plane, const in_plan *p, int r, int masked, __m256 q[SIDE])
{
    const __m256 w0 = lane_pair(plane, p, r, 0, 0, masked), w1 = lane_pair(plane, p, r, 1, 0, masked);
    const __m256 w2 = lane_pair(plane, p, r, 2, 0, masked), w3 = lane_pair(plane, p, r, 3, 0, masked);
    const __m256 t0 = _mm256_unpacklo_ps(w0, w1), t1 = _mm256_unpackhi_ps(w0, w1);
    const __m256 t2 = _mm256_unpacklo_ps(w2, w3), t3 = _mm256_unpackhi_ps(w2, w3);
    q[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    q[1] = _mm256_shuffle_ps(t0, t2, 0xee);
    q[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    q[3] = _mm256_shuffle_ps(t1, t3, 0xee);
    /* c = 2..5: only floats 2, 3 of each load are needed */
    const __m256 s1 = _mm256_unpackhi_ps(lane_pair(plane, p, r, 0, 2, masked),
                                         lane_pair(plane, p, r, 1, 2, masked));
    const __m256 s3 = _mm256_unpackhi_ps(lane_pair(plane, p, r, 2, 2, masked),
                                         lane_pair(plane, p, r, 3, 2, masked));
    q[4] = _mm256_shuffle_ps(s1, s3, 0x44);
    q[5] = _mm256_shuffle_ps(s1, s3, 0xee);
}

/* B^T on six vectors (in place), the sums of winograd.c's bt6 with FMA. */
TARGET_AVX2 static inline __attribute__((always_inline)) void bt6_v(__m256 *d0, __m256 *d1,
                                                                    __m256 *d2, __m256 *d3,
                                                                    __m256 *d4, __m256 *d5)
{
    const __m256 a = *d0, b = *d1, c = *d2, d = *d3, e = *d4, f = *d5;
    const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f),
                 five = _mm256_set1_ps(5.0f);
    const __m256 db = _mm256_sub_ps(d, b), ec = _mm256_sub_ps(e, c);
    *d0 = _mm256_fmadd_ps(four, a, _mm256_fnmadd_ps(five, c, e));
    *d1 = _mm256_fnmadd_ps(four, _mm256_add_ps(b, c), _mm256_add_ps(d, e));
    *d2 = _mm256_fmadd_ps(four, _mm256_sub_ps(b, c), _mm256_sub_ps(e, d));
    *d3 = _mm256_fmadd_ps(two, db, ec);
    *d4 = _mm256_fnmadd_ps(two, db, ec);
    *d5 = _mm256_fmadd_ps(four, b, _mm256_fnmadd_ps(five, d, f));
}

/* The row pass of one planned lane group: t[r*6 + c] = (d B)[r][c], B^T
 * along each patch row (d B is the transpose of B^T d^T). */
TARGET_AVX2 static inline __attribute__((always_inline)) void
input_rows(const float *plane, const in_plan *p, int masked, __m256 t[SIDE * SIDE])
{
    for (int r = 0; r < SIDE; r++) {
        __m256 *q = &t[r * SIDE];
        patch_row(plane, p, r, masked, q);
        bt6_v(&q[0], &q[1], &q[2], &q[3], &q[4], &q[5]);
    }
}

TARGET_AVX2 static void input_rows_plain(const float *plane, const in_plan *p,
                                         __m256 t[SIDE * SIDE])
{
    input_rows(plane, p, 0, t);
}

TARGET_AVX2 static void input_rows_masked(const float *plane, const in_plan *p,
                                          __m256 t[SIDE * SIDE])
{
    input_rows(plane, p, 1, t);
}

/* The column pass of two lane groups (16 tiles: a low, b high) into V,
 * v[xi] at v + xi*stride. The two halves of each 64-byte line of V are
 * stored one after the other: the 36 lines of a channel lie Cin x 192
 * bytes apart, often in the same few L1 sets, and a line stored by halves
 * 36 stores apart is fetched twice (measured: the V stores took half the
 * transform's time that way). */
TARGET_AVX2 static void input_cols_pair(const __m256 a[SIDE * SIDE], const __m256 b[SIDE * SIDE],
                                        float *v, size_t xi_stride)
{
    for (int c = 0; c < SIDE; c++) {
        __m256 x[SIDE], y[SIDE];
        for (int r = 0; r < SIDE; r++) {
            x[r] = a[r * SIDE + c];
            y[r] = b[r * SIDE + c];
        }
        bt6_v(&x[0], &x[1], &x[2], &x[3], &x[4], &x[5]);
        bt6_v(&y[0], &y[1], &y[2], &y[3], &y[4], &y[5]);
        for (int r = 0; r < SIDE; r++) {
            float *dst = v + (size_t)(r * SIDE + c) * xi_stride;
            _mm256_storeu_ps(dst, x[r]);
            _mm256_storeu_ps(dst + LANES, y[r]);
        }
    }
}

/* The input transform of channels [ci0, ci1) for the nt tiles from t0
 * (one block): V[xi][ci][j] at v + xi*(Cin*48) + ci*48 + j, as
 * wino_input_avx512. Lane groups go in pairs; the tiles from nt up to a
 * multiple of 16 are zero, later ones are not written (the AVX2
 * microkernel reads only the 8-float vectors holding the n_valid = nt
 * columns; zero-filling the block's other columns made 256 channels at
 * 20x20, 25 tiles in one block, 1.5x slower). */
TARGET_AVX2 void wino_input_avx2(const conv_geom *g, const float *in, int tiles_x, int t0, int nt,
                                 int ci0, int ci1, float *v)
{
    const size_t plane = (size_t)g->h * (size_t)g->w;
    const size_t xi_stride = (size_t)g->c_in * CONVF_NR;
    const int pairs = (nt + 2 * LANES - 1) / (2 * LANES), groups = (nt + LANES - 1) / LANES;
    in_plan p[GROUPS];
    __m256 t[2][SIDE * SIDE];
    for (int j = 0; j < groups; j++)
        plan_input(g, tiles_x, t0 + j * LANES, nt - j * LANES < LANES ? nt - j * LANES : LANES,
                   &p[j]);
    for (int ci = ci0; ci < ci1; ci++) {
        float *vc = v + (size_t)ci * CONVF_NR;
        for (int k = 0; k < pairs; k++) {
            for (int h = 0; h < 2; h++) {
                const int j = 2 * k + h;
                if (j >= groups)
                    memset(t[h], 0, sizeof t[h]);
                else if (p[j].interior)
                    input_rows_plain(in + (size_t)ci * plane, &p[j], t[h]);
                else
                    input_rows_masked(in + (size_t)ci * plane, &p[j], t[h]);
            }
            input_cols_pair(t[0], t[1], vc + 2 * k * LANES, xi_stride);
        }
    }
}

/* ---- output --------------------------------------------------------------------- */

/* A^T on six vectors into four, the sums of winograd.c's at6 with FMA. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
at6_v(__m256 m0, __m256 m1, __m256 m2, __m256 m3, __m256 m4, __m256 m5, __m256 *o0, __m256 *o1,
      __m256 *o2, __m256 *o3)
{
    const __m256 p12 = _mm256_add_ps(m1, m2), n12 = _mm256_sub_ps(m1, m2);
    const __m256 p34 = _mm256_add_ps(m3, m4), n34 = _mm256_sub_ps(m3, m4);
    *o0 = _mm256_add_ps(_mm256_add_ps(m0, p12), p34);
    *o1 = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), n34, n12);
    *o2 = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), p34, p12);
    *o3 = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), n34, _mm256_add_ps(n12, m5));
}

/* One lane group's 4x4 output blocks: lane l's top-left pixel at off[l]
 * in the channel plane, rows[l] x cols[l] of it inside the image (0 for
 * lanes past the block's tiles), mask[l] the cols[l] first of four.
 * full: every lane stores 4 x 4. */
typedef struct {
    long off[LANES];
    int rows[LANES], cols[LANES];
    int32_t mask[LANES][4];
    int full;
} out_plan;

static void plan_output(const conv_geom *g, int tiles_x, int t0, int n, out_plan *p)
{
    p->full = n == LANES;
    for (int l = 0; l < LANES; l++) {
        int oy = 0, ox = 0;
        tile_origin(tiles_x, t0 + (l < n ? l : 0), &oy, &ox);
        p->off[l] = (long)oy * g->ow + ox;
        p->rows[l] = l >= n ? 0 : g->oh - oy < OUT ? g->oh - oy : OUT;
        p->cols[l] = l >= n ? 0 : g->ow - ox < OUT ? g->ow - ox : OUT;
        col_mask(0, p->cols[l], p->mask[l]); /* the first cols[l] */
        if (p->rows[l] < OUT || p->cols[l] < OUT)
            p->full = 0;
    }
}

/* Output row i of lane l: the four floats x, clipped as planned unless
 * the group is full. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
store_lane(float *plane, const conv_geom *g, const out_plan *p, int full, int l, int i, __m128 x)
{
    float *dst = at_mut(plane, p->off[l] + (long)i * g->ow);
    if (full || (i < p->rows[l] && p->cols[l] == OUT))
        _mm_storeu_ps(dst, x);
    else if (i < p->rows[l])
        _mm_maskstore_ps(dst, _mm_loadu_si128((const __m128i *)p->mask[l]), x);
}

/* One channel's output for a planned lane group: M[xi] at m + xi*48;
 * A^T down the columns, then along each row, + bias, activation, and the
 * row's 4 x 8 values transposed into one 4-float store per lane. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
output_group(const float *m, __m256 bias, yolo_activation act, __m256 alpha, const conv_geom *g,
             const out_plan *p, int full, float *plane)
{
    __m256 u[OUT * SIDE];
    for (int c = 0; c < SIDE; c++) { /* columns: 6 rows -> 4 */
        __m256 s[SIDE];
        for (int r = 0; r < SIDE; r++)
            s[r] = _mm256_loadu_ps(m + (size_t)(r * SIDE + c) * CONVF_NR);
        at6_v(s[0], s[1], s[2], s[3], s[4], s[5], &u[c], &u[6 + c], &u[12 + c], &u[18 + c]);
    }
    for (int i = 0; i < OUT; i++) { /* rows: 6 columns -> 4 */
        const __m256 *q = &u[i * SIDE];
        __m256 y[OUT];
        at6_v(q[0], q[1], q[2], q[3], q[4], q[5], &y[0], &y[1], &y[2], &y[3]);
        for (int c = 0; c < OUT; c++)
            y[c] = act256(_mm256_add_ps(y[c], bias), act, alpha);
        /* z[k] = row i of lane k (low half) and lane k + 4 (high) */
        const __m256 t0 = _mm256_unpacklo_ps(y[0], y[1]), t1 = _mm256_unpackhi_ps(y[0], y[1]);
        const __m256 t2 = _mm256_unpacklo_ps(y[2], y[3]), t3 = _mm256_unpackhi_ps(y[2], y[3]);
        const __m256 z[OUT] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xee),
                               _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xee)};
#pragma GCC unroll 4
        for (int k = 0; k < OUT; k++) {
            store_lane(plane, g, p, full, k, i, _mm256_castps256_ps128(z[k]));
            store_lane(plane, g, p, full, k + 4, i, _mm256_extractf128_ps(z[k], 1));
        }
    }
}

/* Channels [co0, co0 + n_co) with the activation fixed at compile time. */
TARGET_AVX2 static inline __attribute__((always_inline)) void
output_channels(const conv_geom *g, const float *m, int groups, const out_plan *p, int co0,
                int n_co, const float *bias, yolo_activation act, float alpha, float *out)
{
    const size_t plane = (size_t)g->oh * (size_t)g->ow;
    const __m256 av = _mm256_set1_ps(alpha);
    for (int k = 0; k < n_co; k++) {
        const int co = co0 + k;
        const __m256 b = _mm256_set1_ps(bias ? bias[co] : 0.0f);
        for (int j = 0; j < groups; j++) {
            const float *mj = m + (size_t)k * SIDE * SIDE * CONVF_NR + (size_t)j * LANES;
            if (p[j].full)
                output_group(mj, b, act, av, g, &p[j], 1, out + (size_t)co * plane);
            else
                output_group(mj, b, act, av, g, &p[j], 0, out + (size_t)co * plane);
        }
    }
}

/* The output transform of channels [co0, co0 + n_co) for the nt tiles from
 * t0: M[k][xi][j] at m + (k*36 + xi)*48 + j (k = co - co0), as
 * wino_output_avx512. */
TARGET_AVX2 void wino_output_avx2(const conv_geom *g, const float *m, int tiles_x, int t0, int nt,
                                  int co0, int n_co, const float *bias, yolo_activation act,
                                  float alpha, float *out)
{
    const int groups = (nt + LANES - 1) / LANES;
    out_plan p[GROUPS];
    for (int j = 0; j < groups; j++)
        plan_output(g, tiles_x, t0 + j * LANES, nt - j * LANES < LANES ? nt - j * LANES : LANES,
                    &p[j]);
    switch (act) {
    case YOLO_ACT_LEAKY_RELU:
        output_channels(g, m, groups, p, co0, n_co, bias, YOLO_ACT_LEAKY_RELU, alpha, out);
        break;
    case YOLO_ACT_SILU:
        output_channels(g, m, groups, p, co0, n_co, bias, YOLO_ACT_SILU, alpha, out);
        break;
    case YOLO_ACT_NONE:
        output_channels(g, m, groups, p, co0, n_co, bias, YOLO_ACT_NONE, alpha, out);
        break;
    }
}

#endif
