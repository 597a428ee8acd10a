/*
 * Letterbox and input tensor, bit-exact with the official detect.py:
 * ratio and padding computed as its letterbox() does (Python round = banker's
 * rounding = nearbyint), the resize a bit-exact model of OpenCV 4.6's uint8
 * INTER_LINEAR (11-bit fixed-point weights derived from float coordinates,
 * OpenCV's shift-based vertical pass, and its 2x2-average path for an exact
 * halving), and a constant border of 114.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE4_1__)
#include <smmintrin.h>
#endif

#include "internal.h"

#define LETTERBOX_PAD_VALUE 114
#define RESIZE_COEF_BITS 11
#define RESIZE_COEF_SCALE (1 << RESIZE_COEF_BITS)
/* Inner block of the loops written for the vectorizer (see
 * resize_row_vertical). */
#define SIMD_BLOCK 16
/* Bounds that keep every size computation far from int overflow. */
#define LETTERBOX_MAX_SIZE 65536
#define LETTERBOX_MAX_STRIDE 4096
#define LETTERBOX_MAX_PIXELS (1u << 28)

yolo_letterbox_params yolo_letterbox_default_params(void)
{
    yolo_letterbox_params p = {
        .img_size = 640, .stride = 32, .auto_pad = 1, .scale_up = 1, .canvas_w = 0, .canvas_h = 0,
    };
    return p;
}

/* ------------------------------------------------------------------------ */
/* Resize: OpenCV 4.6 cv::resize(INTER_LINEAR) on 8-bit, 3 channels          */

/* Per output index along one axis: the source index of the first tap and
 * the two 11-bit weights. */
typedef struct {
    int src0, src1;
    int w0, w1;
} resize_tap;

/* OpenCV derives the coordinate in double, rounds it to float, splits it
 * with floor, and turns both weights into 11-bit integers with rint.
 * Horizontally a tap outside the image is clamped with its fraction reset
 * (clamp_fraction); vertically the fraction is kept and only the row
 * indices are clamped. */
static void axis_taps(int src_len, int dst_len, int clamp_fraction, resize_tap *taps)
{
    double scale = 1.0 / ((double)dst_len / (double)src_len);
    for (int d = 0; d < dst_len; d++) {
        /* volatile: a fused multiply-add here would round differently. */
        volatile double pos = (d + 0.5) * scale;
        float f = (float)(pos - 0.5);
        int s = (int)floorf(f);
        f -= (float)s;
        int s0 = s, s1 = s + 1;
        if (clamp_fraction) {
            if (s < 0)
                s = 0, f = 0.f;
            if (s >= src_len - 1)
                s = src_len - 1, f = 0.f;
            s0 = s;
            s1 = f == 0.f ? s : s + 1; /* weight 0: never read past the edge */
        } else {
            s0 = s0 < 0 ? 0 : s0 >= src_len ? src_len - 1 : s0;
            s1 = s1 < 0 ? 0 : s1 >= src_len ? src_len - 1 : s1;
        }
        taps[d].src0 = s0;
        taps[d].src1 = s1;
        taps[d].w0 = (int)rintf((1.f - f) * (float)RESIZE_COEF_SCALE);
        taps[d].w1 = (int)rintf(f * (float)RESIZE_COEF_SCALE);
    }
}

/* The horizontal taps in the form the row loop wants: per output pixel the
 * byte offsets of its two source pixels and the weight pair (w0, w1). Where
 * the second tap is the next pixel (ofs1 == ofs0 + 3) and 8 bytes can be
 * read at ofs0 without leaving the row, the pixel can take the SIMD path;
 * `simd_prefix` is how many leading pixels do. */
typedef struct {
    int32_t *ofs0, *ofs1;
    int16_t *w; /* w0, w1 per pixel */
    int simd_prefix;
} row_taps;

/* An edge tap (both taps on one pixel, second weight 0) is rewritten as an
 * equivalent tap on two neighbouring pixels: x*w0 + y*0 is exact whatever y
 * is, so the bytes cannot change, but every interior and edge pixel then
 * has the (s, s + 1) shape the SIMD path handles. */
