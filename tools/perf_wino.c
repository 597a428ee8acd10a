/*
 * perf_wino: times the Winograd input and output transforms alone, per ISA
 * (docs/performance.md, "Winograd transforms on AVX2"). For each shape (a
 * C -> C 3x3 pad-1 layer on an S x S input) it transforms every 48-tile
 * block of the layer as wino_conv2d does at one thread (input: all
 * channels of the block into one V buffer; output: all channels from one
 * M buffer of random values), without the GEMMs, and prints the median ns
 * per tile and channel of R rounds. The implementations alternate round
 * by round in one process:
 *
 *   avx2-old  the portable 16-lane body of winograd.c compiled for AVX2 +
 *             FMA, activation by convf_activate_avx2 (what the AVX2 ISA
 *             ran before winograd_avx2.c)
 *   avx2      winograd_avx2.c
 *   avx512    winograd_avx512.c (when the CPU has it)
 *
 *   perf_wino [--rounds R] [--act leaky|silu|none] [C:S ...]
 *   (default shapes 32:160 64:80 128:40 256:20)
 *
 * It includes winograd.c for the portable body. Built by hand:
 *   make lib
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Ilibyolo -Ilibyolo/src tools/perf_wino.c \
 *      build/libyolo.a $(pkg-config --libs openblas libpng libjpeg) -lz -lm -lpthread \
 *      -o build/perf_wino
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "winograd.c"

#define MAX_SHAPES 16
#define N_IMPL 3

static const char *impl_names[N_IMPL] = {"avx2-old", "avx2", "avx512"};

__attribute__((target("avx2,fma"))) static void old_input(const in_block *b)
{
    input_block_body(b);
}

__attribute__((target("avx2,fma"))) static void old_output(const out_block *b)
{
    output_block_body(b);
}

typedef struct {
    conv_geom g;
    int tiles_x, n_tiles;
    float *in, *out, *v, *m, *bias;
} shape;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static float *rand_buf(size_t n, unsigned seed)
{
    float *p = aligned_alloc(64, (n + 15) / 16 * 16 * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (float)(seed >> 8) / (float)(1u << 24) - 0.5f;
    }
    return p;
}

static void shape_init(shape *s, int c, int size)
{
    conv_geom g = {.c_in = c, .h = size, .w = size, .c_out = c, .k = 3, .stride = 1,
                   .pad = 1, .oh = size, .ow = size};
    s->g = g;
    s->tiles_x = (size + WG_OUT - 1) / WG_OUT;
    s->n_tiles = s->tiles_x * s->tiles_x;
    size_t plane = (size_t)size * (size_t)size;
    s->in = rand_buf((size_t)c * plane, 1);
    s->out = rand_buf((size_t)c * plane, 2);
    s->v = rand_buf((size_t)WG_XI * CONVF_NR * (size_t)c, 3);
    s->m = rand_buf((size_t)(c + CONVF_MR) * WG_XI * CONVF_NR, 4);
    s->bias = rand_buf((size_t)c, 5);
}

/* ns per tile and channel of one pass over the layer's blocks. */
static double run_input(const shape *s, int impl)
{
    double t = now_ns();
    for (int t0 = 0; t0 < s->n_tiles; t0 += CONVF_NR) {
        int nt = s->n_tiles - t0 < CONVF_NR ? s->n_tiles - t0 : CONVF_NR;
        in_block b = {&s->g, s->in, s->tiles_x, t0, nt, 0, s->g.c_in, s->v};
        if (impl == 0)
            old_input(&b);
        else if (impl == 1)
            wino_input_avx2(&s->g, s->in, s->tiles_x, t0, nt, 0, s->g.c_in, s->v);
        else
            wino_input_avx512(&s->g, s->in, s->tiles_x, t0, nt, 0, s->g.c_in, s->v);
    }
    return (now_ns() - t) / ((double)s->n_tiles * s->g.c_in);
}

