/*
 * AVX-512 input and output transforms of the Winograd F(4x4,3x3) layers
 * (winograd.c holds the method, the matrices and the portable transforms).
 *
 * One lane per tile, 16 tiles per vector. Tiles are numbered row-major, so
 * the 16 tiles of a lane group form at most a few runs of consecutive tiles
 * in one tile row; within a run, lane l's tile starts 4 pixels after lane
 * l-1's. So the six input values (c = 0..5) one patch row gives each lane
 * are row[xb + 4l + c]: a 64-float window (plus two floats), loaded as five
 * masked 16-float chunks (zero outside the image: the convolution's
 * padding) and de-interleaved by permutes, with c = 4, 5 as c = 0, 1 moved
 * down one lane. The output does the reverse: each output row of 16 tiles'
 * 4x4 blocks is 64 consecutive floats, interleaved from four vectors by
 * in-lane and 128-bit shuffles and stored with masks. Which loads and
 * stores a group needs (offsets and masks; lanes of different runs come from
 * different rows, so a chunk may take several) is worked out once per block
 * and reused for every channel: a "plan". This replaces per-lane scalar
 * copies, which cost as much as the transforms.
 *
 * Lane groups are CONVF_NR / 16 per block; the math (B^T d B, A^T m A) is
 * the same sums as winograd.c's, in registers.
 */
#if defined(__x86_64__) || defined(__i386__)

#include <stdint.h>
#include <string.h>

#include "simd_avx512.h"

#define LANES 16
#define SIDE 6 /* input patch side */
#define OUT 4  /* output block side */

/* Lanes [l0, l0 + n) of a group: tiles tx0 .. tx0+n-1 of tile row ty. */
typedef struct {
    int l0, n, ty, tx0;
} lane_run;

static int lane_runs(int tiles_x, int t0, int n, lane_run run[LANES])
{
    int k = 0;
    for (int l = 0; l < n;) {
        int t = t0 + l, tx = t % tiles_x;
        int len = tiles_x - tx < n - l ? tiles_x - tx : n - l;
        run[k++] = (lane_run){l, len, t / tiles_x, tx};
        l += len;
    }
    return k;
}

/* Bits [lo, hi) of 16, clamped. */
static inline __mmask16 bits(int lo, int hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > LANES ? LANES : hi;
    if (hi <= lo)
        return 0;
    return (__mmask16)((((uint32_t)1 << hi) - 1u) & ~(((uint32_t)1 << lo) - 1u));
}

/* row + off as an address; off may lie outside the row when every lane
 * loaded or stored there is masked off (masked lanes never fault). */
static inline const float *at(const float *row, long off)
{
    return (const float *)((uintptr_t)row + (uintptr_t)(off * (long)sizeof(float)));
}

static inline float *at_mut(float *row, long off)
{
    return (float *)((uintptr_t)row + (uintptr_t)(off * (long)sizeof(float)));
}

/* ---- input ---------------------------------------------------------------------- */

/* B^T on six vectors (in place), as winograd.c's bt6. */
TARGET_AVX512 static inline void bt6_v(__m512 *d0, __m512 *d1, __m512 *d2, __m512 *d3,
                                       __m512 *d4, __m512 *d5)
{
    const __m512 a = *d0, b = *d1, c = *d2, d = *d3, e = *d4, f = *d5;
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f),
                 two = _mm512_set1_ps(2.0f);
    *d0 = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, a), _mm512_mul_ps(five, c)), e);
    *d1 = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(-4.0f), _mm512_add_ps(b, c)), d),
                        e);
    *d2 = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, _mm512_sub_ps(b, c)), d), e);
    *d3 = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(two, _mm512_sub_ps(d, b)), c), e);
    *d4 = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(two, _mm512_sub_ps(b, d)), c), e);
    *d5 = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, b), _mm512_mul_ps(five, d)), f);
}


