/*
 * Tests of post-processing (libyolo/src/postprocess.c): yolo_nms and
 * yolo_scale_boxes on hand-built prediction rows whose expected output
 * follows from the official rules by hand (strict thresholds, IoU == thr
 * kept, class offsets, stable tie order, multi-label, max_det, one-class
 * models), plus a randomized comparison against a plain, unoptimized
 * re-statement of the same rules (full sort, no early stop, no selection).
 */
#include "testutil.h"

#include "yolo.h"

/* Prediction rows with NC classes: cx, cy, w, h, obj, cls0..cls(NC-1). */
#define NC 3
#define COLS (5 + NC)

static yolo_detect_params params(float conf, float iou)
{
    yolo_detect_params p;
    memset(&p, 0, sizeof p);
    p.conf_thres = conf;
    p.iou_thres = iou;
    p.max_det = 300;
    return p;
}

static void set_row(float *row, float cx, float cy, float w, float h, float obj, float c0,
                    float c1, float c2)
{
    float v[COLS] = {cx, cy, w, h, obj, c0, c1, c2};
    memcpy(row, v, sizeof v);
}

static int run_nms(const float *pred, int rows, const yolo_detect_params *p, yolo_detection *out,
                   int cap)
{
    int n = -1;
    assert_int_equal(yolo_nms(pred, rows, COLS, p, out, cap, &n), YOLO_OK);
    return n;
}

static void test_thresholds_are_strict(void **state)
{
    (void)state;
    float pred[3 * COLS];
    /* obj == conf: excluded before any class score is looked at (a class
     * value of 2, impossible after a sigmoid, makes its score 0.5). */
    set_row(pred, 10, 10, 4, 4, 0.25f, 2.0f, 0, 0);
    /* obj above, best score 0.5 * 0.5 == conf exactly: excluded. */
    set_row(pred + COLS, 100, 10, 4, 4, 0.5f, 0, 0.5f, 0);
    /* Just above on both counts: kept. */
    set_row(pred + 2 * COLS, 200, 10, 4, 4, 0.5f, 0, 0, nextafterf(0.5f, 1.0f));
    yolo_detect_params p = params(0.25f, 0.45f);
    yolo_detection d[4];
    assert_int_equal(run_nms(pred, 3, &p, d, 4), 1);
    assert_int_equal(d[0].cls, 2);
    assert_true(d[0].conf == 0.5f * nextafterf(0.5f, 1.0f));
    /* Boxes come back as x1y1x2y2 of the row. */
    assert_true(d[0].x1 == 198 && d[0].y1 == 8 && d[0].x2 == 202 && d[0].y2 == 12);
    /* Multi-label uses the same strict test per class. */
    p.multi_label = 1;
    assert_int_equal(run_nms(pred, 3, &p, d, 4), 1);
}

/* A = [0,0,4,4] (area 16), B = [0,0,4,2] (area 8): inter 8, IoU = 8/16 = 0.5. */
static void two_boxes_iou_half(float *pred, int cls_a, int cls_b)
{
    set_row(pred, 2, 2, 4, 4, 0.9f, 0, 0, 0);
    pred[5 + cls_a] = 1.0f;
    set_row(pred + COLS, 2, 1, 4, 2, 0.8f, 0, 0, 0);
    pred[COLS + 5 + cls_b] = 1.0f;
}

static void test_iou_equal_threshold_is_kept(void **state)
{
    (void)state;
    float pred[2 * COLS];
    yolo_detection d[2];
    for (int cls = 0; cls < NC; cls++) { /* also through the class offset */
        two_boxes_iou_half(pred, cls, cls);
        yolo_detect_params p = params(0.25f, 0.5f);
        assert_int_equal(run_nms(pred, 2, &p, d, 2), 2);
        p.iou_thres = 0.49f;
        assert_int_equal(run_nms(pred, 2, &p, d, 2), 1);
        assert_true(d[0].conf == 0.9f);
        assert_true(d[0].y2 == 4.0f);
    }
    /* torchvision compares the float IoU with the Python (double) threshold:
     * B = [0,0,10,1] contains A = [0,0,3,1], IoU = 3/10 rounds to float(0.3),
     * which is above the double 0.3, so at thr 0.3 A is suppressed. */
    set_row(pred, 5, 0.5f, 10, 1, 0.9f, 1, 0, 0);
    set_row(pred + COLS, 1.5f, 0.5f, 3, 1, 0.8f, 1, 0, 0);
    yolo_detect_params p = params(0.25f, 0.3f);
    assert_int_equal(run_nms(pred, 2, &p, d, 2), 1);
    p.iou_thres = nextafterf(0.3f, 1.0f);
    assert_int_equal(run_nms(pred, 2, &p, d, 2), 2);
}

