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
 * through convf_conv2d and the decode is vectorized and threaded: the
 * [no][pixels] -> [pixels][no] transpose runs as 16x16 (AVX-512) or 8x8
 * (AVX2) in-register blocks, or as the scalar loop (generic), as the ctx's
 * kernel table (kernels.c) says; all write the same bits.
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
 * DECODE_CHUNK pixels of one anchor: its no channel runs are transposed
 * into its rows (which stay in L1: 64 rows of no = 85 floats is 22 KB) and
 * the box transform is applied on the way.
 *
 * The transpose is the cost (as a strided scalar scatter it took ~18x the
 * sigmoid), so it has in-register versions: 16x16 blocks with AVX-512,
 * 8x8 with AVX2, masked at the channel tail (no = 85 is 5x16 + 5) and the
 * pixel tail. They apply the box transform to the channel vectors before
 * transposing, with the scalar code's float operations in the same order
 * (and no FMA in their target lists, so nothing can be contracted): every
 * path writes the same bits. */
#define DECODE_CHUNK 64

/* A decode item (decode_chunk, internal.h) is pixels [p0, p0 + n) of one
 * anchor. Portable: scatter each channel run into the rows, then the box
 * transform row by row (the formulas of decode_level). */
void detect_decode_generic(const decode_chunk *c)
{
    const size_t no = (size_t)c->no;
    for (size_t k = 0; k < no; k++) {
        const float *src = c->src + k * c->plane;
        for (size_t p = 0; p < c->n; p++)
            c->dst[p * no + k] = src[p];
    }
    float *r = c->dst;
    int x = c->x0, y = c->y0;
    for (size_t p = 0; p < c->n; p++, r += no) {
        r[0] = (r[0] * 2.0f - 0.5f + (float)x) * c->s;
        r[1] = (r[1] * 2.0f - 0.5f + (float)y) * c->s;
        float tw = r[2] * 2.0f, th = r[3] * 2.0f;
        r[2] = tw * tw * c->aw;
        r[3] = th * th * c->ah;
        if (++x == c->nx)
            x = 0, y++;
    }
}

