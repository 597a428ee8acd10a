/*
 * CPU features, the ISAs they allow and the choice of one for a ctx (cpu.h).
 * The features are read once (pthread_once: contexts and models may be made
 * from several threads) and kept; asking again costs a load. The YOLO_ISA
 * environment variable is read once too, by the first ctx that asks, so
 * that the contexts of a process cannot disagree because the environment
 * changed in between.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cpu.h"
#include "internal.h"

static pthread_once_t features_once = PTHREAD_ONCE_INIT;
static unsigned features_detected;
static atomic_uint features_hidden;

#if defined(__x86_64__) || defined(__i386__)
#define FEATURE(name, bit) (__builtin_cpu_supports(name) ? (bit) : 0u)
static void detect_features(void)
{
    __builtin_cpu_init();
    features_detected = FEATURE("sse4.1", CPU_SSE41) | FEATURE("pclmul", CPU_PCLMUL) |
                        FEATURE("avx2", CPU_AVX2) | FEATURE("fma", CPU_FMA) |
                        FEATURE("avx512f", CPU_AVX512F) | FEATURE("avx512bw", CPU_AVX512BW) |
                        FEATURE("avx512vl", CPU_AVX512VL) | FEATURE("vpclmulqdq", CPU_VPCLMUL);
}
#elif defined(__aarch64__)
static void detect_features(void)
{
    features_detected = CPU_NEON; /* Advanced SIMD is part of every ARMv8-A core */
}
#else
static void detect_features(void)
{
    features_detected = 0;
}
#endif

unsigned cpu_features(void)
{
    pthread_once(&features_once, detect_features);
    return features_detected & ~atomic_load_explicit(&features_hidden, memory_order_relaxed);
}

int cpu_has(unsigned features)
{
    return (cpu_features() & features) == features;
}

void cpu_mask_for_tests(unsigned hidden)
{
    atomic_store_explicit(&features_hidden, hidden, memory_order_relaxed);
}

int cpu_has_isa(yolo_isa isa)
{
    switch (isa) {
    case YOLO_ISA_GENERIC:
        return 1;
    case YOLO_ISA_AVX2:
        return cpu_has(CPU_AVX2 | CPU_FMA);
    case YOLO_ISA_AVX512:
        return cpu_has(CPU_AVX512F | CPU_AVX512BW | CPU_AVX512VL | CPU_FMA);
    case YOLO_ISA_NEON:
        return cpu_has(CPU_NEON);
    case YOLO_ISA_AUTO:
        break;
    }
    return 0;
}

/* Widest first: the order AUTO tries them in. */
static const yolo_isa isa_by_width[] = {YOLO_ISA_AVX512, YOLO_ISA_AVX2, YOLO_ISA_NEON,
                                        YOLO_ISA_GENERIC};

yolo_isa cpu_best_isa(void)
{
    for (size_t i = 0; i < sizeof isa_by_width / sizeof *isa_by_width; i++)
        if (kernels_for(isa_by_width[i]))
            return isa_by_width[i];
    return YOLO_ISA_GENERIC;
}

/* ---- names and the public queries ------------------------------------------------ */

static const char *const isa_names[] = {"auto", "generic", "avx2", "avx512", "neon"};
#define N_ISA ((int)(sizeof isa_names / sizeof *isa_names))

static int isa_valid(yolo_isa isa)
{
    return (int)isa >= 0 && (int)isa < N_ISA;
}

const char *yolo_isa_name(yolo_isa isa)
{
    return isa_valid(isa) ? isa_names[isa] : "?";
}

/* 0 and *out on a known name, -1 otherwise. */
static int isa_of_name(const char *name, yolo_isa *out)
{
    for (int i = 0; name && i < N_ISA; i++)
        if (strcasecmp(name, isa_names[i]) == 0) {
            *out = (yolo_isa)i;
            return 0;
        }
    return -1;
}

yolo_status yolo_isa_from_name(const char *name, yolo_isa *out)
{
    yolo_clear_error();
    if (!out)
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_isa_from_name: out is NULL");
    if (isa_of_name(name, out) != 0)
        return yolo_fail(YOLO_ERR_INVALID_ARG,
                         "yolo_isa_from_name: '%s' is not an ISA (expected auto, generic, avx2, "
                         "avx512 or neon)",
                         name ? name : "(null)");
    return YOLO_OK;
}

yolo_status yolo_isa_supported(yolo_isa isa, int *yes)
{
    yolo_clear_error();
    if (!yes || !isa_valid(isa))
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_isa_supported: isa %d, yes %p",
                         (int)isa, (void *)yes);
    *yes = isa == YOLO_ISA_AUTO || kernels_for(isa) != NULL;
    return YOLO_OK;
}

/* ---- YOLO_ISA and the choice for a ctx ------------------------------------------- */

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static char env_text[64]; /* the value, "" when unset or empty */
static int env_known;     /* env_text names an ISA (env_isa) */
static yolo_isa env_isa;

static void read_env(void)
{
    const char *v = getenv("YOLO_ISA");
    snprintf(env_text, sizeof env_text, "%s", v ? v : "");
    env_known = isa_of_name(env_text, &env_isa) == 0;
}

/* "avx2, generic": the ISAs a ctx may run here, for messages. */
static void runnable_list(char *buf, size_t size)
{
    size_t n = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof isa_by_width / sizeof *isa_by_width && n < size; i++)
        if (kernels_for(isa_by_width[i]))
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
                                  isa_names[isa_by_width[i]]);
}

yolo_status cpu_choose_isa(yolo_isa want, yolo_isa *out)
{
    if (!isa_valid(want))
        return yolo_fail(YOLO_ERR_INVALID_ARG, "yolo_ctx_create: isa %d is not a yolo_isa value",
                         (int)want);
    char by[128] = "yolo_ctx_params.isa";
    if (want == YOLO_ISA_AUTO) {
        pthread_once(&env_once, read_env);
        if (env_text[0] && !env_known)
            return yolo_fail(YOLO_ERR_UNSUPPORTED,
                             "yolo_ctx_create: the environment variable YOLO_ISA=%s names no ISA "
                             "(expected avx512, avx2, generic, neon or auto)",
                             env_text);
        want = env_text[0] ? env_isa : YOLO_ISA_AUTO;
        snprintf(by, sizeof by, "the environment variable YOLO_ISA=%s", env_text);
    }
    if (want == YOLO_ISA_AUTO) {
        *out = cpu_best_isa();
        return YOLO_OK;
    }
    if (!kernels_for(want)) {
        char runs[64];
        runnable_list(runs, sizeof runs);
        return yolo_fail(YOLO_ERR_UNSUPPORTED,
                         "yolo_ctx_create: ISA %s (asked for by %s) cannot run here: %s (this "
                         "CPU runs %s)",
                         isa_names[want], by,
                         cpu_has_isa(want) ? "this build has no kernels for it"
                                           : "the CPU lacks it",
                         runs);
    }
    *out = want;
    return YOLO_OK;
}
