/*
 * The FAST backend's part of a context: its thread pool, the weights of
 * every Conv layer and Detect head packed for the microkernels, and per
 * plan the choice of the layers Winograd runs (with their transformed
 * weights) and the scratch they need. graph.c calls graph_fast_setup() from
 * yolo_ctx_create and graph_fast_plan() from planning; running stays in
 * graph.c.
 *
 * The packed weights belong to the model (struct model_fast below), not to
 * the ctx: each layout of each layer is made once, by the first ctx create
 * or plan that needs it, under the model's mutex, and every later ctx of
 * the model points at the same copy (a second ctx packs nothing). They are
 * freed with the model, which outlives its contexts (yolo.h). Once a
 * tensor is packed, FAST no longer reads its raw copy in the file mapping,
 * so its pages are dropped from memory (drop_raw_pages) and the process
 * does not hold the weights twice.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* Floats of the direct packing of layer l: a Conv's matrix, or Detect's
 * level matrices back to back (1x1 heads: c_out na*no, depth c_in); 0 for
 * other layers. */
static size_t direct_floats(const model_layer *l)
{
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

/* ---- the model's packed weights, shared by its contexts -------------------- */

/* Made on first need by a ctx create or plan, kept until the model is
 * freed; lock guards the arrays and the packing (contexts on one model may
 * be created and planned from several threads). Once made, a buffer never
 * changes, so runs read it without the lock. */
struct model_fast {
    pthread_mutex_t lock;
    float **direct; /* per layer: direct_floats() floats, or NULL */
    float **wino;   /* per layer: Winograd-transformed weights, or NULL */
};

yolo_status graph_fast_model_init(yolo_model *m)
{
    struct model_fast *f = calloc(1, sizeof *f);
    if (!f)
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory", m->path);
    f->direct = calloc((size_t)m->n_layers, sizeof *f->direct);
    f->wino = calloc((size_t)m->n_layers, sizeof *f->wino);
    if (!f->direct || !f->wino || pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f->direct);
        free(f->wino);
        free(f);
        return yolo_fail(YOLO_ERR_NOMEM, "%s: out of memory", m->path);
    }
    m->fast = f;
    return YOLO_OK;
}

void graph_fast_model_free(yolo_model *m)
{
    struct model_fast *f = m->fast;
    if (!f)
        return;
    for (int i = 0; i < m->n_layers; i++) {
        free(f->direct[i]);
        free(f->wino[i]);
    }
    free(f->direct);
    free(f->wino);
    pthread_mutex_destroy(&f->lock);
    free(f);
    m->fast = NULL;
}

/* The raw weights of a packed tensor are not read by FAST any more: the
 * pages wholly inside it leave memory (madvise). The mapping is private and
 * read-only, so a later reader (a GEMM or REFERENCE ctx, another packing)
 * faults them in again from the file, unchanged. Only for file mappings
 * (map_droppable); a failed madvise just keeps the pages. */
