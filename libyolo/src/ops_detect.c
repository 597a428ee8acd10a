/*
 * The detection head (Detect; IDetect/IAuxDetect arrive here already folded
 * by the exporter). Per level l: a 1x1 convolution with bias (c_in_l ->
 * na*no), sigmoid on every channel, then the box decode of the official
 * code (docs: yolov7-facts.md section 4):
 *   cx = (2*sig(tx) - 0.5 + gx) * stride,  cy likewise with gy,
 *   w  = (2*sig(tw))^2 * anchor_w,         h likewise with anchor_h (pixels),
 *   obj and class scores = sigmoid (no softmax).
 * Output per batch item: a [rows, no] matrix, rows level-major, then anchor,
 * then y, then x: row = level offset + a*ny*nx + y*nx + x. The layer's output
 * shape is {n, 1, rows, no}.
 *
 * The strides, anchors, na and no come from the model's metadata
 * (model->info); the weights of level l are tensors[2l] [na*no, c_in_l, 1, 1]
 * and tensors[2l+1] [na*no].
 *
 * With the FAST backend (op_args.fast with packed weights: the levels'
 * matrices back to back, each convf_packed_span() floats) the heads run
 * through convf_conv2d and the decode is vectorized and threaded.
 *
 * FLOPs: the 1x1 convolutions (2*c_in*na*no per grid cell), plus one per
 * output value for the sigmoid and four per row for the box transform.
 */
#include <limits.h>
#include <math.h>

#include "internal.h"

/* Scratch offsets are rounded to this many floats to keep 64-byte alignment. */
#define FLOATS_PER_LINE 16

static yolo_status detect_check_info(const yolo_model *m, const model_layer *l, int n_in)
{
    if (!m)
        return yolo_fail(YOLO_ERR_INTERNAL, "Detect layer (model.%d): no model metadata",
                         l->source_index);
    const yolo_model_info *info = &m->info;
    if (info->num_levels < 1 || info->num_levels > YOLO_MAX_LEVELS || n_in != info->num_levels)
        return yolo_fail(
            YOLO_ERR_FORMAT,
            "Detect layer (model.%d): %d inputs, expected one per level (%d levels, max %d)",
            l->source_index, n_in, info->num_levels, YOLO_MAX_LEVELS);
    if (info->num_anchors < 1 || info->num_anchors > YOLO_MAX_ANCHORS)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "Detect layer (model.%d): %d anchors per level, expected 1..%d",
                         l->source_index, info->num_anchors, YOLO_MAX_ANCHORS);
    if (info->num_classes < 1 || info->num_classes > 100000 ||
        info->num_outputs != info->num_classes + 5)
        return yolo_fail(
            YOLO_ERR_FORMAT,
            "Detect layer (model.%d): %d outputs per row for %d classes, expected classes + 5",
            l->source_index, info->num_outputs, info->num_classes);
    if (l->act != YOLO_ACT_NONE)
        return yolo_fail(YOLO_ERR_FORMAT, "Detect layer (model.%d): activation %d, expected none",
                         l->source_index, (int)l->act);
    for (int i = 0; i < info->num_levels; i++) {
        if (info->strides[i] < 1 || info->strides[i] > 4096)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "Detect layer (model.%d): level %d stride %d, expected 1..4096",
                             l->source_index, i, info->strides[i]);
        for (int a = 0; a < info->num_anchors; a++)
            if (!isfinite(info->anchors[i][a][0]) || !isfinite(info->anchors[i][a][1]))
                return yolo_fail(YOLO_ERR_FORMAT,
                                 "Detect layer (model.%d): level %d anchor %d is not finite",
                                 l->source_index, i, a);
    }
    return YOLO_OK;
}

/* Every level must see the same image: ny*stride and nx*stride agree. */
static yolo_status detect_check_level(const yolo_model *m, const model_layer *l,
                                      const yolo_shape *in, int lvl)
{
    const yolo_model_info *info = &m->info;
    const int64_t s = info->strides[lvl], s0 = info->strides[0];
    if (in[lvl].h * s != in[0].h * s0 || in[lvl].w * s != in[0].w * s0)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "Detect layer (model.%d): level %d grid %dx%d at stride %d does not match "
                         "level 0 grid %dx%d at stride %d",
                         l->source_index, lvl, in[lvl].w, in[lvl].h, info->strides[lvl], in[0].w,
                         in[0].h, info->strides[0]);
    const int rows = info->num_anchors * info->num_outputs;
    const int wdims[4] = {rows, in[lvl].c, 1, 1};
    yolo_status st = ops_check_tensor(l, "weight", l->tensors[2 * lvl], 4, wdims);
    if (st == YOLO_OK)
        st = ops_check_tensor(l, "bias", l->tensors[2 * lvl + 1], 1, &rows);
    return st;
}

