/*
 * Max pooling: MaxPool2d (generic kernel, stride, pad), MP (2x2 stride 2, the
 * down-sampling blocks) and SP (k x k stride 1 pad k/2, the SPP blocks).
 *
 * Semantics are PyTorch's MaxPool2d with ceil_mode False: padding counts as
 * -inf, output size floor((H + 2p - k)/s) + 1. pad <= k/2 is required (as
 * PyTorch does), so every window holds at least one real pixel.
 *
 * Fast path: a separable max, per channel: first over each window's columns
 * for every input row (into scratch, H x OW), then over each window's rows;
 * the second pass runs along contiguous rows. 2k compares per output instead
 * of k*k, which matters for SP's 9x9 and 13x13. With the FAST backend the
 * order is turned around (rows first into a W-float buffer per thread, then
 * along the row) so output rows of all planes split over the pool's threads
 * with no shared scratch; the row buffer has -inf margins, so every window
 * along the row is whole and the loops run without edge cases (4-wide SSE
 * max, which is exactly max2's b > a ? b : a). The reference visits every window element with
 * bounds checks.
 *
 * FLOPs: one per compare, counted as k*k per output element for both paths
 * (the work of the plain algorithm), plus one per element for an activation.
 */
#include <math.h>
#include <stddef.h>
#ifdef __SSE__
#include <immintrin.h>
#endif

#include "internal.h"

typedef struct {
    int k, s, p;
} pool_geom;

/* What each layer type means by its fields; shape() has checked them. */
static pool_geom layer_pool(const model_layer *l)
{
    pool_geom g = {l->kernel, l->stride, l->pad};
    if (l->type == LAYER_MP)
        g = (pool_geom){2, 2, 0};
    else if (l->type == LAYER_SP)
        g = (pool_geom){l->kernel, 1, l->kernel / 2};
    return g;
}

/* MP and SP have fixed geometry: their stride and pad fields may be 0 or
 * the implied value, nothing else. */
static yolo_status check_fixed_fields(const model_layer *l)
{
    const pool_geom g = layer_pool(l);
    int ok = (l->stride == 0 || l->stride == g.s) && (l->pad == 0 || l->pad == g.p);
    if (l->type == LAYER_MP)
        ok = ok && (l->kernel == 0 || l->kernel == 2);
    if (ok)
        return YOLO_OK;
    return yolo_fail(YOLO_ERR_FORMAT,
                     "%s layer (model.%d): expected kernel %d, stride %d (or 0), pad %d (or 0); "
                     "found kernel %d, stride %d, pad %d",
                     layer_type_name(l), l->source_index, g.k, g.s, g.p, l->kernel, l->stride,
                     l->pad);
}

static yolo_status pool_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                              int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st == YOLO_OK && l->type != LAYER_MAXPOOL)
        st = check_fixed_fields(l);
    if (st != YOLO_OK)
        return st;
    const pool_geom g = layer_pool(l);
    const char *type = layer_type_name(l);
    if (g.k < 1 || g.k > 255 || g.s < 1 || g.s > 255 || g.p < 0 || g.p > g.k / 2)
        return yolo_fail(
            YOLO_ERR_FORMAT,
            "%s layer (model.%d): expected kernel 1..255, stride 1..255, pad 0..kernel/2; "
            "found kernel %d, stride %d, pad %d",
            type, l->source_index, g.k, g.s, g.p);
    if ((int64_t)in[0].h + 2 * g.p < g.k || (int64_t)in[0].w + 2 * g.p < g.k)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s layer (model.%d): input %dx%d (pad %d) is smaller than kernel %d",
                         type, l->source_index, in[0].h, in[0].w, g.p, g.k);
    *out = in[0];
    out->h = (int)(((int64_t)in[0].h + 2 * g.p - g.k) / g.s + 1);
    out->w = (int)(((int64_t)in[0].w + 2 * g.p - g.k) / g.s + 1);
    return ops_check_output(l, *out);
}

static uint64_t pool_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)in, (void)n_in;
    const pool_geom g = layer_pool(l);
    uint64_t per_out = (uint64_t)g.k * (uint64_t)g.k + (l->act != YOLO_ACT_NONE ? 1u : 0u);
    return shape_elems(out) * per_out;
}

/* The fast path's column-max buffer: one channel, H x OW. */
static size_t pool_scratch(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)l, (void)n_in;
    return (size_t)in[0].h * (size_t)out.w;
}

/* Window [*lo, *hi) of output index o along an axis of length n. */
static void window(const pool_geom *g, int o, int n, int *lo, int *hi)
{
    int start = o * g->s - g->p;
    *lo = start < 0 ? 0 : start;
    *hi = start + g->k > n ? n : start + g->k;
}

