/*
 * A small writer of libyolo model files (docs/model-format.md) for the C
 * tests, written from the specification independently of tools/export.py.
 * Build a graph layer by layer with deterministic random weights, then
 * serialize it to memory or a file. Tests corrupt the result on purpose:
 * mg_fix_crcs() re-seals a patched buffer so the loader's deeper checks,
 * not the checksums, have to catch the fault.
 */
#ifndef LIBYOLO_MODELGEN_H
#define LIBYOLO_MODELGEN_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define MG_MAX_LAYERS 64
#define MG_MAX_TENSORS 128
#define MG_NONE 0xFFFFFFFFu

/* Layer type values of the format. */
enum {
    MG_CONV = 1, MG_CONV2D, MG_BN, MG_ACT, MG_MAXPOOL, MG_MP, MG_SP, MG_CONCAT,
    MG_UPSAMPLE, MG_SHORTCUT, MG_REORG, MG_ADD, MG_DETECT
};

typedef struct {
    uint32_t type, act, n_in;
    int32_t inputs[16];
    uint32_t c_out, kernel, stride, pad, groups;
    float alpha, eps;
    uint32_t tensors[8];
    uint32_t source;
} mg_layer;

typedef struct {
    char name[56];
    uint32_t ndim, shape[4];
    size_t elems;
    float *data;
} mg_tensor;

typedef struct {
    uint32_t nc, nl, na, img, max_stride, act, fused;
    uint32_t strides[4];
    float anchors[4][4][2];
    char name[64];
    uint32_t version;
    int n_layers, n_tensors;
    mg_layer layers[MG_MAX_LAYERS];
    mg_tensor tensors[MG_MAX_TENSORS];
    int ch[MG_MAX_LAYERS]; /* output channels of each layer */
    int scale[MG_MAX_LAYERS]; /* downsampling of each layer's output */
    uint64_t rng;
} mg_model;

/* ---- little-endian writers ---- */

static inline void mg_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline void mg_put64(uint8_t *p, uint64_t v)
{
    mg_put32(p, (uint32_t)v);
    mg_put32(p + 4, (uint32_t)(v >> 32));
}

static inline void mg_putf(uint8_t *p, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    mg_put32(p, u);
}

static inline uint32_t mg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t mg_get64(const uint8_t *p)
{
    return (uint64_t)mg_get32(p) | (uint64_t)mg_get32(p + 4) << 32;
}

static inline float mg_rand(mg_model *m)
{
    m->rng = m->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(m->rng >> 40) / (double)(1ULL << 23) - 1.0);
}

/* ---- building ---- */

/* A model with nc classes and num_levels levels at the given strides;
 * anchors are made up (positive, level-dependent). */
static inline void mg_init(mg_model *m, int nc, int nl, int na, const int *strides,
                           int max_stride, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    m->nc = (uint32_t)nc;
    m->nl = (uint32_t)nl;
    m->na = (uint32_t)na;
    m->max_stride = (uint32_t)max_stride;
    m->img = (uint32_t)(4 * max_stride);
    m->act = 1;
    m->fused = 1;
    m->version = 1;
    m->rng = seed;
    snprintf(m->name, sizeof m->name, "mg-test");
    for (int l = 0; l < nl; l++) {
        m->strides[l] = (uint32_t)strides[l];
        for (int a = 0; a < na; a++) {
            m->anchors[l][a][0] = (float)(strides[l] * (a + 1)) * 1.5f;
            m->anchors[l][a][1] = (float)(strides[l] * (a + 2));
        }
    }
}

static inline int mg_channels(const mg_model *m, int from)
{
    return from < 0 ? 3 : m->ch[from];
}

static inline int mg_scale(const mg_model *m, int from)
{
    return from < 0 ? 1 : m->scale[from];
}

