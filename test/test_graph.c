/*
 * Tests of graph planning and execution (libyolo/src/graph.c) and the
 * detect pipeline glue (detect.c) on models written by test/modelgen.h:
 * planning errors, the activation memory limit, the arena plan's invariants (Concat members aliased into
 * their Concat's memory included), memory reuse giving the same
 * results as keeping every output and as the naive REFERENCE backend, the
 * per-layer callback and cancelling, batching, re-planning.
 */
#include "testutil.h"

#include <pthread.h>
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

/* A shape needing more activation memory (arena + scratch) than the ctx's
 * max_arena_bytes is refused before anything is allocated, with the size
 * asked and the limit in the message; the limit is inclusive, and 0 is the
 * default of 4 GiB, which this model of a few kB exceeds at 16384x16384. */
static void expect_over_limit(yolo_ctx *c, int h, int w, uint64_t need, uint64_t limit)
{
    yolo_status st = yolo_ctx_plan(c, 1, h, w);
    const char *msg = yolo_last_error();
    char shape[64], asked[32], lim[32];
    snprintf(shape, sizeof shape, "1x3x%dx%d input", h, w);
    snprintf(asked, sizeof asked, "needs %llu bytes", (unsigned long long)need);
    snprintf(lim, sizeof lim, "limit of %llu bytes", (unsigned long long)limit);
    if (st != YOLO_ERR_NOMEM || !strstr(msg, shape) || (need && !strstr(msg, asked)) ||
        !strstr(msg, lim) || !strstr(msg, "max_arena_bytes") || !strstr(msg, tmp_path))
        fail_msg("plan %dx%d with a limit of %llu: %s \"%s\"", h, w, (unsigned long long)limit,
                 yolo_status_str(st), msg);
    assert_null(c->arena); /* nothing allocated */
    yolo_ctx_memory m;
    assert_int_equal(yolo_ctx_memory_info(c, &m), YOLO_OK);
    assert_int_equal(m.arena_bytes, 0); /* not planned */
}

static void test_arena_limit(void **state)
{
    (void)state;
    yolo_ctx_params p = yolo_ctx_default_params();
    assert_true(p.max_arena_bytes == YOLO_CTX_DEFAULT_MAX_ARENA_BYTES);
    assert_true(p.max_arena_bytes == (uint64_t)4 << 30);
    yolo_ctx *c;
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    assert_int_equal(yolo_ctx_plan(c, 1, 640, 640), YOLO_OK);
    yolo_ctx_memory m;
    assert_int_equal(yolo_ctx_memory_info(c, &m), YOLO_OK);
    uint64_t need = m.arena_bytes + m.scratch_bytes;
    yolo_ctx_free(c);

    p.max_arena_bytes = need; /* exactly enough */
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    assert_int_equal(yolo_ctx_plan(c, 1, 640, 640), YOLO_OK);
    yolo_ctx_free(c);

    p.max_arena_bytes = need - 1;
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    expect_over_limit(c, 640, 640, need, need - 1);
    float *x = random_input(1, 640, 640, 5); /* yolo_forward plans, so refuses too */
    assert_int_equal(yolo_forward(c, x, 1, 640, 640), YOLO_ERR_NOMEM);
    free(x);
    assert_int_equal(yolo_ctx_plan(c, 1, 64, 64), YOLO_OK); /* smaller shapes still fit */
    yolo_ctx_free(c);

    p.max_arena_bytes = 0; /* the default */
    assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
    expect_over_limit(c, 16384, 16384, 0, YOLO_CTX_DEFAULT_MAX_ARENA_BYTES);
    yolo_ctx_free(c);
}

/* ---- the plan checked from first principles -------------------------------- */

/* Step of the last use of layer i's output, from the graph alone: its last
 * consumer's step (layer j runs at step j + 1); the Detect output, and every
 * output when all are kept, to the end (n + 1). */
