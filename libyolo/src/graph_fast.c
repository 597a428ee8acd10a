/*
 * The FAST backend's part of a context: its thread pool, the weights of
 * every Conv layer and Detect head packed for the microkernels at ctx
 * creation, and per plan the choice of the layers Winograd runs (with their
 * transformed weights, packed once and kept) and the scratch they need.
 * graph.c calls graph_fast_setup() from yolo_ctx_create and
 * graph_fast_plan() from planning; running stays in graph.c.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph.h"

/* The Conv layer's im2col depth Cin*k*k, from its validated weight tensor. */
static size_t conv_depth(const model_layer *l)
{
    return l->tensors[0]->elems / (size_t)l->c_out;
}

/* A Conv layer that will likely run through Winograd: its direct packing
 * is made only if a plan does not select it (wino_direct). */
static int wino_layer_candidate(const model_layer *l)
{
    return graph_is_conv(l) && l->tensors[0]->ndim == 4 &&
           wino_candidate(l->kernel, l->stride, l->pad, l->tensors[0]->shape[1], l->c_out);
}

/* Floats of packed weights layer l needs at ctx creation: a Conv's matrix
 * (not for Winograd candidates), or Detect's level matrices back to back
 * (1x1 heads: c_out na*no, depth c_in). */
static size_t packed_floats_of(const model_layer *l)
{
    if (wino_layer_candidate(l))
        return 0;
    if (graph_is_conv(l))
        return convf_packed_span(l->c_out, conv_depth(l));
    size_t total = 0;
    if (l->type == LAYER_DETECT)
        for (int lvl = 0; lvl < l->n_inputs; lvl++) {
            const model_tensor *w = l->tensors[2 * lvl];
            total += convf_packed_span(w->shape[0], (size_t)w->shape[1]);
        }
    return total;
}

static void pack_layer(const model_layer *l, float *dst)
{
    if (graph_is_conv(l)) {
        convf_pack_weights(l->tensors[0]->data, l->c_out, conv_depth(l), dst);
        return;
    }
    for (int lvl = 0; lvl < l->n_inputs; lvl++) {
        const model_tensor *w = l->tensors[2 * lvl];
        convf_pack_weights(w->data, w->shape[0], (size_t)w->shape[1], dst);
        dst += convf_packed_span(w->shape[0], (size_t)w->shape[1]);
    }
}

/* Packs every Conv layer's and Detect head's weights for the microkernels
 * into one buffer. (Owned by the ctx: the model is immutable; moving this
 * to load time would let contexts share it.) */
static yolo_status pack_all(yolo_ctx *c)
{
    const yolo_model *m = c->model;
    size_t total = 0;
    if (m->n_layers < 1)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: model has no layers");
    for (int i = 0; i < m->n_layers; i++)
        total += packed_floats_of(&m->layers[i]);
    c->packed_layer = calloc((size_t)m->n_layers, sizeof *c->packed_layer);
    c->packed = aligned_alloc(ARENA_ALIGN, align_up((total ? total : 16) * sizeof(float),
                                                    ARENA_ALIGN));
    if (!c->packed_layer || !c->packed)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_ctx_create: out of memory packing %zu weights",
                         total);
    c->packed_bytes += total * sizeof(float);
    size_t off = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const model_layer *l = &m->layers[i];
        size_t n = packed_floats_of(l);
        if (n == 0)
            continue;
        pack_layer(l, c->packed + off);
        c->packed_layer[i] = c->packed + off;
        off += n;
    }
    return YOLO_OK;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

yolo_status graph_fast_setup(yolo_ctx *c)
{
    int threads = c->params.threads > 0 ? c->params.threads : online_cpus();
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    yolo_status st = tpool_create(threads, &c->pool);
    if (st != YOLO_OK)
        return st;
    c->isa = convf_best_isa();
    c->kernel = convf_kernel_for(c->isa);
    size_t bytes = (size_t)tpool_threads(c->pool) * convf_thread_scratch_floats() * sizeof(float);
    if (bytes > (size_t)MAX_THREADS * convf_thread_scratch_floats() * sizeof(float))
        return yolo_fail(YOLO_ERR_INTERNAL, "yolo_ctx_create: bad thread count");
    c->thread_scratch = aligned_alloc(ARENA_ALIGN, align_up(bytes, ARENA_ALIGN));
    c->wino_packed = calloc((size_t)c->model->n_layers, sizeof *c->wino_packed);
    c->wino_on = calloc((size_t)c->model->n_layers, sizeof *c->wino_on);
    c->wino_direct = calloc((size_t)c->model->n_layers, sizeof *c->wino_direct);
    if (!c->thread_scratch || !c->wino_packed || !c->wino_on || !c->wino_direct)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_ctx_create: out of memory for thread scratch");
    return pack_all(c);
}

