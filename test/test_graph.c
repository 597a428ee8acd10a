/*
 * Tests of graph planning and execution (libyolo/src/graph.c) and the
 * detect pipeline glue (detect.c) on models written by test/modelgen.h:
 * planning errors, the arena plan's invariants, memory reuse giving the same
 * results as keeping every output and as the naive REFERENCE backend, the
 * per-layer callback and cancelling, batching, re-planning.
 */
#include "testutil.h"

#include <unistd.h>

#include "graph.h"
#include "modelgen.h"
#include "yolo.h"

#define H 48
#define W 80

static char tmp_dir[256];
static char tmp_path[320];
static mg_model gen;         /* the full model's builder (channels, scales) */
static yolo_model *full;     /* every layer type, strides 8/16 */

static int setup(void **state)
{
    (void)state;
    if (mg_temp_dir(tmp_dir, sizeof tmp_dir, "graph") != 0)
        return -1;
    snprintf(tmp_path, sizeof tmp_path, "%s/full.bin", tmp_dir);
    mg_build_full(&gen, 1234);
    if (mg_write(&gen, tmp_path) != 0)
        return -1;
    if (yolo_model_load(tmp_path, NULL, &full) != YOLO_OK) {
        fprintf(stderr, "load: %s\n", yolo_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    yolo_model_free(full);
    mg_free(&gen);
    unlink(tmp_path);
    rmdir(tmp_dir);
    return 0;
}

static float *random_input(int batch, int h, int w, uint64_t seed)
{
    size_t n = (size_t)batch * 3 * (size_t)h * (size_t)w;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = 0.5f + 0.5f * tu_rand(&seed);
    return x;
}

static yolo_ctx *make_ctx(yolo_backend backend, int keep_all)
{
    yolo_ctx_params p = yolo_ctx_default_params();
    p.backend = backend;
    yolo_ctx *c = NULL;
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    c->keep_all = keep_all || backend == YOLO_BACKEND_REFERENCE;
    return c;
}

static void forward_ok(yolo_ctx *c, const float *x, int batch, int h, int w)
{
    yolo_status st = yolo_forward(c, x, batch, h, w);
    if (st != YOLO_OK)
        fail_msg("forward: %s: %s", yolo_status_str(st), yolo_last_error());
}

/* |a - b| <= tol * (1 + |b|) everywhere. */
static void assert_close(const float *a, const float *b, size_t n, double tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= tol * (1.0 + fabs((double)b[i]))))
            fail_msg("%s: element %zu differs: %.9g vs %.9g", what, i, (double)a[i],
                     (double)b[i]);
    }
}

static void test_plan_errors(void **state)
{
    (void)state;
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    assert_int_equal(yolo_ctx_plan(c, 1, 100, 64), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "height 100"));
    assert_non_null(strstr(yolo_last_error(), "16"));
    assert_non_null(strstr(yolo_last_error(), "112"));
    assert_int_equal(yolo_ctx_plan(c, 1, 64, 0), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "width 0"));
    assert_int_equal(yolo_ctx_plan(c, 1, -16, 64), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_ctx_plan(c, 0, 64, 64), YOLO_ERR_INVALID_ARG);
    assert_non_null(strstr(yolo_last_error(), "batch"));
    assert_int_equal(yolo_ctx_plan(c, -3, 64, 64), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_ctx_plan(NULL, 1, 64, 64), YOLO_ERR_INVALID_ARG);
    float x[3 * 16 * 24];
    memset(x, 0, sizeof x);
    assert_int_equal(yolo_forward(c, x, 1, 16, 24), YOLO_ERR_INVALID_ARG);
    assert_int_equal(yolo_forward(c, NULL, 1, 16, 16), YOLO_ERR_INVALID_ARG);
    /* Nothing computed yet. */
    const float *p;
    int rows, cols;
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_ERR_INVALID_ARG);
    yolo_ctx_memory mem;
    assert_int_equal(yolo_ctx_memory_info(c, &mem), YOLO_OK);
    assert_int_equal(mem.arena_bytes, 0);
    assert_int_equal(mem.weight_bytes, mg_get64((const uint8_t *)full->map + 72));
    assert_int_equal(yolo_ctx_plan(c, 2, 32, 48), YOLO_OK);
    assert_int_equal(yolo_ctx_memory_info(c, &mem), YOLO_OK);
    assert_true(mem.arena_bytes > 0 && mem.flops > 0);
    yolo_ctx_free(c);

    yolo_ctx_params bad = yolo_ctx_default_params();
    bad.threads = -1;
    assert_int_equal(yolo_ctx_create(full, &bad, &c), YOLO_ERR_INVALID_ARG);
    assert_null(c);
    bad = yolo_ctx_default_params();
    bad.backend = (yolo_backend)7;
    assert_int_equal(yolo_ctx_create(full, &bad, &c), YOLO_ERR_INVALID_ARG);
}

