/*
 * Post-processing: non-maximum suppression over the raw prediction matrix and
 * mapping boxes from letterboxed input pixels back to the original image.
 *
 * Both follow the official YOLOv7 code operation by operation, in the same
 * float32 arithmetic (utils/general.py non_max_suppression + torchvision's CPU
 * nms kernel, and scale_coords), so that detections match it bit for bit when
 * the predictions do:
 *   1. candidates: obj > conf_thres (strict), original row order;
 *   2. scores: cls * obj in float (nc == 1: obj);
 *   3. xywh -> xyxy in float;
 *   4. best class (first maximum) with conf > conf_thres, or with multi_label
 *      one candidate per (row, class) with score > conf_thres;
 *   5. at most 30000 candidates, the best by a stable descending sort;
 *   6. boxes offset by cls * 4096 in float, then greedy NMS in descending
 *      score order (stable), IoU = inter / (a_i + a_j - inter), suppress only
 *      if IoU > iou_thres;
 *   7. at most max_det kept; the output boxes are the un-offset originals.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* Official constants: class offset (max_wh) and the pre-NMS cap (max_nms). */
#define NMS_CLASS_OFFSET 4096.0f
#define NMS_MAX_CANDIDATES 30000

/* One (box, class) candidate, in the order torch builds them. */
typedef struct {
    float box[4]; /* x1, y1, x2, y2 in input pixels */
    float conf;
    int cls;
} nms_cand;

/* Sort key: descending conf, ties by candidate index (a stable sort). */
typedef struct {
    float conf;
    int idx;
} nms_key;

static int cmp_key_desc(const void *pa, const void *pb)
{
    const nms_key *a = pa, *b = pb;
    if (a->conf > b->conf)
        return -1;
    if (a->conf < b->conf)
        return 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static void swap_keys(nms_key *a, nms_key *b)
{
    nms_key t = *a;
    *a = *b;
    *b = t;
}

/*
 * Moves the k first keys in cmp_key_desc order to keys[0..k) (unordered),
 * in O(n) on average: with multi_label at conf 0.001 there are ~10^6
 * candidates of which only the best 30000 go on, and sorting them all
 * would cost more than the rest of the post-processing. The order is total
 * (ties broken by index), so the chosen set is exactly torch's.
 */
static void select_first_keys(nms_key *keys, size_t n, size_t k)
{
    size_t lo = 0, hi = n; /* the k-th boundary lies in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2, store = lo;
        swap_keys(&keys[mid], &keys[hi - 1]); /* pivot at the end */
        for (size_t i = lo; i + 1 < hi; i++)
            if (cmp_key_desc(&keys[i], &keys[hi - 1]) < 0)
                swap_keys(&keys[i], &keys[store++]);
        swap_keys(&keys[store], &keys[hi - 1]);
        if (store == k)
            return;
        if (store < k)
            lo = store + 1;
        else
            hi = store;
    }
}

/*
 * torchvision's nms takes the IoU threshold as a double (the Python float the
 * user wrote, e.g. 0.45) and compares the float IoU with it. The API carries a
 * float, so recover the shortest decimal that rounds to it: for thresholds
 * whose float rounds up (0.3, 0.6) an IoU exactly equal to float(thr) is then
 * suppressed, as in the official code.
 */
static double intended_threshold(float t)
{
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)t);
        double d = strtod(buf, NULL);
        if ((float)d == t)
            return d;
    }
    return (double)t;
}

/* std::max / std::min as the C++ kernel uses them (a NaN operand is kept or
 * dropped exactly as there, unlike fmaxf/fminf). */
static inline float max_as_std(float a, float b)
{
    return a < b ? b : a;
}

static inline float min_as_std(float a, float b)
{
    return b < a ? b : a;
}

/* Class score k of a prediction row: cls * obj, or obj for one-class models. */
static inline float class_score(const float *row, int nc, int k)
{
    return nc == 1 ? row[4] : row[5 + k] * row[4];
}

static void row_box(const float *row, float box[4])
{
    /* xywh2xyxy: w / 2 in float, then one subtraction / addition. */
    float hw = row[2] / 2.0f, hh = row[3] / 2.0f;
    box[0] = row[0] - hw;
    box[1] = row[1] - hh;
    box[2] = row[0] + hw;
    box[3] = row[1] + hh;
}

