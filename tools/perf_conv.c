/*
 * perf_conv: times one direct convolution layer (convf_conv2d, the FAST
 * backend's implicit GEMM, one thread) per ISA, the ISAs alternating round
 * by round in one process, and prints the best GFLOP/s of R rounds of each
 * (docs/performance.md, "The AVX2 microkernel"). For kernel and driver work:
 * it isolates one layer shape from the rest of the network.
 *
 *   perf_conv [--rounds R] [--isas avx2,avx512] [CIN:H:W:COUT:K:S ...]
 *   (default: a set of 1x1, 3x3 stride-2 and 3x3 stride-1 shapes of
 *   yolov7-tiny and yolov7; padding K/2; H x W is the input)
 *
 * Timings on a busy machine are noisy; run it with the CPU to itself, or
 * with `chrt -f 10` (as root) so other work cannot preempt it.
 *
 * Built by hand (not part of `make`):
 *   make lib
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Ilibyolo -Ilibyolo/src tools/perf_conv.c \
 *      build/libyolo.a $(pkg-config --libs openblas libpng libjpeg) -lz -lm -lpthread \
 *      -o build/perf_conv
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "yolo.h"

#define MAX_SHAPES 32
#define MAX_ISAS 4

typedef struct {
    int c_in, h, w, c_out, k, s;
} shape;

static const shape default_shapes[] = {
    {128, 160, 160, 64, 1, 1}, {256, 160, 160, 256, 1, 1}, {512, 80, 80, 512, 1, 1},
    {64, 160, 160, 32, 1, 1},  {1024, 20, 20, 512, 1, 1},  {128, 80, 80, 255, 1, 1},
    {32, 640, 640, 64, 3, 2},  {64, 320, 320, 128, 3, 2},  {512, 40, 40, 512, 3, 2},
    {3, 640, 640, 32, 3, 2},   {3, 640, 640, 32, 3, 1},    {32, 160, 160, 32, 3, 1},
};

static float *random_floats(size_t n, uint64_t *seed)
{
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "perf_conv: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)(*seed >> 40) / (float)(1u << 24) - 0.5f;
    }
    return p;
}

/* Best seconds per layer of each ISA over `rounds` alternating rounds. */
static void time_shape(const shape *s, const yolo_kernels **ks, int nk, int rounds, double *best)
{
    const int pad = s->k / 2;
    conv_geom g = {.c_in = s->c_in, .h = s->h, .w = s->w, .c_out = s->c_out, .k = s->k,
                   .stride = s->s, .pad = pad, .oh = (s->h + 2 * pad - s->k) / s->s + 1,
                   .ow = (s->w + 2 * pad - s->k) / s->s + 1};
    const size_t k_total = (size_t)s->c_in * (size_t)(s->k * s->k);
    uint64_t seed = 42;
    float *in = random_floats((size_t)s->c_in * (size_t)(s->h * s->w), &seed);
    float *w = random_floats((size_t)s->c_out * k_total, &seed);
    float *bias = random_floats((size_t)s->c_out, &seed);
    float *out = random_floats((size_t)s->c_out * (size_t)(g.oh * g.ow), &seed);
    float *packed = random_floats(convf_packed_floats(s->c_out, k_total), &seed);
    float *scratch = random_floats(convf_thread_scratch_floats(), &seed);
    convf_pack_weights(w, s->c_out, k_total, packed);
    const double flops = 2.0 * (double)s->c_out * (double)k_total * g.oh * g.ow;
    const int reps = (int)(1e9 / flops) + 1; /* ~1 GFLOP per timing */
    for (int i = 0; i < nk; i++)
        best[i] = 1e30;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < nk; i++) {
            uint64_t t0 = yolo_now_ns();
            for (int q = 0; q < reps; q++)
                convf_conv2d(&g, in, packed, bias, YOLO_ACT_LEAKY_RELU, 0.1f, out, ks[i], NULL,
                             scratch);
            double t = (double)(yolo_now_ns() - t0) / 1e9 / reps;
            if (t < best[i])
                best[i] = t;
        }
    printf("%5d -> %4d  %4dx%-4d k%d s%d:", s->c_in, s->c_out, s->h, s->w, s->k, s->s);
    for (int i = 0; i < nk; i++)
        printf("  %s %7.3f ms %6.1f GFLOP/s", ks[i]->name, best[i] * 1e3, flops / best[i] / 1e9);
    printf("\n");
    free(in), free(w), free(bias), free(out), free(packed), free(scratch);
}

int main(int argc, char **argv)
{
    int rounds = 7, n_shapes = 0;
    shape shapes[MAX_SHAPES];
    char isas[128] = "avx2,avx512";
    for (int i = 1; i < argc; i++) {
        shape s;
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--isas") && i + 1 < argc) {
            snprintf(isas, sizeof isas, "%s", argv[++i]);
        } else if (sscanf(argv[i], "%d:%d:%d:%d:%d:%d", &s.c_in, &s.h, &s.w, &s.c_out, &s.k,
                          &s.s) == 6 &&
                   s.c_in > 0 && s.h > 0 && s.w > 0 && s.c_out > 0 && s.k > 0 && s.s > 0 &&
                   n_shapes < MAX_SHAPES) {
            shapes[n_shapes++] = s;
        } else {
            fprintf(stderr, "usage: perf_conv [--rounds R] [--isas avx2,avx512] "
                            "[CIN:H:W:COUT:K:S ...]\n");
            return 2;
        }
    }
    if (!n_shapes) {
        n_shapes = (int)(sizeof default_shapes / sizeof *default_shapes);
        memcpy(shapes, default_shapes, sizeof default_shapes);
    }
    const yolo_kernels *ks[MAX_ISAS];
    int nk = 0;
    for (char *tok = strtok(isas, ","); tok && nk < MAX_ISAS; tok = strtok(NULL, ",")) {
        yolo_isa isa;
        if (yolo_isa_from_name(tok, &isa) != YOLO_OK || !(ks[nk] = kernels_for(isa))) {
            fprintf(stderr, "perf_conv: ISA %s: unknown or not on this CPU\n", tok);
            return 1;
        }
        nk++;
    }
    double best[MAX_ISAS];
    for (int i = 0; i < n_shapes; i++)
        time_shape(&shapes[i], ks, nk, rounds < 1 ? 1 : rounds, best);
    return 0;
}
