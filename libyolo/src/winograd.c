/*
 * Winograd F(4x4, 3x3) convolution for the FAST backend's 3x3 stride-1
 * layers: each 4x4 block of output pixels (a "tile") comes from a 6x6 input
 * patch d through Y = A^T [ (G g G^T) .* (B^T d B) ] A, so a tile costs 36
 * multiplies per input/output channel pair instead of 144: the channel sum
 * becomes 36 independent GEMMs (one per position xi of the 6x6 transform
 * domain), M_xi[co][t] = sum_ci U_xi[co][ci] * V_xi[ci][t], which run on
 * the direct convolution's 8 x 48 microkernel (conv_fast.c).
 *
 *   B^T = [4  0 -5  0 1 0]   G = [ 1/4     0    0 ]   A^T = [1 1  1 1  1 0]
 *         [0 -4 -4  1 1 0]       [-1/6 -1/6 -1/6 ]         [0 1 -1 2 -2 0]
 *         [0  4 -4 -1 1 0]       [-1/6  1/6 -1/6 ]         [0 1  1 4  4 0]
 *         [0 -2 -1  2 1 0]       [1/24 1/12  1/6 ]         [0 1 -1 8 -8 1]
 *         [0  2 -1 -2 1 0]       [1/24 -1/12 1/6 ]
 *         [0  4  0 -5 0 1]       [   0    0    1 ]
 *
 * (interpolation points 0, +-1, +-2 and infinity). U = G g G^T is computed
 * once per layer, in double, and packed per xi in the microkernel's panel
 * layout (convf_pack_weights on the Cout x Cin matrix U_xi).
 *
 * Work: the tiles in row-major order are cut into blocks of CONVF_NR = 48
 * (the microkernel's width). Per block and thread: the input transform of
 * all Cin channels into V (36 x Cin x 48, per xi a ready-made B panel), the
 * 36 GEMMs over the block's range of output-channel panels into M
 * (Cout_range x 36 x 48: the 36 values the output transform of one channel
 * reads lie together), then the output transform, bias and activation, stored
 * into the 4x4 output blocks (clipped at the right and bottom edges).
 * Items are blocks x ranges of output-channel panels; when blocks are few
 * (small layers) and panels are split, every block's V is made once
 * beforehand in a buffer the threads share instead of once per item.
 * Transforms run in registers with one lane per tile: with AVX-512 on 16
 * tiles, loading and storing whole image rows (winograd_avx512.c); with
 * AVX2 on 8 tiles, each lane loading and storing its own rows
 * (winograd_avx2.c); otherwise as plain loops over 16 lanes that the
 * compiler vectorizes. The ctx's kernel table (kernels.c) says which.
 *
 * Accuracy: the transforms add and scale by up to 8 (A) and 5 (B), so the
 * rounding error grows by a bounded factor over the direct sum (measured
 * 2-3x the direct kernel's on whole models); test_kernels measures it
 * against conv2d_naive, and wino_worthwhile() keeps it where the official
 * fixtures' tolerances hold.
 */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

#define WG_IN 6   /* input patch side */
#define WG_OUT 4  /* output block side */
#define WG_XI 36  /* transform-domain positions */
#define WG_LANES 16

#ifndef WINO_ITEMS_PER_THREAD
#define WINO_ITEMS_PER_THREAD 4
#endif

#ifndef WINO_MIN_CIN
#define WINO_MIN_CIN 32
#endif
#ifndef WINO_MIN_COUT
#define WINO_MIN_COUT 16
#endif
#ifndef WINO_MIN_PIXELS
#define WINO_MIN_PIXELS 64
#endif

/* ---- weights ------------------------------------------------------------------ */

size_t wino_packed_floats(int c_out, int c_in)
{
    return WG_XI * convf_packed_span(c_out, (size_t)c_in);
}

/* G applied to three values at stride s of x, into six at stride s of y:
 * (g0/4, -(g0+g1+g2)/6, -(g0-g1+g2)/6, (g0+2g1+4g2)/24, (g0-2g1+4g2)/24,
 * g2), the rows of G with their common sums shared. */
