/*
 * Unit tests of the layer kernels (libyolo/src/ops*.c): every fast path
 * against its naive reference on odd shapes, small cases worked out by hand,
 * shape() refusing malformed layers, and the FLOP formulas.
 *
 * Layers, tensors and models are built by filling the internal structs
 * directly. Outputs start as NaN and scratch as garbage, so an element a
 * kernel forgets to write, or scratch it assumes zeroed, shows up.
 */
#include "testutil.h"

#include "internal.h"

/* ---- helpers ---------------------------------------------------------------- */

#define U32 (1.0 / 16777216.0) /* unit roundoff of float: 2^-24 */

static float *alloc_floats(size_t n)
{
    size_t bytes = (n ? n : 1) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    float *p = aligned_alloc(64, bytes);
    assert_non_null(p);
    memset(p, 0xff, bytes); /* all NaN */
    return p;
}

static float *rand_floats(size_t n, uint64_t seed)
{
    float *p = alloc_floats(n);
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = tu_rand(&st);
    return p;
}

/* Small integers in [-4, 4]: sums of their products are exact in float in
 * any order, so fast and reference must agree bit for bit. */
static float *int_floats(size_t n, uint64_t seed)
{
    float *p = alloc_floats(n);
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++)
        p[i] = floorf(tu_rand(&st) * 4.5f + 0.5f);
    return p;
}

static void set_tensor(model_tensor *t, const char *name, const float *data, int ndim, int d0,
                       int d1, int d2, int d3)
{
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    const int d[4] = {d0, d1, d2, d3};
    t->elems = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->elems *= (size_t)d[i];
    }
    t->data = data;
}

static model_layer make_layer(int type, yolo_activation act, int c_out, int k, int s, int p)
{
    model_layer l;
    memset(&l, 0, sizeof l);
    l.type = type;
    l.act = act;
    l.n_inputs = 1;
    l.c_out = c_out;
    l.kernel = k;
    l.stride = s;
    l.pad = p;
    l.groups = 1;
    l.alpha = 0.1f;
    l.eps = 0.001f;
    l.source_index = 7;
    return l;
}

static yolo_shape shp(int n, int c, int h, int w)
{
    return (yolo_shape){n, c, h, w};
}

/* shape(), then the fast or the reference kernel into a fresh NaN-filled
 * output. Returns shape()'s status; *out is NULL on failure. */
static yolo_status run_layer(const yolo_model *m, const model_layer *l, int n_in,
                             const float *const *in, const yolo_shape *in_shape, int reference,
                             float **out, yolo_shape *out_shape)
{
    const op_vtable *op = op_lookup(l->type);
    assert_non_null(op);
    *out = NULL;
    yolo_status st = op->shape(m, l, in_shape, n_in, out_shape);
    if (st != YOLO_OK)
        return st;
    float *scratch = alloc_floats(op->scratch(l, in_shape, n_in, *out_shape));
    *out = alloc_floats(shape_elems(*out_shape));
    op_args a;
    memset(&a, 0, sizeof a);
    a.model = m;
    a.layer = l;
    a.n_in = n_in;
    for (int i = 0; i < n_in; i++) {
        a.in[i] = in[i];
        a.in_shape[i] = in_shape[i];
    }
    a.out = *out;
    a.out_shape = *out_shape;
    a.scratch = scratch;
    if (reference)
        op->run_reference(&a);
    else
        op->run(&a);
    free(scratch);
    return YOLO_OK;
}

/* Runs both paths; they must agree exactly (kernels without arithmetic, or
 * with the same arithmetic in the same order). Returns the fast output. */
static float *run_both_exact(const yolo_model *m, const model_layer *l, int n_in,
                             const float *const *in, const yolo_shape *in_shape, yolo_shape *os)
{
    float *fast, *ref;
    yolo_shape s2;
    assert_int_equal(run_layer(m, l, n_in, in, in_shape, 0, &fast, os), YOLO_OK);
    assert_int_equal(run_layer(m, l, n_in, in, in_shape, 1, &ref, &s2), YOLO_OK);
    assert_memory_equal(os, &s2, sizeof s2);
    size_t n = shape_elems(*os);
    for (size_t i = 0; i < n; i++)
        if (!(fast[i] == ref[i])) {
            print_error("%s: element %zu fast %.9g reference %.9g\n", layer_type_name(l), i,
                        (double)fast[i], (double)ref[i]);
            fail();
        }
    free(ref);
    return fast;
}

static void expect_values(const float *got, const float *want, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - (double)want[i]) <= tol)) {
            print_error("element %zu: got %.9g want %.9g\n", i, (double)got[i], (double)want[i]);
            fail();
        }
}

static void expect_format_error(const yolo_model *m, const model_layer *l, const yolo_shape *in,
                                int n_in, const char *needle)
{
    yolo_shape out;
    yolo_clear_error();
    assert_int_equal(op_lookup(l->type)->shape(m, l, in, n_in, &out), YOLO_ERR_FORMAT);
    const char *msg = yolo_last_error();
    if (!strstr(msg, layer_type_name(l)) || !strstr(msg, needle)) {
        print_error("message \"%s\" lacks \"%s\" or \"%s\"\n", msg, layer_type_name(l), needle);
        fail();
    }
}

/* ---- op table ------------------------------------------------------------------ */

static void test_lookup_and_names(void **state)
{
    (void)state;
    static const char *const names[LAYER_TYPE_MAX + 1] = {
        NULL, "Conv",   "Conv2d",   "BatchNorm2d", "Act",   "MaxPool2d", "MP",
        "SP", "Concat", "Upsample", "Shortcut",    "ReOrg", "Add",       "Detect"};
    for (int t = 1; t <= LAYER_TYPE_MAX; t++) {
        const op_vtable *op = op_lookup(t);
        assert_non_null(op);
        assert_string_equal(op->name, names[t]);
        assert_non_null(op->shape);
        assert_non_null(op->flops);
        assert_non_null(op->scratch);
        assert_non_null(op->run);
        assert_non_null(op->run_reference);
    }
    assert_null(op_lookup(0));
    assert_null(op_lookup(-1));
    assert_null(op_lookup(LAYER_TYPE_MAX + 1));
    assert_string_equal(act_name(YOLO_ACT_SILU), "SiLU");
    assert_string_equal(act_name(YOLO_ACT_LEAKY_RELU), "LeakyReLU");
    assert_string_equal(act_name(YOLO_ACT_NONE), "Identity");
    model_layer l = make_layer(LAYER_ACT, YOLO_ACT_SILU, 0, 0, 0, 0);
    assert_string_equal(layer_type_name(&l), "SiLU");
    l.type = LAYER_MP;
    assert_string_equal(layer_type_name(&l), "MP");
}

/* ---- convolution ---------------------------------------------------------------- */

typedef struct {
    int c_in, h, w, c_out, k, s, p;
    yolo_activation act;
    int bias;
} conv_case;

static const conv_case conv_cases[] = {
    {23, 27, 37, 19, 1, 1, 0, YOLO_ACT_SILU, 1}, /* pointwise: no im2col */
    {23, 27, 37, 19, 3, 1, 1, YOLO_ACT_LEAKY_RELU, 1},
    {23, 27, 37, 19, 3, 2, 1, YOLO_ACT_SILU, 1},
    {23, 27, 37, 19, 5, 1, 2, YOLO_ACT_NONE, 0},
    {23, 27, 37, 19, 5, 2, 0, YOLO_ACT_SILU, 1},
    {23, 27, 37, 19, 3, 2, 2, YOLO_ACT_SILU, 0},
    {23, 27, 37, 19, 3, 1, 0, YOLO_ACT_LEAKY_RELU, 1},
    {7, 27, 37, 5, 1, 2, 0, YOLO_ACT_NONE, 1}, /* 1x1 but strided: im2col */
    {7, 27, 37, 5, 1, 1, 1, YOLO_ACT_NONE, 1}, /* 1x1 padded: im2col */
    {3, 5, 4, 4, 5, 3, 2, YOLO_ACT_SILU, 1},   /* kernel larger than the image */
    /* B would be 4608 x 1200 floats, over the 2^22-float band: im2col and
     * GEMM in bands of 3 output rows, then 1 */
    {512, 4, 300, 3, 3, 1, 1, YOLO_ACT_SILU, 1},
    {512, 7, 600, 2, 3, 2, 1, YOLO_ACT_LEAKY_RELU, 1}, /* the same, strided */
};

