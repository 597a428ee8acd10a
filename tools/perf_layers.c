/*
 * perf_layers: a small timing harness for performance work (docs/performance.md).
 * Runs the forward pass of a model on a random input and prints the median /
 * min forward time of N runs and, with --layers, per layer-kind time and
 * GFLOP/s (conv kinds split by kernel and stride), summed over the runs.
 * Several backends can be compared in ONE process, alternating run by run,
 * so the ratios are measured under the same machine noise.
 *
 *   perf_layers MODEL.bin [--size H W] [--batch B] [--runs N] [--threads T]
 *               [--backends fast,gemm,fast+cat,fast-wino,fast@avx2] [--layers | --all-layers]
 *               [--loads L] [--isa NAME]
 *
 * --loads L first times L more yolo_model_load calls (page cache warm from
 * the first) and prints their median, min and max.
 *
 * "+cat" plans Concat inputs into their slice (yolo_ctx.concat_in_place),
 * "-wino" turns Winograd off (yolo_ctx.winograd_off), "@NAME" runs the
 * FAST kernels of that ISA (yolo_ctx_params.isa), so ISAs can be compared
 * in one process; --isa NAME sets it for the backends without "@" (default
 * auto: YOLO_ISA, else the CPU's best). Each backend's label says the ISA
 * it ran.
 *
 * Built by hand (not part of `make`):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Ilibyolo -Ilibyolo/src tools/perf_layers.c \
 *      build/libyolo.a $(pkg-config --libs openblas libpng libjpeg) -lz -lm -lpthread \
 *      -o build/perf_layers
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "internal.h"
#include "yolo.h"

#define MAX_BACKENDS 4
#define MAX_KINDS 32

typedef struct {
    char name[48];
    double ns, flops;
} kind_stat;

typedef struct {
    const yolo_model *model;
    kind_stat kinds[MAX_KINDS];
    int n_kinds;
    double *layer_ns, *layer_flops; /* per layer index */
} layer_stats;

static const char *backend_names[] = {"gemm", "reference", "fast"};

/* A backend name, optionally with "+cat" (Concat inputs planned into their
 * slice, yolo_ctx.concat_in_place) and "-wino" (no Winograd). */
typedef struct {
    int backend, concat_in_place, no_winograd;
    yolo_isa isa;
    char label[48];
} backend_spec;

/* "fast+cat@avx2": a backend, its flags and its ISA (default_isa without
 * "@"). -1 on a name it does not know. */
static int parse_backend(const char *s, yolo_isa default_isa, backend_spec *out)
{
    char base[32];
    snprintf(out->label, sizeof out->label, "%s", s);
    snprintf(base, sizeof base, "%s", s);
    out->concat_in_place = strstr(s, "+cat") != NULL;
    out->no_winograd = strstr(s, "-wino") != NULL;
    out->isa = default_isa;
    const char *at = strchr(s, '@');
    if (at && yolo_isa_from_name(at + 1, &out->isa) != YOLO_OK)
        return -1;
    base[strcspn(base, "+-@")] = 0;
    for (int i = 0; i < (int)(sizeof backend_names / sizeof *backend_names); i++)
        if (strcmp(base, backend_names[i]) == 0)
            return out->backend = i;
    return -1;
}

/* "Conv3x3s1", "Conv1x1s1", "Concat", ... */
static void kind_of(const yolo_model *m, int i, char *buf, size_t n)
{
    const model_layer *l = &m->layers[i];
    if (l->type == LAYER_CONV || l->type == LAYER_CONV2D)
        snprintf(buf, n, "Conv%dx%ds%d", l->kernel, l->kernel, l->stride);
    else
        snprintf(buf, n, "%s", layer_type_name(l));
}

static int on_layer(void *user, const yolo_layer_event *ev)
{
    layer_stats *s = user;
    char name[48];
    kind_of(s->model, ev->layer_index, name, sizeof name);
    int k = 0;
    while (k < s->n_kinds && strcmp(s->kinds[k].name, name) != 0)
        k++;
    if (k == s->n_kinds && s->n_kinds < MAX_KINDS) {
        snprintf(s->kinds[k].name, sizeof s->kinds[k].name, "%s", name);
        s->n_kinds++;
    }
    if (k < MAX_KINDS) {
        s->kinds[k].ns += (double)ev->elapsed_ns;
        s->kinds[k].flops += (double)ev->flops;
    }
    s->layer_ns[ev->layer_index] += (double)ev->elapsed_ns;
    s->layer_flops[ev->layer_index] = (double)ev->flops;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what)
{
    fprintf(stderr, "perf_layers: %s: %s\n", what, yolo_last_error());
    exit(1);
}