/* Grows a 64-aligned buffer; keeps the old one when it is big enough. */
int graph_ensure_buffer(float **buf, size_t *cap, size_t bytes)
{
    if (*buf && *cap >= bytes)
        return 1;
    size_t size = align_up(bytes ? bytes : ARENA_ALIGN, ARENA_ALIGN);
    void *p = aligned_alloc(ARENA_ALIGN, size);
    if (!p)
        return 0;
    free(*buf);
    *buf = p;
    *cap = size;
    return 1;
}

static conv_geom conv_layer_geom(const yolo_ctx *ctx, int i, yolo_shape input)
{
    const model_layer *l = &ctx->model->layers[i];
    yolo_shape in = l->inputs[0] < 0 ? input : ctx->shapes[l->inputs[0]];
    yolo_shape out = ctx->shapes[i];
    conv_geom g = {.c_in = in.c, .h = in.h, .w = in.w, .c_out = out.c, .k = l->kernel,
                   .stride = l->stride, .pad = l->pad, .oh = out.h, .ow = out.w};
    return g;
}

/* A Winograd candidate that this plan runs directly: packs its weights for
 * the direct kernel (once; kept in wino_direct). */
static int ensure_direct_packed(yolo_ctx *ctx, int i)
{
    const model_layer *l = &ctx->model->layers[i];
    if (ctx->packed_layer[i])
        return 1;
    size_t n = convf_packed_floats(l->c_out, conv_depth(l));
    ctx->wino_direct[i] = aligned_alloc(ARENA_ALIGN, align_up(n * sizeof(float), ARENA_ALIGN));
    if (!ctx->wino_direct[i])
        return 0;
    ctx->packed_bytes += n * sizeof(float);
    convf_pack_weights(l->tensors[0]->data, l->c_out, conv_depth(l), ctx->wino_direct[i]);
    ctx->packed_layer[i] = ctx->wino_direct[i];
    return 1;
}

/* FAST: picks the Conv layers Winograd runs for this shape (wino_worthwhile),
 * packs their transformed weights if not done yet, sizes the scratch. */
yolo_status graph_fast_plan(yolo_ctx *ctx, yolo_shape input)
{
    const yolo_model *m = ctx->model;
    size_t per = 0, shared = 0;
    for (int i = 0; ctx->wino_on && i < m->n_layers; i++) {
        const model_layer *l = &m->layers[i];
        ctx->wino_on[i] = 0;
        if (!graph_is_conv(l))
            continue;
        if (ctx->winograd_off) {
            if (!ensure_direct_packed(ctx, i))
                return yolo_fail(YOLO_ERR_NOMEM, "out of memory packing layer %d's weights", i);
            continue;
        }
        conv_geom g = conv_layer_geom(ctx, i, input);
        if (!wino_worthwhile(&g)) {
            if (!ensure_direct_packed(ctx, i))
                return yolo_fail(YOLO_ERR_NOMEM, "out of memory packing layer %d's weights", i);
            continue;
        }
        if (!ctx->wino_packed[i]) {
            size_t n = wino_packed_floats(g.c_out, g.c_in);
            ctx->wino_packed[i] = aligned_alloc(ARENA_ALIGN, align_up(n * sizeof(float),
                                                                      ARENA_ALIGN));
            if (!ctx->wino_packed[i])
                return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd weights (%zu floats)",
                                 n);
            ctx->packed_bytes += n * sizeof(float);
            wino_pack_weights(l->tensors[0]->data, g.c_out, g.c_in, ctx->wino_packed[i]);
        }
        ctx->wino_on[i] = 1;
        size_t t = align_up(wino_thread_scratch_floats(g.c_in, g.c_out), 16);
        per = t > per ? t : per;
        t = wino_shared_floats(&g, tpool_threads(ctx->pool));
        shared = t > shared ? t : shared;
    }
    ctx->wino_per_thread = per;
    if (per && !graph_ensure_buffer(&ctx->wino_scratch, &ctx->wino_scratch_cap,
                              (size_t)tpool_threads(ctx->pool) * per * sizeof(float)))
        return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd scratch");
    if (shared && !graph_ensure_buffer(&ctx->wino_shared, &ctx->wino_shared_cap,
                                 shared * sizeof(float)))
        return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd scratch");
    return YOLO_OK;
}