/* The layer of one case with its tensors. */
typedef struct {
    model_tensor t[2];
    model_layer l;
    float *w, *b, *x;
    yolo_shape in;
} conv_setup;

static void conv_setup_make(conv_setup *cs, const conv_case *c, int integer, uint64_t seed)
{
    size_t nw = (size_t)c->c_out * c->c_in * c->k * c->k;
    cs->in = shp(2, c->c_in, c->h, c->w);
    cs->w = integer ? int_floats(nw, seed) : rand_floats(nw, seed);
    cs->b =
        integer ? int_floats((size_t)c->c_out, seed + 1) : rand_floats((size_t)c->c_out, seed + 1);
    cs->x = integer ? int_floats(shape_elems(cs->in), seed + 2)
                    : rand_floats(shape_elems(cs->in), seed + 2);
    cs->l = make_layer(LAYER_CONV, c->act, c->c_out, c->k, c->s, c->p);
    set_tensor(&cs->t[0], "w", cs->w, 4, c->c_out, c->c_in, c->k, c->k);
    set_tensor(&cs->t[1], "b", cs->b, 1, c->c_out, 0, 0, 0);
    cs->l.tensors[0] = &cs->t[0];
    cs->l.tensors[1] = c->bias ? &cs->t[1] : NULL;
}

static void conv_setup_free(conv_setup *cs)
{
    free(cs->w);
    free(cs->b);
    free(cs->x);
}

static float *abs_copy(const float *x, size_t n)
{
    float *y = alloc_floats(n);
    for (size_t i = 0; i < n; i++)
        y[i] = fabsf(x[i]);
    return y;
}

/*
 * Tolerance, per output element: the sum of K = Cin*k*k products plus the
 * bias, added in float in any order (sgemm blocks and vectorises it), is
 * within (K + 1)*u*S of the exact sum, where S is the sum of the absolute
 * values of the terms and u = 2^-24 (the standard worst-case bound for
 * recursive summation; blocked summation only lowers it). The reference sums
 * in double and rounds once (u*|ref|). The activations are 1.1-Lipschitz
 * (SiLU's slope peaks at 1.0998) and each evaluation adds a few ulps (expf,
 * the add and the division): 8u*|ref|. A wrong index, a missing tap or a
 * flipped kernel moves an element by about S/K or more, 20x or more above
 * this bound for every case here.
 */
static void test_conv_random_vs_reference(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++) {
        const conv_case *c = &conv_cases[ci];
        conv_setup cs;
        conv_setup_make(&cs, c, 0, 100 + ci);
        const float *in[1] = {cs.x};
        float *fast, *ref;
        yolo_shape os, os2;
        assert_int_equal(run_layer(NULL, &cs.l, 1, in, &cs.in, 0, &fast, &os), YOLO_OK);
        assert_int_equal(run_layer(NULL, &cs.l, 1, in, &cs.in, 1, &ref, &os2), YOLO_OK);
        assert_memory_equal(&os, &os2, sizeof os);
        assert_int_equal(os.h, (c->h + 2 * c->p - c->k) / c->s + 1);
        assert_int_equal(os.w, (c->w + 2 * c->p - c->k) / c->s + 1);

        /* S per output: the same convolution of |x| with |w|, plus |b|. */
        size_t nw = (size_t)c->c_out * c->c_in * c->k * c->k;
        float *aw = abs_copy(cs.w, nw), *ab = abs_copy(cs.b, (size_t)c->c_out);
        float *ax = abs_copy(cs.x, shape_elems(cs.in));
        conv_geom g = {c->c_in, c->h, c->w, c->c_out, c->k, c->s, c->p, os.h, os.w};
        size_t in_item = shape_elems(cs.in) / 2, out_item = shape_elems(os) / 2;
        float *sums = alloc_floats(shape_elems(os));
        for (int b = 0; b < 2; b++)
            conv2d_naive(&g, ax + b * in_item, aw, c->bias ? ab : NULL, sums + b * out_item);
        const double k_terms = (double)c->c_in * c->k * c->k;
        double worst = 0;
        for (size_t i = 0; i < shape_elems(os); i++) {
            double tol = 1.1 * (k_terms + 1) * U32 * sums[i] + 8 * U32 * fabs(ref[i]) + 1e-30;
            double err = fabs((double)fast[i] - (double)ref[i]);
            if (!(err <= tol)) {
                print_error("case %zu element %zu: fast %.9g ref %.9g tol %.3g\n", ci, i,
                            (double)fast[i], (double)ref[i], tol);
                fail();
            }
            worst = err / tol > worst ? err / tol : worst;
        }
        assert_true(worst < 1.0);
        free(aw), free(ab), free(ax), free(sums), free(fast), free(ref);
        conv_setup_free(&cs);
    }
}

/* Integer data: every partial sum is exact, so the two paths must agree bit
 * for bit, in every case (the activation is then the same float function of
 * the same value). */
static void test_conv_exact_vs_reference(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < sizeof conv_cases / sizeof conv_cases[0]; ci++) {
        conv_setup cs;
        conv_setup_make(&cs, &conv_cases[ci], 1, 200 + ci);
        const float *in[1] = {cs.x};
        yolo_shape os;
        free(run_both_exact(NULL, &cs.l, 1, in, &cs.in, &os));
        cs.l.type = LAYER_CONV2D; /* the same kernels under another name */
        free(run_both_exact(NULL, &cs.l, 1, in, &cs.in, &os));
        conv_setup_free(&cs);
    }
}

/* The core entry points Detect uses, with and without bias. */
static void test_conv_core_gemm_vs_naive(void **state)
{
    (void)state;
    const conv_geom geoms[] = {{9, 11, 13, 6, 1, 1, 0, 11, 13}, {9, 11, 13, 6, 3, 2, 1, 6, 7}};
    for (int gi = 0; gi < 2; gi++) {
        const conv_geom *g = &geoms[gi];
        size_t nx = (size_t)g->c_in * g->h * g->w, nw = (size_t)g->c_out * g->c_in * g->k * g->k;
        size_t ny = (size_t)g->c_out * g->oh * g->ow;
        float *x = int_floats(nx, 1), *w = int_floats(nw, 2), *b = int_floats((size_t)g->c_out, 3);
        float *scratch = alloc_floats(conv2d_scratch_floats(g));
        assert_int_equal(conv2d_scratch_floats(g),
                         gi == 0 ? 0 : (size_t)g->c_in * g->k * g->k * g->oh * g->ow);
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            float *y1 = alloc_floats(ny), *y2 = alloc_floats(ny);
            conv2d_gemm(g, x, w, with_bias ? b : NULL, y1, scratch);
            conv2d_naive(g, x, w, with_bias ? b : NULL, y2);
            expect_values(y1, y2, ny, 0.0);
            free(y1), free(y2);
        }
        free(x), free(w), free(b), free(scratch);
    }
}