/* Grid cells of the next `lanes` pixels from (*x, *y), advancing it. */
static void grid_cells(int *x, int *y, int nx, int lanes, int32_t *gx, int32_t *gy)
{
    for (int i = 0; i < lanes; i++) {
        gx[i] = *x;
        gy[i] = *y;
        if (++*x == nx)
            *x = 0, ++*y;
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* Only avx512f / avx2 (no fma): see the comment above DECODE_CHUNK. */
#define DETECT_AVX512 __attribute__((target("avx512f")))
#define DETECT_AVX2 __attribute__((target("avx2")))
/* The register arrays below stay in registers only when fully unrolled. */
#define UNROLL _Pragma("GCC unroll 16")

/* r[i] holds channel i of 16 pixels; afterwards r[j] holds the 16 channels
 * of pixel j. Pairs, then quads within 128-bit lanes, then a 4x4
 * transpose of the lanes. */
DETECT_AVX512 static inline void transpose16x16(__m512 r[16])
{
    __m512 t[16];
    UNROLL
    for (int j = 0; j < 16; j += 2) {
        t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
    }
    /* r[4q+m], lane L: channels 4q..4q+3 of pixel 4L+m */
    UNROLL
    for (int q = 0; q < 16; q += 4) {
        r[q] = _mm512_shuffle_ps(t[q], t[q + 2], 0x44);
        r[q + 1] = _mm512_shuffle_ps(t[q], t[q + 2], 0xEE);
        r[q + 2] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        r[q + 3] = _mm512_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    UNROLL
    for (int m = 0; m < 4; m++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xEE);
        __m512 v2 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x44);
        __m512 v3 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xEE);
        t[m] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        t[4 + m] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        t[8 + m] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        t[12 + m] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
    UNROLL
    for (int j = 0; j < 16; j++)
        r[j] = t[j];
}

/* Channels k0..k0+15 of 16 pixels (pixels masked by pm; channels past no
 * repeat the last one, their lanes are never stored). */
DETECT_AVX512 static inline void load_block16(const decode_chunk *c, const float *src, int k0,
                                              __mmask16 pm, __m512 r[16])
{
    UNROLL
    for (int i = 0; i < 16; i++) {
        const int k = k0 + i < c->no ? k0 + i : c->no - 1;
        r[i] = _mm512_maskz_loadu_ps(pm, src + (size_t)k * c->plane);
    }
}

DETECT_AVX512 static inline void store_block16(float *dst, size_t no, size_t np, __mmask16 km,
                                               const __m512 r[16])
{
    UNROLL
    for (size_t i = 0; i < 16; i++)
        if (i < np)
            _mm512_mask_storeu_ps(dst + i * no, km, r[i]);
}

DETECT_AVX512 void detect_decode_avx512(const decode_chunk *c)
{
    const __m512 two = _mm512_set1_ps(2.0f), half = _mm512_set1_ps(0.5f);
    const __m512 s = _mm512_set1_ps(c->s), aw = _mm512_set1_ps(c->aw),
                 ah = _mm512_set1_ps(c->ah);
    const size_t no = (size_t)c->no;
    int x = c->x0, y = c->y0;
    for (size_t p = 0; p < c->n; p += 16) {
        const size_t np = c->n - p < 16 ? c->n - p : 16;
        const __mmask16 pm = (__mmask16)((1u << np) - 1);
        int32_t gx[16], gy[16];
        grid_cells(&x, &y, c->nx, 16, gx, gy);
        const float *src = c->src + p;
        float *dst = c->dst + p * no;
        __m512 r[16];
        load_block16(c, src, 0, pm, r);
        const __m512 fx = _mm512_cvtepi32_ps(_mm512_loadu_si512(gx));
        const __m512 fy = _mm512_cvtepi32_ps(_mm512_loadu_si512(gy));
        r[0] = _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(r[0], two), half), fx), s);
        r[1] = _mm512_mul_ps(_mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(r[1], two), half), fy), s);
        const __m512 tw = _mm512_mul_ps(r[2], two), th = _mm512_mul_ps(r[3], two);
        r[2] = _mm512_mul_ps(_mm512_mul_ps(tw, tw), aw);
        r[3] = _mm512_mul_ps(_mm512_mul_ps(th, th), ah);
        for (size_t k0 = 0;;) {
            const size_t kc = no - k0 < 16 ? no - k0 : 16;
            transpose16x16(r);
            store_block16(dst + k0, no, np, (__mmask16)((1u << kc) - 1), r);
            k0 += 16;
            if (k0 >= no)
                break;
            load_block16(c, src, (int)k0, pm, r);
        }
    }
}

/* The AVX2 analogue: r[i] channel i of 8 pixels -> r[j] pixel j. */
DETECT_AVX2 static inline void transpose8x8(__m256 r[8])
{
    __m256 t[8];
    UNROLL
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
        t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
    }
    /* r[4q+m], lane L: channels 4q..4q+3 of pixel 4L+m */
    UNROLL
    for (int q = 0; q < 8; q += 4) {
        r[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
        r[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
        r[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        r[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    UNROLL
    for (int m = 0; m < 4; m++) {
        t[m] = _mm256_permute2f128_ps(r[m], r[4 + m], 0x20);
        t[4 + m] = _mm256_permute2f128_ps(r[m], r[4 + m], 0x31);
    }
    UNROLL
    for (int j = 0; j < 8; j++)
        r[j] = t[j];
}

DETECT_AVX2 static inline void load_block8(const decode_chunk *c, const float *src, int k0,
                                           size_t np, __m256i pm, __m256 r[8])
{
    UNROLL
    for (int i = 0; i < 8; i++) {
        const int k = k0 + i < c->no ? k0 + i : c->no - 1;
        const float *q = src + (size_t)k * c->plane;
        r[i] = np == 8 ? _mm256_loadu_ps(q) : _mm256_maskload_ps(q, pm);
    }
}

DETECT_AVX2 static inline void store_block8(float *dst, size_t no, size_t np, size_t kc,
                                            __m256i km, const __m256 r[8])
{
    UNROLL
    for (size_t i = 0; i < 8; i++)
        if (i < np) {
            if (kc == 8)
                _mm256_storeu_ps(dst + i * no, r[i]);
            else
                _mm256_maskstore_ps(dst + i * no, km, r[i]);
        }
}

DETECT_AVX2 void detect_decode_avx2(const decode_chunk *c)
{
    const __m256 two = _mm256_set1_ps(2.0f), half = _mm256_set1_ps(0.5f);
    const __m256 s = _mm256_set1_ps(c->s), aw = _mm256_set1_ps(c->aw),
                 ah = _mm256_set1_ps(c->ah);
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const size_t no = (size_t)c->no;
    int x = c->x0, y = c->y0;
    for (size_t p = 0; p < c->n; p += 8) {
        const size_t np = c->n - p < 8 ? c->n - p : 8;
        const __m256i pm = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)np), iota);
        int32_t gx[8], gy[8];
        grid_cells(&x, &y, c->nx, 8, gx, gy);
        const float *src = c->src + p;
        float *dst = c->dst + p * no;
        __m256 r[8];
        load_block8(c, src, 0, np, pm, r);
        const __m256 fx = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(void *)gx));
        const __m256 fy = _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(void *)gy));
        r[0] = _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(r[0], two), half), fx), s);
        r[1] = _mm256_mul_ps(_mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(r[1], two), half), fy), s);
        const __m256 tw = _mm256_mul_ps(r[2], two), th = _mm256_mul_ps(r[3], two);
        r[2] = _mm256_mul_ps(_mm256_mul_ps(tw, tw), aw);
        r[3] = _mm256_mul_ps(_mm256_mul_ps(th, th), ah);
        for (size_t k0 = 0;;) {
            const size_t kc = no - k0 < 8 ? no - k0 : 8;
            const __m256i km = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)kc), iota);
            transpose8x8(r);
            store_block8(dst + k0, no, np, kc, km, r);
            k0 += 8;
            if (k0 >= no)
                break;
            load_block8(c, src, (int)k0, np, pm, r);
        }
    }
}
#endif

