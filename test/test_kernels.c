/*
 * Tests of the FAST backend's kernels (conv_fast.c, kernel_avx512.c,
 * kernel_avx2.c, kernels.c, threadpool.c): every microkernel this CPU can run against
 * the double-accumulating conv2d_naive on odd shapes (channel counts that
 * are not multiples of the tile, 1x1 / 3x3 / 5x5, stride 1 and 2, pad 0..2,
 * depths spanning several k slices, rows longer and shorter than a tile),
 * with and without bias, every activation, 1 and several threads; the Conv
 * op on a batch of 2 through op_args.fast against its reference; the
 * vectorized activations and sigmoid against expf; the pooling ops through
 * op_args.fast against their references; the thread pool; and Concat
 * inputs planned into their slice (same results as copying).
 */
#include "testutil.h"

#include "cpu.h"
#include "graph.h"
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
    {300, 10, 20, 9, 1, 1, 0},  /* pointwise read in place (4 full tiles), k tail */
    {5, 12, 10, 7, 3, 2, 0},    /* pad 0, stride 2 */
    {4, 5, 60, 12, 1, 2, 0},    /* 1x1 stride 2 */
    {6, 8, 9, 10, 5, 1, 2},     /* 5x5 pad 2 */
    {2, 1, 1, 3, 1, 1, 0},      /* one pixel */
    {24, 3, 100, 64, 3, 1, 1},  /* rows longer than a tile; channel split */
    {40, 4, 4, 100, 3, 1, 1},   /* few pixels, many panels: channel split */
    {20, 12, 16, 72, 1, 1, 0},  /* pointwise, 9 panels: full groups copied */
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

/* The naive convolution into ref (c_out*oh*ow floats, before activation)
 * and, into mag, the same sum over |w*x| (+|b|): the scale of the float
 * rounding of each output. */
static void naive_with_scale(const conv_geom *g, const float *in, const float *w,
                             const float *bias, float *ref, float *mag)
{
    size_t n_in = (size_t)g->c_in * (size_t)g->h * (size_t)g->w;
    size_t n_w = (size_t)g->c_out * (size_t)g->c_in * (size_t)(g->k * g->k);
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
    free(ain), free(aw), free(ab);
}

/* Compares out with act(naive conv), within 1e-5 of the sum of |w*x| (+|b|)
 * per output, the scale of float rounding; a wrong weight, pixel or padding
 * is off by a multiple of one term, far above that. */
static int check_conv(const conv_geom *g, const float *in, const float *w, const float *bias,
                      yolo_activation act, float alpha, const float *out, const char *what)
{
    size_t n_out = (size_t)g->c_out * (size_t)g->oh * (size_t)g->ow;
    float *ref = malloc(n_out * sizeof *ref), *mag = malloc(n_out * sizeof *mag);
    naive_with_scale(g, in, w, bias, ref, mag);
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
    free(ref), free(mag);
    return bad;
}

/* One case through convf_conv2d with the given kernels and thread count. */
static int run_case(const shape_case *c, const yolo_kernels *k, int threads, int with_bias,
                    yolo_activation act)
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
    convf_conv2d(&g, in, packed, bias, act, alpha, out, k, pool, scratch);
    char what[160];
    snprintf(what, sizeof what, "%s, %d threads, %dx%dx%d -> %d, k%d s%d p%d, bias %d, %s",
             k->name, threads, c->c_in, c->h, c->w, c->c_out, c->k, c->stride, c->pad, with_bias,
             act_name(act));
    int bad = check_conv(&g, in, w, bias, act, alpha, out, what);
    tpool_free(pool);
    free(in), free(w), free(bias), free(packed), free(scratch), free(out);
    return bad;
}

