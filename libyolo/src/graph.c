/*
 * Graph planning and execution, and the context that holds them.
 *
 * Planning (yolo_ctx_plan) happens once per input shape: every layer's
 * output shape and FLOPs come from its op's shape()/flops(), the im2col
 * scratch is sized for the largest layer, and all layer outputs are packed
 * into ONE arena. Each output lives from the step that produces it to the
 * step of its last consumer (the Detect output to the end); outputs whose
 * lifetimes overlap get disjoint memory, placed largest first at the lowest
 * 64-aligned offset that fits. With keep_all every output lives to the end,
 * so every yolo_layer_output() stays readable.
 *
 * Concat costs nothing at batch 1 on the FAST and GEMM backends: a layer
 * whose output is an input of a Concat (and not yet placed in another one)
 * is planned inside the Concat's output, at its channel offset, so the
 * producer writes its slice directly and the Concat has nothing to copy.
 * The Concat's memory then lives from its first member's production to the
 * last use of any member; inside it, each member writes only its own slice
 * and nothing else is placed there, so every member stays readable for as
 * long as it would alone. (At batch > 1 a channel slice of an NCHW tensor
 * is not contiguous, so nothing is aliased.)
 *
 * Running (yolo_forward) is a loop over the op table with no allocation and
 * no clock read unless a layer callback was given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu.h"
#include "graph.h"

/* OpenBLAS's own entry points; declared here to avoid including cblas.h. */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

#define MAX_BATCH 4096
#define MAX_SIDE 65536

struct plan_span {
    size_t bytes; /* sorting key when ordering, unused when placing */
    size_t off, end;
    int idx;
};


/* ---- shape inference (shared with the loader) ---------------------------- */

/* Prefixes the op's message with the model path and the layer. */
static yolo_status layer_fail(const yolo_model *m, int i, yolo_status st)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", yolo_last_error());
    const model_layer *l = &m->layers[i];
    return yolo_fail(st, "%s: layer %d (%s, source %d): %s", m->path, i, layer_type_name(l),
                     l->source_index, msg);
}

static int checked_elems(yolo_shape s, size_t *out)
{
    if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1)
        return 0;
    size_t e = (size_t)s.n;
    int dims[3] = {s.c, s.h, s.w};
    for (int k = 0; k < 3; k++) {
        if ((size_t)dims[k] > GRAPH_MAX_ELEMS / e)
            return 0;
        e *= (size_t)dims[k];
    }
    *out = e;
    return 1;
}

/* The Detect head decodes level l on a grid of input/stride_l cells, so its
 * inputs must have exactly that size; its output is [n, 1, rows, nc + 5]. */
static yolo_status check_detect(const yolo_model *m, int i, const yolo_shape *in,
                                yolo_shape input, yolo_shape out)
{
    const yolo_model_info *info = &m->info;
    size_t rows = 0;
    for (int lvl = 0; lvl < info->num_levels; lvl++) {
        int s = info->strides[lvl];
        if ((size_t)in[lvl].h * (size_t)s != (size_t)input.h ||
            (size_t)in[lvl].w * (size_t)s != (size_t)input.w)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s: layer %d (Detect): input %d (layer %d) is %dx%d but level %d has "
                             "stride %d, so a %dx%d input needs a %dx%d grid",
                             m->path, i, lvl, m->layers[i].inputs[lvl], in[lvl].h, in[lvl].w, lvl,
                             s, input.h, input.w, input.h / s, input.w / s);
        rows += (size_t)info->num_anchors * (size_t)in[lvl].h * (size_t)in[lvl].w;
    }
    if (out.n != input.n || out.c != 1 || (size_t)out.h != rows || out.w != info->num_outputs)
        return yolo_fail(YOLO_ERR_INTERNAL,
                         "%s: layer %d (Detect): op gave output %dx%dx%dx%d, expected %dx1x%zux%d",
                         m->path, i, out.n, out.c, out.h, out.w, input.n, rows,
                         info->num_outputs);
    return YOLO_OK;
}

