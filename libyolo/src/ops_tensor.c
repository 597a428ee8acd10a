/*
 * Layers that move or sum whole tensors: Concat (channels, in input order),
 * Upsample (nearest, integer factor `kernel`), Shortcut and Add (element-wise
 * sum of equal-shape inputs, in input order, then the layer's activation),
 * ReOrg (space-to-depth: channel block b in {0,1,2,3} holds input pixel
 * (2y+dy, 2x+dx) with (dy,dx) = (0,0), (1,0), (0,1), (1,1)).
 *
 * Every layer applies its `act` to its output (normally none here).
 * FLOPs: one per add or activation; pure data movement counts zero.
 * Shortcut and Add may run in place (out == in[0]); the others may not.
 */
#include <limits.h>
#include <string.h>

#include "internal.h"

static size_t plane_of(yolo_shape s)
{
    return (size_t)s.h * (size_t)s.w;
}

static size_t item_of(yolo_shape s)
{
    return (size_t)s.c * plane_of(s);
}

static size_t no_scratch(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)l, (void)in, (void)n_in, (void)out;
    return 0;
}

static uint64_t act_only_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)in, (void)n_in;
    return l->act != YOLO_ACT_NONE ? shape_elems(out) : 0;
}

/* The FAST backend's pool, or NULL (tpool_for then runs inline). */
static yolo_pool *op_pool(const op_args *a)
{
    return a->fast ? a->fast->pool : NULL;
}

static void finish(const op_args *a)
{
    apply_activation(a->out, shape_elems(a->out_shape), a->layer->act, a->layer->alpha);
}

/* ---- Concat ------------------------------------------------------------------ */

static yolo_status concat_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                                int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, YOLO_MAX_INPUTS);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st != YOLO_OK)
        return st;
    int64_t c = 0;
    for (int i = 0; i < n_in; i++) {
        if (in[i].h != in[0].h || in[i].w != in[0].w)
            return yolo_fail(
                YOLO_ERR_FORMAT,
                "Concat layer (model.%d): input %d is %dx%d, expected %dx%d as input 0",
                l->source_index, i, in[i].h, in[i].w, in[0].h, in[0].w);
        c += in[i].c;
    }
    if (c > INT_MAX)
        return yolo_fail(YOLO_ERR_FORMAT, "Concat layer (model.%d): too many channels",
                         l->source_index);
    *out = in[0];
    out->c = (int)c;
    return ops_check_output(l, *out);
}

/* Each input's channels of one batch item are contiguous in both tensors,
 * so the output is one run of copies, item by item, input by input. The
 * FAST backend splits it into CONCAT_CHUNK-float pieces over its threads
 * (at batch 1 most inputs are planned into their slice and not copied;
 * at batch 8 the copies were ~7% of yolov7-tiny's forward on one thread). */
#define CONCAT_CHUNK 16384

typedef struct {
    const op_args *a;
} concat_job;

/* Output floats [o, o_end): whatever inputs they come from. */
static void concat_span(const op_args *a, size_t o, size_t o_end)
{
    const size_t out_item = item_of(a->out_shape);
    while (o < o_end) {
        size_t b = o / out_item, r = o % out_item;
        int i = 0;
        size_t n = item_of(a->in_shape[0]);
        while (r >= n) { /* the input holding offset r of the item */
            r -= n;
            n = item_of(a->in_shape[++i]);
        }
        size_t len = n - r < o_end - o ? n - r : o_end - o;
        memcpy(a->out + o, a->in[i] + b * n + r, len * sizeof *a->out);
        apply_activation(a->out + o, len, a->layer->act, a->layer->alpha);
        o += len;
    }
}

static void concat_chunks(void *arg, size_t begin, size_t end, int tid)
{
    const op_args *a = ((const concat_job *)arg)->a;
    const size_t total = shape_elems(a->out_shape);
    size_t o_end = end * CONCAT_CHUNK;
    (void)tid;
    concat_span(a, begin * CONCAT_CHUNK, o_end < total ? o_end : total);
}

static void concat_run(const op_args *a)
{
    const size_t total = shape_elems(a->out_shape);
    concat_job j = {a};
    tpool_for(op_pool(a), (total + CONCAT_CHUNK - 1) / CONCAT_CHUNK, concat_chunks, &j);
}