/*
 * By hand: input 4x4 ramp in[y][x] = 4y + x, one channel.
 * All-ones 3x3 kernel, pad 1: each output is the sum of the in-image 3x3
 * neighbourhood, e.g. (0,0) = 0+1+4+5 = 10, (1,1) = 0+1+2+4+5+6+8+9+10 = 45.
 * With stride 2 the outputs are those at (0,0), (0,2), (2,0), (2,2).
 * A kernel whose only non-zero tap is the top-left one gives
 * out[y][x] = in[y-1][x-1] (0 outside): this catches a flipped kernel
 * (true convolution instead of cross-correlation) and shifted padding.
 */
static void test_conv_by_hand(void **state)
{
    (void)state;
    float x[16], ones[9], corner[9] = {1, 0, 0, 0, 0, 0, 0, 0, 0}, bias = 0.5f;
    for (int i = 0; i < 16; i++)
        x[i] = (float)i;
    for (int i = 0; i < 9; i++)
        ones[i] = 1.0f;
    static const float sums[16] = {
        10, 18, 24, 18, /* row 0 */
        27, 45, 54, 39, /* row 1 */
        51, 81, 90, 63, /* row 2 */
        42, 66, 72, 50, /* row 3 */
    };
    const float sums_s2[4] = {10, 24, 51, 90};
    float shifted[16];
    for (int y = 0; y < 4; y++)
        for (int xx = 0; xx < 4; xx++)
            shifted[y * 4 + xx] = (y > 0 && xx > 0) ? x[(y - 1) * 4 + xx - 1] : 0.0f;

    model_tensor tw, tb;
    set_tensor(&tb, "b", &bias, 1, 1, 0, 0, 0);
    const float *in[1] = {x};
    const yolo_shape is = shp(1, 1, 4, 4);
    for (int reference = 0; reference < 2; reference++) {
        float *out;
        yolo_shape os;
        model_layer l = make_layer(LAYER_CONV, YOLO_ACT_NONE, 1, 3, 1, 1);
        l.tensors[0] = &tw;
        set_tensor(&tw, "w", ones, 4, 1, 1, 3, 3);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.h * 10 + os.w, 44);
        expect_values(out, sums, 16, 0.0);
        free(out);

        l.stride = 2;
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.h * 10 + os.w, 22);
        expect_values(out, sums_s2, 4, 0.0);
        free(out);

        l.stride = 1;
        l.tensors[1] = &tb; /* + 0.5 everywhere */
        set_tensor(&tw, "w", corner, 4, 1, 1, 3, 3);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        for (int i = 0; i < 16; i++)
            assert_true(out[i] == shifted[i] + 0.5f);
        free(out);
    }
}

static void test_conv_shape_rejects(void **state)
{
    (void)state;
    float w[16 * 3 * 9] = {0}, b[16] = {0};
    model_tensor tw, tb;
    set_tensor(&tw, "model.0.conv.weight", w, 4, 16, 3, 3, 3);
    set_tensor(&tb, "model.0.conv.bias", b, 1, 16, 0, 0, 0);
    model_layer l = make_layer(LAYER_CONV, YOLO_ACT_SILU, 16, 3, 2, 1);
    l.tensors[0] = &tw;
    l.tensors[1] = &tb;
    yolo_shape in = shp(1, 3, 32, 32), out;
    assert_int_equal(op_conv.shape(NULL, &l, &in, 1, &out), YOLO_OK);
    assert_int_equal(out.c * 1000 + out.h * 10 + out.w / 16, 16000 + 160 + 1);

    yolo_shape in4 = shp(1, 4, 32, 32);
    expect_format_error(NULL, &l, &in4, 1, "[16,4,3,3]"); /* channels */
    expect_format_error(NULL, &l, &in, 2, "input");       /* input count */
    model_layer bad = l;
    bad.c_out = 8;
    expect_format_error(NULL, &bad, &in, 1, "expected [8,3,3,3]");
    bad = l;
    bad.kernel = 5;
    expect_format_error(NULL, &bad, &in, 1, "expected [16,3,5,5]");
    bad = l;
    bad.tensors[0] = NULL;
    expect_format_error(NULL, &bad, &in, 1, "missing");
    bad = l;
    set_tensor(&tb, "model.0.conv.bias", b, 1, 15, 0, 0, 0);
    expect_format_error(NULL, &bad, &in, 1, "bias");
    set_tensor(&tb, "model.0.conv.bias", b, 1, 16, 0, 0, 0);
    bad = l;
    bad.groups = 2;
    expect_format_error(NULL, &bad, &in, 1, "groups");
    bad = l;
    bad.stride = 0;
    expect_format_error(NULL, &bad, &in, 1, "stride 0");
    bad = l;
    bad.pad = -1;
    expect_format_error(NULL, &bad, &in, 1, "pad -1");
    bad = l;
    bad.act = (yolo_activation)9;
    expect_format_error(NULL, &bad, &in, 1, "activation");
    bad = l;
    bad.pad = 0;
    yolo_shape tiny = shp(1, 3, 2, 32);
    expect_format_error(NULL, &bad, &tiny, 1, "smaller than kernel");
    yolo_shape empty = shp(1, 3, 0, 32);
    expect_format_error(NULL, &l, &empty, 1, "shape");
    set_tensor(&tw, "model.0.conv.weight", w, 2, 16, 27, 0, 0);
    expect_format_error(NULL, &l, &in, 1, "has shape [16,27]");
}

/* 2*Cin*k*k*Cout*OH*OW*N. */
static void test_conv_flops(void **state)
{
    (void)state;
    float w[16 * 3 * 9] = {0};
    model_tensor tw;
    set_tensor(&tw, "w", w, 4, 16, 3, 3, 3);
    model_layer l = make_layer(LAYER_CONV, YOLO_ACT_SILU, 16, 3, 2, 1);
    l.tensors[0] = &tw;
    yolo_shape in = shp(2, 3, 32, 24), out;
    assert_int_equal(op_conv.shape(NULL, &l, &in, 1, &out), YOLO_OK);
    assert_int_equal(out.h * 100 + out.w, 16 * 100 + 12);
    assert_true(op_conv.flops(&l, &in, 1, out) == 2ull * 3 * 3 * 3 * 16 * 16 * 12 * 2);
    /* im2col B: Cin*k*k rows of OH*OW; none for a pointwise conv */
    assert_true(op_conv.scratch(&l, &in, 1, out) == (size_t)3 * 9 * 16 * 12);
    set_tensor(&tw, "w", w, 4, 16, 3, 1, 1);
    l.kernel = 1, l.stride = 1, l.pad = 0;
    assert_int_equal(op_conv.shape(NULL, &l, &in, 1, &out), YOLO_OK);
    assert_true(op_conv.scratch(&l, &in, 1, out) == 0);
    l.stride = 2; /* a strided 1x1 still gathers its input */
    assert_int_equal(op_conv.shape(NULL, &l, &in, 1, &out), YOLO_OK);
    assert_true(op_conv.scratch(&l, &in, 1, out) == (size_t)3 * 16 * 12);

    /* Large layers get im2col in bands of output rows, at most 2^22 floats
     * (yolov7's 64->64 3x3 at 320x320: 22 rows of 576 x 320), but always at
     * least one full row. */
    const conv_geom big = {64, 320, 320, 64, 3, 1, 1, 320, 320};
    assert_true(conv2d_scratch_floats(&big) == (size_t)576 * 320 * 22);
    const conv_geom banded = {512, 4, 300, 3, 3, 1, 1, 4, 300};
    assert_true(conv2d_scratch_floats(&banded) == (size_t)4608 * 300 * 3);
    const conv_geom wide = {4096, 4, 2000, 3, 3, 1, 1, 4, 2000};
    assert_true(conv2d_scratch_floats(&wide) == (size_t)4096 * 9 * 2000);
}

/* ---- batch norm and activations ----------------------------------------------------------- */