static yolo_status infer_layer(const yolo_model *m, int i, yolo_shape input, yolo_shape *shapes)
{
    const model_layer *l = &m->layers[i];
    yolo_shape in[YOLO_MAX_INPUTS];
    for (int k = 0; k < l->n_inputs; k++)
        in[k] = l->inputs[k] < 0 ? input : shapes[l->inputs[k]];
    const op_vtable *op = op_lookup(l->type);
    if (!op)
        return yolo_fail(YOLO_ERR_FORMAT, "%s: layer %d: unknown layer type %d", m->path, i,
                         l->type);
    yolo_shape out = {0, 0, 0, 0};
    yolo_clear_error();
    yolo_status st = op->shape(m, l, in, l->n_inputs, &out);
    if (st != YOLO_OK)
        return layer_fail(m, i, st);
    size_t elems;
    if (!checked_elems(out, &elems))
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "%s: layer %d (%s): output shape %dx%dx%dx%d is empty or larger than "
                         "%zu elements",
                         m->path, i, layer_type_name(l), out.n, out.c, out.h, out.w,
                         GRAPH_MAX_ELEMS);
    if (l->type == LAYER_DETECT) {
        st = check_detect(m, i, in, input, out);
        if (st != YOLO_OK)
            return st;
    } else if (out.c != l->c_out) {
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s: layer %d (%s, source %d): c_out is %d but its inputs give %d "
                         "channels",
                         m->path, i, layer_type_name(l), l->source_index, l->c_out, out.c);
    }
    shapes[i] = out;
    return YOLO_OK;
}

yolo_status graph_infer_shapes(const yolo_model *model, yolo_shape input, yolo_shape *out)
{
    for (int i = 0; i < model->n_layers; i++) {
        yolo_status st = infer_layer(model, i, input, out);
        if (st != YOLO_OK)
            return st;
    }
    return YOLO_OK;
}

/* ---- context ---------------------------------------------------------------- */

yolo_ctx_params yolo_ctx_default_params(void)
{
    yolo_ctx_params p;
    memset(&p, 0, sizeof p);
    p.threads = 0;
    p.backend = YOLO_BACKEND_FAST;
    p.on_layer = NULL;
    p.user = NULL;
    p.isa = YOLO_ISA_AUTO;
    p.max_arena_bytes = YOLO_CTX_DEFAULT_MAX_ARENA_BYTES;
    return p;
}

yolo_status yolo_ctx_create(const yolo_model *model, const yolo_ctx_params *params,
                            yolo_ctx **out)
{
    yolo_clear_error();
    if (out)
        *out = NULL;
    if (!model || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: model and out must not be NULL");
    yolo_ctx_params p = params ? *params : yolo_ctx_default_params();
    if (p.threads < 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: threads is %d, must be >= 0",
                         p.threads);
    if (p.backend != YOLO_BACKEND_GEMM && p.backend != YOLO_BACKEND_REFERENCE &&
        p.backend != YOLO_BACKEND_FAST)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: unknown backend %d",
                         (int)p.backend);
    /* Every backend: a wrong ISA or YOLO_ISA is an error wherever it is set. */
    yolo_isa isa;
    yolo_status st = cpu_choose_isa(p.isa, &isa);
    if (st != YOLO_OK)
        return st;
    yolo_ctx *c = calloc(1, sizeof *c);
    size_t n = (size_t)model->n_layers;
    if (c) {
        c->plan = calloc(n, sizeof *c->plan);
        c->order = calloc(n, sizeof *c->order);
        c->shapes = calloc(n, sizeof *c->shapes);
        c->spans = calloc(n, sizeof *c->spans);
    }
    if (!c || !c->plan || !c->order || !c->shapes || !c->spans) {
        yolo_ctx_free(c);
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_ctx_create: out of memory for %zu layers", n);
    }
    c->model = model;
    if (p.max_arena_bytes == 0)
        p.max_arena_bytes = YOLO_CTX_DEFAULT_MAX_ARENA_BYTES;
    c->params = p;
    c->keep_all = p.backend == YOLO_BACKEND_REFERENCE || p.keep_layer_outputs;
    /* Valid wherever plan_concat_aliases applies it (batch 1, not
     * REFERENCE); members stay readable, so keep_all is unaffected. */
    c->concat_in_place = 1;
    c->winograd_off = p.no_winograd != 0;
    if (p.backend == YOLO_BACKEND_FAST) {
        st = graph_fast_setup(c, isa);
        if (st != YOLO_OK) {
            yolo_ctx_free(c);
            return st;
        }
    }
    *out = c;
    return YOLO_OK;
}