static int true_last(const yolo_ctx *c, int i)
{
    const yolo_model *m = c->model;
    int n = m->n_layers, last = i + 1;
    if (i == n - 1 || c->keep_all)
        return n + 1;
    for (int j = i + 1; j < n; j++)
        for (int k = 0; k < m->layers[j].n_inputs; k++)
            if (m->layers[j].inputs[k] == i && j + 1 > last)
                last = j + 1;
    return last;
}

/* 1 when a is b or a Concat that (directly or through nested Concats)
 * holds b in its memory. */
static int holds(const yolo_ctx *c, int a, int b)
{
    for (int x = b; x >= 0; x = c->plan[x].alias_of)
        if (x == a)
            return 1;
    return 0;
}

static int top_of(const yolo_ctx *c, int i)
{
    while (c->plan[i].alias_of >= 0)
        i = c->plan[i].alias_of;
    return i;
}

static size_t elem_bytes(yolo_shape s)
{
    return shape_elems(s) * sizeof(float);
}

/* An aliased layer i: its parent is a Concat without activation that lists
 * i exactly once, as input k; i lies in the parent's memory at the byte
 * offset of channel slice k (the sizes of inputs 0..k-1, from the shapes),
 * and the parent skips copying slice k. */
static int alias_problem(const yolo_ctx *c, int i, char *msg, size_t cap)
{
    const layer_plan *p = &c->plan[i];
    int j = p->alias_of;
    if (c->batch != 1 || c->params.backend == YOLO_BACKEND_REFERENCE || j <= i ||
        j >= c->model->n_layers)
        return snprintf(msg, cap, "layer %d aliased into %d (batch %d, backend %d)", i, j,
                        c->batch, (int)c->params.backend);
    const model_layer *cat = &c->model->layers[j];
    if (cat->type != LAYER_CONCAT || cat->act != YOLO_ACT_NONE)
        return snprintf(msg, cap, "layer %d aliased into %d, not a plain Concat", i, j);
    yolo_shape input = {c->batch, 3, c->height, c->width};
    size_t off = 0, at = 0;
    int found = 0;
    for (int k = 0; k < cat->n_inputs; k++) {
        int q = cat->inputs[k];
        if (q == i) {
            found++;
            at = off;
            if (!(c->plan[j].in_place & (1u << k)))
                return snprintf(msg, cap, "Concat %d copies slice %d over layer %d", j, k, i);
        }
        off += elem_bytes(q < 0 ? input : c->plan[q].shape);
    }
    if (found != 1)
        return snprintf(msg, cap, "layer %d aliased into %d, which lists it %d times", i, j,
                        found);
    if (p->offset != c->plan[j].offset + at || at + p->bytes > c->plan[j].bytes)
        return snprintf(msg, cap, "layer %d at %zu, its slice of Concat %d is at %zu + %zu", i,
                        p->offset, j, c->plan[j].offset, at);
    return 0;
}

/* A Concat's in_place bits name only inputs that really write their slice. */
static int in_place_problem(const yolo_ctx *c, int j, char *msg, size_t cap)
{
    const model_layer *cat = &c->model->layers[j];
    for (int k = 0; k < 32; k++) {
        if (!(c->plan[j].in_place & (1u << k)))
            continue;
        if (k >= cat->n_inputs || cat->inputs[k] < 0 || c->plan[cat->inputs[k]].alias_of != j)
            return snprintf(msg, cap, "Concat %d skips copying input %d, not written in place",
                            j, k);
    }
    return 0;
}

/* Each output fits the arena, is aligned, lives at least from its step to
 * its last use, and sits where its aliasing (if any) says. */
static int layer_problem(const yolo_ctx *c, int i, char *msg, size_t cap)
{
    const layer_plan *p = &c->plan[i];
    if (p->offset % 64 != 0 || p->bytes < elem_bytes(p->shape) ||
        p->offset + p->bytes > c->arena_bytes)
        return snprintf(msg, cap, "layer %d: offset %zu, %zu bytes, arena %zu", i, p->offset,
                        p->bytes, c->arena_bytes);
    if (p->first != i + 1 || p->last < true_last(c, i))
        return snprintf(msg, cap, "layer %d lives %d..%d, needs %d..%d", i, p->first, p->last,
                        i + 1, true_last(c, i));
    if (p->alias_of >= 0 && alias_problem(c, i, msg, cap))
        return 1;
    if (p->root != top_of(c, i))
        return snprintf(msg, cap, "layer %d: root %d, its outermost Concat is %d", i, p->root,
                        top_of(c, i));
    return in_place_problem(c, i, msg, cap);
}