static void test_class_aware_and_agnostic(void **state)
{
    (void)state;
    float pred[2 * COLS];
    yolo_detection d[2];
    two_boxes_iou_half(pred, 0, 2);
    yolo_detect_params p = params(0.25f, 0.45f);
    assert_int_equal(run_nms(pred, 2, &p, d, 2), 2); /* different classes: both */
    assert_int_equal(d[0].cls, 0);
    assert_int_equal(d[1].cls, 2);
    /* Output boxes are the originals, not offset by 2 * 4096. */
    assert_true(d[1].x1 == 0.0f && d[1].y1 == 0.0f && d[1].x2 == 4.0f && d[1].y2 == 2.0f);
    p.agnostic = 1;
    assert_int_equal(run_nms(pred, 2, &p, d, 2), 1);
    assert_int_equal(d[0].cls, 0);
}

static void test_ties_keep_row_order(void **state)
{
    (void)state;
    /* Rows 0..2 with equal conf, far apart: output in row order. Row 3 is
     * row 1's box with the same conf, class 2 instead of 1: agnostic NMS
     * keeps the earlier row. */
    float pred[4 * COLS];
    set_row(pred, 300, 10, 4, 4, 0.5f, 0.8f, 0, 0);
    set_row(pred + COLS, 100, 10, 4, 4, 0.5f, 0, 0.8f, 0);
    set_row(pred + 2 * COLS, 200, 10, 4, 4, 0.5f, 0.8f, 0, 0);
    set_row(pred + 3 * COLS, 100, 10, 4, 4, 0.5f, 0, 0, 0.8f);
    yolo_detect_params p = params(0.25f, 0.45f);
    p.agnostic = 1;
    yolo_detection d[4];
    assert_int_equal(run_nms(pred, 4, &p, d, 4), 3);
    assert_true(d[0].x1 == 298 && d[1].x1 == 98 && d[2].x1 == 198);
    assert_int_equal(d[1].cls, 1);
    /* Best class: the first of equal maxima. */
    set_row(pred, 10, 10, 4, 4, 0.5f, 0.3f, 0.7f, 0.7f);
    assert_int_equal(run_nms(pred, 1, &p, d, 4), 1);
    assert_int_equal(d[0].cls, 1);
}

static void test_multi_label(void **state)
{
    (void)state;
    float pred[2 * COLS];
    set_row(pred, 10, 10, 4, 4, 0.5f, 0.6f, 0.1f, 0.6f); /* scores .3 .05 .3 */
    set_row(pred + COLS, 50, 10, 4, 4, 0.5f, 0.2f, 0.9f, 0.3f); /* .1 .45 .15 */
    yolo_detect_params p = params(0.12f, 0.45f);
    p.multi_label = 1;
    yolo_detection d[8];
    int n = run_nms(pred, 2, &p, d, 8);
    /* (row1,c1) .45, then (row0,c0) and (row0,c2) tied at .3 in class order,
     * then (row1,c2) .15; .1 and .05 are below 0.12. */
    assert_int_equal(n, 4);
    int cls[4] = {1, 0, 2, 2};
    float x1[4] = {48, 8, 8, 48};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(d[i].cls, cls[i]);
        assert_true(d[i].x1 == x1[i]);
    }
    assert_true(d[0].conf == 0.9f * 0.5f && d[3].conf == 0.3f * 0.5f);
    /* Without multi_label only the best class of each row. */
    p.multi_label = 0;
    assert_int_equal(run_nms(pred, 2, &p, d, 8), 2);
    assert_int_equal(d[0].cls, 1);
    assert_int_equal(d[1].cls, 0);
}

