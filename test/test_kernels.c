/*
 * Tests of the FAST backend's kernels (conv_fast.c, kernel_avx512.c,
 * kernel_avx2.c, threadpool.c): every microkernel this CPU can run against
 * the double-accumulating conv2d_naive on odd shapes (channel counts that
 * are not multiples of the tile, 1x1 / 3x3 / 5x5, stride 1 and 2, pad 0..2,
 * depths spanning several k slices, rows longer and shorter than a tile),
 * with and without bias, every activation, 1 and several threads; the Conv
 * op on a batch of 2 through op_args.fast against its reference; the
 * vectorized activations against expf; and the thread pool.
 */
#include "testutil.h"

#include "internal.h"

typedef struct {
    int c_in, h, w, c_out, k, stride, pad;
} shape_case;

static const shape_case cases[] = {
    {3, 17, 23, 19, 3, 2, 1},   /* first-layer-like, stride 2 */
    {23, 13, 11, 19, 3, 1, 1},  /* tile spans several output rows */
    {16, 9, 50, 8, 1, 1, 0},    /* pointwise, 450 pixels: partial last tile */
    {37, 7, 5, 33, 1, 1, 0},    /* pointwise, channel tail of 1 */
    {130, 11, 9, 17, 3, 1, 1},  /* depth 1170: ten k slices */
    {300, 6, 7, 9, 1, 1, 0},    /* pointwise depth 300: k slice tail */
    {5, 12, 10, 7, 3, 2, 0},    /* pad 0, stride 2 */
    {4, 5, 60, 12, 1, 2, 0},    /* 1x1 stride 2 */
    {6, 8, 9, 10, 5, 1, 2},     /* 5x5 pad 2 */
    {2, 1, 1, 3, 1, 1, 0},      /* one pixel */
    {24, 3, 100, 64, 3, 1, 1},  /* rows longer than a tile; channel split */
    {40, 4, 4, 100, 3, 1, 1},   /* few pixels, many panels: channel split */
};

static const yolo_activation acts[] = {YOLO_ACT_NONE, YOLO_ACT_LEAKY_RELU, YOLO_ACT_SILU};

static float *rand_floats(size_t n, uint64_t seed, float scale)
{
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = scale * tu_rand(&seed);
    return x;
}

static conv_geom geom_of(const shape_case *c)
{
    conv_geom g = {.c_in = c->c_in, .h = c->h, .w = c->w, .c_out = c->c_out, .k = c->k,
                   .stride = c->stride, .pad = c->pad};
    g.oh = (c->h + 2 * c->pad - c->k) / c->stride + 1;
    g.ow = (c->w + 2 * c->pad - c->k) / c->stride + 1;
    return g;
}

static float act_ref(float x, yolo_activation act, float alpha)
{
    switch (act) {
    case YOLO_ACT_LEAKY_RELU:
        return x > 0.0f ? x : alpha * x;
    case YOLO_ACT_SILU:
        return x / (1.0f + expf(-x));
    case YOLO_ACT_NONE:
        break;
    }
    return x;
}

/* Compares out with act(naive conv), within 1e-5 of the sum of |w*x| (+|b|)
 * per output, the scale of float rounding; a wrong weight, pixel or padding
 * is off by a multiple of one term, far above that. */
static int check_conv(const conv_geom *g, const float *in, const float *w, const float *bias,
                      yolo_activation act, float alpha, const float *out, const char *what)
{
    size_t n_out = (size_t)g->c_out * (size_t)g->oh * (size_t)g->ow;
    size_t n_in = (size_t)g->c_in * (size_t)g->h * (size_t)g->w;
    size_t n_w = (size_t)g->c_out * (size_t)g->c_in * (size_t)(g->k * g->k);
    float *ref = malloc(n_out * sizeof *ref), *mag = malloc(n_out * sizeof *mag);
    float *ain = malloc(n_in * sizeof *ain), *aw = malloc(n_w * sizeof *aw);
    float *ab = malloc((size_t)g->c_out * sizeof *ab);
    for (size_t i = 0; i < n_in; i++)
        ain[i] = fabsf(in[i]);
    for (size_t i = 0; i < n_w; i++)
        aw[i] = fabsf(w[i]);
    for (int i = 0; i < g->c_out; i++)
        ab[i] = bias ? fabsf(bias[i]) : 0.0f;
    conv2d_naive(g, in, w, bias, ref);
    conv2d_naive(g, ain, aw, ab, mag);
    int bad = 0;
    for (size_t i = 0; i < n_out && bad < 3; i++) {
        float want = act_ref(ref[i], act, alpha);
        double tol = 1e-5 * (double)mag[i] + 1e-7;
        if (!(fabs((double)out[i] - (double)want) <= tol)) {
            print_error("%s: output %zu is %.9g, expected %.9g (tolerance %.3g)\n", what, i,
                        (double)out[i], (double)want, tol);
            bad++;
        }
    }
    free(ref), free(mag), free(ain), free(aw), free(ab);
    return bad;
}