static void test_isa(yolo_isa isa)
{
    const yolo_kernels *k = kernels_for(isa);
    if (!k) {
        print_message("%s: not run, this CPU lacks it\n", yolo_isa_name(isa));
        skip();
    }
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (size_t a = 0; a < sizeof acts / sizeof *acts; a++)
            for (int threads = 1; threads <= 3; threads += 2)
                bad += run_case(&cases[i], k, threads, (int)(a + i) % 2, acts[a]);
    assert_int_equal(bad, 0);
}

static void test_generic_kernel(void **state)
{
    (void)state;
    test_isa(YOLO_ISA_GENERIC);
}

static void test_avx2_kernel(void **state)
{
    (void)state;
    test_isa(YOLO_ISA_AVX2);
}

static void test_avx512_kernel(void **state)
{
    (void)state;
    test_isa(YOLO_ISA_AVX512);
}

/* One microkernel call of every width (n_valid 1..48) and height (m_valid
 * 1..8), starting from the bias or from C, with and without the activation,
 * against the same sums in double: a wrong lane mask, a dropped vector or a
 * store past the tile (C is guarded by NaNs) fails. */
static int check_tile(const yolo_kernels *k, int m_valid, int n_valid, int first, int last)
{
    enum { KC = 37, LDC = CONVF_NR + 16, ROWS = CONVF_MR + 1 };
    static float a[KC * CONVF_MR], b[KC * CONVF_NR], bias[CONVF_MR], c[ROWS * LDC], c0[ROWS * LDC];
    uint64_t seed = (uint64_t)(m_valid * 97 + n_valid * 5 + first * 2 + last + 1);
    for (int i = 0; i < KC * CONVF_MR; i++)
        a[i] = tu_rand(&seed);
    for (int i = 0; i < KC * CONVF_NR; i++)
        b[i] = tu_rand(&seed);
    for (int m = 0; m < CONVF_MR; m++)
        bias[m] = tu_rand(&seed);
    for (int i = 0; i < ROWS * LDC; i++) {
        int m = i / LDC, j = i % LDC;
        c0[i] = m < m_valid && j < n_valid ? tu_rand(&seed) : NAN;
        c[i] = c0[i];
    }
    convf_tile t = {.kc = KC, .m_valid = m_valid, .n_valid = n_valid, .first = first,
                    .last = last, .a = a, .b = b, .bias = bias, .c = c, .ldb = CONVF_NR,
                    .ldc = LDC, .act = YOLO_ACT_LEAKY_RELU, .alpha = 0.1f};
    k->gemm(&t);
    int bad = 0;
    for (int m = 0; m < ROWS; m++)
        for (int j = 0; j < LDC; j++) {
            const float got = c[m * LDC + j];
            if (m >= m_valid || j >= n_valid) {
                bad += !isnan(got);
                continue;
            }
            double sum = first ? bias[m] : c0[m * LDC + j], mag = fabs(sum);
            for (int q = 0; q < KC; q++) {
                sum += (double)a[q * CONVF_MR + m] * b[q * CONVF_NR + j];
                mag += fabs((double)a[q * CONVF_MR + m] * b[q * CONVF_NR + j]);
            }
            if (last && sum < 0.0)
                sum *= 0.1;
            bad += !(fabs(got - sum) <= 1e-5 * mag);
        }
    if (bad)
        print_error("%s tile m_valid %d n_valid %d first %d last %d: %d wrong floats\n",
                    k->name, m_valid, n_valid, first, last, bad);
    return bad != 0;
}

static void test_tile_widths(void **state)
{
    (void)state;
    int bad = 0, tested = 0;
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        const yolo_kernels *k = kernels_for(isa);
        if (!k) {
            print_message("%s: not run, this CPU lacks it\n", yolo_isa_name(isa));
            continue;
        }
        tested++;
        for (int m = 1; m <= CONVF_MR; m++)
            for (int n = 1; n <= CONVF_NR; n++)
                for (int f = 0; f < 4; f++)
                    bad += check_tile(k, m, n, f & 1, f >> 1);
    }
    assert_true(tested > 0);
    assert_int_equal(bad, 0);
}