/* Adds a tensor filled with uniform noise in [-amp, amp) + base. */
static inline uint32_t mg_tensor_add(mg_model *m, const char *role, int ndim, const int *shape,
                                     float amp, float base)
{
    mg_tensor *t = &m->tensors[m->n_tensors];
    snprintf(t->name, sizeof t->name, "model.%d.%s", m->n_layers, role);
    t->ndim = (uint32_t)ndim;
    t->elems = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = (uint32_t)shape[d];
        t->elems *= (size_t)shape[d];
    }
    t->data = malloc(t->elems * sizeof(float));
    for (size_t i = 0; i < t->elems; i++)
        t->data[i] = base + amp * mg_rand(m);
    return (uint32_t)m->n_tensors++;
}

/* Replaces tensor t's shape (and data, re-randomised): for building files
 * whose tensors do not match their graph. */
static inline void mg_tensor_reshape(mg_model *m, int t, int ndim, const int *shape)
{
    mg_tensor *x = &m->tensors[t];
    free(x->data);
    x->ndim = (uint32_t)ndim;
    x->elems = 1;
    memset(x->shape, 0, sizeof x->shape);
    for (int d = 0; d < ndim; d++) {
        x->shape[d] = (uint32_t)shape[d];
        x->elems *= (size_t)shape[d];
    }
    x->data = malloc(x->elems * sizeof(float));
    for (size_t i = 0; i < x->elems; i++)
        x->data[i] = 0.1f * mg_rand(m);
}

static inline mg_layer *mg_layer_add(mg_model *m, int type, int n_in, const int *from)
{
    mg_layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->type = (uint32_t)type;
    l->n_in = (uint32_t)n_in;
    for (int k = 0; k < n_in; k++)
        l->inputs[k] = from[k];
    l->groups = 1;
    l->alpha = 0.1f;
    l->eps = 0.001f;
    for (int k = 0; k < 8; k++)
        l->tensors[k] = MG_NONE;
    l->source = (uint32_t)m->n_layers;
    m->scale[m->n_layers] = mg_scale(m, from[0]);
    return l;
}

static inline int mg_finish(mg_model *m, mg_layer *l, int c_out)
{
    l->c_out = (uint32_t)c_out;
    m->ch[m->n_layers] = c_out;
    return m->n_layers++;
}

/* Conv (type 1) or Conv2d (type 2): pad k/2, optional bias, activation. */
static inline int mg_conv_type(mg_model *m, int type, int from, int c_out, int k, int s, int act,
                               int bias)
{
    int c_in = mg_channels(m, from);
    mg_layer *l = mg_layer_add(m, type, 1, &from);
    l->act = (uint32_t)act;
    l->kernel = (uint32_t)k;
    l->stride = (uint32_t)s;
    l->pad = (uint32_t)(k / 2);
    int ws[4] = {c_out, c_in, k, k};
    float amp = sqrtf(3.0f / (float)(c_in * k * k)) * 1.2f;
    l->tensors[0] = mg_tensor_add(m, "weight", 4, ws, amp, 0.0f);
    if (bias)
        l->tensors[1] = mg_tensor_add(m, "bias", 1, &c_out, 0.2f, 0.0f);
    m->scale[m->n_layers] *= s;
    return mg_finish(m, l, c_out);
}

static inline int mg_conv(mg_model *m, int from, int c_out, int k, int s, int act)
{
    return mg_conv_type(m, MG_CONV, from, c_out, k, s, act, 1);
}

static inline int mg_bn(mg_model *m, int from)
{
    int c = mg_channels(m, from);
    mg_layer *l = mg_layer_add(m, MG_BN, 1, &from);
    l->tensors[0] = mg_tensor_add(m, "gamma", 1, &c, 0.2f, 1.0f);
    l->tensors[1] = mg_tensor_add(m, "beta", 1, &c, 0.2f, 0.0f);
    l->tensors[2] = mg_tensor_add(m, "running_mean", 1, &c, 0.2f, 0.0f);
    l->tensors[3] = mg_tensor_add(m, "running_var", 1, &c, 0.3f, 1.0f);
    return mg_finish(m, l, c);
}