void yolo_ctx_free(yolo_ctx *ctx)
{
    if (!ctx)
        return;
    tpool_free(ctx->pool);
    /* the packed weights they point to are the model's */
    free(ctx->packed_layer);
    free(ctx->thread_scratch);
    free(ctx->wino_direct);
    free(ctx->wino_packed);
    free(ctx->wino_on);
    free(ctx->wino_scratch);
    free(ctx->wino_shared);
    free(ctx->plan);
    free(ctx->order);
    free(ctx->shapes);
    free(ctx->spans);
    free(ctx->arena);
    free(ctx->scratch);
    free(ctx->det_input);
    free(ctx->dets);
    free(ctx);
}

/* ---- planning --------------------------------------------------------------- */

/* The valid size closest to v for the error message. */
static int nearest_valid_side(int v, int ms)
{
    if (v < 1)
        return ms;
    if (v > MAX_SIDE)
        return MAX_SIDE / ms * ms;
    return (v + ms - 1) / ms * ms;
}

static yolo_status check_plan_args(const yolo_ctx *ctx, int batch, int height, int width)
{
    int ms = ctx->model->info.max_stride;
    if (batch < 1 || batch > MAX_BATCH)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "batch is %d, must be 1..%d", batch, MAX_BATCH);
    const char *names[2] = {"height", "width"};
    int v[2] = {height, width};
    for (int k = 0; k < 2; k++) {
        if (v[k] < 1 || v[k] > MAX_SIDE || v[k] % ms != 0) {
            return yolo_fail(YOLO_ERR_INVALID_ARG,
                             "input %s %d is not a positive multiple of the model's max stride %d "
                             "(nearest valid: %d)",
                             names[k], v[k], ms, nearest_valid_side(v[k], ms));
        }
    }
    return YOLO_OK;
}

/* Live ranges in steps: the network input is step 0, layer i runs at i + 1.
 * A layer's output lives until its last consumer; Detect's (and, with
 * keep_all, everyone's) until the end. */
static void compute_lifetimes(yolo_ctx *ctx)
{
    const yolo_model *m = ctx->model;
    int n = m->n_layers;
    for (int i = 0; i < n; i++) {
        ctx->plan[i].first = i + 1;
        ctx->plan[i].last = ctx->keep_all ? n + 1 : i + 1;
    }
    for (int j = 0; j < n; j++) {
        const model_layer *l = &m->layers[j];
        for (int k = 0; k < l->n_inputs; k++) {
            int p = l->inputs[k];
            if (p >= 0 && ctx->plan[p].last < j + 1)
                ctx->plan[p].last = j + 1;
        }
    }
    ctx->plan[n - 1].last = n + 1;
}

static int by_size_desc(const void *a, const void *b)
{
    const struct plan_span *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes > y->bytes ? -1 : 1;
    return x->idx - y->idx;
}