static inline float max2(float a, float b)
{
    return b > a ? b : a;
}

/* dst[x] = max2(dst[x], src[x]), x < n. max2(a, b) is exactly SSE's
 * maxps(b, a) (b > a ? b : a, NaN and signed zeros included), so the vector
 * loop gives the scalar result; the compiler does not vectorize the plain
 * loop at -O2 (an epilogue is needed). Inlined: SP's rows are ~20 floats. */
static inline __attribute__((always_inline)) void max_into(float *restrict dst,
                                                          const float *restrict src, int n)
{
    int x = 0;
#ifdef __SSE__
    for (; x + 4 <= n; x += 4)
        _mm_storeu_ps(dst + x, _mm_max_ps(_mm_loadu_ps(src + x), _mm_loadu_ps(dst + x)));
#endif
    for (; x < n; x++)
        dst[x] = max2(dst[x], src[x]);
}

/* o[x] = max2(t[2x], t[2x+1]), x < n: 2x2 stride-2 pooling along a row. */
static inline __attribute__((always_inline)) void max_pairs(float *restrict o,
                                                           const float *restrict t, int n)
{
    int x = 0;
#ifdef __SSE__
    for (; x + 4 <= n; x += 4) {
        __m128 a = _mm_loadu_ps(t + 2 * x), b = _mm_loadu_ps(t + 2 * x + 4);
        __m128 even = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 odd = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        _mm_storeu_ps(o + x, _mm_max_ps(odd, even));
    }
#endif
    for (; x < n; x++)
        o[x] = max2(t[2 * x], t[2 * x + 1]);
}

/* One channel: in H x W, out OH x OW, tmp H x OW. */
static void pool_plane(const pool_geom *g, const float *in, int h, int w, float *out, int oh,
                       int ow, float *tmp)
{
    for (int y = 0; y < h; y++) {
        const float *row = in + (size_t)y * (size_t)w;
        float *t = tmp + (size_t)y * (size_t)ow;
        for (int ox = 0; ox < ow; ox++) {
            int lo, hi;
            window(g, ox, w, &lo, &hi);
            float m = row[lo];
            for (int x = lo + 1; x < hi; x++)
                m = max2(m, row[x]);
            t[ox] = m;
        }
    }
    for (int oy = 0; oy < oh; oy++) {
        int lo, hi;
        window(g, oy, h, &lo, &hi);
        float *o = out + (size_t)oy * (size_t)ow;
        const float *t = tmp + (size_t)lo * (size_t)ow;
        for (int ox = 0; ox < ow; ox++)
            o[ox] = t[ox];
        for (int y = lo + 1; y < hi; y++) {
            t = tmp + (size_t)y * (size_t)ow;
            for (int ox = 0; ox < ow; ox++)
                o[ox] = max2(o[ox], t[ox]);
        }
    }
}

/* One output row from the column maxima. t has p floats of -inf before
 * the W maxima and enough after, so every window is whole: out[x] is the
 * max of t[x*s .. x*s+k) with no clipping, loops the compiler vectorizes
 * (-inf never wins a max, so this equals the clipped window). 2x2 stride 2
 * (MP) pairs neighbours directly. */
static void pool_row_horizontal(const pool_geom *g, const float *restrict t, int ow,
                                float *restrict o)
{
    if (g->k == 2 && g->s == 2) {
        max_pairs(o, t, ow);
        return;
    }
    if (g->s == 1) {
        for (int x = 0; x < ow; x++)
            o[x] = t[x];
        for (int d = 1; d < g->k; d++)
            max_into(o, t + d, ow);
        return;
    }
    for (int x = 0; x < ow; x++) {
        const float *w = t + (size_t)x * (size_t)g->s;
        float m = w[0];
        for (int d = 1; d < g->k; d++)
            m = max2(m, w[d]);
        o[x] = m;
    }
}

/* Floats of a row buffer for input width w: the -inf margins around it. */
static size_t row_buffer_floats(const pool_geom *g, int w)
{
    return (size_t)w + 2 * (size_t)g->p + (size_t)g->k + (size_t)g->s;
}

/* Output rows [r0, r1) of one plane: the max over each row window first
 * (into the W floats of t after its -inf margin), then along the row. */
