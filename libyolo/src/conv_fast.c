/*
 * The FAST backend's convolution driver: an implicit GEMM on NCHW planes.
 *
 * out[co][p] = act(bias[co] + sum_k W[co][k] * B[k][p]) where p = oy*OW + ox
 * is the flattened output pixel and B is the im2col matrix (k = (c*kh + ky)
 * *kw + kx). B is never built whole: for one tile of CONVF_NR consecutive
 * output pixels (which may span output rows) and one slice of CONVF_KC
 * values of k, the driver gathers the tile's B slice into a small per-thread
 * panel (it fits L1), then runs the microkernel over every panel of CONVF_MR
 * output channels of the weights packed at ctx creation. A tile's output is
 * CONVF_NR consecutive floats of each output plane, so the store is
 * contiguous whatever the geometry; bias and activation are applied in the
 * store of the last k slice while the tile is in registers.
 *
 * Threads take work items (a range of pixel tiles x a range of channel
 * panels; disjoint parts of the output) from a shared counter.
 *
 * The microkernels live in kernel_avx512.c, kernel_avx2.c and here (the
 * portable one); the caller's kernel table (kernels.c) says which one runs,
 * with the stride-2 copy of the same ISA.
 */
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

/* ---- weight packing --------------------------------------------------------- */

size_t convf_packed_floats(int c_out, size_t k_total)
{
    size_t panels = ((size_t)c_out + CONVF_MR - 1) / CONVF_MR;
    return panels * CONVF_MR * k_total;
}

void convf_pack_weights(const float *weight, int c_out, size_t k_total, float *packed)
{
    size_t panels = ((size_t)c_out + CONVF_MR - 1) / CONVF_MR;
    for (size_t p = 0; p < panels; p++) {
        float *dst = packed + p * CONVF_MR * k_total;
        for (size_t k = 0; k < k_total; k++)
            for (size_t m = 0; m < CONVF_MR; m++) {
                size_t co = p * CONVF_MR + m;
                dst[k * CONVF_MR + m] = co < (size_t)c_out ? weight[co * k_total + k] : 0.0f;
            }
    }
}

size_t convf_thread_scratch_floats(void)
{
    return (size_t)CONVF_GROUP * CONVF_KC * CONVF_NR;
}

/* ---- gathering one B panel ---------------------------------------------------- */

/* dst[i] = src[2i] for i < n: the stride-2 rows of a 3x3/s2 gather (the
 * AVX-512 and AVX2 ones are in kernel_avx512.c and kernel_avx2.c). */
typedef void (*convf_copy2_fn)(float *dst, const float *src, int n);

void convf_copy2_generic(float *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = src[2 * i];
}

/* A run of tile pixels in one output row: tile columns [j0, j0+n) are output
 * pixels (oy, ox0 .. ox0+n-1). */
typedef struct {
    int j0, n, oy, ox0;
} tile_seg;

/* Splits tile pixels [p0, p0+n_valid) into per-row segments. */
static int tile_segments(const conv_geom *g, size_t p0, int n_valid, tile_seg *seg)
{
    int ns = 0, j = 0;
    while (j < n_valid) {
        size_t p = p0 + (size_t)j;
        int oy = (int)(p / (size_t)g->ow), ox = (int)(p % (size_t)g->ow);
        int n = g->ow - ox;
        if (n > n_valid - j)
            n = n_valid - j;
        seg[ns++] = (tile_seg){j, n, oy, ox};
        j += n;
    }
    return ns;
}

/* One row of the B panel, im2col row (c, ky, kx), over the tile's segments:
 * input pixel (oy*s - pad + ky, ox*s - pad + kx) or 0 outside the input. */