/* The plan checked from first principles: every output fits the arena, is
 * aligned, and outputs alive at the same time never share bytes. */
static void check_plan(const yolo_ctx *c)
{
    const yolo_model *m = c->model;
    int n = m->n_layers;
    for (int i = 0; i < n; i++) {
        const layer_plan *p = &c->plan[i];
        assert_int_equal(p->offset % 64, 0);
        assert_true(p->bytes >= shape_elems(p->shape) * sizeof(float));
        assert_true(p->offset + p->bytes <= c->arena_bytes);
        /* Alive from its own step to every consumer's step. */
        int last = i == n - 1 ? n + 1 : i + 1;
        for (int j = i + 1; j < n; j++)
            for (int k = 0; k < m->layers[j].n_inputs; k++)
                if (m->layers[j].inputs[k] == i && j + 1 > last)
                    last = j + 1;
        assert_int_equal(p->first, i + 1);
        assert_true(p->last >= last);
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            const layer_plan *a = &c->plan[i], *b = &c->plan[j];
            int alive_together = a->first <= b->last && b->first <= a->last;
            int share = a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
            if (alive_together && share)
                fail_msg("layers %d and %d are alive together but share arena bytes", i, j);
        }
}

static void test_plan_invariants(void **state)
{
    (void)state;
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    assert_int_equal(yolo_ctx_plan(c, 1, H, W), YOLO_OK);
    check_plan(c);
    size_t sum = 0;
    for (int i = 0; i < full->n_layers; i++)
        sum += c->plan[i].bytes;
    assert_true(c->arena_bytes < sum); /* memory really is reused */
    /* Detect output: rows = anchors * (cells at /8 + cells at /16). */
    yolo_shape d = c->plan[full->n_layers - 1].shape;
    assert_int_equal(d.h, 2 * (H / 8 * W / 8 + H / 16 * W / 16));
    assert_int_equal(d.w, 8);
    yolo_ctx_free(c);
}

/* The exported yolov7-tiny planned at 640x640: 25200 rows and about 13.7
 * GFLOPs of convolution (the official model's figure). */
static void test_plan_yolov7_tiny(void **state)
{
    (void)state;
    const char *path = "weights/yolov7-tiny.bin";
    if (access(path, R_OK) != 0)
        fail_msg("%s is missing: run `make weights` from the repository root", path);
    yolo_model *m = NULL;
    if (yolo_model_load(path, NULL, &m) != YOLO_OK)
        fail_msg("%s", yolo_last_error());
    yolo_ctx *c = NULL;
    assert_int_equal(yolo_ctx_create(m, NULL, &c), YOLO_OK);
    assert_int_equal(yolo_ctx_plan(c, 1, 640, 640), YOLO_OK);
    check_plan(c);
    yolo_shape d = c->plan[m->n_layers - 1].shape;
    assert_int_equal(d.h, 25200);
    assert_int_equal(d.w, 85);
    yolo_ctx_memory mem;
    assert_int_equal(yolo_ctx_memory_info(c, &mem), YOLO_OK);
    if (mem.flops < 13500000000ull || mem.flops > 15000000000ull)
        fail_msg("yolov7-tiny at 640x640: %llu FLOPs, expected about 13.7e9",
                 (unsigned long long)mem.flops);
    yolo_ctx_free(c);
    yolo_model_free(m);
}