static void prepare_row_taps(const resize_tap *xt, int src_w, int dst_w, row_taps *rt)
{
    rt->simd_prefix = 0;
    int prefix_open = 1;
    for (int x = 0; x < dst_w; x++) {
        int s0 = xt[x].src0, s1 = xt[x].src1, w0 = xt[x].w0, w1 = xt[x].w1;
        if (s0 == s1 && w1 == 0 && src_w >= 2) {
            if (s0 + 1 < src_w)
                s1 = s0 + 1;
            else
                s0 = src_w - 2, s1 = src_w - 1, w1 = w0, w0 = 0;
        }
        rt->ofs0[x] = s0 * 3;
        rt->ofs1[x] = s1 * 3;
        rt->w[2 * x] = (int16_t)w0;
        rt->w[2 * x + 1] = (int16_t)w1;
        prefix_open = prefix_open && s1 == s0 + 1 && s0 * 3 + 8 <= src_w * 3;
        rt->simd_prefix += prefix_open;
    }
}

/* One output pixel horizontally, plain C. OpenCV keeps the 32-bit
 * fixed-point value (x 2048), but its vertical pass only ever uses it
 * shifted right by 4, which fits 16 bits (the two rounded weights sum to
 * 2048, 2049 at worst: 255 * 2049 >> 4 = 32655): that is what is stored,
 * halving the memory traffic of the vertical pass. */
static void horizontal_pixel(const uint8_t *row, const row_taps *rt, int x, int16_t *out)
{
    const uint8_t *p0 = row + rt->ofs0[x], *p1 = row + rt->ofs1[x];
    int w0 = rt->w[2 * x], w1 = rt->w[2 * x + 1];
    for (int c = 0; c < 3; c++)
        out[3 * x + c] = (int16_t)((p0[c] * w0 + p1[c] * w1) >> 4);
}

#if defined(__SSE4_1__)
/* The SIMD path. The 6 bytes of a pixel's two source pixels are shuffled
 * into (r0, r1, g0, g1, b0, b1) 16-bit pairs, so a single multiply-add
 * against (w0, w1, ...) yields its three exact 32-bit sums. */
static inline __m128i horizontal_sums(const uint8_t *p, const int16_t *w)
{
    const __m128i pairs = _mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1);
    __m128i px = _mm_loadl_epi64((const __m128i *)(const void *)p);
    int32_t wpair;
    memcpy(&wpair, w, sizeof wpair);
    __m128i sum = _mm_madd_epi16(_mm_shuffle_epi8(px, pairs), _mm_set1_epi32(wpair));
    return _mm_srai_epi32(sum, 4);
}

/* Two pixels per step, packed into one store of 8 values of which the last
 * 2 are junk that the next step (or the plain-C tail, or the spare elements
 * at the end of the row buffer) overwrites. */
static int horizontal_simd(const uint8_t *row, const row_taps *rt, int16_t *out)
{
    const __m128i compact = _mm_setr_epi8(0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 6, 7, 14, 15);
    /* Locals, so the stores through out cannot force reloads of rt. */
    const int32_t *ofs0 = rt->ofs0;
    const int16_t *w = rt->w;
    int n = rt->simd_prefix, x = 0;
    for (; x + 2 <= n; x += 2) {
        __m128i a = horizontal_sums(row + ofs0[x], w + 2 * x);
        __m128i b = horizontal_sums(row + ofs0[x + 1], w + 2 * x + 2);
        __m128i both = _mm_shuffle_epi8(_mm_packs_epi32(a, b), compact);
        _mm_storeu_si128((__m128i *)(void *)(out + 3 * x), both);
    }
    if (x < n) {
        __m128i a = horizontal_sums(row + ofs0[x], w + 2 * x);
        _mm_storel_epi64((__m128i *)(void *)(out + 3 * x), _mm_packs_epi32(a, a));
        x++;
    }
    return x;
}

/* The vertical pass, 16 outputs per step: (b * h) >> 16 is exactly the
 * signed multiply-high, the sum fits 16 bits (at most 2 * 1023 + 2), and the
 * unsigned saturating pack is the clamp to 0..255. */