static void test_max_det_and_cap(void **state)
{
    (void)state;
    enum { R = 10 };
    float pred[R * COLS];
    for (int r = 0; r < R; r++) /* conf rises with r, boxes disjoint */
        set_row(pred + r * COLS, 20.0f * (float)r, 10, 4, 4, 0.3f + 0.05f * (float)r, 1, 0, 0);
    yolo_detect_params p = params(0.25f, 0.45f);
    p.max_det = 3;
    yolo_detection d[R];
    assert_int_equal(run_nms(pred, R, &p, d, R), 3);
    for (int i = 0; i < 3; i++)
        assert_true(d[i].x1 == 20.0f * (float)(R - 1 - i) - 2.0f);
    p.max_det = 300;
    assert_int_equal(run_nms(pred, R, &p, d, 4), 4); /* cap */
    assert_int_equal(run_nms(pred, R, &p, d, R), R);
    p.max_det = 0;
    assert_int_equal(run_nms(pred, R, &p, d, R), 0);
}

static void test_single_class_uses_objectness(void **state)
{
    (void)state;
    /* nc == 1: the class score is replaced by obj (a 0.1 class logit would
     * otherwise put it under the threshold). */
    float pred[2 * 6] = {10, 10, 4, 4, 0.5f, 0.1f, 50, 10, 4, 4, 0.2f, 1.0f};
    yolo_detect_params p = params(0.25f, 0.45f);
    yolo_detection d[2];
    int n = -1;
    assert_int_equal(yolo_nms(pred, 2, 6, &p, d, 2, &n), YOLO_OK);
    assert_int_equal(n, 1);
    assert_true(d[0].conf == 0.5f);
    assert_int_equal(d[0].cls, 0);
}

static void test_empty_and_bad_input(void **state)
{
    (void)state;
    yolo_detect_params p = params(0.25f, 0.45f);
    yolo_detection d[2];
    int n = -1;
    assert_int_equal(yolo_nms(NULL, 0, COLS, &p, d, 2, &n), YOLO_OK);
    assert_int_equal(n, 0);
    float pred[COLS];
    set_row(pred, 10, 10, 4, 4, 0.2f, 1, 1, 1); /* obj below threshold */
    assert_int_equal(run_nms(pred, 1, &p, d, 2), 0);
    assert_int_equal(yolo_nms(pred, 1, 5, &p, d, 2, &n), YOLO_ERR_INVALID_ARG);
    assert_true(strlen(yolo_last_error()) > 0);
    assert_int_equal(yolo_nms(pred, 1, COLS, NULL, d, 2, &n), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_nms(pred, -1, COLS, &p, d, 2, &n), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_nms(pred, 1, COLS, &p, NULL, 2, &n), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_nms(pred, 1, COLS, &p, d, 2, NULL), YOLO_ERR_INVALID_ARG);
    p.iou_thres = NAN;
    assert_int_equal(yolo_nms(pred, 1, COLS, &p, d, 2, &n), YOLO_ERR_INVALID_ARG);
}

static yolo_detection box(float x1, float y1, float x2, float y2)
{
    yolo_detection d = {x1, y1, x2, y2, 0.5f, 0};
    return d;
}