static int by_offset(const void *a, const void *b)
{
    const struct plan_span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Of two roots (their members' memory included). */
static int lifetimes_overlap(const layer_plan *a, const layer_plan *b)
{
    return a->span_first <= b->span_last && b->span_first <= a->span_last;
}

/* Lowest aligned offset for layer i that avoids every already placed output
 * alive at the same time (order[0..placed) are placed). */
static size_t find_offset(yolo_ctx *ctx, int i, int placed)
{
    int nc = 0;
    for (int k = 0; k < placed; k++) {
        const layer_plan *o = &ctx->plan[ctx->order[k]];
        if (lifetimes_overlap(o, &ctx->plan[i])) {
            ctx->spans[nc].off = o->offset;
            ctx->spans[nc].end = o->offset + o->bytes;
            nc++;
        }
    }
    qsort(ctx->spans, (size_t)nc, sizeof *ctx->spans, by_offset);
    size_t off = 0, need = ctx->plan[i].bytes;
    for (int k = 0; k < nc; k++) {
        if (off + need <= ctx->spans[k].off)
            break;
        if (ctx->spans[k].end > off)
            off = align_up(ctx->spans[k].end, ARENA_ALIGN);
    }
    return off;
}

/* Places producers into the channel slices of the Concats they feed (see
 * the file comment). Concat inputs are taken greedily, in layer order; an
 * input already in another Concat, the network input, or an input listed
 * twice is copied as usual. */
static void plan_concat_aliases(yolo_ctx *ctx)
{
    const yolo_model *m = ctx->model;
    const int n = m->n_layers;
    for (int i = 0; i < n; i++) {
        ctx->plan[i].alias_of = -1;
        ctx->plan[i].root = i;
        ctx->plan[i].alias_off = 0;
        ctx->plan[i].in_place = 0;
        ctx->plan[i].span_first = ctx->plan[i].first;
        ctx->plan[i].span_last = ctx->plan[i].last;
    }
    if (!ctx->concat_in_place || ctx->batch_planned != 1 ||
        ctx->params.backend == YOLO_BACKEND_REFERENCE)
        return;
    for (int i = 0; i < n; i++) {
        const model_layer *l = &m->layers[i];
        if (l->type != LAYER_CONCAT || l->act != YOLO_ACT_NONE)
            continue;
        size_t off = 0;
        for (int k = 0; k < l->n_inputs; k++) {
            int p = l->inputs[k];
            size_t bytes = p >= 0 ? shape_elems(ctx->plan[p].shape) * sizeof(float) : 0;
            int twice = 0;
            for (int q = 0; q < l->n_inputs; q++)
                twice |= q != k && l->inputs[q] == p;
            /* Offsets stay 64-aligned so the kernels' aligned loads hold;
             * planes of 16-multiple sizes (all of YOLO's) give that. */
            if (p >= 0 && !twice && ctx->plan[p].alias_of < 0 && off % ARENA_ALIGN == 0 &&
                m->layers[p].type != LAYER_DETECT) {
                ctx->plan[p].alias_of = i;
                ctx->plan[p].alias_off = off;
                ctx->plan[i].in_place |= 1u << k;
            }
            off += p >= 0 ? bytes : shape_elems(ctx->input_shape) * sizeof(float);
        }
    }
    /* Roots, and each root's lifetime covering all its members'. A Concat
     * comes after its inputs, so a parent's index is above its child's. */
    for (int i = n - 1; i >= 0; i--) {
        layer_plan *p = &ctx->plan[i];
        if (p->alias_of >= 0)
            p->root = ctx->plan[p->alias_of].root;
    }
    for (int i = 0; i < n; i++) {
        layer_plan *r = &ctx->plan[ctx->plan[i].root];
        if (ctx->plan[i].first < r->span_first)
            r->span_first = ctx->plan[i].first;
        if (ctx->plan[i].last > r->span_last)
            r->span_last = ctx->plan[i].last;
    }
}

static void place_outputs(yolo_ctx *ctx)
{
    int n = ctx->model->n_layers, nr = 0;
    for (int i = 0; i < n; i++) {
        if (ctx->plan[i].alias_of >= 0)
            continue;
        ctx->spans[nr].bytes = ctx->plan[i].bytes;
        ctx->spans[nr].idx = i;
        nr++;
    }
    qsort(ctx->spans, (size_t)nr, sizeof *ctx->spans, by_size_desc);
    for (int k = 0; k < nr; k++)
        ctx->order[k] = ctx->spans[k].idx;
    size_t total = 0;
    for (int k = 0; k < nr; k++) {
        layer_plan *p = &ctx->plan[ctx->order[k]];
        p->offset = find_offset(ctx, ctx->order[k], k);
        if (p->offset + p->bytes > total)
            total = p->offset + p->bytes;
    }
    ctx->arena_bytes = total;
    for (int i = n - 1; i >= 0; i--) {
        layer_plan *p = &ctx->plan[i];
        if (p->alias_of >= 0)
            p->offset = ctx->plan[p->alias_of].offset + p->alias_off;
    }
    /* An output stays readable after the run unless a later layer's output
     * shares its memory; members of one Concat share memory without
     * writing over each other. */
    for (int i = 0; i < n; i++) {
        layer_plan *p = &ctx->plan[i];
        p->intact = 1;
        for (int j = i + 1; j < n && p->intact; j++) {
            const layer_plan *q = &ctx->plan[j];
            if (q->root == p->root)
                continue;
            if (p->offset < q->offset + q->bytes && q->offset < p->offset + p->bytes)
                p->intact = 0;
        }
    }
}

static void plan_layers(yolo_ctx *ctx, yolo_shape input, size_t *scratch_floats)
{
    const yolo_model *m = ctx->model;
    yolo_shape in[YOLO_MAX_INPUTS];
    ctx->flops = 0;
    *scratch_floats = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const model_layer *l = &m->layers[i];
        const op_vtable *op = op_lookup(l->type);
        layer_plan *p = &ctx->plan[i];
        for (int k = 0; k < l->n_inputs; k++)
            in[k] = l->inputs[k] < 0 ? input : ctx->shapes[l->inputs[k]];
        p->shape = ctx->shapes[i];
        p->bytes = align_up(shape_elems(p->shape) * sizeof(float), ARENA_ALIGN);
        p->flops = op->flops ? op->flops(l, in, l->n_inputs, p->shape) : 0;
        ctx->flops += p->flops;
        size_t s = op->scratch ? op->scratch(l, in, l->n_inputs, p->shape) : 0;
        if (ctx->params.backend == YOLO_BACKEND_FAST && graph_is_conv(l))
            s = 0; /* convf_conv2d uses the per-thread scratch, no im2col */
        if (s > *scratch_floats)
            *scratch_floats = s;
    }
}

/* Before anything is allocated for the shape just planned. */
static yolo_status check_arena_limit(const yolo_ctx *ctx)
{
    uint64_t need = (uint64_t)ctx->arena_bytes + (uint64_t)ctx->scratch_bytes;
    uint64_t limit = ctx->params.max_arena_bytes;
    if (need <= limit)
        return YOLO_OK;
    yolo_shape s = ctx->input_shape;
    return yolo_fail(YOLO_ERR_NOMEM,
                     "%s: a %dx%dx%dx%d input needs %llu bytes of activation memory (arena %zu + "
                     "scratch %zu), more than this context's limit of %llu bytes "
                     "(yolo_ctx_params.max_arena_bytes)",
                     ctx->model->path, s.n, s.c, s.h, s.w, (unsigned long long)need,
                     ctx->arena_bytes, ctx->scratch_bytes, (unsigned long long)limit);
}

static yolo_status plan(yolo_ctx *ctx, int batch, int height, int width)
{
    ctx->planned = 0;
    ctx->has_output = 0;
    yolo_status st = check_plan_args(ctx, batch, height, width);
    if (st != YOLO_OK)
        return st;
    yolo_shape input = {batch, 3, height, width};
    st = graph_infer_shapes(ctx->model, input, ctx->shapes);
    if (st != YOLO_OK)
        return st;
    size_t scratch_floats;
    plan_layers(ctx, input, &scratch_floats);
    compute_lifetimes(ctx);
    ctx->batch_planned = batch;
    ctx->input_shape = input;
    plan_concat_aliases(ctx);
    place_outputs(ctx);
    ctx->scratch_bytes = scratch_floats * sizeof(float);
    st = check_arena_limit(ctx);
    if (st != YOLO_OK)
        return st;
    st = graph_fast_plan(ctx, input);
    if (st != YOLO_OK)
        return st;
    if (!graph_ensure_buffer(&ctx->arena, &ctx->arena_cap, ctx->arena_bytes))
        return yolo_fail(YOLO_ERR_NOMEM,
                         "cannot allocate a %zu-byte activation arena for %dx3x%dx%d",
                         ctx->arena_bytes, batch, height, width);
    if (!graph_ensure_buffer(&ctx->scratch, &ctx->scratch_cap, ctx->scratch_bytes))
        return yolo_fail(YOLO_ERR_NOMEM, "cannot allocate %zu bytes of scratch for %dx3x%dx%d",
                         ctx->scratch_bytes, batch, height, width);
    ctx->batch = batch;
    ctx->height = height;
    ctx->width = width;
    ctx->planned = 1;
    return YOLO_OK;
}

yolo_status yolo_ctx_plan(yolo_ctx *ctx, int batch, int height, int width)
{
    yolo_clear_error();
    if (!ctx)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_plan: ctx is NULL");
    return plan(ctx, batch, height, width);
}

yolo_status yolo_ctx_threads(const yolo_ctx *ctx, int *threads)
{
    yolo_clear_error();
    if (!ctx || !threads)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_threads: NULL argument");
    switch (ctx->params.backend) {
    case YOLO_BACKEND_FAST:
        *threads = tpool_threads(ctx->pool);
        break;
    case YOLO_BACKEND_GEMM:
        *threads = ctx->params.threads > 0 ? ctx->params.threads : openblas_get_num_threads();
        break;
    default:
        *threads = 1;
    }
    return YOLO_OK;
}

yolo_status yolo_ctx_isa(const yolo_ctx *ctx, yolo_isa *out)
{
    yolo_clear_error();
    if (!ctx || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_isa: NULL argument");
    *out = ctx->kernels ? ctx->kernels->isa : YOLO_ISA_GENERIC;
    return YOLO_OK;
}

yolo_status yolo_ctx_memory_info(const yolo_ctx *ctx, yolo_ctx_memory *out)
{
    yolo_clear_error();
    if (!ctx || !out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_memory_info: NULL argument");
    memset(out, 0, sizeof *out);
    out->weight_bytes = ctx->model->info.weight_bytes;
    out->packed_weight_bytes = ctx->packed_bytes;
    if (ctx->planned) {
        out->arena_bytes = ctx->arena_bytes;
        out->scratch_bytes = ctx->scratch_bytes;
        out->flops = ctx->flops;
    }
    return YOLO_OK;
}

/* ---- running ------------------------------------------------------------------ */

static float *layer_data(const yolo_ctx *ctx, int i)
{
    return (float *)(void *)((char *)ctx->arena + ctx->plan[i].offset);
}

/* A Concat (batch 1, no activation) whose inputs in mask already wrote
 * their slices: copies the others. */
static void concat_rest(const op_args *a, uint32_t mask)
{
    float *dst = a->out;
    for (int k = 0; k < a->n_in; k++) {
        size_t n = shape_elems(a->in_shape[k]);
        if (!(mask & (1u << k)))
            memcpy(dst, a->in[k], n * sizeof *dst);
        dst += n;
    }
}

/* A Conv layer the plan runs through Winograd. */
static void run_winograd(const yolo_ctx *ctx, const op_args *a)
{
    const model_layer *l = a->layer;
    const yolo_shape si = a->in_shape[0], so = a->out_shape;
    conv_geom g = {.c_in = si.c, .h = si.h, .w = si.w, .c_out = so.c, .k = l->kernel,
                   .stride = l->stride, .pad = l->pad, .oh = so.h, .ow = so.w};
    const float *bias = l->tensors[1] ? l->tensors[1]->data : NULL;
    const float *packed = ctx->wino_packed[a->layer - ctx->model->layers];
    for (int b = 0; b < si.n; b++)
        wino_conv2d(&g, a->in[0] + (size_t)b * (size_t)si.c * (size_t)si.h * (size_t)si.w,
                    packed, bias, l->act, l->alpha,
                    a->out + (size_t)b * (size_t)so.c * (size_t)so.h * (size_t)so.w,
                    ctx->kernels, ctx->pool, ctx->wino_scratch, ctx->wino_per_thread,
                    ctx->wino_shared);
}

static void run_layer(yolo_ctx *ctx, int i, const float *input, yolo_shape in_shape)
{
    const model_layer *l = &ctx->model->layers[i];
    const op_vtable *op = op_lookup(l->type);
    op_args a;
    a.model = ctx->model;
    a.layer = l;
    a.n_in = l->n_inputs;
    for (int k = 0; k < l->n_inputs; k++) {
        int p = l->inputs[k];
        a.in[k] = p < 0 ? input : layer_data(ctx, p);
        a.in_shape[k] = p < 0 ? in_shape : ctx->plan[p].shape;
    }
    a.out = layer_data(ctx, i);
    a.out_shape = ctx->plan[i].shape;
    a.scratch = ctx->scratch;
    a.fast = NULL;
    op_fast f;
    if (ctx->params.backend == YOLO_BACKEND_FAST) {
        f.pool = ctx->pool;
        f.kernels = ctx->kernels;
        f.packed = ctx->packed_layer[i];
        f.scratch = ctx->thread_scratch;
        a.fast = &f;
    }
    if (ctx->params.backend == YOLO_BACKEND_REFERENCE)
        op->run_reference(&a);
    else if (ctx->plan[i].in_place)
        concat_rest(&a, ctx->plan[i].in_place);
    else if (ctx->wino_on && ctx->wino_on[i])
        run_winograd(ctx, &a);
    else
        op->run(&a);
}

static int report_layer(const yolo_ctx *ctx, int i, uint64_t start, uint64_t end)
{
    const model_layer *l = &ctx->model->layers[i];
    const layer_plan *p = &ctx->plan[i];
    yolo_layer_event ev;
    ev.layer_index = i;
    ev.source_index = l->source_index;
    ev.type_name = layer_type_name(l);
    ev.batch = p->shape.n;
    ev.channels = p->shape.c;
    ev.height = p->shape.h;
    ev.width = p->shape.w;
    ev.flops = p->flops;
    ev.elapsed_ns = end - start;
    ev.start_ns = start;
    return ctx->params.on_layer(ctx->params.user, &ev);
}

yolo_status yolo_forward(yolo_ctx *ctx, const float *input, int batch, int height, int width)
{
    yolo_clear_error();
    if (!ctx || !input)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_forward: ctx and input must not be NULL");
    if (!ctx->planned || ctx->batch != batch || ctx->height != height || ctx->width != width) {
        yolo_status st = plan(ctx, batch, height, width);
        if (st != YOLO_OK)
            return st;
    }
    ctx->has_output = 0;
    /* FAST runs its convolutions on its own pool; OpenBLAS (Detect's heads)
     * stays on one thread so its spinning workers do not compete with the
     * pool's. */
    if (ctx->params.backend == YOLO_BACKEND_FAST)
        openblas_set_num_threads(1);
    else if (ctx->params.threads > 0)
        openblas_set_num_threads(ctx->params.threads);
    yolo_shape in_shape = {batch, 3, height, width};
    yolo_layer_callback cb = ctx->params.on_layer;
    for (int i = 0; i < ctx->model->n_layers; i++) {
        uint64_t start = cb ? yolo_now_ns() : 0;
        run_layer(ctx, i, input, in_shape);
        if (cb && report_layer(ctx, i, start, yolo_now_ns()) != 0)
            return yolo_fail(YOLO_ERR_CANCELLED,
                             "yolo_forward: the layer callback stopped the run after layer %d (%s)",
                             i, layer_type_name(&ctx->model->layers[i]));
    }
    ctx->has_output = 1;
    return YOLO_OK;
}

static yolo_status check_output(const yolo_ctx *ctx, int b, const char *fn)
{
    if (!ctx)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "%s: ctx is NULL", fn);
    if (!ctx->has_output)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "%s: no completed forward pass on this ctx", fn);
    if (b < 0 || b >= ctx->batch)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "%s: batch item %d out of range (batch is %d)", fn,
                         b, ctx->batch);
    return YOLO_OK;
}