/* Upper bound of candidates, so one allocation suffices. */
static size_t count_candidates(const float *pred, int rows, int cols, float thr, int multi)
{
    int nc = cols - 5;
    size_t n = 0;
    for (int r = 0; r < rows; r++) {
        const float *row = pred + (size_t)r * (size_t)cols;
        if (!(row[4] > thr))
            continue;
        if (!multi) {
            n++;
            continue;
        }
        for (int k = 0; k < nc; k++)
            n += class_score(row, nc, k) > thr;
    }
    return n;
}

/* Best class of a row: torch.max over dim 1 (first maximum; NaN wins). */
static int best_class(const float *row, int nc, float *conf)
{
    int best = 0;
    float v = class_score(row, nc, 0);
    for (int k = 1; k < nc && !isnan(v); k++) {
        float s = class_score(row, nc, k);
        if (s > v || isnan(s)) {
            v = s;
            best = k;
        }
    }
    *conf = v;
    return best;
}

/* Fills cand in torch's order; returns how many. */
static size_t collect_candidates(const float *pred, int rows, int cols, float thr, int multi,
                                 nms_cand *cand)
{
    int nc = cols - 5;
    size_t n = 0;
    for (int r = 0; r < rows; r++) {
        const float *row = pred + (size_t)r * (size_t)cols;
        if (!(row[4] > thr))
            continue;
        float box[4];
        row_box(row, box);
        if (multi) {
            for (int k = 0; k < nc; k++) {
                float s = class_score(row, nc, k);
                if (s > thr) {
                    memcpy(cand[n].box, box, sizeof box);
                    cand[n].conf = s;
                    cand[n].cls = k;
                    n++;
                }
            }
        } else {
            float conf;
            int k = best_class(row, nc, &conf);
            if (conf > thr) {
                memcpy(cand[n].box, box, sizeof box);
                cand[n].conf = conf;
                cand[n].cls = k;
                n++;
            }
        }
    }
    return n;
}

/*
 * Greedy NMS over candidates already in score order (torchvision's CPU
 * kernel, float arithmetic). ob holds the class-offset boxes, 4 per
 * candidate, area their areas. Writes kept positions to keep; stops at
 * max_keep since later boxes cannot change the ones already kept.
 */
static int greedy_nms(const float *ob, const float *area, int k, double thr, unsigned char *supp,
                      int *keep, int max_keep)
{
    int kept = 0;
    for (int i = 0; i < k && kept < max_keep; i++) {
        if (supp[i])
            continue;
        keep[kept++] = i;
        const float *bi = ob + 4 * (size_t)i;
        for (int j = i + 1; j < k; j++) {
            if (supp[j])
                continue;
            const float *bj = ob + 4 * (size_t)j;
            float xx1 = max_as_std(bi[0], bj[0]), yy1 = max_as_std(bi[1], bj[1]);
            float xx2 = min_as_std(bi[2], bj[2]), yy2 = min_as_std(bi[3], bj[3]);
            float w = max_as_std(0.0f, xx2 - xx1), h = max_as_std(0.0f, yy2 - yy1);
            float inter = w * h;
            float ovr = inter / (area[i] + area[j] - inter);
            if ((double)ovr > thr)
                supp[j] = 1;
        }
    }
    return kept;
}

static yolo_status check_nms_args(const float *pred, int rows, int cols,
                                  const yolo_detect_params *p, const yolo_detection *out, int cap,
                                  const int *n)
{
    if (!n || !p)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_nms: %s is NULL", !n ? "n" : "params");
    if (rows < 0 || cols < 6 || (rows > 0 && !pred))
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_nms: bad prediction matrix (rows %d, cols %d, pred %s); need rows >= "
                         "0 and cols >= 6",
                         rows, cols, pred ? "set" : "NULL");
    if (cap < 0 || (cap > 0 && !out))
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_nms: bad output (cap %d, out %s)", cap,
                         out ? "set" : "NULL");
    if (!isfinite(p->conf_thres) || !isfinite(p->iou_thres) || p->max_det < 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_nms: bad parameters (conf_thres %g, iou_thres %g, max_det %d)",
                         (double)p->conf_thres, (double)p->iou_thres, p->max_det);
    return YOLO_OK;
}