static void gather_row(const conv_geom *g, const float *plane, int ky, int kx,
                       const tile_seg *seg, int ns, float *dst, convf_copy2_fn copy2)
{
    const int s = g->stride;
    for (int i = 0; i < ns; i++) {
        const tile_seg *t = &seg[i];
        float *d = dst + t->j0;
        int iy = t->oy * s - g->pad + ky;
        if (iy < 0 || iy >= g->h) {
            memset(d, 0, (size_t)t->n * sizeof *d);
            continue;
        }
        const float *row = plane + (size_t)iy * (size_t)g->w;
        /* ox in [lo, hi) reads inside the row. */
        int first = g->pad - kx, last = g->w - 1 + g->pad - kx;
        int lo = first > 0 ? (first + s - 1) / s : 0;
        int hi = last < 0 ? 0 : last / s + 1;
        lo = lo < t->ox0 ? t->ox0 : lo;
        hi = hi > t->ox0 + t->n ? t->ox0 + t->n : hi;
        if (hi < lo)
            hi = lo;
        int j = 0;
        for (; j < lo - t->ox0 && j < t->n; j++)
            d[j] = 0.0f;
        int ix = (t->ox0 + j) * s - g->pad + kx;
        if (s == 1) {
            memcpy(d + j, row + ix, (size_t)(hi - lo) * sizeof *d);
            j += hi - lo;
        } else if (s == 2 && hi > lo) {
            copy2(d + j, row + ix, hi - lo);
            j += hi - lo;
        } else {
            for (; j < hi - t->ox0; j++, ix += s)
                d[j] = row[ix];
        }
        for (; j < t->n; j++)
            d[j] = 0.0f;
    }
}

/* A group of up to CONVF_GROUP consecutive tiles. Their B panels are one
 * matrix in the thread's scratch, row r = im2col row k0 + r over the
 * group's GROUP_W pixels (tile i's panel is columns 48i.., read by the
 * kernel with ldb = GROUP_W). Gathering row by row reads each input row
 * segment once for the whole group, a contiguous run the hardware
 * prefetcher follows, with one call per row instead of one per tile. */
#define GROUP_W (CONVF_GROUP * CONVF_NR)
typedef struct {
    int n;        /* tiles in the group */
    size_t p0;    /* first pixel of the first tile */
    int n_pix;    /* valid pixels from p0 (the last tile may be partial) */
    int ns;
    tile_seg seg[GROUP_W + 2];
} tile_group;

/* B rows [k0, k0+kc) of the group; columns past n_pix are zero. */
static void gather_group(const conv_geom *g, const float *in, const tile_group *tg, int k0,
                         int kc, float *panels, convf_copy2_fn copy2)
{
    const int kk = g->k * g->k;
    const size_t plane = (size_t)g->h * (size_t)g->w;
    for (int r = 0; r < kc; r++) {
        int k = k0 + r, c = k / kk, rem = k % kk;
        float *dst = panels + (size_t)r * GROUP_W;
        gather_row(g, in + (size_t)c * plane, rem / g->k, rem % g->k, tg->seg, tg->ns, dst, copy2);
        if (tg->n_pix < tg->n * CONVF_NR)
            memset(dst + tg->n_pix, 0, (size_t)(tg->n * CONVF_NR - tg->n_pix) * sizeof *dst);
    }
}

/* 1x1, stride 1, pad 0: B row c is input plane c, the group's pixels are
 * contiguous. */
static void copy_group(const conv_geom *g, const float *in, const tile_group *tg, int k0, int kc,
                       float *panels)
{
    const size_t plane = (size_t)g->h * (size_t)g->w;
    for (int r = 0; r < kc; r++) {
        float *dst = panels + (size_t)r * GROUP_W;
        memcpy(dst, in + (size_t)(k0 + r) * plane + tg->p0, (size_t)tg->n_pix * sizeof *dst);
        if (tg->n_pix < tg->n * CONVF_NR)
            memset(dst + tg->n_pix, 0, (size_t)(tg->n * CONVF_NR - tg->n_pix) * sizeof *dst);
    }
}

/* ---- the driver ------------------------------------------------------------------ */

typedef struct {
    const conv_geom *g;
    const float *in, *packed, *bias;
    yolo_activation act;
    float alpha;
    float *out;
    const yolo_kernels *k; /* microkernel and stride-2 copy */
    float *scratch;
    size_t n_pix, k_total;
    size_t kc_step; /* k slice: K cut into equal slices of at most CONVF_KC */
    int n_tiles, n_panels;
    int tile_chunk, panel_chunk;   /* work item: tiles x panels */
    int items_t, items_p;          /* chunks along each */
    atomic_int next;               /* next work item to take */
} conv_job;