/* Where one lane group's patch rows come from, worked out once per block
 * and used for every channel. Laid side by side, the patch rows of lanes
 * 0..15 are one 64-float window (lane l's six floats start at 4l), plus
 * two floats for lane 15's c = 4, 5: five 16-float chunks, each filled by
 * one masked load per run that meets it (at most 4; masked to the run's
 * lanes and to the image: zero outside, the padding). Lanes of different
 * runs come from different rows. c = 4, 5 of lane l are c = 0, 1 of lane
 * l + 1 shifted down one lane, except at a run's last lane, which gets them
 * as two scalars (a "run end"). */
typedef struct {
    long off;       /* offset of the c = 4 float */
    __mmask16 lane; /* the lane */
    int ok4, ok5;   /* inside the image */
} run_end;

#define MAX_RUNS_PER_CHUNK 4 /* a chunk is 4 lanes */

typedef struct {
    long off[SIDE][5][MAX_RUNS_PER_CHUNK]; /* float offsets from the channel plane */
    __mmask16 m[SIDE][5][MAX_RUNS_PER_CHUNK];
    int n[SIDE][5]; /* loads per chunk */
    int n_ends[SIDE];
    run_end end[SIDE][LANES];
} group_plan;

static int inside(int v, int n)
{
    return v >= 0 && v < n;
}

static void plan_group(const conv_geom *g, const lane_run *run, int n_runs, group_plan *gp)
{
    memset(gp->n, 0, sizeof gp->n);
    for (int r = 0; r < SIDE; r++) {
        gp->n_ends[r] = 0;
        for (int k = 0; k < n_runs; k++) {
            const int y = OUT * run[k].ty - g->pad + r, row_ok = inside(y, g->h);
            const int l0 = run[k].l0, l1 = l0 + run[k].n;
            const int xb = OUT * (run[k].tx0 - l0) - g->pad; /* lane l's patch starts at xb + 4l */
            const long row = (long)y * g->w + xb;
            for (int q = 0; row_ok && q < 5; q++) {
                const int f0 = LANES * q; /* the chunk's first float in the window */
                /* lanes [l0, l1) are floats [4 l0, 4 l1); chunk 4 is lane 15's c = 4, 5 */
                __mmask16 m = q < 4 ? bits(OUT * l0 - f0, OUT * l1 - f0)
                                    : (l1 == LANES ? bits(0, 2) : 0);
                m &= bits(-(xb + f0), g->w - (xb + f0)); /* inside the row */
                if (m) {
                    gp->off[r][q][gp->n[r][q]] = row + f0;
                    gp->m[r][q][gp->n[r][q]++] = m;
                }
            }
            if (l1 < LANES) { /* the run ends before lane 15 */
                const int e = l1 - 1, x4 = xb + OUT * e + 4;
                gp->end[r][gp->n_ends[r]++] =
                    (run_end){row + OUT * e + 4, (__mmask16)(1u << e),
                              row_ok && inside(x4, g->w), row_ok && inside(x4 + 1, g->w)};
            }
        }
    }
}

/* Chunk q of patch row r, by its planned loads. */
TARGET_AVX512 static inline __attribute__((always_inline)) __m512
load_chunk(const float *plane, const group_plan *gp, int r, int q)
{
    __m512 z = _mm512_setzero_ps();
    for (int i = 0; i < gp->n[r][q]; i++)
        z = _mm512_mask_loadu_ps(z, gp->m[r][q][i], at(plane, gp->off[r][q][i]));
    return z;
}