/* Two outputs sharing bytes: fine only when one holds the other (checked at
 * its slice above); otherwise their groups (a Concat with every layer in its
 * memory, or a lone layer) must not be alive together, a group being alive
 * from its first member's step to its last member's last use. An output
 * reported intact must not be overwritten by any later layer but the
 * Concats that hold it. */
static int pair_problem(const yolo_ctx *c, const int *gfirst, const int *glast, int i, int j,
                        char *msg, size_t cap)
{
    const layer_plan *a = &c->plan[i], *b = &c->plan[j];
    int share = a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
    if (!share || holds(c, i, j) || holds(c, j, i))
        return 0;
    if (a->intact)
        return snprintf(msg, cap, "layer %d is reported intact but layer %d writes over it", i,
                        j);
    int ti = top_of(c, i), tj = top_of(c, j);
    if (ti == tj)
        return snprintf(msg, cap, "layers %d and %d share bytes inside Concat %d", i, j, ti);
    if (gfirst[ti] <= glast[tj] && gfirst[tj] <= glast[ti])
        return snprintf(msg, cap,
                        "layers %d and %d share bytes while alive together (memory of %d "
                        "used %d..%d, of %d %d..%d)",
                        i, j, ti, gfirst[ti], glast[ti], tj, gfirst[tj], glast[tj]);
    return 0;
}

/* What is wrong with c's plan (written to msg), or 0. */
static int plan_problem(const yolo_ctx *c, char *msg, size_t cap)
{
    int n = c->model->n_layers, bad = 0;
    int *gfirst = malloc((size_t)n * sizeof *gfirst), *glast = malloc((size_t)n * sizeof *glast);
    for (int i = 0; i < n; i++) {
        gfirst[i] = n + 2;
        glast[i] = -1;
    }
    for (int i = 0; i < n && !bad; i++)
        bad = layer_problem(c, i, msg, cap);
    for (int i = 0; i < n && !bad; i++) {
        int t = top_of(c, i);
        gfirst[t] = i + 1 < gfirst[t] ? i + 1 : gfirst[t];
        glast[t] = true_last(c, i) > glast[t] ? true_last(c, i) : glast[t];
    }
    for (int t = 0; t < n && !bad; t++)
        if (glast[t] >= 0 && (c->plan[t].span_first > gfirst[t] || c->plan[t].span_last <
                                                                      glast[t]))
            bad = snprintf(msg, cap, "root %d planned for %d..%d, its members use it %d..%d", t,
                           c->plan[t].span_first, c->plan[t].span_last, gfirst[t], glast[t]);
    for (int i = 0; i < n && !bad; i++)
        for (int j = i + 1; j < n && !bad; j++)
            bad = pair_problem(c, gfirst, glast, i, j, msg, cap);
    free(gfirst);
    free(glast);
    return bad;
}

static void check_plan(const yolo_ctx *c)
{
    char msg[256];
    if (plan_problem(c, msg, sizeof msg))
        fail_msg("bad plan: %s", msg);
}

static int aliased_layers(const yolo_ctx *c)
{
    int k = 0;
    for (int i = 0; i < c->model->n_layers; i++)
        k += c->plan[i].alias_of >= 0;
    return k;
}