static void g3(const double *x, int s, double *y)
{
    const double a = x[0], b = x[s], c = x[2 * s];
    const double ac = a + c, a4c = a + 4.0 * c;
    y[0] = a * 0.25;
    y[s] = -(ac + b) / 6.0;
    y[2 * s] = -(ac - b) / 6.0;
    y[3 * s] = (a4c + 2.0 * b) / 24.0;
    y[4 * s] = (a4c - 2.0 * b) / 24.0;
    y[5 * s] = c;
}

/* U = G g G^T for one 3x3 kernel g, in double: G down each column of g
 * (into t, 6x3), then along each row of t. */
static void weight_transform(const float *g, double u[WG_XI])
{
    double in[9], t[18];
    for (int i = 0; i < 9; i++)
        in[i] = g[i];
    for (int c = 0; c < 3; c++)
        g3(in + c, 3, t + c);
    for (int r = 0; r < 6; r++)
        g3(t + r * 3, 1, u + r * 6);
}

/* weight is [c_out][c_in][3][3]; packed gets wino_packed_floats() floats:
 * for each xi, U_xi as a Cout x Cin matrix in convf panels. Loops run
 * panel, input channel, then the panel's 8 output channels, so each of the
 * 36 matrices is written front to back (one pass over 4x the weights). */
void wino_pack_weights(const float *weight, int c_out, int c_in, float *packed)
{
    const size_t span = convf_packed_span(c_out, (size_t)c_in);
    const int panels = (c_out + CONVF_MR - 1) / CONVF_MR;
    if (c_out % CONVF_MR)
        memset(packed, 0, WG_XI * span * sizeof *packed); /* the padded channels */
    for (int q = 0; q < panels; q++)
        for (int ci = 0; ci < c_in; ci++) {
            size_t at = (size_t)q * CONVF_MR * (size_t)c_in + (size_t)ci * CONVF_MR;
            for (int m = 0; m < CONVF_MR && q * CONVF_MR + m < c_out; m++) {
                size_t co = (size_t)(q * CONVF_MR + m);
                double u[WG_XI];
                weight_transform(weight + (co * (size_t)c_in + (size_t)ci) * 9, u);
                for (int xi = 0; xi < WG_XI; xi++)
                    packed[(size_t)xi * span + at + (size_t)m] = (float)u[xi];
            }
        }
}

/* ---- transforms on 16 tiles ---------------------------------------------------------- */

typedef float lanes[WG_LANES];

/* Where the tiles of one 16-lane batch read and write. */
typedef struct {
    int n;                  /* valid lanes */
    int y0[WG_LANES], x0[WG_LANES]; /* top-left input pixel (may be outside) */
} lane_set;

/* d[r*6 + c][l] = input pixel (y0 + r, x0 + c) of lane l, 0 outside. */
static inline __attribute__((always_inline)) void gather_patches(const float *plane, int h, int w,
                                                                 const lane_set *ls,
                                                                 lanes d[WG_XI])
{
    for (int l = 0; l < WG_LANES; l++) {
        const int y0 = ls->y0[l], x0 = ls->x0[l];
        if (l >= ls->n) {
            for (int i = 0; i < WG_XI; i++)
                d[i][l] = 0.0f;
        } else if (y0 >= 0 && x0 >= 0 && y0 + WG_IN <= h && x0 + WG_IN <= w) {
            const float *src = plane + (size_t)y0 * (size_t)w + (size_t)x0;
            for (int r = 0; r < WG_IN; r++, src += w)
                for (int c = 0; c < WG_IN; c++)
                    d[r * 6 + c][l] = src[c];
        } else {
            for (int r = 0; r < WG_IN; r++)
                for (int c = 0; c < WG_IN; c++) {
                    int y = y0 + r, x = x0 + c;
                    d[r * 6 + c][l] =
                        y >= 0 && y < h && x >= 0 && x < w ? plane[(size_t)y * (size_t)w + x] : 0.0f;
                }
        }
    }
}