/*
 * BatchNorm fast path folds to y = x*scale + shift; the reference computes
 * (x - mean)/sqrt(var + eps)*gamma + beta. Each is a handful of float ops on
 * the terms x*scale, mean*scale and beta, so they agree within a few ulps of
 * the largest term: 8u*(|x|+|mean|)*|scale| + 8u*|beta|, times 1.1 for the
 * activation, plus 8u*|ref| for the activation's own rounding.
 */
static void test_batchnorm_vs_reference(void **state)
{
    (void)state;
    const int c = 19;
    yolo_shape is = shp(2, c, 27, 37);
    float *x = rand_floats(shape_elems(is), 11), *p[4];
    model_tensor t[4];
    model_layer l = make_layer(LAYER_BATCHNORM, YOLO_ACT_SILU, c, 0, 0, 0);
    for (int i = 0; i < 4; i++) {
        p[i] = rand_floats((size_t)c, 20 + (uint64_t)i);
        set_tensor(&t[i], "bn", p[i], 1, c, 0, 0, 0);
        l.tensors[i] = &t[i];
    }
    for (int i = 0; i < c; i++)
        p[3][i] = p[3][i] * 0.5f + 0.6f; /* variance > 0 */
    const float *in[1] = {x};
    for (int act = 0; act < 3; act++) {
        l.act = (yolo_activation)act;
        float *fast, *ref;
        yolo_shape os;
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, 0, &fast, &os), YOLO_OK);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, 1, &ref, &os), YOLO_OK);
        size_t hw = 27 * 37;
        for (size_t i = 0; i < shape_elems(os); i++) {
            int ch = (int)(i / hw % (size_t)c);
            double scale = fabs(p[0][ch] / sqrt(p[3][ch] + 0.001));
            double tol = 1.1 * 8 * U32 * ((fabs(x[i]) + fabs(p[2][ch])) * scale + fabs(p[1][ch])) +
                         8 * U32 * fabs(ref[i]) + 1e-30;
            if (!(fabs((double)fast[i] - ref[i]) <= tol)) {
                print_error("act %d element %zu: %.9g vs %.9g\n", act, i, (double)fast[i],
                            (double)ref[i]);
                fail();
            }
        }
        /* and against the definition in double, for the identity case */
        if (act == 0)
            for (size_t i = 0; i < shape_elems(os); i += 97) {
                int ch = (int)(i / hw % (size_t)c);
                double want =
                    (x[i] - p[2][ch]) / sqrt((double)p[3][ch] + (double)0.001f) * p[0][ch] +
                    p[1][ch];
                assert_true(fabs(ref[i] - want) <= 1e-5 * (1 + fabs(want)));
            }
        free(fast), free(ref);
    }
    yolo_shape wrong = shp(1, c + 1, 4, 4);
    expect_format_error(NULL, &l, &wrong, 1, "expected [20]");
    l.eps = -1.0f;
    expect_format_error(NULL, &l, &is, 1, "eps");
    free(x);
    for (int i = 0; i < 4; i++)
        free(p[i]);
}

/* Values in double from the definitions: SiLU(x) = x/(1+e^-x),
 * LeakyReLU(x) = x if x > 0 else alpha*x. Float evaluation is within a few
 * ulps: 1e-6 relative plus a denormal-sized absolute slack. */
static void test_activation_values(void **state)
{
    (void)state;
    static const float pts[] = {-100.0f, -20.0f, -3.0f, -1.0f, -0.25f, 0.0f,
                                0.25f,   1.0f,   2.5f,  10.0f, 100.0f};
    const size_t n = sizeof pts / sizeof pts[0];
    float want_silu[sizeof pts / sizeof pts[0]], want_leaky[sizeof pts / sizeof pts[0]];
    for (size_t i = 0; i < n; i++) {
        double v = pts[i];
        want_silu[i] = (float)(v / (1.0 + exp(-v)));
        want_leaky[i] = (float)(v > 0 ? v : 0.2 * v);
    }
    /* spot checks worked out by hand */
    assert_true(fabs(want_silu[7] - 0.7310585786) < 1e-7); /* 1/(1+1/e) */
    assert_true(fabs(want_silu[3] + 0.2689414214) < 1e-7); /* -1/(1+e) */
    assert_true(want_leaky[2] == -0.6f && want_leaky[8] == 2.5f);

    float buf[sizeof pts / sizeof pts[0]];
    memcpy(buf, pts, sizeof buf);
    apply_activation(buf, n, YOLO_ACT_SILU, 0.0f);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(buf[i] - want_silu[i]) <= 1e-6 * fabs(want_silu[i]) + 1e-37);
    memcpy(buf, pts, sizeof buf);
    apply_activation(buf, n, YOLO_ACT_LEAKY_RELU, 0.2f);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(buf[i] - want_leaky[i]) <= 1e-6 * fabs(want_leaky[i]));
    memcpy(buf, pts, sizeof buf);
    apply_activation(buf, n, YOLO_ACT_NONE, 0.2f);
    assert_memory_equal(buf, pts, sizeof buf);

    /* the activation layer, both paths */
    model_layer l = make_layer(LAYER_ACT, YOLO_ACT_SILU, 0, 0, 0, 0);
    const float *in[1] = {pts};
    yolo_shape is = shp(1, 1, 1, (int)n), os;
    float *out = run_both_exact(NULL, &l, 1, in, &is, &os);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(out[i] - want_silu[i]) <= 1e-6 * fabs(want_silu[i]) + 1e-37);
    free(out);
    l.act = YOLO_ACT_LEAKY_RELU;
    l.alpha = 0.2f;
    out = run_both_exact(NULL, &l, 1, in, &is, &os);
    expect_values(out, want_leaky, n, 1e-6);
    free(out);
    l.alpha = NAN;
    expect_format_error(NULL, &l, &is, 1, "slope");
}

/* ---- pooling ----------------------------------------------------------------------------- */

static void test_pool_vs_reference(void **state)
{
    (void)state;
    const struct {
        int type, k, s, p;
    } cases[] = {
        {LAYER_MAXPOOL, 3, 2, 1}, {LAYER_MAXPOOL, 2, 2, 0}, {LAYER_MAXPOOL, 5, 1, 2},
        {LAYER_MAXPOOL, 3, 3, 1}, {LAYER_MAXPOOL, 4, 2, 2}, {LAYER_MAXPOOL, 1, 1, 0},
        {LAYER_MP, 2, 2, 0},      {LAYER_MP, 0, 0, 0},      {LAYER_SP, 5, 1, 2},
        {LAYER_SP, 9, 1, 4},      {LAYER_SP, 13, 0, 0},
    };
    yolo_shape is = shp(2, 3, 27, 37);
    float *x = rand_floats(shape_elems(is), 5);
    const float *in[1] = {x};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        model_layer l =
            make_layer(cases[i].type, YOLO_ACT_NONE, 3, cases[i].k, cases[i].s, cases[i].p);
        yolo_shape os;
        free(run_both_exact(NULL, &l, 1, in, &is, &os));
        int k = cases[i].type == LAYER_MP ? 2 : cases[i].k;
        int s = cases[i].type == LAYER_MP ? 2 : cases[i].type == LAYER_SP ? 1 : cases[i].s;
        int p = cases[i].type == LAYER_MP ? 0 : cases[i].type == LAYER_SP ? k / 2 : cases[i].p;
        assert_int_equal(os.h, (27 + 2 * p - k) / s + 1);
        assert_int_equal(os.w, (37 + 2 * p - k) / s + 1);
        assert_int_equal(os.c, 3);
        /* FLOPs: one compare per window element */
        assert_true(op_lookup(l.type)->flops(&l, &is, 1, os) ==
                    shape_elems(os) * (uint64_t)(k * k));
    }
    free(x);
}