static int vertical_simd(const int16_t *h0, const int16_t *h1, int16_t b0, int16_t b1, int n,
                         uint8_t *out)
{
    const __m128i w0 = _mm_set1_epi16(b0), w1 = _mm_set1_epi16(b1), two = _mm_set1_epi16(2);
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m128i v[2];
        for (int k = 0; k < 2; k++) {
            __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(h0 + j + 8 * k));
            __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(h1 + j + 8 * k));
            __m128i sum = _mm_add_epi16(_mm_mulhi_epi16(a, w0), _mm_mulhi_epi16(b, w1));
            v[k] = _mm_srai_epi16(_mm_add_epi16(sum, two), 2);
        }
        _mm_storeu_si128((__m128i *)(void *)(out + j), _mm_packus_epi16(v[0], v[1]));
    }
    return j;
}
#else
static int horizontal_simd(const uint8_t *row, const row_taps *rt, int16_t *out)
{
    (void)row, (void)rt, (void)out;
    return 0;
}

static int vertical_simd(const int16_t *h0, const int16_t *h1, int16_t b0, int16_t b1, int n,
                         uint8_t *out)
{
    (void)h0, (void)h1, (void)b0, (void)b1, (void)n, (void)out;
    return 0;
}
#endif

/* One source row resized horizontally into dst_w * 3 values (see
 * horizontal_pixel for the 16-bit form). */
static void resize_row_horizontal(const uint8_t *row, const row_taps *rt, int dst_w, int16_t *out)
{
    for (int x = horizontal_simd(row, rt, out); x < dst_w; x++)
        horizontal_pixel(row, rt, x, out);
}

/* OpenCV's vertical pass for uint8: each product is pre-shifted so it fits
 * 32 bits, which rounds differently from (b0*h0 + b1*h1 + 2^21) >> 22.
 * Each (b * h) >> 16 is a 16-bit "multiply high"; the clamp is a min/max. */
static inline uint8_t vertical_mix(int16_t h0, int16_t h1, int16_t b0, int16_t b1)
{
    int16_t a = (int16_t)(((int32_t)h0 * b0) >> 16);
    int16_t b = (int16_t)(((int32_t)h1 * b1) >> 16);
    int v = (a + b + 2) >> 2;
    v = v < 0 ? 0 : v;
    return (uint8_t)(v > 255 ? 255 : v);
}

/* The vertical pass over one output row: SIMD where available, then plain
 * C. The plain loop runs in fixed blocks of SIMD_BLOCK (plus a tail) over
 * restrict pointers, which is what gcc's -O2 vectorizer (it refuses loops
 * needing alias checks or a remainder loop) can still turn into SIMD. */
static void resize_row_vertical(const int16_t *restrict h0, const int16_t *restrict h1, int b0,
                                int b1, int n, uint8_t *restrict out)
{
    int16_t wb0 = (int16_t)b0, wb1 = (int16_t)b1;
    int j = vertical_simd(h0, h1, wb0, wb1, n, out);
    for (; j + SIMD_BLOCK <= n; j += SIMD_BLOCK)
        for (int k = 0; k < SIMD_BLOCK; k++)
            out[j + k] = vertical_mix(h0[j + k], h1[j + k], wb0, wb1);
    for (; j < n; j++)
        out[j] = vertical_mix(h0[j], h1[j], wb0, wb1);
}

#if defined(__SSE4_1__)
/* One row of the exact halving, two output pixels per step: 16 bytes of
 * each source row widened to 16 bits and summed, the second pixel's 6
 * values aligned down to the start, each pixel's two horizontal neighbours
 * added by a 3-lane shift, then rounded, packed and compacted. Reads stay
 * inside the rows (x + 3 <= dw) and the 2 junk bytes of the 8-byte store
 * land on pixel x + 2, written later. Returns how many pixels it did. */