yolo_status yolo_predictions(const yolo_ctx *ctx, int b, const float **pred, int *rows,
                             int *cols)
{
    yolo_clear_error();
    yolo_status st = check_output(ctx, b, "yolo_predictions");
    if (st != YOLO_OK)
        return st;
    if (!pred || !rows || !cols)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_predictions: NULL output pointer");
    int last = ctx->model->n_layers - 1;
    yolo_shape s = ctx->plan[last].shape;
    *pred = layer_data(ctx, last) + (size_t)b * (size_t)s.h * (size_t)s.w;
    *rows = s.h;
    *cols = s.w;
    return YOLO_OK;
}

yolo_status yolo_layer_output(const yolo_ctx *ctx, int layer, int b, const float **data,
                              int *channels, int *height, int *width)
{
    yolo_clear_error();
    yolo_status st = check_output(ctx, b, "yolo_layer_output");
    if (st != YOLO_OK)
        return st;
    if (!data || !channels || !height || !width)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_layer_output: NULL output pointer");
    if (layer < 0 || layer >= ctx->model->n_layers)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_layer_output: layer %d out of range (0..%d)",
                         layer, ctx->model->n_layers - 1);
    const layer_plan *p = &ctx->plan[layer];
    if (!p->intact)
        return yolo_fail(YOLO_ERR_UNSUPPORTED,
                         "yolo_layer_output: the output of layer %d (%s) was overwritten later in "
                         "the run (activation memory is reused); use a ctx with the REFERENCE "
                         "backend, which keeps every layer's output",
                         layer, layer_type_name(&ctx->model->layers[layer]));
    size_t per_item = (size_t)p->shape.c * (size_t)p->shape.h * (size_t)p->shape.w;
    *data = layer_data(ctx, layer) + (size_t)b * per_item;
    *channels = p->shape.c;
    *height = p->shape.h;
    *width = p->shape.w;
    return YOLO_OK;
}