/*
 * By hand, 4x4 input
 *    1  2  3  4
 *    8  7  6  5
 *    9 12 10 11
 *   16 13 15 14
 * MP (2x2 blocks): 8 6 / 16 15.
 * All values negative (x - 100) with SP k=3: padding must be -inf, not 0,
 * so the corner output (0,0) is max(1,2,8,7) - 100 = -92.
 * MaxPool k=3 s=2 p=1 on the same: windows rows/cols {0,1},{1,2,3}:
 * (0,0)=max(1,2,8,7)=8, (0,1)=max(2,3,4,7,6,5)=7, (1,0)=max(8,7,9,12,16,13)=16,
 * (1,1)=max of rows 1-3, cols 1-3 = 15.
 */
static void test_pool_by_hand(void **state)
{
    (void)state;
    const float x[16] = {1, 2, 3, 4, 8, 7, 6, 5, 9, 12, 10, 11, 16, 13, 15, 14};
    float neg[16];
    for (int i = 0; i < 16; i++)
        neg[i] = x[i] - 100.0f;
    const float mp[4] = {8, 6, 16, 15};
    const float sp_neg[16] = {-92, -92, -93, -94, -88, -88, -88, -89,
                              -84, -84, -85, -85, -84, -84, -85, -85};
    const float mx[4] = {8, 7, 16, 15};
    const yolo_shape is = shp(1, 1, 4, 4);
    const float *in[1] = {x}, *in_neg[1] = {neg};
    yolo_shape os;
    for (int reference = 0; reference < 2; reference++) {
        float *out;
        model_layer l = make_layer(LAYER_MP, YOLO_ACT_NONE, 1, 2, 2, 0);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        expect_values(out, mp, 4, 0.0);
        free(out);
        l = make_layer(LAYER_SP, YOLO_ACT_NONE, 1, 3, 1, 1);
        assert_int_equal(run_layer(NULL, &l, 1, in_neg, &is, reference, &out, &os), YOLO_OK);
        expect_values(out, sp_neg, 16, 0.0);
        free(out);
        l = make_layer(LAYER_MAXPOOL, YOLO_ACT_NONE, 1, 3, 2, 1);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        expect_values(out, mx, 4, 0.0);
        free(out);
    }
}

static void test_pool_shape_rejects(void **state)
{
    (void)state;
    yolo_shape in = shp(1, 8, 16, 16);
    model_layer l = make_layer(LAYER_MAXPOOL, YOLO_ACT_NONE, 8, 3, 2, 2); /* pad > k/2 */
    expect_format_error(NULL, &l, &in, 1, "pad 2");
    l.pad = 1;
    l.stride = 0;
    expect_format_error(NULL, &l, &in, 1, "stride 0");
    l = make_layer(LAYER_MP, YOLO_ACT_NONE, 8, 3, 2, 0);
    expect_format_error(NULL, &l, &in, 1, "kernel 3");
    l = make_layer(LAYER_SP, YOLO_ACT_NONE, 8, 5, 2, 0);
    expect_format_error(NULL, &l, &in, 1, "stride 2");
    l = make_layer(LAYER_SP, YOLO_ACT_NONE, 8, 0, 1, 0);
    expect_format_error(NULL, &l, &in, 1, "kernel 0");
    l = make_layer(LAYER_MP, YOLO_ACT_NONE, 8, 2, 2, 0);
    yolo_shape one = shp(1, 8, 1, 16);
    expect_format_error(NULL, &l, &one, 1, "smaller than kernel");
}

/* ---- tensor movement ---------------------------------------------------------------------- */

static void test_tensor_ops_vs_reference(void **state)
{
    (void)state;
    const yolo_shape sh[3] = {shp(2, 2, 27, 37), shp(2, 5, 27, 37), shp(2, 1, 27, 37)};
    float *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = rand_floats(shape_elems(sh[i]), 40 + (uint64_t)i);
    const float *in[3] = {x[0], x[1], x[2]};
    yolo_shape os;

    model_layer l = make_layer(LAYER_CONCAT, YOLO_ACT_NONE, 8, 0, 0, 0);
    l.n_inputs = 3;
    free(run_both_exact(NULL, &l, 3, in, sh, &os));
    assert_int_equal(os.c, 8);

    for (int f = 1; f <= 3; f++) {
        l = make_layer(LAYER_UPSAMPLE, YOLO_ACT_NONE, 5, f, 0, 0);
        free(run_both_exact(NULL, &l, 1, in + 1, sh + 1, &os));
        assert_int_equal(os.h * 1000 + os.w, 27 * f * 1000 + 37 * f);
    }

    const yolo_shape same[3] = {sh[1], sh[1], sh[1]};
    float *y[3];
    for (int i = 0; i < 3; i++)
        y[i] = rand_floats(shape_elems(sh[1]), 50 + (uint64_t)i);
    const float *yin[3] = {y[0], y[1], y[2]};
    l = make_layer(LAYER_SHORTCUT, YOLO_ACT_NONE, 5, 0, 0, 0);
    free(run_both_exact(NULL, &l, 2, yin, same, &os));
    float *sum = run_both_exact(NULL, &l, 3, yin, same, &os);
    for (size_t i = 0; i < shape_elems(os); i++)
        assert_true(sum[i] == (y[0][i] + y[1][i]) + y[2][i]);
    assert_true(op_shortcut.flops(&l, same, 3, os) == 2 * shape_elems(os));
    free(sum);
    l = make_layer(LAYER_ADD, YOLO_ACT_SILU, 5, 0, 0, 0);
    sum = run_both_exact(NULL, &l, 3, yin, same, &os);
    for (size_t i = 0; i < shape_elems(os); i++) {
        float s = (y[0][i] + y[1][i]) + y[2][i];
        assert_true(fabsf(sum[i] - s / (1.0f + expf(-s))) <= 1e-6f);
    }
    assert_true(op_add.flops(&l, same, 3, os) == 3 * shape_elems(os));
    free(sum);

    const yolo_shape even = shp(2, 3, 26, 36);
    float *e = rand_floats(shape_elems(even), 60);
    const float *ein[1] = {e};
    l = make_layer(LAYER_REORG, YOLO_ACT_NONE, 12, 0, 0, 0);
    free(run_both_exact(NULL, &l, 1, ein, &even, &os));
    assert_int_equal(os.c * 10000 + os.h * 100 + os.w, 12 * 10000 + 13 * 100 + 18);
    assert_true(op_reorg.flops(&l, &even, 1, os) == 0);
    free(e);
    for (int i = 0; i < 3; i++)
        free(x[i]), free(y[i]);
}

/*
 * ReOrg by hand: C = 2 channels of 4x4, in[c][y][x] = 100c + 10y + x.
 * Block b takes pixel (2y+dy, 2x+dx) with (dy,dx) = (0,0),(1,0),(0,1),(1,1);
 * out channel b*C + c. So out channel 2 (b=1, c=0) at (0,0) is in[0][1][0] =
 * 10, out channel 5 (b=2, c=1) at (1,1) is in[1][2][3] = 123.
 */
static void test_reorg_by_hand(void **state)
{
    (void)state;
    float x[32];
    for (int c = 0; c < 2; c++)
        for (int y = 0; y < 4; y++)
            for (int xx = 0; xx < 4; xx++)
                x[c * 16 + y * 4 + xx] = (float)(100 * c + 10 * y + xx);
    const float want[32] = {
        0,  2,  20, 22, /* b0 c0 */ 100, 102, 120, 122, /* b0 c1 */
        10, 12, 30, 32, /* b1 c0 */ 110, 112, 130, 132, /* b1 c1 */
        1,  3,  21, 23, /* b2 c0 */ 101, 103, 121, 123, /* b2 c1 */
        11, 13, 31, 33, /* b3 c0 */ 111, 113, 131, 133, /* b3 c1 */
    };
    const float *in[1] = {x};
    const yolo_shape is = shp(1, 2, 4, 4);
    model_layer l = make_layer(LAYER_REORG, YOLO_ACT_NONE, 8, 0, 0, 0);
    for (int reference = 0; reference < 2; reference++) {
        float *out;
        yolo_shape os;
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.c * 100 + os.h * 10 + os.w, 822);
        expect_values(out, want, 32, 0.0);
        free(out);
    }
    yolo_shape odd = shp(1, 2, 5, 4);
    expect_format_error(NULL, &l, &odd, 1, "even");
}