/* The best ISA is one of the tested ones; each table is its ISA's, whole. */
static void test_dispatch(void **state)
{
    (void)state;
    yolo_isa best = cpu_best_isa();
    assert_non_null(kernels_for(best));
    assert_non_null(kernels_for(YOLO_ISA_GENERIC));
    assert_null(kernels_for(YOLO_ISA_AUTO));
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        const yolo_kernels *k = kernels_for(isa);
        if (!k)
            continue;
        assert_int_equal(k->isa, isa);
        assert_string_equal(k->name, yolo_isa_name(isa));
        assert_true(k->gemm && k->copy2 && k->activate && k->sigmoid && k->wino_input &&
                    k->wino_output && k->decode);
    }
    print_message("best ISA on this CPU: %s\n", yolo_isa_name(best));
}

/* The op's reference into ref, then its FAST run (f) into fast. */
static void run_both(const op_vtable *op, op_args *a, const op_fast *f, float *ref, float *fast)
{
    a->out = ref;
    a->fast = NULL;
    op->run_reference(a);
    a->out = fast;
    a->fast = f;
    op->run(a);
}

/* The arguments of a one-input op: layer l on in, shapes as planned. */
static op_args one_input_args(const model_layer *l, const float *in, yolo_shape in_shape,
                              yolo_shape out_shape)
{
    op_args a;
    memset(&a, 0, sizeof a);
    a.layer = l;
    a.n_in = 1;
    a.in[0] = in;
    a.in_shape[0] = in_shape;
    a.out_shape = out_shape;
    return a;
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
    op_fast f = {pool, kernels_for(cpu_best_isa()), packed, scratch};
    op_args a = one_input_args(&l, in, in_shape, out_shape);
    run_both(&op_conv, &a, &f, ref, fast);
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

static void check_activation(const yolo_kernels *k, yolo_activation act)
{
    enum { CAP = 24100 };
    static float x[CAP + 1], y[CAP + 1];
    size_t n = activation_inputs(x, CAP);
    x[n++] = NAN;
    memcpy(y, x, n * sizeof *x);
    /* In pieces of 13 (a whole vector and a tail on every ISA) and the rest. */
    for (size_t i = 0; i < n; i += 13)
        k->activate(y + i, n - i < 13 ? n - i : 13, act, 0.1f);
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
            print_error("%s %s(%.9g) = %.9g, expected %.9g\n", k->name, act_name(act),
                        (double)x[i], (double)y[i], (double)want);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_activations(void **state)
{
    (void)state;
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        const yolo_kernels *k = kernels_for(isa);
        if (!k)
            continue;
        check_activation(k, YOLO_ACT_SILU);
        check_activation(k, YOLO_ACT_LEAKY_RELU);
        check_activation(k, YOLO_ACT_NONE);
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

/* The sigmoid of every ISA against 1 / (1 + expf(-x)) over the same
 * delicate inputs as the activations. */
static void test_sigmoid(void **state)
{
    (void)state;
    enum { CAP = 24100 };
    static float x[CAP], y[CAP];
    size_t n = activation_inputs(x, CAP);
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        const yolo_kernels *k = kernels_for(isa);
        if (!k)
            continue;
        memcpy(y, x, n * sizeof *x);
        for (size_t i = 0; i < n; i += 13) /* whole vectors and tails */
            k->sigmoid(y + i, n - i < 13 ? n - i : 13);
        int bad = 0;
        for (size_t i = 0; i < n && bad < 5; i++) {
            float want = 1.0f / (1.0f + expf(-x[i]));
            int ok = want == 0.0f ? y[i] == 0.0f
                                  : fabsf(y[i] - want) <= 4.0f * 5.97e-8f * fabsf(want) ||
                                        fabsf(y[i] - want) < 1e-37f;
            if (!ok) {
                print_error("%s sigmoid(%.9g) = %.9g, expected %.9g\n", k->name,
                            (double)x[i], (double)y[i], (double)want);
                bad++;
            }
        }
        assert_int_equal(bad, 0);
    }
}

/* tpool_for covers [0, n) exactly once with contiguous ranges, for n below,
 * at and above the thread count. */
static void count_range(void *arg, size_t begin, size_t end, int tid)
{
    int *hits = arg;
    assert_true(begin < end);
    assert_true(tid >= 0 && tid < 3);
    for (size_t i = begin; i < end; i++)
        hits[i]++;
}

static void test_pool_for(void **state)
{
    (void)state;
    yolo_pool *pool;
    assert_int_equal(tpool_create(3, &pool), YOLO_OK);
    static const size_t sizes[] = {0, 1, 2, 3, 4, 100, 1001};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        int hits[1001];
        memset(hits, 0, sizeof hits);
        tpool_for(pool, sizes[k], count_range, hits);
        tpool_for(NULL, sizes[k], count_range, hits);
        for (size_t i = 0; i < sizes[k]; i++)
            assert_int_equal(hits[i], 2);
    }
    tpool_free(pool);
}


static void expect_same_bits(const char *what, const float *got, const float *want, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
            print_error("%s: output %zu is %g, expected %g\n", what, i, (double)got[i],
                        (double)want[i]);
            fail();
        }
}

