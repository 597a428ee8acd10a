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

#include "internal.h"

#define LETTERBOX_PAD_VALUE 114
#define RESIZE_COEF_BITS 11
#define RESIZE_COEF_SCALE (1 << RESIZE_COEF_BITS)
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

/* One source row resized horizontally into 32-bit fixed point (x 2048). */
static void resize_row_horizontal(const uint8_t *row, const resize_tap *xt, int dst_w, int32_t *out)
{
    for (int x = 0; x < dst_w; x++) {
        const uint8_t *p0 = row + (size_t)xt[x].src0 * 3, *p1 = row + (size_t)xt[x].src1 * 3;
        for (int c = 0; c < 3; c++)
            out[x * 3 + c] = p0[c] * xt[x].w0 + p1[c] * xt[x].w1;
    }
}

/* OpenCV's vertical pass for uint8: each product is pre-shifted so it fits
 * 32 bits, which rounds differently from (b0*h0 + b1*h1 + 2^21) >> 22. */
static uint8_t vertical_mix(int32_t h0, int32_t h1, int b0, int b1)
{
    int v = (((b0 * (h0 >> 4)) >> 16) + ((b1 * (h1 >> 4)) >> 16) + 2) >> 2;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Exact halving of both axes: OpenCV switches INTER_LINEAR to its fast
 * INTER_AREA path, a rounded 2x2 average. (The linear formulas with weights
 * 1024/1024 happen to give the same bytes; this is just the cheaper way.) */
static void resize_half(const uint8_t *src, int sw, uint8_t *dst, int dw, int dh, size_t dst_stride)
{
    size_t ss = (size_t)sw * 3;
    for (int y = 0; y < dh; y++) {
        const uint8_t *r0 = src + (size_t)(2 * y) * ss, *r1 = r0 + ss;
        uint8_t *o = dst + (size_t)y * dst_stride;
        for (int x = 0; x < dw; x++)
            for (int c = 0; c < 3; c++) {
                size_t i = (size_t)(2 * x) * 3 + (size_t)c;
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

/* Resizes packed RGB sw x sh into dw x dh pixels written with row stride
 * dst_stride bytes. Bit-exact with OpenCV 4.6 cv::resize(INTER_LINEAR). */
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
    resize_tap *xt = malloc((size_t)dw * sizeof *xt);
    resize_tap *yt = malloc((size_t)dh * sizeof *yt);
    int32_t *rows = malloc((size_t)dw * 3 * 2 * sizeof *rows);
    if (!xt || !yt || !rows) {
        free(xt), free(yt), free(rows);
        return yolo_fail(YOLO_ERR_NOMEM, "letterbox: no memory to resize to %dx%d", dw, dh);
    }
    axis_taps(sw, dw, 1, xt);
    axis_taps(sh, dh, 0, yt);
    /* Two cached horizontal rows; keyed by source row, -1 = empty. */
    int32_t *hrow[2] = {rows, rows + (size_t)dw * 3};
    int cached[2] = {-1, -1};
    for (int y = 0; y < dh; y++) {
        const int32_t *h[2];
        int want[2] = {yt[y].src0, yt[y].src1};
        for (int k = 0; k < 2; k++) {
            int slot = cached_slot(cached, want[k]);
            if (slot < 0) {
                /* Overwrite the slot the other tap does not need. */
                slot = cached_slot(cached, want[1 - k]) == 0 ? 1 : 0;
                resize_row_horizontal(src + (size_t)want[k] * sw * 3, xt, dw, hrow[slot]);
                cached[slot] = want[k];
            }
            h[k] = hrow[slot];
        }
        uint8_t *o = dst + (size_t)y * dst_stride;
        for (int i = 0; i < dw * 3; i++)
            o[i] = vertical_mix(h[0][i], h[1][i], yt[y].w0, yt[y].w1);
    }
    free(xt), free(yt), free(rows);
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
    memset(out, LETTERBOX_PAD_VALUE, stride * (size_t)g.out_h);
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

yolo_status yolo_image_to_tensor(const yolo_image *img, float *dst)
{
    yolo_clear_error();
    if (!img || !img->rgb || !dst || img->width <= 0 || img->height <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_image_to_tensor: no image or no dst");
    size_t plane = (size_t)img->width * (size_t)img->height;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            dst[(size_t)c * plane + i] = (float)img->rgb[i * 3 + (size_t)c] / 255.0f;
    return YOLO_OK;
}