static int half_row_simd(const uint8_t *r0, const uint8_t *r1, int dw, uint8_t *o)
{
    const __m128i zero = _mm_setzero_si128(), two = _mm_set1_epi16(2);
    const __m128i compact = _mm_setr_epi8(0, 1, 2, 8, 9, 10, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    int x = 0;
    for (; x + 3 <= dw; x += 2) {
        __m128i a = _mm_loadu_si128((const __m128i *)(const void *)(r0 + 6 * x));
        __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(r1 + 6 * x));
        __m128i lo = _mm_add_epi16(_mm_unpacklo_epi8(a, zero), _mm_unpacklo_epi8(b, zero));
        __m128i hi = _mm_add_epi16(_mm_unpackhi_epi8(a, zero), _mm_unpackhi_epi8(b, zero));
        __m128i second = _mm_alignr_epi8(hi, lo, 12); /* bytes 6..11 of the rows */
        __m128i p = _mm_add_epi16(lo, _mm_srli_si128(lo, 6));
        __m128i q = _mm_add_epi16(second, _mm_srli_si128(second, 6));
        p = _mm_srli_epi16(_mm_add_epi16(p, two), 2);
        q = _mm_srli_epi16(_mm_add_epi16(q, two), 2);
        __m128i out = _mm_shuffle_epi8(_mm_packus_epi16(p, q), compact);
        _mm_storel_epi64((__m128i *)(void *)(o + 3 * x), out);
    }
    return x;
}
#else
static int half_row_simd(const uint8_t *r0, const uint8_t *r1, int dw, uint8_t *o)
{
    (void)r0, (void)r1, (void)dw, (void)o;
    return 0;
}
#endif

/* Exact halving of both axes: OpenCV switches INTER_LINEAR to its fast
 * INTER_AREA path, a rounded 2x2 average. (The linear formulas with weights
 * 1024/1024 happen to give the same bytes; this is just the cheaper way.) */
static void resize_half(const uint8_t *src, int sw, uint8_t *dst, int dw, int dh, size_t dst_stride)
{
    size_t ss = (size_t)sw * 3;
    for (int y = 0; y < dh; y++) {
        const uint8_t *r0 = src + (size_t)(2 * y) * ss, *r1 = r0 + ss;
        uint8_t *o = dst + (size_t)y * dst_stride;
        for (int x = half_row_simd(r0, r1, dw, o); x < dw; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = (size_t)(6 * x + c);
                o[x * 3 + c] = (uint8_t)((r0[i] + r0[i + 3] + r1[i] + r1[i + 3] + 2) >> 2);
            }
    }
}

/* Same test as OpenCV: both inverse scales within DBL_EPSILON of 2. */
static int is_exact_halving(int sw, int sh, int dw, int dh)
{
    double sx = 1.0 / ((double)dw / sw), sy = 1.0 / ((double)dh / sh);
    return fabs(sx - 2.0) < DBL_EPSILON && fabs(sy - 2.0) < DBL_EPSILON;
}

static int cached_slot(const int cached[2], int row)
{
    return cached[0] == row ? 0 : cached[1] == row ? 1 : -1;
}

/* Scratch of the general resize, one allocation: x taps, the row taps,
 * y taps and the two cached horizontal rows (each with a spare element for
 * the SIMD path's over-wide store). */
typedef struct {
    void *block;
    resize_tap *xt, *yt;
    row_taps rt;
    int16_t *hrow[2];
} resize_scratch;

#define HROW_SPARE 4

static yolo_status resize_scratch_alloc(int dw, int dh, resize_scratch *s)
{
    size_t n = (size_t)dw * 3 + HROW_SPARE;
    size_t bytes = ((size_t)dw + (size_t)dh) * sizeof(resize_tap) + (size_t)dw * 2 * sizeof(int32_t) +
                   (size_t)dw * 2 * sizeof(int16_t) + n * 2 * sizeof(int16_t);
    s->block = malloc(bytes);
    if (!s->block)
        return yolo_fail(YOLO_ERR_NOMEM, "letterbox: no memory to resize to %dx%d", dw, dh);
    /* Largest alignment first so every array is naturally aligned. */
    char *p = s->block;
    s->xt = (resize_tap *)(void *)p, p += (size_t)dw * sizeof(resize_tap);
    s->yt = (resize_tap *)(void *)p, p += (size_t)dh * sizeof(resize_tap);
    s->rt.ofs0 = (int32_t *)(void *)p, p += (size_t)dw * sizeof(int32_t);
    s->rt.ofs1 = (int32_t *)(void *)p, p += (size_t)dw * sizeof(int32_t);
    s->rt.w = (int16_t *)(void *)p, p += (size_t)dw * 2 * sizeof(int16_t);
    s->hrow[0] = (int16_t *)(void *)p, p += n * sizeof(int16_t);
    s->hrow[1] = (int16_t *)(void *)p;
    return YOLO_OK;
}