/* The pooling ops through op_args.fast (rows split over 2 threads) against
 * their references: MP, SP 5 and 13, MaxPool2d with stride 2 and 3, pad
 * 0..k/2, odd sizes, a width below the kernel plus padding, batch 2. */
static void test_pool_ops_fast(void **state)
{
    (void)state;
    typedef struct {
        int type, k, s, p, c, h, w;
    } pool_case;
    static const pool_case pcs[] = {
        {LAYER_MP, 2, 2, 0, 5, 13, 17},     {LAYER_MP, 2, 2, 0, 3, 2, 2},
        {LAYER_SP, 5, 1, 2, 4, 9, 11},      {LAYER_SP, 13, 1, 6, 3, 7, 20},
        {LAYER_MAXPOOL, 3, 2, 1, 3, 10, 9}, {LAYER_MAXPOOL, 4, 3, 2, 2, 11, 14},
        {LAYER_MAXPOOL, 3, 1, 0, 2, 5, 3},  {LAYER_MAXPOOL, 5, 2, 2, 1, 3, 4},
    };
    yolo_pool *pool;
    assert_int_equal(tpool_create(2, &pool), YOLO_OK);
    float *scratch = malloc(2 * convf_thread_scratch_floats() * sizeof *scratch);
    op_fast f = {pool, kernels_for(cpu_best_isa()), NULL, scratch};
    for (size_t k = 0; k < sizeof pcs / sizeof *pcs; k++) {
        const pool_case *pc = &pcs[k];
        model_layer l;
        memset(&l, 0, sizeof l);
        l.type = pc->type;
        l.n_inputs = 1;
        l.c_out = pc->c;
        l.kernel = pc->k;
        l.stride = pc->type == LAYER_MAXPOOL ? pc->s : 0;
        l.pad = pc->type == LAYER_MAXPOOL ? pc->p : 0;
        const op_vtable *op = op_lookup(pc->type);
        yolo_shape in_shape = {2, pc->c, pc->h, pc->w}, out_shape;
        assert_int_equal(op->shape(NULL, &l, &in_shape, 1, &out_shape), YOLO_OK);
        float *in = rand_floats(shape_elems(in_shape), 40 + k, 1.0f);
        size_t n_out = shape_elems(out_shape);
        float *fast = malloc(n_out * sizeof *fast), *ref = malloc(n_out * sizeof *ref);
        float *tmp = malloc((op->scratch(&l, &in_shape, 1, out_shape) + 1) * sizeof *tmp);
        op_args a = one_input_args(&l, in, in_shape, out_shape);
        a.scratch = tmp;
        run_both(op, &a, &f, ref, fast);
        char what[32];
        snprintf(what, sizeof what, "pool case %zu", k);
        expect_same_bits(what, fast, ref, n_out);
        free(in), free(fast), free(ref), free(tmp);
    }
    free(scratch);
    tpool_free(pool);
}