/* The thread count a ctx reports is the one its backend uses. */
static void test_ctx_threads(void **state)
{
    (void)state;
    const int want[] = {1, 3};
    for (int k = 0; k < 2; k++) {
        yolo_ctx_params p = yolo_ctx_default_params();
        p.threads = want[k];
        yolo_ctx *c = NULL;
        assert_int_equal(yolo_ctx_create(full, &p, &c), YOLO_OK);
        int t = 0;
        assert_int_equal(yolo_ctx_threads(c, &t), YOLO_OK);
        assert_int_equal(t, want[k]);
        yolo_ctx_free(c);
    }
    yolo_ctx *c = make_ctx(YOLO_BACKEND_REFERENCE, 0);
    int t = 0;
    assert_int_equal(yolo_ctx_threads(c, &t), YOLO_OK);
    assert_int_equal(t, 1);
    assert_int_equal(yolo_ctx_threads(c, NULL), YOLO_ERR_INVALID_ARG);
    yolo_ctx_free(c);
    c = make_ctx(YOLO_BACKEND_FAST, 0); /* threads 0: one per online CPU */
    assert_int_equal(yolo_ctx_threads(c, &t), YOLO_OK);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(t, cpus < 1 ? 1 : cpus > 256 ? 256 : (int)cpus);
    yolo_ctx_free(c);
}

static void test_plan_invariants(void **state)
{
    (void)state;
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    assert_int_equal(yolo_ctx_plan(c, 1, H, W), YOLO_OK);
    check_plan(c);
    assert_true(aliased_layers(c) > 0); /* Concat aliasing is on by default */
    size_t sum = 0;
    for (int i = 0; i < full->n_layers; i++)
        sum += c->plan[i].bytes;
    assert_true(c->arena_bytes < sum); /* memory really is reused */
    /* Detect output: rows = anchors * (cells at /8 + cells at /16). */
    yolo_shape d = c->plan[full->n_layers - 1].shape;
    assert_int_equal(d.h, 2 * (H / 8 * W / 8 + H / 16 * W / 16));
    assert_int_equal(d.w, 8);
    /* Batch 2 (channel slices not contiguous) and REFERENCE alias nothing;
     * keeping every output (aliased or not) leaves every output intact. */
    assert_int_equal(yolo_ctx_plan(c, 2, H, W), YOLO_OK);
    check_plan(c);
    assert_int_equal(aliased_layers(c), 0);
    yolo_ctx_free(c);
    yolo_backend kinds[3] = {YOLO_BACKEND_GEMM, YOLO_BACKEND_FAST, YOLO_BACKEND_REFERENCE};
    for (int k = 0; k < 3; k++) {
        c = make_ctx(kinds[k], 1);
        assert_int_equal(yolo_ctx_plan(c, 1, 64, 64), YOLO_OK);
        check_plan(c);
        assert_true(kinds[k] == YOLO_BACKEND_REFERENCE ? aliased_layers(c) == 0
                                                       : aliased_layers(c) > 0);
        for (int i = 0; i < full->n_layers; i++)
            assert_int_equal(c->plan[i].intact, 1);
        yolo_ctx_free(c);
    }
}

/* Expects plan_problem to report a message containing want. */
static void expect_problem(const yolo_ctx *c, const char *want, const char *what)
{
    char msg[256];
    if (!plan_problem(c, msg, sizeof msg))
        fail_msg("check_plan missed: %s", what);
    if (!strstr(msg, want))
        fail_msg("%s: reported \"%s\", expected \"%s\"", what, msg, want);
}

/* c (aliased, planned at 64x64) predicts bit for bit what a ctx that
 * copies every Concat input predicts. */
static void assert_alias_equals_copying(yolo_ctx *c)
{
    float *x = random_input(1, 64, 64, 11);
    yolo_ctx *copying = make_ctx(YOLO_BACKEND_GEMM, 0);
    copying->concat_in_place = 0;
    forward_ok(c, x, 1, 64, 64);
    forward_ok(copying, x, 1, 64, 64);
    assert_int_equal(aliased_layers(copying), 0);
    const float *p1, *p2;
    int r1, c1, r2, c2;
    assert_int_equal(yolo_predictions(c, 0, &p1, &r1, &c1), YOLO_OK);
    assert_int_equal(yolo_predictions(copying, 0, &p2, &r2, &c2), YOLO_OK);
    assert_int_equal(r1, r2);
    assert_memory_equal(p1, p2, (size_t)r1 * (size_t)c1 * sizeof *p1);
    free(x);
    yolo_ctx_free(copying);
}