/* The horizontal row for source row `row`, computed into one of the two
 * cached slots unless it is there already; `keep` is the source row the
 * other tap of this output row needs, whose slot must not be overwritten. */
static const int16_t *cached_row(const uint8_t *src, int sw, int row, int keep,
                                 const resize_scratch *s, int dw, int cached[2])
{
    int slot = cached_slot(cached, row);
    if (slot < 0) {
        slot = cached_slot(cached, keep) == 0 ? 1 : 0;
        resize_row_horizontal(src + (size_t)row * (size_t)sw * 3, &s->rt, dw, s->hrow[slot]);
        cached[slot] = row;
    }
    return s->hrow[slot];
}

/* Resizes packed RGB sw x sh into dw x dh pixels written with row stride
 * dst_stride bytes. Bit-exact with OpenCV 4.6 cv::resize(INTER_LINEAR).
 * Source rows are visited in increasing order, so with a two-row cache each
 * needed source row is filtered horizontally once. */
static yolo_status resize_linear_rgb(const uint8_t *src, int sw, int sh, uint8_t *dst, int dw, int dh,
                                     size_t dst_stride)
{
    if (sw == dw && sh == dh) {
        for (int y = 0; y < dh; y++)
            memcpy(dst + (size_t)y * dst_stride, src + (size_t)y * sw * 3, (size_t)sw * 3);
        return YOLO_OK;
    }
    if (is_exact_halving(sw, sh, dw, dh)) {
        resize_half(src, sw, dst, dw, dh, dst_stride);
        return YOLO_OK;
    }
    resize_scratch s;
    yolo_status st = resize_scratch_alloc(dw, dh, &s);
    if (st != YOLO_OK)
        return st;
    axis_taps(sw, dw, 1, s.xt);
    axis_taps(sh, dh, 0, s.yt);
    prepare_row_taps(s.xt, sw, dw, &s.rt);
    int cached[2] = {-1, -1}; /* source row in each slot, -1 = empty */
    for (int y = 0; y < dh; y++) {
        const resize_tap *t = &s.yt[y];
        const int16_t *h0 = cached_row(src, sw, t->src0, t->src1, &s, dw, cached);
        const int16_t *h1 = cached_row(src, sw, t->src1, t->src0, &s, dw, cached);
        resize_row_vertical(h0, h1, t->w0, t->w1, dw * 3, dst + (size_t)y * dst_stride);
    }
    free(s.block);
    return YOLO_OK;
}

/* ------------------------------------------------------------------------ */
/* Letterbox geometry                                                       */

static yolo_status check_params(const yolo_letterbox_params *p)
{
    if (p->stride < 1 || p->stride > LETTERBOX_MAX_STRIDE)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "letterbox: stride %d is outside 1..%d", p->stride,
                         LETTERBOX_MAX_STRIDE);
    if (p->img_size < 1 || p->img_size > LETTERBOX_MAX_SIZE)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "letterbox: img_size %d is outside 1..%d",
                         p->img_size, LETTERBOX_MAX_SIZE);
    if (!p->auto_pad && (p->canvas_w < 0 || p->canvas_h < 0 || p->canvas_w > LETTERBOX_MAX_SIZE ||
                         p->canvas_h > LETTERBOX_MAX_SIZE))
        return yolo_fail(YOLO_ERR_INVALID_ARG, "letterbox: canvas %dx%d is outside 0..%d",
                         p->canvas_w, p->canvas_h, LETTERBOX_MAX_SIZE);
    return YOLO_OK;
}

/* The geometry of detect.py's letterbox(); fills info (ratio, resized size,
 * padding, output size). */