/* Concat and Upsample split over 2 threads (FAST) against their references,
 * bit for bit: batch 3 and odd channel counts, so the 16384-float pieces
 * of Concat start and end inside inputs and items; with an activation. */
static void test_tensor_ops_fast(void **state)
{
    (void)state;
    yolo_pool *pool;
    assert_int_equal(tpool_create(2, &pool), YOLO_OK);
    op_fast f = {pool, kernels_for(cpu_best_isa()), NULL, NULL};
    const int types[] = {LAYER_CONCAT, LAYER_UPSAMPLE};
    for (size_t t = 0; t < 2; t++) {
        model_layer l;
        memset(&l, 0, sizeof l);
        l.type = types[t];
        l.act = YOLO_ACT_LEAKY_RELU;
        l.alpha = 0.1f;
        l.kernel = 2;
        l.n_inputs = l.type == LAYER_CONCAT ? 3 : 1;
        const int chans[] = {13, 17, 5};
        op_args a;
        memset(&a, 0, sizeof a);
        a.layer = &l;
        a.n_in = l.n_inputs;
        float *ins[3] = {NULL, NULL, NULL};
        for (int i = 0; i < a.n_in; i++) {
            a.in_shape[i] = (yolo_shape){3, chans[i], 20, 30};
            ins[i] = rand_floats(shape_elems(a.in_shape[i]), 70 + (uint64_t)i, 1.0f);
            a.in[i] = ins[i];
        }
        const op_vtable *op = op_lookup(l.type);
        assert_int_equal(op->shape(NULL, &l, a.in_shape, a.n_in, &a.out_shape), YOLO_OK);
        size_t n = shape_elems(a.out_shape);
        float *ref = malloc(n * sizeof *ref), *fast = malloc(n * sizeof *fast);
        run_both(op, &a, &f, ref, fast);
        expect_same_bits(op->name, fast, ref, n);
        for (int i = 0; i < a.n_in; i++)
            free(ins[i]);
        free(ref), free(fast);
    }
    tpool_free(pool);
}

/* ---- Winograd F(4x4,3x3) (winograd.c) ------------------------------------------- */

/* Error bound of one Winograd output relative to the direct sum's scale
 * S = sum |w*x| (+|b|): the transforms scale values by up to 10 (B rows)
 * and 18 (A rows) before the sums cancel back, and every stage rounds, so
 * the error is a bounded multiple of the direct sum's (about 1e-7 S).
 * Measured on these cases: below 3.5e-6 S. 2e-5 S leaves 5x room yet stays
 * 40 times below the shift a wrong weight, pixel or padding causes (at
 * least one term |w*x|, about S / (9 c_in) = S / 1170 for the deepest case
 * here). */
#define WINO_TOL 2e-5

typedef struct {
    int c_in, h, w, c_out, pad;
} wino_case;

/* Edges and padding (sizes not multiples of 4, pad 0..2), a single tile,
 * channel counts not multiples of 8, tile rows wider than a lane group
 * (8 or 16 tiles) and groups spanning tile rows, patches wholly inside the
 * image (pad 0, 30x42), and a last block of 16 tiles (32x32: 48 + 16). */
static const wino_case wcases[] = {
    {3, 7, 9, 5, 1},    {16, 13, 11, 19, 1}, {33, 4, 4, 8, 1},  {70, 17, 23, 20, 1},
    {8, 6, 6, 9, 0},    {5, 9, 10, 3, 2},    {130, 12, 12, 17, 1}, {4, 1, 1, 8, 1},
    {24, 40, 9, 64, 1}, {12, 3, 50, 40, 1}, {40, 21, 70, 24, 1}, {9, 32, 32, 10, 1},
    {16, 30, 42, 8, 0}, {10, 19, 37, 12, 2},
};

