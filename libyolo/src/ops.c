/*
 * The op table: maps each layer type of the model format to the kernels of
 * its family (ops_conv.c, ops_norm.c, ops_pool.c, ops_tensor.c,
 * ops_detect.c), the names shown for layers, and the parameter checks every
 * family's shape() shares.
 *
 * Every shape() must reject whatever a kernel could not run safely: the
 * loader calls it on a nominal input to validate a file, so a malformed file
 * is refused at load and never reaches a kernel.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "internal.h"

/* Indexed by the file format's type value. */
static const op_vtable *const op_table[LAYER_TYPE_MAX + 1] = {
    [LAYER_CONV] = &op_conv,
    [LAYER_CONV2D] = &op_conv2d,
    [LAYER_BATCHNORM] = &op_batchnorm,
    [LAYER_ACT] = &op_act,
    [LAYER_MAXPOOL] = &op_maxpool,
    [LAYER_MP] = &op_mp,
    [LAYER_SP] = &op_sp,
    [LAYER_CONCAT] = &op_concat,
    [LAYER_UPSAMPLE] = &op_upsample,
    [LAYER_SHORTCUT] = &op_shortcut,
    [LAYER_REORG] = &op_reorg,
    [LAYER_ADD] = &op_add,
    [LAYER_DETECT] = &op_detect,
};

const op_vtable *op_lookup(int type)
{
    if (type < 0 || type > LAYER_TYPE_MAX)
        return NULL;
    return op_table[type];
}

const char *act_name(yolo_activation act)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU:
        return "LeakyReLU";
    case YOLO_ACT_SILU:
        return "SiLU";
    case YOLO_ACT_NONE:
        return "Identity";
    }
    return "unknown activation";
}

const char *layer_type_name(const model_layer *l)
{
    if (l->type == LAYER_ACT)
        return act_name(l->act);
    const op_vtable *op = op_lookup(l->type);
    return op ? op->name : "unknown layer type";
}

/* A usable shape: every dimension positive, one batch item's elements
 * addressable with int (the GEMM takes int dimensions), the whole batch
 * within size_t. */
static int shape_sane(yolo_shape s)
{
    if (s.n < 1 || s.c < 1 || s.h < 1 || s.w < 1)
        return 0;
    uint64_t item = (uint64_t)s.c * (uint64_t)s.h * (uint64_t)s.w;
    return item <= INT_MAX && (uint64_t)s.n <= SIZE_MAX / 4 / item;
}

yolo_status ops_check_inputs(const model_layer *l, const yolo_shape *in, int n_in, int min_in,
                             int max_in)
{
    const char *type = layer_type_name(l);
    if (n_in < min_in || n_in > max_in || n_in > YOLO_MAX_INPUTS) {
        if (min_in == max_in)
            return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): expected %d input(s), found %d",
                             type, l->source_index, min_in, n_in);
        return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): expected %d to %d inputs, found %d",
                         type, l->source_index, min_in, max_in, n_in);
    }
    for (int i = 0; i < n_in; i++) {
        if (!shape_sane(in[i]))
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s layer (model.%d): input %d has unusable shape [%d,%d,%d,%d]", type,
                             l->source_index, i, in[i].n, in[i].c, in[i].h, in[i].w);
        if (in[i].n != in[0].n)
            return yolo_fail(YOLO_ERR_FORMAT,
                             "%s layer (model.%d): input %d has batch %d, input 0 has %d", type,
                             l->source_index, i, in[i].n, in[0].n);
    }
    return YOLO_OK;
}

yolo_status ops_check_act(const model_layer *l)
{
    switch (l->act) {
    case YOLO_ACT_NONE:
    case YOLO_ACT_SILU:
        return YOLO_OK;
    case YOLO_ACT_LEAKY_RELU:
        if (isfinite(l->alpha))
            return YOLO_OK;
        return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): LeakyReLU slope is not finite",
                         layer_type_name(l), l->source_index);
    }
    return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): unknown activation %d",
                     layer_type_name(l), l->source_index, (int)l->act);
}

/* "[a,b,c]" into buf. */
static const char *dims_str(char *buf, size_t size, int ndim, const int *dims)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%d", i ? "," : "[", dims[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
    return buf;
}

yolo_status ops_check_tensor(const model_layer *l, const char *role, const model_tensor *t,
                             int ndim, const int *dims)
{
    char want[64], got[64];
    const char *type = layer_type_name(l);
    if (!t)
        return yolo_fail(YOLO_ERR_FORMAT, "%s layer (model.%d): %s tensor missing, expected %s",
                         type, l->source_index, role, dims_str(want, sizeof want, ndim, dims));
    int ok = t->ndim == ndim && t->data != NULL;
    size_t elems = 1;
    for (int i = 0; ok && i < ndim; i++) {
        ok = t->shape[i] == dims[i];
        elems *= (size_t)dims[i];
    }
    if (ok && t->elems != elems)
        ok = 0;
    if (ok)
        return YOLO_OK;
    int nd = t->ndim < 0 ? 0 : t->ndim > 4 ? 4 : t->ndim;
    return yolo_fail(YOLO_ERR_FORMAT,
                     "%s layer (model.%d): %s tensor '%.56s' has shape %s, expected %s", type,
                     l->source_index, role, t->name, dims_str(got, sizeof got, nd, t->shape),
                     dims_str(want, sizeof want, ndim, dims));
}

yolo_status ops_check_output(const model_layer *l, yolo_shape out)
{
    if (shape_sane(out))
        return YOLO_OK;
    return yolo_fail(YOLO_ERR_FORMAT,
                     "%s layer (model.%d): output shape [%d,%d,%d,%d] is empty or too large",
                     layer_type_name(l), l->source_index, out.n, out.c, out.h, out.w);
}
