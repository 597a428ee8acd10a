/*
 * Convolution: the Conv (fused Conv+BN / RepConv) and Conv2d layers, and the
 * convolution core that Detect's 1x1 heads reuse.
 *
 * Semantics are PyTorch's Conv2d with groups 1: cross-correlation, zero
 * padding `pad` on all four sides, output size floor((H + 2p - k)/s) + 1.
 * Data is NCHW; weights are stored [Cout][Cin][k][k].
 *
 * Fast path, per batch item: the weights are already the GEMM's A matrix
 * (Cout x Cin*k*k, row-major). im2col lays the input out as B (Cin*k*k rows
 * of OH*OW, row (c,ky,kx) holding input pixel (oy*s - p + ky, ox*s - p + kx)
 * or 0), and cblas_sgemm writes C = A*B straight into the output
 * (Cout x OH*OW). B is built for a band of output rows at a time, at most
 * about CONV_SCRATCH_TARGET floats, and each band's GEMM writes its columns
 * of C (ldc = OH*OW): the full B of yolov7's 320x320 layers would be 236 MB,
 * a band is 16 MB and stays wide enough for an efficient GEMM. A 1x1,
 * stride-1, pad-0 convolution needs no im2col: the input plane already is B.
 * Bias and activation follow in one pass per output row.
 *
 * With the FAST backend (op_args.fast set) the layer runs convf_conv2d
 * (conv_fast.c) on the weights the ctx packed instead.
 *
 * The reference is a direct convolution with bounds checks that accumulates
 * in double, so it is a good reference for tests, not a bit-exact twin.
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "internal.h"

enum { CONV_WEIGHT, CONV_BIAS };

/* ---- core ----------------------------------------------------------------- */

static int conv_is_pointwise(const conv_geom *g)
{
    return g->k == 1 && g->stride == 1 && g->pad == 0;
}

/* Upper bound of one im2col band, in floats (16 MB). */
#define CONV_SCRATCH_TARGET ((size_t)1 << 22)

/* Output rows per im2col band: as many as fit the target, at least one. */
static int band_rows(const conv_geom *g)
{
    size_t per_row = (size_t)g->c_in * (size_t)g->k * (size_t)g->k * (size_t)g->ow;
    size_t rows = CONV_SCRATCH_TARGET / per_row;
    if (rows < 1)
        rows = 1;
    return rows < (size_t)g->oh ? (int)rows : g->oh;
}

size_t conv2d_scratch_floats(const conv_geom *g)
{
    if (conv_is_pointwise(g))
        return 0;
    return (size_t)g->c_in * (size_t)g->k * (size_t)g->k * (size_t)band_rows(g) * (size_t)g->ow;
}

/* Output columns [*lo, *hi) whose input column ox*s - p + kx lies inside
 * [0, w); the others read zero padding. */
static void valid_columns(const conv_geom *g, int kx, int *lo, int *hi)
{
    int first = g->pad - kx; /* ox*s must reach at least this */
    int last = g->w - 1 + g->pad - kx;
    int l = first > 0 ? (first + g->stride - 1) / g->stride : 0;
    int h = last < 0 ? 0 : last / g->stride + 1;
    if (h > g->ow)
        h = g->ow;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* One B-matrix row (c, ky, kx) for output rows [oy0, oy1): for each, zeros
 * for the padded columns on either side and a contiguous (stride 1) or
 * strided copy in between; no per-element branches. */
static void im2col_row(const conv_geom *g, const float *plane, int ky, int kx, int oy0, int oy1,
                       float *dst)
{
    int lo, hi;
    valid_columns(g, kx, &lo, &hi);
    const size_t ow = (size_t)g->ow, n_valid = (size_t)(hi - lo);
    const int s = g->stride;
    for (int oy = oy0; oy < oy1; oy++, dst += ow) {
        int iy = oy * s - g->pad + ky;
        if (iy < 0 || iy >= g->h || n_valid == 0) {
            memset(dst, 0, ow * sizeof *dst);
            continue;
        }
        const float *src = plane + (size_t)iy * (size_t)g->w + (size_t)(lo * s - g->pad + kx);
        memset(dst, 0, (size_t)lo * sizeof *dst);
        if (s == 1) {
            memcpy(dst + lo, src, n_valid * sizeof *dst);
        } else {
            float *d = dst + lo;
            for (size_t i = 0; i < n_valid; i++)
                d[i] = src[i * (size_t)s];
        }
        memset(dst + hi, 0, (ow - (size_t)hi) * sizeof *dst);
    }
}

/* B for output rows [oy0, oy1): Cin*k*k rows of (oy1 - oy0)*OW. */
static void im2col(const conv_geom *g, const float *in, int oy0, int oy1, float *col)
{
    const size_t plane = (size_t)g->h * (size_t)g->w;
    const size_t row = (size_t)(oy1 - oy0) * (size_t)g->ow;
    for (int c = 0; c < g->c_in; c++)
        for (int ky = 0; ky < g->k; ky++)
            for (int kx = 0; kx < g->k; kx++, col += row)
                im2col_row(g, in + (size_t)c * plane, ky, kx, oy0, oy1, col);
}

/* out = W * im2col(in), no bias. */
static void conv_gemm_nobias(const conv_geom *g, const float *in, const float *weight, float *out,
                             float *scratch)
{
    const int m = g->c_out, n = g->oh * g->ow, k = g->c_in * g->k * g->k;
    if (conv_is_pointwise(g)) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, weight, k, in, n,
                    0.0f, out, n);
        return;
    }
    const int rows = band_rows(g);
    for (int oy0 = 0; oy0 < g->oh; oy0 += rows) {
        int oy1 = oy0 + rows < g->oh ? oy0 + rows : g->oh;
        int nb = (oy1 - oy0) * g->ow;
        im2col(g, in, oy0, oy1, scratch);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nb, k, 1.0f, weight, k, scratch,
                    nb, 0.0f, out + (size_t)oy0 * (size_t)g->ow, n);
    }
}