static int wino_case_run(const wino_case *c, const yolo_kernels *k, int threads,
                         yolo_activation act, uint64_t seed, double *worst)
{
    conv_geom g = {.c_in = c->c_in, .h = c->h, .w = c->w, .c_out = c->c_out, .k = 3,
                   .stride = 1, .pad = c->pad};
    g.oh = c->h + 2 * c->pad - 2;
    g.ow = c->w + 2 * c->pad - 2;
    size_t n_w = (size_t)c->c_out * (size_t)c->c_in * 9, n_in = (size_t)c->c_in * c->h * c->w;
    size_t n_out = (size_t)c->c_out * (size_t)g.oh * (size_t)g.ow;
    float *w = rand_floats(n_w, seed, 0.3f), *b = rand_floats((size_t)c->c_out, seed + 1, 1.0f);
    float *in = rand_floats(n_in, seed + 2, 2.0f);
    float *packed = malloc(wino_packed_floats(c->c_out, c->c_in) * sizeof *packed);
    wino_pack_weights(w, c->c_out, c->c_in, packed);
    size_t per = (wino_thread_scratch_floats(c->c_in, c->c_out) + 15) / 16 * 16;
    float *scratch = aligned_alloc(64, (size_t)threads * per * sizeof *scratch);
    float *out = malloc(n_out * sizeof *out);
    for (size_t i = 0; i < n_out; i++)
        out[i] = NAN; /* a pixel left unwritten fails */
    yolo_pool *pool;
    assert_int_equal(tpool_create(threads, &pool), YOLO_OK);
    /* With 3 threads the shared transformed input too, where it is used. */
    size_t n_sh = threads > 1 ? wino_shared_floats(&g, threads) : 0;
    float *shared = n_sh ? aligned_alloc(64, (n_sh + 15) / 16 * 16 * sizeof *shared) : NULL;
    wino_conv2d(&g, in, packed, b, act, 0.1f, out, k, pool, scratch, per, shared);
    free(shared);
    tpool_free(pool);
    /* Reference and scale as in check_conv, but with the Winograd bound. */
    float *ref = malloc(n_out * sizeof *ref), *mag = malloc(n_out * sizeof *mag);
    naive_with_scale(&g, in, w, b, ref, mag);
    int bad = 0;
    for (size_t i = 0; i < n_out; i++) {
        double want = act_ref(ref[i], act, 0.1f), err = fabs((double)out[i] - want);
        if (err / mag[i] > *worst)
            *worst = err / mag[i];
        if (!(err <= WINO_TOL * mag[i]) && bad++ < 3)
            print_error("winograd %s %dx%dx%d -> %d pad %d, %s, %d threads: output %zu is %.9g, "
                        "expected %.9g\n",
                        k->name, c->c_in, c->h, c->w, c->c_out, c->pad, act_name(act),
                        threads, i, (double)out[i], want);
    }
    free(w), free(b), free(in), free(packed), free(scratch), free(out), free(ref), free(mag);
    return bad;
}

static void test_winograd(void **state)
{
    (void)state;
    int bad = 0;
    double worst = 0;
    for (yolo_isa isa = YOLO_ISA_GENERIC; isa <= YOLO_ISA_NEON; isa++) {
        const yolo_kernels *k = kernels_for(isa);
        if (!k)
            continue;
        for (size_t i = 0; i < sizeof wcases / sizeof *wcases; i++)
            for (int threads = 1; threads <= 3; threads += 2)
                for (size_t a = 0; a < 3; a++) /* each activation */
                    bad += wino_case_run(&wcases[i], k, threads, acts[a], 100 + i, &worst);
    }
    print_message("winograd: worst error %.3g of sum |w*x|\n", worst);
    assert_int_equal(bad, 0);
}