/* Median / min / max of n model loads (mmap + checks + checksums). */
static void time_loads(const char *path, int n)
{
    double *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++) {
        yolo_model *m;
        uint64_t t0 = yolo_now_ns();
        if (yolo_model_load(path, NULL, &m) != YOLO_OK)
            die("load");
        t[i] = (double)(yolo_now_ns() - t0) / 1e6;
        yolo_model_free(m);
    }
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    printf("%s: yolo_model_load median %.2f ms, min %.2f, max %.2f (%d loads)\n", path, t[n / 2],
           t[0], t[n - 1], n);
    free(t);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: perf_layers MODEL.bin [--size H W] [--batch B] [--runs N] "
                        "[--threads T] [--backends fast,gemm,fast@avx2] [--layers] [--loads L] "
                        "[--isa NAME]\n");
        return 2;
    }
    int h = 640, w = 640, batch = 1, runs = 10, threads = 1, layers = 0, loads = 0;
    yolo_isa isa = YOLO_ISA_AUTO;
    backend_spec backends[MAX_BACKENDS];
    int nb = 0;
    char blist[128] = "gemm";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 2 < argc) {
            h = atoi(argv[++i]);
            w = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--runs") && i + 1 < argc) {
            runs = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--backends") && i + 1 < argc) {
            snprintf(blist, sizeof blist, "%s", argv[++i]);
        } else if (!strcmp(argv[i], "--loads") && i + 1 < argc) {
            loads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            if (yolo_isa_from_name(argv[++i], &isa) != YOLO_OK)
                die("--isa");
        } else if (!strcmp(argv[i], "--layers")) {
            layers = 1;
        } else if (!strcmp(argv[i], "--all-layers")) {
            layers = 2;
        } else {
            fprintf(stderr, "perf_layers: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    for (char *tok = strtok(blist, ","); tok && nb < MAX_BACKENDS; tok = strtok(NULL, ",")) {
        if (parse_backend(tok, isa, &backends[nb]) < 0) {
            fprintf(stderr, "perf_layers: unknown backend %s\n", tok);
            return 2;
        }
        nb++;
    }
    yolo_model *m;
    if (yolo_model_load(argv[1], NULL, &m) != YOLO_OK)
        die("load");
    if (loads > 0)
        time_loads(argv[1], loads);
    yolo_ctx *ctx[MAX_BACKENDS];
    static layer_stats stats[MAX_BACKENDS];
    for (int b = 0; b < nb; b++) {
        yolo_ctx_params p = yolo_ctx_default_params();
        p.threads = threads;
        p.backend = (yolo_backend)backends[b].backend;
        p.isa = backends[b].isa;
        stats[b].model = m;
        stats[b].layer_ns = calloc((size_t)m->n_layers, sizeof(double));
        stats[b].layer_flops = calloc((size_t)m->n_layers, sizeof(double));
        if (layers) {
            p.on_layer = on_layer;
            p.user = &stats[b];
        }
        yolo_isa ran;
        if (yolo_ctx_create(m, &p, &ctx[b]) != YOLO_OK || yolo_ctx_isa(ctx[b], &ran) != YOLO_OK)
            die("ctx");
        if (p.backend == YOLO_BACKEND_FAST && !strchr(backends[b].label, '@')) {
            size_t n = strlen(backends[b].label);
            snprintf(backends[b].label + n, sizeof backends[b].label - n, "@%s",
                     yolo_isa_name(ran));
        }
        ctx[b]->concat_in_place = backends[b].concat_in_place;
        if (backends[b].no_winograd)
            ctx[b]->winograd_off = 1;
        if (yolo_ctx_plan(ctx[b], batch, h, w) != YOLO_OK)
            die("plan");
    }
    size_t n = (size_t)batch * 3 * (size_t)h * (size_t)w;
    float *x = malloc(n * sizeof *x);
    uint64_t seed = 42;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)(seed >> 40) / (float)(1u << 24);
    }
    double *t = calloc((size_t)(nb * runs), sizeof *t);
    for (int b = 0; b < nb; b++) /* warm-up, not counted */
        if (yolo_forward(ctx[b], x, batch, h, w) != YOLO_OK)
            die("forward");
    for (int b = 0; b < nb; b++)
        memset(stats[b].kinds, 0, sizeof stats[b].kinds), stats[b].n_kinds = 0,
            memset(stats[b].layer_ns, 0, (size_t)m->n_layers * sizeof(double));
    for (int r = 0; r < runs; r++)
        for (int b = 0; b < nb; b++) {
            uint64_t t0 = yolo_now_ns();
            if (yolo_forward(ctx[b], x, batch, h, w) != YOLO_OK)
                die("forward");
            t[b * runs + r] = (double)(yolo_now_ns() - t0) / 1e6;
        }
    yolo_ctx_memory mem;
    yolo_ctx_memory_info(ctx[0], &mem);
    printf("%s %dx%dx%d threads %d runs %d (%.2f GFLOP per forward)\n", argv[1], batch, h, w,
           threads, runs, (double)mem.flops / 1e9);
    double base = 0;
    for (int b = 0; b < nb; b++) {
        qsort(t + b * runs, (size_t)runs, sizeof *t, cmp_double);
        double med = t[b * runs + runs / 2], mn = t[b * runs];
        if (b == 0)
            base = med;
        printf("  %-16s median %8.1f ms  min %8.1f ms  %6.1f GFLOP/s  ratio %.3f\n",
               backends[b].label, med, mn, (double)mem.flops / med / 1e6, med / base);
    }
    for (int b = 0; layers && b < nb; b++) {
        printf("  per layer kind, %s (ms per forward, GFLOP/s):\n", backends[b].label);
        for (int k = 0; k < stats[b].n_kinds; k++) {
            const kind_stat *s = &stats[b].kinds[k];
            printf("    %-12s %8.2f ms %8.1f GFLOP/s\n", s->name, s->ns / 1e6 / runs,
                   s->ns > 0 ? s->flops / s->ns : 0.0);
        }
    }
    if (layers == 2) { /* every Conv layer, backends side by side */
        printf("  conv layers (ms per forward per backend; c_in -> c_out, output HxW):\n");
        for (int i = 0; i < m->n_layers; i++) {
            const model_layer *l = &m->layers[i];
            if (l->type != LAYER_CONV && l->type != LAYER_CONV2D)
                continue;
            char name[48];
            kind_of(m, i, name, sizeof name);
            const layer_plan *p = &ctx[0]->plan[i];
            int c_in = l->inputs[0] < 0 ? 3 : ctx[0]->plan[l->inputs[0]].shape.c;
            printf("    layer %3d %-10s %4d -> %4d %4dx%-4d", i, name, c_in, l->c_out, p->shape.h,
                   p->shape.w);
            for (int b = 0; b < nb; b++)
                printf("  %8.3f", stats[b].layer_ns[i] / 1e6 / runs);
            printf("  ratio %.2f\n", stats[nb - 1].layer_ns[i] / stats[0].layer_ns[i]);
        }
    }
    for (int b = 0; layers && b < nb; b++) {
        printf("  slowest layers, %s (ms per forward, GFLOP/s, shape):\n",
               backends[b].label);
        for (int rank = 0; rank < 12; rank++) {
            int best = -1;
            for (int i = 0; i < m->n_layers; i++)
                if (stats[b].layer_ns[i] >= 0 && (best < 0 || stats[b].layer_ns[i] >
                                                                   stats[b].layer_ns[best]))
                    best = i;
            if (best < 0)
                break;
            char name[48];
            kind_of(m, best, name, sizeof name);
            const model_layer *l = &m->layers[best];
            printf("    layer %3d %-12s %7.2f ms %7.1f GFLOP/s  c_out %d\n", best, name,
                   stats[b].layer_ns[best] / 1e6 / runs,
                   stats[b].layer_flops[best] * runs / stats[b].layer_ns[best], l->c_out);
            stats[b].layer_ns[best] = -1;
        }
    }
    for (int b = 0; b < nb; b++) {
        yolo_ctx_free(ctx[b]);
        free(stats[b].layer_ns);
        free(stats[b].layer_flops);
    }
    yolo_model_free(m);
    free(t);
    free(x);
    return 0;
}