void conv2d_gemm(const conv_geom *g, const float *in, const float *weight, const float *bias,
                 float *out, float *scratch)
{
    conv_gemm_nobias(g, in, weight, out, scratch);
    if (!bias)
        return;
    const size_t n = (size_t)g->oh * (size_t)g->ow;
    for (int o = 0; o < g->c_out; o++)
        apply_bias_activation(out + (size_t)o * n, n, bias[o], YOLO_ACT_NONE, 0.0f);
}

void conv2d_naive(const conv_geom *g, const float *in, const float *weight, const float *bias,
                  float *out)
{
    for (int o = 0; o < g->c_out; o++)
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                double acc = 0.0;
                for (int c = 0; c < g->c_in; c++)
                    for (int ky = 0; ky < g->k; ky++)
                        for (int kx = 0; kx < g->k; kx++) {
                            int iy = oy * g->stride - g->pad + ky;
                            int ix = ox * g->stride - g->pad + kx;
                            if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
                                continue;
                            size_t wi = (((size_t)o * (size_t)g->c_in + (size_t)c) * (size_t)g->k +
                                         (size_t)ky) *
                                            (size_t)g->k +
                                        (size_t)kx;
                            size_t xi =
                                ((size_t)c * (size_t)g->h + (size_t)iy) * (size_t)g->w + (size_t)ix;
                            acc += (double)weight[wi] * (double)in[xi];
                        }
                if (bias)
                    acc += (double)bias[o];
                out[((size_t)o * (size_t)g->oh + (size_t)oy) * (size_t)g->ow + (size_t)ox] =
                    (float)acc;
            }
}

/* ---- the Conv / Conv2d layers ----------------------------------------------- */

/* Geometry of one batch item; shape() has validated the layer. */
static conv_geom layer_geom(const model_layer *l, yolo_shape in, yolo_shape out)
{
    conv_geom g = {.c_in = in.c,
                   .h = in.h,
                   .w = in.w,
                   .c_out = out.c,
                   .k = l->kernel,
                   .stride = l->stride,
                   .pad = l->pad,
                   .oh = out.h,
                   .ow = out.w};
    return g;
}

static yolo_status conv_check_params(const model_layer *l, yolo_shape in)
{
    const char *type = layer_type_name(l);
    if (l->kernel < 1 || l->kernel > 64 || l->stride < 1 || l->stride > 64 || l->pad < 0 ||
        l->pad > l->kernel)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s layer (model.%d): expected kernel 1..64, stride 1..64, pad 0..kernel; "
                         "found kernel %d, stride %d, pad %d",
                         type, l->source_index, l->kernel, l->stride, l->pad);
    if (l->groups != 1)
        return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): groups %d unsupported, expected 1",
                         type, l->source_index, l->groups);
    if (l->c_out < 1)
        return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): c_out %d, expected >= 1", type,
                         l->source_index, l->c_out);
    if ((int64_t)in.h + 2 * l->pad < l->kernel || (int64_t)in.w + 2 * l->pad < l->kernel)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s layer (model.%d): input %dx%d (pad %d) is smaller than kernel %d",
                         type, l->source_index, in.h, in.w, l->pad, l->kernel);
    return YOLO_OK;
}