static inline int mg_act(mg_model *m, int from, int act)
{
    mg_layer *l = mg_layer_add(m, MG_ACT, 1, &from);
    l->act = (uint32_t)act;
    return mg_finish(m, l, mg_channels(m, from));
}

static inline int mg_pool(mg_model *m, int type, int from, int k, int s, int pad)
{
    mg_layer *l = mg_layer_add(m, type, 1, &from);
    l->kernel = (uint32_t)k;
    l->stride = (uint32_t)s;
    l->pad = (uint32_t)pad;
    m->scale[m->n_layers] *= s;
    return mg_finish(m, l, mg_channels(m, from));
}

static inline int mg_mp(mg_model *m, int from) { return mg_pool(m, MG_MP, from, 2, 2, 0); }
static inline int mg_sp(mg_model *m, int from, int k)
{
    return mg_pool(m, MG_SP, from, k, 1, k / 2);
}

static inline int mg_upsample(mg_model *m, int from, int factor)
{
    mg_layer *l = mg_layer_add(m, MG_UPSAMPLE, 1, &from);
    l->kernel = (uint32_t)factor;
    m->scale[m->n_layers] /= factor;
    return mg_finish(m, l, mg_channels(m, from));
}

static inline int mg_reorg(mg_model *m, int from)
{
    mg_layer *l = mg_layer_add(m, MG_REORG, 1, &from);
    m->scale[m->n_layers] *= 2;
    return mg_finish(m, l, 4 * mg_channels(m, from));
}

static inline int mg_concat(mg_model *m, int n, const int *from)
{
    mg_layer *l = mg_layer_add(m, MG_CONCAT, n, from);
    int c = 0;
    for (int k = 0; k < n; k++)
        c += mg_channels(m, from[k]);
    return mg_finish(m, l, c);
}

/* Shortcut (10) or Add (12, with activation). */
static inline int mg_sum(mg_model *m, int type, int n, const int *from, int act)
{
    mg_layer *l = mg_layer_add(m, type, n, from);
    l->act = (uint32_t)act;
    return mg_finish(m, l, mg_channels(m, from[0]));
}

/* Detect over num_levels inputs, 1x1 heads with weights and biases. */
static inline int mg_detect(mg_model *m, const int *from)
{
    int n = (int)m->nl, no = (int)m->nc + 5, rows = (int)m->na * no;
    mg_layer *l = mg_layer_add(m, MG_DETECT, n, from);
    for (int k = 0; k < n; k++) {
        int c_in = mg_channels(m, from[k]);
        int ws[4] = {rows, c_in, 1, 1};
        l->tensors[2 * k] = mg_tensor_add(m, "weight", 4, ws, sqrtf(3.0f / (float)c_in), 0.0f);
        l->tensors[2 * k + 1] = mg_tensor_add(m, "bias", 1, &rows, 1.0f, -1.0f);
    }
    return mg_finish(m, l, 0);
}

static inline void mg_free(mg_model *m)
{
    for (int t = 0; t < m->n_tensors; t++) {
        free(m->tensors[t].data);
        m->tensors[t].data = NULL;
    }
}

/* ---- serializing ---- */