/* p[c][l] = float c of lane l's patch row r, as planned. */
TARGET_AVX512 static inline __attribute__((always_inline)) void
planned_patch_row(const float *plane, const group_plan *gp, int r, __m512 p[SIDE])
{
    const __m512 z0 = load_chunk(plane, gp, r, 0), z1 = load_chunk(plane, gp, r, 1);
    const __m512 z2 = load_chunk(plane, gp, r, 2), z3 = load_chunk(plane, gp, r, 3);
    const __m512i z4 = _mm512_castps_si512(load_chunk(plane, gp, r, 4));
    for (int c = 0; c < 4; c++) {
        const __m512i idx = _mm512_setr_epi32(c, c + 4, c + 8, c + 12, c + 16, c + 20, c + 24,
                                              c + 28, c, c + 4, c + 8, c + 12, c + 16, c + 20,
                                              c + 24, c + 28);
        p[c] = _mm512_mask_blend_ps((__mmask16)0xff00, _mm512_permutex2var_ps(z0, idx, z1),
                                    _mm512_permutex2var_ps(z2, idx, z3));
    }
    __m512 p4 = _mm512_castsi512_ps(_mm512_alignr_epi32(z4, _mm512_castps_si512(p[0]), 1));
    __m512 p5 = _mm512_castsi512_ps(
        _mm512_alignr_epi32(_mm512_alignr_epi32(z4, z4, 1), _mm512_castps_si512(p[1]), 1));
    for (int i = 0; i < gp->n_ends[r]; i++) {
        const run_end *e = &gp->end[r][i];
        p4 = _mm512_mask_mov_ps(p4, e->lane, _mm512_set1_ps(e->ok4 ? plane[e->off] : 0.0f));
        p5 = _mm512_mask_mov_ps(p5, e->lane, _mm512_set1_ps(e->ok5 ? plane[e->off + 1] : 0.0f));
    }
    p[4] = p4;
    p[5] = p5;
}

/* V of one channel for one planned lane group: B^T along the six patch
 * rows, then down the columns; v[xi] at v + xi*stride. */
TARGET_AVX512 static void input_group(const float *plane, const group_plan *gp, float *v,
                                      size_t xi_stride)
{
    __m512 t[SIDE * SIDE];
#pragma GCC unroll 6
    for (int r = 0; r < SIDE; r++) {
        __m512 *p = &t[r * SIDE];
        planned_patch_row(plane, gp, r, p);
        bt6_v(&p[0], &p[1], &p[2], &p[3], &p[4], &p[5]);
    }
    for (int c = 0; c < SIDE; c++)
        bt6_v(&t[c], &t[6 + c], &t[12 + c], &t[18 + c], &t[24 + c], &t[30 + c]);
    for (int i = 0; i < SIDE * SIDE; i++)
        _mm512_storeu_ps(v + (size_t)i * xi_stride, t[i]);
}

/* The lane runs of the block's groups (CONVF_NR / LANES of them). */
typedef struct {
    int n_runs[CONVF_NR / LANES];
    lane_run run[CONVF_NR / LANES][LANES];
} block_runs;

static int block_lane_runs(int tiles_x, int t0, int nt, block_runs *br)
{
    int groups = 0;
    for (int j = 0; j < nt && j < CONVF_NR; j += LANES, groups++) {
        int n = nt - j > LANES ? LANES : nt - j;
        br->n_runs[groups] = lane_runs(tiles_x, t0 + j, n, br->run[groups]);
    }
    return groups;
}

/* The input transform of channels [ci0, ci1) for the nt tiles from t0
 * (one block): V[xi][ci][j] at v + xi*(Cin*48) + ci*48 + j; the lanes
 * past nt in the last group are zero, later groups are not written (the
 * kernel reads only the vectors holding tiles: n_valid = nt). Channel by
 * channel, so a channel's groups read consecutive stretches
 * of the same input rows and write neighbouring stretches of V. */
TARGET_AVX512 void wino_input_avx512(const conv_geom *g, const float *in, int tiles_x, int t0,
                                     int nt, int ci0, int ci1, float *v)
{
    const size_t plane = (size_t)g->h * (size_t)g->w;
    const size_t xi_stride = (size_t)g->c_in * CONVF_NR;
    block_runs br;
    group_plan gp[CONVF_NR / LANES];
    const int groups = block_lane_runs(tiles_x, t0, nt, &br);
    for (int j = 0; j < groups; j++)
        plan_group(g, br.run[j], br.n_runs[j], &gp[j]);
    for (int ci = ci0; ci < ci1; ci++)
        for (int j = 0; j < groups; j++)
            input_group(in + (size_t)ci * plane, &gp[j],
                        v + (size_t)ci * CONVF_NR + (size_t)j * LANES, xi_stride);
}