static yolo_status conv_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                              int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st == YOLO_OK)
        st = conv_check_params(l, in[0]);
    if (st != YOLO_OK)
        return st;
    const int wdims[4] = {l->c_out, in[0].c, l->kernel, l->kernel};
    st = ops_check_tensor(l, "weight", l->tensors[CONV_WEIGHT], 4, wdims);
    if (st == YOLO_OK && l->tensors[CONV_BIAS])
        st = ops_check_tensor(l, "bias", l->tensors[CONV_BIAS], 1, &l->c_out);
    if (st != YOLO_OK)
        return st;
    /* The GEMM's K = Cin*k*k must fit an int too. */
    if ((int64_t)in[0].c * l->kernel * l->kernel > INT_MAX)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "%s layer (model.%d): %d input channels x %dx%d kernel is too large",
                         layer_type_name(l), l->source_index, in[0].c, l->kernel, l->kernel);
    out->n = in[0].n;
    out->c = l->c_out;
    out->h = (int)(((int64_t)in[0].h + 2 * l->pad - l->kernel) / l->stride + 1);
    out->w = (int)(((int64_t)in[0].w + 2 * l->pad - l->kernel) / l->stride + 1);
    return ops_check_output(l, *out);
}

/* 2*Cin*k*k*Cout*OH*OW*N: the multiply-adds only; bias and activation are
 * not counted, as is usual for convolutions. */
static uint64_t conv_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)n_in;
    return 2u * (uint64_t)in[0].c * (uint64_t)l->kernel * (uint64_t)l->kernel * shape_elems(out);
}

static size_t conv_scratch(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)n_in;
    conv_geom g = layer_geom(l, in[0], out);
    return conv2d_scratch_floats(&g);
}

static void conv_run(const op_args *a)
{
    const model_layer *l = a->layer;
    const conv_geom g = layer_geom(l, a->in_shape[0], a->out_shape);
    const float *weight = l->tensors[CONV_WEIGHT]->data;
    const float *bias = l->tensors[CONV_BIAS] ? l->tensors[CONV_BIAS]->data : NULL;
    const size_t in_item = (size_t)g.c_in * (size_t)g.h * (size_t)g.w;
    const size_t n = (size_t)g.oh * (size_t)g.ow;
    const op_fast *f = a->fast;
    if (f && f->packed && f->kernels) {
        for (int b = 0; b < a->in_shape[0].n; b++)
            convf_conv2d(&g, a->in[0] + (size_t)b * in_item, f->packed, bias, l->act, l->alpha,
                         a->out + (size_t)b * (size_t)g.c_out * n, f->kernels, f->pool,
                         f->scratch);
        return;
    }
    for (int b = 0; b < a->in_shape[0].n; b++) {
        float *out = a->out + (size_t)b * (size_t)g.c_out * n;
        conv_gemm_nobias(&g, a->in[0] + (size_t)b * in_item, weight, out, a->scratch);
        for (int o = 0; o < g.c_out; o++)
            apply_bias_activation(out + (size_t)o * n, n, bias ? bias[o] : 0.0f, l->act, l->alpha);
    }
}

static void conv_reference(const op_args *a)
{
    const model_layer *l = a->layer;
    const conv_geom g = layer_geom(l, a->in_shape[0], a->out_shape);
    const float *bias = l->tensors[CONV_BIAS] ? l->tensors[CONV_BIAS]->data : NULL;
    const size_t in_item = (size_t)g.c_in * (size_t)g.h * (size_t)g.w;
    const size_t out_item = (size_t)g.c_out * (size_t)g.oh * (size_t)g.ow;
    for (int b = 0; b < a->in_shape[0].n; b++) {
        float *out = a->out + (size_t)b * out_item;
        conv2d_naive(&g, a->in[0] + (size_t)b * in_item, l->tensors[CONV_WEIGHT]->data, bias, out);
        apply_activation(out, out_item, l->act, l->alpha);
    }
}

const op_vtable op_conv = {
    .name = "Conv",
    .shape = conv_shape,
    .flops = conv_flops,
    .scratch = conv_scratch,
    .run = conv_run,
    .run_reference = conv_reference,
};

/* A bare nn.Conv2d of an unfused export: the same kernel, another name. */
const op_vtable op_conv2d = {
    .name = "Conv2d",
    .shape = conv_shape,
    .flops = conv_flops,
    .scratch = conv_scratch,
    .run = conv_run,
    .run_reference = conv_reference,
};