/* ---- Concat at zero cost (graph.c, yolo_ctx.concat_in_place) ---------------- */

static yolo_ctx *tiny_ctx(const yolo_model *m, int concat_in_place, int keep)
{
    yolo_ctx_params p = yolo_ctx_default_params();
    p.threads = 2;
    p.keep_layer_outputs = keep;
    yolo_ctx *c = NULL;
    assert_int_equal(yolo_ctx_create(m, &p, &c), YOLO_OK);
    c->concat_in_place = concat_in_place;
    return c;
}

/* The aliased plan's memory rules: a member lies inside its Concat's slice
 * at its channel offset; memory of different roots alive at the same time
 * is disjoint; Concats really were aliased. */
static void check_alias_plan(const yolo_ctx *c)
{
    const yolo_model *m = c->model;
    int aliased = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const layer_plan *p = &c->plan[i];
        assert_true(p->offset + shape_elems(p->shape) * sizeof(float) <= c->arena_bytes);
        if (p->alias_of < 0)
            continue;
        aliased++;
        const model_layer *cat = &m->layers[p->alias_of];
        size_t off = 0;
        int k = 0;
        while (k < cat->n_inputs && cat->inputs[k] != i)
            off += shape_elems(c->plan[cat->inputs[k++]].shape) * sizeof(float);
        assert_true(k < cat->n_inputs);
        assert_true(c->plan[p->alias_of].in_place & (1u << k));
        assert_int_equal(p->offset, c->plan[p->alias_of].offset + off);
    }
    assert_true(aliased > 0);
    for (int i = 0; i < m->n_layers; i++)
        for (int j = i + 1; j < m->n_layers; j++) {
            const layer_plan *a = &c->plan[i], *b = &c->plan[j];
            if (a->root == b->root)
                continue;
            const layer_plan *ra = &c->plan[a->root], *rb = &c->plan[b->root];
            int alive = ra->span_first <= rb->span_last && rb->span_first <= ra->span_last;
            int share = a->offset < b->offset + b->bytes && b->offset < a->offset + a->bytes;
            if (alive && share)
                fail_msg("layers %d and %d: alive together in different roots, shared bytes", i,
                         j);
        }
}

/* yolov7-tiny on the FAST backend with and without Concat aliasing: the
 * same predictions bit for bit, and (keep_layer_outputs) every layer's
 * output; at batch 2 nothing is aliased. */
static void test_concat_in_place(void **state)
{
    (void)state;
    const char *path = "weights/yolov7-tiny.bin";
    yolo_model *m = NULL;
    if (yolo_model_load(path, NULL, &m) != YOLO_OK)
        fail_msg("%s: %s (run `make weights`)", path, yolo_last_error());
    const int h = 160, w = 224;
    float *x = rand_floats((size_t)2 * 3 * h * w, 77, 1.0f);
    for (size_t i = 0; i < (size_t)2 * 3 * h * w; i++)
        x[i] = 0.5f + 0.5f * x[i];
    for (int keep = 0; keep <= 1; keep++) {
        yolo_ctx *plain = tiny_ctx(m, 0, keep), *cat = tiny_ctx(m, 1, keep);
        assert_int_equal(yolo_forward(plain, x, 1, h, w), YOLO_OK);
        assert_int_equal(yolo_forward(cat, x, 1, h, w), YOLO_OK);
        check_alias_plan(cat);
        const float *p0, *p1;
        int r0, c0, r1, c1;
        assert_int_equal(yolo_predictions(plain, 0, &p0, &r0, &c0), YOLO_OK);
        assert_int_equal(yolo_predictions(cat, 0, &p1, &r1, &c1), YOLO_OK);
        assert_int_equal(r0, r1);
        assert_memory_equal(p0, p1, (size_t)r0 * (size_t)c0 * sizeof *p0);
        for (int i = 0; keep && i < m->n_layers; i++) {
            const float *d0, *d1;
            int ch, hh, ww, ch1, hh1, ww1;
            assert_int_equal(yolo_layer_output(plain, i, 0, &d0, &ch, &hh, &ww), YOLO_OK);
            assert_int_equal(yolo_layer_output(cat, i, 0, &d1, &ch1, &hh1, &ww1), YOLO_OK);
            assert_memory_equal(d0, d1, (size_t)ch * (size_t)hh * (size_t)ww * sizeof *d0);
        }
        /* Batch 2: planned again, nothing aliased, item 1 as item 0 alone. */
        assert_int_equal(yolo_forward(cat, x, 2, h, w), YOLO_OK);
        for (int i = 0; i < m->n_layers; i++)
            assert_int_equal(cat->plan[i].alias_of, -1);
        yolo_ctx_free(plain);
        yolo_ctx_free(cat);
    }
    free(x);
    yolo_model_free(m);
}