static yolo_status detect_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                                int n_in, yolo_shape *out)
{
    yolo_status st = ops_check_inputs(l, in, n_in, 1, YOLO_MAX_LEVELS);
    if (st == YOLO_OK)
        st = detect_check_info(m, l, n_in);
    int64_t cells = 0;
    for (int i = 0; st == YOLO_OK && i < n_in; i++) {
        st = detect_check_level(m, l, in, i);
        cells += (int64_t)in[i].h * in[i].w;
    }
    if (st != YOLO_OK)
        return st;
    const int64_t rows = cells * m->info.num_anchors;
    if (rows * m->info.num_outputs > INT_MAX)
        return yolo_fail(YOLO_ERR_FORMAT, "Detect layer (model.%d): %lld rows is too many",
                         l->source_index, (long long)rows);
    *out = (yolo_shape){in[0].n, 1, (int)rows, m->info.num_outputs};
    return ops_check_output(l, *out);
}

/* The 1x1 head of one level, per batch item. */
static conv_geom level_geom(yolo_shape in, int c_out)
{
    conv_geom g = {.c_in = in.c,
                   .h = in.h,
                   .w = in.w,
                   .c_out = c_out,
                   .k = 1,
                   .stride = 1,
                   .pad = 0,
                   .oh = in.h,
                   .ow = in.w};
    return g;
}

/* flops() has no model: na*no per grid cell is out's rows*no / cells. */
static uint64_t detect_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)l;
    const uint64_t no = (uint64_t)out.w, rows = (uint64_t)out.h;
    uint64_t cells = 0, conv = 0;
    for (int i = 0; i < n_in; i++)
        cells += (uint64_t)in[i].h * (uint64_t)in[i].w;
    const uint64_t per_cell = cells ? rows * no / cells : 0;
    for (int i = 0; i < n_in; i++)
        conv += 2u * (uint64_t)in[i].c * per_cell * (uint64_t)in[i].h * (uint64_t)in[i].w;
    return (uint64_t)out.n * (conv + rows * (no + 4u));
}

static size_t round_up_line(size_t n)
{
    return (n + FLOATS_PER_LINE - 1) / FLOATS_PER_LINE * FLOATS_PER_LINE;
}

/* Largest level's conv output (one batch item), then the conv's own scratch. */
static size_t conv_out_floats(const yolo_shape *in, int n_in, int c_out)
{
    size_t most = 0;
    for (int i = 0; i < n_in; i++) {
        size_t n = (size_t)c_out * (size_t)in[i].h * (size_t)in[i].w;
        most = n > most ? n : most;
    }
    return round_up_line(most);
}

static size_t detect_scratch(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)l;
    uint64_t cells = 0;
    for (int i = 0; i < n_in; i++)
        cells += (uint64_t)in[i].h * (uint64_t)in[i].w;
    const int c_out = cells ? (int)((uint64_t)out.h * (uint64_t)out.w / cells) : 0;
    size_t conv = 0;
    for (int i = 0; i < n_in; i++) {
        conv_geom g = level_geom(in[i], c_out);
        size_t n = conv2d_scratch_floats(&g);
        conv = n > conv ? n : conv;
    }
    return conv_out_floats(in, n_in, c_out) + conv;
}

static inline float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* One level, one batch item: conv holds [na*no][ny*nx] logits; rows is
 * where this level's first row goes. Sigmoid while transposing channel
 * planes into rows, then the box transform row by row. */