/* One case through convf_conv2d with the given kernel and thread count. */
static int run_case(const shape_case *c, convf_kernel kernel, const char *isa, int threads,
                    int with_bias, yolo_activation act)
{
    conv_geom g = geom_of(c);
    size_t kt = (size_t)c->c_in * (size_t)(c->k * c->k);
    size_t n_in = (size_t)c->c_in * (size_t)c->h * (size_t)c->w;
    size_t n_out = (size_t)c->c_out * (size_t)g.oh * (size_t)g.ow;
    float *in = rand_floats(n_in, 11u + (uint64_t)c->c_in, 1.0f);
    float *w = rand_floats((size_t)c->c_out * kt, 17u + (uint64_t)c->c_out, 0.5f);
    float *bias = with_bias ? rand_floats((size_t)c->c_out, 23, 2.0f) : NULL;
    float *packed = malloc(convf_packed_floats(c->c_out, kt) * sizeof *packed);
    convf_pack_weights(w, c->c_out, kt, packed);
    yolo_pool *pool = NULL;
    if (threads > 1)
        assert_int_equal(tpool_create(threads, &pool), YOLO_OK);
    float *scratch = malloc((size_t)threads * convf_thread_scratch_floats() * sizeof *scratch);
    float *out = malloc(n_out * sizeof *out);
    for (size_t i = 0; i < n_out; i++)
        out[i] = NAN; /* every output must be written */
    const float alpha = 0.1f;
    convf_conv2d(&g, in, packed, bias, act, alpha, out, kernel, pool, scratch);
    char what[160];
    snprintf(what, sizeof what, "%s, %d threads, %dx%dx%d -> %d, k%d s%d p%d, bias %d, %s", isa,
             threads, c->c_in, c->h, c->w, c->c_out, c->k, c->stride, c->pad, with_bias,
             act_name(act));
    int bad = check_conv(&g, in, w, bias, act, alpha, out, what);
    tpool_free(pool);
    free(in), free(w), free(bias), free(packed), free(scratch), free(out);
    return bad;
}

static void test_isa(convf_isa isa)
{
    convf_kernel k = convf_kernel_for(isa);
    if (!k) {
        print_message("%s: not supported by this CPU, skipped\n", convf_isa_name(isa));
        skip();
    }
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (size_t a = 0; a < sizeof acts / sizeof *acts; a++)
            for (int threads = 1; threads <= 3; threads += 2)
                bad += run_case(&cases[i], k, convf_isa_name(isa), threads, (int)(a + i) % 2,
                                acts[a]);
    assert_int_equal(bad, 0);
}

static void test_generic_kernel(void **state)
{
    (void)state;
    test_isa(CONVF_ISA_GENERIC);
}

static void test_avx2_kernel(void **state)
{
    (void)state;
    test_isa(CONVF_ISA_AVX2);
}

static void test_avx512_kernel(void **state)
{
    (void)state;
    test_isa(CONVF_ISA_AVX512);
}

/* The best kernel is one of the tested ones. */
static void test_dispatch(void **state)
{
    (void)state;
    convf_isa best = convf_best_isa();
    assert_non_null(convf_kernel_for(best));
    assert_non_null(convf_kernel_for(CONVF_ISA_GENERIC));
    print_message("best ISA on this CPU: %s\n", convf_isa_name(best));
}

/* The Conv op on a batch of 2 through op_args.fast (what the FAST backend
 * does) matches the op's naive reference. */
static void test_conv_op_batch2(void **state)
{
    (void)state;
    const shape_case c = {13, 10, 14, 21, 3, 2, 1};
    size_t kt = (size_t)c.c_in * 9;
    model_tensor wt, bt;
    memset(&wt, 0, sizeof wt);
    memset(&bt, 0, sizeof bt);
    float *w = rand_floats((size_t)c.c_out * kt, 5, 0.5f), *b = rand_floats((size_t)c.c_out, 6, 1);
    wt.ndim = 4;
    wt.shape[0] = c.c_out, wt.shape[1] = c.c_in, wt.shape[2] = wt.shape[3] = 3;
    wt.elems = (size_t)c.c_out * kt;
    wt.data = w;
    bt.ndim = 1;
    bt.shape[0] = c.c_out;
    bt.elems = (size_t)c.c_out;
    bt.data = b;
    model_layer l;
    memset(&l, 0, sizeof l);
    l.type = LAYER_CONV;
    l.act = YOLO_ACT_SILU;
    l.n_inputs = 1;
    l.c_out = c.c_out, l.kernel = 3, l.stride = 2, l.pad = 1, l.groups = 1;
    l.tensors[0] = &wt, l.tensors[1] = &bt;
    yolo_shape in_shape = {2, c.c_in, c.h, c.w}, out_shape;
    assert_int_equal(op_conv.shape(NULL, &l, &in_shape, 1, &out_shape), YOLO_OK);
    float *in = rand_floats(shape_elems(in_shape), 7, 1.0f);
    size_t n_out = shape_elems(out_shape);
    float *fast = malloc(n_out * sizeof *fast), *ref = malloc(n_out * sizeof *ref);
    float *packed = malloc(convf_packed_floats(c.c_out, kt) * sizeof *packed);
    convf_pack_weights(w, c.c_out, kt, packed);
    yolo_pool *pool;
    assert_int_equal(tpool_create(2, &pool), YOLO_OK);
    float *scratch = malloc(2 * convf_thread_scratch_floats() * sizeof *scratch);
    op_fast f = {pool, convf_kernel_for(convf_best_isa()), packed, scratch};
    op_args a;
    memset(&a, 0, sizeof a);
    a.layer = &l;
    a.n_in = 1;
    a.in[0] = in;
    a.in_shape[0] = in_shape;
    a.out_shape = out_shape;
    a.out = ref;
    op_conv.run_reference(&a);
    a.out = fast;
    a.fast = &f;
    op_conv.run(&a);
    for (size_t i = 0; i < n_out; i++)
        assert_true(fabsf(fast[i] - ref[i]) <= 1e-4f * (1.0f + fabsf(ref[i])));
    tpool_free(pool);
    free(w), free(b), free(in), free(fast), free(ref), free(packed), free(scratch);
}