static void concat_reference(const op_args *a)
{
    const yolo_shape so = a->out_shape;
    for (int b = 0; b < so.n; b++) {
        int c_out = 0;
        for (int i = 0; i < a->n_in; i++) {
            const yolo_shape si = a->in_shape[i];
            for (int c = 0; c < si.c; c++, c_out++)
                for (int y = 0; y < so.h; y++)
                    for (int x = 0; x < so.w; x++)
                        a->out[(((size_t)b * so.c + c_out) * so.h + y) * so.w + x] =
                            a->in[i][(((size_t)b * si.c + c) * si.h + y) * si.w + x];
        }
    }
    finish(a);
}

const op_vtable op_concat = {
    .name = "Concat",
    .shape = concat_shape,
    .flops = act_only_flops,
    .scratch = no_scratch,
    .run = concat_run,
    .run_reference = concat_reference,
};

/* ---- Upsample ------------------------------------------------------------------ */

static yolo_status upsample_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                                  int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st != YOLO_OK)
        return st;
    const int f = l->kernel;
    if (f < 1 || f > 64)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "Upsample layer (model.%d): scale factor %d, expected 1..64",
                         l->source_index, f);
    *out = in[0];
    /* Bounded before multiplying so the int product cannot overflow. */
    if ((int64_t)in[0].h * f > INT_MAX || (int64_t)in[0].w * f > INT_MAX)
        return yolo_fail(YOLO_ERR_FORMAT, "Upsample layer (model.%d): output too large",
                         l->source_index);
    out->h = in[0].h * f;
    out->w = in[0].w * f;
    return ops_check_output(l, *out);
}

/* Builds each output row once, then repeats it f-1 times. */
/* Planes [begin, end): each input pixel f times along the row, then the
 * row f - 1 more times; the activation on the planes written. */
typedef struct {
    const op_args *a;
} upsample_job;

static void upsample_planes(void *arg, size_t begin, size_t end, int tid)
{
    const op_args *a = ((const upsample_job *)arg)->a;
    const int f = a->layer->kernel;
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    const size_t ow = (size_t)so.w;
    (void)tid;
    for (size_t p = begin; p < end; p++) {
        const float *src = a->in[0] + p * plane_of(si);
        float *dst = a->out + p * plane_of(so);
        for (int y = 0; y < si.h; y++, src += si.w) {
            float *row = dst;
            for (int x = 0; x < si.w; x++)
                for (int r = 0; r < f; r++)
                    *dst++ = src[x];
            for (int r = 1; r < f; r++, dst += ow)
                memcpy(dst, row, ow * sizeof *dst);
        }
        apply_activation(a->out + p * plane_of(so), plane_of(so), a->layer->act,
                         a->layer->alpha);
    }
}

/* Planes split over the FAST backend's threads (one range each; inline
 * without a pool). */
static void upsample_run(const op_args *a)
{
    const yolo_shape si = a->in_shape[0];
    const size_t planes = (size_t)si.n * (size_t)si.c;
    upsample_job j = {a};
    tpool_for(op_pool(a), planes, upsample_planes, &j);
}

/* out[y][x] = in[y / f][x / f]. */
static void upsample_reference(const op_args *a)
{
    const int f = a->layer->kernel;
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    for (int n = 0; n < so.n; n++)
        for (int c = 0; c < so.c; c++)
            for (int y = 0; y < so.h; y++)
                for (int x = 0; x < so.w; x++)
                    a->out[(((size_t)n * so.c + c) * so.h + y) * so.w + x] =
                        a->in[0][(((size_t)n * si.c + c) * si.h + y / f) * si.w + x / f];
    finish(a);
}

const op_vtable op_upsample = {
    .name = "Upsample",
    .shape = upsample_shape,
    .flops = act_only_flops,
    .scratch = no_scratch,
    .run = upsample_run,
    .run_reference = upsample_reference,
};

/* ---- Shortcut / Add --------------------------------------------------------------- */

static yolo_status sum_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                             int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 2, YOLO_MAX_INPUTS);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st != YOLO_OK)
        return st;
    for (int i = 1; i < n_in; i++)
        if (in[i].c != in[0].c || in[i].h != in[0].h || in[i].w != in[0].w)
            return yolo_fail(
                YOLO_ERR_FORMAT,
                "%s layer (model.%d): input %d is [%d,%d,%d], expected [%d,%d,%d] as input 0",
                layer_type_name(l), l->source_index, i, in[i].c, in[i].h, in[i].w, in[0].c, in[0].h,
                in[0].w);
    *out = in[0];
    return YOLO_OK;
}