/* A 1x1 group is read in place for at most this many channel panels, and
 * copied for more. Measured on 1x1 layers of both models (one Sapphire
 * Rapids core, AVX2 and AVX-512 kernels alike): copying wins from 16 panels
 * (256->256 at 160x160 85 -> 101 GFLOP/s with AVX2, 137 -> 155 with
 * AVX-512; 128->128 at 40x40 99 -> 111), reading in place at 4 (64->32 at
 * 160x160 87 -> 95), and 8 is a draw. */
#define IN_PLACE_MAX_PANELS 8

/* Tiles [t0, t1) x panels [q0, q1), CONVF_GROUP tiles at a time, with
 * this thread's B panels. The kernel loop runs the tiles of a group inside
 * each channel panel, so the panel's weights are reused from L1. */
static void run_block(const conv_job *j, int t0, int t1, int q0, int q1, float *panels)
{
    const conv_geom *g = j->g;
    const int pointwise = g->k == 1 && g->stride == 1 && g->pad == 0;
    const size_t plane = (size_t)g->h * (size_t)g->w;
    tile_group tg;
    convf_tile t;
    t.ldc = j->n_pix;
    t.act = j->act;
    t.alpha = j->alpha;
    for (int tile0 = t0; tile0 < t1; tile0 += CONVF_GROUP) {
        tg.n = t1 - tile0 < CONVF_GROUP ? t1 - tile0 : CONVF_GROUP;
        tg.p0 = (size_t)tile0 * CONVF_NR;
        size_t left = j->n_pix - tg.p0;
        tg.n_pix = left < (size_t)tg.n * CONVF_NR ? (int)left : tg.n * CONVF_NR;
        tg.ns = pointwise ? 0 : tile_segments(g, tg.p0, tg.n_pix, tg.seg);
        /* A 1x1 layer's full tiles are read in place when few channel
         * panels reuse them: B row k is 48 consecutive floats of input plane
         * k. Rows a plane apart stream poorly through L1 (and alias in it
         * when the plane is a multiple of 4 KiB), so when many panels reuse
         * the group a contiguous copy pays (a partial last tile is always
         * copied, zero-padded). */
        const int in_place = pointwise && q1 - q0 <= IN_PLACE_MAX_PANELS &&
                             tg.n_pix == tg.n * CONVF_NR;
        t.ldb = in_place ? plane : GROUP_W;
        for (size_t k0 = 0; k0 < j->k_total; k0 += j->kc_step) {
            int kc = j->k_total - k0 < j->kc_step ? (int)(j->k_total - k0) : (int)j->kc_step;
            if (pointwise && !in_place)
                copy_group(g, j->in, &tg, (int)k0, kc, panels);
            else if (!pointwise)
                gather_group(g, j->in, &tg, (int)k0, kc, panels, j->k->copy2);
            t.kc = kc;
            t.first = k0 == 0;
            t.last = k0 + (size_t)kc == j->k_total;
            for (int q = q0; q < q1; q++) {
                int co = q * CONVF_MR;
                t.m_valid = g->c_out - co < CONVF_MR ? g->c_out - co : CONVF_MR;
                t.a = j->packed + (size_t)q * CONVF_MR * j->k_total + k0 * CONVF_MR;
                t.bias = j->bias ? j->bias + co : NULL;
                for (int i = 0; i < tg.n; i++) {
                    t.n_valid = tg.n_pix - i * CONVF_NR < CONVF_NR ? tg.n_pix - i * CONVF_NR
                                                                   : CONVF_NR;
                    t.b = in_place ? j->in + k0 * plane + tg.p0 + (size_t)i * CONVF_NR
                                   : panels + (size_t)i * CONVF_NR;
                    t.c = j->out + (size_t)co * j->n_pix + tg.p0 + (size_t)i * CONVF_NR;
                    j->k->gemm(&t);
                }
            }
        }
    }
}

/* Threads take work items from a shared counter rather than a fixed share,
 * so a thread the OS preempts (or a slower one) does not hold the others
 * up: the layer ends at most one item after the last thread's start. */