static void decode_level(const yolo_model_info *info, int lvl, const float *conv, int ny, int nx,
                         float *rows)
{
    const int na = info->num_anchors, no = info->num_outputs;
    const size_t hw = (size_t)ny * (size_t)nx;
    const float s = (float)info->strides[lvl];
    for (int a = 0; a < na; a++) {
        float *block = rows + (size_t)a * hw * (size_t)no;
        for (int k = 0; k < no; k++) {
            const float *src = conv + ((size_t)a * (size_t)no + (size_t)k) * hw;
            float *dst = block + k;
            for (size_t p = 0; p < hw; p++)
                dst[p * (size_t)no] = sigmoid(src[p]);
        }
        const float aw = info->anchors[lvl][a][0], ah = info->anchors[lvl][a][1];
        float *r = block;
        for (int y = 0; y < ny; y++)
            for (int x = 0; x < nx; x++, r += no) {
                r[0] = (r[0] * 2.0f - 0.5f + (float)x) * s;
                r[1] = (r[1] * 2.0f - 0.5f + (float)y) * s;
                float tw = r[2] * 2.0f, th = r[3] * 2.0f;
                r[2] = tw * tw * aw;
                r[3] = th * th * ah;
            }
    }
}

/* One level of one batch item on the FAST backend: the 1x1 head through
 * convf_conv2d, the sigmoid in place over the whole logit buffer (vector
 * code), then the decode split over the pool's threads. A decode item is
 * DECODE_CHUNK pixels of one anchor: its no channel runs are scattered into
 * its rows, which stay in L1 (64 rows of no = 85 floats is 22 KB) for the
 * box transform. */
#define DECODE_CHUNK 64

typedef struct {
    const yolo_model_info *info;
    int lvl, ny, nx;
    size_t chunks; /* per anchor */
    float *conv;   /* [na*no][ny*nx] logits, sigmoided in place */
    float *rows;   /* this level's first row */
} decode_job;

static void decode_range(void *arg, size_t begin, size_t end, int tid)
{
    const decode_job *j = arg;
    const int no = j->info->num_outputs, nx = j->nx;
    const size_t hw = (size_t)j->ny * (size_t)nx;
    const float s = (float)j->info->strides[j->lvl];
    (void)tid;
    for (size_t item = begin; item < end; item++) {
        const int a = (int)(item / j->chunks);
        const size_t p0 = item % j->chunks * DECODE_CHUNK;
        const size_t n = hw - p0 < DECODE_CHUNK ? hw - p0 : DECODE_CHUNK;
        float *block = j->rows + ((size_t)a * hw + p0) * (size_t)no;
        for (int k = 0; k < no; k++) {
            const float *src = j->conv + ((size_t)a * (size_t)no + (size_t)k) * hw + p0;
            for (size_t p = 0; p < n; p++)
                block[p * (size_t)no + (size_t)k] = src[p];
        }
        const float aw = j->info->anchors[j->lvl][a][0], ah = j->info->anchors[j->lvl][a][1];
        float *r = block;
        for (size_t p = p0; p < p0 + n; p++, r += no) {
            r[0] = (r[0] * 2.0f - 0.5f + (float)(p % (size_t)nx)) * s;
            r[1] = (r[1] * 2.0f - 0.5f + (float)(p / (size_t)nx)) * s;
            float tw = r[2] * 2.0f, th = r[3] * 2.0f;
            r[2] = tw * tw * aw;
            r[3] = th * th * ah;
        }
    }
}

typedef struct {
    convf_isa isa;
    float *x;
} sigmoid_job;

static void sigmoid_range(void *arg, size_t begin, size_t end, int tid)
{
    const sigmoid_job *j = arg;
    (void)tid;
    convf_sigmoid(j->isa, j->x + begin, end - begin);
}

static void detect_run_fast(const op_args *a)
{
    const yolo_model_info *info = &a->model->info;
    const model_layer *l = a->layer;
    const op_fast *f = a->fast;
    const int c_out = info->num_anchors * info->num_outputs;
    const size_t out_item = (size_t)a->out_shape.h * (size_t)a->out_shape.w;
    for (int b = 0; b < a->out_shape.n; b++) {
        float *rows = a->out + (size_t)b * out_item;
        const float *packed = f->packed;
        for (int lvl = 0; lvl < a->n_in; lvl++) {
            const yolo_shape si = a->in_shape[lvl];
            const conv_geom g = level_geom(si, c_out);
            const float *in = a->in[lvl] + (size_t)b * (size_t)si.c * (size_t)si.h * (size_t)si.w;
            convf_conv2d(&g, in, packed, l->tensors[2 * lvl + 1]->data, YOLO_ACT_NONE, 0.0f,
                         a->scratch, f->kernel, f->pool, f->scratch);
            const size_t hw = (size_t)si.h * (size_t)si.w;
            sigmoid_job sj = {f->isa, a->scratch};
            tpool_for(f->pool, (size_t)c_out * hw, sigmoid_range, &sj);
            decode_job j = {info, lvl, si.h, si.w, (hw + DECODE_CHUNK - 1) / DECODE_CHUNK,
                            a->scratch, rows};
            tpool_for(f->pool, (size_t)info->num_anchors * j.chunks, decode_range, &j);
            rows += (size_t)info->num_anchors * hw * (size_t)info->num_outputs;
            packed += convf_packed_span(c_out, (size_t)si.c);
        }
    }
}