/* B^T applied to six values at stride s of d (in place over lanes). */
static inline __attribute__((always_inline)) void bt6(lanes *d, int s)
{
    for (int l = 0; l < WG_LANES; l++) {
        float d0 = d[0][l], d1 = d[s][l], d2 = d[2 * s][l], d3 = d[3 * s][l], d4 = d[4 * s][l],
              d5 = d[5 * s][l];
        d[0][l] = 4.0f * d0 - 5.0f * d2 + d4;
        d[s][l] = -4.0f * (d1 + d2) + d3 + d4;
        d[2 * s][l] = 4.0f * (d1 - d2) - d3 + d4;
        d[3 * s][l] = 2.0f * (d3 - d1) - d2 + d4;
        d[4 * s][l] = 2.0f * (d1 - d3) - d2 + d4;
        d[5 * s][l] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* V for one channel and 16 tiles: v[xi] gets lanes at v + xi*xi_stride. */
static inline __attribute__((always_inline)) void input_transform(const float *plane, int h,
                                                                  int w, const lane_set *ls,
                                                                  float *v, size_t xi_stride)
{
    lanes d[WG_XI];
    gather_patches(plane, h, w, ls, d);
    for (int r = 0; r < WG_IN; r++) /* along each row */
        bt6(&d[r * 6], 1);
    for (int c = 0; c < WG_IN; c++) /* along each column */
        bt6(&d[c], 6);
    for (int i = 0; i < WG_XI; i++)
        memcpy(v + (size_t)i * xi_stride, d[i], sizeof d[i]);
}

/* A^T applied to six values at stride s of m, into four at stride s of o. */
static inline __attribute__((always_inline)) void at6(const lanes *m, int s, lanes *o)
{
    for (int l = 0; l < WG_LANES; l++) {
        float m0 = m[0][l], m1 = m[s][l], m2 = m[2 * s][l], m3 = m[3 * s][l], m4 = m[4 * s][l],
              m5 = m[5 * s][l];
        float p12 = m1 + m2, n12 = m1 - m2, p34 = m3 + m4, n34 = m3 - m4;
        o[0][l] = m0 + p12 + p34;
        o[s][l] = n12 + 2.0f * n34;
        o[2 * s][l] = p12 + 4.0f * p34;
        o[3 * s][l] = n12 + 8.0f * n34 + m5;
    }
}

/* Y (4x4 per lane, y[r*4 + c]) + bias from M lanes at m + xi*xi_stride. */
static inline __attribute__((always_inline)) void output_transform(const float *m,
                                                                   size_t xi_stride, float bias,
                                                                   lanes y[16])
{
    lanes t[WG_XI], u[24];
    for (int i = 0; i < WG_XI; i++)
        memcpy(t[i], m + (size_t)i * xi_stride, sizeof t[i]);
    for (int c = 0; c < WG_IN; c++) /* columns: 6 rows -> 4 */
        at6(&t[c], 6, &u[c]);
    for (int r = 0; r < WG_OUT; r++) { /* rows: 6 columns -> 4 */
        lanes tmp[6];
        memcpy(tmp, &u[r * 6], sizeof tmp);
        at6(tmp, 1, &y[r * 4]);
    }
    for (int i = 0; i < 16; i++)
        for (int l = 0; l < WG_LANES; l++)
            y[i][l] += bias;
}

/* The transforms for one block, compiled per ISA. */
typedef struct {
    const conv_geom *g;
    const float *in;
    int tiles_x;
    int t0, nt;     /* the block's tiles */
    int ci0, ci1;   /* the channels to transform */
    float *v;       /* 36 x Cin x 48 */
} in_block;

typedef struct {
    const conv_geom *g;
    const float *bias;
    yolo_activation act;
    float alpha;
    void (*activate)(float *x, size_t n, yolo_activation act, float alpha); /* the ISA's */
    float *out;
    int tiles_x, t0, nt;
    int co0, n_co;  /* the channel range in m */
    const float *m; /* n_co_padded x 36 x 48 */
} out_block;

static inline __attribute__((always_inline)) void lanes_of(const conv_geom *g, int tiles_x,
                                                           int t0, int n, lane_set *ls)
{
    ls->n = n;
    for (int l = 0; l < WG_LANES; l++) {
        int t = t0 + (l < n ? l : 0);
        ls->y0[l] = (t / tiles_x) * WG_OUT - g->pad;
        ls->x0[l] = (t % tiles_x) * WG_OUT - g->pad;
    }
}

static inline __attribute__((always_inline)) void input_block_body(const in_block *b)
{
    const conv_geom *g = b->g;
    const size_t plane = (size_t)g->h * (size_t)g->w;
    const size_t xi_stride = (size_t)g->c_in * CONVF_NR;
    for (int j = 0; j < CONVF_NR; j += WG_LANES) {
        lane_set ls;
        int n = b->nt - j;
        lanes_of(g, b->tiles_x, b->t0 + j, n < 0 ? 0 : n > WG_LANES ? WG_LANES : n, &ls);
        for (int ci = b->ci0; ci < b->ci1; ci++)
            input_transform(b->in + (size_t)ci * plane, g->h, g->w, &ls,
                            b->v + (size_t)ci * CONVF_NR + (size_t)j, xi_stride);
    }
}

static void store_tiles(const out_block *b, int t0, int n, int co, lanes y[16])
{
    const conv_geom *g = b->g;
    float *plane = b->out + (size_t)co * (size_t)g->oh * (size_t)g->ow;
    for (int l = 0; l < n; l++) {
        int t = t0 + l, oy = (t / b->tiles_x) * WG_OUT, ox = (t % b->tiles_x) * WG_OUT;
        int rows = g->oh - oy < WG_OUT ? g->oh - oy : WG_OUT;
        int cols = g->ow - ox < WG_OUT ? g->ow - ox : WG_OUT;
        for (int r = 0; r < rows; r++) {
            float *dst = plane + (size_t)(oy + r) * (size_t)g->ow + (size_t)ox;
            for (int c = 0; c < cols; c++)
                dst[c] = y[r * 4 + c][l];
        }
    }
}

static inline __attribute__((always_inline)) void output_block_body(const out_block *b)
{
    for (int k = 0; k < b->n_co; k++) {
        const int co = b->co0 + k;
        const float bias = b->bias ? b->bias[co] : 0.0f;
        for (int j = 0; j < b->nt; j += WG_LANES) {
            lanes y[16];
            output_transform(b->m + (size_t)k * WG_XI * CONVF_NR + (size_t)j, CONVF_NR, bias, y);
            b->activate(&y[0][0], 16 * WG_LANES, b->act, b->alpha);
            int n = b->nt - j < WG_LANES ? b->nt - j : WG_LANES;
            store_tiles(b, b->t0 + j, n, co, y);
        }
    }
}

/* The plain transforms as the generic kernel table's wino_input and
 * wino_output (kernels.c). */
void wino_input_generic(const conv_geom *g, const float *in, int tiles_x, int t0, int nt, int ci0,
                        int ci1, float *v)
{
    const in_block b = {g, in, tiles_x, t0, nt, ci0, ci1, v};
    input_block_body(&b);
}

void wino_output_generic(const conv_geom *g, const float *m, int tiles_x, int t0, int nt,
                         int co0, int n_co, const float *bias, yolo_activation act, float alpha,
                         float *out)
{
    const out_block b = {g, bias, act, alpha, apply_activation, out, tiles_x, t0, nt, co0, n_co,
                         m};
    output_block_body(&b);
}

/* ---- the driver ------------------------------------------------------------------------ */

size_t wino_thread_scratch_floats(int c_in, int c_out)
{
    size_t co_pad = (size_t)((c_out + CONVF_MR - 1) / CONVF_MR * CONVF_MR);
    return WG_XI * CONVF_NR * ((size_t)c_in + co_pad);
}

typedef struct {
    const conv_geom *g;
    const float *in, *packed, *bias;
    yolo_activation act;
    float alpha;
    float *out;
    const yolo_kernels *k;
    float *scratch;
    size_t scratch_per_thread;
    float *shared; /* all blocks' V, transformed beforehand; NULL: per item */
    int tiles_x, n_tiles, n_blocks, n_panels, panel_chunk, items_p;
    atomic_int next;
} wino_job;

/* Block blk (48 tiles) x output-channel panels [q0, q1). */
static void run_item(const wino_job *j, int blk, int q0, int q1, float *v, float *m)
{
    const conv_geom *g = j->g;
    const int t0 = blk * CONVF_NR;
    const int nt = j->n_tiles - t0 < CONVF_NR ? j->n_tiles - t0 : CONVF_NR;
    if (j->shared) {
        v = j->shared + (size_t)blk * WG_XI * CONVF_NR * (size_t)g->c_in;
    } else {
        j->k->wino_input(g, j->in, j->tiles_x, t0, nt, 0, g->c_in, v);
    }
    const size_t span = convf_packed_span(g->c_out, (size_t)g->c_in);
    convf_tile t;
    t.kc = g->c_in;
    t.first = t.last = 1;
    t.n_valid = nt; /* M columns past the block's tiles are never read */
    t.bias = NULL;
    t.ldb = CONVF_NR;
    t.ldc = WG_XI * CONVF_NR; /* M[co][xi][48]: each channel's 36 rows together */
    t.act = YOLO_ACT_NONE;
    t.alpha = 0.0f;
    for (int xi = 0; xi < WG_XI; xi++) {
        t.b = v + (size_t)xi * (size_t)g->c_in * CONVF_NR;
        for (int q = q0; q < q1; q++) {
            t.m_valid = CONVF_MR; /* padded rows of U are zero */
            t.a = j->packed + (size_t)xi * span + (size_t)q * CONVF_MR * (size_t)g->c_in;
            t.c = m + ((size_t)(q - q0) * CONVF_MR * WG_XI + (size_t)xi) * CONVF_NR;
            j->k->gemm(&t);
        }
    }
    int co0 = q0 * CONVF_MR, co1 = q1 * CONVF_MR < g->c_out ? q1 * CONVF_MR : g->c_out;
    j->k->wino_output(g, m, j->tiles_x, t0, nt, co0, co1 - co0, j->bias, j->act, j->alpha,
                      j->out);
}

/* About WINO_ITEMS_PER_THREAD items per thread: blocks, and ranges of
 * channel panels when blocks are few. */
static void wino_split(wino_job *j, int threads)
{
    const int want = threads > 1 ? WINO_ITEMS_PER_THREAD * threads : 1;
    int per = j->n_blocks >= want ? 1 : (want + j->n_blocks - 1) / j->n_blocks;
    if (per > j->n_panels)
        per = j->n_panels;
    j->panel_chunk = (j->n_panels + per - 1) / per;
    j->items_p = (j->n_panels + j->panel_chunk - 1) / j->panel_chunk;
}

/* Items are (block, input channel) pairs, block-major. */
static void transform_range(void *arg, size_t begin, size_t end, int tid)
{
    const wino_job *j = arg;
    const int c_in = j->g->c_in;
    (void)tid;
    for (size_t i = begin; i < end;) {
        int blk = (int)(i / (size_t)c_in), ci0 = (int)(i % (size_t)c_in);
        int ci1 = (size_t)(c_in - ci0) < end - i ? c_in : ci0 + (int)(end - i);
        int t0 = blk * CONVF_NR;
        int nt = j->n_tiles - t0 < CONVF_NR ? j->n_tiles - t0 : CONVF_NR;
        j->k->wino_input(j->g, j->in, j->tiles_x, t0, nt, ci0, ci1,
                         j->shared + (size_t)blk * WG_XI * CONVF_NR * (size_t)c_in);
        i += (size_t)(ci1 - ci0);
    }
}

/* Floats of the shared transformed input wino_conv2d uses with `threads`
 * threads (0: none, each item transforms its own block). */
size_t wino_shared_floats(const conv_geom *g, int threads)
{
    wino_job j;
    j.tiles_x = (g->ow + WG_OUT - 1) / WG_OUT;
    j.n_tiles = j.tiles_x * ((g->oh + WG_OUT - 1) / WG_OUT);
    j.n_blocks = (j.n_tiles + CONVF_NR - 1) / CONVF_NR;
    j.n_panels = (g->c_out + CONVF_MR - 1) / CONVF_MR;
    wino_split(&j, threads);
    if (j.items_p < 2)
        return 0;
    return (size_t)j.n_blocks * WG_XI * CONVF_NR * (size_t)g->c_in;
}

static void wino_worker(void *arg, int tid, int nthreads)
{
    wino_job *j = arg;
    (void)nthreads;
    float *v = j->scratch + (size_t)tid * j->scratch_per_thread;
    float *m = v + WG_XI * CONVF_NR * (size_t)j->g->c_in;
    const int items = j->n_blocks * j->items_p;
    for (;;) {
        int i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (i >= items)
            break;
        int blk = i / j->items_p, q0 = (i % j->items_p) * j->panel_chunk;
        int q1 = q0 + j->panel_chunk < j->n_panels ? q0 + j->panel_chunk : j->n_panels;
        run_item(j, blk, q0, q1, v, m);
    }
}

void wino_conv2d(const conv_geom *g, const float *in, const float *packed, const float *bias,
                 yolo_activation act, float alpha, float *out, const yolo_kernels *k,
                 yolo_pool *pool, float *scratch, size_t scratch_per_thread, float *shared)
{
    wino_job j;
    j.g = g;
    j.in = in;
    j.packed = packed;
    j.bias = bias;
    j.act = act;
    j.alpha = alpha;
    j.out = out;
    j.k = k;
    j.scratch = scratch;
    j.scratch_per_thread = scratch_per_thread;
    j.tiles_x = (g->ow + WG_OUT - 1) / WG_OUT;
    j.n_tiles = j.tiles_x * ((g->oh + WG_OUT - 1) / WG_OUT);
    j.n_blocks = (j.n_tiles + CONVF_NR - 1) / CONVF_NR;
    j.n_panels = (g->c_out + CONVF_MR - 1) / CONVF_MR;
    wino_split(&j, tpool_threads(pool));
    j.shared = NULL;
    if (j.items_p > 1 && shared) {
        /* Few blocks, so channel panels are split: transform each block's
         * input once, over all threads, instead of once per item. */
        j.shared = shared;
        tpool_for(pool, (size_t)j.n_blocks * (size_t)g->c_in, transform_range, &j);
    }
    atomic_init(&j.next, 0);
    tpool_run(pool, wino_worker, &j);
}

/* Where Winograd is used (docs/performance.md, steps 5 and 8): 3x3 stride 1
 * with at least 32 input channels. Measured at 1 thread, every 3x3 stride-1
 * layer of both models with 32..512 input channels ran in 0.4-0.7x the
 * direct kernel's time, down to 20x20 outputs. (The 32-channel layers once
 * moved one yolov7-tiny detection from conf 0.2499848 to 0.2500003, across
 * the threshold: check_official now accepts detections within its conf
 * tolerance of the threshold on either side, as any summation order may.) */
int wino_candidate(int k, int stride, int pad, int c_in, int c_out)
{
    return k == 3 && stride == 1 && pad >= 0 && pad <= 2 && c_in >= WINO_MIN_CIN &&
           c_out >= WINO_MIN_COUT;
}

int wino_worthwhile(const conv_geom *g)
{
    return wino_candidate(g->k, g->stride, g->pad, g->c_in, g->c_out) &&
           (size_t)g->oh * (size_t)g->ow >= WINO_MIN_PIXELS;
}