/* (n_in - 1) adds per element, plus the activation. */
static uint64_t sum_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    return shape_elems(out) * (uint64_t)(n_in - 1) + act_only_flops(l, in, n_in, out);
}

/* Accumulates input by input over the whole tensor (vectorisable); the
 * order of the adds is the reference's, so results are identical. */
static void sum_run(const op_args *a)
{
    const size_t n = shape_elems(a->out_shape);
    const float *x0 = a->in[0], *x1 = a->in[1];
    float *y = a->out;
    for (size_t i = 0; i < n; i++)
        y[i] = x0[i] + x1[i];
    for (int k = 2; k < a->n_in; k++) {
        const float *xk = a->in[k];
        for (size_t i = 0; i < n; i++)
            y[i] += xk[i];
    }
    finish(a);
}

static void sum_reference(const op_args *a)
{
    const size_t n = shape_elems(a->out_shape);
    for (size_t i = 0; i < n; i++) {
        float s = a->in[0][i];
        for (int k = 1; k < a->n_in; k++)
            s += a->in[k][i];
        a->out[i] = s;
    }
    finish(a);
}

const op_vtable op_shortcut = {
    .name = "Shortcut",
    .shape = sum_shape,
    .flops = sum_flops,
    .scratch = no_scratch,
    .run = sum_run,
    .run_reference = sum_reference,
};

/* The branches of an unfused RepConv: the same sum, then `act`. */
const op_vtable op_add = {
    .name = "Add",
    .shape = sum_shape,
    .flops = sum_flops,
    .scratch = no_scratch,
    .run = sum_run,
    .run_reference = sum_reference,
};

/* ---- ReOrg ----------------------------------------------------------------------- */

/* Input pixel offset (dy, dx) of channel block b. */
static const int reorg_dy[4] = {0, 1, 0, 1};
static const int reorg_dx[4] = {0, 0, 1, 1};

static yolo_status reorg_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                               int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st != YOLO_OK)
        return st;
    if (in[0].h % 2 || in[0].w % 2)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "ReOrg layer (model.%d): input %dx%d, expected even sizes",
                         l->source_index, in[0].h, in[0].w);
    if (in[0].c > INT_MAX / 4)
        return yolo_fail(YOLO_ERR_FORMAT, "ReOrg layer (model.%d): too many channels",
                         l->source_index);
    *out = (yolo_shape){in[0].n, in[0].c * 4, in[0].h / 2, in[0].w / 2};
    return ops_check_output(l, *out);
}

/* Per output row: a strided gather from one input row. */
static void reorg_run(const op_args *a)
{
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    float *dst = a->out;
    for (int n = 0; n < si.n; n++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < si.c; c++) {
                const float *plane = a->in[0] + ((size_t)n * si.c + c) * plane_of(si);
                for (int y = 0; y < so.h; y++, dst += so.w) {
                    const float *src = plane + (size_t)(2 * y + reorg_dy[b]) * si.w + reorg_dx[b];
                    for (int x = 0; x < so.w; x++)
                        dst[x] = src[2 * x];
                }
            }
    finish(a);
}

/* out[b*C + c][y][x] = in[c][2y + dy_b][2x + dx_b]. */
static void reorg_reference(const op_args *a)
{
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    for (int n = 0; n < si.n; n++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < si.c; c++)
                for (int y = 0; y < so.h; y++)
                    for (int x = 0; x < so.w; x++) {
                        int iy = 2 * y + reorg_dy[b], ix = 2 * x + reorg_dx[b];
                        a->out[(((size_t)n * so.c + (size_t)b * si.c + c) * so.h + y) * so.w + x] =
                            a->in[0][(((size_t)n * si.c + c) * si.h + iy) * si.w + ix];
                    }
    finish(a);
}

const op_vtable op_reorg = {
    .name = "ReOrg",
    .shape = reorg_shape,
    .flops = act_only_flops,
    .scratch = no_scratch,
    .run = reorg_run,
    .run_reference = reorg_reference,
};