static inline size_t mg_align(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

static inline uint32_t mg_crc(const uint8_t *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

/* Recomputes the three CRCs from the header's own offsets (clamped to the
 * buffer, so it works on patched headers too). */
static inline void mg_fix_crcs(uint8_t *buf, size_t size)
{
    uint64_t data_off = mg_get64(buf + 64), data_size = mg_get64(buf + 72);
    if (data_off >= 128 && data_off <= size)
        mg_put32(buf + 80, mg_crc(buf + 128, (size_t)data_off - 128));
    if (data_off <= size && data_size <= size - data_off)
        mg_put32(buf + 84, mg_crc(buf + data_off, (size_t)data_size));
    mg_put32(buf + 124, mg_crc(buf, 124));
}

static inline void mg_write_meta(const mg_model *m, uint8_t *p, uint32_t names_size)
{
    mg_put32(p, m->nc);
    mg_put32(p + 4, m->nl);
    mg_put32(p + 8, m->na);
    mg_put32(p + 12, m->img);
    mg_put32(p + 16, m->max_stride);
    mg_put32(p + 20, m->act);
    mg_put32(p + 24, m->fused);
    for (int l = 0; l < 4; l++) {
        mg_put32(p + 32 + 4 * l, m->strides[l]);
        for (int a = 0; a < 4; a++)
            for (int k = 0; k < 2; k++)
                mg_putf(p + 48 + 4 * (l * 8 + a * 2 + k), m->anchors[l][a][k]);
    }
    for (int i = 0; i < 32; i++)
        p[176 + i] = (uint8_t)(i * 7 + 1);
    memcpy(p + 208, m->name, 64);
    mg_put32(p + 272, names_size);
    char *names = (char *)p + 276;
    for (uint32_t c = 0; c < m->nc; c++)
        names += sprintf(names, "class%u", c) + 1;
}

static inline void mg_write_layer(const mg_layer *l, uint8_t *r)
{
    mg_put32(r, l->type);
    mg_put32(r + 4, l->act);
    mg_put32(r + 8, l->n_in);
    for (int k = 0; k < 16; k++)
        mg_put32(r + 12 + 4 * k, (uint32_t)l->inputs[k]);
    mg_put32(r + 76, l->c_out);
    mg_put32(r + 80, l->kernel);
    mg_put32(r + 84, l->stride);
    mg_put32(r + 88, l->pad);
    mg_put32(r + 92, l->groups);
    mg_putf(r + 96, l->alpha);
    mg_putf(r + 100, l->eps);
    for (int k = 0; k < 8; k++)
        mg_put32(r + 104 + 4 * k, l->tensors[k]);
    mg_put32(r + 136, l->source);
}

/* The whole file in a malloc'd buffer. */
static inline uint8_t *mg_serialize(const mg_model *m, size_t *size_out)
{
    uint32_t names_size = 0;
    char tmp[32];
    for (uint32_t c = 0; c < m->nc; c++)
        names_size += (uint32_t)snprintf(tmp, sizeof tmp, "class%u", c) + 1;
    size_t meta_size = 276 + names_size;
    size_t layers_off = mg_align(128 + meta_size, 8);
    size_t tensors_off = layers_off + (size_t)m->n_layers * 192;
    size_t data_off = mg_align(tensors_off + (size_t)m->n_tensors * 96, 64);
    size_t data_size = 0;
    for (int t = 0; t < m->n_tensors; t++)
        data_size = mg_align(data_size, 64) + m->tensors[t].elems * 4;
    size_t size = data_off + data_size;
    uint8_t *buf = calloc(1, size);
    memcpy(buf, "LIBYOLO", 8);
    mg_put32(buf + 8, m->version);
    mg_put32(buf + 12, 128);
    mg_put64(buf + 16, size);
    mg_put32(buf + 24, (uint32_t)m->n_layers);
    mg_put32(buf + 28, (uint32_t)m->n_tensors);
    mg_put64(buf + 32, 128);
    mg_put64(buf + 40, meta_size);
    mg_put64(buf + 48, layers_off);
    mg_put64(buf + 56, tensors_off);
    mg_put64(buf + 64, data_off);
    mg_put64(buf + 72, data_size);
    mg_write_meta(m, buf + 128, names_size);
    for (int i = 0; i < m->n_layers; i++)
        mg_write_layer(&m->layers[i], buf + layers_off + (size_t)i * 192);
    size_t off = 0;
    for (int t = 0; t < m->n_tensors; t++) {
        const mg_tensor *x = &m->tensors[t];
        uint8_t *r = buf + tensors_off + (size_t)t * 96;
        off = mg_align(off, 64);
        memcpy(r, x->name, 56);
        mg_put32(r + 60, x->ndim);
        for (int d = 0; d < 4; d++)
            mg_put32(r + 64 + 4 * d, x->shape[d]);
        mg_put64(r + 80, off);
        mg_put64(r + 88, x->elems * 4);
        for (size_t i = 0; i < x->elems; i++)
            mg_putf(buf + data_off + off + 4 * i, x->data[i]);
        off += x->elems * 4;
    }
    mg_fix_crcs(buf, size);
    *size_out = size;
    return buf;
}

static inline int mg_write_buf(const char *path, const uint8_t *buf, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = size ? fwrite(buf, 1, size, f) : 0;
    return (fclose(f) == 0 && w == size) ? 0 : -1;
}

static inline int mg_write(const mg_model *m, const char *path)
{
    size_t size;
    uint8_t *buf = mg_serialize(m, &size);
    int r = mg_write_buf(path, buf, size);
    free(buf);
    return r;
}

/* Makes a fresh temporary directory for a test's model files: under
 * $TMPDIR if set, else in memory (/dev/shm) when available, else /tmp.
 * The tests write thousands of small files. Returns 0 on success. */
static inline int mg_temp_dir(char *buf, size_t size, const char *tag)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base)
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(buf, size, "%s/libyolo-%s-XXXXXX", base, tag);
    return mkdtemp(buf) ? 0 : -1;
}