/* ---- output --------------------------------------------------------------------- */

/* A^T on six vectors into four, as winograd.c's at6. */
TARGET_AVX512 static inline void at6_v(__m512 m0, __m512 m1, __m512 m2, __m512 m3, __m512 m4,
                                       __m512 m5, __m512 *o0, __m512 *o1, __m512 *o2, __m512 *o3)
{
    const __m512 p12 = _mm512_add_ps(m1, m2), n12 = _mm512_sub_ps(m1, m2);
    const __m512 p34 = _mm512_add_ps(m3, m4), n34 = _mm512_sub_ps(m3, m4);
    *o0 = _mm512_add_ps(_mm512_add_ps(m0, p12), p34);
    *o1 = _mm512_add_ps(n12, _mm512_mul_ps(_mm512_set1_ps(2.0f), n34));
    *o2 = _mm512_add_ps(p12, _mm512_mul_ps(_mm512_set1_ps(4.0f), p34));
    *o3 = _mm512_add_ps(_mm512_add_ps(n12, _mm512_mul_ps(_mm512_set1_ps(8.0f), n34)), m5);
}

/* z[q][4m + c] = y[c][4q + m]: four vectors of 16 lanes, interleaved into
 * the 64 floats of one output row (lane l's four pixels at 4l). */
TARGET_AVX512 static inline void interleave4(const __m512 y[OUT], __m512 z[OUT])
{
    __m512 t0 = _mm512_unpacklo_ps(y[0], y[1]), t1 = _mm512_unpackhi_ps(y[0], y[1]);
    __m512 t2 = _mm512_unpacklo_ps(y[2], y[3]), t3 = _mm512_unpackhi_ps(y[2], y[3]);
    /* u[m]'s 128-bit lane k: the four pixels of tile 4k + m */
    __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xee);
    __m512 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xee);
    __m512 v0 = _mm512_shuffle_f32x4(u0, u1, 0x44), v1 = _mm512_shuffle_f32x4(u0, u1, 0xee);
    __m512 v2 = _mm512_shuffle_f32x4(u2, u3, 0x44), v3 = _mm512_shuffle_f32x4(u2, u3, 0xee);
    z[0] = _mm512_shuffle_f32x4(v0, v2, 0x88);
    z[1] = _mm512_shuffle_f32x4(v0, v2, 0xdd);
    z[2] = _mm512_shuffle_f32x4(v1, v3, 0x88);
    z[3] = _mm512_shuffle_f32x4(v1, v3, 0xdd);
}

/* Where one lane group's 4x4 output blocks go, worked out once per block:
 * output row r of lanes 0..15 is 64 floats (lane l's four at 4l), four
 * 16-float chunks, each stored by one masked store per run that meets it
 * (masked to the run's lanes and to the image). */
typedef struct {
    long off[OUT][OUT][MAX_RUNS_PER_CHUNK]; /* [row][chunk][store]: output plane offsets */
    __mmask16 m[OUT][OUT][MAX_RUNS_PER_CHUNK];
    int n[OUT][OUT];
} store_plan;

static void plan_stores(const conv_geom *g, const lane_run *run, int n_runs, store_plan *sp)
{
    memset(sp->n, 0, sizeof sp->n);
    for (int k = 0; k < n_runs; k++) {
        const int oy0 = OUT * run[k].ty, xb = OUT * (run[k].tx0 - run[k].l0);
        const int f0 = OUT * run[k].l0, f1 = OUT * (run[k].l0 + run[k].n); /* floats of the run */
        for (int r = 0; r < OUT && oy0 + r < g->oh; r++)
            for (int q = 0; q < OUT; q++) {
                const int f = LANES * q; /* the chunk's first float */
                const __mmask16 mk = bits(f0 - f, f1 - f) & bits(-(xb + f), g->ow - (xb + f));
                if (mk) {
                    sp->off[r][q][sp->n[r][q]] = (long)(oy0 + r) * g->ow + xb + f;
                    sp->m[r][q][sp->n[r][q]++] = mk;
                }
            }
    }
}