static void test_scale_boxes_451x300(void **state)
{
    (void)state;
    /* A 451x300 image letterboxed into 640x448 (detect.py): by hand,
     * gain = min(448/300, 640/451) = 640/451 = 1.4190687361...,
     * pad = ((640 - 451*gain)/2, (448 - 300*gain)/2) = (0, 11.1396895787...)
     * (not the letterbox's integer top pad of 11). */
    yolo_detection d[3] = {
        box(320, 224, 640, 436.8603104213f),   /* centre, bottom-right content corner */
        box(100, 11.1396895787f, 200, 11.0f),  /* top content edge, 11 px -> negative */
        box(-5, -1, 700, 500),                 /* clipped on all sides */
    };
    assert_int_equal(yolo_scale_boxes(d, 3, 640, 448, 451, 300), YOLO_OK);
    double tol = 1e-4;
    assert_true(fabs(d[0].x1 - 225.5) < tol && fabs(d[0].y1 - 150.0) < tol);
    assert_true(fabs(d[0].x2 - 451.0) < tol && fabs(d[0].y2 - 300.0) < tol);
    assert_true(fabs(d[1].x1 - 100 * 451.0 / 640) < tol);      /* 70.46875 */
    assert_true(fabs(d[1].x2 - 200 * 451.0 / 640) < tol);      /* 140.9375 */
    assert_true(fabs(d[1].y1) < tol);
    assert_true(d[1].y2 == 0.0f); /* (11 - 11.1397) / gain < 0: clipped */
    assert_true(d[2].x1 == 0.0f && d[2].y1 == 0.0f && d[2].x2 == 451.0f && d[2].y2 == 300.0f);
    /* The same image upright (300x451 -> 448x640): the pad moves to x. */
    yolo_detection t = box(11.1396895787f, 320, 224, 640);
    assert_int_equal(yolo_scale_boxes(&t, 1, 448, 640, 300, 451), YOLO_OK);
    assert_true(fabs(t.x1) < tol && fabs(t.y1 - 225.5) < tol);
    assert_true(fabs(t.x2 - 150.0) < tol && fabs(t.y2 - 451.0) < tol);
    /* The arithmetic is float with float-rounded pad and gain (scale_coords on
     * a float32 tensor): 300 - pad then / gain, each rounded to float. */
    yolo_detection f = box(0, 300, 0, 300);
    assert_int_equal(yolo_scale_boxes(&f, 1, 640, 448, 451, 300), YOLO_OK);
    float padf = (float)11.139689578713969, gainf = (float)(640.0 / 451.0);
    assert_true(f.y1 == (300.0f - padf) / gainf);
    /* No resize, no pad: identity; bad sizes refused. */
    yolo_detection id = box(1.25f, 2.5f, 600.75f, 470.5f);
    assert_int_equal(yolo_scale_boxes(&id, 1, 640, 480, 640, 480), YOLO_OK);
    assert_true(id.x1 == 1.25f && id.y1 == 2.5f && id.x2 == 600.75f && id.y2 == 470.5f);
    assert_int_equal(yolo_scale_boxes(&id, 1, 0, 480, 640, 480), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_scale_boxes(NULL, 1, 640, 480, 640, 480), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_scale_boxes(NULL, 0, 640, 480, 640, 480), YOLO_OK);
}

/* ---- randomized: yolo_nms vs a plain statement of the rules ------------- */

typedef struct {
    float b[4], conf;
    int cls, idx;
} ref_cand;

static int ref_cmp(const void *pa, const void *pb)
{
    const ref_cand *a = pa, *b = pb;
    if (a->conf != b->conf)
        return a->conf > b->conf ? -1 : 1;
    return a->idx - b->idx;
}

/* Every candidate, fully sorted, cut to 30000; NMS over all of them with
 * no early stop; then the first max_det. */
