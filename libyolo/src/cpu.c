/*
 * CPU features (cpu.h). They are read once (pthread_once: contexts and
 * models may be made from several threads) and kept; asking again costs a
 * load.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "cpu.h"

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