/* ---- ready-made graphs ---- */

/* Every layer type of the format, two levels (strides 8 and 16), 3 classes,
 * 2 anchors; inputs must be multiples of 16. */
static inline void mg_build_full(mg_model *m, uint64_t seed)
{
    const int strides[2] = {8, 16};
    mg_init(m, 3, 2, 2, strides, 16, seed);
    int r0 = mg_reorg(m, -1);                               /* 0: 12ch /2 */
    int c1 = mg_conv(m, r0, 8, 3, 1, 1);                    /* 1: /2 */
    int c2 = mg_conv(m, c1, 16, 3, 2, 1);                   /* 2: /4 */
    int p3 = mg_mp(m, c2);                                  /* 3: /8 */
    int p4 = mg_pool(m, MG_MAXPOOL, c2, 3, 2, 1);           /* 4: /8 */
    int c5 = mg_conv(m, p3, 16, 1, 1, 2);                   /* 5: /8 SiLU */
    int s6 = mg_sp(m, c5, 5);                               /* 6 */
    int cat7[3] = {s6, c5, p4};
    int k7 = mg_concat(m, 3, cat7);                         /* 7: 48ch */
    int c8 = mg_conv(m, k7, 24, 3, 2, 1);                   /* 8: /16 */
    int u9 = mg_upsample(m, c8, 2);                         /* 9: /8 */
    int cat10[2] = {u9, k7};
    int k10 = mg_concat(m, 2, cat10);                       /* 10: 72ch */
    int c11 = mg_conv_type(m, MG_CONV2D, k10, 16, 3, 1, 0, 0); /* 11: no bias */
    int b12 = mg_bn(m, c11);                                /* 12 */
    int a13 = mg_act(m, b12, 2);                            /* 13: SiLU */
    int c14 = mg_conv_type(m, MG_CONV2D, a13, 16, 3, 1, 0, 1); /* 14 */
    int c15 = mg_conv_type(m, MG_CONV2D, a13, 16, 1, 1, 0, 1); /* 15 */
    int add16[2] = {c14, c15};
    int d16 = mg_sum(m, MG_ADD, 2, add16, 1);               /* 16: Add + LeakyReLU */
    int sc17[2] = {d16, c5};
    int s17 = mg_sum(m, MG_SHORTCUT, 2, sc17, 0);           /* 17 */
    int det[2] = {s17, c8};
    mg_detect(m, det);                                      /* 18 */
}

/* The smallest useful file: one 1x1 Conv and a one-level Detect with one
 * class and one anchor (a few hundred bytes of weights). */
static inline void mg_build_tiny(mg_model *m, uint64_t seed)
{
    const int strides[1] = {2};
    mg_init(m, 1, 1, 1, strides, 2, seed);
    int c0 = mg_conv(m, -1, 4, 3, 2, 1);
    mg_detect(m, &c0);
}

#endif /* LIBYOLO_MODELGEN_H */