typedef struct {
    const yolo_model_info *info;
    int lvl, ny, nx;
    size_t chunks;     /* per anchor */
    const float *conv; /* [na*no][ny*nx] logits, already sigmoided */
    float *rows;       /* this level's first row */
    void (*decode)(const decode_chunk *c); /* the ctx's ISA's */
} decode_job;

static void decode_range(void *arg, size_t begin, size_t end, int tid)
{
    const decode_job *j = arg;
    const int no = j->info->num_outputs, nx = j->nx;
    const size_t hw = (size_t)j->ny * (size_t)nx;
    (void)tid;
    for (size_t item = begin; item < end; item++) {
        const int a = (int)(item / j->chunks);
        const size_t p0 = item % j->chunks * DECODE_CHUNK;
        const decode_chunk c = {
            .src = j->conv + (size_t)a * (size_t)no * hw + p0,
            .plane = hw,
            .dst = j->rows + ((size_t)a * hw + p0) * (size_t)no,
            .n = hw - p0 < DECODE_CHUNK ? hw - p0 : DECODE_CHUNK,
            .no = no,
            .nx = nx,
            .x0 = (int)(p0 % (size_t)nx),
            .y0 = (int)(p0 / (size_t)nx),
            .s = (float)j->info->strides[j->lvl],
            .aw = j->info->anchors[j->lvl][a][0],
            .ah = j->info->anchors[j->lvl][a][1],
        };
        j->decode(&c);
    }
}

typedef struct {
    void (*sigmoid)(float *x, size_t n);
    float *x;
} sigmoid_job;

static void sigmoid_range(void *arg, size_t begin, size_t end, int tid)
{
    const sigmoid_job *j = arg;
    (void)tid;
    j->sigmoid(j->x + begin, end - begin);
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
                         a->scratch, f->kernels, f->pool, f->scratch);
            const size_t hw = (size_t)si.h * (size_t)si.w;
            sigmoid_job sj = {f->kernels->sigmoid, a->scratch};
            tpool_for(f->pool, (size_t)c_out * hw, sigmoid_range, &sj);
            decode_job j = {info, lvl, si.h, si.w, (hw + DECODE_CHUNK - 1) / DECODE_CHUNK,
                            a->scratch, rows, f->kernels->decode};
            tpool_for(f->pool, (size_t)info->num_anchors * j.chunks, decode_range, &j);
            rows += (size_t)info->num_anchors * hw * (size_t)info->num_outputs;
            packed += convf_packed_span(c_out, (size_t)si.c);
        }
    }
}

static void detect_run(const op_args *a)
{
    if (a->fast && a->fast->packed && a->fast->kernels) {
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