/* Sorted order, class offsets, areas, NMS and output of ncand candidates. */
static yolo_status nms_candidates(const nms_cand *cand, size_t ncand, const yolo_detect_params *p,
                                  yolo_detection *out, int cap, int *n)
{
    int k = ncand > NMS_MAX_CANDIDATES ? NMS_MAX_CANDIDATES : (int)ncand;
    nms_key *keys = malloc(ncand * sizeof *keys);
    float *ob = malloc((size_t)k * 5 * sizeof *ob);
    unsigned char *supp = calloc((size_t)k, 1);
    int *keep = malloc((size_t)k * sizeof *keep);
    if (!keys || !ob || !supp || !keep) {
        free(keys), free(ob), free(supp), free(keep);
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_nms: no memory for %zu candidates", ncand);
    }
    for (size_t i = 0; i < ncand; i++) {
        keys[i].conf = cand[i].conf;
        keys[i].idx = (int)i;
    }
    if (ncand > (size_t)k)
        select_first_keys(keys, ncand, (size_t)k);
    qsort(keys, (size_t)k, sizeof *keys, cmp_key_desc);

    float *area = ob + 4 * (size_t)k;
    for (int i = 0; i < k; i++) {
        const nms_cand *c = &cand[keys[i].idx];
        /* x[:, 5:6] * max_wh, added in float: precision loss included. */
        float off = p->agnostic ? 0.0f : (float)c->cls * NMS_CLASS_OFFSET;
        float *b = ob + 4 * (size_t)i;
        for (int q = 0; q < 4; q++)
            b[q] = c->box[q] + off;
        area[i] = (b[2] - b[0]) * (b[3] - b[1]);
    }
    int max_keep = p->max_det < k ? p->max_det : k;
    int kept = greedy_nms(ob, area, k, intended_threshold(p->iou_thres), supp, keep, max_keep);

    int wrote = kept < cap ? kept : cap;
    for (int i = 0; i < wrote; i++) {
        const nms_cand *c = &cand[keys[keep[i]].idx];
        out[i] = (yolo_detection){c->box[0], c->box[1], c->box[2], c->box[3], c->conf, c->cls};
    }
    *n = wrote;
    free(keys), free(ob), free(supp), free(keep);
    return YOLO_OK;
}

yolo_status yolo_nms(const float *pred, int rows, int cols, const yolo_detect_params *params,
                     yolo_detection *out, int cap, int *n)
{
    yolo_clear_error();
    if (n)
        *n = 0;
    yolo_status st = check_nms_args(pred, rows, cols, params, out, cap, n);
    if (st != YOLO_OK)
        return st;
    float thr = params->conf_thres;
    int multi = params->multi_label != 0;
    size_t ncand = count_candidates(pred, rows, cols, thr, multi);
    if (ncand == 0)
        return YOLO_OK;
    if (ncand > INT_MAX) /* candidate indices are ints */
        return yolo_fail(YOLO_ERR_UNSUPPORTED, "yolo_nms: %zu candidates (rows %d x classes %d)",
                         ncand, rows, cols - 5);
    nms_cand *cand = malloc(ncand * sizeof *cand);
    if (!cand)
        return yolo_fail(YOLO_ERR_NOMEM, "yolo_nms: no memory for %zu candidates", ncand);
    ncand = collect_candidates(pred, rows, cols, thr, multi, cand);
    st = ncand ? nms_candidates(cand, ncand, params, out, cap, n) : YOLO_OK;
    free(cand);
    return st;
}

/* clamp_(lo, hi) as torch does it: NaN stays NaN. */
static inline float clampf(float v, float hi)
{
    if (v < 0.0f)
        return 0.0f;
    if (v > hi)
        return hi;
    return v;
}

yolo_status yolo_scale_boxes(yolo_detection *dets, int n, int input_w, int input_h, int orig_w,
                             int orig_h)
{
    yolo_clear_error();
    if (n < 0 || (n > 0 && !dets))
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_scale_boxes: bad detections (n %d, dets %s)",
                         n, dets ? "set" : "NULL");
    if (input_w <= 0 || input_h <= 0 || orig_w <= 0 || orig_h <= 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_scale_boxes: sizes must be positive (input %dx%d, original %dx%d)",
                         input_w, input_h, orig_w, orig_h);
    /* scale_coords: gain and pad in double from the shapes (not letterbox's
     * rounded integer pads), then float ops with float-rounded scalars. */
    double gy = (double)input_h / orig_h, gx = (double)input_w / orig_w;
    double gain = gy < gx ? gy : gx;
    float padx = (float)((input_w - orig_w * gain) / 2.0);
    float pady = (float)((input_h - orig_h * gain) / 2.0);
    float g = (float)gain, w0 = (float)orig_w, h0 = (float)orig_h;
    for (int i = 0; i < n; i++) {
        yolo_detection *d = &dets[i];
        d->x1 = clampf((d->x1 - padx) / g, w0);
        d->y1 = clampf((d->y1 - pady) / g, h0);
        d->x2 = clampf((d->x2 - padx) / g, w0);
        d->y2 = clampf((d->y2 - pady) / g, h0);
    }
    return YOLO_OK;
}