static void drop_raw_pages(const yolo_model *m, const model_tensor *t)
{
    long ps = sysconf(_SC_PAGESIZE);
    if (!m->map_droppable || ps <= 0)
        return;
    uintptr_t page = (uintptr_t)ps;
    uintptr_t b = (uintptr_t)t->data, e = b + t->elems * sizeof(float);
    uintptr_t lo = (b + page - 1) / page * page, hi = e / page * page;
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

static float *alloc_floats(size_t n)
{
    return aligned_alloc(ARENA_ALIGN, align_up((n ? n : 16) * sizeof(float), ARENA_ALIGN));
}

/* Layer i's direct packing, made now if not yet; NULL when out of memory.
 * Caller holds the lock. */
static const float *model_direct(const yolo_model *m, int i)
{
    struct model_fast *f = m->fast;
    if (f->direct[i])
        return f->direct[i];
    const model_layer *l = &m->layers[i];
    float *dst = alloc_floats(direct_floats(l));
    if (!dst)
        return NULL;
    if (graph_is_conv(l)) {
        convf_pack_weights(l->tensors[0]->data, l->c_out, conv_depth(l), dst);
        drop_raw_pages(m, l->tensors[0]);
    } else {
        float *at = dst;
        for (int lvl = 0; lvl < l->n_inputs; lvl++) {
            const model_tensor *w = l->tensors[2 * lvl];
            convf_pack_weights(w->data, w->shape[0], (size_t)w->shape[1], at);
            at += convf_packed_span(w->shape[0], (size_t)w->shape[1]);
            drop_raw_pages(m, w);
        }
    }
    f->direct[i] = dst;
    return dst;
}

/* Layer i's Winograd-transformed weights (c_in -> c_out), made now if not
 * yet; NULL when out of memory. Caller holds the lock. */
static const float *model_wino(const yolo_model *m, int i, int c_in, int c_out)
{
    struct model_fast *f = m->fast;
    if (f->wino[i])
        return f->wino[i];
    const model_layer *l = &m->layers[i];
    float *dst = alloc_floats(wino_packed_floats(c_out, c_in));
    if (!dst)
        return NULL;
    wino_pack_weights(l->tensors[0]->data, c_out, c_in, dst);
    drop_raw_pages(m, l->tensors[0]);
    f->wino[i] = dst;
    return dst;
}

/* Points the ctx at the direct packing of every Conv layer (except the
 * Winograd candidates, left to the plan) and Detect head, made by the
 * first ctx that needs them. */
static yolo_status use_packed(yolo_ctx *c)
{
    const yolo_model *m = c->model;
    if (m->n_layers < 1)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: model has no layers");
    if (!m->fast)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_ctx_create: %s was not made by yolo_model_load (no packed-weight "
                         "store)",
                         m->path);
    c->packed_layer = calloc((size_t)m->n_layers, sizeof *c->packed_layer);
    if (!c->packed_layer)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_ctx_create: out of memory");
    yolo_status st = YOLO_OK;
    pthread_mutex_lock(&m->fast->lock);
    for (int i = 0; i < m->n_layers && st == YOLO_OK; i++) {
        const model_layer *l = &m->layers[i];
        size_t n = direct_floats(l);
        if (n == 0 || wino_layer_candidate(l))
            continue;
        c->packed_layer[i] = model_direct(m, i);
        if (!c->packed_layer[i])
            st = yolo_fail(YOLO_ERR_NOMEM,
                           "yolo_ctx_create: out of memory packing layer %d's weights (%zu "
                           "floats)",
                           i, n);
        c->packed_bytes += n * sizeof(float);
    }
    pthread_mutex_unlock(&m->fast->lock);
    return st;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

yolo_status graph_fast_setup(yolo_ctx *c, yolo_isa isa)
{
    int threads = c->params.threads > 0 ? c->params.threads : online_cpus();
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    yolo_status st = tpool_create(threads, &c->pool);
    if (st != YOLO_OK)
        return st;
    c->kernels = kernels_for(isa);
    if (!c->kernels)
        return yolo_fail(YOLO_ERR_INTERNAL, "yolo_ctx_create: no kernels for ISA %s",
                         yolo_isa_name(isa));
    size_t bytes = (size_t)tpool_threads(c->pool) * convf_thread_scratch_floats() * sizeof(float);
    if (bytes > (size_t)MAX_THREADS * convf_thread_scratch_floats() * sizeof(float))
        return yolo_fail(YOLO_ERR_INTERNAL, "yolo_ctx_create: bad thread count");
    c->thread_scratch = aligned_alloc(ARENA_ALIGN, align_up(bytes, ARENA_ALIGN));
    c->wino_packed = calloc((size_t)c->model->n_layers, sizeof *c->wino_packed);
    c->wino_on = calloc((size_t)c->model->n_layers, sizeof *c->wino_on);
    c->wino_direct = calloc((size_t)c->model->n_layers, sizeof *c->wino_direct);
    if (!c->thread_scratch || !c->wino_packed || !c->wino_on || !c->wino_direct)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_ctx_create: out of memory for thread scratch");
    return use_packed(c);
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

/* A Winograd candidate that this plan runs directly: its direct packing
 * (kept in wino_direct). Caller holds the model's lock. */
static int use_direct(yolo_ctx *ctx, int i)
{
    if (ctx->packed_layer[i])
        return 1;
    const float *p = model_direct(ctx->model, i);
    if (!p)
        return 0;
    ctx->packed_bytes += direct_floats(&ctx->model->layers[i]) * sizeof(float);
    ctx->wino_direct[i] = p;
    ctx->packed_layer[i] = p;
    return 1;
}

/* Picks the Conv layers Winograd runs for this shape; their weights,
 * shared through the model; the largest scratch any of them needs. Caller
 * holds the model's lock. */
static yolo_status choose_layers(yolo_ctx *ctx, yolo_shape input, size_t *per, size_t *shared)
{
    const yolo_model *m = ctx->model;
    for (int i = 0; i < m->n_layers; i++) {
        const model_layer *l = &m->layers[i];
        ctx->wino_on[i] = 0;
        if (!graph_is_conv(l))
            continue;
        conv_geom g = conv_layer_geom(ctx, i, input);
        if (ctx->winograd_off || !wino_worthwhile(&g)) {
            if (!use_direct(ctx, i))
                return yolo_fail(YOLO_ERR_NOMEM, "out of memory packing layer %d's weights", i);
            continue;
        }
        if (!ctx->wino_packed[i]) {
            ctx->wino_packed[i] = model_wino(m, i, g.c_in, g.c_out);
            if (!ctx->wino_packed[i])
                return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd weights (%zu floats)",
                                 wino_packed_floats(g.c_out, g.c_in));
            ctx->packed_bytes += wino_packed_floats(g.c_out, g.c_in) * sizeof(float);
        }
        ctx->wino_on[i] = 1;
        size_t t = align_up(wino_thread_scratch_floats(g.c_in, g.c_out), 16);
        *per = t > *per ? t : *per;
        t = wino_shared_floats(&g, tpool_threads(ctx->pool));
        *shared = t > *shared ? t : *shared;
    }
    return YOLO_OK;
}

/* FAST: picks the Conv layers Winograd runs for this shape (wino_worthwhile),
 * makes their transformed weights (or the direct packing of candidates it
 * does not pick) if no ctx of the model has, sizes the scratch. */
yolo_status graph_fast_plan(yolo_ctx *ctx, yolo_shape input)
{
    if (!ctx->wino_on)
        return YOLO_OK;
    size_t per = 0, shared = 0;
    pthread_mutex_lock(&ctx->model->fast->lock);
    yolo_status st = choose_layers(ctx, input, &per, &shared);
    pthread_mutex_unlock(&ctx->model->fast->lock);
    if (st != YOLO_OK)
        return st;
    ctx->wino_per_thread = per;
    if (per && !graph_ensure_buffer(&ctx->wino_scratch, &ctx->wino_scratch_cap,
                                    (size_t)tpool_threads(ctx->pool) * per * sizeof(float)))
        return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd scratch");
    if (shared &&
        !graph_ensure_buffer(&ctx->wino_shared, &ctx->wino_shared_cap, shared * sizeof(float)))
        return yolo_fail(YOLO_ERR_NOMEM, "out of memory for Winograd scratch");
    return YOLO_OK;
}