static yolo_status letterbox_geometry(int w, int h, const yolo_letterbox_params *p,
                                      yolo_letterbox_info *info)
{
    int size = (p->img_size + p->stride - 1) / p->stride * p->stride; /* rounded up */
    int target_w = size, target_h = size;
    if (!p->auto_pad) {
        target_w = p->canvas_w > 0 ? p->canvas_w : size;
        target_h = p->canvas_h > 0 ? p->canvas_h : size;
    }
    double r = fmin((double)target_h / h, (double)target_w / w);
    if (!p->scale_up)
        r = fmin(r, 1.0);
    double nw = nearbyint(w * r), nh = nearbyint(h * r); /* Python round: half to even */
    if (nw < 1 || nh < 1)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "letterbox: a %dx%d image scaled by %g to fit %dx%d would have %.0fx%.0f "
                         "pixels (a side rounds to 0)", w, h, r, target_w, target_h, nw, nh);
    int new_w = (int)nw, new_h = (int)nh;
    int dw = target_w - new_w, dh = target_h - new_h;
    if (p->auto_pad) {
        dw = ((dw % p->stride) + p->stride) % p->stride;
        dh = ((dh % p->stride) + p->stride) % p->stride;
    }
    if (dw < 0 || dh < 0)
        return yolo_fail(YOLO_ERR_INTERNAL, "letterbox: %dx%d does not fit in %dx%d", new_w, new_h,
                         target_w, target_h);
    /* Odd padding: round(d - 0.1) / round(d + 0.1) gives top/left the smaller half. */
    int left = (int)nearbyint(dw / 2.0 - 0.1), right = (int)nearbyint(dw / 2.0 + 0.1);
    int top = (int)nearbyint(dh / 2.0 - 0.1), bottom = (int)nearbyint(dh / 2.0 + 0.1);
    info->new_w = new_w;
    info->new_h = new_h;
    info->pad_left = left;
    info->pad_top = top;
    info->out_w = new_w + left + right;
    info->out_h = new_h + top + bottom;
    info->ratio = r;
    if ((unsigned long long)info->out_w * (unsigned long long)info->out_h > LETTERBOX_MAX_PIXELS)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "letterbox: output %dx%d is too large",
                         info->out_w, info->out_h);
    return YOLO_OK;
}

/* The border around the content: whole rows above and below, and the left
 * and right spans of the content rows (the content itself is written once,
 * by the resize). */
static void fill_padding(uint8_t *out, const yolo_letterbox_info *g)
{
    size_t stride = (size_t)g->out_w * 3;
    size_t left = (size_t)g->pad_left * 3, content = (size_t)g->new_w * 3;
    size_t right = stride - left - content;
    int bottom = g->pad_top + g->new_h;
    memset(out, LETTERBOX_PAD_VALUE, (size_t)g->pad_top * stride);
    memset(out + (size_t)bottom * stride, LETTERBOX_PAD_VALUE, (size_t)(g->out_h - bottom) * stride);
    if (left == 0 && right == 0)
        return;
    for (int y = g->pad_top; y < bottom; y++) {
        uint8_t *row = out + (size_t)y * stride;
        memset(row, LETTERBOX_PAD_VALUE, left);
        memset(row + left + content, LETTERBOX_PAD_VALUE, right);
    }
}