static void conv_worker(void *arg, int tid, int nthreads)
{
    conv_job *j = arg;
    (void)nthreads;
    float *panel = j->scratch + (size_t)tid * convf_thread_scratch_floats();
    const int items = j->items_t * j->items_p;
    for (;;) {
        int i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (i >= items)
            break;
        int t0 = (i / j->items_p) * j->tile_chunk, q0 = (i % j->items_p) * j->panel_chunk;
        int t1 = t0 + j->tile_chunk < j->n_tiles ? t0 + j->tile_chunk : j->n_tiles;
        int q1 = q0 + j->panel_chunk < j->n_panels ? q0 + j->panel_chunk : j->n_panels;
        run_block(j, t0, t1, q0, q1, panel);
    }
}

/* About 4 items per thread for balance. Pixel tiles first (each item then
 * gathers only its own tiles); when there are too few tiles (small late
 * layers: few pixels, many channels) the channel panels are split too, each
 * item then gathering its tiles' B panels itself, a small cost next to its
 * multiply-adds. */
static void choose_split(conv_job *j, int threads)
{
    const int want = threads > 1 ? 4 * threads : 1;
    j->tile_chunk = (j->n_tiles + want - 1) / want;
    /* Whole gather groups per item where there are tiles enough. */
    if (j->tile_chunk >= 2 * CONVF_GROUP)
        j->tile_chunk = (j->tile_chunk + CONVF_GROUP - 1) / CONVF_GROUP * CONVF_GROUP;
    j->panel_chunk = j->n_panels;
    j->items_t = (j->n_tiles + j->tile_chunk - 1) / j->tile_chunk;
    if (j->items_t < want) {
        int per = (want + j->items_t - 1) / j->items_t; /* panel chunks per tile chunk */
        j->panel_chunk = (j->n_panels + per - 1) / per;
    }
    j->items_p = (j->n_panels + j->panel_chunk - 1) / j->panel_chunk;
}

void convf_conv2d(const conv_geom *g, const float *in, const float *packed, const float *bias,
                  yolo_activation act, float alpha, float *out, const yolo_kernels *k,
                  yolo_pool *pool, float *scratch)
{
    conv_job j;
    j.g = g;
    j.in = in;
    j.packed = packed;
    j.bias = bias;
    j.act = act;
    j.alpha = alpha;
    j.out = out;
    j.k = k;
    j.scratch = scratch;
    j.n_pix = (size_t)g->oh * (size_t)g->ow;
    j.k_total = (size_t)g->c_in * (size_t)g->k * (size_t)g->k;
    j.n_tiles = (int)((j.n_pix + CONVF_NR - 1) / CONVF_NR);
    /* Equal slices: a short last slice (e.g. 288 = 128 + 128 + 32) would
     * load and store the output tile for few multiply-adds. */
    size_t slices = (j.k_total + CONVF_KC - 1) / CONVF_KC;
    j.kc_step = (j.k_total + slices - 1) / slices;
    j.n_panels = (g->c_out + CONVF_MR - 1) / CONVF_MR;
    choose_split(&j, tpool_threads(pool));
    atomic_init(&j.next, 0);
    tpool_run(pool, conv_worker, &j);
}

/* ---- portable microkernel and sigmoid (the activation: apply_activation, ops_norm.c) ----- */

void convf_kernel_generic(const convf_tile *t)
{
    float acc[CONVF_MR][CONVF_NR];
    for (int m = 0; m < CONVF_MR; m++)
        for (int j = 0; j < CONVF_NR; j++)
            acc[m][j] = 0.0f;
    for (int k = 0; k < t->kc; k++) {
        const float *a = t->a + (size_t)k * CONVF_MR, *b = t->b + (size_t)k * t->ldb;
        for (int m = 0; m < CONVF_MR; m++)
            for (int j = 0; j < CONVF_NR; j++)
                acc[m][j] += a[m] * b[j];
    }
    for (int m = 0; m < t->m_valid; m++) {
        float *c = t->c + (size_t)m * t->ldc;
        float init = t->bias ? t->bias[m] : 0.0f;
        for (int j = 0; j < t->n_valid; j++)
            c[j] = (t->first ? init : c[j]) + acc[m][j];
        if (t->last)
            apply_activation(c, (size_t)t->n_valid, t->act, t->alpha);
    }
}

void convf_sigmoid_generic(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = 1.0f / (1.0f + expf(-x[i]));
}