static void pool_plane_rows(const pool_geom *g, const float *in, int h, int w, float *out, int r0,
                            int r1, int ow, float *t)
{
    const size_t n = row_buffer_floats(g, w);
    for (size_t i = 0; i < n; i++)
        t[i] = -INFINITY;
    float *c = t + g->p; /* column maxima */
    for (int oy = r0; oy < r1; oy++) {
        int lo, hi;
        window(g, oy, h, &lo, &hi);
        const float *src = in + (size_t)lo * (size_t)w;
        for (int x = 0; x < w; x++)
            c[x] = src[x];
        for (int y = lo + 1; y < hi; y++)
            max_into(c, in + (size_t)y * (size_t)w, w);
        pool_row_horizontal(g, t, ow, out + (size_t)oy * (size_t)ow);
    }
}

typedef struct {
    const op_args *a;
    pool_geom g;
} pool_job;

/* Items are output rows of all planes (item = plane * OH + row), so small
 * late layers with few planes still split evenly; t is the thread's slice
 * of the FAST backend's per-thread scratch. */
static void pool_range(void *arg, size_t begin, size_t end, int tid)
{
    const pool_job *j = arg;
    const op_args *a = j->a;
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    const size_t in_plane = (size_t)si.h * (size_t)si.w, out_plane = (size_t)so.h * (size_t)so.w;
    float *t = a->fast->scratch + (size_t)tid * convf_thread_scratch_floats();
    size_t i = begin;
    while (i < end) {
        size_t p = i / (size_t)so.h;
        int r0 = (int)(i % (size_t)so.h);
        int r1 = (size_t)so.h - (size_t)r0 < end - i ? so.h : r0 + (int)(end - i);
        float *out = a->out + p * out_plane;
        pool_plane_rows(&j->g, a->in[0] + p * in_plane, si.h, si.w, out, r0, r1, so.w, t);
        apply_activation(out + (size_t)r0 * (size_t)so.w, (size_t)(r1 - r0) * (size_t)so.w,
                         a->layer->act, a->layer->alpha);
        i += (size_t)(r1 - r0);
    }
}

static void pool_run(const op_args *a)
{
    const pool_geom g = layer_pool(a->layer);
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    if (a->fast && a->fast->scratch &&
        row_buffer_floats(&g, si.w) <= convf_thread_scratch_floats()) {
        pool_job j = {a, g};
        tpool_for(a->fast->pool, (size_t)so.n * (size_t)so.c * (size_t)so.h, pool_range, &j);
        return;
    }
    const size_t in_plane = (size_t)si.h * (size_t)si.w, out_plane = (size_t)so.h * (size_t)so.w;
    const size_t planes = (size_t)si.n * (size_t)si.c;
    for (size_t p = 0; p < planes; p++) {
        float *out = a->out + p * out_plane;
        pool_plane(&g, a->in[0] + p * in_plane, si.h, si.w, out, so.h, so.w, a->scratch);
        apply_activation(out, out_plane, a->layer->act, a->layer->alpha);
    }
}

static void pool_reference(const op_args *a)
{
    const pool_geom g = layer_pool(a->layer);
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    for (int n = 0; n < si.n; n++)
        for (int c = 0; c < si.c; c++) {
            const float *in = a->in[0] + ((size_t)n * (size_t)si.c + (size_t)c) * si.h * si.w;
            float *out = a->out + ((size_t)n * (size_t)so.c + (size_t)c) * so.h * so.w;
            for (int oy = 0; oy < so.h; oy++)
                for (int ox = 0; ox < so.w; ox++) {
                    float m = -INFINITY;
                    for (int ky = 0; ky < g.k; ky++)
                        for (int kx = 0; kx < g.k; kx++) {
                            int y = oy * g.s - g.p + ky, x = ox * g.s - g.p + kx;
                            float v = -INFINITY; /* padding */
                            if (y >= 0 && y < si.h && x >= 0 && x < si.w)
                                v = in[(size_t)y * (size_t)si.w + (size_t)x];
                            if (v > m)
                                m = v;
                        }
                    apply_activation(&m, 1, a->layer->act, a->layer->alpha);
                    out[(size_t)oy * (size_t)so.w + (size_t)ox] = m;
                }
        }
}

const op_vtable op_maxpool = {
    .name = "MaxPool2d",
    .shape = pool_shape,
    .flops = pool_flops,
    .scratch = pool_scratch,
    .run = pool_run,
    .run_reference = pool_reference,
};

const op_vtable op_mp = {
    .name = "MP",
    .shape = pool_shape,
    .flops = pool_flops,
    .scratch = pool_scratch,
    .run = pool_run,
    .run_reference = pool_reference,
};

const op_vtable op_sp = {
    .name = "SP",
    .shape = pool_shape,
    .flops = pool_flops,
    .scratch = pool_scratch,
    .run = pool_run,
    .run_reference = pool_reference,
};