/* Liveness reuse, keep-all and the naive backend compute the same thing. */
static void test_reuse_matches_keep_all_and_reference(void **state)
{
    (void)state;
    float *x = random_input(1, H, W, 5);
    yolo_ctx *reuse = make_ctx(YOLO_BACKEND_GEMM, 0);
    yolo_ctx *keep = make_ctx(YOLO_BACKEND_GEMM, 1);
    yolo_ctx *ref = make_ctx(YOLO_BACKEND_REFERENCE, 0);
    forward_ok(reuse, x, 1, H, W);
    forward_ok(keep, x, 1, H, W);
    forward_ok(ref, x, 1, H, W);
    yolo_ctx_memory m1, m2;
    yolo_ctx_memory_info(reuse, &m1);
    yolo_ctx_memory_info(keep, &m2);
    assert_true(m1.arena_bytes < m2.arena_bytes);
    assert_int_equal(m1.flops, m2.flops);

    const float *p1, *p2, *p3;
    int r1, c1, r2, c2, r3, c3;
    assert_int_equal(yolo_predictions(reuse, 0, &p1, &r1, &c1), YOLO_OK);
    assert_int_equal(yolo_predictions(keep, 0, &p2, &r2, &c2), YOLO_OK);
    assert_int_equal(yolo_predictions(ref, 0, &p3, &r3, &c3), YOLO_OK);
    assert_int_equal(r1, r2);
    assert_int_equal(r1, r3);
    assert_int_equal(c1, 8);
    assert_int_equal(memcmp(p1, p2, (size_t)r1 * (size_t)c1 * sizeof(float)), 0);
    assert_close(p1, p3, (size_t)r1 * (size_t)c1, 1e-4, "GEMM vs reference predictions");
    assert_int_equal(yolo_predictions(reuse, 1, &p1, &r1, &c1), YOLO_ERR_INVALID_ARG);

    int intact = 0, reused = 0;
    for (int i = 0; i < full->n_layers; i++) {
        const float *a, *b, *r;
        int ca, ha, wa, cb, hb, wb;
        assert_int_equal(yolo_layer_output(keep, i, 0, &b, &cb, &hb, &wb), YOLO_OK);
        assert_int_equal(yolo_layer_output(ref, i, 0, &r, &ca, &ha, &wa), YOLO_OK);
        size_t n = (size_t)cb * (size_t)hb * (size_t)wb;
        assert_close(b, r, n, 1e-4, "GEMM vs reference layer output");
        if (i < full->n_layers - 1) {
            assert_int_equal(cb, gen.ch[i]);
            assert_int_equal(hb, H / gen.scale[i]);
            assert_int_equal(wb, W / gen.scale[i]);
        }
        yolo_status st = yolo_layer_output(reuse, i, 0, &a, &ca, &ha, &wa);
        if (st == YOLO_ERR_UNSUPPORTED) {
            reused++;
            assert_non_null(strstr(yolo_last_error(), "overwritten"));
            continue;
        }
        assert_int_equal(st, YOLO_OK);
        intact++;
        assert_int_equal(ca, cb);
        assert_int_equal(memcmp(a, b, n * sizeof(float)), 0);
    }
    assert_true(reused > 0 && intact > 0);
    const float *dummy;
    int d1, d2, d3;
    assert_int_equal(yolo_layer_output(keep, full->n_layers, 0, &dummy, &d1, &d2, &d3),
                     YOLO_ERR_INVALID_ARG);
    yolo_ctx_free(reuse);
    yolo_ctx_free(keep);
    yolo_ctx_free(ref);
    free(x);
}

typedef struct {
    int calls;
    int stop_at;
    int bad_order;
    int last_index;
    uint64_t flops;
    uint64_t last_end;
    int shapes_wrong;
    int names_wrong;
    int conv_flops_wrong;
} cb_log;