/* yolov7-tiny at 160x224 (Winograd on the 40x56 and 20x28 layers, the
 * direct kernel on the 10x14 and 5x7 ones, whose direct packing is made at
 * plan time) against the same ctx with Winograd off: predictions agree
 * within 5e-3 (1 + |value|). Measured: 8.7e-4 (the synthetic weights
 * amplify rounding more than the official ones); a layer run with wrong
 * weights or geometry moves predictions by O(1). */
static void test_winograd_model(void **state)
{
    (void)state;
    const char *path = "weights/yolov7-tiny.bin";
    yolo_model *m = NULL;
    if (yolo_model_load(path, NULL, &m) != YOLO_OK)
        fail_msg("%s: %s (run `make weights`)", path, yolo_last_error());
    const int h = 160, w = 224;
    float *x = rand_floats((size_t)3 * h * w, 78, 0.5f);
    for (size_t i = 0; i < (size_t)3 * h * w; i++)
        x[i] += 0.5f;
    yolo_ctx *direct = tiny_ctx(m, 0, 0), *wino = tiny_ctx(m, 0, 0);
    direct->winograd_off = 1;
    assert_int_equal(yolo_forward(direct, x, 1, h, w), YOLO_OK);
    assert_int_equal(yolo_forward(wino, x, 1, h, w), YOLO_OK);
    int used = 0, unused = 0;
    for (int i = 0; i < m->n_layers; i++) {
        used += wino->wino_on[i];
        unused += wino->wino_direct[i] != NULL;
        assert_int_equal(direct->wino_on[i], 0);
    }
    assert_true(used > 0 && unused > 0);
    const float *p0, *p1;
    int r0, c0, r1, c1;
    assert_int_equal(yolo_predictions(direct, 0, &p0, &r0, &c0), YOLO_OK);
    assert_int_equal(yolo_predictions(wino, 0, &p1, &r1, &c1), YOLO_OK);
    double worst = 0;
    for (size_t i = 0; i < (size_t)r0 * (size_t)c0; i++) {
        double d = fabs((double)p1[i] - (double)p0[i]) / (1.0 + fabs((double)p0[i]));
        worst = d > worst ? d : worst;
    }
    print_message("winograd vs direct, yolov7-tiny 160x224: worst %.3g of 1 + |value|\n", worst);
    assert_true(worst <= 5e-3);
    yolo_ctx_free(direct);
    yolo_ctx_free(wino);
    free(x);
    yolo_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch),
        cmocka_unit_test(test_generic_kernel),
        cmocka_unit_test(test_avx2_kernel),
        cmocka_unit_test(test_avx512_kernel),
        cmocka_unit_test(test_tile_widths),
        cmocka_unit_test(test_conv_op_batch2),
        cmocka_unit_test(test_activations),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_for),
        cmocka_unit_test(test_sigmoid),
        cmocka_unit_test(test_pool_ops_fast),
        cmocka_unit_test(test_tensor_ops_fast),
        cmocka_unit_test(test_concat_in_place),
        cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_winograd_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