static double run_output(const shape *s, int impl, yolo_activation act)
{
    double t = now_ns();
    for (int t0 = 0; t0 < s->n_tiles; t0 += CONVF_NR) {
        int nt = s->n_tiles - t0 < CONVF_NR ? s->n_tiles - t0 : CONVF_NR;
        out_block b = {&s->g,  s->bias, act, 0.1f, convf_activate_avx2, s->out, s->tiles_x,
                       t0,     nt,      0,   s->g.c_out, s->m};
        if (impl == 0)
            old_output(&b);
        else if (impl == 1)
            wino_output_avx2(&s->g, s->m, s->tiles_x, t0, nt, 0, s->g.c_out, s->bias, act, 0.1f,
                             s->out);
        else
            wino_output_avx512(&s->g, s->m, s->tiles_x, t0, nt, 0, s->g.c_out, s->bias, act, 0.1f,
                               s->out);
    }
    return (now_ns() - t) / ((double)s->n_tiles * s->g.c_out);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *x, int n)
{
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

int main(int argc, char **argv)
{
    int rounds = 21, n_shapes = 0, cs[MAX_SHAPES], ss[MAX_SHAPES];
    yolo_activation act = YOLO_ACT_LEAKY_RELU;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--act") && i + 1 < argc) {
            i++;
            act = !strcmp(argv[i], "silu") ? YOLO_ACT_SILU
                  : !strcmp(argv[i], "none") ? YOLO_ACT_NONE : YOLO_ACT_LEAKY_RELU;
        } else if (n_shapes < MAX_SHAPES && sscanf(argv[i], "%d:%d", &cs[n_shapes],
                                                   &ss[n_shapes]) == 2) {
            n_shapes++;
        } else {
            fprintf(stderr, "usage: perf_wino [--rounds R] [--act leaky|silu|none] [C:S ...]\n");
            return 2;
        }
    }
    if (!n_shapes) {
        const int dc[] = {32, 64, 128, 256}, ds[] = {160, 80, 40, 20};
        for (; n_shapes < 4; n_shapes++)
            cs[n_shapes] = dc[n_shapes], ss[n_shapes] = ds[n_shapes];
    }
    if (rounds < 1 || !kernels_for(YOLO_ISA_AVX2)) {
        fprintf(stderr, "perf_wino: needs AVX2 and rounds >= 1\n");
        return 2;
    }
    const int n_impl = kernels_for(YOLO_ISA_AVX512) ? 3 : 2;
    printf("ns per tile and channel, median of %d rounds (activation %s)\n", rounds,
           act_name(act));
    printf("%-10s %-9s", "shape", "transform");
    for (int k = 0; k < n_impl; k++)
        printf(" %9s", impl_names[k]);
    printf("  old/new\n");
    for (int i = 0; i < n_shapes; i++) {
        shape s;
        shape_init(&s, cs[i], ss[i]);
        double *tin = malloc((size_t)rounds * N_IMPL * sizeof *tin);
        double *tout = malloc((size_t)rounds * N_IMPL * sizeof *tout);
        for (int k = 0; k < n_impl; k++) { /* warm up */
            run_input(&s, k);
            run_output(&s, k, act);
        }
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < n_impl; k++) {
                tin[k * rounds + r] = run_input(&s, k);
                tout[k * rounds + r] = run_output(&s, k, act);
            }
        char name[32];
        snprintf(name, sizeof name, "%d@%dx%d", cs[i], ss[i], ss[i]);
        for (int pass = 0; pass < 2; pass++) {
            double *t = pass ? tout : tin, med[N_IMPL];
            printf("%-10s %-9s", name, pass ? "output" : "input");
            for (int k = 0; k < n_impl; k++) {
                med[k] = median(t + k * rounds, rounds);
                printf(" %9.2f", med[k]);
            }
            printf("  %6.2fx\n", med[0] / med[1]);
        }
        free(tin), free(tout);
        free(s.in), free(s.out), free(s.v), free(s.m), free(s.bias);
    }
    return 0;
}