/* y[r*4 + c] = (A^T M A)[r][c] + bias, activated, for one output channel
 * and lane group; M[xi] at m + xi*xi_stride. */
TARGET_AVX512 static inline void output_tiles(const float *m, size_t xi_stride, float bias,
                                              yolo_activation act, __m512 alpha,
                                              __m512 y[OUT * OUT])
{
    __m512 u[OUT * SIDE];
    for (int c = 0; c < SIDE; c++) { /* columns: 6 rows -> 4 */
        __m512 s[SIDE];
        for (int r = 0; r < SIDE; r++)
            s[r] = _mm512_loadu_ps(m + (size_t)(r * SIDE + c) * xi_stride);
        at6_v(s[0], s[1], s[2], s[3], s[4], s[5], &u[c], &u[6 + c], &u[12 + c], &u[18 + c]);
    }
    const __m512 b = _mm512_set1_ps(bias);
    for (int r = 0; r < OUT; r++) { /* rows: 6 columns -> 4 */
        const __m512 *q = &u[r * SIDE];
        at6_v(q[0], q[1], q[2], q[3], q[4], q[5], &y[r * 4], &y[r * 4 + 1], &y[r * 4 + 2],
              &y[r * 4 + 3]);
        for (int c = 0; c < OUT; c++)
            y[r * 4 + c] = act512(_mm512_add_ps(y[r * 4 + c], b), act, alpha);
    }
}

/* One channel's output for a planned lane group. */
TARGET_AVX512 static void output_group(const float *m, size_t xi_stride, float bias,
                                       yolo_activation act, __m512 alpha, const store_plan *sp,
                                       float *plane)
{
    __m512 y[OUT * OUT];
    output_tiles(m, xi_stride, bias, act, alpha, y);
    for (int r = 0; r < OUT; r++) {
        __m512 z[OUT];
        interleave4(&y[r * 4], z);
        for (int q = 0; q < OUT; q++)
            for (int i = 0; i < sp->n[r][q]; i++)
                _mm512_mask_storeu_ps(at_mut(plane, sp->off[r][q][i]), sp->m[r][q][i], z[q]);
    }
}

/* The output transform of channels [co0, co0 + n_co) for the nt tiles from
 * t0: M[k][xi][j] at m + (k*36 + xi)*48 + j (k = co - co0). Channel by
 * channel: its 36 x 48 M values are one run, its groups write neighbouring
 * stretches of the same output rows. */
TARGET_AVX512 void wino_output_avx512(const conv_geom *g, const float *m, int tiles_x, int t0,
                                      int nt, int co0, int n_co, const float *bias,
                                      yolo_activation act, float alpha, float *out)
{
    const size_t plane = (size_t)g->oh * (size_t)g->ow;
    const __m512 av = _mm512_set1_ps(alpha);
    block_runs br;
    store_plan sp[CONVF_NR / LANES];
    const int groups = block_lane_runs(tiles_x, t0, nt, &br);
    for (int j = 0; j < groups; j++)
        plan_stores(g, br.run[j], br.n_runs[j], &sp[j]);
    for (int k = 0; k < n_co; k++) {
        const int co = co0 + k;
        for (int j = 0; j < groups; j++)
            output_group(m + (size_t)k * SIDE * SIDE * CONVF_NR + (size_t)j * LANES, CONVF_NR,
                         bias ? bias[co] : 0.0f, act, av, &sp[j], out + (size_t)co * plane);
    }
}

#endif