static int on_layer(void *user, const yolo_layer_event *e)
{
    cb_log *log = user;
    if (e->layer_index != log->last_index + 1)
        log->bad_order++;
    log->last_index = e->layer_index;
    log->calls++;
    log->flops += e->flops;
    if (e->start_ns < log->last_end)
        log->bad_order++;
    log->last_end = e->start_ns + e->elapsed_ns;
    int i = e->layer_index;
    yolo_layer_desc d;
    yolo_model_layer(full, i, &d);
    if (strcmp(d.type_name, e->type_name) != 0 || e->source_index != d.source_index)
        log->names_wrong++;
    if (i < full->n_layers - 1) {
        if (e->batch != 1 || e->channels != gen.ch[i] || e->height != H / gen.scale[i] ||
            e->width != W / gen.scale[i])
            log->shapes_wrong++;
    } else if (e->channels != 1 || e->width != 8) {
        log->shapes_wrong++;
    }
    const mg_layer *l = &gen.layers[i];
    if (l->type == MG_CONV || l->type == MG_CONV2D) {
        int c_in = l->inputs[0] < 0 ? 3 : gen.ch[l->inputs[0]];
        uint64_t out = (uint64_t)e->channels * (uint64_t)e->height * (uint64_t)e->width;
        uint64_t macs = out * (uint64_t)c_in * l->kernel * l->kernel;
        if (e->flops < 2 * macs || e->flops > 2 * macs + 16 * out)
            log->conv_flops_wrong++;
    }
    return log->stop_at == i;
}

static void test_callback_and_cancel(void **state)
{
    (void)state;
    float *x = random_input(1, H, W, 6);
    cb_log log;
    memset(&log, 0, sizeof log);
    log.last_index = -1;
    log.stop_at = -1;
    yolo_ctx_params p = yolo_ctx_default_params();
    p.on_layer = on_layer;
    p.user = &log;
    p.threads = 1;
    yolo_ctx *c = NULL;
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    forward_ok(c, x, 1, H, W);
    assert_int_equal(log.calls, full->n_layers);
    assert_int_equal(log.bad_order, 0);
    assert_int_equal(log.names_wrong, 0);
    assert_int_equal(log.shapes_wrong, 0);
    assert_int_equal(log.conv_flops_wrong, 0);
    yolo_ctx_memory mem;
    yolo_ctx_memory_info(c, &mem);
    assert_int_equal(log.flops, mem.flops);

    /* Stop after layer 5: exactly 6 calls, no predictions. */
    memset(&log, 0, sizeof log);
    log.last_index = -1;
    log.stop_at = 5;
    assert_int_equal(yolo_forward(c, x, 1, H, W), YOLO_ERR_CANCELLED);
    assert_non_null(strstr(yolo_last_error(), "layer 5"));
    assert_int_equal(log.calls, 6);
    const float *pred;
    int rows, cols;
    assert_int_equal(yolo_predictions(c, 0, &pred, &rows, &cols), YOLO_ERR_INVALID_ARG);
    /* The ctx is usable again afterwards. */
    log.stop_at = -1;
    log.last_index = -1;
    forward_ok(c, x, 1, H, W);
    assert_int_equal(yolo_predictions(c, 0, &pred, &rows, &cols), YOLO_OK);
    yolo_ctx_free(c);
    free(x);
}

/* A batch of two equals two runs of one; re-planning between shapes gives
 * the same results as before. */
static void test_batch_and_replan(void **state)
{
    (void)state;
    size_t one = 3 * (size_t)H * W;
    float *x2 = random_input(2, H, W, 8);
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    forward_ok(c, x2, 2, H, W);
    const float *p;
    int rows, cols;
    assert_int_equal(yolo_predictions(c, 1, &p, &rows, &cols), YOLO_OK);
    size_t n = (size_t)rows * (size_t)cols;
    float *b0 = malloc(n * sizeof *b0), *b1 = malloc(n * sizeof *b1);
    memcpy(b1, p, n * sizeof *p);
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    memcpy(b0, p, n * sizeof *p);
    assert_int_equal(yolo_predictions(c, 2, &p, &rows, &cols), YOLO_ERR_INVALID_ARG);
    assert_true(memcmp(b0, b1, n * sizeof *b0) != 0);

    forward_ok(c, x2 + one, 1, H, W);
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    assert_close(p, b1, n, 1e-5, "batch item 1 vs single run");
    /* Another shape in between, then back. */
    float *small = random_input(1, 32, 16, 9);
    forward_ok(c, small, 1, 32, 16);
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    assert_int_equal(rows, 2 * (4 * 2 + 2 * 1));
    forward_ok(c, x2, 1, H, W);
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    assert_close(p, b0, n, 1e-5, "batch item 0 vs single run");
    free(small);
    free(b0);
    free(b1);
    free(x2);
    yolo_ctx_free(c);
}