/* Upsample x2 of [[1,2,3],[4,5,6]] and Concat of a 1-channel and a
 * 2-channel tensor: channel order is input order. */
static void test_upsample_concat_by_hand(void **state)
{
    (void)state;
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const float want[24] = {1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6};
    /* batch 2 of concat: item 0 = a0 b0, item 1 = a1 b1 */
    const float a2[8] = {1, 2, 3, 4, -1, -2, -3, -4};
    const float b2[16] = {10, 20, 30, 40, 50, 60, 70, 80, -10, -20, -30, -40, -50, -60, -70, -80};
    const float want_cat[24] = {10,  20,  30,  40,  50,  60,  70,  80,  1,  2,  3,  4,
                                -10, -20, -30, -40, -50, -60, -70, -80, -1, -2, -3, -4};
    for (int reference = 0; reference < 2; reference++) {
        float *out;
        yolo_shape os;
        const float *in[1] = {x};
        const yolo_shape is = shp(1, 1, 2, 3);
        model_layer l = make_layer(LAYER_UPSAMPLE, YOLO_ACT_NONE, 1, 2, 0, 0);
        assert_int_equal(run_layer(NULL, &l, 1, in, &is, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.h * 10 + os.w, 46);
        expect_values(out, want, 24, 0.0);
        free(out);

        const float *cin[2] = {b2, a2}; /* [b, a]: b's channels first */
        const yolo_shape cs[2] = {shp(2, 2, 2, 2), shp(2, 1, 2, 2)};
        l = make_layer(LAYER_CONCAT, YOLO_ACT_NONE, 3, 0, 0, 0);
        assert_int_equal(run_layer(NULL, &l, 2, cin, cs, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.n * 1000 + os.c * 100 + os.h * 10 + os.w, 2322);
        expect_values(out, want_cat, 24, 0.0);
        free(out);
    }
}

static void test_tensor_shape_rejects(void **state)
{
    (void)state;
    const yolo_shape a[2] = {shp(1, 4, 8, 8), shp(1, 4, 8, 6)};
    model_layer l = make_layer(LAYER_CONCAT, YOLO_ACT_NONE, 8, 0, 0, 0);
    expect_format_error(NULL, &l, a, 2, "8x6");
    const yolo_shape nb[2] = {shp(1, 4, 8, 8), shp(2, 4, 8, 8)};
    expect_format_error(NULL, &l, nb, 2, "batch");
    expect_format_error(NULL, &l, a, 0, "input");
    l = make_layer(LAYER_SHORTCUT, YOLO_ACT_NONE, 4, 0, 0, 0);
    expect_format_error(NULL, &l, a, 2, "expected [4,8,8]");
    expect_format_error(NULL, &l, a, 1, "2 to 16 inputs");
    l = make_layer(LAYER_ADD, YOLO_ACT_NONE, 4, 0, 0, 0);
    const yolo_shape c[2] = {shp(1, 4, 8, 8), shp(1, 3, 8, 8)};
    expect_format_error(NULL, &l, c, 2, "expected [4,8,8]");
    l = make_layer(LAYER_UPSAMPLE, YOLO_ACT_NONE, 4, 0, 0, 0);
    expect_format_error(NULL, &l, a, 1, "scale factor 0");
}

/* ---- Detect --------------------------------------------------------------------------------- */

/* One Detect layer with its model metadata. */
typedef struct {
    yolo_model m;
    model_layer l;
    model_tensor t[8];
    float *w[4], *b[4];
} detect_setup;

static void detect_setup_make(detect_setup *d, int levels, int na, int nc, const int *strides,
                              const int *c_in, int integer)
{
    memset(d, 0, sizeof *d);
    d->m.info.num_levels = levels;
    d->m.info.num_anchors = na;
    d->m.info.num_classes = nc;
    d->m.info.num_outputs = nc + 5;
    for (int i = 0; i < levels; i++) {
        d->m.info.strides[i] = strides[i];
        for (int a = 0; a < na; a++) {
            d->m.info.anchors[i][a][0] = (float)(10 + 7 * a + 30 * i);
            d->m.info.anchors[i][a][1] = (float)(13 + 11 * a + 40 * i);
        }
    }
    d->l = make_layer(LAYER_DETECT, YOLO_ACT_NONE, 0, 0, 0, 0);
    d->l.n_inputs = levels;
    const int rows = na * (nc + 5);
    for (int i = 0; i < levels; i++) {
        size_t nw = (size_t)rows * c_in[i];
        /* eighths in [-1, 1]: products are 64ths, every sum exact */
        d->w[i] = integer ? int_floats(nw, 70 + (uint64_t)i) : rand_floats(nw, 70 + (uint64_t)i);
        d->b[i] = integer ? int_floats((size_t)rows, 80 + (uint64_t)i)
                          : rand_floats((size_t)rows, 80 + (uint64_t)i);
        if (integer) {
            for (size_t k = 0; k < nw; k++)
                d->w[i][k] /= 4.0f;
            for (int k = 0; k < rows; k++)
                d->b[i][k] /= 4.0f;
        }
        set_tensor(&d->t[2 * i], "m.weight", d->w[i], 4, rows, c_in[i], 1, 1);
        set_tensor(&d->t[2 * i + 1], "m.bias", d->b[i], 1, rows, 0, 0, 0);
        d->l.tensors[2 * i] = &d->t[2 * i];
        d->l.tensors[2 * i + 1] = &d->t[2 * i + 1];
    }
}

static void detect_setup_free(detect_setup *d)
{
    for (int i = 0; i < d->m.info.num_levels; i++)
        free(d->w[i]), free(d->b[i]);
}

/* Two levels (strides 8, 16) of a 48x32 image, 3 anchors, 2 classes, batch 2.
 * Inputs and weights are multiples of 1/4 (products 1/16, sums of <= 10
 * such terms are exact in float), so the 1x1 convs are exact in both paths
 * and the decode, the same float formulas, must agree bit for bit. */
static void test_detect_vs_reference(void **state)
{
    (void)state;
    const int strides[2] = {8, 16}, c_in[2] = {5, 9};
    detect_setup d;
    detect_setup_make(&d, 2, 3, 2, strides, c_in, 1);
    const yolo_shape is[2] = {shp(2, 5, 4, 6), shp(2, 9, 2, 3)};
    float *x[2];
    const float *in[2];
    for (int i = 0; i < 2; i++) {
        x[i] = int_floats(shape_elems(is[i]), 90 + (uint64_t)i);
        for (size_t k = 0; k < shape_elems(is[i]); k++)
            x[i][k] /= 4.0f;
        in[i] = x[i];
    }
    yolo_shape os;
    float *out = run_both_exact(&d.m, &d.l, 2, in, is, &os);
    const int rows = 3 * (24 + 6);
    assert_int_equal(os.n, 2);
    assert_int_equal(os.c, 1);
    assert_int_equal(os.h, rows);
    assert_int_equal(os.w, 7);
    /* every value a sigmoid or a decoded box: finite, scores in (0, 1) */
    for (size_t i = 0; i < shape_elems(os); i++) {
        assert_true(isfinite(out[i]));
        if (i % 7 >= 4)
            assert_true(out[i] > 0.0f && out[i] < 1.0f);
    }
    /* FLOPs: convs 2*c_in*na*no per cell, plus (no + 4) per row */
    uint64_t want = 2 * (2ull * 5 * 21 * 24 + 2ull * 9 * 21 * 6 + (uint64_t)rows * (7 + 4));
    assert_true(op_detect.flops(&d.l, is, 2, os) == want);
    free(out);

    /* random floats: the conv sums differ only by rounding */
    detect_setup r;
    detect_setup_make(&r, 2, 3, 2, strides, c_in, 0);
    float *fast, *ref;
    yolo_shape os2;
    assert_int_equal(run_layer(&r.m, &r.l, 2, in, is, 0, &fast, &os), YOLO_OK);
    assert_int_equal(run_layer(&r.m, &r.l, 2, in, is, 1, &ref, &os2), YOLO_OK);
    /* logits have |t| <= 10; float error <= 11u*10 ~ 1e-5 in t, times at most
     * d(cx)/dt = 0.5*stride = 8 or d(w)/dt = 2*anchor < 200: < 2e-3 px */
    for (size_t i = 0; i < shape_elems(os); i++)
        assert_true(fabs((double)fast[i] - ref[i]) <= 2e-3);
    free(fast), free(ref);
    detect_setup_free(&r);
    for (int i = 0; i < 2; i++)
        free(x[i]);
    detect_setup_free(&d);
}

/*
 * The decode by hand on one level: stride 8, a 2x2 grid, 2 anchors (10,13)
 * and (17,24), 1 class (no = 6). The 12 input channels are the logits
 * themselves (identity 1x1 weights) plus a bias of o/16 on channel o, and
 * t = in[a*6 + k][y][x] + bias is distinct for every (a, k, y, x), so any
 * mix-up of rows or channels shows. For row a*4 + y*2 + x, with
 * sig = 1/(1 + e^-t) computed here in double:
 *   cx = (2 sig(t0) - 0.5 + x) * 8, cy = (2 sig(t1) - 0.5 + y) * 8,
 *   w = (2 sig(t2))^2 * anchor_w, h = (2 sig(t3))^2 * anchor_h,
 *   obj = sig(t4), cls = sig(t5).
 * Float vs double: a few ulps of each term, so 1e-5 relative (the values
 * are at most about 100); a wrong row or channel is off by 0.1 or more.
 */
static void test_detect_by_hand(void **state)
{
    (void)state;
    const int strides[1] = {8}, c_in[1] = {12};
    detect_setup d;
    detect_setup_make(&d, 1, 2, 1, strides, c_in, 0);
    d.m.info.anchors[0][0][0] = 10, d.m.info.anchors[0][0][1] = 13;
    d.m.info.anchors[0][1][0] = 17, d.m.info.anchors[0][1][1] = 24;
    for (int o = 0; o < 12; o++) {
        for (int i = 0; i < 12; i++)
            d.w[0][o * 12 + i] = o == i ? 1.0f : 0.0f;
        d.b[0][o] = (float)o / 16.0f;
    }
    float x[12 * 4];
    for (int c = 0; c < 12; c++)
        for (int p = 0; p < 4; p++)
            x[c * 4 + p] = (float)(c * 4 + p) * 0.125f - 3.0f;
    const float *in[1] = {x};
    const yolo_shape is = shp(1, 12, 2, 2);
    const double anchor[2][2] = {{10, 13}, {17, 24}};
    for (int reference = 0; reference < 2; reference++) {
        float *out;
        yolo_shape os;
        assert_int_equal(run_layer(&d.m, &d.l, 1, in, &is, reference, &out, &os), YOLO_OK);
        assert_int_equal(os.h, 8);
        assert_int_equal(os.w, 6);
        for (int a = 0; a < 2; a++)
            for (int y = 0; y < 2; y++)
                for (int xx = 0; xx < 2; xx++) {
                    double sig[6];
                    for (int k = 0; k < 6; k++) {
                        int ch = a * 6 + k;
                        double t = (ch * 4 + y * 2 + xx) * 0.125 - 3.0 + ch / 16.0;
                        sig[k] = 1.0 / (1.0 + exp(-t));
                    }
                    const double want[6] = {(2 * sig[0] - 0.5 + xx) * 8,
                                            (2 * sig[1] - 0.5 + y) * 8,
                                            4 * sig[2] * sig[2] * anchor[a][0],
                                            4 * sig[3] * sig[3] * anchor[a][1],
                                            sig[4],
                                            sig[5]};
                    const float *row = out + (a * 4 + y * 2 + xx) * 6;
                    for (int k = 0; k < 6; k++)
                        if (!(fabs(row[k] - want[k]) <= 1e-5 * (1 + fabs(want[k])))) {
                            print_error("a%d y%d x%d k%d: %.9g want %.9g\n", a, y, xx, k,
                                        (double)row[k], want[k]);
                            fail();
                        }
                }
        free(out);
    }
    detect_setup_free(&d);
}

static void test_detect_shape_rejects(void **state)
{
    (void)state;
    const int strides[2] = {8, 16}, c_in[2] = {5, 9};
    detect_setup d;
    detect_setup_make(&d, 2, 3, 2, strides, c_in, 0);
    const yolo_shape ok[2] = {shp(1, 5, 4, 6), shp(1, 9, 2, 3)};
    yolo_shape out;
    assert_int_equal(op_detect.shape(&d.m, &d.l, ok, 2, &out), YOLO_OK);
    assert_int_equal(out.h, 90);

    expect_format_error(&d.m, &d.l, ok, 1, "expected one per level");
    const yolo_shape wrong_c[2] = {shp(1, 6, 4, 6), shp(1, 9, 2, 3)};
    expect_format_error(&d.m, &d.l, wrong_c, 2, "expected [21,6,1,1]");
    const yolo_shape wrong_grid[2] = {shp(1, 5, 4, 6), shp(1, 9, 2, 4)};
    expect_format_error(&d.m, &d.l, wrong_grid, 2, "does not match");
    d.m.info.num_outputs = 8;
    expect_format_error(&d.m, &d.l, ok, 2, "classes + 5");
    d.m.info.num_outputs = 7;
    d.m.info.num_anchors = 2; /* weights still have 3*7 rows */
    expect_format_error(&d.m, &d.l, ok, 2, "expected [14,5,1,1]");
    d.m.info.num_anchors = 3;
    d.m.info.strides[1] = 0;
    expect_format_error(&d.m, &d.l, ok, 2, "stride 0");
    d.m.info.strides[1] = 16;
    d.l.act = YOLO_ACT_SILU;
    expect_format_error(&d.m, &d.l, ok, 2, "expected none");
    d.l.act = YOLO_ACT_NONE;
    d.l.tensors[3] = NULL;
    expect_format_error(&d.m, &d.l, ok, 2, "bias tensor missing");
    detect_setup_free(&d);
}

/* ---- Detect on the FAST backend: the decode's transposes, bit for bit ---------------------- */

typedef struct {
    const yolo_kernels *k;
    float *x;
} sigmoid_split;

static void sigmoid_split_range(void *arg, size_t begin, size_t end, int tid)
{
    const sigmoid_split *j = arg;
    (void)tid;
    j->k->sigmoid(j->x + begin, end - begin);
}

/* The decode as it was before the SIMD transposes: sigmoided logits
 * [na*no][ny*nx] scattered value by value into rows, then the box
 * transform row by row. */
static void decode_rows_scalar(const yolo_model_info *info, int lvl, const float *conv, int ny,
                               int nx, float *rows)
{
    const size_t no = (size_t)info->num_outputs, hw = (size_t)ny * (size_t)nx;
    const float s = (float)info->strides[lvl];
    for (int a = 0; a < info->num_anchors; a++) {
        float *block = rows + (size_t)a * hw * no;
        for (size_t k = 0; k < no; k++)
            for (size_t p = 0; p < hw; p++)
                block[p * no + k] = conv[((size_t)a * no + k) * hw + p];
        const float aw = info->anchors[lvl][a][0], ah = info->anchors[lvl][a][1];
        for (size_t p = 0; p < hw; p++) {
            float *r = block + p * no;
            r[0] = (r[0] * 2.0f - 0.5f + (float)(p % (size_t)nx)) * s;
            r[1] = (r[1] * 2.0f - 0.5f + (float)(p / (size_t)nx)) * s;
            float tw = r[2] * 2.0f, th = r[3] * 2.0f;
            r[2] = tw * tw * aw;
            r[3] = th * th * ah;
        }
    }
}

/* What Detect on the FAST backend must write: the same convf_conv2d and
 * sigmoid (split over the same pool) as the op, then the scalar decode. */
static void detect_fast_expected(const detect_setup *d, const op_fast *f, const float *const *in,
                                 const yolo_shape *is, int n_in, float *out, float *conv)
{
    const yolo_model_info *info = &d->m.info;
    const int c_out = info->num_anchors * info->num_outputs;
    for (int b = 0; b < is[0].n; b++) {
        const float *packed = f->packed;
        for (int lvl = 0; lvl < n_in; lvl++) {
            const size_t hw = (size_t)is[lvl].h * (size_t)is[lvl].w;
            conv_geom g = {.c_in = is[lvl].c, .h = is[lvl].h, .w = is[lvl].w, .c_out = c_out,
                           .k = 1, .stride = 1, .pad = 0, .oh = is[lvl].h, .ow = is[lvl].w};
            convf_conv2d(&g, in[lvl] + (size_t)b * (size_t)is[lvl].c * hw, packed, d->b[lvl],
                         YOLO_ACT_NONE, 0.0f, conv, f->kernels, f->pool, f->scratch);
            sigmoid_split sj = {f->kernels, conv};
            tpool_for(f->pool, (size_t)c_out * hw, sigmoid_split_range, &sj);
            decode_rows_scalar(info, lvl, conv, is[lvl].h, is[lvl].w, out);
            out += (size_t)c_out * hw;
            packed += convf_packed_span(c_out, (size_t)is[lvl].c);
        }
    }
}

/* One model (levels of the given grids and strides, no outputs per row)
 * through op_detect.run with op_args.fast on the given ISA and threads,
 * against detect_fast_expected(), every bit. */
static void check_detect_fast(int levels, const int *hw, const int *strides, int batch, int no,
                              yolo_isa isa, int threads)
{
    const int c_in[3] = {5, 9, 3};
    detect_setup d;
    detect_setup_make(&d, levels, 3, no - 5, strides, c_in, 0);
    const int c_out = 3 * no;
    yolo_shape is[3];
    float *x[3];
    const float *in[3];
    size_t packed_n = 0;
    for (int i = 0; i < levels; i++) {
        is[i] = shp(batch, c_in[i], hw[2 * i], hw[2 * i + 1]);
        x[i] = rand_floats(shape_elems(is[i]), 300 + (uint64_t)i);
        for (size_t k = 0; k < shape_elems(is[i]); k++)
            x[i][k] *= 3.0f; /* logits over several units: sigmoids spread over (0, 1) */
        in[i] = x[i];
        packed_n += convf_packed_span(c_out, (size_t)c_in[i]);
    }
    float *packed = alloc_floats(packed_n), *pk = packed;
    for (int i = 0; i < levels; i++) {
        convf_pack_weights(d.w[i], c_out, (size_t)c_in[i], pk);
        pk += convf_packed_span(c_out, (size_t)c_in[i]);
    }
    yolo_pool *pool;
    assert_int_equal(tpool_create(threads, &pool), YOLO_OK);
    float *fscratch = alloc_floats((size_t)threads * convf_thread_scratch_floats());
    const op_fast f = {pool, kernels_for(isa), packed, fscratch};
    assert_non_null(f.kernels);

    yolo_shape os;
    assert_int_equal(op_detect.shape(&d.m, &d.l, is, levels, &os), YOLO_OK);
    const size_t n_out = shape_elems(os);
    float *got = alloc_floats(n_out), *want = alloc_floats(n_out);
    float *scratch = alloc_floats(op_detect.scratch(&d.l, is, levels, os));
    op_args a;
    memset(&a, 0, sizeof a);
    a.model = &d.m;
    a.layer = &d.l;
    a.n_in = levels;
    for (int i = 0; i < levels; i++)
        a.in[i] = in[i], a.in_shape[i] = is[i];
    a.out = got;
    a.out_shape = os;
    a.scratch = scratch;
    a.fast = &f;
    op_detect.run(&a);
    detect_fast_expected(&d, &f, in, is, levels, want, scratch);
    for (size_t i = 0; i < n_out; i++)
        if (memcmp(&got[i], &want[i], sizeof *got) != 0) {
            print_error("Detect FAST %s, %d threads, no %d, level 0 %dx%d: row %zu col %zu "
                        "got %.9g want %.9g\n",
                        yolo_isa_name(isa), threads, no, hw[0], hw[1], i / (size_t)no,
                        i % (size_t)no, (double)got[i], (double)want[i]);
            fail();
        }
    tpool_free(pool);
    free(got), free(want), free(scratch), free(fscratch), free(packed);
    for (int i = 0; i < levels; i++)
        free(x[i]);
    detect_setup_free(&d);
}

/* Grids with pixel tails (1, 15, 91 = 64 + 16 + 11 pixels), chunks that
 * start mid-row (7x13), whole chunks (20x20), and three levels of a batch
 * of 2; rows of 6, 7, 85 and 86 floats (channel tails of 6, 7, 5 and 6 in
 * 16s; every one in 8s); 1 and 3 threads; every ISA this CPU has, forced. */
static void test_detect_fast_bit_exact(void **state)
{
    (void)state;
    static const int single[4][2] = {{1, 1}, {3, 5}, {7, 13}, {20, 20}};
    static const int multi[6] = {28, 20, 14, 10, 7, 5};
    static const int strides[3] = {8, 16, 32}, nos[4] = {6, 7, 85, 86}, threads[2] = {1, 3};
    static const yolo_isa isas[3] = {YOLO_ISA_GENERIC, YOLO_ISA_AVX2, YOLO_ISA_AVX512};
    for (int k = 0; k < 3; k++) {
        if (!kernels_for(isas[k])) {
            print_message("Detect FAST %s: not run, this CPU lacks it\n",
                          yolo_isa_name(isas[k]));
            continue;
        }
        for (int o = 0; o < 4; o++)
            for (int t = 0; t < 2; t++) {
                for (int g = 0; g < 4; g++)
                    check_detect_fast(1, single[g], strides, 1, nos[o], isas[k], threads[t]);
                check_detect_fast(3, multi, strides, 2, nos[o], isas[k], threads[t]);
            }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_and_names),
        cmocka_unit_test(test_conv_random_vs_reference),
        cmocka_unit_test(test_conv_exact_vs_reference),
        cmocka_unit_test(test_conv_core_gemm_vs_naive),
        cmocka_unit_test(test_conv_by_hand),
        cmocka_unit_test(test_conv_shape_rejects),
        cmocka_unit_test(test_conv_flops),
        cmocka_unit_test(test_batchnorm_vs_reference),
        cmocka_unit_test(test_activation_values),
        cmocka_unit_test(test_pool_vs_reference),
        cmocka_unit_test(test_pool_by_hand),
        cmocka_unit_test(test_pool_shape_rejects),
        cmocka_unit_test(test_tensor_ops_vs_reference),
        cmocka_unit_test(test_reorg_by_hand),
        cmocka_unit_test(test_upsample_concat_by_hand),
        cmocka_unit_test(test_tensor_shape_rejects),
        cmocka_unit_test(test_detect_vs_reference),
        cmocka_unit_test(test_detect_by_hand),
        cmocka_unit_test(test_detect_shape_rejects),
        cmocka_unit_test(test_detect_fast_bit_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