yolo_status yolo_letterbox(const yolo_image *src, const yolo_letterbox_params *params,
                           yolo_image *dst, yolo_letterbox_info *info)
{
    yolo_clear_error();
    if (!src || !dst || !src->rgb || src->width <= 0 || src->height <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_letterbox: no source image or no dst");
    memset(dst, 0, sizeof *dst);
    yolo_letterbox_params p = params ? *params : yolo_letterbox_default_params();
    yolo_status st = check_params(&p);
    if (st != YOLO_OK)
        return st;
    yolo_letterbox_info g;
    st = letterbox_geometry(src->width, src->height, &p, &g);
    if (st != YOLO_OK)
        return st;

    size_t stride = (size_t)g.out_w * 3;
    uint8_t *out = malloc(stride * (size_t)g.out_h);
    if (!out)
        return yolo_fail(YOLO_ERR_NOMEM, "letterbox: no memory for %dx%d", g.out_w, g.out_h);
    fill_padding(out, &g);
    uint8_t *content = out + (size_t)g.pad_top * stride + (size_t)g.pad_left * 3;
    st = resize_linear_rgb(src->rgb, src->width, src->height, content, g.new_w, g.new_h, stride);
    if (st != YOLO_OK) {
        free(out);
        return st;
    }
    dst->rgb = out;
    dst->width = g.out_w;
    dst->height = g.out_h;
    if (info)
        *info = g;
    return YOLO_OK;
}

/* Pixels per block of the to_tensor loops: one plane at a time within a
 * block keeps each loop a single store stream (three interleaved streams
 * whose addresses differ by a multiple of 4 KiB run several times slower),
 * while the block's source bytes stay in L1 for the next plane. */
#define TENSOR_BLOCK 512

#if defined(__SSE4_1__)
/* One channel of 16 pixels: three 16-byte loads, byte shuffles picking the
 * channel's bytes, widened to float and divided by 255.0f, the same IEEE
 * division as the plain path, so the same bits. */
static inline void tensor_channel16(const uint8_t *px, const __m128i m[3], float *out)
{
    const __m128 d255 = _mm_set1_ps(255.0f);
    __m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)px), m[0]);
    v = _mm_or_si128(v, _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(px + 16)),
                                         m[1]));
    v = _mm_or_si128(v, _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(const void *)(px + 32)),
                                         m[2]));
    for (int q = 0; q < 4; q++, v = _mm_srli_si128(v, 4))
        _mm_storeu_ps(out + 4 * q, _mm_div_ps(_mm_cvtepi32_ps(_mm_cvtepu8_epi32(v)), d255));
}

/* Whole blocks of TENSOR_BLOCK pixels; returns how many pixels it did. */
static size_t tensor_simd(const uint8_t *px, size_t plane, float *dst)
{
    /* For channel c, mask[c][k] picks its bytes out of load k (-1 = zero). */
    static const int8_t mask[3][3][16] = {
        {{0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 1, 4, 7, 10, 13}},
        {{1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 2, 5, 8, 11, 14}},
        {{2, 5, 8, 11, 14, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, 1, 4, 7, 10, 13, -1, -1, -1, -1, -1, -1},
         {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 3, 6, 9, 12, 15}},
    };
    size_t i0 = 0;
    for (; i0 + TENSOR_BLOCK <= plane; i0 += TENSOR_BLOCK)
        for (size_t c = 0; c < 3; c++) {
            __m128i m[3];
            for (int k = 0; k < 3; k++)
                m[k] = _mm_loadu_si128((const __m128i *)(const void *)mask[c][k]);
            float *out = dst + c * plane;
            for (size_t i = i0; i < i0 + TENSOR_BLOCK; i += 16)
                tensor_channel16(px + 3 * i, m, out + i);
        }
    return i0;
}
#else
static size_t tensor_simd(const uint8_t *px, size_t plane, float *dst)
{
    (void)px, (void)plane, (void)dst;
    return 0;
}
#endif

/* The de-interleave into planes, u8 / 255.0f. The plain path goes through
 * a table of the 256 possible quotients v / 255.0f: the same IEEE
 * division, so bit-identical by construction, with no division per byte. */
yolo_status yolo_image_to_tensor(const yolo_image *img, float *dst)
{
    yolo_clear_error();
    if (!img || !img->rgb || !dst || img->width <= 0 || img->height <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_to_tensor: no image or no dst");
    size_t plane = (size_t)img->width * (size_t)img->height;
    const uint8_t *px = img->rgb;
    size_t done = tensor_simd(px, plane, dst);
    float quotient[256];
    for (int v = 0; v < 256; v++)
        quotient[v] = (float)v / 255.0f;
    for (size_t i0 = done; i0 < plane; i0 += TENSOR_BLOCK) {
        size_t end = plane - i0 < TENSOR_BLOCK ? plane : i0 + TENSOR_BLOCK;
        for (size_t c = 0; c < 3; c++) {
            float *out = dst + c * plane;
            for (size_t i = i0; i < end; i++)
                out[i] = quotient[px[i * 3 + c]];
        }
    }
    return YOLO_OK;
}