/* check_plan has teeth: on the full model at 64x64 (every /8 plane a
 * multiple of 16 floats, so layers 4, 5, 6 sit in Concat 7 and 7, 9 in
 * Concat 10; layer 5 is also read by layer 17, long after Concat 10's last
 * use), misplacing a member, copying over it, shortening its root's life or
 * placing another layer in the root's memory while a member is alive are
 * all caught; and the aliased run equals the copying one bit for bit. */
static void test_plan_check_catches_alias_errors(void **state)
{
    (void)state;
    yolo_ctx *c = make_ctx(YOLO_BACKEND_GEMM, 0);
    assert_int_equal(yolo_ctx_plan(c, 1, 64, 64), YOLO_OK);
    check_plan(c);
    layer_plan *p = c->plan;
    assert_int_equal(p[5].alias_of, 7);
    assert_int_equal(p[7].alias_of, 10);
    assert_int_equal(p[5].root, 10);
    assert_true(p[14].alias_of < 0 && p[14].bytes == p[5].bytes);
    size_t n = (size_t)full->n_layers * sizeof *p;
    layer_plan *good = malloc(n);
    memcpy(good, p, n);

    p[5].offset += 64;
    expect_problem(c, "its slice of Concat 7", "member moved by 64 bytes");
    memcpy(p, good, n);
    p[5].offset = p[7].offset;
    expect_problem(c, "its slice of Concat 7", "member in its sibling's slice");
    memcpy(p, good, n);
    p[7].in_place &= ~(1u << 1);
    expect_problem(c, "copies slice 1 over layer 5", "Concat copies over its member");
    memcpy(p, good, n);
    p[10].span_last = p[10].last;
    expect_problem(c, "root 10 planned for", "root's life not extended to layer 5's");
    memcpy(p, good, n);
    /* Root freed at its own last use: layer 14 (steps 15..17) placed over
     * layer 5 (read at step 18), or over the dead slice of layer 9. */
    p[14].offset = p[5].offset;
    p[5].intact = 0;
    expect_problem(c, "layers 5 and 14 share bytes while alive together", "root freed early");
    memcpy(p, good, n);
    p[14].offset = p[10].offset;
    p[9].intact = 0;
    expect_problem(c, "layers 9 and 14 share bytes while alive together",
                   "root's memory reused before its members are done");
    memcpy(p, good, n);
    p[14].offset = p[5].offset;
    expect_problem(c, "layer 5 is reported intact", "intact output overwritten");
    memcpy(p, good, n);
    check_plan(c);
    free(good);
    assert_alias_equals_copying(c);
    yolo_ctx_free(c);
}

/* The synthetic yolov7-tiny of `make weights`, loaded or the test fails. */
static yolo_model *load_tiny(void)
{
    const char *path = "weights/yolov7-tiny.bin";
    if (access(path, R_OK) != 0)
        fail_msg("%s is missing: run `make weights` from the repository root", path);
    yolo_model *m = NULL;
    if (yolo_model_load(path, NULL, &m) != YOLO_OK)
        fail_msg("%s", yolo_last_error());
    return m;
}

/* The exported yolov7-tiny planned at 640x640: 25200 rows and about 13.7
 * GFLOPs of convolution (the official model's figure). */