/* Values where SiLU's exp is delicate: 0, +-denormals, the overflow and
 * underflow edges of expf, infinities, NaN, plus a dense sweep. */
static size_t activation_inputs(float *x, size_t cap)
{
    static const float special[] = {0.0f,     -0.0f,    1e-40f,  -1e-40f, 1e-30f,  -88.5f,
                                    -88.72f,  -88.73f,  -89.0f,  -103.0f, -104.5f, 88.5f,
                                    88.73f,   89.0f,    104.0f,  -200.0f, 200.0f,  INFINITY,
                                    -INFINITY, 0.34657f, -0.34658f, 1.0f, -1.0f};
    size_t n = 0;
    for (size_t i = 0; i < sizeof special / sizeof *special && n < cap; i++)
        x[n++] = special[i];
    for (int i = -12000; i <= 12000 && n < cap; i++)
        x[n++] = (float)i * 0.01f + 0.003f;
    return n;
}

static void check_activation(convf_isa isa, yolo_activation act)
{
    enum { CAP = 24100 };
    static float x[CAP + 1], y[CAP + 1];
    size_t n = activation_inputs(x, CAP);
    x[n++] = NAN;
    memcpy(y, x, n * sizeof *x);
    convf_activate(isa, y, n, act, 0.1f);
    int bad = 0;
    for (size_t i = 0; i < n && bad < 5; i++) {
        float want = act_ref(x[i], act, 0.1f);
        int ok;
        if (isnan(want))
            ok = isnan(y[i]);
        else if (isinf(want) || want == 0.0f)
            ok = y[i] == want;
        else /* 4 ulp, or below the smallest normal in absolute terms */
            ok = fabsf(y[i] - want) <= 4.0f * 5.97e-8f * fabsf(want) || fabsf(y[i] - want) < 1e-37f;
        if (!ok) {
            print_error("%s %s(%.9g) = %.9g, expected %.9g\n", convf_isa_name(isa), act_name(act),
                        (double)x[i], (double)y[i], (double)want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_activations(void **state)
{
    (void)state;
    const convf_isa isas[] = {CONVF_ISA_GENERIC, CONVF_ISA_AVX2, CONVF_ISA_AVX512};
    for (size_t i = 0; i < 3; i++) {
        if (!convf_kernel_for(isas[i]))
            continue;
        check_activation(isas[i], YOLO_ACT_SILU);
        check_activation(isas[i], YOLO_ACT_LEAKY_RELU);
        check_activation(isas[i], YOLO_ACT_NONE);
    }
}

/* ---- thread pool ---------------------------------------------------------------- */

typedef struct {
    int calls[8];
    int nthreads_seen[8];
    long sum;
} pool_probe;

static void probe_fn(void *arg, int tid, int n)
{
    pool_probe *p = arg;
    p->calls[tid]++;
    p->nthreads_seen[tid] = n;
}

/* Every thread runs each job exactly once, and a job is complete when
 * tpool_run returns, over many back-to-back runs (spinning and sleeping). */
static void test_pool(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 4; threads++) {
        yolo_pool *pool;
        assert_int_equal(tpool_create(threads, &pool), YOLO_OK);
        assert_int_equal(tpool_threads(pool), threads);
        pool_probe p;
        memset(&p, 0, sizeof p);
        for (int r = 0; r < 2000; r++) {
            tpool_run(pool, probe_fn, &p);
            for (int t = 0; t < threads; t++)
                assert_int_equal(p.calls[t], r + 1);
        }
        for (int t = 0; t < threads; t++)
            assert_int_equal(p.nthreads_seen[t], threads);
        tpool_free(pool);
    }
    assert_int_equal(tpool_threads(NULL), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_generic_kernel),
        cmocka_unit_test(test_avx2_kernel),
        cmocka_unit_test(test_avx512_kernel),
        cmocka_unit_test(test_conv_op_batch2),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