/* yolo_detect equals the same steps done by hand through the public API. */
static void test_detect_pipeline(void **state)
{
    (void)state;
    int iw = 53, ih = 37;
    uint8_t *rgb = malloc((size_t)iw * ih * 3);
    uint64_t seed = 77;
    for (int i = 0; i < iw * ih * 3; i++)
        rgb[i] = (uint8_t)(128 + 127 * tu_rand(&seed));
    yolo_image img;
    assert_int_equal(yolo_image_from_rgb(rgb, iw, ih, iw * 3, &img), YOLO_OK);
    yolo_detect_params dp = yolo_detect_default_params();
    assert_true(dp.conf_thres == 0.25f && dp.iou_thres == 0.45f && dp.max_det == 300);
    assert_int_equal(dp.letterbox.stride, 0);
    assert_int_equal(dp.letterbox.img_size, 0);
    dp.conf_thres = 0.01f;
    dp.max_det = 20;
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    const yolo_detection *dets;
    int n;
    yolo_status st = yolo_detect(c, &img, &dp, &dets, &n);
    if (st != YOLO_OK)
        fail_msg("yolo_detect: %s", yolo_last_error());
    assert_true(n > 0 && n <= 20);
    for (int i = 0; i < n; i++) {
        assert_true(dets[i].x1 >= 0 && dets[i].x2 <= iw && dets[i].y1 >= 0 && dets[i].y2 <= ih);
        assert_true(dets[i].conf > 0.01f);
        assert_true(dets[i].cls >= 0 && dets[i].cls < 3);
        if (i)
            assert_true(dets[i].conf <= dets[i - 1].conf);
    }

    /* By hand: model default size 64, stride 16. */
    yolo_letterbox_params lp = dp.letterbox;
    lp.stride = 16;
    lp.img_size = 64;
    yolo_image lb;
    yolo_letterbox_info info;
    assert_int_equal(yolo_letterbox(&img, &lp, &lb, &info), YOLO_OK);
    float *x = malloc(3 * (size_t)lb.width * lb.height * sizeof *x);
    assert_int_equal(yolo_image_to_tensor(&lb, x), YOLO_OK);
    yolo_ctx *c2 = make_ctx(YOLO_BACKEND_GEMM, 0);
    forward_ok(c2, x, 1, lb.height, lb.width);
    const float *pred;
    int rows, cols;
    assert_int_equal(yolo_predictions(c2, 0, &pred, &rows, &cols), YOLO_OK);
    yolo_detection mine[20];
    int m;
    assert_int_equal(yolo_nms(pred, rows, cols, &dp, mine, 20, &m), YOLO_OK);
    assert_int_equal(yolo_scale_boxes(mine, m, lb.width, lb.height, iw, ih), YOLO_OK);
    assert_int_equal(m, n);
    for (int i = 0; i < n; i++) {
        assert_true(mine[i].x1 == dets[i].x1 && mine[i].y2 == dets[i].y2);
        assert_true(mine[i].conf == dets[i].conf && mine[i].cls == dets[i].cls);
    }
    assert_int_equal(yolo_detect(c, NULL, &dp, &dets, &n), YOLO_ERR_INVALID_ARG);
    free(x);
    yolo_image_free(&lb);
    yolo_ctx_free(c2);
    yolo_ctx_free(c);
    yolo_image_free(&img);
    free(rgb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_plan_invariants),
        cmocka_unit_test(test_plan_yolov7_tiny),
        cmocka_unit_test(test_reuse_matches_keep_all_and_reference),
        cmocka_unit_test(test_callback_and_cancel),
        cmocka_unit_test(test_batch_and_replan),
        cmocka_unit_test(test_detect_pipeline),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