static void test_plan_yolov7_tiny(void **state)
{
    (void)state;
    yolo_model *m = load_tiny();
    yolo_ctx *c = NULL;
    assert_int_equal(yolo_ctx_create(m, NULL, &c), YOLO_OK);
    assert_int_equal(yolo_ctx_plan(c, 1, 640, 640), YOLO_OK);
    check_plan(c);
    assert_true(aliased_layers(c) > 0);
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

/* ---- FAST packed weights shared through the model ------------------------------------ */

#define TINY_H 160 /* Winograd on the larger layers, the direct kernel on the rest */
#define TINY_W 224


static yolo_ctx *ctx_on(const yolo_model *m, yolo_backend backend)
{
    yolo_ctx_params p = yolo_ctx_default_params();
    p.backend = backend;
    p.threads = 1; /* the same summation order in every ctx */
    yolo_ctx *c = NULL;
    if (yolo_ctx_create(m, &p, &c) != YOLO_OK)
        fail_msg("yolo_ctx_create: %s", yolo_last_error());
    return c;
}

/* A copy of the predictions of c's last forward; *n = floats. */
static float *predictions_copy(const yolo_ctx *c, size_t *n)
{
    const float *p;
    int rows, cols;
    assert_int_equal(yolo_predictions(c, 0, &p, &rows, &cols), YOLO_OK);
    *n = (size_t)rows * (size_t)cols;
    float *copy = malloc(*n * sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, p, *n * sizeof *copy);
    return copy;
}

/* Kilobytes of file-backed memory this process has mapped in (RssFile), or
 * -1 where /proc does not say. */
static long rss_file_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "RssFile: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Two FAST contexts on one model point at the same packed weights (the
 * second ctx packs nothing), report the same packed bytes, and predict the
 * same bits; a third with Winograd off uses the same direct packings of
 * the candidates the first ran directly. */
static void test_shared_packed_weights(void **state)
{
    (void)state;
    yolo_model *m = load_tiny();
    yolo_ctx *a = ctx_on(m, YOLO_BACKEND_FAST), *b = ctx_on(m, YOLO_BACKEND_FAST);
    int direct = 0;
    for (int i = 0; i < m->n_layers; i++) {
        assert_ptr_equal(a->packed_layer[i], b->packed_layer[i]);
        direct += a->packed_layer[i] != NULL;
    }
    assert_true(direct > 0);
    float *x = random_input(1, TINY_H, TINY_W, 91);
    forward_ok(a, x, 1, TINY_H, TINY_W);
    forward_ok(b, x, 1, TINY_H, TINY_W);
    int wino = 0, wino_direct = 0;
    for (int i = 0; i < m->n_layers; i++) {
        assert_ptr_equal(a->packed_layer[i], b->packed_layer[i]);
        assert_ptr_equal(a->wino_packed[i], b->wino_packed[i]);
        assert_ptr_equal(a->wino_direct[i], b->wino_direct[i]);
        assert_int_equal(a->wino_on[i], b->wino_on[i]);
        wino += a->wino_on[i];
        wino_direct += a->wino_direct[i] != NULL;
    }
    assert_true(wino > 0 && wino_direct > 0);
    yolo_ctx_memory ma, mb;
    assert_int_equal(yolo_ctx_memory_info(a, &ma), YOLO_OK);
    assert_int_equal(yolo_ctx_memory_info(b, &mb), YOLO_OK);
    assert_true(ma.packed_weight_bytes > 0);
    assert_int_equal(ma.packed_weight_bytes, mb.packed_weight_bytes);
    size_t n, nb;
    float *pa = predictions_copy(a, &n), *pb = predictions_copy(b, &nb);
    assert_int_equal(n, nb);
    assert_memory_equal(pa, pb, n * sizeof *pa);
    yolo_ctx *d = ctx_on(m, YOLO_BACKEND_FAST);
    d->winograd_off = 1;
    forward_ok(d, x, 1, TINY_H, TINY_W);
    for (int i = 0; i < m->n_layers; i++)
        if (a->packed_layer[i])
            assert_ptr_equal(d->packed_layer[i], a->packed_layer[i]);
    yolo_ctx_free(d);
    yolo_ctx_free(a);
    yolo_ctx_free(b);
    free(pa);
    free(pb);
    free(x);
    yolo_model_free(m);
}

/* yolo_ctx_params.no_winograd: no layer runs Winograd, no transformed
 * weights are made (less packed memory than a default ctx on its own
 * model), and the predictions are those of the direct kernels. */
