/*
 * CPU features and the ISAs they allow (cpu.h). The features are read once
 * (pthread_once: contexts and models may be made from several threads) and
 * kept; asking again costs a load.
 */
#include <pthread.h>
#include <stdatomic.h>

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