static int ref_nms(const float *pred, int rows, int nc, const yolo_detect_params *p,
                   yolo_detection *out)
{
    int cols = 5 + nc, n = 0, kept = 0;
    ref_cand *c = malloc((size_t)rows * (size_t)nc * sizeof *c);
    assert_non_null(c);
    for (int r = 0; r < rows; r++) {
        const float *x = pred + (size_t)r * (size_t)cols;
        if (!(x[4] > p->conf_thres))
            continue;
        int best = 0;
        for (int k = 0; k < nc; k++) {
            float s = x[5 + k] * x[4];
            if (s > x[5 + best] * x[4])
                best = k;
            if (p->multi_label && s > p->conf_thres) {
                c[n] = (ref_cand){{x[0] - x[2] / 2, x[1] - x[3] / 2, x[0] + x[2] / 2,
                                   x[1] + x[3] / 2}, s, k, n};
                n++;
            }
        }
        float s = x[5 + best] * x[4];
        if (!p->multi_label && s > p->conf_thres) {
            c[n] = (ref_cand){{x[0] - x[2] / 2, x[1] - x[3] / 2, x[0] + x[2] / 2,
                               x[1] + x[3] / 2}, s, best, n};
            n++;
        }
    }
    qsort(c, (size_t)n, sizeof *c, ref_cmp);
    if (n > 30000)
        n = 30000;
    char *gone = calloc((size_t)n + 1, 1);
    for (int i = 0; i < n; i++) {
        if (gone[i])
            continue;
        if (kept < p->max_det)
            out[kept] = (yolo_detection){c[i].b[0], c[i].b[1], c[i].b[2], c[i].b[3], c[i].conf,
                                         c[i].cls};
        kept++;
        float oi = p->agnostic ? 0 : (float)c[i].cls * 4096, a[4], b[4];
        for (int q = 0; q < 4; q++)
            a[q] = c[i].b[q] + oi;
        for (int j = i + 1; j < n; j++) {
            float oj = p->agnostic ? 0 : (float)c[j].cls * 4096;
            for (int q = 0; q < 4; q++)
                b[q] = c[j].b[q] + oj;
            float w = fminf(a[2], b[2]) - fmaxf(a[0], b[0]);
            float h = fminf(a[3], b[3]) - fmaxf(a[1], b[1]);
            float inter = (w > 0 ? w : 0) * (h > 0 ? h : 0);
            float ai = (a[2] - a[0]) * (a[3] - a[1]), aj = (b[2] - b[0]) * (b[3] - b[1]);
            if (inter / (ai + aj - inter) > p->iou_thres)
                gone[j] = 1;
        }
    }
    free(gone);
    free(c);
    return kept < p->max_det ? kept : p->max_det;
}

static void random_case(uint64_t seed, int rows, int nc, float conf, int multi, int agnostic)
{
    int cols = 5 + nc;
    float *pred = malloc((size_t)rows * (size_t)cols * sizeof *pred);
    yolo_detection *got = malloc(300 * sizeof *got), *want = malloc(300 * sizeof *want);
    assert_true(pred && got && want);
    for (int r = 0; r < rows; r++) {
        float *x = pred + (size_t)r * (size_t)cols;
        /* Clustered boxes on a coarse grid so that IoUs and scores tie often. */
        x[0] = 8.0f * (float)(int)(8 + 8 * tu_rand(&seed));
        x[1] = 8.0f * (float)(int)(8 + 8 * tu_rand(&seed));
        x[2] = 4.0f * (float)(int)(3 + 2 * tu_rand(&seed)) + 1;
        x[3] = 4.0f * (float)(int)(3 + 2 * tu_rand(&seed)) + 1;
        for (int k = 4; k < cols; k++)
            x[k] = (float)(int)(16 * (1 + tu_rand(&seed))) / 32.0f;
    }
    yolo_detect_params p = params(conf, 0.45f);
    p.multi_label = multi;
    p.agnostic = agnostic;
    int n = -1;
    assert_int_equal(yolo_nms(pred, rows, cols, &p, got, 300, &n), YOLO_OK);
    int m = ref_nms(pred, rows, nc, &p, want);
    assert_int_equal(n, m);
    assert_memory_equal(got, want, (size_t)n * sizeof *got);
    free(pred), free(got), free(want);
}

static void test_random_against_plain_rules(void **state)
{
    (void)state;
    random_case(1, 500, 3, 0.25f, 0, 0);
    random_case(2, 500, 3, 0.25f, 0, 1);
    random_case(3, 500, 4, 0.1f, 1, 0);
    /* > 30000 multi-label candidates: the pre-NMS cut decides what is kept. */
    random_case(4, 9000, 5, 0.01f, 1, 0);
    random_case(5, 9000, 5, 0.01f, 1, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thresholds_are_strict),
        cmocka_unit_test(test_iou_equal_threshold_is_kept),
        cmocka_unit_test(test_class_aware_and_agnostic),
        cmocka_unit_test(test_ties_keep_row_order),
        cmocka_unit_test(test_multi_label),
        cmocka_unit_test(test_max_det_and_cap),
        cmocka_unit_test(test_single_class_uses_objectness),
        cmocka_unit_test(test_empty_and_bad_input),
        cmocka_unit_test(test_scale_boxes_451x300),
        cmocka_unit_test(test_random_against_plain_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