static void test_no_winograd_param(void **state)
{
    (void)state;
    yolo_model *m1 = load_tiny(), *m2 = load_tiny();
    yolo_ctx_params p = yolo_ctx_default_params();
    p.no_winograd = 1;
    yolo_ctx *lean = NULL, *dflt = ctx_on(m2, YOLO_BACKEND_FAST);
    assert_int_equal(yolo_ctx_create(m1, &p, &lean), YOLO_OK);
    float *x = random_input(1, TINY_H, TINY_W, 93);
    forward_ok(lean, x, 1, TINY_H, TINY_W);
    forward_ok(dflt, x, 1, TINY_H, TINY_W);
    int wino = 0;
    for (int i = 0; i < m1->n_layers; i++) {
        assert_int_equal(lean->wino_on[i], 0);
        assert_null(lean->wino_packed[i]);
        wino += dflt->wino_on[i];
    }
    assert_true(wino > 0);
    yolo_ctx_memory ml, md;
    assert_int_equal(yolo_ctx_memory_info(lean, &ml), YOLO_OK);
    assert_int_equal(yolo_ctx_memory_info(dflt, &md), YOLO_OK);
    assert_true(ml.packed_weight_bytes > 0 && ml.packed_weight_bytes < md.packed_weight_bytes);
    /* the same as the direct path chosen through the internal switch */
    yolo_ctx *direct = ctx_on(m2, YOLO_BACKEND_FAST);
    direct->winograd_off = 1;
    forward_ok(direct, x, 1, TINY_H, TINY_W);
    size_t n, nd;
    float *pl = predictions_copy(lean, &n), *pd = predictions_copy(direct, &nd);
    assert_int_equal(n, nd);
    assert_memory_equal(pl, pd, n * sizeof *pl);
    yolo_ctx_free(direct);
    yolo_ctx_free(lean);
    yolo_ctx_free(dflt);
    free(pl);
    free(pd);
    free(x);
    yolo_model_free(m1);
    yolo_model_free(m2);
}

typedef struct {
    const yolo_model *m;
    const float *x;
    pthread_barrier_t *start;
    float *pred; /* out */
    size_t n;
    const float **packed; /* out: the ctx's packed_layer, copied */
    yolo_status st;
    char msg[256];
} racer;

static void *race_ctx(void *arg)
{
    racer *r = arg;
    yolo_ctx_params p = yolo_ctx_default_params();
    p.threads = 1;
    yolo_ctx *c = NULL;
    pthread_barrier_wait(r->start);
    r->st = yolo_ctx_create(r->m, &p, &c);
    if (r->st == YOLO_OK)
        r->st = yolo_forward(c, r->x, 1, TINY_H, TINY_W);
    if (r->st != YOLO_OK) {
        snprintf(r->msg, sizeof r->msg, "%s", yolo_last_error());
        yolo_ctx_free(c);
        return NULL;
    }
    const float *p0;
    int rows, cols;
    if (yolo_predictions(c, 0, &p0, &rows, &cols) == YOLO_OK) {
        r->n = (size_t)rows * (size_t)cols;
        r->pred = malloc(r->n * sizeof *r->pred);
        if (r->pred)
            memcpy(r->pred, p0, r->n * sizeof *r->pred);
    }
    r->packed = malloc((size_t)r->m->n_layers * sizeof *r->packed);
    if (r->packed)
        memcpy(r->packed, c->packed_layer, (size_t)r->m->n_layers * sizeof *r->packed);
    yolo_ctx_free(c);
    return NULL;
}

/* Four threads create a FAST ctx on one freshly loaded model at once (so
 * they race to pack) and run it: every one predicts exactly what a ctx on
 * a model of its own predicts, and all use the same packed weights. */