static void detect_run(const op_args *a)
{
    if (a->fast && a->fast->packed && a->fast->kernel) {
        detect_run_fast(a);
        return;
    }
    const yolo_model_info *info = &a->model->info;
    const model_layer *l = a->layer;
    const int c_out = info->num_anchors * info->num_outputs;
    float *conv = a->scratch;
    float *conv_scratch = a->scratch + conv_out_floats(a->in_shape, a->n_in, c_out);
    const size_t out_item = (size_t)a->out_shape.h * (size_t)a->out_shape.w;
    for (int b = 0; b < a->out_shape.n; b++) {
        float *rows = a->out + (size_t)b * out_item;
        for (int lvl = 0; lvl < a->n_in; lvl++) {
            const yolo_shape si = a->in_shape[lvl];
            const conv_geom g = level_geom(si, c_out);
            const float *in = a->in[lvl] + (size_t)b * (size_t)si.c * (size_t)si.h * (size_t)si.w;
            conv2d_gemm(&g, in, l->tensors[2 * lvl]->data, l->tensors[2 * lvl + 1]->data, conv,
                        conv_scratch);
            decode_level(info, lvl, conv, si.h, si.w, rows);
            rows +=
                (size_t)info->num_anchors * (size_t)si.h * (size_t)si.w * (size_t)info->num_outputs;
        }
    }
}

/* The decode written straight from the formulas, value by value, with the
 * [na, no, ny, nx] -> [na, ny, nx, no] permutation spelled out. */
static void decode_reference(const yolo_model_info *info, int lvl, const float *conv, int ny,
                             int nx, float *out, size_t row0)
{
    const int na = info->num_anchors, no = info->num_outputs;
    for (int a = 0; a < na; a++)
        for (int y = 0; y < ny; y++)
            for (int x = 0; x < nx; x++)
                for (int k = 0; k < no; k++) {
                    float t = conv[(((size_t)a * no + k) * ny + y) * nx + x];
                    float v = 1.0f / (1.0f + expf(-t));
                    float s = (float)info->strides[lvl];
                    if (k == 0)
                        v = (v * 2.0f - 0.5f + (float)x) * s;
                    else if (k == 1)
                        v = (v * 2.0f - 0.5f + (float)y) * s;
                    else if (k == 2 || k == 3)
                        v = (v * 2.0f) * (v * 2.0f) * info->anchors[lvl][a][k - 2];
                    size_t row = row0 + ((size_t)a * ny + y) * nx + x;
                    out[row * no + k] = v;
                }
}

static void detect_reference(const op_args *a)
{
    const yolo_model_info *info = &a->model->info;
    const model_layer *l = a->layer;
    const int c_out = info->num_anchors * info->num_outputs;
    float *conv = a->scratch;
    const size_t out_item = (size_t)a->out_shape.h * (size_t)a->out_shape.w;
    for (int b = 0; b < a->out_shape.n; b++) {
        size_t row0 = 0;
        for (int lvl = 0; lvl < a->n_in; lvl++) {
            const yolo_shape si = a->in_shape[lvl];
            const conv_geom g = level_geom(si, c_out);
            const float *in = a->in[lvl] + (size_t)b * (size_t)si.c * (size_t)si.h * (size_t)si.w;
            conv2d_naive(&g, in, l->tensors[2 * lvl]->data, l->tensors[2 * lvl + 1]->data, conv);
            decode_reference(info, lvl, conv, si.h, si.w, a->out + (size_t)b * out_item, row0);
            row0 += (size_t)info->num_anchors * (size_t)si.h * (size_t)si.w;
        }
    }
}

const op_vtable op_detect = {
    .name = "Detect",
    .shape = detect_shape,
    .flops = detect_flops,
    .scratch = detect_scratch,
    .run = detect_run,
    .run_reference = detect_reference,
};
