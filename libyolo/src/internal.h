/*
 * Internal interfaces shared by the library's source files. Not installed.
 *
 * Data flow: model.c loads and validates a file into a yolo_model (layers
 * with pointers into the mmap'd tensor data); graph.c plans a yolo_ctx for
 * one input shape (output shape, FLOPs and arena offset of every layer) and
 * runs the layers in order through the op table below; ops_*.c hold one
 * family of layers each, a fast kernel next to a naive reference.
 */
#ifndef LIBYOLO_INTERNAL_H
#define LIBYOLO_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "../yolo.h"

#define YOLO_MAX_INPUTS 16
#define YOLO_MAX_LAYER_TENSORS 8
#define YOLO_MAX_LEVELS 4
#define YOLO_MAX_ANCHORS 4

/* ---- errors (errors.c) -------------------------------------------------- */

/* Records a printf-style message for yolo_last_error() on this thread and
 * returns status, so callers can write `return yolo_fail(YOLO_ERR_IO, ...)`. */
yolo_status yolo_fail(yolo_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Clears the thread's message (called on entry of public functions). */
void yolo_clear_error(void);

/* ---- time (timing.c) ---------------------------------------------------- */

uint64_t yolo_now_ns(void); /* CLOCK_MONOTONIC */

/* ---- layer types (values are the file format's, docs/model-format.md) --- */

enum {
    LAYER_CONV = 1,
    LAYER_CONV2D = 2,
    LAYER_BATCHNORM = 3,
    LAYER_ACT = 4,
    LAYER_MAXPOOL = 5,
    LAYER_MP = 6,
    LAYER_SP = 7,
    LAYER_CONCAT = 8,
    LAYER_UPSAMPLE = 9,
    LAYER_SHORTCUT = 10,
    LAYER_REORG = 11,
    LAYER_ADD = 12,
    LAYER_DETECT = 13,
    LAYER_TYPE_MAX = 13
};

/* NCHW shape. Detect's output is {n, 1, rows, no}. */
typedef struct {
    int n, c, h, w;
} yolo_shape;

static inline size_t shape_elems(yolo_shape s)
{
    return (size_t)s.n * (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

/* A tensor of the model file, validated at load. */
typedef struct {
    char name[56];
    int ndim;
    int shape[4];
    size_t elems;
    const float *data; /* inside the mapping, 64-byte aligned */
} model_tensor;

/* One layer as read from the file. */
typedef struct {
    int type;
    yolo_activation act;
    int n_inputs;
    int inputs[YOLO_MAX_INPUTS]; /* -1 = network input */
    int c_out, kernel, stride, pad, groups;
    float alpha, eps;
    const model_tensor *tensors[YOLO_MAX_LAYER_TENSORS]; /* NULL = none */
    int source_index;
} model_layer;

struct yolo_model {
    void *map;           /* whole file, read-only */
    size_t map_size;
    char path[512];
    yolo_model_info info; /* info.name points into name below */
    char name[64];
    const char **class_names; /* num_classes pointers into the mapping */
    int n_layers;
    model_layer *layers;
    int n_tensors;
    model_tensor *tensors;
    int max_inputs_channels; /* unused by ops; reserved for planning */
    /* The FAST backend's packed weights, made on first need by the model's
     * contexts and shared by them, with their lock (graph_fast.c); NULL for
     * a model not made by yolo_model_load (tests' hand-built ones). */
    struct model_fast *fast;
    /* 1: map is a private read-only mapping of a file, so pages of tensors
     * whose data FAST has packed may be dropped from memory (madvise): a
     * later read faults them in again from the file, unchanged. */
    int map_droppable;
};

/* ---- CRC-32 (crc32.c) ----------------------------------------------------- */

/* zlib's CRC-32 (IEEE polynomial, reflected 0xEDB88320, pre- and post-
 * inverted): crc32_ieee(0, p, n) is the CRC of p, crc32_ieee(prev, q, m)
 * continues it as zlib's crc32 does. Carry-less-multiply folding where the
 * CPU has it (run-time check), zlib's crc32 otherwise. */
uint32_t crc32_ieee(uint32_t crc, const void *p, size_t n);
typedef enum { CRC32_IMPL_ZLIB, CRC32_IMPL_PCLMUL, CRC32_IMPL_VPCLMUL } crc32_impl;
/* For tests: whether this CPU runs impl, and the CRC through it (zlib's
 * when it does not). */
int crc32_impl_available(crc32_impl impl);
uint32_t crc32_ieee_with(crc32_impl impl, uint32_t crc, const void *p, size_t n);
/* The folding constants: value = bitreverse32(x^exponent mod P) << 32
 * (crc32.c explains why), for tests to regenerate. */
typedef struct {
    int exponent;
    uint64_t value;
} crc32_constant;
extern const crc32_constant crc32_constants[];
extern const int crc32_n_constants;
/* Barrett reduction's mu = floor(x^64 / P) and P itself, as 33-bit
 * reflected values (term x^d at bit 32 - d). */
#define CRC32_MU33 0x1f7011641ull
#define CRC32_P33 0x1db710641ull

/* ---- thread pool (threadpool.c) ------------------------------------------ */

/* A fixed set of threads owned by one ctx. tpool_run calls fn(arg, tid, n)
 * once on each of the n threads (the caller is tid 0) and returns when all
 * have returned; fn splits the work by tid. Not reentrant. */
typedef struct yolo_pool yolo_pool;
typedef void (*tpool_fn)(void *arg, int tid, int nthreads);
yolo_status tpool_create(int threads, yolo_pool **out);
void tpool_free(yolo_pool *pool);
int tpool_threads(const yolo_pool *pool); /* 1 for a NULL pool */
void tpool_run(yolo_pool *pool, tpool_fn fn, void *arg);
/* Splits [0, n) into one contiguous range per thread (none empty; fewer
 * threads when n is small) and calls fn(arg, begin, end, tid) on each:
 * for loops whose items cost the same (planes, rows, elements). */
typedef void (*tpool_range_fn)(void *arg, size_t begin, size_t end, int tid);
void tpool_for(yolo_pool *pool, size_t n, tpool_range_fn fn, void *arg);

/* ---- fast convolution (conv_fast.c, kernel_*.c) --------------------------- */

/* Weights are packed in panels of CONVF_MR output channels: panel p holds,
 * for every k = (c*kh + ky)*kw + kx, the CONVF_MR weights of channels
 * p*MR .. p*MR+MR-1 (zeros past c_out). The kernels compute tiles of MR
 * channels x CONVF_NR output pixels (flattened oy*OW + ox) over a packed
 * slice of CONVF_KC rows of the im2col matrix. */
#define CONVF_MR 8
#define CONVF_NR 48
#ifndef CONVF_KC
#define CONVF_KC 128 /* -D for experiments */
#endif
#ifndef CONVF_GROUP
#define CONVF_GROUP 4 /* tiles gathered together (-D for experiments) */
#endif

/* One microkernel call: C[m][j] (+)= sum_k a[k*MR + m] * b[k*ldb + j] over
 * k < kc, for m < m_valid, j < n_valid; row m of C at c + m*ldc. The kernel
 * reads all CONVF_NR columns of every b row (ldb = CONVF_NR for a gathered
 * panel; the plane size when a 1x1 layer's full tile is read in place).
 * first: start from bias (0 if NULL) instead of loading C; last: apply the
 * activation and store. */
typedef struct {
    int kc, m_valid, n_valid, first, last;
    const float *a, *b, *bias;
    float *c;
    size_t ldb, ldc;
    yolo_activation act;
    float alpha;
} convf_tile;
typedef void (*convf_kernel)(const convf_tile *t);

/* The kernels of one ISA (kernels.c, at the end of this file). */
typedef struct yolo_kernels yolo_kernels;

/* Floats of packed weights for c_out x k_total (k_total = Cin*k*k). */
size_t convf_packed_floats(int c_out, size_t k_total);
/* The same rounded up to 16 floats: where the next packed matrix starts
 * when several are stored back to back (Detect's levels). */
static inline size_t convf_packed_span(int c_out, size_t k_total)
{
    return (convf_packed_floats(c_out, k_total) + 15) / 16 * 16;
}
void convf_pack_weights(const float *weight, int c_out, size_t k_total, float *packed);
/* Floats of scratch per thread. */
size_t convf_thread_scratch_floats(void);

/* Handed to ops by the FAST backend (op_args.fast; NULL otherwise). */
typedef struct {
    yolo_pool *pool;
    const yolo_kernels *kernels; /* the ctx's ISA */
    const float *packed; /* this layer's packed weights, NULL if none */
    float *scratch;      /* per-thread scratch, tpool_threads() slices */
} op_fast;

/* ---- op table (ops.c registers every family) ---------------------------- */

/* Everything a kernel needs for one layer on one planned shape. */
typedef struct {
    const yolo_model *model;
    const model_layer *layer;
    int n_in;
    const float *in[YOLO_MAX_INPUTS];
    yolo_shape in_shape[YOLO_MAX_INPUTS];
    float *out;
    yolo_shape out_shape;
    float *scratch; /* at least op->scratch() floats, 64-byte aligned */
    const op_fast *fast; /* FAST backend state, NULL for the others */
} op_args;

typedef struct {
    /* Type name for the timing tables; LAYER_ACT uses act_name() instead. */
    const char *name;
    /* Output shape from input shapes; also checks the layer's parameters and
     * tensor shapes against them. Sets the error message and returns a
     * status on mismatch. Pure: no allocation. */
    yolo_status (*shape)(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                         int n_in, yolo_shape *out);
    /* FLOPs (multiply-add = 2) of the whole batch. */
    uint64_t (*flops)(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out);
    /* Scratch floats needed (0 if none). */
    size_t (*scratch)(const model_layer *l, const yolo_shape *in, int n_in, yolo_shape out);
    void (*run)(const op_args *a);            /* fast path */
    void (*run_reference)(const op_args *a);  /* naive loops, for tests */
} op_vtable;

/* NULL for an unknown type. */
const op_vtable *op_lookup(int type);
/* "LeakyReLU", "SiLU" or "Identity". */
const char *act_name(yolo_activation act);
/* Name shown for a layer: op name, or the activation's for LAYER_ACT. */
const char *layer_type_name(const model_layer *l);

/* Families (one file each) export their vtables. */
extern const op_vtable op_conv, op_conv2d, op_batchnorm, op_act, op_maxpool, op_mp, op_sp,
    op_concat, op_upsample, op_shortcut, op_reorg, op_add, op_detect;

/* Shared element-wise helpers (ops_norm.c). Activation, BatchNorm,
 * Shortcut and Add may run in place (out == in[0]); other ops must not. */
void apply_activation(float *x, size_t n, yolo_activation act, float alpha);
void apply_bias_activation(float *x, size_t n, float bias, yolo_activation act, float alpha);

/* Checks shared by the ops' shape() functions (ops.c). Each records a message
 * naming the layer and returns YOLO_ERR_FORMAT on mismatch. */
yolo_status ops_check_inputs(const model_layer *l, const yolo_shape *in, int n_in, int min_in,
                             int max_in);
yolo_status ops_check_act(const model_layer *l);
yolo_status ops_check_tensor(const model_layer *l, const char *role, const model_tensor *t,
                             int ndim, const int *dims);
yolo_status ops_check_output(const model_layer *l, yolo_shape out);

/* EXIF orientation (exif.c), used by image.c: orientation 1..8 (1 if absent
 * or unreadable) from a TIFF block or a JPEG APP1 payload, and applying it. */
int exif_orientation(const uint8_t *tiff, size_t size);
int exif_orientation_jpeg_app1(const uint8_t *app1, size_t size);
yolo_status exif_apply_orientation(yolo_image *img, int orientation);

/* Convolution core (ops_conv.c), also used by Detect's 1x1 heads. */
typedef struct {
    int c_in, h, w, c_out, k, stride, pad, oh, ow;
} conv_geom;
void conv2d_gemm(const conv_geom *g, const float *in, const float *weight, const float *bias,
                 float *out, float *scratch);
void conv2d_naive(const conv_geom *g, const float *in, const float *weight, const float *bias,
                  float *out);
size_t conv2d_scratch_floats(const conv_geom *g);

/* Fast convolution (conv_fast.c): */
/* out = act(conv(in) + bias) for one batch item, work split over the pool's
 * threads; scratch holds tpool_threads() * convf_thread_scratch_floats(). */
void convf_conv2d(const conv_geom *g, const float *in, const float *packed, const float *bias,
                  yolo_activation act, float alpha, float *out, const yolo_kernels *k,
                  yolo_pool *pool, float *scratch);

/* Winograd F(4x4,3x3) for 3x3 stride-1 convolutions (winograd.c). */
/* 1 if g is a 3x3 stride-1 convolution where Winograd is faster. */
int wino_worthwhile(const conv_geom *g);
/* The shape-free part of that: a layer that may run through Winograd. */
int wino_candidate(int k, int stride, int pad, int c_in, int c_out);
/* Transformed weights: floats, and packing them from [c_out][c_in][3][3]. */
size_t wino_packed_floats(int c_out, int c_in);
void wino_pack_weights(const float *weight, int c_out, int c_in, float *packed);
/* Floats of scratch per thread for a c_in -> c_out layer. */
size_t wino_thread_scratch_floats(int c_in, int c_out);
/* Floats of the buffer shared by the threads that wino_conv2d uses for
 * layers with few tile blocks (0 if it needs none). */
size_t wino_shared_floats(const conv_geom *g, int threads);
/* out = act(conv(in) + bias) for one batch item (g->k == 3, stride 1);
 * scratch holds tpool_threads() slices of scratch_per_thread floats
 * (at least wino_thread_scratch_floats(), 64-byte aligned each); shared
 * has wino_shared_floats() floats (or is NULL: slower with few blocks). */
void wino_conv2d(const conv_geom *g, const float *in, const float *packed, const float *bias,
                 yolo_activation act, float alpha, float *out, const yolo_kernels *k,
                 yolo_pool *pool, float *scratch, size_t scratch_per_thread, float *shared);

/* ---- kernels per ISA (kernels.c) ------------------------------------------- */

/* Winograd transforms of one block of nt tiles from t0 (layouts in
 * winograd.c): the input of channels [ci0, ci1) into v; the output of
 * channels [co0, co0+n_co) from m, with bias and activation, into out. */
typedef void (*wino_input_fn)(const conv_geom *g, const float *in, int tiles_x, int t0, int nt,
                              int ci0, int ci1, float *v);
typedef void (*wino_output_fn)(const conv_geom *g, const float *m, int tiles_x, int t0, int nt,
                               int co0, int n_co, const float *bias, yolo_activation act,
                               float alpha, float *out);

/* One item of Detect's decode (ops_detect.c): pixels [p0, p0 + n) of one
 * anchor, sigmoided logits [no][plane] -> rows [n][no], boxes decoded. */
typedef struct {
    const float *src; /* channel 0 of the anchor, at pixel p0 */
    size_t plane;     /* floats from one channel plane to the next (ny*nx) */
    float *dst;       /* the row of pixel p0 */
    size_t n;         /* pixels, at most DECODE_CHUNK (ops_detect.c) */
    int no, nx, x0, y0; /* x0, y0: grid cell of pixel p0 */
    float s, aw, ah;  /* stride, anchor width and height */
} decode_chunk;

/* Everything the FAST backend runs that has ISA-specific code: one const
 * table per ISA, chosen once per ctx, so that every part of a run (the
 * convolutions, Winograd, Detect) uses the same ISA, and a test or a user
 * can force one for all of them. */
struct yolo_kernels {
    yolo_isa isa;
    const char *name;           /* yolo_isa_name(isa) */
    convf_kernel gemm;          /* the 8 x 48 microkernel */
    /* dst[i] = src[2i], i < n: the stride-2 rows of a 3x3/s2 gather */
    void (*copy2)(float *dst, const float *src, int n);
    /* in-place activation (SiLU through a vector exp within 4 ulp of expf) */
    void (*activate)(float *x, size_t n, yolo_activation act, float alpha);
    /* in-place 1 / (1 + e^-x), the same exp (Detect's sigmoid) */
    void (*sigmoid)(float *x, size_t n);
    wino_input_fn wino_input;
    wino_output_fn wino_output;
    /* Detect's transpose and box transform; every ISA writes the same bits */
    void (*decode)(const decode_chunk *c);
};

/* The table of isa; NULL when this CPU lacks it (cpu.c) or this build has
 * no kernels for it (AUTO, NEON on x86). */
const yolo_kernels *kernels_for(yolo_isa isa);

/* The entries, by the file that defines them. On x86 only: the AVX2 and
 * AVX-512 ones (compiled with target attributes; called only through a
 * table that kernels_for() gave out, that is after the CPU check). */
void convf_kernel_generic(const convf_tile *t);                      /* conv_fast.c */
void convf_copy2_generic(float *dst, const float *src, int n);
void convf_sigmoid_generic(float *x, size_t n);
void wino_input_generic(const conv_geom *g, const float *in, int tiles_x, int t0, int nt,
                        int ci0, int ci1, float *v);                  /* winograd.c */
void wino_output_generic(const conv_geom *g, const float *m, int tiles_x, int t0, int nt,
                         int co0, int n_co, const float *bias, yolo_activation act,
                         float alpha, float *out);
void detect_decode_generic(const decode_chunk *c);                   /* ops_detect.c */

void convf_kernel_avx2(const convf_tile *t);                         /* kernel_avx2.c */
void convf_copy2_avx2(float *dst, const float *src, int n);
void convf_activate_avx2(float *x, size_t n, yolo_activation act, float alpha);
void convf_sigmoid_avx2(float *x, size_t n);
void wino_input_avx2(const conv_geom *g, const float *in, int tiles_x, int t0, int nt, int ci0,
                     int ci1, float *v);                              /* winograd_avx2.c */
void wino_output_avx2(const conv_geom *g, const float *m, int tiles_x, int t0, int nt, int co0,
                      int n_co, const float *bias, yolo_activation act, float alpha, float *out);
void detect_decode_avx2(const decode_chunk *c);                      /* ops_detect.c */

void convf_kernel_avx512(const convf_tile *t);                       /* kernel_avx512.c */
void convf_copy2_avx512(float *dst, const float *src, int n);
void convf_activate_avx512(float *x, size_t n, yolo_activation act, float alpha);
void convf_sigmoid_avx512(float *x, size_t n);
void wino_input_avx512(const conv_geom *g, const float *in, int tiles_x, int t0, int nt,
                       int ci0, int ci1, float *v);                   /* winograd_avx512.c */
void wino_output_avx512(const conv_geom *g, const float *m, int tiles_x, int t0, int nt,
                        int co0, int n_co, const float *bias, yolo_activation act, float alpha,
                        float *out);
void detect_decode_avx512(const decode_chunk *c);                    /* ops_detect.c */

#endif /* LIBYOLO_INTERNAL_H */