static void test_concurrent_ctx_create(void **state)
{
    (void)state;
    enum { N = 4 };
    float *x = random_input(1, TINY_H, TINY_W, 92);
    yolo_model *ref_m = load_tiny();
    yolo_ctx *ref = ctx_on(ref_m, YOLO_BACKEND_FAST);
    forward_ok(ref, x, 1, TINY_H, TINY_W);
    size_t n;
    float *want = predictions_copy(ref, &n);
    yolo_ctx_free(ref);
    yolo_model_free(ref_m);

    yolo_model *m = load_tiny();
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, N), 0);
    racer r[N];
    pthread_t th[N];
    memset(r, 0, sizeof r);
    for (int k = 0; k < N; k++) {
        r[k].m = m;
        r[k].x = x;
        r[k].start = &start;
        assert_int_equal(pthread_create(&th[k], NULL, race_ctx, &r[k]), 0);
    }
    for (int k = 0; k < N; k++)
        pthread_join(th[k], NULL);
    pthread_barrier_destroy(&start);
    for (int k = 0; k < N; k++) {
        if (r[k].st != YOLO_OK)
            fail_msg("thread %d: %s: %s", k, yolo_status_str(r[k].st), r[k].msg);
        assert_non_null(r[k].pred);
        assert_non_null(r[k].packed);
        assert_int_equal(r[k].n, n);
        assert_memory_equal(r[k].pred, want, n * sizeof *want);
        assert_memory_equal(r[k].packed, r[0].packed, (size_t)m->n_layers * sizeof *r[k].packed);
    }
    for (int k = 0; k < N; k++) {
        free(r[k].pred);
        free(r[k].packed);
    }
    free(want);
    free(x);
    yolo_model_free(m);
}

/* FAST packing drops the raw weight pages from memory; a GEMM ctx made
 * afterwards on the same model reads them again from the file and predicts
 * exactly what a GEMM ctx on a freshly loaded model does. */
static void test_gemm_after_fast_drop(void **state)
{
    (void)state;
    float *x = random_input(1, TINY_H, TINY_W, 93);
    yolo_model *m = load_tiny();
    long before = rss_file_kb();
    yolo_ctx *f = ctx_on(m, YOLO_BACKEND_FAST);
    assert_int_equal(yolo_ctx_plan(f, 1, TINY_H, TINY_W), YOLO_OK);
    long after = rss_file_kb();
    if (before >= 0 && after >= 0) {
        /* Loading verified (so mapped) the whole file; nearly all of it is
         * Conv weights, now packed. */
        print_message("RssFile %ld kB after load, %ld kB after FAST plan\n", before, after);
        assert_true(before - after >= (long)(m->info.weight_bytes / 1024 / 2));
    }
    forward_ok(f, x, 1, TINY_H, TINY_W);
    yolo_ctx *g = ctx_on(m, YOLO_BACKEND_GEMM);
    forward_ok(g, x, 1, TINY_H, TINY_W);
    size_t n, n2;
    float *got = predictions_copy(g, &n);
    yolo_model *fresh = load_tiny();
    yolo_ctx *g2 = ctx_on(fresh, YOLO_BACKEND_GEMM);
    forward_ok(g2, x, 1, TINY_H, TINY_W);
    float *want = predictions_copy(g2, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(got, want, n * sizeof *got);
    /* and the FAST ctx's packed weights still give its own answer */
    forward_ok(f, x, 1, TINY_H, TINY_W);
    yolo_ctx_free(g2);
    yolo_model_free(fresh);
    yolo_ctx_free(g);
    yolo_ctx_free(f);
    free(got);
    free(want);
    free(x);
    yolo_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_arena_limit),
        cmocka_unit_test(test_ctx_threads),
        cmocka_unit_test(test_plan_invariants),
        cmocka_unit_test(test_plan_check_catches_alias_errors),
        cmocka_unit_test(test_plan_yolov7_tiny),
        cmocka_unit_test(test_reuse_matches_keep_all_and_reference),
        cmocka_unit_test(test_callback_and_cancel),
        cmocka_unit_test(test_batch_and_replan),
        cmocka_unit_test(test_detect_pipeline),
        cmocka_unit_test(test_shared_packed_weights),
        cmocka_unit_test(test_no_winograd_param),
        cmocka_unit_test(test_concurrent_ctx_create),
        cmocka_unit_test(test_gemm_after_fast_drop),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
