/*
 * Element-wise layers: BatchNorm2d (unfused exports), the stand-alone
 * activation layer, and the activation functions every other family applies
 * to its output (apply_activation, apply_bias_activation).
 *
 * LeakyReLU(x) = x > 0 ? x : alpha*x.  SiLU(x) = x*sigmoid(x), computed as
 * x / (1 + expf(-x)) in float (for x below about -88, expf overflows to inf
 * and the result is -0, the correct limit).
 *
 * Both kernels work in place (out == in[0]) as well.
 */
#include <math.h>

#include "internal.h"

static inline float leaky(float x, float alpha)
{
    return x > 0.0f ? x : alpha * x;
}

static inline float silu(float x)
{
    return x / (1.0f + expf(-x));
}

void apply_activation(float *x, size_t n, yolo_activation act, float alpha)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            x[i] = leaky(x[i], alpha);
        break;
    case YOLO_ACT_SILU:
        for (size_t i = 0; i < n; i++)
            x[i] = silu(x[i]);
        break;
    case YOLO_ACT_NONE:
        break;
    }
}

/* x[i] = act(x[i] + bias) in one pass: used after a convolution's GEMM
 * while its output row is still in cache. */
void apply_bias_activation(float *x, size_t n, float bias, yolo_activation act, float alpha)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            x[i] = leaky(x[i] + bias, alpha);
        break;
    case YOLO_ACT_SILU:
        for (size_t i = 0; i < n; i++)
            x[i] = silu(x[i] + bias);
        break;
    case YOLO_ACT_NONE:
        for (size_t i = 0; i < n; i++)
            x[i] += bias;
        break;
    }
}

/* ---- BatchNorm2d ---------------------------------------------------------- */

enum { BN_GAMMA, BN_BETA, BN_MEAN, BN_VAR };

static yolo_status batchnorm_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                                   int n_in, yolo_shape *out)
{
    static const char *const roles[4] = {"gamma", "beta", "running_mean", "running_var"};
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    for (int i = 0; st == YOLO_OK && i < 4; i++)
        st = ops_check_tensor(l, roles[i], l->tensors[i], 1, &in[0].c);
    if (st != YOLO_OK)
        return st;
    if (!isfinite(l->eps) || l->eps < 0.0f)
        return yolo_fail(YOLO_ERR_FORMAT,
                         "BatchNorm2d layer (model.%d): eps %g is not a finite value >= 0",
                         l->source_index, (double)l->eps);
    *out = in[0];
    return YOLO_OK;
}

/* Two per element (the normalisation is one multiply-add), plus one per
 * element for an activation. */
static uint64_t elementwise_flops(const model_layer *l, uint64_t per_elem, yolo_shape out)
{
    uint64_t n = shape_elems(out);
    return n * (per_elem + (l->act != YOLO_ACT_NONE ? 1u : 0u));
}

static uint64_t batchnorm_flops(const model_layer *l, const yolo_shape *in, int n_in,
                                yolo_shape out)
{
    (void)in, (void)n_in;
    return elementwise_flops(l, 2, out);
}

static size_t no_scratch(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)l, (void)in, (void)n_in, (void)out;
    return 0;
}

/* Folds the statistics into one scale and shift per channel. */
static void batchnorm_run(const op_args *a)
{
    const model_layer *l = a->layer;
    const float *gamma = l->tensors[BN_GAMMA]->data, *beta = l->tensors[BN_BETA]->data;
    const float *mean = l->tensors[BN_MEAN]->data, *var = l->tensors[BN_VAR]->data;
    const yolo_shape s = a->in_shape[0];
    const size_t hw = (size_t)s.h * (size_t)s.w;
    for (int n = 0; n < s.n; n++) {
        for (int c = 0; c < s.c; c++) {
            size_t off = ((size_t)n * (size_t)s.c + (size_t)c) * hw;
            const float *x = a->in[0] + off;
            float *y = a->out + off;
            float scale = gamma[c] / sqrtf(var[c] + l->eps);
            float shift = beta[c] - mean[c] * scale;
            for (size_t i = 0; i < hw; i++)
                y[i] = x[i] * scale + shift;
            apply_activation(y, hw, l->act, l->alpha);
        }
    }
}

/* The textbook formula, element by element. */
static void batchnorm_reference(const op_args *a)
{
    const model_layer *l = a->layer;
    const float *gamma = l->tensors[BN_GAMMA]->data, *beta = l->tensors[BN_BETA]->data;
    const float *mean = l->tensors[BN_MEAN]->data, *var = l->tensors[BN_VAR]->data;
    const yolo_shape s = a->in_shape[0];
    for (int n = 0; n < s.n; n++)
        for (int c = 0; c < s.c; c++)
            for (int y = 0; y < s.h; y++)
                for (int x = 0; x < s.w; x++) {
                    size_t i = (((size_t)n * (size_t)s.c + (size_t)c) * (size_t)s.h + (size_t)y) *
                                   (size_t)s.w +
                               (size_t)x;
                    float v = (a->in[0][i] - mean[c]) / sqrtf(var[c] + l->eps) * gamma[c] + beta[c];
                    apply_activation(&v, 1, l->act, l->alpha);
                    a->out[i] = v;
                }
}

const op_vtable op_batchnorm = {
    .name = "BatchNorm2d",
    .shape = batchnorm_shape,
    .flops = batchnorm_flops,
    .scratch = no_scratch,
    .run = batchnorm_run,
    .run_reference = batchnorm_reference,
};

/* ---- stand-alone activation ------------------------------------------------ */

static yolo_status act_shape(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                             int n_in, yolo_shape *out)
{
    (void)m;
    yolo_status st = ops_check_inputs(l, in, n_in, 1, 1);
    if (st == YOLO_OK)
        st = ops_check_act(l);
    if (st == YOLO_OK)
        *out = in[0];
    return st;
}

/* One per element (an activation counts as one element-op). */
static uint64_t act_flops(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out)
{
    (void)in, (void)n_in;
    return elementwise_flops(l, 0, out);
}

static void act_run(const op_args *a)
{
    size_t n = shape_elems(a->in_shape[0]);
    if (a->out != a->in[0])
        for (size_t i = 0; i < n; i++)
            a->out[i] = a->in[0][i];
    apply_activation(a->out, n, a->layer->act, a->layer->alpha);
}

/* Written out independently of apply_activation, straight from the
 * definitions above. */
static void act_reference(const op_args *a)
{
    const model_layer *l = a->layer;
    size_t n = shape_elems(a->in_shape[0]);
    for (size_t i = 0; i < n; i++) {
        float x = a->in[0][i];
        if (l->act == YOLO_ACT_LEAKY_RELU)
            x = x > 0.0f ? x : l->alpha * x;
        else if (l->act == YOLO_ACT_SILU)
            x = x / (1.0f + expf(-x));
        a->out[i] = x;
    }
}

const op_vtable op_act = {
    .name = "Act",
    .shape = act_shape,
    .flops = act_flops,
    .scratch = no_scratch,
    .run = act_run,
    .run_reference = act_reference,
};
